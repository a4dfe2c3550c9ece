"""Loading annotated micrograph folders as :class:`~napari_microsynth.core.sample.Sample` lists.

Recognised layouts (``detect_layout``):

- ``metaldam``: ``images/*.jpg`` + ``masks/*.png`` (index masks covering the image above its SEM
  information band) + ``MetalDAM_metadata.sqlite`` (official release metadata) + ``splits/*.txt``.
- ``uhcs``: ``images/uhcsNNNN.tif`` + ``masks/*.npy`` (int8 labels) + ``uhcs-metadata.csv``
  (processing conditions and scale bar per micrograph_id NNNN) + ``splits/`` (16/4/4 lists, 6-fold CV).
- ``grains``: ``images/*`` + ``masks/*.tif`` RGB grain instance maps (one random colour per grain, as
  in Fast-FineCut); a sample's mask is the grain/boundary class map, ``instances`` the grain labels.
- ``generic``: ``images/*`` + ``masks/*``, ``schema.json`` in the folder (or a schema passed in; its
  ``"masks"`` entry says how the masks encode the phases, :class:`~napari_microsynth.core.schema.MaskFiles`),
  optional ``splits/<name>.txt``. Images without a mask load unlabelled.

A mask belongs to the micrograph whose file stem it has, or the stem followed by a common suffix
(``a.tif`` <- ``a.png``, ``a_mask.tif``, ``a-label.png``, ``a gt.png`` ...), or, when the schema sets a
``pattern`` such as ``{stem}_phases``, the stem that pattern gives.

Masks shorter than their image (same width) cover the part above a bottom information band; the
image is cropped to them (``image[:mask.shape[0]]``), as MetalDAM's README prescribes.

>>> samples = load_dataset("../shared/data/uhcs", split="train")  # doctest: +SKIP
>>> len(samples), samples[0].properties  # doctest: +SKIP
(16, {'anneal_temperature_c': 970.0, 'anneal_time_h': 1.5})
"""
from __future__ import annotations

import csv
import re
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .fractions import class_counts
from .io import MASK_SUFFIXES, MICROGRAPH_SUFFIXES, image_shape, read_instance_map, read_mask, read_micrograph
from .progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from .sample import Provenance, Sample
from .schema import MaskFiles, PhaseSchema
from .store import DatasetStore, has_store_metadata

LAYOUTS = ("metaldam", "uhcs", "grains", "generic")

METALDAM_METADATA = "MetalDAM_metadata.sqlite"
UHCS_METADATA = "uhcs-metadata.csv"
# UHCS split files by short name (MatSeg's 16/4/4 split).
UHCS_SPLIT_FILES = {"train": "train16A.txt", "val": "validate4A.txt", "test": "test4A.txt"}


#: words after the micrograph's stem (and a space, ``_``, ``-`` or ``.``) that name its mask file
MASK_NAME_SUFFIXES = ("mask", "masks", "label", "labels", "labeled", "labelled", "gt", "groundtruth",
                      "seg", "segmentation", "annotation", "annotations", "annot")
_SUFFIXED = re.compile(r"(?P<stem>.+?)[ _.-](?:" + "|".join(MASK_NAME_SUFFIXES) + ")", re.IGNORECASE)
MASK_NAMING = ("a mask is named after its micrograph: images/a.tif <- masks/a.png, a_mask.tif, a-label.png ...; "
               "other names: set \"masks\": {\"pattern\": \"{stem}_mine\"} in schema.json")
NO_MASKS = f"no micrograph has a mask in masks/ ({MASK_NAMING})"


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if not folder.is_dir():
        return files
    for path in folder.iterdir():
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in files:
                raise ValueError(f"{folder}: two files for sample {path.stem!r}: {files[path.stem].name}, {path.name}")
            files[path.stem] = path
    return files


