"""Training loop of the mask-to-micrograph translator (a conditional GAN), with checkpoints and exact resume.

Losses (per step, on a batch of real (image, mask) tiles):

- discriminator: hinge loss (Lim & Ye 2017; as in SPADE) on real pairs and on generated images for the
  same masks, at every scale of the multi-scale critic;
- generator: hinge adversarial loss + ``feature_matching_weight`` x L1 between the critic's intermediate
  features of real and generated pairs (pix2pixHD) + ``lowpass_weight`` x L1 between the real and
  generated image after ``lowpass_factor`` x average pooling. The low-pass term pins each phase's
  brightness to the real micrograph without asking for its exact texture (which is not determined by
  the mask); a plain pixel L1 (pix2pix) would average the texture away.

Adam with the two-time-scale rule (critic lr 4x the generator's, betas (0, 0.999), as SPADE), an EMA of the
generator weights for sampling. Checkpoints are written like the denoisers' (:mod:`.checkpoint`: safetensors
weights, optimiser states read with ``torch.load(weights_only=True)``, a JSON trainer state written last), so
opening one never executes code. Randomness
is derived from ``(seed, step)``, so a resumed run draws the same batches and noise as an uninterrupted one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from .checkpoint import read_checkpoint_files, write_checkpoint_files
from .diffusion_training import TrainResult, commit_checkpoint, latest_checkpoint, resume_point
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


class _Run:
    """The modules, optimisers and EMA of one training run, with checkpoint save/load."""

    def __init__(self, generator: MaskTranslator, critic: MultiScaleCritic, config: TranslatorTrainConfig,
                 device: torch.device):
        self.generator, self.critic = generator.to(device).train(), critic.to(device).train()
        self.ema = copy.deepcopy(generator).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=config.generator_lr, betas=(0.0, 0.999))
        self.opt_d = torch.optim.Adam(critic.parameters(), lr=config.critic_lr, betas=(0.0, 0.999))
        self.config = config

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))
        for e, p in zip(self.ema.parameters(), self.generator.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.ema.buffers(), self.generator.buffers()):
            e.copy_(b)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "critic": self.critic, "generator_ema": self.ema}

    def save(self, folder: Path, step: int, losses: list[float]) -> None:
        path = folder / f"checkpoint-{step}"
        write_checkpoint_files(path, {name: m.state_dict() for name, m in self.modules().items()},
                               {"generator": self.opt_g.state_dict(), "critic": self.opt_d.state_dict()})
        state = {"step": step, "losses": losses, "translator": self.generator.config.to_dict()}
        commit_checkpoint(path, state, self.config.keep_checkpoints)

    def load(self, path: Path, device: torch.device) -> tuple[int, list[float]]:
        step, losses = resume_point(path, "translator", self.generator.config.to_dict())
        weights, optimizers = read_checkpoint_files(path, self.modules(), device)
        for name, module in self.modules().items():
            module.load_state_dict(weights[name])
        self.opt_g.load_state_dict(optimizers["generator"])
        self.opt_d.load_state_dict(optimizers["critic"])
        return step, losses


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
    ``(B, n_classes, H, W)``. ``losses`` in the result are the generator's total loss per step. When
    ``should_stop()`` turns true a checkpoint is written (with ``checkpoint_dir``), the EMA weights are put
    in ``generator`` and :class:`Cancelled` is raised carrying the partial result as ``.result``.
    """
    device = torch.device(device)
    run = _Run(generator, critic, config, device)
    step, losses, resumed_from = 0, [], None
    folder = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    if folder is not None and config.resume and (last := latest_checkpoint(folder)) is not None:
        step, losses = run.load(last, device)
        resumed_from = step

    def finish() -> None:
        generator.load_state_dict(run.ema.state_dict())
        generator.eval()
        critic.eval()

    progress(step, config.steps, f"resumed at step {step}" if resumed_from is not None else "training")
    while step < config.steps:
        if should_stop():
            if folder is not None:
                run.save(folder, step, losses)
            finish()
            stopped = Cancelled(f"training stopped at step {step} of {config.steps}")
            stopped.result = TrainResult(step, losses, resumed_from)  # type: ignore[attr-defined]
            raise stopped
        rng = np.random.default_rng([config.seed, step])
        images, masks = (t.to(device) for t in next_batch(rng, config.batch_size))
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        noise = [torch.randn(images.shape[0], *shape, generator=gen).to(device)
                 for shape in generator.noise_shapes(*images.shape[-2:])]
        losses.append(_step(run, images, masks, noise))
        run.update_ema(step)
        step += 1
        progress(step, config.steps, f"step {step}/{config.steps}  generator loss {losses[-1]:.3f}")
        if folder is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            run.save(folder, step, losses)
    finish()
    return TrainResult(steps=step, losses=losses, resumed_from=resumed_from)


def _step(run: _Run, images: torch.Tensor, masks: torch.Tensor, noise: list[torch.Tensor]) -> float:
    """One critic update and one generator update; returns the generator's loss."""
    cfg = run.config
    fake = run.generator(masks, noise)
    loss_d = _hinge_critic(run.critic(images, masks), run.critic(fake.detach(), masks))
    run.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    run.opt_d.step()

    with torch.no_grad():
        real_features = run.critic(images, masks)
    fake_features = run.critic(fake, masks)
    adversarial = -sum(f[-1].mean() for f in fake_features)
    f = cfg.lowpass_factor
    lowpass = F.l1_loss(F.avg_pool2d(fake, f), F.avg_pool2d(images, f))
    loss_g = adversarial + cfg.feature_matching_weight * _feature_matching(real_features, fake_features) \
        + cfg.lowpass_weight * lowpass
    run.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    run.opt_g.step()
    return float(loss_g.detach())
