"""Whole-micrograph inference with sliding windows, and a cached session for phase-ratio sliders.

The network runs on square windows of its training tile size (the PLM's coordinate maps are relative to
the window), overlapping by half. Images smaller than a window are padded by reflection and the result
cropped back.

Blending: what is averaged over overlapping windows, with Gaussian weights that fall to ~0 at each
window's edge (no seams on the window grid; paper 000 averages flat), is the output of the image-dependent part of the
network (:meth:`Segmenter.image_features`: the PLM's phase-feature channels after feature
extraction and spatial awareness, or a baseline's class scores). The ratio-dependent part of the PLM is
per pixel, so it then runs once over the blended whole-micrograph map, followed by the ratio correction
(:mod:`~napari_microsynth.core.ratio_correction`, at trust > 0) and the softmax. For a baseline network
this is averaging of the logits. Doing the blending before the ratio head is what lets
:class:`PhaseRatioSession` keep the blended map and answer a new ratio with a few per-pixel operations;
its predictions equal :func:`predict_image` with the same ratio and trust.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..core.domain_check import domain_warnings
from ..core.fractions import mask_fractions, normalize_fractions
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.ratio_correction import correction_bias, fit_temperature
from ..core.tiles import WindowAccumulator, gaussian_window, sliding_window_boxes
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


def pad_to_window(image: np.ndarray, tile: int) -> np.ndarray:
    """``image`` padded by reflection at the bottom/right to at least ``tile`` x ``tile``."""
    h, w = image.shape
    pad_h, pad_w = max(0, tile - h), max(0, tile - w)
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w)), mode="reflect")


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
        raise ValueError("this model has no ratio encoder and takes no phase ratio (pass ratio=None)")
    return torch.as_tensor(_ratio_values(ratio, model.n_classes), dtype=torch.float32, device=device)


def _model_device(model: Segmenter, device) -> torch.device:
    if device is None:
        return next(model.parameters()).device
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model.to(device)
    return device


@torch.inference_mode()
def blended_features(
    model: Segmenter,
    image: np.ndarray,
    batch_size: int = 4,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> np.ndarray:
    """The image-dependent network output ``(c, H, W)`` for a whole micrograph: the 50 % overlapping
    windows averaged with Gaussian weights (:func:`~napari_microsynth.core.tiles.gaussian_window`, so no
    seams on the window grid); holds ``batch_size`` windows of activations at a time."""
    image = _as_image(image)
    full_shape = image.shape
    image = _rescale(image, model.input_scale)
    device = next(model.parameters()).device
    model.eval()
    padded = pad_to_window(image, model.tile_size)
    boxes = sliding_window_boxes(padded.shape, model.tile_size, OVERLAP)
    acc = WindowAccumulator(padded.shape, model.feature_channels)
    weight = gaussian_window(model.tile_size)
    for start in range(0, len(boxes), batch_size):
        check_stop(should_stop)
        chunk = boxes[start : start + batch_size]
        batch = np.stack([padded[y0:y1, x0:x1] for y0, x0, y1, x1 in chunk])[:, None]
        features = model.image_features(torch.from_numpy(batch).to(device)).float().cpu().numpy()
        for box, values in zip(chunk, features):
            acc.add(box, values, weight)
        done = start + len(chunk)
        progress(done, len(boxes), f"segmenting window {done}/{len(boxes)}")
    features = acc.result()[:, : image.shape[0], : image.shape[1]]
    if features.shape[1:] != full_shape:
        features = F.interpolate(torch.from_numpy(features)[None], size=full_shape, mode="bilinear",
                                 align_corners=False)[0].numpy()
    return np.ascontiguousarray(features)


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (antialiased) for a network that works at a reduced scale."""
    if scale == 1.0:
        return image
    size = (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)))
    t = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


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
    ):
        self.model = model.eval()
        self.device = _model_device(model, device)
        self.temperature = float(temperature)
        features = blended_features(model, image, batch_size, progress, should_stop)
        self.shape = features.shape[1:]
        self.features = torch.from_numpy(features).to(self.device)
        n_pixels = features.shape[1] * features.shape[2]
        chosen = np.random.default_rng(0).choice(n_pixels, min(n_pixels, SOLVE_PIXELS), replace=False)
        self.solve_pixels = torch.from_numpy(np.sort(chosen)).to(self.device)

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
        if not 0.0 <= trust <= 1.0:
            raise ValueError(f"trust must be in [0, 1], got {trust}")
        if ratio is not None and trust > 0:
            target = normalize_fractions(_ratio_values(ratio, self.model.n_classes))
            z = self.logits(ratio if self.uses_ratio else None)
            bias = correction_bias(z[:, self.solve_pixels].double().cpu().numpy(), target, trust, self.temperature)
            return z.add_(torch.as_tensor(bias, dtype=z.dtype, device=z.device)[:, None])
        if ratio is not None and not self.uses_ratio:
            raise ValueError("this model has no ratio encoder: a ratio only acts through the correction (trust > 0)")
        return self.logits(ratio)

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