def detect_layout(folder: str | Path) -> str:
    """Which of :data:`LAYOUTS` a dataset folder follows (see the module docstring)."""
    folder = Path(folder)
    if not (folder / "images").is_dir():
        raise ValueError(f"{folder}: not a dataset folder (expected an images/ subfolder with micrographs)")
    if (folder / METALDAM_METADATA).is_file():
        return "metaldam"
    images = _files_by_stem(folder / "images", MICROGRAPH_SUFFIXES)
    if (folder / UHCS_METADATA).is_file() or (images and all(re.fullmatch(r"uhcs\d+", s) for s in images)):
        return "uhcs"
    if (folder / "schema.json").is_file():
        return "generic"
    masks = _files_by_stem(folder / "masks", MASK_SUFFIXES)
    tiffs = sorted(p for p in masks.values() if p.suffix.lower() in (".tif", ".tiff"))
    if tiffs and len(tiffs) == len(masks):
        import tifffile

        with tifffile.TiffFile(tiffs[0]) as tif:
            series = tif.series[0]
            if series.axes.endswith("S") and series.shape[-1] == 3:
                rgb = series.asarray()
                if np.mean(rgb.max(axis=-1) == rgb.min(axis=-1)) < 0.5:  # mostly grey: an overlay, not grains
                    return "grains"
    return "generic"


def default_schema(folder: str | Path, layout: str | None = None) -> PhaseSchema:
    """The phase schema of a dataset folder: bundled for the known layouts, ``schema.json`` otherwise."""
    folder = Path(folder)
    layout = layout or detect_layout(folder)
    if layout in ("metaldam", "uhcs", "grains"):
        return PhaseSchema.bundled(layout)
    path = folder / "schema.json"
    if not path.is_file():
        raise ValueError(
            f"{folder}: a generic dataset needs a phase schema; put schema.json in the folder (draft one with "
            f"'microsynth describe {folder} --propose-schema') or pass --schema NAME"
        )
    return PhaseSchema.load(path)


@dataclass(frozen=True)
class _Entry:
    name: str
    image: Path
    mask: Path | None


def _micrograph_of(mask_stem: str, images: dict[str, Path], pattern: str) -> str | None:
    """The stem of the micrograph a mask file stem belongs to (module docstring), None when none."""
    if pattern != "{stem}":
        head, tail = pattern.split("{stem}")
        found = re.fullmatch(re.escape(head) + "(?P<stem>.+)" + re.escape(tail), mask_stem)
    elif mask_stem in images:
        return mask_stem
    else:
        found = _SUFFIXED.fullmatch(mask_stem)
    return found["stem"] if found and found["stem"] in images else None


def paired_files(folder: str | Path, masks: MaskFiles | None = None) -> tuple[list[_Entry], list[str]]:
    """Micrograph/mask file pairs of a folder (natural order of the micrograph names; ``mask`` None for a
    micrograph without one) and the stems of the mask files that belong to no micrograph; ``masks`` (default
    ``MaskFiles()``) gives the mask file-name pattern."""
    folder = Path(folder)
    pattern = (masks or MaskFiles()).pattern
    images = _files_by_stem(folder / "images", MICROGRAPH_SUFFIXES)
    if not images:
        raise ValueError(f"{folder / 'images'}: no micrographs ({', '.join(MICROGRAPH_SUFFIXES)})")
    mask_of: dict[str, Path] = {}
    orphans = []
    for mask_stem, path in _files_by_stem(folder / "masks", MASK_SUFFIXES).items():
        stem = _micrograph_of(mask_stem, images, pattern)
        if stem is None:
            orphans.append(mask_stem)
        elif stem in mask_of:
            raise ValueError(f"{folder / 'masks'}: two masks for micrograph {stem!r}: {mask_of[stem].name}, {path.name}")
        else:
            mask_of[stem] = path
    entries = [_Entry(stem, images[stem], mask_of.get(stem)) for stem in sorted(images, key=_natural_key)]
    return entries, sorted(orphans, key=_natural_key)


# ----------------------------------------------------------------------------------------------
# MetalDAM metadata


