"""Tiling of large micrographs: training tiles, sliding inference windows and blending them back.

Boxes are ``(y0, x0, y1, x1)`` with exclusive ends, i.e. ``image[y0:y1, x0:x1]``. Every way the
program cuts real micrographs into tiles lives here: the grid tiles of a training set
(:func:`labelled_tiles`), grid tiles reduced to a generator's scale (:func:`reduced_tiles`), random
training crops (:func:`random_box`, :class:`RandomPairTiles`) and sliding inference windows.

>>> sliding_window_boxes((300, 256), tile=256, overlap=0.5)
[(0, 0, 256, 256), (44, 0, 300, 256)]
"""
from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Iterable, Sequence

import numpy as np

from .sample import Sample
from .schema import PhaseSchema

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


def gaussian_window(size, sigma_fraction: float = 0.125, floor: float = 1e-6) -> np.ndarray:
    """``(h, w)`` blending weights for a window: a Gaussian centred on it with sigma ``sigma_fraction`` of
    the side (1/8, as nnU-Net blends its sliding windows), at most 1 and at least ``floor`` so that an
    image corner covered by one window still has a weight. The weight must be close to 0 where a window
    ends (3e-4 at the middle of an edge for sigma 1/8; a wider Gaussian or a higher floor leaves a step).

    Averaging overlapping windows with these weights instead of flat ones makes the blended map change
    smoothly where one window's coverage ends, instead of in a step on the window grid.
    """
    h, w = tile_shape(size)
    axes = [np.exp(-0.5 * ((np.arange(n) + 0.5 - n / 2) / (sigma_fraction * n)) ** 2) for n in (h, w)]
    weights = np.outer(*axes)
    return np.maximum(weights / weights.max(), floor).astype(np.float32)


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


def tile_boxes_or_whole(shape, tile=256) -> list[Box]:
    """:func:`tile_boxes`, or the whole image as one box when it is smaller than a tile."""
    return tile_boxes(shape, tile) or [(0, 0, *_image_size(shape))]


def labelled_tiles(samples: Sequence[Sample], tile=256) -> list[Sample]:
    """Non-overlapping full ``tile`` tiles (row-major) of every annotated micrograph, in input order.

    Each tile keeps its micrograph's provenance with the crop box (:func:`tile_samples`); remainders at
    the right/bottom edge narrower than a tile are left out. Raises for a micrograph without a mask.
    """
    tile_shape(tile)
    tiles = []
    for sample in samples:
        if sample.mask is None:
            raise ValueError(f"real micrograph {sample.name!r} has no mask; a training set needs labelled samples")
        tiles.extend(tile_samples(sample, tile))
    return tiles


def reduced_tiles(samples: Iterable[Sample], size: int, downscale: int = 1) -> list[Sample]:
    """Non-overlapping ``size * downscale`` px tiles reduced to ``size`` px by :func:`downscale_pair`, the way
    a generator's training tiles are made; tiles without labelled pixels are dropped.

    Use it to compare real data with a generator's pairs at the generator's size and pixel scale.
    """
    out = []
    for sample in samples:
        for box in tile_boxes(sample.shape, size * downscale):
            tile = sample.crop(box)
            image, mask = tile.image.reshape(size, downscale, size, downscale).mean(axis=(1, 3)), None
            if tile.mask is not None:
                image, mask = downscale_pair(tile.image, tile.mask, downscale, tile.schema)
                if tile.schema.ignore_id is not None and np.all(mask == tile.schema.ignore_id):
                    continue
            pixel = None if tile.pixel_size_um is None else tile.pixel_size_um * downscale
            out.append(replace(tile, image=image, mask=mask, instances=None, pixel_size_um=pixel))
    return out


def random_box(shape, size: int, rng: np.random.Generator) -> Box:
    """A ``size`` square box at a uniformly random position inside an image of ``shape`` (at the top-left
    corner, reaching past the edge, along a side shorter than ``size``).

    >>> random_box((100, 80), 64, np.random.default_rng(0))
    (31, 10, 95, 74)
    """
    h, w = _image_size(shape)
    y = int(rng.integers(0, max(1, h - size + 1)))
    x = int(rng.integers(0, max(1, w - size + 1)))
    return y, x, y + size, x + size


