"""Micrographs and phase maps too large for memory: lazy TIFF reading and the block-written phase map.

A stitched mosaic of 20 000 x 20 000 pixels is 400 MB as 8-bit grey, 1.6 GB as float32, and its blended
network features several GB more, so nothing here holds such an image whole:

- :func:`open_micrograph` reads a (tiled, optionally pyramidal) TIFF / OME-TIFF lazily through tifffile's
  zarr interface (``aszarr=True``): :class:`GreyArray` turns each slice into float32 grey in [0, 1] as
  :func:`~napari_microsynth.core.io.read_micrograph` does for a whole file;
- :class:`PhaseMap` is the zarr store a large micrograph's phase map is written into block by block
  (by :mod:`napari_microsynth.engines.large_inference`), with a pyramid for display, per-block class
  counts (so its fractions never need the map read back) and a record of the finished blocks (so an
  interrupted run resumes);
- :func:`write_pyramid_tiff` writes a micrograph the way the reader and napari read it fastest.

>>> micrograph = open_micrograph("mosaic.tif")              # doctest: +SKIP
>>> micrograph.image[:256, :256].dtype, micrograph.image.shape   # doctest: +SKIP
(dtype('float32'), (20000, 20000))
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .fractions import class_counts, fractions_from_counts
from .io import _imagej_pixel_size_um, image_shape, to_unit_float
from .schema import PhaseSchema

#: Micrographs with more pixels than this (4096 x 4096) are segmented block by block, not whole.
LARGE_PIXELS = 4096 * 4096
#: Pyramid levels are added until the smallest one's longer side is at most this.
SMALLEST_LEVEL = 1024
PHASE_MAP_KEY = "napari_microsynth_phase_map"
_CHUNK = 1024


class GreyArray:
    """A 2-D integer or float array (zarr, dask, numpy) read as float32 grey in [0, 1] one slice at a time
    (:func:`~napari_microsynth.core.io.to_unit_float`: 8-bit / 255, 16-bit / 65535, floats must lie in
    [0, 1]); ``rows`` keeps only the top rows (a cropped information band).

    >>> GreyArray(np.full((2, 3), 255, np.uint8))[:1, 1:]
    array([[1., 1.]], dtype=float32)
    """

    dtype = np.dtype(np.float32)

    def __init__(self, data, rows: int | None = None):
        if len(data.shape) != 2:
            raise ValueError(f"expected a grey micrograph (H, W), got an array of shape {tuple(data.shape)}")
        height = data.shape[0] if rows is None else int(rows)
        if not 0 < height <= data.shape[0]:
            raise ValueError(f"cannot keep {rows} rows of a micrograph with {data.shape[0]} rows")
        self.data = data
        self.shape = (height, int(data.shape[1]))

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        rows = slice(*rows.indices(self.shape[0]))
        return to_unit_float(np.asarray(self.data[rows, cols]))


@dataclass
class LazyMicrograph:
    """An opened large micrograph: ``image`` (a :class:`GreyArray` of full resolution), ``levels`` (the raw
    arrays to display, full resolution first: the file's pyramid when ``stored_pyramid``, else one computed
    when shown) and the ImageJ pixel size when the file carries one. Keep it open while ``image`` or
    ``levels`` are read."""

    path: Path
    image: GreyArray
    levels: list
    stored_pyramid: bool
    pixel_size_um: float | None
    _tiff: Any

    def close(self) -> None:
        self._tiff.close()


def is_large_micrograph(path: str | Path) -> bool:
    """True for a TIFF with more than :data:`LARGE_PIXELS` pixels (read from its header)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return False
    height, width = image_shape(path)
    return height * width > LARGE_PIXELS