@dataclass(frozen=True)
class MetalDAMRecord:
    """One row of MetalDAM's official metadata (``micrograph`` table of ``MetalDAM_metadata.sqlite``).

    ``micron_bar`` is the length the image's scale bar stands for; the bar's length in pixels is not
    recorded, so the metadata do not give a pixel size. ``height`` x ``width`` is the annotated area
    (image minus ``cropbar`` bottom rows); ``counts`` are the per-class pixel counts of the mask.
    """

    name: str
    micron_bar: float
    micron_bar_units: str
    magnification: int
    height: int
    width: int
    cropbar: int
    counts: tuple[int, ...]
    total: int

    @property
    def counts_consistent(self) -> bool:
        """The class counts add up to the annotated area ``height * width``."""
        return sum(self.counts) == self.height * self.width

    @property
    def problems(self) -> list[str]:
        """What is wrong with this row, in words (empty when nothing is)."""
        area = self.height * self.width
        found = []
        if not self.counts_consistent:
            found.append(f"class counts sum to {sum(self.counts)}, not {self.height}x{self.width} = {area}")
        if self.total != area:
            found.append(f"total column is {self.total}, not {self.height}x{self.width} = {area}")
        return found


def read_metaldam_metadata(folder: str | Path) -> dict[str, MetalDAMRecord]:
    """MetalDAM's official metadata rows by sample name (``micrograph0`` ...)."""
    path = Path(folder) / METALDAM_METADATA
    if not path.is_file():
        raise FileNotFoundError(f"MetalDAM metadata not found: {path}")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT image_path, micron_bar, micron_bar_units, magnification, height, width, cropbar, "
            "label0, label1, label2, label3, label4, total FROM micrograph ORDER BY micrograph_id"
        ).fetchall()
    records = {}
    for image_path, bar, units, mag, height, width, cropbar, *labels, total in rows:
        name = Path(image_path).stem
        records[name] = MetalDAMRecord(
            name, float(bar), str(units), int(mag), int(height), int(width), int(cropbar),
            tuple(int(c) for c in labels), int(total),
        )
    return records


def metaldam_metadata_counts(folder: str | Path) -> dict[str, np.ndarray]:
    """Official per-class pixel counts (int64, 5 classes) of every MetalDAM mask, by sample name."""
    return {name: np.array(r.counts, dtype=np.int64) for name, r in read_metaldam_metadata(folder).items()}


def metaldam_inconsistent_rows(folder: str | Path) -> dict[str, str]:
    """Metadata rows whose class counts do not add up to their annotated area (so they cannot be the
    counts of any mask of that size), with the reason. In the release this is micrograph27; micrograph8
    has only a wrong ``total`` column (see :attr:`MetalDAMRecord.problems`) and consistent counts."""
    return {
        name: "; ".join(r.problems)
        for name, r in read_metaldam_metadata(folder).items()
        if not r.counts_consistent
    }


# ----------------------------------------------------------------------------------------------
# UHCS metadata

_TIME_TO_HOURS = {"H": 1.0, "M": 1.0 / 60.0}
_LENGTH_TO_UM = {"um": 1.0, "nm": 1e-3, "mm": 1e3}


@dataclass
class _UHCSConditions:
    pixel_size_um: float | None = None
    properties: dict[str, float] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)


def _uhcs_conditions(row: dict[str, str], source: str) -> _UHCSConditions:
    """Pixel size, continuous anneal conditions and categorical notes of one uhcs-metadata.csv row."""
    found = _UHCSConditions(extra={"micrograph_id": int(row["micrograph_id"])})
    bar, bar_px, units = row.get("micron_bar", ""), row.get("micron_bar_px", ""), row.get("micron_bar_units", "")
    if bar and bar_px and units:
        if units not in _LENGTH_TO_UM:
            raise ValueError(f"{source}: unknown scale-bar unit {units!r} (expected um, nm or mm)")
        found.pixel_size_um = float(bar) * _LENGTH_TO_UM[units] / float(bar_px)
    if row.get("anneal_temperature"):
        unit = row.get("anneal_temp_unit", "")
        if unit not in ("C", "K"):
            raise ValueError(f"{source}: unknown anneal temperature unit {unit!r} (expected C or K)")
        kelvin_offset = 273.15 if unit == "K" else 0.0
        found.properties["anneal_temperature_c"] = float(row["anneal_temperature"]) - kelvin_offset
    if row.get("anneal_time"):
        unit = row.get("anneal_time_unit", "")
        if unit not in _TIME_TO_HOURS:
            raise ValueError(f"{source}: unknown anneal time unit {unit!r} (expected M or H)")
        found.properties["anneal_time_h"] = float(row["anneal_time"]) * _TIME_TO_HOURS[unit]
    for key in ("cool_method", "magnification", "primary_microconstituent"):
        if row.get(key):
            found.extra[key] = row[key]
    return found


