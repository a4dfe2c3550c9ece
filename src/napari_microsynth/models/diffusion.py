"""Denoising U-Net, image/mask encoding and the reverse-diffusion loop shared by the diffusion generators.

One :class:`Denoiser` serves every diffusion generator of the project:

- PF-DiffSeg (paper 000): diffuses ``[image, mask]`` jointly, conditioned on a phase-fraction vector;
- a mask-only diffusion (``target_channels = n_classes``, optionally fraction-conditioned);
- a mask-conditioned image diffusion or a 2x super-resolution model (``context_channels`` holds the
  clean channels that are concatenated to the noisy input and never noised).

The global condition vector enters the network twice, as in paper 000, sec. 2.2.1: a linear projection
to the time-embedding width that is added to the time embedding (so every ResNet block at every scale
sees it), and a few tokens attended to by cross-attention at the deepest level only (down block,
middle block and up block at the lowest resolution). The all-zero vector is the "null" condition used
for classifier-free guidance; no real fraction vector equals it since fractions sum to 1.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .folder import config_from_dict

SAMPLERS = ("ddim", "dpm++")
DEFAULT_SAMPLING_STEPS = {"ddim": 50, "dpm++": 20}  # ddim: paper 000, sec. 2.2.1 (T = 50)


@dataclass(frozen=True)
class DenoiserConfig:
    """Everything needed to rebuild a :class:`Denoiser` (stored in the model folder's ``config.json``).

    target_channels: channels that are diffused (PF-DiffSeg: 1 image + one per class).
    context_channels: clean channels concatenated to the noisy input (mask for an image stage, low-res pair
        for super-resolution); 0 for none.
    condition_dim: length of the global condition vector (number of classes); 0 = unconditional.
    resolution: square tile size in pixels; must be divisible by ``2 ** (len(block_out_channels) - 1)``.
    block_out_channels / layers_per_block: U-Net widths per stage and ResNet blocks per stage.
    attention_heads / cross_attention_dim / condition_tokens: deepest-level attention and the number and
        width of the tokens the condition vector is mapped to.
    class_embed_type: diffusers' ``"simple_projection"`` (one linear layer, as paper 000 describes) or
        ``"projection"`` (two-layer MLP).
    num_train_timesteps / beta_schedule: the noise schedule (``"squaredcos_cap_v2"`` = cosine schedule).
    """

    target_channels: int
    resolution: int
    block_out_channels: tuple[int, ...]
    context_channels: int = 0
    condition_dim: int = 0
    layers_per_block: int = 2
    norm_num_groups: int = 32
    attention_heads: int = 8
    cross_attention_dim: int = 256
    condition_tokens: int = 4
    class_embed_type: str = "simple_projection"
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        levels = len(self.block_out_channels)
        if levels < 2:
            raise ValueError(f"a denoiser needs at least 2 stages, got block_out_channels={self.block_out_channels}")
        if self.resolution % 2 ** (levels - 1):
            raise ValueError(
                f"resolution {self.resolution} must be divisible by {2 ** (levels - 1)} "
                f"(2 ** (stages - 1) for {levels} stages)"
            )
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"stage widths {bad} are not divisible by norm_num_groups={self.norm_num_groups}")
        if self.class_embed_type not in ("simple_projection", "projection"):
            raise ValueError(
                f"class_embed_type must be 'simple_projection' or 'projection', got {self.class_embed_type!r}"
            )
        if self.target_channels < 1 or self.context_channels < 0 or self.condition_dim < 0:
            raise ValueError("target_channels must be >= 1 and context_channels, condition_dim >= 0")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["block_out_channels"] = list(self.block_out_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DenoiserConfig":
        return config_from_dict(cls, data, "denoiser")


class Denoiser(nn.Module):
    """Predicts the noise of ``sample`` at ``timestep`` given an optional condition vector and context.

    >>> cfg = DenoiserConfig(target_channels=5, resolution=32, block_out_channels=(16, 32),
    ...                      condition_dim=4, norm_num_groups=8, attention_heads=2, cross_attention_dim=16,
    ...                      layers_per_block=1)
    >>> net = Denoiser(cfg)
    >>> net(torch.zeros(1, 5, 32, 32), torch.tensor([10]), condition=torch.ones(1, 4) / 4).shape
    torch.Size([1, 5, 32, 32])
    """

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config
        levels = len(config.block_out_channels)
        conditioned = config.condition_dim > 0
        deepest_down = "CrossAttnDownBlock2D" if conditioned else "DownBlock2D"
        deepest_up = "CrossAttnUpBlock2D" if conditioned else "UpBlock2D"
        extra: dict[str, Any] = {}
        if conditioned:
            extra = dict(
                class_embed_type=config.class_embed_type,
                projection_class_embeddings_input_dim=config.condition_dim,
                cross_attention_dim=config.cross_attention_dim,
            )
        self.unet = UNet2DConditionModel(
            sample_size=config.resolution,
            in_channels=config.target_channels + config.context_channels,
            out_channels=config.target_channels,
            down_block_types=("DownBlock2D",) * (levels - 1) + (deepest_down,),
            up_block_types=(deepest_up,) + ("UpBlock2D",) * (levels - 1),
            # middle block at the deepest level: self + cross attention when conditioned, self attention otherwise
            mid_block_type="UNetMidBlock2DCrossAttn" if conditioned else "UNetMidBlock2D",
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            # diffusers reads ``attention_head_dim`` as the number of heads in this class (see its docstring)
            attention_head_dim=config.attention_heads,
            **extra,
        )
        self.condition_tokens = (
            nn.Linear(config.condition_dim, config.condition_tokens * config.cross_attention_dim)
            if conditioned
            else None
        )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        condition: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cfg = self.config
        if cfg.context_channels:
            if context is None or context.shape[1] != cfg.context_channels:
                raise ValueError(f"this denoiser needs a context tensor with {cfg.context_channels} channels")
            sample = torch.cat([sample, context.to(sample.dtype)], dim=1)
        elif context is not None:
            raise ValueError("this denoiser takes no context channels")
        if cfg.condition_dim == 0:
            if condition is not None:
                raise ValueError("this denoiser is unconditional; pass condition=None")
            return self.unet(sample, timestep, encoder_hidden_states=None).sample
        if condition is None or condition.shape != (sample.shape[0], cfg.condition_dim):
            raise ValueError(f"condition must have shape (batch, {cfg.condition_dim})")
        condition = condition.to(sample.dtype)
        tokens = self.condition_tokens(condition).view(
            sample.shape[0], cfg.condition_tokens, cfg.cross_attention_dim
        )
        return self.unet(sample, timestep, encoder_hidden_states=tokens, class_labels=condition).sample


def build_denoiser(config: DenoiserConfig, seed: int = 0) -> Denoiser:
    """A freshly initialised denoiser; the same seed gives the same weights without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Denoiser(config)


# ---------------------------------------------------------------- encoding


def encode_image(image: torch.Tensor) -> torch.Tensor:
    """Grey images in [0, 1], shape ``(B, H, W)``, to ``(B, 1, H, W)`` in [-1, 1] (paper 000, sec. 2.2.1)."""
    return (image.float() * 2.0 - 1.0).unsqueeze(1)


def decode_image(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` in [-1, 1] back to ``(B, H, W)`` in [0, 1] (values outside are clipped)."""
    return ((x[:, 0].float().clamp(-1.0, 1.0) + 1.0) / 2.0)


def encode_mask(mask: torch.Tensor, n_classes: int, ignore_id: int | None = None) -> torch.Tensor:
    """Class maps ``(B, H, W)`` to one channel per class: +1 where the pixel has that class, -1 elsewhere.

    Pixels holding ``ignore_id`` get -1 in every channel ("no class"). :func:`decode_mask` (argmax) gives
    back every labelled pixel exactly.
    """
    mask = mask.long()
    labelled = (mask >= 0) & (mask < n_classes)
    invalid = ~labelled if ignore_id is None else ~labelled & (mask != ignore_id)
    if invalid.any():
        values = sorted(int(v) for v in torch.unique(mask[invalid]))
        raise ValueError(f"mask values {values} are not class ids 0..{n_classes - 1} (ignore id {ignore_id})")
    one_hot = torch.zeros(mask.shape[0], n_classes, *mask.shape[1:], device=mask.device)
    one_hot.scatter_(1, torch.where(labelled, mask, 0).unsqueeze(1), labelled.unsqueeze(1).float())
    return one_hot * 2.0 - 1.0


def decode_mask(x: torch.Tensor) -> torch.Tensor:
    """One-channel-per-class tensor ``(B, C, H, W)`` to class maps ``(B, H, W)`` (argmax over channels)."""
    return x.argmax(dim=1)


# ---------------------------------------------------------------- schedules and sampling


def training_scheduler(config: DenoiserConfig):
    """The forward (noising) process used in training: DDPM with the model's noise schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type="epsilon",
    )


def sampling_scheduler(config: DenoiserConfig, sampler: str, steps: int):
    """DDIM (deterministic, eta = 0; paper 000 uses 50 steps) or DPM-Solver++ (2nd order, ~20 steps)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = dict(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type="epsilon",
        # start from the last training timestep (pure noise) whatever the step count
        timestep_spacing="trailing",
    )
    if sampler == "ddim":
        scheduler = DDIMScheduler(clip_sample=True, **common)
    elif sampler == "dpm++":
        # dynamic thresholding of the predicted clean sample (Saharia et al. 2022), the DPM-Solver++
        # counterpart of DDIM's clipping for pixel-space models: without it the first steps from pure
        # noise under the cosine schedule overshoot and the result stays noisy
        scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, thresholding=True,
                                                sample_max_value=1.0, **common)
    else:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    scheduler.set_timesteps(steps)
    return scheduler


def seeded_noise(seeds: Sequence[int], shape: tuple[int, ...], stream: int = 0) -> torch.Tensor:
    """Standard normal noise ``(len(seeds), *shape)`` on the CPU, one tensor per seed.

    Each sample's noise depends only on its seed (not on how samples are batched). ``stream`` separates
    independent draws for the same seed (e.g. the mask and the image stage of a two-stage model);
    stream 0 is ``torch.Generator().manual_seed(seed)``.
    """
    out = []
    for seed in seeds:
        if stream == 0:
            key = int(seed)
        else:
            key = int(np.random.SeedSequence([int(seed) & (2**64 - 1), int(stream)]).generate_state(1, np.uint64)[0])
        out.append(torch.randn(*shape, generator=torch.Generator().manual_seed(key)))
    return torch.stack(out)


@torch.no_grad()
def reverse_diffusion(
    denoiser: Denoiser,
    noise: torch.Tensor,
    condition: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance_scale: float = 1.0,
    on_step: Callable[[int, int], None] | None = None,
    control: FractionControl | None = None,
) -> torch.Tensor:
    """Denoise ``noise`` (``(B, target_channels, H, W)``) into clean samples in [-1, 1].

    ``guidance_scale`` > 1 applies classifier-free guidance against the null (all-zero) condition;
    1 uses the conditional prediction only. ``control`` steers the mask channels of every step's
    predicted clean sample towards target phase fractions (see :class:`FractionControl`).
    ``on_step(done, total)`` is called after every step and may raise (e.g.
    :class:`~napari_microsynth.core.progress.Cancelled`) to abort.
    """
    steps = DEFAULT_SAMPLING_STEPS.get(sampler, 0) if steps is None else int(steps)
    scheduler = sampling_scheduler(denoiser.config, sampler, steps)
    guided = condition is not None and guidance_scale != 1.0
    x = noise
    total = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(x, t)
        if guided:
            both = denoiser(
                torch.cat([model_in, model_in]),
                t,
                condition=torch.cat([condition, torch.zeros_like(condition)]),
                context=None if context is None else torch.cat([context, context]),
            )
            eps_cond, eps_null = both.chunk(2)
            eps = eps_null + guidance_scale * (eps_cond - eps_null)
        else:
            eps = denoiser(model_in, t, condition=condition, context=context)
        if control is not None:
            eps = control.corrected_noise(x, eps, float(scheduler.alphas_cumprod[int(t)]))
        x = scheduler.step(eps, t, x).prev_sample
        if on_step is not None:
            on_step(i + 1, total)
    return x.clamp(-1.0, 1.0)


# ---------------------------------------------------------------- fraction control


def fraction_bias(logits: torch.Tensor, targets: torch.Tensor, iterations: int = 40) -> torch.Tensor:
    """Per-sample, per-class logit bias ``b`` with ``mean over pixels of softmax(logits + b) = targets``.

    ``logits`` ``(B, C, H, W)``, ``targets`` ``(B, C)`` summing to 1. This is the minimum-KL change of the
    pixel posteriors that meets the target marginals (the prior adjustment of Saerens et al. 2002 with the
    new priors set to the target). Solved by a few fixed-point steps ``b += log(target / mean)`` (robust
    far from the solution), then Newton steps on the marginal constraint (fast where the posteriors are
    nearly hard, as at high temperature); every step is halved until it lowers the sample's error, so the
    error never grows. Targets of 0 are treated as 1e-4 (a finite bias cannot remove a phase).

    >>> logits = torch.zeros(1, 2, 4, 4)
    >>> b = fraction_bias(logits, torch.tensor([[0.75, 0.25]]))
    >>> torch.softmax(logits + b[:, :, None, None], 1).mean((2, 3)).round(decimals=3)
    tensor([[0.7500, 0.2500]])
    """
    target = targets.clamp_min(1e-4)
    target = target / target.sum(dim=1, keepdim=True)
    eye = torch.eye(target.shape[1], dtype=target.dtype, device=target.device)

    def posteriors(bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = torch.softmax(logits + bias[:, :, None, None], dim=1).flatten(2)  # (B, C, N)
        mean = p.mean(dim=2)
        return p, mean, (target - mean).abs().sum(dim=1)

    bias = torch.zeros_like(target)
    p, mean, error = posteriors(bias)
    for i in range(iterations):
        if float(error.max()) < 1e-5:
            break
        if i < 5:
            step = torch.log(target) - torch.log(mean.clamp_min(1e-12))
        else:
            jacobian = torch.diag_embed(mean) - p @ p.transpose(1, 2) / p.shape[2]
            step = torch.linalg.solve(jacobian + 1e-6 * eye, (target - mean).unsqueeze(-1)).squeeze(-1)
            step = step.clamp(-10.0, 10.0)
        scale = torch.ones_like(error)
        for _ in range(10):  # backtracking: halve the step of every sample whose error would grow
            candidate = bias + scale[:, None] * step
            p_new, mean_new, error_new = posteriors(candidate)
            worse = error_new > error
            if not bool(worse.any()):
                break
            scale = torch.where(worse, scale / 2, scale)
        keep = (error_new > error)[:, None]
        bias = torch.where(keep, bias, candidate)
        p, mean, error = posteriors(bias)
    return bias - bias.mean(dim=1, keepdim=True)


@dataclass(frozen=True)
class FractionControl:
    """Sampling-time fraction control (our addition to paper 000; 0 strength = the paper's sampling).

    At every denoising step the predicted clean sample's mask channels ``x0[:, first:]`` (one channel per
    class in [-1, 1]) are read as logits ``temperature * x0``; a per-class bias is solved so that the mean
    softmax over the tile equals the target fractions (:func:`fraction_bias`), and ``strength`` times that
    bias (divided by the temperature) is added to the mask channels. The noise prediction is then
    rewritten to match the shifted clean sample, so DDIM and DPM-Solver++ continue from it unchanged.
    The image channels are left alone: they follow the mask through the network at the next step.
    No extra network evaluations are made.

    targets: ``(B, C)`` target fractions; first_mask_channel: index of the first class channel.
    """

    targets: torch.Tensor
    first_mask_channel: int = 0
    strength: float = 1.0
    temperature: float = 4.0

    def corrected_noise(self, x: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """The noise prediction whose implied clean sample has its mask channels moved to the targets."""
        a, s = alpha_bar ** 0.5, (1.0 - alpha_bar) ** 0.5
        x0 = (x - s * eps) / a
        first = self.first_mask_channel
        mask = x0[:, first:].clamp(-1.0, 1.0)
        bias = fraction_bias(self.temperature * mask.float(), self.targets.to(mask.device).float())
        shifted = x0.clone()
        shifted[:, first:] = x0[:, first:] + (self.strength / self.temperature) * bias[:, :, None, None].to(x0.dtype)
        return (x - a * shifted) / s


SNAP_TEMPERATURE = 50.0  # logits temperature * [-1, 1]: softmax close to argmax, so soft fractions ~ hard ones


def snap_to_fractions(mask_logits: torch.Tensor, targets: torch.Tensor, strength: float = 1.0,
                      exact: bool = False) -> torch.Tensor:
    """Class maps from ``(B, C, H, W)`` mask channels in [-1, 1] with their class thresholds shifted so that
    the hard fractions meet ``targets`` (``strength`` 0 = argmax of the smoothed channels, 1 = full shift).
    The shift matches the soft fractions; ``exact`` refines it, at strength 1, until the hard (argmax)
    fractions meet the targets too (:func:`~napari_microsynth.core.ratio_correction.refine_hard_bias`),
    which matters for flat channels whose pixels would all flip together.

    The channels are smoothed first (Gaussian, sigma 1 px): diffusion outputs saturate at +-1 inside
    regions, and smoothing makes pixels near region boundaries the least certain ones, so a threshold
    shift grows or shrinks regions at their boundaries instead of flipping arbitrary pixels.

    >>> x = torch.linspace(-1, 1, 256).reshape(1, 1, 16, 16); logits = torch.cat([x, -x], 1)
    >>> round(snap_to_fractions(logits, torch.tensor([[0.25, 0.75]])).float().mean().item(), 2)
    0.75
    """
    logits = SNAP_TEMPERATURE * _smooth(mask_logits.float())
    bias = strength * fraction_bias(logits, targets.float(), iterations=100)
    if exact and strength == 1.0:
        from ..core.ratio_correction import refine_hard_bias

        flat = logits.flatten(2).double().cpu().numpy()
        bias = torch.stack([torch.from_numpy(refine_hard_bias(z, t, b)) for z, t, b in
                            zip(flat, targets.double().cpu().numpy(), bias.double().cpu().numpy())]).to(logits)
    return (logits + bias[:, :, None, None]).argmax(dim=1)


def _smooth(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur of every channel, reflecting at the borders."""
    radius = int(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    taps = (taps / taps.sum()).to(x.device)
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
