"""Training of the diffusion denoisers (their random training tiles: ``core.tiles.RandomPairTiles``).

:func:`train_denoiser` knows nothing about what is diffused: a caller hands it a ``next_batch(rng)``
function returning a :class:`DenoiserBatch` (target channels in [-1, 1], an optional global condition
vector, optional clean context channels). PF-DiffSeg diffuses ``[image, mask]`` with a fraction vector;
a mask-only stage diffuses the mask; an image stage diffuses the image with the mask as context.

Loss (paper 000, Table A2 and eq. 3): noise-prediction loss MSE + lambda * L1 (lambda = 1, Table A1),
AdamW at lr 1e-4 with a cosine learning-rate schedule, DDPM forward process with the model's (cosine)
noise schedule. Our additions: condition dropout for classifier-free guidance, EMA weights (used for
sampling and saved), gradient clipping. The loop itself (accelerate, sharded batches, checkpoints with
exact resume, progress, cancel; mixed precision only on GPU) is the one trainer's (:mod:`.trainer`).

This module sits with the models (not in ``engines``) because generators train their own networks and
imports only point downwards (core <- models/generators <- engines).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.options import option
from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from .checkpoint import latest_checkpoint
from .diffusion import Denoiser, training_scheduler
from .trainer import MIXED_PRECISION_CHOICES, LoopSettings, Recipe, Run, TrainResult, train

__all__ = ["DenoiserBatch", "DiffusionTrainConfig", "TrainResult", "latest_checkpoint", "train_denoiser"]


@dataclass
class DiffusionTrainConfig:
    """Settings of the denoiser training loop.

    steps: total optimisation steps (a resumed run continues up to this number).
    learning_rate / lr_schedule: 1e-4 with a cosine schedule (paper 000, Table A2; the table's "Scheduler:
        Cosine" may mean the learning-rate or the noise schedule, so we use cosine for both), after
        ``lr_warmup_steps`` of linear warm-up.
    l1_weight: lambda of the MSE + lambda * L1 noise loss (paper 000, eq. 3; lambda = 1 was best, Table A1).
    condition_dropout: probability that a sample's condition is replaced by the null (all-zero) condition,
        which enables classifier-free guidance at sampling time (not in paper 000; 0 switches it off).
    ema_decay: decay of the exponential moving average of the weights used for sampling.
    mixed_precision: "auto" (bf16/fp16 on CUDA, none elsewhere), "no", "fp16", "bf16" (GPU only).
    checkpoint_dir / checkpoint_every / keep_checkpoints / resume: periodic checkpoints
        (``checkpoint-<step>`` folders) and whether to continue from the newest one.
    """

    steps: int = option(10_000, "optimisation steps (a resumed run continues up to this number)", low=1)
    batch_size: int = option(16, "training tiles per step", low=1)
    learning_rate: float = option(1e-4, "AdamW learning rate (paper 000: 1e-4)", low=0)
    lr_schedule: str = option("cosine", "learning-rate schedule after the warm-up", choices=("cosine", "constant"))
    lr_warmup_steps: int = option(500, "steps of linear learning-rate warm-up", low=0)
    weight_decay: float = option(1e-2, "AdamW weight decay", low=0, advanced=True)
    l1_weight: float = option(1.0, "lambda of the MSE + lambda * L1 noise loss (paper 000: 1)", low=0)
    condition_dropout: float = option(0.1, "share of tiles trained without their condition (classifier-free "
                                           "guidance; 0 = off, as in paper 000)", low=0, high=1)
    ema_decay: float = option(0.9999, "decay of the weights' moving average used for sampling", low=0, high=1,
                              advanced=True)
    grad_clip: float = option(1.0, "gradient norm clipping", low=0, advanced=True)
    mixed_precision: str = option("auto", "mixed precision (GPU only; auto: bf16/fp16 on CUDA)",
                                  choices=MIXED_PRECISION_CHOICES, advanced=True)
    checkpoint_dir: str | None = option(None, "folder of the periodic checkpoints (none: no checkpoints)",
                                        advanced=True)
    checkpoint_every: int = option(1000, "steps between checkpoints", low=1)
    keep_checkpoints: int = option(2, "checkpoints kept (older ones are deleted)", low=1, advanced=True)
    resume: bool = option(True, "continue from the newest checkpoint in checkpoint_dir", advanced=True)
    seed: int = option(0, "seed of the training run (tile draws, noise, condition dropout)", low=0)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {self.mixed_precision!r}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every and keep_checkpoints must be >= 1")


@dataclass
class DenoiserBatch:
    """One training batch: ``target`` (B, C, H, W) in [-1, 1] to be noised, ``condition`` (B, D) or None,
    ``context`` (B, Cc, H, W) clean channels or None."""

    target: torch.Tensor
    condition: torch.Tensor | None = None
    context: torch.Tensor | None = None



def train_denoiser(
    denoiser: Denoiser,
    next_batch: Callable[[np.random.Generator, int], DenoiserBatch],
    config: DiffusionTrainConfig,
    device: torch.device | str = "cpu",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainResult:
    """Train ``denoiser`` in place for ``config.steps`` steps; on return it holds the EMA weights.

    ``next_batch(rng, batch_size)`` returns a :class:`DenoiserBatch` (on CPU). When ``should_stop()``
    turns true a checkpoint is written (if ``config.checkpoint_dir`` is set), the EMA weights are put
    in ``denoiser`` and :class:`~napari_microsynth.core.progress.Cancelled` is raised, carrying the partial
    :class:`~napari_microsynth.models.trainer.TrainResult` as ``.result``.
    """
    from diffusers.optimization import get_scheduler

    noise_scheduler = training_scheduler(denoiser.config)
    n_timesteps = denoiser.config.num_train_timesteps
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(
        "cosine" if config.lr_schedule == "cosine" else "constant_with_warmup", optimizer,
        num_warmup_steps=min(config.lr_warmup_steps, config.steps), num_training_steps=config.steps,
    )

    def draw(rng: np.random.Generator) -> tuple[int, DenoiserBatch]:
        noise_seed = int(rng.integers(0, 2**63 - 1))
        return noise_seed, next_batch(rng, config.batch_size)

    def step(run: Run, item: tuple[int, DenoiserBatch]) -> dict[str, float]:
        noise_seed, batch = item
        gen = torch.Generator(device=run.device).manual_seed(noise_seed)
        x0 = batch.target.to(run.device)
        noise = torch.randn(x0.shape, generator=gen, device=run.device)
        t = torch.randint(0, n_timesteps, (x0.shape[0],), generator=gen, device=run.device)
        condition = None if batch.condition is None else batch.condition.to(run.device)
        if condition is not None and config.condition_dropout > 0:
            keep = torch.rand(x0.shape[0], generator=gen, device=run.device) >= config.condition_dropout
            condition = condition * keep[:, None].to(condition.dtype)
        context = None if batch.context is None else batch.context.to(run.device)
        pred = run.modules["denoiser"](noise_scheduler.add_noise(x0, noise, t), t, condition=condition,
                                       context=context).float()
        loss = F.mse_loss(pred, noise) + config.l1_weight * F.l1_loss(pred, noise)
        run.update("denoiser", loss, clip=config.grad_clip)
        return {"loss": float(loss.detach())}

    recipe = Recipe({"denoiser": denoiser}, {"denoiser": optimizer}, draw, step,
                    identity={"denoiser": denoiser.config.to_dict()}, schedulers={"lr": lr_scheduler},
                    ema=("denoiser",), ema_decay=config.ema_decay)
    settings = LoopSettings(config.steps, config.seed, device, config.mixed_precision, config.checkpoint_dir,
                            config.checkpoint_every, config.keep_checkpoints, config.resume)
    return train(recipe, settings, progress, should_stop)