def _read_uhcs_metadata(folder: Path) -> dict[int, dict[str, str]]:
    path = folder / UHCS_METADATA
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {int(row["micrograph_id"]): row for row in csv.DictReader(handle)}


def _uhcs_id(name: str) -> int | None:
    match = re.fullmatch(r"uhcs0*(\d+)", name)
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------------------------
# splits


def _split_lines(path: Path) -> list[str]:
    """Sample names listed one per line, with or without their image/mask file suffix."""
    names = []
    for line in path.read_text().splitlines():
        entry = Path(line.strip())
        if entry.name:
            names.append(entry.stem if entry.suffix.lower() in MICROGRAPH_SUFFIXES + MASK_SUFFIXES else entry.name)
    return names


#: the split name that selects every sample of a folder or store (for folders without splits)
ALL_SAMPLES = "all"


def available_splits(folder: str | Path) -> list[str]:
    """Names :func:`read_split` accepts for this folder."""
    folder = Path(folder)
    layout = detect_layout(folder)
    splits_dir = folder / "splits"
    names = sorted(p.stem for p in splits_dir.glob("*.txt")) if splits_dir.is_dir() else []
    if layout == "uhcs":
        aliased = {short: Path(file).stem for short, file in UHCS_SPLIT_FILES.items() if (splits_dir / file).is_file()}
        names = list(aliased) + [n for n in names if n not in aliased.values()]
        if (splits_dir / "split_cv.csv").is_file():
            with (splits_dir / "split_cv.csv").open(newline="") as handle:
                folds = sorted({int(row["split"]) for row in csv.DictReader(handle)})
            names += [f"cv{k}" for k in folds]
    if layout == "metaldam" and (folder / METALDAM_METADATA).is_file():
        with sqlite3.connect(f"file:{folder / METALDAM_METADATA}?mode=ro", uri=True) as conn:
            names += [f"cv{k}" for (k,) in conn.execute("SELECT fold_id FROM folds ORDER BY fold_id")]
    return names


def read_split(folder: str | Path, split: str) -> list[str]:
    """Sample names (file stems) of a named split, in file order.

    ``splits/<split>.txt`` in any layout (one file name per line). UHCS: ``train``/``val``/``test`` are
    MatSeg's ``train16A``/``validate4A``/``test4A``; ``cv<k>`` is fold k of ``split_cv.csv``. MetalDAM:
    ``cv<k>`` is the held-out part of fold k of the official metadata's ``folds`` table (6 folds).
    """
    folder = Path(folder)
    layout = detect_layout(folder)
    splits_dir = folder / "splits"
    fold = re.fullmatch(r"cv(\d+)", split)
    if layout == "uhcs" and split in UHCS_SPLIT_FILES and (splits_dir / UHCS_SPLIT_FILES[split]).is_file():
        return _split_lines(splits_dir / UHCS_SPLIT_FILES[split])
    if (splits_dir / f"{split}.txt").is_file():
        return _split_lines(splits_dir / f"{split}.txt")
    if fold and layout == "uhcs" and (splits_dir / "split_cv.csv").is_file():
        with (splits_dir / "split_cv.csv").open(newline="") as handle:
            names = [Path(row["name"]).stem for row in csv.DictReader(handle) if int(row["split"]) == int(fold.group(1))]
        if names:
            return names
    if fold and layout == "metaldam" and (folder / METALDAM_METADATA).is_file():
        with sqlite3.connect(f"file:{folder / METALDAM_METADATA}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT test_partition FROM folds WHERE fold_id = ?", (int(fold.group(1)),)).fetchone()
            ids = {int(r[0]): Path(r[1]).stem for r in conn.execute("SELECT micrograph_id, image_path FROM micrograph")}
        if row is not None:
            return [ids[int(i)] for i in row[0].split(",") if i.strip()]
    raise ValueError(f"{folder}: no split {split!r}; available: {', '.join(available_splits(folder)) or 'none'} "
                     f"(or {ALL_SAMPLES!r} for every micrograph)")


# ----------------------------------------------------------------------------------------------
# loading


