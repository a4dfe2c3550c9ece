"""Clean-up of generated masks: snap a continuous mask to class ids, then remove small regions.

Paper 002 (sec. 4.2, Fig. 11) post-processes the masks its generator outputs before training a U-Net:
"we applied the kmeans algorithm to group the pixels into the 3 classes and the background; then, we
filtered and removed small objects (<200 px²), and those regions were filled with the neighboring
class". :func:`kmeans_snap` is the first step, :func:`remove_small_regions` the second.

>>> import numpy as np
>>> schema = PhaseSchema.bundled("uhcs")
>>> mask = np.zeros((6, 6), dtype=np.uint8)
>>> mask[2, 3] = 1                                   # a one-pixel speck of cementite in the matrix
>>> int(remove_small_regions(mask, schema, min_size=2).max())
0
>>> rgb = schema.colors[mask]                        # the same mask as an RGB colour image
>>> bool(np.array_equal(kmeans_snap(rgb, schema), mask))
True

Choosing ``min_size``: the 200 px of paper 002 is a pixel count at that paper's image size, not a
physical size. Real phases can consist only of small regions: in the UHCS masks (484x645 px) every
spheroidite particle is below 200 px (most are 1-10 px), so a single threshold of 200 erases the whole
phase. Pass one threshold per class (``min_size=[200, 200, 0, 20]``; 0 keeps every region of a class).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .schema import PhaseSchema

#: Minimum region size in pixels used by paper 002 (sec. 4.2): smaller objects are removed.
PAPER_MIN_SIZE = 200


def _per_class_min_size(min_size: int | Sequence[int], n_classes: int) -> np.ndarray:
    values = np.atleast_1d(np.asarray(min_size))
    if values.ndim != 1 or values.size not in (1, n_classes):
        raise ValueError(
            f"min_size must be one integer or one per class ({n_classes} values), got {min_size!r}"
        )
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"min_size must hold whole pixel counts, got {min_size!r}")
    if np.any(values < 0):
        raise ValueError(f"min_size must be >= 0 pixels, got {min_size!r}")
    return np.broadcast_to(values.astype(np.int64), (n_classes,))


def remove_small_regions(
    mask: np.ndarray,
    schema: PhaseSchema,
    min_size: int | Sequence[int] = PAPER_MIN_SIZE,
    connectivity: int = 8,
) -> np.ndarray:
    """Remove every connected region of one class smaller than ``min_size`` pixels and fill it from its
    surroundings; returns a new mask of the same dtype.

    ``min_size`` is one threshold for all classes or one per class (0 keeps all regions of a class; see
    the module doc for why UHCS needs per-class values). Regions are ``connectivity`` 8 (default:
    pixels touching at a corner belong together, so thin diagonal network strands and touching
    particles stay one region) or 4. Each removed pixel takes the class of the nearest kept pixel
    (Euclidean distance), so a speck inside a grain becomes that grain and a region between two phases
    is split between them. All regions are judged on the input in one pass; a whole phase can vanish
    when all its regions are small.

    Pixels equal to ``schema.ignore_id`` are neither regions nor fill sources and stay unchanged. When
    no region at all reaches its class's minimum size, there is nothing to fill from and the mask is
    returned unchanged (as a copy).
    """
    from scipy import ndimage

    if not isinstance(schema, PhaseSchema):
        raise ValueError(f"schema must be a PhaseSchema, got {type(schema).__name__}")
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D (H, W) class map, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer class ids, got dtype {mask.dtype}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    schema.validate_mask(mask)
    thresholds = _per_class_min_size(min_size, schema.n_classes)

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    removed = np.zeros(mask.shape, dtype=bool)
    for class_id in range(schema.n_classes):
        if thresholds[class_id] <= 1:
            continue
        labels, n = ndimage.label(mask == class_id, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        small = sizes < thresholds[class_id]
        small[0] = False  # label 0 is everything that is not this class
        removed |= small[labels]

    out = mask.copy()
    if not removed.any():
        return out
    kept = ~removed
    if schema.ignore_id is not None:
        kept &= mask != schema.ignore_id
    if not kept.any():
        return out
    # distance_transform_edt measures the distance to the nearest zero: zeros are the kept pixels.
    rows, cols = ndimage.distance_transform_edt(~kept, return_distances=False, return_indices=True)
    out[removed] = mask[rows[removed], cols[removed]]
    return out


def _unit_pixels(values: np.ndarray) -> np.ndarray:
    """``(N, channels)`` float64 pixels in [0, 1] from an integer 0..255 or float [0, 1] / 0..255 mask."""
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if not (values.ndim == 2 or (values.ndim == 3 and values.shape[-1] == 3)) or values.size == 0:
        raise ValueError(
            f"values must be a non-empty grey (H, W) or RGB (H, W, 3) mask, got shape {values.shape}"
        )
    if np.issubdtype(values.dtype, np.bool_) or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"values must be numbers (0..255 or 0..1), got dtype {values.dtype}")
    pixels = values.reshape(-1, 1 if values.ndim == 2 else 3).astype(np.float64)
    if not np.all(np.isfinite(pixels)):
        raise ValueError("values hold NaN or infinite numbers")
    lo, hi = float(pixels.min()), float(pixels.max())
    if lo < 0.0 or hi > 255.0:
        raise ValueError(
            f"values must lie in [0, 1] or 0..255, got {lo:.4g}..{hi:.4g} (map a [-1, 1] output to [0, 1] first)"
        )
    if np.issubdtype(values.dtype, np.integer) or hi > 1.0:
        pixels /= 255.0
    return pixels


def _nearest_centre(pixels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean distance; ties go to the lower index)."""
    d2 = (pixels**2).sum(axis=1)[:, None] - 2.0 * pixels @ centres.T + (centres**2).sum(axis=1)[None, :]
    return np.argmin(d2, axis=1)


