"""napari reader, writer and sample data for the dataset store (referenced by ``napari.yaml``).

All three are plain functions on numpy arrays and napari "layer data" tuples ``(data, kwargs, type)``,
so they need no napari import and are tested without a viewer.

Layer metadata carries what a plain image/labels pair would lose, under the key ``"microsynth"``::

    {"store": "/abs/path.zarr" or None, "schema": PhaseSchema.to_dict(),
     "samples": [{"index", "name", "pixel_size_um", "properties", "provenance", "status", "splits"}, ...]}

with one ``samples`` entry per plane of the layer (a 2-D layer has one). The writer reads it back, so
schema, names and provenance survive a read -> edit labels -> write round trip.

The reader also opens what may be too large to load: a grey TIFF read lazily (tiles are read when napari
shows them; multiscale from the file's pyramid, or one computed on demand, when it is larger than 1024
px), and a phase map written by ``microsynth segment`` block by block as a multiscale labels layer. It
is offered every TIFF, so it reads small grey ones too (a colour TIFF is left to napari's own reader).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .core.io import to_unit_float
from .core.large_image import PhaseMap, is_large_micrograph, is_phase_map, open_micrograph
from .core.sample import Provenance, Sample
from .core.schema import Phase, PhaseSchema
from .core.sample_data import load_sample
from .core.store import DatasetStore, is_store

LayerData = tuple[Any, dict[str, Any], str]
META_KEY = "microsynth"
MAX_READ_BYTES = 2 * 1024**3
"""The reader loads samples into memory (labels must be numpy arrays to be painted); beyond this many
bytes of image + mask it stops loading, with a warning, and shows the samples loaded so far."""

# Distinct colours for schemas inferred from unannotated labels layers (first of matplotlib's tab10).
_INFERRED_COLORS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


def label_colormap(schema: PhaseSchema) -> dict[int | None, tuple[float, float, float, float]]:
    """napari ``DirectLabelColormap``-style colour dict: class id -> RGBA in [0, 1]; other ids transparent."""
    colors: dict[int | None, tuple[float, float, float, float]] = {None: (0.0, 0.0, 0.0, 0.0)}
    for phase in schema.phases:
        r, g, b = (c / 255.0 for c in phase.color)
        colors[phase.id] = (r, g, b, 1.0)
    if schema.ignore_id is not None:
        colors[schema.ignore_id] = (0.0, 0.0, 0.0, 0.0)
    return colors


def phase_features(schema: PhaseSchema) -> dict[str, list]:
    """Labels-layer ``features``: napari's status bar shows the phase name of the class under the cursor."""
    return {"index": [phase.id for phase in schema.phases], "phase": list(schema.names)}


def physical_scale(pixel_sizes_um: Sequence[float | None], ndim: int = 2) -> dict[str, tuple]:
    """Layer ``scale`` and ``units`` (micrometres on the two image axes) for planes sharing one known pixel
    size; pixel units (scale 1) when it is unknown or differs between planes."""
    sizes = set(pixel_sizes_um)
    if len(sizes) != 1 or None in sizes:
        return {"scale": (1.0,) * ndim, "units": ("pixel",) * ndim}
    px = float(sizes.pop())
    return {"scale": (1.0,) * (ndim - 2) + (px, px), "units": ("pixel",) * (ndim - 2) + ("um", "um")}


def layer_pair(
    image: np.ndarray,
    mask: np.ndarray,
    schema: PhaseSchema,
    samples: list[dict[str, Any]],
    name: str,
    store: str | None = None,
) -> list[LayerData]:
    """An image layer and a labels layer (2-D, or stacks of equal-size planes) with shared metadata, in
    micrometres where the samples' pixel size is known."""
    metadata = {META_KEY: {"store": store, "schema": schema.to_dict(), "samples": samples}}
    scale = physical_scale([entry.get("pixel_size_um") for entry in samples], np.ndim(image))
    image_kwargs = {
        "name": f"{name} image",
        "metadata": metadata,
        "colormap": "gray",
        "contrast_limits": (0.0, 1.0),
        **scale,
    }
    labels_kwargs = {
        "name": f"{name} mask",
        "metadata": metadata,
        "colormap": label_colormap(schema),
        "features": phase_features(schema),
        "opacity": 0.6,
        **scale,
    }
    return [(image, image_kwargs, "image"), (mask, labels_kwargs, "labels")]


