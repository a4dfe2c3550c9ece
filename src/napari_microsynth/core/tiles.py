"""Tiling of large micrographs: training tiles, sliding inference windows and blending them back.

Boxes are ``(y0, x0, y1, x1)`` with exclusive ends, i.e. ``image[y0:y1, x0:x1]``.

>>> sliding_window_boxes((300, 256), tile=256, overlap=0.5)
[(0, 0, 256, 256), (44, 0, 300, 256)]
"""
from __future__ import annotations

import numpy as np

from .sample import Sample

Box = tuple[int, int, int, int]


def tile_shape(tile) -> tuple[int, int]:
    """``(height, width)`` of a tile given as an int or a pair; raises for non-positive sizes."""
    th, tw = (tile, tile) if np.isscalar(tile) else tuple(tile)
    th, tw = int(th), int(tw)
    if th < 1 or tw < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    return th, tw


def _image_size(shape) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"expected an image shape (H, W, ...), got {tuple(shape)}")
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"image shape must be positive, got {tuple(shape)}")
    return h, w


def tile_boxes(shape, tile=256) -> list[Box]:
    """Non-overlapping full tiles in row-major order, starting at the top-left corner.

    A remainder narrower than the tile at the bottom/right edge is left out (as when paper 000,
    sec. 2.1, crops MetalDAM into non-overlapping 256x256 tiles); an image smaller than the tile gives
    no boxes. ``tile`` is an int or ``(height, width)``.
    """
    h, w = _image_size(shape)
    th, tw = tile_shape(tile)
    return [(y, x, y + th, x + tw) for y in range(0, h - th + 1, th) for x in range(0, w - tw + 1, tw)]


def _window_starts(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def sliding_window_boxes(shape, tile=256, overlap: float = 0.5) -> list[Box]:
    """Overlapping windows that cover every pixel; the last row/column of windows is flush with the edge.

    The stride is ``round(tile * (1 - overlap))`` (paper 000, sec. 2.3, infers with 256x256 windows at
    50 % overlap). Along a side shorter than the tile the window is clipped to the image, so an image
    smaller than the tile gives one box of the image's own size (the caller pads if its model needs
    full tiles).
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    h, w = _image_size(shape)
    th, tw = tile_shape(tile)
    sy, sx = max(1, round(th * (1.0 - overlap))), max(1, round(tw * (1.0 - overlap)))
    return [
        (y, x, min(y + th, h), min(x + tw, w))
        for y in _window_starts(h, th, sy)
        for x in _window_starts(w, tw, sx)
    ]


class WindowAccumulator:
    """Blends per-window outputs ``(C, h, w)`` into a ``(C, H, W)`` map by (weighted) averaging.

    With the default unit weight every pixel gets the plain mean of the windows covering it, as paper
    000 (sec. 2.3) averages the overlapping softmax outputs. Pass ``weight`` (a scalar or an ``(h, w)``
    map, e.g. a window that fades towards the edges) to ``add`` for a weighted mean instead.

    >>> acc = WindowAccumulator((1, 3), n_channels=1)
    >>> acc.add((0, 0, 1, 2), np.array([[[1.0, 1.0]]]))
    >>> acc.add((0, 1, 1, 3), np.array([[[3.0, 3.0]]]))
    >>> acc.result()
    array([[[1., 2., 3.]]], dtype=float32)
    """

    def __init__(self, shape, n_channels: int):
        self.shape = _image_size(shape)
        if n_channels < 1:
            raise ValueError(f"n_channels must be positive, got {n_channels}")
        self.n_channels = int(n_channels)
        self._sum = np.zeros((self.n_channels, *self.shape), dtype=np.float32)
        self._weight = np.zeros(self.shape, dtype=np.float32)

    def add(self, box: Box, values: np.ndarray, weight=None) -> None:
        """Accumulate ``values`` (C, y1-y0, x1-x0) for the window ``box``."""
        y0, x0, y1, x1 = (int(b) for b in box)
        if not (0 <= y0 < y1 <= self.shape[0] and 0 <= x0 < x1 <= self.shape[1]):
            raise ValueError(f"box {box} does not lie inside the image of shape {self.shape}")
        values = np.asarray(values)
        expected = (self.n_channels, y1 - y0, x1 - x0)
        if values.shape != expected:
            raise ValueError(f"values for box {box} must have shape {expected}, got {values.shape}")
        w = np.ones(expected[1:], dtype=np.float32)
        if weight is not None:
            weight = np.asarray(weight, dtype=np.float32)
            if weight.ndim != 0 and weight.shape != expected[1:]:
                raise ValueError(f"weight must be a scalar or of shape {expected[1:]}, got {weight.shape}")
            if np.any(weight < 0):
                raise ValueError("window weights must be non-negative")
            w = w * weight
        self._sum[:, y0:y1, x0:x1] += values * w
        self._weight[y0:y1, x0:x1] += w

    @property
    def covered(self) -> np.ndarray:
        """Boolean ``(H, W)`` map of pixels that received a positive weight so far."""
        return self._weight > 0

    def result(self) -> np.ndarray:
        """The blended ``(C, H, W)`` float32 map; raises if some pixel was never covered by a window."""
        missing = int((~self.covered).sum())
        if missing:
            raise ValueError(f"{missing} pixels were not covered by any window (with positive weight)")
        return self._sum / self._weight


def tile_samples(sample: Sample, tile=256) -> list[Sample]:
    """Cut ``sample`` into its non-overlapping full tiles (see :func:`tile_boxes`); each tile records its
    ``provenance.crop_box`` in the source image."""
    return [sample.crop(box) for box in tile_boxes(sample.shape, tile)]
