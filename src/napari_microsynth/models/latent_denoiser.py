"""Latent denoiser of TiM3 (paper 004, sec. 3.1-3.3): a U-Net over autoencoder latents with vanilla
cross-attention on the property embedding, its training through the one trainer, and DDIM sampling.

- Stage 1 (and the one-stage ablation): ``cross_attention_dim = D`` and every U-Net level has cross-attention
  blocks that attend to the property encoder's tokens (paper 004, Fig. 2: "injected into the diffusion model
  via vanilla cross-attention"); the property encoder is trained together with the U-Net by the noise loss
  (eq. 2).
- Stage 2: ``cross_attention_dim = 0`` and ``context_channels`` > 0: the encoded phase map is concatenated
  to the noisy latent at every step (eq. 7, ``z'_t = z_t (+) zeta``).

Noise schedule and sampler are LDM's: 1000 training timesteps, ``scaled_linear`` betas from 0.00085 to 0.012,
epsilon prediction, MSE on the noise; DDIM (eta 0) with 20 steps by default (paper 004, sec. 4.1 and
appendix G). Latents are standardised (see :mod:`.latent_autoencoder`), so the predicted clean latent is not
clipped (unlike the pixel-space diffusion of :mod:`.diffusion`).

>>> cfg = LatentDenoiserConfig(latent_channels=4, latent_size=8, block_out_channels=(16, 32), cross_attention_dim=8,
...                            norm_num_groups=8, attention_heads=2)
>>> net = LatentDenoiser(cfg)
>>> net(torch.zeros(2, 4, 8, 8), torch.tensor([5, 5]), tokens=torch.zeros(2, 1, 8)).shape
torch.Size([2, 4, 8, 8])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from .folder import config_from_dict
from .trainer import LoopSettings, Recipe, Run, TrainResult, train

DEFAULT_DDIM_STEPS = 20  # paper 004, sec. 4.1


@dataclass(frozen=True)
class LatentDenoiserConfig:
    """Everything needed to rebuild a :class:`LatentDenoiser`.

    latent_channels: channels diffused; latent_size: side of the latent grid.
    context_channels: clean channels concatenated to the input (stage 2: the encoded phase map).
    cross_attention_dim: width of the condition tokens (0 = no cross-attention).
    plain_levels: how many of the highest-resolution levels go without (cross-)attention blocks (attention over
        every latent cell of a large grid is what costs most on a CPU; LDM also leaves its first level plain);
        the deeper levels and the middle block attend to the tokens.
    """

    latent_channels: int
    latent_size: int
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    context_channels: int = 0
    cross_attention_dim: int = 0
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_heads: int = 4
    plain_levels: int = 0
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        levels = len(self.block_out_channels)
        if levels < 2:
            raise ValueError(f"a latent denoiser needs at least 2 stages, got {self.block_out_channels}")
        if self.latent_size % 2 ** (levels - 1):
            raise ValueError(f"latent size {self.latent_size} must be divisible by {2 ** (levels - 1)}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"stage widths {bad} are not divisible by norm_num_groups={self.norm_num_groups}")
        if self.latent_channels < 1 or self.context_channels < 0 or self.cross_attention_dim < 0:
            raise ValueError("latent_channels must be >= 1 and context_channels, cross_attention_dim >= 0")
        if not 0 <= self.plain_levels < levels:
            raise ValueError(f"plain_levels must leave at least one of the {levels} levels with attention")

    @property
    def conditioned(self) -> bool:
        return self.cross_attention_dim > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["block_out_channels"] = list(self.block_out_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatentDenoiserConfig":
        return config_from_dict(cls, data, "latent denoiser")


class LatentDenoiser(nn.Module):
    """Noise prediction for latents ``(B, latent_channels, s, s)`` given tokens and/or context channels."""

    def __init__(self, config: LatentDenoiserConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config
        levels = len(config.block_out_channels)
        if config.conditioned:
            plain, attended = config.plain_levels, levels - config.plain_levels
            down = ("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * attended
            up = ("CrossAttnUpBlock2D",) * attended + ("UpBlock2D",) * plain
            mid = "UNetMidBlock2DCrossAttn"
            extra: dict[str, Any] = {"cross_attention_dim": config.cross_attention_dim}
        else:
            down, up, mid = ("DownBlock2D",) * levels, ("UpBlock2D",) * levels, "UNetMidBlock2D"
            extra = {}
        self.unet = UNet2DConditionModel(
            sample_size=config.latent_size,
            in_channels=config.latent_channels + config.context_channels,
            out_channels=config.latent_channels,
            down_block_types=down, up_block_types=up, mid_block_type=mid,
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            attention_head_dim=config.attention_heads,  # diffusers reads it as the number of heads here
            **extra,
        )

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, tokens: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if cfg.context_channels:
            if context is None or context.shape[1] != cfg.context_channels:
                raise ValueError(f"this denoiser needs {cfg.context_channels} context channels")
            latents = torch.cat([latents, context.to(latents.dtype)], dim=1)
        if cfg.conditioned:
            if tokens is None or tokens.shape[-1] != cfg.cross_attention_dim:
                raise ValueError(f"this denoiser needs condition tokens of width {cfg.cross_attention_dim}")
            return self.unet(latents, timestep, encoder_hidden_states=tokens.to(latents.dtype)).sample
        return self.unet(latents, timestep, encoder_hidden_states=None).sample


def build_latent_denoiser(config: LatentDenoiserConfig, seed: int = 0) -> LatentDenoiser:
    """A freshly initialised denoiser; the same seed gives the same weights (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LatentDenoiser(config)


def _schedule_args(config: LatentDenoiserConfig) -> dict[str, Any]:
    return dict(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                beta_start=config.beta_start, beta_end=config.beta_end, prediction_type="epsilon")


# ---------------------------------------------------------------- training


@dataclass
class LatentBatch:
    """One training batch on the CPU: clean standardised ``latents``, optional ``context`` channels and
    coded ``conditions`` ``(B, input_dim)`` (already jittered)."""

    latents: torch.Tensor
    context: torch.Tensor | None = None
    conditions: torch.Tensor | None = None


@dataclass
class LatentTraining:
    """How one latent denoiser is trained (the family's options fill it)."""

    steps: int
    batch_size: int
    learning_rate: float = 2e-4
    lr_warmup_steps: int = 100
    weight_decay: float = 1e-2
    ema_decay: float = 0.999
    grad_clip: float = 1.0


def train_latent_denoiser(
    denoiser: LatentDenoiser,
    encoder: nn.Module | None,
    next_batch: Callable[[np.random.Generator, int], LatentBatch],
    training: LatentTraining,
    settings: LoopSettings,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainResult:
    """Train ``denoiser`` (and the property ``encoder`` with it, when given) in place with LDM's loss,
    ``|| eps - eps_theta(z_t, t, T(y)) ||^2`` (paper 004, eq. 2); AdamW, cosine learning rate after a warm-up,
    moving averages of both networks (put into them when training ends)."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    config = denoiser.config
    if config.conditioned != (encoder is not None):
        raise ValueError("a cross-attention denoiser trains with a property encoder, a plain one without")
    modules: dict[str, nn.Module] = {"denoiser": denoiser}
    if encoder is not None:
        modules["property_encoder"] = encoder
    parameters = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=training.learning_rate, weight_decay=training.weight_decay)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=min(training.lr_warmup_steps, training.steps),
                             num_training_steps=training.steps)
    noising = DDPMScheduler(**_schedule_args(config))

    def draw(rng: np.random.Generator) -> tuple[int, LatentBatch]:
        return int(rng.integers(0, 2**63 - 1)), next_batch(rng, training.batch_size)

    def step(run: Run, item: tuple[int, LatentBatch]) -> dict[str, float]:
        seed, batch = item
        gen = torch.Generator(device=run.device).manual_seed(seed)
        z0 = batch.latents.to(run.device)
        noise = torch.randn(z0.shape, generator=gen, device=run.device)
        t = torch.randint(0, config.num_train_timesteps, (len(z0),), generator=gen, device=run.device)
        tokens = None
        if encoder is not None:
            tokens = run.modules["property_encoder"](batch.conditions.to(run.device), generator=gen)
        context = None if batch.context is None else batch.context.to(run.device)
        predicted = run.modules["denoiser"](noising.add_noise(z0, noise, t), t, tokens=tokens, context=context)
        loss = F.mse_loss(predicted.float(), noise)
        run.update("denoiser", loss, clip=training.grad_clip)
        return {"loss": float(loss.detach())}

    identity = {name: m.config.to_dict() for name, m in modules.items()}  # type: ignore[union-attr]
    # one optimiser over both networks; it is checkpointed under the denoiser's name
    recipe = Recipe(modules, {"denoiser": optimizer}, draw, step, identity=identity, schedulers={"lr": schedule},
                    ema=tuple(modules), ema_decay=training.ema_decay)
    return train(recipe, settings, progress, should_stop)


# ---------------------------------------------------------------- sampling


@torch.no_grad()
def ddim_sample(
    denoiser: LatentDenoiser,
    noise: torch.Tensor,
    tokens: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    steps: int = DEFAULT_DDIM_STEPS,
    eta: float = 0.0,
    generators: list[torch.Generator] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``noise`` into clean standardised latents with DDIM (``eta`` 0: deterministic; ``eta`` > 0
    draws the step noise from ``generators``, one per sample). ``on_step(done, total)`` after every step
    may raise to abort."""
    from diffusers import DDIMScheduler

    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing",
                              **_schedule_args(denoiser.config))
    scheduler.set_timesteps(int(steps))
    z = noise
    total = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        batch_t = torch.full((len(z),), int(t), device=z.device, dtype=torch.long)
        eps = denoiser(z, batch_t, tokens=tokens, context=context)
        variance_noise = None
        if eta > 0:
            variance_noise = torch.stack([torch.randn(z.shape[1:], generator=g) for g in generators]).to(z)
        z = scheduler.step(eps, t, z, eta=eta, variance_noise=variance_noise).prev_sample
        if on_step is not None:
            on_step(i + 1, total)
    return z
