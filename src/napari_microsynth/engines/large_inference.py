"""Segmentation of micrographs too large for memory: block by block into a zarr phase map.

:func:`segment_large` cuts the micrograph into blocks of about ``block`` x ``block`` pixels (a whole number
of window strides, their edges between the windows' edges) on the window grid of the whole micrograph
(:class:`~napari_microsynth.engines.inference.WindowGrid`). Each block runs the windows that reach it (the
block plus at most one window of margin), so its blended features equal the whole micrograph's there
(:func:`~napari_microsynth.engines.inference.network_features`); the per-pixel ratio head and argmax then
run over it in row chunks of :data:`~napari_microsynth.engines.inference.HEAD_CHUNK_PIXELS`, and its
labels go into a :class:`~napari_microsynth.core.large_image.PhaseMap`. Peak memory is set by the block,
not the micrograph: the block's network image and blended features (about ``(block * input scale + 2
windows)^2`` network pixels) and one row chunk of per-pixel features. Every finished block is recorded
in the store, so a rerun with the same arguments skips it (resume after an interruption or a Cancel).

The ratio correction (a ratio at ``trust`` > 0) needs the whole micrograph's posteriors. Its bias is
solved as :class:`~napari_microsynth.engines.inference.PhaseRatioSession` solves it, on the blended
features of the same fixed random subsample of
:data:`~napari_microsynth.engines.inference.SOLVE_PIXELS` pixels of the whole micrograph, which a first
pass over the blocks gathers (kept in the store, so that pass resumes too) before the labels pass. The
network thus runs twice, so a corrected run takes about twice as long as an uncorrected one; its labels
equal :func:`~napari_microsynth.engines.inference.predict_image` on the whole micrograph.

>>> phase_map = segment_large(model, open_micrograph("mosaic.tif").image, "phases.zarr")   # doctest: +SKIP
>>> phase_map.fractions()                                                                   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.large_image import PhaseMap
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..models.segmenter import Segmenter
from .inference import (
    HEAD_CHUNK_PIXELS,
    WindowGrid,
    _as_source,
    argmax_labels,
    check_ratio_arguments,
    correction_bias_for,
    network_features,
    phase_logits,
    solve_pixel_indices,
)

#: Default block side in micrograph pixels (with the bundled model about 1 GB peak memory in all).
DEFAULT_BLOCK = 4096


def block_starts(grid: WindowGrid, length: int, block: int) -> list[int]:
    """Where the blocks start along a side of ``length`` micrograph pixels: every ``block`` pixels rounded
    to whole window strides; with a resized input, shifted by half a stride so that the one network
    pixel of margin a block's resize needs stays inside its outermost windows.

    >>> grid = WindowGrid((1000, 1000), tile=128, p=1, q=2)   # 256 px windows, 128 px apart
    >>> block_starts(grid, 1000, 300)
    [0, 320, 576, 832]
    """
    if block < 1:
        raise ValueError(f"block size must be a positive number of pixels, got {block}")
    stride = grid.stride_pixels
    size = max(1, round(block / stride)) * stride
    offset = stride // 2 // grid.q * grid.q if grid.p != grid.q else 0
    return [0] + list(range(offset + size, length, size))


def block_windows(grid: WindowGrid, box) -> list:
    """The windows (network pixels) that block ``box`` runs."""
    y0, x0, y1, x1 = box
    return grid.windows_in(grid.net_span(y0, y1, 0), grid.net_span(x0, x1, 1))


def _row_chunks(box):
    """``box`` cut into full-width row chunks of at most :data:`HEAD_CHUNK_PIXELS` pixels."""
    y0, x0, y1, x1 = box
    rows = max(1, HEAD_CHUNK_PIXELS // (x1 - x0))
    return [(r, x0, min(r + rows, y1), x1) for r in range(y0, y1, rows)]


@torch.inference_mode()
def segment_large(
    model: Segmenter,
    image,
    out: str | Path,
    ratio=None,
    trust: float = 0.0,
    temperature: float = 1.0,
    block: int = DEFAULT_BLOCK,
    batch_size: int = 4,
    source: str = "",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> PhaseMap:
    """Segment a micrograph (numpy, or lazy such as :func:`~napari_microsynth.core.large_image.open_micrograph`'s
    ``image``) block by block into the phase map ``out``; resumes ``out`` when it holds an unfinished map of
    the same run (``source`` names the micrograph in that record). ``ratio`` and ``trust`` as for
    :func:`~napari_microsynth.engines.inference.predict_image`; raises ``Cancelled`` when ``should_stop()``
    (the finished blocks stay)."""
    image = _as_source(image)
    check_ratio_arguments(model, ratio, trust)
    model.eval()
    grid = WindowGrid.of(model, image.shape)
    run = {"source": str(source), "model": model.model_checksum, "tile": model.tile_size,
           "input_scale": model.input_scale, "ratio": None if ratio is None else [float(v) for v in ratio],
           "trust": float(trust), "temperature": float(temperature)}
    phase_map = PhaseMap.resume_or_create(out, model.schema, grid.shape, block_starts(grid, grid.shape[0], block),
                                          block_starts(grid, grid.shape[1], block), run)
    done = phase_map.done
    labels_todo = [(i, j, box) for i, j, box in phase_map.blocks if not done[i, j]]
    corrected = ratio is not None and trust > 0
    if corrected:
        solve_done = phase_map.scratch("solve_done", done.shape, bool, chunks=(1, 1))
        finished = solve_done[:]
        solve_todo = [(i, j, box) for i, j, box in phase_map.blocks if not finished[i, j]] if labels_todo else []
    else:
        solve_todo = []
    steps = [("solve", *b) for b in solve_todo] + [("labels", *b) for b in labels_todo]
    sizes = [len(block_windows(grid, box)) for _, _, _, box in steps]
    total, offset = sum(sizes), 0

    def block_progress(done_windows, _block_total, message):  # the current step's windows, counted over all steps
        progress(offset + done_windows, total, f"block {k + 1}/{len(steps)} ({kind} pass): {message}")

    bias = None
    for k, ((kind, i, j, box), size) in enumerate(zip(steps, sizes)):
        if kind == "labels" and corrected and bias is None:
            bias = _solved_bias(model, phase_map, ratio, trust, temperature)
        check_stop(should_stop)
        y0, x0, y1, x1 = box
        rows, cols = grid.net_span(y0, y1, 0), grid.net_span(x0, x1, 1)
        net = network_features(model, image, grid, rows, cols, batch_size, block_progress, should_stop)
        if kind == "solve":
            _gather_solve_features(phase_map, grid, net, (rows[0], cols[0]), box)
            solve_done[i, j] = True
        else:
            phase_map.write_block(i, j, box, _block_labels(model, grid, net, (rows[0], cols[0]), box, ratio, bias))
        offset += size
    return phase_map


def _block_labels(model, grid: WindowGrid, net: np.ndarray, origin, box, ratio, bias) -> np.ndarray:
    """Class ids (uint8) of ``box`` from its blended network features: the per-pixel ratio head, the
    correction ``bias`` and the argmax, a row chunk at a time."""
    y0, x0, y1, x1 = box
    labels = np.empty((y1 - y0, x1 - x0), np.uint8)
    device = next(model.parameters()).device
    for r0, _, r1, _ in _row_chunks(box):
        features = torch.from_numpy(np.ascontiguousarray(grid.upsample(net, origin, (r0, x0, r1, x1)))).to(device)
        scores = phase_logits(model, features, ratio, bias)
        labels[r0 - y0 : r1 - y0] = argmax_labels(scores, torch.uint8).reshape(r1 - r0, x1 - x0).cpu().numpy()
    return labels


def _solve_pixels(phase_map: PhaseMap) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the correction's pixel subsample of the whole map."""
    return np.divmod(solve_pixel_indices(phase_map.shape[0] * phase_map.shape[1]), phase_map.shape[1])


def _gather_solve_features(phase_map: PhaseMap, grid: WindowGrid, net: np.ndarray, origin, box) -> None:
    """Store the blended features of the subsample pixels that lie in ``box``."""
    ys, xs = _solve_pixels(phase_map)
    store = phase_map.scratch("solve_features", (net.shape[0], len(ys)), "float32")
    for chunk in _row_chunks(box):
        y0, x0, y1, x1 = chunk
        inside = np.nonzero((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1))[0]
        if len(inside):
            features = grid.upsample(net, origin, chunk)
            store.oindex[:, inside] = features[:, ys[inside] - y0, xs[inside] - x0]


def _solved_bias(model, phase_map: PhaseMap, ratio, trust, temperature) -> torch.Tensor:
    """The correction's bias from the gathered subsample (every block's first pass must be done)."""
    if not phase_map.scratch("solve_done", phase_map.done.shape, bool, chunks=(1, 1))[:].all():
        raise RuntimeError("the ratio correction's first pass is unfinished")
    features = phase_map.scratch("solve_features", (model.feature_channels, len(_solve_pixels(phase_map)[0])), "float32")
    device = next(model.parameters()).device
    return correction_bias_for(model, torch.from_numpy(features[:]).to(device), ratio, trust, temperature)
