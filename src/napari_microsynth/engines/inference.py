"""Whole-micrograph inference: sliding windows with 50 % overlap and averaged softmax, plus a cached
session for interactive phase-ratio sliders.

The network runs on square windows of its training tile size (the PLM's coordinate maps are relative to
the window); windows overlap by half and the class probabilities of overlapping windows are averaged.
Images smaller than a window are padded by reflection and the result cropped back.

:class:`PhaseRatioSession` runs the image-dependent part of the network (encoder, decoder, the PLM's
feature extractor and spatial awareness) once per window and keeps its ``n``-channel output. A new ratio
then only reruns the ratio-dependent per-pixel head on the cached windows, blends and takes the argmax;
the result equals :func:`predict_image` with the same ratio.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.fractions import mask_fractions
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.tiles import WindowAccumulator, sliding_window_boxes
from ..models.device import resolve_device
from ..models.segmenter import Segmenter

OVERLAP = 0.5


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


def _ratio_tensor(ratio, n_classes: int) -> torch.Tensor | None:
    if ratio is None:
        return None
    values = np.asarray(ratio, dtype=np.float64)
    if values.shape != (n_classes,):
        raise ValueError(f"phase ratio must have one value per phase ({n_classes}), got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"phase ratio must be finite numbers, got {values.tolist()}")
    return torch.as_tensor(values, dtype=torch.float32)


def _model_device(model: Segmenter, device) -> torch.device:
    if device is None:
        return next(model.parameters()).device
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model.to(device)
    return device


def _window_batches(image: np.ndarray, boxes, batch_size: int):
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        yield start, chunk, np.stack([image[y0:y1, x0:x1] for y0, x0, y1, x1 in chunk])[:, None]


@torch.inference_mode()
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
    Holds only ``batch_size`` windows of activations at a time.
    """
    image = _as_image(image)
    device = _model_device(model, device)
    model.eval()
    r = _ratio_tensor(ratio, model.n_classes)
    r = None if r is None else r.to(device)
    tile = model.tile_size
    padded = pad_to_window(image, tile)
    boxes = sliding_window_boxes(padded.shape, tile, OVERLAP)
    acc = WindowAccumulator(padded.shape, model.n_classes)
    for start, chunk, batch in _window_batches(padded, boxes, batch_size):
        check_stop(should_stop)
        probs = torch.softmax(model(torch.from_numpy(batch).to(device), r), dim=1).float().cpu().numpy()
        for box, p in zip(chunk, probs):
            acc.add(box, p)
        progress(start + len(chunk), len(boxes), f"segmenting window {start + len(chunk)}/{len(boxes)}")
    probs = acc.result()[:, : image.shape[0], : image.shape[1]]
    return probs.argmax(axis=0).astype(np.int32), np.ascontiguousarray(probs)


class PhaseRatioSession:
    """Cached inference of one micrograph for interactive phase-ratio changes.

    Construction runs the image-dependent part of the network window by window (reporting progress,
    cancellable); :meth:`predict` then costs only the per-pixel ratio head on the cached ``n``-channel
    window features (memory: about ``4 * 4 * n`` bytes per image pixel at 50 % overlap).

    >>> session = PhaseRatioSession(model, image)          # doctest: +SKIP
    >>> labels, probs = session.predict([0.6, 0.3, 0.1])   # doctest: +SKIP
    """

    def __init__(
        self,
        model: Segmenter,
        image,
        device=None,
        batch_size: int = 4,
        head_chunk: int = 16,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ):
        image = _as_image(image)
        self.model = model.eval()
        self.device = _model_device(model, device)
        self.shape = image.shape
        self.head_chunk = max(1, int(head_chunk))
        padded = pad_to_window(image, model.tile_size)
        self.padded_shape = padded.shape
        self.boxes = sliding_window_boxes(padded.shape, model.tile_size, OVERLAP)
        chunks = []
        with torch.inference_mode():
            for start, chunk, batch in _window_batches(padded, self.boxes, batch_size):
                check_stop(should_stop)
                chunks.append(model.image_features(torch.from_numpy(batch).to(self.device)).float())
                done = start + len(chunk)
                progress(done, len(self.boxes), f"computing image features, window {done}/{len(self.boxes)}")
            self.features = torch.cat(chunks)
            count = torch.zeros(self.padded_shape, device=self.device)
            for y0, x0, y1, x1 in self.boxes:
                count[y0:y1, x0:x1] += 1
            self._count = count

    @property
    def uses_ratio(self) -> bool:
        return self.model.uses_ratio

    @property
    def schema(self):
        return self.model.schema

    @torch.inference_mode()
    def predict(self, ratio=None) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(H, W)`` int32 and probabilities ``(C, H, W)`` float32 for ``ratio`` (None = no ratio)."""
        r = _ratio_tensor(ratio, self.model.n_classes)
        if r is not None:
            if not self.uses_ratio:
                raise ValueError("this model has no ratio encoder; predict() takes no phase ratio")
            r = r.to(self.device)
        total = torch.zeros((self.model.n_classes, *self.padded_shape), device=self.device)
        for start in range(0, len(self.boxes), self.head_chunk):
            logits = self.model.ratio_head(self.features[start : start + self.head_chunk], r)
            probs = torch.softmax(logits, dim=1)
            for (y0, x0, y1, x1), p in zip(self.boxes[start : start + self.head_chunk], probs):
                total[:, y0:y1, x0:x1] += p
        probs = (total / self._count)[:, : self.shape[0], : self.shape[1]]
        labels = probs.argmax(dim=0).to(torch.int32)
        return labels.cpu().numpy(), probs.cpu().numpy()

    def estimate_ratio(self) -> np.ndarray:
        """Phase fractions of the no-ratio prediction (a starting point for the sliders)."""
        labels, _ = self.predict(None)
        return mask_fractions(labels, self.schema)