def kmeans_snap(
    values: np.ndarray,
    schema: PhaseSchema,
    n_iter: int = 10,
    sample_size: int = 100_000,
    seed: int = 0,
) -> np.ndarray:
    """Class map ``(H, W)`` from a generator's continuous mask output by k-means (paper 002, sec. 4.2).

    ``values``: an RGB colour mask ``(H, W, 3)`` or a grey mask ``(H, W)``; integers are read as 0..255,
    floats as [0, 1] when their maximum is at most 1, otherwise as 0..255. k-means with one cluster per
    class starts at the schema colours (RGB) or, for grey, at evenly spaced levels: class ``c`` of
    ``n`` at grey ``c / (n - 1)`` (class 0 black, the last class white). ``n_iter`` Lloyd iterations
    run on at most ``sample_size`` pixels drawn with ``seed`` (all pixels when fewer); then every pixel
    goes to its nearest centre and cluster ``c`` becomes class ``c``. Starting at the class colours lets
    the centres follow a generator whose colours drift (washed-out or shifted), which a plain
    nearest-colour lookup would misread. A cluster that gets no pixels keeps its starting centre.
    Deterministic for a given ``seed``. The result never holds the ignore id; its dtype is the smallest
    unsigned type holding the class ids (uint8 for up to 256 classes).
    """
    if not isinstance(schema, PhaseSchema):
        raise ValueError(f"schema must be a PhaseSchema, got {type(schema).__name__}")
    for name, value, least in (("n_iter", n_iter, 0), ("sample_size", sample_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    values = np.asarray(values)
    pixels = _unit_pixels(values)
    n = schema.n_classes
    if pixels.shape[1] == 3:
        centres = schema.colors.astype(np.float64) / 255.0
    else:
        centres = np.linspace(0.0, 1.0, n)[:, None]

    rng = np.random.default_rng(seed)
    fit = pixels if len(pixels) <= sample_size else pixels[rng.choice(len(pixels), sample_size, replace=False)]
    for _ in range(n_iter):
        assign = _nearest_centre(fit, centres)
        counts = np.bincount(assign, minlength=n)
        sums = np.stack([np.bincount(assign, weights=fit[:, d], minlength=n) for d in range(fit.shape[1])], axis=1)
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        if np.allclose(moved, centres, rtol=0.0, atol=1e-7):
            break
        centres = moved

    labels = np.empty(len(pixels), dtype=np.min_scalar_type(n - 1))
    chunk = 1 << 18
    for start in range(0, len(pixels), chunk):
        labels[start:start + chunk] = _nearest_centre(pixels[start:start + chunk], centres)
    return labels.reshape(values.shape[:2])


__all__ = ["PAPER_MIN_SIZE", "kmeans_snap", "remove_small_regions"]