def _sample_entries(store: DatasetStore, indices: list[int]) -> list[dict[str, Any]]:
    names, splits = store.names, store.splits
    return [
        {
            "index": i,
            "name": names[i],
            "pixel_size_um": store.pixel_size_um(i),
            "properties": store.properties(i),
            "provenance": store.provenance(i).to_dict(),
            "status": store.status(i),
            "splits": [split for split, members in splits.items() if i in members],
        }
        for i in indices
    ]


# ---------------------------------------------------------------------- reader
def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """Return :func:`read_store` when every path is a napari-microsynth store folder,
    :func:`read_phase_map` / :func:`read_tiff_micrograph` for one phase map / large grey TIFF, else None.

    Only TIFFs too large to read whole (:func:`~napari_microsynth.core.large_image.is_large_micrograph`)
    are claimed, so napari opens ordinary TIFFs with its own reader without asking which reader to use.
    Of ``.npz`` files only the grain-growth structures of ``microsynth simulate`` are claimed
    (:func:`read_grain_growth`).
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if len(paths) == 1 and is_phase_map(paths[0]):
        return read_phase_map
    if len(paths) == 1 and _is_grain_growth(paths[0]):
        return read_grain_growth
    if len(paths) == 1 and is_large_micrograph(paths[0]) and _is_grey_tiff(paths[0]):
        return read_tiff_micrograph
    if not paths or not all(is_store(p) for p in paths):
        return None
    return read_store


def _one_path(path: str | Sequence[str]) -> Path:
    return Path(path if isinstance(path, (str, Path)) else path[0])


def _pyramid_data(levels: list) -> dict[str, Any]:
    """Layer ``data`` and ``multiscale`` for pyramid levels (napari takes no one-level multiscale list)."""
    return {"data": levels, "multiscale": True} if len(levels) > 1 else {"data": levels[0], "multiscale": False}


def _is_grey_tiff(path) -> bool:
    """True for a TIFF holding one 2-D grey image (reads its header only)."""
    try:
        open_micrograph(path).close()
    except (ValueError, OSError):
        return False
    return True


def read_tiff_micrograph(path: str | Sequence[str]) -> list[LayerData]:
    """A grey TIFF as an image layer whose tiles are read when napari shows them (multiscale when large)."""
    path = _one_path(path)
    micrograph = open_micrograph(path)
    dtype = np.dtype(micrograph.levels[0].dtype)
    limits = (0, np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else (0.0, 1.0)
    kwargs = {"name": path.stem, "colormap": "gray", "contrast_limits": limits,
              "metadata": {META_KEY: {"source": str(path.resolve())}}, **physical_scale([micrograph.pixel_size_um])}
    pyramid = _pyramid_data(micrograph.levels)
    return [(pyramid.pop("data"), {**kwargs, **pyramid}, "image")]


def phase_map_layer(phase_map: PhaseMap, name: str, **kwargs) -> LayerData:
    """A phase map as a (multiscale) labels layer in the phase colours, read when napari shows it."""
    schema = phase_map.schema
    metadata = {META_KEY: {"schema": schema.to_dict(), "phase_map": str(phase_map.path.resolve())}}
    pyramid = _pyramid_data(phase_map.levels)
    return (pyramid.pop("data"), {"name": name, "colormap": label_colormap(schema), "features": phase_features(schema),
                                  "opacity": 0.55, "metadata": metadata, **pyramid, **kwargs}, "labels")


def read_phase_map(path: str | Sequence[str]) -> list[LayerData]:
    """The phase map ``microsynth segment`` wrote block by block (see :class:`PhaseMap`)."""
    path = _one_path(path)
    return [phase_map_layer(PhaseMap.open(path), path.name.removesuffix(".zarr"))]


def _is_grain_growth(path) -> bool:
    from .engines.grain_growth import is_structure_file

    return is_structure_file(path)


def read_grain_growth(path: str | Sequence[str]) -> list[LayerData]:
    """A structure of ``microsynth simulate`` as a time series to scrub: the eq. 3 image, the grain map
    (each grain keeps its number, so its colour, through time) and the 2 px grain boundaries, each
    (T, H, W) over the snapshots; the first axis is in simulation steps when the snapshots are evenly
    spaced."""
    from . import widgets  # noqa: F401  (inside napari: keeps torch from loading triton later, see widgets/__init__)
    from .core.io import instance_boundaries
    from .core.microstructure import connected_instances
    from .engines.grain_growth import load_structure

    path = _one_path(path)
    structure = load_structure(path)
    steps = structure.snapshot_steps
    spacing = np.diff(steps)
    even = len(steps) > 1 and bool(np.all(spacing == spacing[0]))
    axes = {"scale": (float(spacing[0]) if even else 1.0, 1.0, 1.0),
            "translate": (float(steps[0]) if even else 0.0, 0.0, 0.0),
            "axis_labels": ("step" if even else "snapshot", "y", "x")}
    metadata = {META_KEY: {"grain_growth": str(path.resolve()), "snapshot_steps": steps.tolist(),
                           "settings": structure.settings.to_dict(), "seed": structure.seed,
                           "info": structure.info}}
    boundaries = np.stack([instance_boundaries(connected_instances(grains)) for grains in structure.snapshots])
    name = path.stem
    return [
        (structure.snapshot_phi, {"name": f"{name} phi", "colormap": "gray", "contrast_limits": (0, 255),
                                  "metadata": metadata, **axes}, "image"),
        (structure.snapshots, {"name": f"{name} grains", "opacity": 0.5, "metadata": metadata, **axes}, "labels"),
        (boundaries.astype(np.uint8), {"name": f"{name} boundaries", "metadata": metadata,
                                       "colormap": {None: (0.0, 0.0, 0.0, 0.0), 1: (1.0, 0.1, 0.1, 1.0)}, **axes},
         "labels"),
    ]


def read_store(path: str | Sequence[str]) -> list[LayerData]:
    """Layers of one or several stores: per store and per image size, one stacked image + labels pair.

    Samples of equal size share a stack (a slider steps through them); a store holding whole
    micrographs and 256x256 tiles gives one pair per size. Loading stops, with a warning, after
    ``MAX_READ_BYTES``.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(store_layers(DatasetStore.open(p, mode="r")))
    return layers


