"""Plain files from a dataset store: PNG/TIFF images and masks, split lists and a CSV index.

Also the small writers every report uses: :func:`atomic_write_bytes` (never a half-written file) and
:func:`write_csv` (through :func:`spreadsheet_safe`: CSV cells a spreadsheet never runs as a formula).

>>> export_folder(DatasetStore.open("pairs.zarr"), "pairs_folder")      # doctest: +SKIP
PosixPath('pairs_folder')
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from .sample import Sample, jsonable

if TYPE_CHECKING:
    from .store import DatasetStore

EXPORT_IMAGE_FORMATS = ("png", "tiff16", "tiff")
_EXPORT_ENTRIES = {"images", "masks", "splits", "schema.json", "samples.csv"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row whose text cells a spreadsheet shows as text and never runs as a formula: text starting
    with ``= + - @``, a tab or a carriage return gets a leading apostrophe (OWASP's advice on CSV
    injection); numbers and other text are unchanged.

    >>> spreadsheet_safe({"name": "=1+1", "fraction": -0.5})
    {'name': "'=1+1", 'fraction': -0.5}
    """
    return {k: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v for k, v in row.items()}


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (columns: ``columns`` or the first row's keys) as a CSV file, never half-written, with
    every column name and text cell :func:`spreadsheet_safe`: the one CSV writer of the program.

    >>> write_csv("table.csv", [{"name": "=cmd()", "miou": 0.5}]).read_text()   # doctest: +SKIP
    "name,miou\n'=cmd(),0.5\n"
    """
    columns = list(columns if columns is not None else rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writerow(spreadsheet_safe({c: c for c in columns}))
    writer.writerows(spreadsheet_safe(row) for row in rows)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file and a rename, so it is never seen half-written."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _png_bytes(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    from PIL import Image

    if array.dtype == np.uint8:
        img = Image.fromarray(array)
        if palette is not None:  # turns the grey image into a palette image with the same pixel values
            flat = np.zeros((256, 3), dtype=np.uint8)
            flat[: len(palette)] = palette
            img.putpalette(flat.ravel().tolist())
    else:
        img = Image.fromarray(array.astype(np.uint16))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _tiff_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _safe_stem(index: int, name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80]
    return f"{index:06d}_{clean}" if clean else f"{index:06d}"


def _prepare_export_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {p.name for p in out_dir.iterdir() if not p.name.endswith(".partial")}
    foreign = sorted(entries - _EXPORT_ENTRIES)
    if foreign:
        raise FileExistsError(
            f"{out_dir} holds files that are not part of an export ({', '.join(foreign[:5])}); "
            "choose an empty or new folder"
        )
    if (out_dir / "samples.csv").exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} already holds a finished export; replace it with --overwrite")
        # Remove the completion marker first: a crash from here on leaves an unfinished export, which a
        # re-run completes.
        (out_dir / "samples.csv").unlink()
    for sub in ("images", "masks", "splits"):
        (out_dir / sub).mkdir(exist_ok=True)
    for tmp in out_dir.rglob("*.partial"):
        tmp.unlink()


def _image_bytes(image: np.ndarray, image_format: str) -> bytes:
    if image_format == "png":
        return _png_bytes(np.round(image * 255.0).astype(np.uint8))
    if image_format == "tiff16":
        return _tiff_bytes(np.round(image.astype(np.float64) * 65535.0).astype(np.uint16))
    return _tiff_bytes(image)


def _mask_bytes(mask: np.ndarray, ext: str, colors: np.ndarray) -> bytes:
    if ext == ".png":
        return _png_bytes(mask, palette=colors if mask.dtype == np.uint8 else None)
    return _tiff_bytes(mask.astype(np.int32))


def _write_splits(store: "DatasetStore", out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """``splits/<name>.txt``: the image files of each split's exported samples; stale split files removed."""
    split_files = set()
    for split_name, members in store.splits.items():
        file_name = re.sub(r"[^A-Za-z0-9._-]+", "_", split_name) + ".txt"
        member_set = set(members)
        stems = [r["image"].split("/", 1)[1] for r in rows if r["index"] in member_set]
        atomic_write_bytes(out_dir / "splits" / file_name, "".join(s + "\n" for s in stems).encode())
        split_files.add(file_name)
    for stale in (out_dir / "splits").iterdir():
        if stale.name not in split_files:
            stale.unlink()




def _sample_row(index: int, sample: Sample, splits: list[str], status: str, image_file: str, mask_file: str,
                fractions: np.ndarray, property_names: list[str]) -> dict[str, Any]:
    """One ``samples.csv`` row: where the sample's files are, its size, fractions, properties, provenance."""
    row: dict[str, Any] = {
        "index": index, "name": sample.name, "split": ";".join(splits), "status": status,
        "origin": sample.provenance.origin, "image": f"images/{image_file}", "mask": f"masks/{mask_file}",
        "height": sample.shape[0], "width": sample.shape[1],
        "pixel_size_um": "" if sample.pixel_size_um is None else sample.pixel_size_um,
    }
    for c, phase in enumerate(sample.schema.names):
        row[f"fraction_{phase}"] = f"{fractions[c]:.6f}"
    for prop in property_names:
        row[f"property_{prop}"] = sample.properties.get(prop, "")
    row["provenance"] = json.dumps(jsonable(sample.provenance.to_dict()), sort_keys=True)
    return row


def export_folder(
    store: "DatasetStore",
    out_dir: str | Path,
    overwrite: bool = False,
    image_format: str = "png",
    include_rejected: bool = False,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> Path:
    """Write the store as plain files: ``images/``, ``masks/``, ``splits/<name>.txt``, ``schema.json`` and
    ``samples.csv`` (one row per exported sample: index, name, split, status, origin, file names, size,
    pixel size, ``fraction_<phase>`` per phase, ``property_<name>`` per property, provenance JSON).

    ``image_format``: ``"png"`` (8-bit, ``round(x*255)``), ``"tiff16"`` (16-bit, ``round(x*65535)``) or
    ``"tiff"`` (float32, exact). Masks are palette PNGs whose pixel values are the class ids (16-bit grey
    PNG when ids exceed 255, int32 TIFF when the ignore id is negative). Rejected samples are skipped
    unless ``include_rejected``.

    Every file is written atomically and ``samples.csv`` last, so the CSV's presence marks a finished
    export. A cancelled or killed export can simply be run again into the same folder: files have
    fixed names (``<index>_<name>``), so nothing is duplicated, and stale files are removed. A finished
    export is only replaced with ``overwrite=True``. Raises :class:`Cancelled` on ``should_stop()``.
    """
    if image_format not in EXPORT_IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {EXPORT_IMAGE_FORMATS}, got {image_format!r}")
    out_dir = Path(out_dir)
    _prepare_export_dir(out_dir, overwrite)
    schema = store.schema
    atomic_write_bytes(out_dir / "schema.json", (json.dumps(schema.to_dict(), indent=2) + "\n").encode())

    statuses = store.statuses()
    indices = [i for i in range(len(store)) if include_rejected or statuses[i] != "rejected"]
    split_of: dict[int, list[str]] = {}
    for split_name, members in store.splits.items():
        for i in members:
            split_of.setdefault(i, []).append(split_name)
    property_names = sorted({k for i in indices for k in store.properties(i)})
    fractions = store.fractions()
    mask_dtype = schema.mask_dtype
    mask_ext = ".png" if np.iinfo(mask_dtype).min >= 0 and np.iinfo(mask_dtype).max <= 65535 else ".tif"
    image_ext = ".png" if image_format == "png" else ".tif"

    rows: list[dict[str, Any]] = []
    written: dict[str, set[str]] = {"images": set(), "masks": set()}
    for done, i in enumerate(indices):
        check_stop(should_stop)
        sample = store[i]
        stem = _safe_stem(i, sample.name)
        image_file, mask_file = stem + image_ext, stem + mask_ext
        mask = sample.mask.astype(mask_dtype, copy=False)  # type: ignore[union-attr]
        atomic_write_bytes(out_dir / "images" / image_file, _image_bytes(sample.image, image_format))
        atomic_write_bytes(out_dir / "masks" / mask_file, _mask_bytes(mask, mask_ext, schema.colors))
        written["images"].add(image_file)
        written["masks"].add(mask_file)
        row = _sample_row(i, sample, split_of.get(i, []), statuses[i], image_file, mask_file, fractions[i],
                          property_names)
        rows.append(row)
        progress(done + 1, len(indices), f"exported {sample.name}")

    for sub, keep in written.items():
        for stale in (out_dir / sub).iterdir():
            if stale.name not in keep:
                stale.unlink()
    _write_splits(store, out_dir, rows)
    columns = (
        ["index", "name", "split", "status", "origin", "image", "mask", "height", "width", "pixel_size_um"]
        + [f"fraction_{phase}" for phase in schema.names]
        + [f"property_{prop}" for prop in property_names]
        + ["provenance"]
    )
    write_csv(out_dir / "samples.csv", rows, columns)
    return out_dir