def _pair_band(entry: _Entry, mask_shape: tuple[int, int]) -> int:
    """Rows to crop off the bottom of the image so that it matches its mask."""
    height, width = image_shape(entry.image)
    mask_h, mask_w = mask_shape
    if mask_w != width or mask_h > height:
        raise ValueError(
            f"{entry.name}: mask {entry.mask.name} is {mask_h}x{mask_w} but image {entry.image.name} is "
            f"{height}x{width}; expected the same size, or a mask of the same width covering the rows above "
            "a bottom information band"
        )
    return height - mask_h


class _Loader:
    """Reads the samples of one dataset folder; holds the per-folder metadata."""

    def __init__(self, folder: Path, schema: PhaseSchema | None, layout: str):
        self.folder = folder
        self.layout = detect_layout(folder) if layout == "auto" else layout
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown dataset layout {layout!r}; expected 'auto' or one of {LAYOUTS}")
        self.schema = schema if schema is not None else default_schema(folder, self.layout)
        self.metaldam = read_metaldam_metadata(folder) if self.layout == "metaldam" else {}
        self.uhcs = _read_uhcs_metadata(folder) if self.layout == "uhcs" else {}

    def load(self, entry: _Entry) -> Sample:
        provenance = Provenance(origin="real", source=str(entry.image))
        if entry.mask is not None:
            provenance.extra["mask_source"] = str(entry.mask)
        pixel_size = None
        properties: dict[str, float] = {}
        instances = None
        if entry.mask is None:
            mask = None
            image, pixel_size = read_micrograph(entry.image, info_band="auto")
        else:
            encoding = self.schema.masks
            if self.layout == "grains" or encoding.encoding == "instances":
                grains = read_instance_map(entry.mask)
                mask = grains.boundary.astype(np.uint8)  # grains schema: 0 grain, 1 boundary
                instances = grains.labels
                provenance.extra["instance_colors"] = ["#%02x%02x%02x" % tuple(c) for c in grains.colors.tolist()]
            else:
                mask = read_mask(entry.mask, self.schema, kind=encoding.encoding, background_id=encoding.background,
                                 tolerance=encoding.tolerance)
            image, pixel_size = read_micrograph(entry.image, info_band=_pair_band(entry, mask.shape))
        if self.layout == "metaldam" and entry.name in self.metaldam:
            record = self.metaldam[entry.name]
            provenance.extra.update(
                magnification=record.magnification,
                micron_bar=record.micron_bar,
                micron_bar_units=record.micron_bar_units,
                cropbar=record.cropbar,
            )
        if self.layout == "uhcs":
            row = self.uhcs.get(_uhcs_id(entry.name))
            if row is not None:
                found = _uhcs_conditions(row, f"{self.folder / UHCS_METADATA} (micrograph_id {row['micrograph_id']})")
                pixel_size = found.pixel_size_um if found.pixel_size_um is not None else pixel_size
                properties = found.properties
                provenance.extra.update(found.extra)
        return Sample(
            image=image,
            schema=self.schema,
            mask=mask,
            name=entry.name,
            pixel_size_um=pixel_size,
            properties=properties,
            provenance=provenance,
            instances=instances,
        )


