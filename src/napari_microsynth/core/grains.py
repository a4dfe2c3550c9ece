"""Grain statistics of a grain map (numpy + scikit-image): per-grain area, equivalent diameter, aspect
ratio and circularity, and the ASTM E112 grain-size number, for simulated and real maps alike.

A grain map is an integer instance map (0 = no grain, e.g. a boundary pixel; grains 1..N) or a grain
boundary mask whose interiors are labelled (:func:`labels_from_boundaries`). Grains touching the image edge
are cut by it: they are listed (``touches_border``) but left out of the size distribution of whole grains,
and the E112 count weights them as the planimetric procedure does (:func:`astm_e112`).

>>> labels = np.repeat(np.repeat(np.arange(1, 10).reshape(3, 3), 10, 0), 10, 1)  # 3 x 3 squares of 10 px
>>> table = grain_table(labels, pixel_size_um=1.0)
>>> table["area_px"].tolist()[:3], bool(table["touches_border"][4])
([100, 100, 100], False)
>>> grid = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 25, 0), 25, 1)[12:-13, 12:-13]
>>> round(astm_e112(grid, pixel_size_um=2.0).g, 2)  # 50 um square grains: 400 per mm^2
5.69
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .schema import PhaseSchema

#: E112: G = LOG2_10 * log10(N_A) - 2.954, N_A grains per mm^2 at 1x (N_A = 2^(G - 1) x 15.50)
LOG2_10 = 1.0 / math.log10(2.0)  # 3.321928
E112_OFFSET = 2.954
#: E112 (mean grain area of whole grains, mm^2): G = -3.3223 log10(A) - 2.955
E112_AREA_SLOPE, E112_AREA_OFFSET = 3.3223, 2.955

GRAIN_COLUMNS = ("label", "area_px", "area_um2", "equivalent_diameter_px", "equivalent_diameter_um", "perimeter_px",
                 "circularity", "aspect_ratio", "major_axis_px", "minor_axis_px", "orientation_deg", "centroid_row",
                 "centroid_col", "touches_border")


def labels_from_boundaries(boundary: np.ndarray, fill: bool = True, min_area: int = 0) -> np.ndarray:
    """Grain labels 1..N of a boundary mask (True = boundary): the 4-connected interiors, each interior of
    fewer than ``min_area`` px dropped (treated as boundary, e.g. specks of a predicted mask); with ``fill``
    every boundary pixel then joins the nearest grain, so the grains tile the image as in an instance map.

    >>> b = np.zeros((4, 7), bool); b[:, 3] = True
    >>> labels_from_boundaries(b).tolist()[0], labels_from_boundaries(b, fill=False).tolist()[0]
    ([1, 1, 1, 1, 2, 2, 2], [1, 1, 1, 0, 2, 2, 2])
    """
    from skimage.measure import label
    from skimage.segmentation import expand_labels

    boundary = np.asarray(boundary, dtype=bool)
    labels = label(~boundary, background=0, connectivity=1)
    if min_area > 1:
        small = np.bincount(labels.ravel()) < min_area
        small[0] = True
        labels = label(~small[labels], background=0, connectivity=1)
    if fill and labels.max() > 0:
        labels = expand_labels(labels, distance=float(max(labels.shape)))
    return labels.astype(np.int32)


def grains_from_boundary_probability(probability: np.ndarray, marker_depth: float, threshold: float = 0.5) -> np.ndarray:
    """Grain labels 1..N of a predicted boundary probability map that splits grains merged through gaps in
    the predicted boundaries (:func:`labels_from_boundaries` counts two grains joined by a one-pixel gap as
    one). The distance of every interior pixel (probability at most ``threshold``) to the nearest boundary
    pixel is flooded from its maxima that rise at least ``marker_depth`` px above where they meet a neighbouring
    maximum (h-maxima, one seed per grain centre: a gap is narrower than the grain behind it), and every pixel,
    boundary pixels included, joins a grain. A larger depth merges more; 0 would seed every ripple.

    >>> b = np.zeros((9, 17)); b[:, 8] = 1; b[4, 8] = 0  # two squares joined through a 1 px gap
    >>> int(labels_from_boundaries(b > 0.5).max()), int(grains_from_boundary_probability(b, 1.0).max())
    (1, 2)
    """
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    if not marker_depth > 0:
        raise ValueError(f"the marker depth must be positive, got {marker_depth}")
    distance = ndimage.distance_transform_edt(np.asarray(probability) <= threshold)
    markers, found = ndimage.label(h_maxima(distance, marker_depth))
    if found == 0:
        return np.ones(distance.shape, np.int32)
    return watershed(-distance, markers).astype(np.int32)


def _touching_border(labels: np.ndarray) -> np.ndarray:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.unique(edge[edge > 0])


def grain_table(labels: np.ndarray, pixel_size_um: float | None = None) -> dict[str, np.ndarray]:
    """One row per grain (label > 0) as columns :data:`GRAIN_COLUMNS`.

    ``area``: pixels (and um^2 with ``pixel_size_um``); ``equivalent_diameter``: of the disc with that area;
    ``perimeter_px``: scikit-image's contour estimate; ``circularity``: 4 pi area / perimeter^2 (1 for a
    disc; a large digitised disc reads 0.93-0.98, a square 0.83 against the ideal pi/4, grains of a few px
    can read above 1); ``aspect_ratio``: major / minor axis of the grain's inertia ellipse (NaN for a grain
    one pixel wide); ``orientation_deg``: of the major axis, from the row axis; ``touches_border``: the grain
    has a pixel on the image edge (it is cut there).
    """
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"a grain map must be a 2-D integer label image, got {labels.dtype} {labels.shape}")
    props = regionprops_table(labels, properties=("label", "area", "perimeter", "axis_major_length",
                                                  "axis_minor_length", "orientation", "centroid"))
    area = props["area"].astype(np.int64)
    diameter = np.sqrt(4.0 * area / np.pi)
    perimeter = props["perimeter"]
    major, minor = props["axis_major_length"], props["axis_minor_length"]
    with np.errstate(divide="ignore", invalid="ignore"):
        circularity = np.where(perimeter > 0, 4.0 * np.pi * area / perimeter**2, np.nan)
        aspect = np.where(minor > 0, major / minor, np.nan)
    px = pixel_size_um
    nan = np.full(area.shape, np.nan)
    return {
        "label": props["label"].astype(np.int64),
        "area_px": area,
        "area_um2": area * px * px if px else nan,
        "equivalent_diameter_px": diameter,
        "equivalent_diameter_um": diameter * px if px else nan,
        "perimeter_px": perimeter,
        "circularity": circularity,
        "aspect_ratio": aspect,
        "major_axis_px": major,
        "minor_axis_px": minor,
        "orientation_deg": np.degrees(props["orientation"]),
        "centroid_row": props["centroid-0"],
        "centroid_col": props["centroid-1"],
        "touches_border": np.isin(props["label"], _touching_border(labels)),
    }


@dataclass(frozen=True)
class E112Result:
    """ASTM E112 planimetric (Jeffries) count on the image as the test rectangle.

    ``equivalent_grains = inside + intercepted / 2 + corners / 4`` (grains cut by an edge count one half,
    the grains at the four corners one quarter each, i.e. "+1" for a rectangle), ``grains_per_mm2`` (N_A)
    is that over the image area, ``g`` = 3.321928 log10(N_A) - 2.954. ``g_mean_area`` is E112's number from
    the mean area of the whole grains (not touching the edge), -3.3223 log10(A mm^2) - 2.955, biased towards
    smaller grains (large grains touch the edge more often). Both are None without a pixel size;
    ``grains_per_px`` is N_A per square pixel.
    """

    inside: int
    intercepted: int
    corners: int
    equivalent_grains: float
    field_px: int
    grains_per_px: float
    grains_per_mm2: float | None
    g: float | None
    g_mean_area: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def g_from_grains_per_mm2(n_a: float) -> float:
    """E112 grain-size number of N_A grains per mm^2 (at 1x): G = 3.321928 log10(N_A) - 2.954.

    >>> round(g_from_grains_per_mm2(15.50), 3), round(g_from_grains_per_mm2(7.75 * 2 ** 8), 3)  # G 1 and 8
    (1.0, 8.0)
    """
    return LOG2_10 * math.log10(n_a) - E112_OFFSET


def astm_e112(labels: np.ndarray, pixel_size_um: float | None = None) -> E112Result:
    """ASTM E112 grain-size number of a grain map by the planimetric (Jeffries) procedure, the whole image
    as the test rectangle (see :class:`E112Result`); label 0 (boundary pixels) is not a grain.

    >>> sq = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 25, 0), 25, 1)[12:-13, 12:-13]
    >>> r = astm_e112(sq, pixel_size_um=2.0)  # a 4 x 4 grid of 50 um squares, cut through the corner grains
    >>> (r.inside, r.intercepted, r.corners, r.equivalent_grains)
    (4, 8, 4, 9.0)
    """
    labels = np.asarray(labels)
    height, width = labels.shape
    grains = np.unique(labels[labels > 0])
    border = _touching_border(labels)
    corner_values = np.array([labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]])
    corner_grains = corner_values[corner_values > 0]
    inside = int(grains.size - border.size)
    intercepted = int(np.setdiff1d(border, corner_grains).size)
    equivalent = inside + 0.5 * intercepted + 0.25 * corner_grains.size
    field_px = height * width
    per_px = equivalent / field_px
    if pixel_size_um:
        field_mm2 = field_px * (pixel_size_um * 1e-3) ** 2
        n_a = equivalent / field_mm2
        whole = np.setdiff1d(grains, border)
        g_area = None
        if whole.size:
            mean_mm2 = np.bincount(labels.ravel())[whole].mean() * (pixel_size_um * 1e-3) ** 2
            g_area = -E112_AREA_SLOPE * math.log10(mean_mm2) - E112_AREA_OFFSET
        g = g_from_grains_per_mm2(n_a) if n_a > 0 else None
    else:
        n_a = g = g_area = None
    return E112Result(inside, intercepted, int(corner_grains.size), float(equivalent), field_px, float(per_px),
                      n_a, g, g_area)


def summarise(table: dict[str, np.ndarray], e112: E112Result, pixel_size_um: float | None = None) -> dict:
    """Summary of one grain map: counts, mean +- std of the whole grains' area and equivalent diameter (px
    and um), mean aspect ratio and circularity, and the E112 numbers."""
    whole = ~table["touches_border"]
    area = table["area_px"][whole].astype(float)
    diameter = table["equivalent_diameter_px"][whole]

    def stat(values: np.ndarray, fn) -> float:
        values = values[np.isfinite(values)]
        return float(fn(values)) if values.size else float("nan")

    px = pixel_size_um
    summary = {
        "grains": int(table["label"].size),
        "whole_grains": int(whole.sum()),
        "mean_area_px": stat(area, np.mean),
        "std_area_px": stat(area, np.std),
        "mean_diameter_px": stat(diameter, np.mean),
        "std_diameter_px": stat(diameter, np.std),
        "mean_area_um2": stat(area, np.mean) * px * px if px else float("nan"),
        "std_area_um2": stat(area, np.std) * px * px if px else float("nan"),
        "mean_diameter_um": stat(diameter, np.mean) * px if px else float("nan"),
        "std_diameter_um": stat(diameter, np.std) * px if px else float("nan"),
        "mean_aspect_ratio": stat(table["aspect_ratio"][whole], np.mean),
        "mean_circularity": stat(table["circularity"][whole], np.mean),
        "e112_equivalent_grains": e112.equivalent_grains,
        "e112_grains_per_mm2": e112.grains_per_mm2 if e112.grains_per_mm2 is not None else float("nan"),
        "e112_g": e112.g if e112.g is not None else float("nan"),
        "e112_g_mean_area": e112.g_mean_area if e112.g_mean_area is not None else float("nan"),
    }
    return summary


# ---------------------------------------------------------------- reading grain maps from files


def grain_boundary_ids(schema: PhaseSchema) -> tuple[int, int]:
    """The class ids ``(grain, boundary)`` of a schema: its classes named so, else 0 and 1."""
    names = [n.lower() for n in schema.names]
    grain = names.index("grain") if "grain" in names else 0
    boundary = names.index("boundary") if "boundary" in names else 1
    return grain, boundary


def grains_of_boundary_mask(boundary: np.ndarray, min_area: int = 0, split_depth: float | None = None) -> np.ndarray:
    """Grain labels of a grain-boundary mask: its filled interiors (:func:`labels_from_boundaries`), or with
    ``split_depth`` its split grains (:func:`grains_from_boundary_probability`, for predicted masks whose
    gaps merge grains)."""
    boundary = np.asarray(boundary, dtype=bool)
    if split_depth is not None:
        return grains_from_boundary_probability(boundary.astype(np.float32), split_depth)
    return labels_from_boundaries(boundary, min_area=min_area)


def grain_map_from_array(data: np.ndarray, min_area: int = 0, split_depth: float | None = None) -> np.ndarray:
    """Grain labels of a mask's pixel values: an RGB map with one colour per grain (Fast-FineCut style),
    an integer label image (0 = no grain), or a two-valued boundary mask (the rarer value is the boundary:
    boundaries cover a small share of a grain map), whose grains are :func:`grains_of_boundary_mask`'s."""
    from .io import decode_instance_map

    data = np.asarray(data)
    if data.ndim == 3:
        return decode_instance_map(data).labels
    if data.ndim != 2:
        raise ValueError(f"a grain map must be 2-D labels or RGB, got shape {data.shape}")
    values, counts = np.unique(data, return_counts=True)
    if values.size <= 2:
        if values.size == 1:
            return np.ones(data.shape, np.int32)
        return grains_of_boundary_mask(data == values[np.argmin(counts)], min_area, split_depth)
    if not np.issubdtype(data.dtype, np.integer) or values[0] < 0:
        raise ValueError(f"a grain map must hold non-negative integer labels, got {data.dtype} from {values[0]}")
    return data.astype(np.int32)


def read_grain_map(path: str | Path, min_area: int = 0, split_depth: float | None = None) -> np.ndarray:
    """Grain labels of a mask file (see :func:`grain_map_from_array`; .npy, .png, .tif, ...)."""
    from .io import mask_array

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grain map not found: {path}")
    try:
        data = np.load(path) if path.suffix.lower() == ".npy" else mask_array(path)
        return grain_map_from_array(data, min_area=min_area, split_depth=split_depth)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
