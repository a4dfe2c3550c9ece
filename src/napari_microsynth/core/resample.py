"""Generated pairs brought to the pixel size of the real micrographs they are mixed with.

>>> real_px = median_pixel_size(real_micrographs)                       # doctest: +SKIP
>>> scaled = [to_real_scale(p, real_px, tile=256) for p in pairs]       # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from .sample import Sample
from .tiles import tile_shape


def median_pixel_size(samples: Sequence[Sample]) -> float | None:
    """Median of the known pixel sizes of ``samples`` (um/px), None when none is known."""
    known = [s.pixel_size_um for s in samples if s.pixel_size_um]
    return float(np.median(known)) if known else None


def scale_factor(pair: Sample, real_pixel_size_um: float | None) -> float:
    """``pair.pixel_size_um / real_pixel_size_um``; when either pixel size is unknown, the generator's
    ``provenance.extra["downscale"]`` (its tiles' scale relative to its training micrographs), else 1."""
    if pair.pixel_size_um and real_pixel_size_um:
        return float(pair.pixel_size_um) / float(real_pixel_size_um)
    return float(pair.provenance.extra.get("downscale", 1.0))


def scaled_shape(pair: Sample, real_pixel_size_um: float | None, tile) -> tuple[int, int]:
    """``(H, W)`` of ``pair`` at the real pixel size; raises when that is smaller than ``tile``."""
    factor = scale_factor(pair, real_pixel_size_um)
    h, w = pair.shape
    shape = (max(1, round(h * factor)), max(1, round(w * factor)))
    th, tw = tile_shape(tile)
    if shape[0] < th or shape[1] < tw:
        at = f" (resized x{factor:g})" if factor != 1.0 else ""
        raise ValueError(
            f"synthetic pair {pair.name!r} is {shape[0]}x{shape[1]} px at the real pixel size{at}, smaller than "
            f"the {th}x{tw} training tile; choose a smaller tile or generate larger (super-resolved) pairs"
        )
    return shape


def to_real_scale(pair: Sample, real_pixel_size_um: float | None, tile=256) -> Sample:
    """Resample a generated pair to the pixel size of the real micrographs.

    Generators often work on downscaled micrographs (PF-DiffSeg here: 64 px tiles of micrographs
    shrunk 2x, ``pair.pixel_size_um`` = real pixel size x 2). The pair is resized by
    ``pair.pixel_size_um / real_pixel_size_um`` (image bilinear, anti-aliased only when shrinking; mask
    and instances nearest-neighbour). When either pixel size is unknown the factor is the generator's
    ``provenance.extra["downscale"]`` (1 when absent: the pair is returned as is). A resampled pair gets ``pixel_size_um = real_pixel_size_um`` and
    ``provenance.extra["resampled_from_px"] = [H, W]`` (its generated size) and
    ``["resampled_from_pixel_size_um"]``. Raises ``ValueError`` when the result is smaller than ``tile``.
    """
    if pair.mask is None:
        raise ValueError(f"synthetic pair {pair.name!r} has no mask")
    shape = scaled_shape(pair, real_pixel_size_um, tile)
    if shape == pair.shape:
        return pair
    from skimage.transform import resize

    factor = scale_factor(pair, real_pixel_size_um)
    image = resize(pair.image, shape, order=1, mode="edge", anti_aliasing=factor < 1.0, preserve_range=True)

    def nearest(labels: np.ndarray) -> np.ndarray:
        resized = resize(labels, shape, order=0, mode="edge", anti_aliasing=False, preserve_range=True)
        return resized.astype(labels.dtype)

    extra = {
        **pair.provenance.extra,
        "resampled_from_px": [int(pair.shape[0]), int(pair.shape[1])],
        "resampled_from_pixel_size_um": pair.pixel_size_um,
    }
    return replace(
        pair,
        image=np.clip(image, 0.0, 1.0).astype(np.float32),
        mask=nearest(pair.mask),
        instances=None if pair.instances is None else nearest(np.asarray(pair.instances)),
        pixel_size_um=None if real_pixel_size_um is None else float(real_pixel_size_um),
        properties=dict(pair.properties),
        provenance=replace(pair.provenance, extra=extra),
    )
