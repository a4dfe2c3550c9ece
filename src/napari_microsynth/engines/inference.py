"""Whole-micrograph inference with sliding windows, and a cached session for phase-ratio sliders.

The network runs on square windows of its training tile size (the PLM's coordinate maps are relative to
the window), overlapping by half, laid on the micrograph by a :class:`WindowGrid`. Images smaller than a
window are padded by reflection and the result cropped back.

Blending: what is averaged over overlapping windows, with Gaussian weights that fall to ~0 at each
window's edge (no seams on the window grid; paper 000 averages flat), is the output of the image-dependent part of the
network (:meth:`Segmenter.image_features`: the PLM's phase-feature channels after feature
extraction and spatial awareness, or a baseline's class scores). The ratio-dependent part of the PLM is
per pixel, so it then runs once over the blended whole-micrograph map, followed by the ratio correction
(:mod:`~napari_microsynth.core.ratio_correction`, at trust > 0) and the softmax. For a baseline network
this is averaging of the logits. Doing the blending before the ratio head is what lets
:class:`PhaseRatioSession` keep the blended map and answer a new ratio with a few per-pixel operations;
its predictions equal :func:`predict_image` with the same ratio and trust.

Every window lies on one grid fixed by the whole micrograph, so the blended features of any region
(:func:`region_features`) equal the whole micrograph's there: that is how
:mod:`~napari_microsynth.engines.large_inference` segments micrographs too large for memory block by block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from ..core.domain_check import domain_warnings
from ..core.fractions import mask_fractions, normalize_fractions
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.ratio_correction import correction_bias, fit_temperature
from ..core.tiles import Box, WindowAccumulator, gaussian_window, sliding_window_boxes
from ..models.device import resolve_device
from ..models.folder import read_model_config
from ..models.segmenter import Segmenter

OVERLAP = 0.5
#: Pixels per pass of the ratio head (bounds its temporary memory on large micrographs).
HEAD_CHUNK_PIXELS = 1 << 21
#: Pixels (a fixed random subsample) the ratio correction's bias is solved on: the whole map's fractions
#: then miss the target by sampling error, about 0.3 points (one standard deviation) for a 50 % phase.
SOLVE_PIXELS = 1 << 15


def _as_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a grey micrograph (H, W), got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"expected a float image in [0, 1], got dtype {image.dtype} (read it with core.io)")
    return image.astype(np.float32, copy=False)


def _as_source(image):
    """A numpy micrograph checked by :func:`_as_image`, or a lazy one (e.g.
    :class:`~napari_microsynth.core.large_image.GreyArray`: a 2-D ``shape``, a float ``dtype`` and slicing
    that returns float32 in [0, 1]) as it is."""
    if isinstance(image, np.ndarray) or not hasattr(image, "shape"):
        return _as_image(image)
    if len(image.shape) != 2 or not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"expected a grey micrograph (H, W) of floats in [0, 1], got {image.dtype} {image.shape}")
    return image


def _ratio_values(ratio, n_classes: int) -> np.ndarray:
    values = np.asarray(ratio, dtype=np.float64)
    if values.shape != (n_classes,):
        raise ValueError(f"phase ratio must have one value per phase ({n_classes}), got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"phase ratio must be finite numbers, got {values.tolist()}")
    return values


def _ratio_tensor(ratio, model: Segmenter, device: torch.device) -> torch.Tensor | None:
    if ratio is None:
        return None
    if not model.uses_ratio:
        raise ValueError("this model has no ratio encoder and takes no phase ratio: segment without one (no "
                         "--ratio, or tick *no ratio*), or use it only as the correction's target (trust > 0)")
    return torch.as_tensor(_ratio_values(ratio, model.n_classes), dtype=torch.float32, device=device)


def _model_device(model: Segmenter, device) -> torch.device:
    if device is None:
        return next(model.parameters()).device
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model.to(device)
    return device


@dataclass(frozen=True)
class WindowGrid:
    """Where a segmenter's sliding windows lie on a micrograph of ``shape`` ``(H, W)``.

    A network that works at input scale ``p/q`` (e.g. 1/2) sees the micrograph padded by reflection at
    the bottom/right to a multiple of ``q`` pixels and resized by exactly ``p/q``, so every ``q x q``
    micrograph pixels are ``p x p`` network pixels wherever they lie; that network image, padded by
    reflection to at least one window, is covered by :func:`sliding_window_boxes` (``boxes``, in network
    pixels) and the blended features come back to micrograph pixels by the inverse bilinear resize.
    Since every resize reaches only a pixel or two, a region cut with a margin resizes to the same
    pixels as the whole micrograph does: :func:`region_features` of any region equals the whole
    micrograph's features there.
    """

    shape: tuple[int, int]
    tile: int
    p: int = 1
    q: int = 1

    @classmethod
    def of(cls, model: Segmenter, shape) -> WindowGrid:
        scale = Fraction(model.input_scale).limit_denominator(64)
        return cls((int(shape[0]), int(shape[1])), model.tile_size, scale.numerator, scale.denominator)

    @property
    def net_shape(self) -> tuple[int, int]:
        """The micrograph's size in network pixels (before padding to one window)."""
        return tuple(math.ceil(n / self.q) * self.p for n in self.shape)

    @cached_property
    def boxes(self) -> list[Box]:
        """All windows, in network pixels, row by row."""
        padded = tuple(max(n, self.tile) for n in self.net_shape)
        return sliding_window_boxes(padded, self.tile, OVERLAP)

    @property
    def stride_pixels(self) -> int:
        """Micrograph pixels between neighbouring windows."""
        return round(self.tile * (1 - OVERLAP)) * self.q // self.p

    def windows_in(self, rows: tuple[int, int], cols: tuple[int, int]) -> list[Box]:
        """The windows that overlap network rows ``[rows)`` and columns ``[cols)``."""
        return [b for b in self.boxes if b[0] < rows[1] and b[2] > rows[0] and b[1] < cols[1] and b[3] > cols[0]]

    def net_span(self, start: int, stop: int, axis: int) -> tuple[int, int]:
        """The network pixels along ``axis`` whose features micrograph pixels ``[start, stop)`` are
        resized from: one ``p``-pixel unit of margin, cut at multiples of ``p`` (exactly ``[start, stop)``
        at input scale 1)."""
        if self.p == self.q:
            return start, stop
        return max(0, (start // self.q - 1) * self.p), min(self.net_shape[axis], (-(-stop // self.q) + 1) * self.p)

    def network_image(self, source, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """The network's input image at network rows ``[rows)`` and columns ``[cols)`` (of the padded
        network image), read from the micrograph ``source`` with a margin for the resize."""
        net_h, net_w = self.net_shape
        if self.p == self.q:
            image = _read(source, (rows[0], min(rows[1], net_h)), (cols[0], min(cols[1], net_w)), self.shape)
        else:
            y0, x0 = max(0, (rows[0] // self.p - 2) * self.q), max(0, (cols[0] // self.p - 2) * self.q)
            y1 = min(net_h // self.p * self.q, (-(-min(rows[1], net_h) // self.p) + 2) * self.q)
            x1 = min(net_w // self.p * self.q, (-(-min(cols[1], net_w) // self.p) + 2) * self.q)
            full = _read(source, (y0, y1), (x0, x1), self.shape)
            size = ((y1 - y0) * self.p // self.q, (x1 - x0) * self.p // self.q)
            t = torch.from_numpy(np.ascontiguousarray(full))[None, None]
            net = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()
            top, left = y0 * self.p // self.q, x0 * self.p // self.q
            image = net[rows[0] - top : min(rows[1], net_h) - top, cols[0] - left : min(cols[1], net_w) - left]
        pad = ((0, rows[1] - rows[0] - image.shape[0]), (0, cols[1] - cols[0] - image.shape[1]))
        return np.pad(image, pad, mode="reflect") if any(after for _, after in pad) else image

    def upsample(self, features: np.ndarray, origin: tuple[int, int], region: Box) -> np.ndarray:
        """Micrograph-pixel features of ``region`` from network features ``(c, h, w)`` whose top-left
        network pixel is ``origin`` and that cover :meth:`net_span` of the region; only that span is resized."""
        y0, x0, y1, x1 = region
        rows, cols = self.net_span(y0, y1, 0), self.net_span(x0, x1, 1)
        span = features[:, rows[0] - origin[0] : rows[1] - origin[0], cols[0] - origin[1] : cols[1] - origin[1]]
        if self.p == self.q:
            return span
        size = (span.shape[1] * self.q // self.p, span.shape[2] * self.q // self.p)
        full = F.interpolate(torch.from_numpy(np.ascontiguousarray(span))[None], size=size, mode="bilinear",
                             align_corners=False)[0].numpy()
        top, left = rows[0] * self.q // self.p, cols[0] * self.q // self.p
        return full[:, y0 - top : y1 - top, x0 - left : x1 - left]


def _read(source, rows: tuple[int, int], cols: tuple[int, int], shape) -> np.ndarray:
    """``source[rows, cols]`` as float32, continued by reflection past the micrograph's bottom/right edge."""
    h, w = shape
    data = np.asarray(source[rows[0] : min(rows[1], h), cols[0] : min(cols[1], w)], dtype=np.float32)
    pad = ((0, max(0, rows[1] - h)), (0, max(0, cols[1] - w)))
    return np.pad(data, pad, mode="reflect") if pad != ((0, 0), (0, 0)) else data


@torch.inference_mode()
def network_features(
    model: Segmenter,
    source,
    grid: WindowGrid,
    rows: tuple[int, int],
    cols: tuple[int, int],
    batch_size: int = 4,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> np.ndarray:
    """Blended network-pixel features ``(c, rows, cols)`` of network rows ``[rows)`` and columns ``[cols)``:
    every window of ``grid`` that overlaps them, averaged with Gaussian weights
    (:func:`~napari_microsynth.core.tiles.gaussian_window`, so no seams on the window grid); holds
    ``batch_size`` windows of activations at a time."""
    device = next(model.parameters()).device
    model.eval()
    boxes = grid.windows_in(rows, cols)
    top, left = min(b[0] for b in boxes), min(b[1] for b in boxes)
    bottom, right = max(b[2] for b in boxes), max(b[3] for b in boxes)
    image = grid.network_image(source, (top, bottom), (left, right))
    acc = WindowAccumulator((bottom - top, right - left), model.feature_channels)
    weight = gaussian_window(model.tile_size)
    for start in range(0, len(boxes), batch_size):
        check_stop(should_stop)
        chunk = [(y0 - top, x0 - left, y1 - top, x1 - left) for y0, x0, y1, x1 in boxes[start : start + batch_size]]
        batch = np.stack([image[y0:y1, x0:x1] for y0, x0, y1, x1 in chunk])[:, None]
        features = model.image_features(torch.from_numpy(batch).to(device)).float().cpu().numpy()
        for box, values in zip(chunk, features):
            acc.add(box, values, weight)
        done = start + len(chunk)
        progress(done, len(boxes), f"segmenting window {done}/{len(boxes)}")
    return acc.result()[:, rows[0] - top : rows[1] - top, cols[0] - left : cols[1] - left]


def region_features(
    model: Segmenter,
    image,
    region: Box | None = None,
    batch_size: int = 4,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> np.ndarray:
    """The image-dependent network output ``(c, y1 - y0, x1 - x0)`` for ``region`` ``(y0, x0, y1, x1)``
    of a micrograph (numpy or lazy, see :func:`_as_source`; None = all of it), equal to the whole
    micrograph's blended features there: only the windows that reach the region are run."""
    source = _as_source(image)
    grid = WindowGrid.of(model, source.shape)
    region = (0, 0, *grid.shape) if region is None else tuple(int(v) for v in region)
    y0, x0, y1, x1 = region
    if not (0 <= y0 < y1 <= grid.shape[0] and 0 <= x0 < x1 <= grid.shape[1]):
        raise ValueError(f"region {region} does not lie inside the micrograph of shape {grid.shape}")
    rows, cols = grid.net_span(y0, y1, 0), grid.net_span(x0, x1, 1)
    features = network_features(model, source, grid, rows, cols, batch_size, progress, should_stop)
    return np.ascontiguousarray(grid.upsample(features, (rows[0], cols[0]), region))


def blended_features(
    model: Segmenter,
    image: np.ndarray,
    batch_size: int = 4,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> np.ndarray:
    """The image-dependent network output ``(c, H, W)`` for a whole micrograph (:func:`region_features`)."""
    return region_features(model, _as_image(image), None, batch_size, progress, should_stop)


@torch.inference_mode()
def ratio_logits(model: Segmenter, features: torch.Tensor, ratio: torch.Tensor | None) -> torch.Tensor:
    """Blended features ``(c, H, W)`` (a tensor on the model's device) + ratio -> logits ``(n, H * W)``,
    the per-pixel head run in chunks of :data:`HEAD_CHUNK_PIXELS`."""
    flat = features.reshape(features.shape[0], -1)
    parts = [model.ratio_head(flat[None, :, start : start + HEAD_CHUNK_PIXELS], ratio)[0]
             for start in range(0, flat.shape[1], HEAD_CHUNK_PIXELS)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def argmax_labels(scores: torch.Tensor, dtype=torch.int32) -> torch.Tensor:
    """Index of the first largest of the ``n`` scores ``(n, P)`` per pixel (a few passes over ``P``;
    faster than ``torch.argmax`` over a short first axis)."""
    best = scores[0].clone()
    labels = torch.zeros(scores.shape[1], dtype=dtype, device=scores.device)
    for k in range(1, scores.shape[0]):
        labels.masked_fill_(scores[k] > best, k)
        torch.maximum(best, scores[k], out=best)
    return labels


def solve_pixel_indices(n_pixels: int) -> np.ndarray:
    """The pixels (sorted flat indices into a map of ``n_pixels``) the ratio correction's bias is solved
    on: a fixed random subsample of :data:`SOLVE_PIXELS`, the same for every map of that size."""
    return np.sort(np.random.default_rng(0).choice(n_pixels, min(n_pixels, SOLVE_PIXELS), replace=False))


def check_ratio_arguments(model: Segmenter, ratio, trust: float) -> None:
    """Raise ``ValueError`` for a trust outside [0, 1], a ratio without one value per phase, or a ratio
    for a model without the ratio encoder at trust 0 (where it could not act)."""
    if not 0.0 <= trust <= 1.0:
        raise ValueError(f"trust must be in [0, 1], got {trust}")
    if ratio is not None:
        _ratio_values(ratio, model.n_classes)
        if trust == 0 and not model.uses_ratio:
            raise ValueError("this model has no ratio encoder: a ratio only acts through the correction (trust > 0)")


def correction_bias_for(model: Segmenter, solve_features: torch.Tensor, ratio, trust: float,
                        temperature: float = 1.0) -> torch.Tensor | None:
    """The ratio correction's per-class bias ``(n,)`` towards ``ratio`` at ``trust``, solved on the blended
    features ``(c, P)`` of a pixel subsample (:func:`solve_pixel_indices`); None when no correction applies
    (no ratio, or trust 0)."""
    check_ratio_arguments(model, ratio, trust)
    if ratio is None or trust == 0:
        return None
    target = normalize_fractions(_ratio_values(ratio, model.n_classes))
    z = phase_logits(model, solve_features, ratio)
    bias = correction_bias(z.double().cpu().numpy(), target, trust, temperature)
    return torch.as_tensor(bias, dtype=z.dtype, device=z.device)


def phase_logits(model: Segmenter, features: torch.Tensor, ratio, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``(n, P)`` of blended features ``(c, ...)``: the ratio head with ``ratio`` as the PLM's input
    (a model without the ratio encoder takes none), plus the correction ``bias`` when given."""
    z = ratio_logits(model, features, _ratio_tensor(ratio if model.uses_ratio else None, model, features.device))
    return z if bias is None else z.add_(bias[:, None])


def predict_image(
    model: Segmenter,
    image,
    ratio=None,
    trust: float = 0.0,
    temperature: float = 1.0,
    device=None,
    batch_size: int = 4,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment a whole micrograph ``(H, W)`` in [0, 1] -> ``(labels (H, W) int32, probs (C, H, W) float32)``.

    ``ratio``: phase ratio per class (None = no ratio, fed to a PLM as zeros as in paper 001);
    ``trust`` > 0 adds the ratio correction (:meth:`PhaseRatioSession.predict`).
    ``device``: None keeps the model where it is, otherwise the model is moved there.
    """
    session = PhaseRatioSession(model, image, device, batch_size, temperature, progress, should_stop)
    return session.predict(ratio, trust)


def calibrate_temperature(
    model: Segmenter,
    samples,
    device=None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> float:
    """The temperature of :func:`~napari_microsynth.core.ratio_correction.fit_temperature` on annotated
    micrographs (:data:`SOLVE_PIXELS` random pixels of each); a PLM gets each micrograph's true ratio."""
    logits, labels = [], []
    for i, sample in enumerate(samples):
        session = PhaseRatioSession(model, sample.image, device, should_stop=should_stop)
        pixels = session.solve_pixels.cpu().numpy()
        truth = sample.mask.ravel()[pixels]
        known = (truth >= 0) & (truth < model.n_classes)  # leaves out the schema's ignore id
        z = session.logits(sample.fractions if model.uses_ratio else None)[:, session.solve_pixels]
        logits.append(z.cpu().numpy()[:, known])
        labels.append(truth[known])
        progress(i + 1, len(samples), f"calibrated on {sample.name}")
    return fit_temperature(np.concatenate(logits, axis=1), np.concatenate(labels))


def stored_temperature(folder) -> float:
    """The temperature ``microsynth evaluate`` recorded in a model folder (1.0 when none was fitted)."""
    return float(read_model_config(folder).get("training", {}).get("temperature", 1.0))


def micrograph_warnings(folder, model_schema, image: np.ndarray, pixel_size_um: float | None = None,
                        image_schema=None) -> list[str]:
    """How ``image`` differs from the micrographs the model in ``folder`` was trained on
    (:func:`~napari_microsynth.core.domain_check.domain_warnings`; empty when nothing stands out)."""
    statistics = read_model_config(folder).get("training", {}).get("image_statistics")
    return domain_warnings(image, statistics, pixel_size_um, image_schema, model_schema)


class PhaseRatioSession:
    """Cached inference of one micrograph for interactive phase-ratio changes.

    Construction runs the image-dependent part of the network window by window (reporting progress,
    cancellable) and keeps the blended ``n``-channel map (``4 n`` bytes per pixel); :meth:`labels` and
    :meth:`predict` then cost only the per-pixel ratio head, the ratio correction's bias solve (on a
    fixed subsample of :data:`SOLVE_PIXELS` pixels) and the argmax.

    The ratio is the PLM's input and, at ``trust`` > 0, the target of the ratio correction
    (:mod:`~napari_microsynth.core.ratio_correction`; posteriors at the calibrated ``temperature``).
    A model without the ratio encoder takes a ratio only through the correction.

    ``region`` ``(y0, x0, y1, x1)`` limits the session to part of a (possibly lazy, see
    :func:`region_features`) micrograph: its maps are the whole micrograph's there, except that the
    correction's bias is solved on the region's pixels.

    >>> session = PhaseRatioSession(model, image)                     # doctest: +SKIP
    >>> labels, probs = session.predict([0.6, 0.3, 0.1], trust=1.0)   # doctest: +SKIP
    """

    def __init__(
        self,
        model: Segmenter,
        image,
        device=None,
        batch_size: int = 4,
        temperature: float = 1.0,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
        region: Box | None = None,
    ):
        self.model = model.eval()
        self.device = _model_device(model, device)
        self.temperature = float(temperature)
        features = region_features(model, image, region, batch_size, progress, should_stop)
        self.shape = features.shape[1:]
        self.features = torch.from_numpy(features).to(self.device)
        self.solve_pixels = torch.from_numpy(solve_pixel_indices(self.shape[0] * self.shape[1])).to(self.device)

    @property
    def uses_ratio(self) -> bool:
        return self.model.uses_ratio

    @property
    def schema(self):
        return self.model.schema

    def logits(self, ratio=None) -> torch.Tensor:
        """The network's logits ``(C, H * W)`` for ``ratio`` (the PLM's input; None = no ratio)."""
        return ratio_logits(self.model, self.features, _ratio_tensor(ratio, self.model, self.device))

    def _corrected(self, ratio, trust: float) -> torch.Tensor:
        """Logits plus the correction bias for ``ratio`` at ``trust``."""
        solve_features = self.features.reshape(self.features.shape[0], -1)[:, self.solve_pixels]
        bias = correction_bias_for(self.model, solve_features, ratio, trust, self.temperature)
        return phase_logits(self.model, self.features, ratio, bias)

    @torch.inference_mode()
    def labels(self, ratio=None, trust: float = 0.0) -> np.ndarray:
        """The phase map ``(H, W)`` uint8 for ``ratio`` at ``trust`` (the slider's path: no probabilities)."""
        return argmax_labels(self._corrected(ratio, trust), torch.uint8).reshape(self.shape).cpu().numpy()

    @torch.inference_mode()
    def predict(self, ratio=None, trust: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(H, W)`` int32 and probabilities ``(C, H, W)`` float32 for ``ratio`` (None = no ratio)
        at ``trust`` (0 = the network alone, paper 001; 1 = the labels take the ratio's fractions)."""
        probs = torch.softmax(self._corrected(ratio, trust) / self.temperature, dim=0)
        labels = argmax_labels(probs)
        return labels.reshape(self.shape).cpu().numpy(), probs.reshape(-1, *self.shape).cpu().numpy()

    def estimate_ratio(self) -> np.ndarray:
        """Phase fractions of the no-ratio prediction (a starting point for the sliders)."""
        return mask_fractions(self.labels(None), self.schema)
