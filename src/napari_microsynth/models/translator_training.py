"""Training of the mask-to-micrograph translator (a conditional GAN): its losses, through the one trainer.

Losses (per step, on a batch of real (image, mask) tiles):

- discriminator: hinge loss (Lim & Ye 2017; as in SPADE) on real pairs and on generated images for the
  same masks, at every scale of the multi-scale critic;
- generator: hinge adversarial loss + ``feature_matching_weight`` x L1 between the critic's intermediate
  features of real and generated pairs (pix2pixHD) + ``lowpass_weight`` x L1 between the real and
  generated image after ``lowpass_factor`` x average pooling. The low-pass term pins each phase's
  brightness to the real micrograph without asking for its exact texture (which is not determined by
  the mask); a plain pixel L1 (pix2pix) would average the texture away.

Adam with the two-time-scale rule (critic lr 4x the generator's, betas (0, 0.999), as SPADE), an EMA of the
generator weights for sampling. The loop (checkpoints with exact resume, sharded batches, progress, cancel)
is the one trainer's (:mod:`.trainer`); randomness derives from ``(seed, step, process)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from .trainer import LoopSettings, Recipe, Run, TrainResult, train
from .translator import MaskTranslator, MultiScaleCritic


@dataclass
class TranslatorTrainConfig:
    """Settings of the translator's GAN training (defaults: SPADE's optimiser settings, our loss weights)."""

    steps: int = 4000
    batch_size: int = 16
    generator_lr: float = 1e-4
    critic_lr: float = 4e-4
    feature_matching_weight: float = 10.0
    lowpass_weight: float = 10.0
    lowpass_factor: int = 4
    ema_decay: float = 0.999
    checkpoint_dir: str | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lowpass_factor < 1:
            raise ValueError("steps, batch_size and lowpass_factor must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every and keep_checkpoints must be >= 1")


def _hinge_critic(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    return sum(F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean() for r, f in zip(real, fake))


def _feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    pairs = [(r, f) for rs, fs in zip(real, fake) for r, f in zip(rs[:-1], fs[:-1])]
    return sum(F.l1_loss(f, r.detach()) for r, f in pairs) / len(pairs)


def train_translator(
    generator: MaskTranslator,
    critic: MultiScaleCritic,
    next_batch: Callable[[np.random.Generator, int], tuple[torch.Tensor, torch.Tensor]],
    config: TranslatorTrainConfig,
    device: torch.device | str = "cpu",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainResult:
    """Train ``generator`` against ``critic`` in place; on return ``generator`` holds the EMA weights.

    ``next_batch(rng, batch_size)`` returns real images ``(B, 1, H, W)`` in [-1, 1] and their one-hot masks
    ``(B, n_classes, H, W)``. ``losses`` in the result are the generator's total loss per step (the
    history also holds the critic's). When ``should_stop()`` turns true a checkpoint is written (with
    ``checkpoint_dir``), the EMA weights are put in ``generator`` and
    :class:`~napari_microsynth.core.progress.Cancelled` is raised carrying the partial result as ``.result``.
    """
    optimizers = {
        "generator": torch.optim.Adam(generator.parameters(), lr=config.generator_lr, betas=(0.0, 0.999)),
        "critic": torch.optim.Adam(critic.parameters(), lr=config.critic_lr, betas=(0.0, 0.999)),
    }

    def draw(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
        images, masks = next_batch(rng, config.batch_size)
        return images, masks, int(rng.integers(0, 2**63 - 1))

    def step(run: Run, item: tuple[torch.Tensor, torch.Tensor, int]) -> dict[str, float]:
        images, masks, noise_seed = item
        images, masks = images.to(run.device), masks.to(run.device)
        gen = torch.Generator().manual_seed(noise_seed)
        noise = [torch.randn(images.shape[0], *shape, generator=gen).to(run.device)
                 for shape in run.unwrap("generator").noise_shapes(*images.shape[-2:])]
        return _gan_step(run, images, masks, noise, config)

    recipe = Recipe({"generator": generator, "critic": critic}, optimizers, draw, step,
                    identity={"translator": generator.config.to_dict()}, ema=("generator",),
                    ema_decay=config.ema_decay)
    settings = LoopSettings(config.steps, config.seed, device, "auto", config.checkpoint_dir,
                            config.checkpoint_every, config.keep_checkpoints, config.resume)
    return train(recipe, settings, progress, should_stop)


def _gan_step(run: Run, images: torch.Tensor, masks: torch.Tensor, noise: list[torch.Tensor],
              config: TranslatorTrainConfig) -> dict[str, float]:
    """One critic update and one generator update; the logged loss is the generator's."""
    generator, critic = run.modules["generator"], run.modules["critic"]
    fake = generator(masks, noise)
    loss_d = _hinge_critic(critic(images, masks), critic(fake.detach(), masks))
    run.update("critic", loss_d)

    with torch.no_grad():
        real_features = critic(images, masks)
    fake_features = critic(fake, masks)
    adversarial = -sum(f[-1].mean() for f in fake_features)
    f = config.lowpass_factor
    lowpass = F.l1_loss(F.avg_pool2d(fake, f), F.avg_pool2d(images, f))
    loss_g = adversarial + config.feature_matching_weight * _feature_matching(real_features, fake_features) \
        + config.lowpass_weight * lowpass
    run.update("generator", loss_g)
    return {"loss": float(loss_g.detach()), "critic_loss": float(loss_d.detach())}