def load_dataset(
    folder: str | Path,
    schema: PhaseSchema | None = None,
    split: str | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    *,
    layout: str = "auto",
) -> list[Sample]:
    """Read every micrograph (+ mask) of a dataset folder as real :class:`Sample` objects.

    ``schema`` defaults to the bundled schema of the layout (``schema.json`` for generic folders);
    ``split`` keeps the samples named by :func:`read_split` (:data:`ALL_SAMPLES` or None: all). Provenance:
    origin ``"real"``, ``source`` the image path (``extra["mask_source"]`` the mask path).

    - MetalDAM: images cropped to their masks; ``provenance.extra`` holds ``magnification``,
      ``micron_bar`` (+ units) and ``cropbar`` from the official metadata. The metadata give the scale
      bar's length but not its length in pixels, so ``pixel_size_um`` stays None.
    - UHCS: ``pixel_size_um`` = micron_bar / micron_bar_px, ``properties`` ``anneal_temperature_c``
      and ``anneal_time_h`` (minutes converted), ``provenance.extra`` ``cool_method`` (Q, AR, FC, ...),
      ``magnification``, ``primary_microconstituent``, ``micrograph_id`` - each only where the
      uhcs-metadata.csv row has it (uhcs1528 has no anneal conditions).
    - grains: ``mask`` is the grain(0)/boundary(1) map, ``instances`` the grain labels 1..N,
      ``provenance.extra["instance_colors"]`` the map colour of each grain (shared by serial sections).

    Calls ``progress(done, total, message)`` per sample and raises
    :class:`~napari_microsynth.core.progress.Cancelled` once ``should_stop()`` is true.
    """
    folder = Path(folder)
    loader = _Loader(folder, schema, layout)
    entries, orphans = paired_files(folder, loader.schema.masks)
    if orphans:
        raise ValueError(f"{folder / 'masks'}: masks without a micrograph in images/: {', '.join(orphans)} "
                         f"({MASK_NAMING})")
    if split not in (None, ALL_SAMPLES):
        wanted = read_split(folder, split)
        by_name = {e.name: e for e in entries}
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise ValueError(f"{folder}: split {split!r} names samples that are not in images/: {', '.join(missing)}")
        entries = [by_name[name] for name in wanted]
    samples = []
    for i, entry in enumerate(entries):
        check_stop(should_stop)
        samples.append(loader.load(entry))
        progress(i + 1, len(entries), f"read {entry.name}")
    return samples


# ----------------------------------------------------------------------------------------------
# summary


@dataclass
class DatasetSummary:
    """What a dataset folder holds, for ``microsynth describe`` and the data widget."""

    folder: str
    layout: str
    schema: str
    class_names: list[str]
    n_samples: int
    n_labelled: int
    image_sizes: dict[str, int]  # "WxH" (width x height) of the loaded (band-cropped) images -> number of samples
    class_fractions: list[float]  # pixel share of each class over all loaded masks
    splits: dict[str, int]  # split name -> number of samples
    problems: list[str]
    masks: str = ""  # how the mask files are read, in words

    def to_dict(self) -> dict:
        return asdict(self)

    def as_text(self) -> str:
        """Multi-line human-readable summary."""
        lines = [
            f"{self.folder}: {self.layout} layout, {self.n_samples} micrographs, {self.n_labelled} with masks",
            "image sizes: " + ", ".join(f"{size} px ({n})" for size, n in self.image_sizes.items()),
            f"masks read as {self.masks}",
            f"schema {self.schema!r}:",
        ]
        for i, (name, share) in enumerate(zip(self.class_names, self.class_fractions)):
            lines.append(f"  {i}  {name:<24s} {share:7.2%}")
        if self.splits:
            lines.append("splits: " + ", ".join(f"{name} ({n})" for name, n in self.splits.items()))
        lines.append(f"problems ({len(self.problems)}):" if self.problems else "problems: none")
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _mask_reading(schema: PhaseSchema, layout: str) -> str:
    """How :class:`_Loader` reads the mask files, in words."""
    masks = schema.masks
    if layout == "grains" or masks.encoding == "instances":
        how = "grain maps (one colour per grain: grain / boundary)"
    elif masks.encoding == "overlay":
        how = (f"overlays (phase colours painted on the micrograph; unpainted grey pixels are "
               f"{schema.names[masks.background]!r})")
    else:
        how = {"index": "class ids (pixel value = phase id)", "color": "phase colours",
               "auto": "class ids, or phase colours for colour files"}[masks.encoding]
    return (how + (f", colour tolerance {masks.tolerance}" if masks.tolerance else "")
            + (f", file names {masks.pattern}" if masks.pattern != "{stem}" else ""))


