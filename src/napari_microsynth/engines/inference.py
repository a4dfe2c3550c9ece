"""Whole-micrograph inference with sliding windows, and a cached session for phase-ratio sliders.

The network runs on square windows of its training tile size (the PLM's coordinate maps are relative to
the window), overlapping by half. Images smaller than a window are padded by reflection and the result
cropped back.

Blending: what is averaged over overlapping windows is the output of the image-dependent part of the
network (:meth:`Segmenter.image_features`: the PLM's ``n`` phase-feature channels after feature
extraction and spatial awareness, or a baseline's class scores). The ratio-dependent part of the PLM is
per pixel, so it then runs once over the blended whole-micrograph map, followed by the softmax. For a
baseline network this is averaging of the logits. Doing the blending before the ratio head is what lets
:class:`PhaseRatioSession` keep the blended map and answer a new ratio with a few per-pixel operations;
its predictions equal :func:`predict_image` with the same ratio.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..core.fractions import mask_fractions
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.tiles import WindowAccumulator, sliding_window_boxes
from ..models.device import resolve_device
from ..models.segmenter import Segmenter

OVERLAP = 0.5
#: Pixels per pass of the ratio head (bounds its temporary memory on large micrographs).
HEAD_CHUNK_PIXELS = 1 << 21


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


def _ratio_tensor(ratio, model: Segmenter, device: torch.device) -> torch.Tensor | None:
    if ratio is None:
        return None
    if not model.uses_ratio:
        raise ValueError("this model has no ratio encoder and takes no phase ratio (pass ratio=None)")
    values = np.asarray(ratio, dtype=np.float64)
    if values.shape != (model.n_classes,):
        raise ValueError(f"phase ratio must have one value per phase ({model.n_classes}), got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"phase ratio must be finite numbers, got {values.tolist()}")
    return torch.as_tensor(values, dtype=torch.float32, device=device)


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
    """The image-dependent network output ``(n, H, W)`` for a whole micrograph, averaged over the 50 %
    overlapping windows (holds ``batch_size`` windows of activations at a time)."""
    image = _as_image(image)
    full_shape = image.shape
    image = _rescale(image, model.input_scale)
    device = next(model.parameters()).device
    model.eval()
    padded = pad_to_window(image, model.tile_size)
    boxes = sliding_window_boxes(padded.shape, model.tile_size, OVERLAP)
    acc = WindowAccumulator(padded.shape, model.n_classes)
    for start in range(0, len(boxes), batch_size):
        check_stop(should_stop)
        chunk = boxes[start : start + batch_size]
        batch = np.stack([padded[y0:y1, x0:x1] for y0, x0, y1, x1 in chunk])[:, None]
        features = model.image_features(torch.from_numpy(batch).to(device)).float().cpu().numpy()
        for box, values in zip(chunk, features):
            acc.add(box, values)
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
def apply_ratio_head(model: Segmenter, features: torch.Tensor, ratio: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Blended features ``(n, H, W)`` (a tensor on the model's device) + ratio -> labels ``(H, W)`` and
    probabilities ``(n, H, W)``, the per-pixel head run in chunks of :data:`HEAD_CHUNK_PIXELS`."""
    n, h, w = features.shape
    flat = features.reshape(n, h * w)
    parts = [
        torch.softmax(model.ratio_head(flat[None, :, start : start + HEAD_CHUNK_PIXELS], ratio)[0], dim=0)
        for start in range(0, h * w, HEAD_CHUNK_PIXELS)
    ]
    probs = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    labels = probs.max(dim=0).indices.to(torch.int32)
    return labels.reshape(h, w), probs.reshape(n, h, w)


def predict_image(
    model: Segmenter,
    image,
    ratio=None,
    device=None,
    batch_size: int = 4,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment a whole micrograph ``(H, W)`` in [0, 1] -> ``(labels (H, W) int32, probs (C, H, W) float32)``.

    ``ratio``: phase ratio per class for a PLM model (None = no ratio, fed as zeros as in paper 001).
    ``device``: None keeps the model where it is, otherwise the model is moved there.
    """
    device = _model_device(model, device)
    r = _ratio_tensor(ratio, model, device)
    features = blended_features(model, image, batch_size, progress, should_stop)
    labels, probs = apply_ratio_head(model, torch.from_numpy(features).to(device), r)
    return labels.cpu().numpy(), probs.cpu().numpy()


class PhaseRatioSession:
    """Cached inference of one micrograph for interactive phase-ratio changes.

    Construction runs the image-dependent part of the network window by window (reporting progress,
    cancellable) and keeps the blended ``n``-channel map (``4 n`` bytes per pixel); :meth:`predict` then
    costs only the per-pixel ratio head, the softmax and the argmax.

    >>> session = PhaseRatioSession(model, image)          # doctest: +SKIP
    >>> labels, probs = session.predict([0.6, 0.3, 0.1])   # doctest: +SKIP
    """

    def __init__(
        self,
        model: Segmenter,
        image,
        device=None,
        batch_size: int = 4,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ):
        self.model = model.eval()
        self.device = _model_device(model, device)
        features = blended_features(model, image, batch_size, progress, should_stop)
        self.shape = features.shape[1:]
        self.features = torch.from_numpy(features).to(self.device)

    @property
    def uses_ratio(self) -> bool:
        return self.model.uses_ratio

    @property
    def schema(self):
        return self.model.schema

    def predict(self, ratio=None) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(H, W)`` int32 and probabilities ``(C, H, W)`` float32 for ``ratio`` (None = no ratio)."""
        labels, probs = apply_ratio_head(self.model, self.features, _ratio_tensor(ratio, self.model, self.device))
        return labels.cpu().numpy(), probs.cpu().numpy()

    def estimate_ratio(self) -> np.ndarray:
        """Phase fractions of the no-ratio prediction (a starting point for the sliders)."""
        labels, _ = self.predict(None)
        return mask_fractions(labels, self.schema)