def open_micrograph(path: str | Path, info_band_rows: int = 0) -> LazyMicrograph:
    """Open a grey TIFF / OME-TIFF without reading its pixels (tifffile ``aszarr``); the bottom
    ``info_band_rows`` rows are left out of ``image``. Raises ``ValueError`` for files that are not one 2-D
    grey image (colour mosaics must be converted to grey first)."""
    import dask.array as da
    import tifffile
    import zarr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"micrograph not found: {path}")
    try:
        tiff = tifffile.TiffFile(path)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ValueError(f"{path}: not a readable TIFF file ({exc})") from None
    series = tiff.series[0] if tiff.series else None
    if series is None or series.axes not in ("YX", "QYX") or (series.axes == "QYX" and series.shape[0] != 1):
        tiff.close()
        described = "no image" if series is None else f"a {series.shape} array with axes {series.axes!r}"
        raise ValueError(f"{path}: holds {described}; large micrographs are read as one 2-D grey image")
    node = zarr.open(series.aszarr(), mode="r")
    levels = [node[key] for key in sorted(node.array_keys(), key=int)] if hasattr(node, "array_keys") else [node]
    levels = [level if level.ndim == 2 else level[0] for level in levels]
    stored = len(levels) > 1
    if not stored:
        base = da.from_zarr(levels[0])
        levels = [levels[0]] + [da.coarsen(np.mean, base, {0: 2**k, 1: 2**k}, trim_excess=True).astype(base.dtype)
                                for k in range(1, len(pyramid_shapes(base.shape)))]
    image = GreyArray(levels[0], levels[0].shape[0] - int(info_band_rows))
    return LazyMicrograph(path, image, levels, stored, _imagej_pixel_size_um(tiff), tiff)


def pyramid_shapes(shape, smallest: int = SMALLEST_LEVEL) -> list[tuple[int, int]]:
    """Shapes of a 2x pyramid (level ``k`` = every ``2**k``-th pixel) down to a longer side <= ``smallest``.

    >>> pyramid_shapes((3000, 2500))
    [(3000, 2500), (1500, 1250), (750, 625)]
    """
    shapes = [(int(shape[0]), int(shape[1]))]
    while max(shapes[-1]) > smallest:
        shapes.append(tuple(math.ceil(n / 2) for n in shapes[-1]))
    return shapes


def write_pyramid_tiff(path: str | Path, image: np.ndarray, tile: int = 512) -> Path:
    """Write a grey 8/16-bit ``image`` as a tiled BigTIFF with a 2x pyramid in sub-IFDs (every
    ``2**k``-th pixel), the layout whole-slide and mosaic software writes and :func:`open_micrograph`
    and napari read fastest."""
    import tifffile

    image = np.asarray(image)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a grey 8- or 16-bit image (H, W), got {image.dtype} {image.shape}")
    n_levels = len(pyramid_shapes(image.shape))
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(image, tile=(tile, tile), subifds=n_levels - 1, photometric="minisblack")
        for k in range(1, n_levels):
            tif.write(image[:: 2**k, :: 2**k], tile=(tile, tile), subfiletype=1, photometric="minisblack")
    return path


def mirrored_mosaic(image: np.ndarray, shape) -> np.ndarray:
    """A ``shape`` mosaic of ``image`` and its mirror images (seamless: every edge meets its reflection),
    e.g. a large test micrograph made of a real one."""
    height, width = int(shape[0]), int(shape[1])
    pair = np.concatenate([image, image[::-1]], axis=0)
    quad = np.concatenate([pair, pair[:, ::-1]], axis=1)
    return np.tile(quad, (math.ceil(height / quad.shape[0]), math.ceil(width / quad.shape[1])))[:height, :width]


# ---------------------------------------------------------------------------------------------- phase map


def is_phase_map(path: str | Path) -> bool:
    """True when ``path`` is a zarr group written as a :class:`PhaseMap` (reads one small file)."""
    try:
        attributes = json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(attributes, dict) and PHASE_MAP_KEY in attributes


