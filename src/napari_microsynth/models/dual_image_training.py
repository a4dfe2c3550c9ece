"""Training of paper 002's two networks through the one trainer: the dual-image VQ-VAE, then the
PixelCNN prior on the VQ-VAE's code grids.

Paper 002 (Table 4) trains the VQ-VAE with batch size 8 for 50 000 updates (Adam, the Keras example's
optimiser) to the lowest reconstruction error, then fits the PixelCNN to the code grids of the training
tiles with a cross-entropy over the K codes. Both are plain loss minimisations here, given to
:func:`~napari_microsynth.models.trainer.train` as recipes (checkpoints, exact resume, progress, cancel,
several processes).

Codes the encoder stops choosing are restarted (not in the paper; with K = 10 a dead code is a tenth of
the vocabulary lost): the codebook keeps a running usage share per code (a buffer, so checkpoints resume
it), and every :data:`RESTART_EVERY` updates a code used by less than :data:`DEAD_SHARE` of its fair share
``1 / K`` moves onto an encoder output of the current batch. Under several processes the usage counts are
summed over processes and the main process's new codes are broadcast, so every process keeps one codebook.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from .pixelcnn import PixelCNNPrior
from .trainer import LoopSettings, Recipe, Run, TrainResult, train
from .vqvae import DualImageVQVAE, reconstruction_loss

RESTART_EVERY, DEAD_SHARE = 100, 0.01


def train_vqvae(
    vqvae: DualImageVQVAE,
    next_batch: Callable[[np.random.Generator], torch.Tensor],
    settings: LoopSettings,
    learning_rate: float,
    variance: float,
    mask_weight: float = 1.0,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainResult:
    """Train ``vqvae`` in place: reconstruction MSE / ``variance`` + VQ loss, with dead-code restarts.

    ``next_batch(rng)`` returns dual images ``(B, C, H, W)`` in [-1, 1] on the CPU.
    """
    optimizer = torch.optim.Adam(vqvae.parameters(), lr=learning_rate)

    def draw(rng: np.random.Generator) -> tuple[int, torch.Tensor]:
        return int(rng.integers(0, 2**63 - 1)), next_batch(rng)

    def step(run: Run, item: tuple[int, torch.Tensor]) -> dict[str, float]:
        seed, dual = item
        dual = dual.to(run.device)
        reconstruction, vq_loss, indices = run.modules["vqvae"](dual)
        rec = reconstruction_loss(reconstruction, dual, variance, vqvae.config, mask_weight)
        run.update("vqvae", rec + vq_loss)
        counts = torch.bincount(indices.flatten(), minlength=vqvae.config.n_embeddings).float()
        counts = run.accelerator.reduce(counts, "sum")
        _track_usage(run, run.unwrap("vqvae"), counts, dual, seed)
        return {"loss": float((rec + vq_loss).detach()), "reconstruction": float(rec.detach()),
                "codes_used": float((counts > 0).sum())}

    recipe = Recipe({"vqvae": vqvae}, {"vqvae": optimizer}, draw, step, identity={"vqvae": vqvae.config.to_dict()})
    return train(recipe, settings, progress, should_stop)


@torch.no_grad()
def _track_usage(run: Run, model: DualImageVQVAE, counts: torch.Tensor, dual: torch.Tensor, seed: int) -> None:
    """Update the codebook's usage shares and, every RESTART_EVERY updates, restart the dead codes."""
    from accelerate.utils import broadcast

    quantizer = model.quantizer
    quantizer.usage.mul_(0.99).add_(0.01 * counts / counts.sum())
    quantizer.updates += 1
    if int(quantizer.updates) % RESTART_EVERY:
        return
    dead = (quantizer.usage < DEAD_SHARE / model.config.n_embeddings).nonzero().flatten()
    if len(dead):
        model.restart_codes(dead, dual, torch.Generator().manual_seed(seed))
        broadcast(quantizer.codebook.weight.data, from_process=0)
        broadcast(quantizer.usage, from_process=0)


def train_prior(
    prior: PixelCNNPrior,
    next_batch: Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor | None]],
    settings: LoopSettings,
    learning_rate: float,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainResult:
    """Train ``prior`` in place by teacher forcing: cross-entropy of every cell's code given the cells
    before it. ``next_batch(rng)`` returns code grids ``(B, h, w)`` and their conditions ``(B, D)`` or None."""
    optimizer = torch.optim.Adam(prior.parameters(), lr=learning_rate)

    def step(run: Run, batch: tuple[torch.Tensor, torch.Tensor | None]) -> dict[str, float]:
        codes, condition = batch
        codes = codes.to(run.device)
        logits = run.modules["prior"](codes, None if condition is None else condition.to(run.device))
        loss = F.cross_entropy(logits, codes)
        run.update("prior", loss, clip=1.0)
        return {"loss": float(loss.detach())}

    recipe = Recipe({"prior": prior}, {"prior": optimizer}, next_batch, step,
                    identity={"prior": prior.config.to_dict()})
    return train(recipe, settings, progress, should_stop)