def downscale_pair(
    image: np.ndarray, mask: np.ndarray, factor: int, schema: PhaseSchema
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce an (image, mask) pair by an integer ``factor``: image by block mean, mask by drawing each
    block's class with probability equal to its share of the block (``schema.ignore_id`` counts like a
    class). Class ids stay exact and, unlike a majority vote (which erodes thin or small phases and
    needs a tie rule), the expected class fractions equal the original ones. The draws are seeded from
    the mask's content, so the same pair always gives the same result. Sides must be multiples of ``factor``.

    >>> mask = np.kron([[0, 1], [2, 3]], np.ones((2, 2), int))  # pure 2x2 blocks keep their class
    >>> downscale_pair(np.zeros((4, 4), np.float32), mask, 2, PhaseSchema.bundled("uhcs"))[1]
    array([[0, 1],
           [2, 3]])
    """
    h, w = image.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"cannot downscale a {h}x{w} pair by {factor}: sides must be multiples of it")
    if factor == 1:
        return image.astype(np.float32), mask.astype(np.int64)
    f = factor
    small = image.reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    n, ignore = schema.n_classes, schema.ignore_id
    labels = np.ascontiguousarray(mask if ignore is None else np.where(mask == ignore, n, mask), dtype=np.int64)
    blocks = labels.reshape(h // f, f, w // f, f).transpose(0, 2, 1, 3).reshape(h // f, w // f, f * f)
    votes = (blocks[..., None] == np.arange(n + 1)).sum(axis=2)
    below = np.cumsum(votes, axis=-1) / (f * f)  # share of the block held by classes 0..c
    draw = np.random.default_rng(zlib.crc32(labels.tobytes())).random((h // f, w // f))
    reduced = (draw[..., None] >= below).sum(axis=-1)
    if ignore is not None:
        reduced = np.where(reduced == n, ignore, reduced)
    return small.astype(np.float32), reduced.astype(np.int64)


class RandomPairTiles:
    """Random square (image, mask) training tiles cut from whole annotated micrographs.

    A crop of ``tile * downscale`` pixels is taken at a random position (larger micrographs are picked
    proportionally more often), reduced by ``downscale`` (image: block mean; mask: a class drawn per block
    in proportion to its share, see :func:`downscale_pair`, so class ids stay exact and fractions unbiased)
    and, with ``augment``, flipped and rotated by a random multiple of 90 degrees. Paper 000 (sec. 2.1, 2.2.1) cuts 256 px tiles and trains its diffusion model at 128 px,
    i.e. ``downscale=2``.

    >>> tiles = RandomPairTiles(samples, tile=64, downscale=2)       # doctest: +SKIP
    >>> images, masks = tiles.draw(np.random.default_rng(0), 8)      # doctest: +SKIP
    """

    def __init__(self, samples: Sequence[Sample], tile: int, downscale: int = 1, augment: bool = True):
        if not samples:
            raise ValueError("no training samples given")
        if tile < 1 or downscale < 1:
            raise ValueError(f"tile and downscale must be >= 1, got {tile}, {downscale}")
        self.tile, self.downscale, self.augment = int(tile), int(downscale), augment
        self.crop = self.tile * self.downscale
        self.schema = samples[0].schema
        unlabelled = [s.name for s in samples if s.mask is None]
        if unlabelled:
            raise ValueError(f"training samples need masks; these have none: {unlabelled}")
        different = [s.name for s in samples if s.schema.n_classes != self.schema.n_classes]
        if different:
            raise ValueError(f"samples {different} use a schema other than {self.schema.name!r}")
        small = [f"{s.name} {s.shape}" for s in samples if min(s.shape) < self.crop]
        if small:
            raise ValueError(
                f"micrographs smaller than the {self.crop} px crop (tile {tile} x downscale {downscale}): {small}"
            )
        for s in samples:
            self.schema.validate_mask(s.mask)
        self.samples = list(samples)
        area = np.array([(s.shape[0] - self.crop + 1) * (s.shape[1] - self.crop + 1) for s in samples], float)
        self._weights = area / area.sum()

    def draw(
        self, rng: np.random.Generator, n: int, with_sources: bool = False
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` tiles: images ``(n, tile, tile)`` float32 in [0, 1] and masks ``(n, tile, tile)`` int64;
        with ``with_sources`` also the index into ``samples`` of each tile's micrograph."""
        images = np.empty((n, self.tile, self.tile), np.float32)
        masks = np.empty((n, self.tile, self.tile), np.int64)
        sources = np.empty(n, np.int64)
        for i in range(n):
            images[i], masks[i], sources[i] = self._one(rng)
        return (images, masks, sources) if with_sources else (images, masks)

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        ignore = self.schema.ignore_id
        for _ in range(100):
            source = int(rng.choice(len(self.samples), p=self._weights))
            s = self.samples[source]
            y0, x0, y1, x1 = random_box(s.shape, self.crop, rng)
            image = s.image[y0:y1, x0:x1]
            mask = s.mask[y0:y1, x0:x1].astype(np.int64)
            if self.downscale > 1:
                image, mask = downscale_pair(image, mask, self.downscale, self.schema)
            if ignore is None or np.any(mask != ignore):
                break
        else:
            raise ValueError("could not find a training tile with labelled pixels in 100 tries")
        if self.augment:
            k = int(rng.integers(0, 4))
            image, mask = np.rot90(image, k), np.rot90(mask, k)
            if rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
        return image, mask, source