class PhaseMap:
    """A phase map written block by block into a zarr v3 group::

        phases.zarr/        attributes: napari_microsynth_phase_map {"version": 1}, schema, shape,
                            row_starts / col_starts (the block grid), run (what produced the map)
          0, 1, 2, ...      class ids (uint8); level k holds every 2**k-th pixel (a display pyramid)
          done              (block rows, block columns) bool: blocks written completely
          counts            (block rows, block columns, classes) int64: each written block's class counts

    A block's labels and counts are written before its ``done`` flag (one file per block), so a killed
    run leaves only finished blocks marked. :meth:`scratch` holds a producer's own resumable arrays.

    >>> phase_map = PhaseMap.open("phases.zarr")              # doctest: +SKIP
    >>> phase_map.complete, phase_map.fractions()              # doctest: +SKIP
    (True, array([0.61, 0.22, 0.12, 0.05]))
    """

    def __init__(self, path: Path, group):
        self.path = Path(path)
        self.group = group
        attributes = group.attrs.asdict()
        self.schema = PhaseSchema.from_dict(attributes["schema"])
        self.shape = tuple(attributes["shape"])
        self.row_starts = list(attributes["row_starts"])
        self.col_starts = list(attributes["col_starts"])
        self.run = attributes.get("run", {})
        self.levels = [group[str(k)] for k in range(len(pyramid_shapes(self.shape)))]

    @classmethod
    def create(cls, path, schema: PhaseSchema, shape, row_starts: Sequence[int], col_starts: Sequence[int],
               run: dict[str, Any]) -> PhaseMap:
        """A new, empty phase map of ``shape`` cut into blocks at ``row_starts`` x ``col_starts``."""
        import zarr

        if schema.n_classes > 255:
            raise ValueError(f"a phase map stores class ids as uint8; schema {schema.name!r} has {schema.n_classes}")
        group = zarr.open_group(Path(path), mode="w-", zarr_format=3)
        group.attrs.update({PHASE_MAP_KEY: {"version": 1}, "schema": schema.to_dict(), "shape": list(shape),
                            "row_starts": list(row_starts), "col_starts": list(col_starts), "run": run})
        for k, level_shape in enumerate(pyramid_shapes(shape)):
            group.create_array(str(k), shape=level_shape, dtype="uint8", fill_value=0,
                               chunks=tuple(min(_CHUNK, n) for n in level_shape))
        grid = (len(row_starts), len(col_starts))
        group.create_array("done", shape=grid, dtype=bool, chunks=(1, 1), fill_value=False)
        group.create_array("counts", shape=(*grid, schema.n_classes), dtype="int64", chunks=(1, 1, schema.n_classes),
                           fill_value=0)
        return cls(path, group)

    @classmethod
    def open(cls, path, mode: str = "r") -> PhaseMap:
        import zarr

        if not is_phase_map(path):
            raise ValueError(f"{path} is not a phase map written by 'microsynth segment' (no {PHASE_MAP_KEY} attribute)")
        return cls(path, zarr.open_group(Path(path), mode=mode))

    @classmethod
    def resume_or_create(cls, path, schema: PhaseSchema, shape, row_starts, col_starts, run) -> PhaseMap:
        """The phase map at ``path`` when it was started by the same run (to finish it), else a new one;
        raises when ``path`` holds another run's map or something else."""
        path = Path(path)
        if not path.exists():
            return cls.create(path, schema, shape, row_starts, col_starts, run)
        existing = cls.open(path, mode="r+")
        wanted = json.loads(json.dumps({"schema": schema.to_dict(), "shape": list(shape), "row_starts": list(row_starts),
                                        "col_starts": list(col_starts), "run": run}))
        found = {key: existing.group.attrs[key] for key in wanted}
        differ = [key for key in wanted if wanted[key] != found[key]]
        if differ:
            detail = "; ".join(f"{key}: {found[key]} there, {wanted[key]} now" for key in differ if key != "schema")
            raise ValueError(f"{path} holds a phase map of another run ({detail or 'another schema'}); delete it or "
                             "choose another output to start over")
        return existing

    @property
    def blocks(self) -> list[tuple[int, int, tuple[int, int, int, int]]]:
        """``(block row, block column, (y0, x0, y1, x1))`` of every block, row by row."""
        rows = list(zip(self.row_starts, self.row_starts[1:] + [self.shape[0]]))
        cols = list(zip(self.col_starts, self.col_starts[1:] + [self.shape[1]]))
        return [(i, j, (y0, x0, y1, x1)) for i, (y0, y1) in enumerate(rows) for j, (x0, x1) in enumerate(cols)]

    @property
    def done(self) -> np.ndarray:
        return self.group["done"][:]

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def write_block(self, i: int, j: int, box, labels: np.ndarray) -> None:
        """Store block ``(i, j)``'s class ids (its pyramid pixels and class counts), then mark it done."""
        y0, x0, y1, x1 = box
        if labels.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"block {box} needs labels of shape {(y1 - y0, x1 - x0)}, got {labels.shape}")
        for k, level in enumerate(self.levels):
            f = 2**k
            level[-(-y0 // f) : -(-y1 // f), -(-x0 // f) : -(-x1 // f)] = labels[(-y0) % f :: f, (-x0) % f :: f]
        self.group["counts"][i, j] = class_counts(labels, self.schema.n_classes)
        self.group["done"][i, j] = True

    def scratch(self, name: str, shape, dtype, chunks=None) -> Any:
        """The producer's array ``scratch/<name>`` (created, zero-filled, on first use; one chunk unless
        ``chunks`` is given) for work in progress that must survive an interruption."""
        path = f"scratch/{name}"
        if path not in self.group:
            self.group.create_array(path, shape=tuple(shape), dtype=dtype, fill_value=0, chunks=chunks or tuple(shape))
        return self.group[path]

    def fractions(self) -> np.ndarray:
        """Phase area fractions of the finished blocks."""
        return fractions_from_counts(self.group["counts"][:][self.done].sum(axis=0))

    def describe(self) -> str:
        """What the store holds: size, pyramid, progress, the run that made it and its phase fractions."""
        done = self.done
        unfinished = "" if done.all() else " (unfinished: run the same segment command again to finish it)"
        lines = [(f"phase map {self.path}: {self.shape[1]}x{self.shape[0]} px, {self.schema.name} phases, "
                  f"{len(self.levels)} pyramid levels"),
                 f"  blocks written: {int(done.sum())} of {done.size}{unfinished}",
                 f"  run: {json.dumps(self.run)}"]
        if done.any():
            lines += [f"  {name:28s} {100 * value:5.1f} %" for name, value in zip(self.schema.names, self.fractions())]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- commands


def phase_map_fractions(path: str | Path) -> tuple[list[str], np.ndarray, PhaseSchema]:
    """``fractions`` of a phase map: its name, ``(1, C)`` fractions of the finished blocks (from the
    stored block counts, no pixel read) and its schema."""
    phase_map = PhaseMap.open(path)
    if not phase_map.done.any():
        raise ValueError(f"{path}: no block of the phase map is written yet (run the segment command to finish it)")
    return [Path(path).name], phase_map.fractions()[None], phase_map.schema


def describe_large(path: str | Path) -> tuple[str, bool] | None:
    """``describe`` of a phase map or a large TIFF without reading their pixels: the text and whether it is
    complete; None for anything else."""
    if is_phase_map(path):
        phase_map = PhaseMap.open(path)
        return phase_map.describe(), phase_map.complete
    if not is_large_micrograph(path):
        return None
    micrograph = open_micrograph(path)
    try:
        level = micrograph.levels[0]
        pixel = "no pixel size" if micrograph.pixel_size_um is None else f"{micrograph.pixel_size_um:g} um/px"
        text = (f"large micrograph {path}: {level.shape[1]}x{level.shape[0]} px, {level.dtype}, {pixel}, "
                f"{len(micrograph.levels)} pyramid levels "
                f"({'stored in the file' if micrograph.stored_pyramid else 'computed when shown'}); "
                "'microsynth segment' segments it block by block")
    finally:
        micrograph.close()
    return text, True