def store_layers(store: DatasetStore, max_bytes: int = MAX_READ_BYTES) -> list[LayerData]:
    """Image + labels layer data for the samples of an open store (see :func:`read_store`)."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    loaded = 0
    used = 0
    for i in range(len(store)):
        shape = store.shape(i)
        size = shape[0] * shape[1] * 5  # float32 image + uint8 mask
        if used + size > max_bytes and loaded:
            warnings.warn(
                f"{store.path}: showing the first {loaded} of {len(store)} samples; the rest would exceed "
                f"{max_bytes / 1024**3:.1f} GiB. Use the dataset store API for larger stores.",
                stacklevel=2,
            )
            break
        by_shape.setdefault(shape, []).append(i)
        loaded += 1
        used += size
    base = store.path.name.removesuffix(".zarr") or store.path.name
    layers: list[LayerData] = []
    for shape, indices in by_shape.items():
        samples = _sample_entries(store, indices)
        images = np.stack([store.image(i) for i in indices])
        masks = np.stack([store.mask(i) for i in indices])
        if len(indices) == 1:
            images, masks = images[0], masks[0]
        name = base if len(by_shape) == 1 else f"{base} {shape[0]}x{shape[1]}"
        layers.extend(layer_pair(images, masks, store.schema, samples, name, str(store.path.resolve())))
    return layers


# ---------------------------------------------------------------------- writer
def _unit_float(data: np.ndarray, layer_name: str) -> np.ndarray:
    """Image layer data as float32 in [0, 1] (see :func:`core.io.to_unit_float`)."""
    try:
        return to_unit_float(np.asarray(data))
    except ValueError as exc:
        raise ValueError(f"image layer {layer_name!r}: {exc}") from exc


def _stem(name: str) -> str:
    for suffix in (" image", " mask", " labels"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _pair_layers(layer_data: Sequence[LayerData]) -> list[tuple[LayerData, LayerData]]:
    """Match image and labels layers by name stem ("x image" / "x mask"), else by their order."""
    images = [d for d in layer_data if d[2] == "image"]
    labels = [d for d in layer_data if d[2] == "labels"]
    others = sorted({d[2] for d in layer_data} - {"image", "labels"})
    if others:
        raise ValueError(f"the store writer takes image and labels layers only, got {', '.join(others)} layers too")
    if not images or len(images) != len(labels):
        raise ValueError(
            f"the store writer needs one image layer per labels layer, got {len(images)} image and "
            f"{len(labels)} labels layers"
        )
    image_by_stem = {_stem(d[1].get("name", "")): d for d in images}
    label_stems = [_stem(d[1].get("name", "")) for d in labels]
    if len(image_by_stem) == len(images) and sorted(image_by_stem) == sorted(label_stems):
        return [(image_by_stem[s], lab) for s, lab in zip(label_stems, labels)]
    return list(zip(images, labels))


def _layer_meta(meta: dict[str, Any]) -> dict[str, Any]:
    value = (meta.get("metadata") or {}).get(META_KEY)
    return value if isinstance(value, dict) else {}


def infer_schema(masks: Sequence[np.ndarray], name: str) -> PhaseSchema:
    """A schema with classes ``0..max label`` (at least 2) named "class i", for labels without one."""
    top = 1
    for mask in masks:
        if mask.size and int(mask.min()) < 0:
            raise ValueError(f"labels hold negative values ({int(mask.min())}); class ids must be 0, 1, 2, ...")
        top = max(top, int(mask.max()) if mask.size else 0)
    phases = tuple(
        Phase(i, f"class {i}", _INFERRED_COLORS[i % len(_INFERRED_COLORS)]) for i in range(top + 1)
    )
    return PhaseSchema(name=name, phases=phases, description="inferred from the values of a napari labels layer")


def _planes(data: np.ndarray) -> list[np.ndarray]:
    data = np.asarray(data)
    if data.ndim == 2:
        return [data]
    if data.ndim == 3:
        return list(data)
    raise ValueError(f"expected 2-D layers or stacks of 2-D planes, got shape {data.shape}")


def _open_source(source_path: str | None, target: DatasetStore) -> DatasetStore | None:
    """The store a layer was read from: the target itself, another readable store, or None."""
    if not source_path:
        return None
    if Path(source_path).resolve() == target.path.resolve():
        return target
    return DatasetStore.open(source_path, check_data=False) if is_store(source_path) else None


@dataclass
class _PlannedLayer:
    """One image + labels layer pair checked for writing: its planes and what its metadata says of them."""

    image_name: str
    images: list[np.ndarray]
    masks: list[np.ndarray]
    entries: list[dict[str, Any]]
    schema: PhaseSchema
    source_path: str | None


def write_store(path: str, layer_data: Sequence[LayerData]) -> list[str]:
    """Save image + labels layers into a dataset store at ``path`` (npe2 multi-layer writer).

    Layers are paired by name ("x image" with "x mask") or by order; stacks are split into samples.
    The schema comes from the labels' metadata, else from the existing store, else it is inferred
    from the label values (:func:`infer_schema`). A new path gets a new store; an existing store is
    appended to. Planes that were read from this same store (metadata ``store`` + ``index``) are not
    appended again: when their labels were edited, the new mask is saved as a correction
    (``DatasetStore.replace_mask``), otherwise nothing is written for them. Planes read from another
    store keep their provenance (marked ``corrected`` with the number of changed pixels when edited)
    and their split names. Everything is checked before the first write. Returns ``[path]``.
    """
    target = Path(path)
    if target.exists() and not is_store(target):
        raise FileExistsError(f"{target} exists and is not a napari-microsynth dataset store")
    store = DatasetStore.open(target, mode="a") if target.exists() else None
    plan: list[_PlannedLayer] = []
    for image_layer, label_layer in _pair_layers(layer_data):
        planned = _plan_layer(image_layer, label_layer, store, target)
        if plan and planned.schema != plan[0].schema:
            raise ValueError(f"the labels layers use different schemas ({plan[0].schema.name!r}, "
                             f"{planned.schema.name!r}); save them to separate stores")
        plan.append(planned)
    store = store if store is not None else DatasetStore.create(target, plan[0].schema)
    added_to_split: dict[str, list[int]] = {}
    for planned in plan:
        for split, indices in _write_layer(planned, store).items():
            added_to_split.setdefault(split, []).extend(indices)
    for split, indices in added_to_split.items():
        store.set_split(split, store.splits.get(split, []) + indices)
    return [str(target)]


def _plan_layer(image_layer: LayerData, label_layer: LayerData, store: DatasetStore | None,
                target: Path) -> _PlannedLayer:
    """Check one layer pair (shapes, schema against the store, mask values) before anything is written."""
    (image_data, image_meta, _), (label_data, label_meta, _) = image_layer, label_layer
    image_name, label_name = image_meta.get("name", "image"), label_meta.get("name", "labels")
    images, masks = _planes(image_data), _planes(label_data)
    if len(images) != len(masks) or any(a.shape != b.shape for a, b in zip(images, masks)):
        raise ValueError(f"image layer {image_name!r} {np.shape(image_data)} and labels layer "
                         f"{label_name!r} {np.shape(label_data)} differ in shape")
    info = _layer_meta(label_meta) or _layer_meta(image_meta)
    entries = info.get("samples") if isinstance(info.get("samples"), list) else []
    if len(entries) != len(images):
        entries = [{} for _ in images]
    if info.get("schema") is not None:
        schema = PhaseSchema.from_dict(info["schema"])
    else:
        schema = store.schema if store is not None else infer_schema(masks, name=_stem(label_name))
    if store is not None and schema != store.schema:
        raise ValueError(f"labels layer {label_name!r} uses schema {schema.name!r} ({', '.join(schema.names)}) "
                         f"but the store {target} uses {store.schema.name!r} ({', '.join(store.schema.names)})")
    for mask in masks:
        schema.validate_mask(mask)
    images = [_unit_float(image, image_name) for image in images]
    return _PlannedLayer(image_name, images, masks, entries, schema, info.get("store"))


def _write_layer(planned: _PlannedLayer, store: DatasetStore) -> dict[str, list[int]]:
    """Write one checked layer pair's planes (corrections for planes of this store, new samples for the
    others); returns the new indices per split name the planes carried."""
    source = _open_source(planned.source_path, store)
    added: dict[str, list[int]] = {}
    for k, (image, mask, entry) in enumerate(zip(planned.images, planned.masks, planned.entries)):
        index = entry.get("index")
        from_source = (source is not None and isinstance(index, int) and 0 <= index < len(source)
                       and source.shape(index) == mask.shape)
        if from_source and source is store:
            if not np.array_equal(store.mask(index), mask):
                store.replace_mask(index, mask)
            continue
        provenance = (Provenance.from_dict(entry["provenance"]) if entry.get("provenance")
                      else Provenance(origin="real", source=planned.image_name))
        if from_source and not np.array_equal(source.mask(index), mask):
            provenance = provenance.corrected(np.count_nonzero(source.mask(index, version="mask") != mask))
        stem = _stem(planned.image_name)
        sample = Sample(image=image, schema=planned.schema, mask=np.asarray(mask),
                        name=entry.get("name") or (stem if len(planned.images) == 1 else f"{stem} [{k}]"),
                        pixel_size_um=entry.get("pixel_size_um"), properties=dict(entry.get("properties") or {}),
                        provenance=provenance)
        new_index = store.append(sample, status=entry.get("status", "pending"))
        for split in entry.get("splits") or []:
            added.setdefault(split, []).append(new_index)
    return added


def make_sample_data() -> list[LayerData]:
    """napari sample data: the bundled UHCS micrograph and its phase mask, coloured by the uhcs schema."""
    sample = load_sample()
    entry = {
        "name": sample.name,
        "pixel_size_um": sample.pixel_size_um,
        "properties": sample.properties,
        "provenance": sample.provenance.to_dict(),
        "status": "accepted",
    }
    return layer_pair(sample.image, sample.mask, sample.schema, [entry], sample.name)