def describe_dataset(
    folder: str | Path,
    schema: PhaseSchema | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> DatasetSummary:
    """Read a dataset folder sample by sample and summarise it; unreadable samples, masks without
    images, images without masks, metadata rows that contradict the masks and missing processing
    conditions are listed as problems instead of stopping the summary."""
    folder = Path(folder)
    loader = _Loader(folder, schema, "auto")
    entries, orphans = paired_files(folder, loader.schema.masks)
    problems = [f"{name}: mask without a micrograph in images/" for name in orphans]
    no_masks = all(entry.mask is None for entry in entries)
    if no_masks:
        problems.insert(0, NO_MASKS)
    sizes: dict[str, int] = {}
    counts = np.zeros(loader.schema.n_classes, dtype=np.int64)
    n_labelled = 0
    for i, entry in enumerate(entries):
        check_stop(should_stop)
        progress(i, len(entries), f"reading {entry.name}")
        try:
            sample = loader.load(entry)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        size = f"{sample.shape[1]}x{sample.shape[0]}"
        sizes[size] = sizes.get(size, 0) + 1
        if sample.mask is None:
            if not no_masks:
                problems.append(f"{entry.name}: micrograph without a mask in masks/ (unlabelled)")
            continue
        n_labelled += 1
        mask_counts = class_counts(sample.mask, loader.schema.n_classes, loader.schema.ignore_id)
        counts += mask_counts
        record = loader.metaldam.get(entry.name)
        if record is not None:
            problems += [f"{entry.name}: metadata {p}" for p in record.problems]
            if record.counts_consistent and tuple(mask_counts.tolist()) != record.counts:
                problems.append(
                    f"{entry.name}: mask class counts {mask_counts.tolist()} differ from metadata {list(record.counts)}"
                )
        if loader.layout == "uhcs" and not sample.properties:
            problems.append(f"{entry.name}: no processing conditions in {UHCS_METADATA}")
    progress(len(entries), len(entries), "done")
    splits = {}
    for name in available_splits(folder):
        splits[name] = len(read_split(folder, name))
    total = counts.sum()
    return DatasetSummary(
        folder=str(folder),
        layout=loader.layout,
        schema=loader.schema.name,
        class_names=list(loader.schema.names),
        n_samples=len(entries),
        n_labelled=n_labelled,
        image_sizes=sizes,
        class_fractions=(counts / total).tolist() if total else [0.0] * loader.schema.n_classes,
        splits=splits,
        problems=problems,
        masks=_mask_reading(loader.schema, loader.layout),
    )


def _store_indices(store: DatasetStore, split: str | None) -> list[int]:
    """The sample indices of ``split`` (all for None or :data:`ALL_SAMPLES`) of a finished store."""
    if store.unfinished:
        raise ValueError(f"store {store.path} is unfinished ({store.unfinished})")
    indices = list(range(len(store))) if split in (None, ALL_SAMPLES) else store.splits.get(split)
    if indices is None:
        raise ValueError(f"store {store.path} has no split {split!r}; splits: {', '.join(store.splits) or 'none'} "
                         f"(or {ALL_SAMPLES!r} for every sample)")
    return indices


def load_split(
    path: str | Path,
    split: str | None = None,
    schema: PhaseSchema | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> list[Sample]:
    """Samples of a dataset folder (:func:`load_dataset`) or a dataset store, optionally one split.

    An unfinished store (an export in progress or interrupted) is refused."""
    path = Path(path)
    if has_store_metadata(path):
        store = DatasetStore.open(path)
        indices = _store_indices(store, split)
        samples = []
        for done, i in enumerate(indices):
            check_stop(should_stop)
            samples.append(store[i])
            progress(done + 1, len(indices), f"read {samples[-1].name}")
        return samples
    return load_dataset(path, schema=schema, split=split, progress=progress, should_stop=should_stop)


def split_fractions(
    path: str | Path,
    split: str | None = None,
    schema: PhaseSchema | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> tuple[list[str], np.ndarray, PhaseSchema]:
    """Names and ``(N, C)`` phase fractions of the labelled samples of a folder or store (one split or all),
    and their schema. A store's come from its stored class counts, without reading an image or mask.

    >>> names, fractions, schema = split_fractions("uhcs.zarr", "train")   # doctest: +SKIP
    """
    path = Path(path)
    if has_store_metadata(path):
        store = DatasetStore.open(path)
        indices = _store_indices(store, split)
        return [store.names[i] for i in indices], store.fractions()[indices], store.schema
    samples = [s for s in load_split(path, split, schema, progress, should_stop) if s.mask is not None]
    if not samples:
        return [], np.zeros((0, 0)), schema
    return [s.name for s in samples], np.stack([s.fractions for s in samples]), samples[0].schema
