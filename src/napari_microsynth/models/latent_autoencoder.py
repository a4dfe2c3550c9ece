"""A KL-regularised convolutional autoencoder to a latent grid, for latent diffusion (paper 004, sec. 3.1).

TiM3 (paper 004) runs its diffusion in the latent space of a Latent Diffusion Model autoencoder
(Rombach et al. 2022): ``z0 = E(x)`` with spatial downsampling ``f`` (8 in the paper, 256 px tiles to
32 x 32 x 4 latents) and ``x = D(z0)``. The paper uses LDM's pretrained KL-f8 autoencoder; no weights can be
downloaded here, so this one is trained from scratch on the user's micrographs, in two kinds:

- ``kind="image"``: one grey channel in [-1, 1], reconstructed with an L1 loss (LDM's pixel loss; its
  perceptual and adversarial terms are left out at this scale);
- ``kind="mask"``: the phase map, one channel per class (one-hot), reconstructed as class logits with a
  cross-entropy loss, so ``argmax`` gives back a class map. This is TiM3's "metallographic image" (paper 004,
  sec. 3.3: a segmentation rendered as a pseudo-RGB image); one channel per class keeps phase identity exact.

Both are LDM's KL-autoencoder at a small size: ``len(block_channels) - 1`` stride-2 stages (so
``f = 2 ** (len(block_channels) - 1)``), ``res_blocks`` ResNet blocks per stage, a diagonal Gaussian
posterior over ``latent_channels`` channels and a KL term of tiny weight (LDM: 1e-6 on per-image sums)
that keeps the latent space smooth. After training, the per-channel mean and standard deviation of the
latents of a bank of training tiles are stored (:meth:`LatentAutoencoder.set_latent_statistics`), and
:meth:`encode` / :meth:`decode` work with standardised latents (LDM's ``scale_factor``, per channel and with a
shift), which is what the latent denoisers see.

>>> cfg = LatentAutoencoderConfig(kind="mask", n_classes=4, block_channels=(8, 16), norm_groups=4)
>>> ae = LatentAutoencoder(cfg)
>>> ae.config.downsampling, ae.encode(torch.zeros(2, 4, 32, 32)).shape
(2, torch.Size([2, 4, 16, 16]))
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.metrics import confusion_matrix, mean_iou, phase_boundary_f1, pixel_accuracy
from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from .folder import config_from_dict
from .trainer import LoopSettings, Recipe, Run, TrainResult, train

KINDS = ("image", "mask")


@dataclass(frozen=True)
class LatentAutoencoderConfig:
    """Everything needed to rebuild a :class:`LatentAutoencoder` (stored in the model folder's config).

    kind: "image" (1 grey channel) or "mask" (``n_classes`` one-hot channels, class logits out).
    block_channels: widths of the stages; ``f = 2 ** (len(block_channels) - 1)``.
    latent_channels: channels of the latent grid (paper 004 / LDM: 4).
    res_blocks: ResNet blocks per stage (the decoder has one more, as LDM's).
    norm_groups: GroupNorm groups (every width must be divisible by it).
    """

    kind: str
    n_classes: int = 0
    block_channels: tuple[int, ...] = (32, 64, 128, 128)
    latent_channels: int = 4
    res_blocks: int = 1
    norm_groups: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_channels", tuple(int(c) for c in self.block_channels))
        if self.kind not in KINDS:
            raise ValueError(f"autoencoder kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "mask" and self.n_classes < 2:
            raise ValueError(f"a mask autoencoder needs at least 2 classes, got {self.n_classes}")
        if len(self.block_channels) < 1 or self.latent_channels < 1 or self.res_blocks < 0:
            raise ValueError("an autoencoder needs at least one stage, one latent channel and res_blocks >= 0")
        bad = [c for c in self.block_channels if c % self.norm_groups]
        if bad:
            raise ValueError(f"stage widths {bad} are not divisible by norm_groups={self.norm_groups}")

    @property
    def downsampling(self) -> int:
        """The spatial factor ``f`` from a tile to its latent grid."""
        return 2 ** (len(self.block_channels) - 1)

    @property
    def channels(self) -> int:
        """Channels of the data it encodes: 1 for an image, one per class for a mask."""
        return 1 if self.kind == "image" else self.n_classes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["block_channels"] = list(self.block_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatentAutoencoderConfig":
        return config_from_dict(cls, data, "latent autoencoder")


class _ResBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LatentAutoencoder(nn.Module):
    """Encoder to a diagonal Gaussian over a latent grid, decoder back (see the module docstring)."""

    def __init__(self, config: LatentAutoencoderConfig):
        super().__init__()
        self.config = config
        widths, g, r = config.block_channels, config.norm_groups, config.res_blocks
        down: list[nn.Module] = [nn.Conv2d(config.channels, widths[0], 3, padding=1)]
        for i, width in enumerate(widths):
            down += [_ResBlock(width, g) for _ in range(r)]
            if i + 1 < len(widths):
                down.append(nn.Conv2d(width, widths[i + 1], 3, stride=2, padding=1))
        down += [nn.GroupNorm(g, widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], 2 * config.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*down)
        up: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1)]
        for i in range(len(widths) - 1, -1, -1):
            up += [_ResBlock(widths[i], g) for _ in range(r + 1)]
            if i > 0:
                up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[i], widths[i - 1], 3, padding=1)]
        up += [nn.GroupNorm(g, widths[0]), nn.SiLU(), nn.Conv2d(widths[0], config.channels, 3, padding=1)]
        self.decoder = nn.Sequential(*up)
        # standardisation of the latents the denoisers see (set after training; identity before)
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))

    # ------------------------------------------------------------ raw posterior / decoder

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(B, latent_channels, H / f, W / f)`` of the posterior of ``x``."""
        f = self.config.downsampling
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"tile sides {tuple(x.shape[-2:])} must be multiples of the downsampling {f}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output for raw (unstandardised) latents: image values or class logits."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Reconstruction of ``x`` from a posterior sample, with the posterior's mean and log-variance."""
        mean, logvar = self.posterior(x)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.decode_raw(mean + torch.exp(0.5 * logvar) * noise), mean, logvar

    # ------------------------------------------------------------ standardised latents

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised latents (posterior mean) of ``x``: ``(B, latent_channels, H / f, W / f)``."""
        mean, _ = self.posterior(x)
        return (mean - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output for standardised latents."""
        return self.decode_raw(z * self.latent_std[:, None, None] + self.latent_mean[:, None, None])

    @torch.no_grad()
    def set_latent_statistics(self, batches: list[torch.Tensor]) -> None:
        """Per-channel mean and std of the posterior means of ``batches`` (data tensors), used to standardise."""
        means = torch.cat([self.posterior(b.to(self.latent_mean.device))[0] for b in batches])
        self.latent_mean.copy_(means.mean(dim=(0, 2, 3)))
        self.latent_std.copy_(means.std(dim=(0, 2, 3)).clamp_min(1e-6))


# ---------------------------------------------------------------- data encoding


def image_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Grey images ``(B, H, W)`` in [0, 1] as ``(B, 1, H, W)`` in [-1, 1]."""
    images = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    return images.float().unsqueeze(1) * 2.0 - 1.0


def image_output(x: torch.Tensor) -> np.ndarray:
    """Decoded ``(B, 1, H, W)`` back to grey ``(B, H, W)`` float32 in [0, 1]."""
    return ((x[:, 0].float().clamp(-1.0, 1.0) + 1.0) / 2.0).cpu().numpy().astype(np.float32)


def mask_input(masks: np.ndarray | torch.Tensor, n_classes: int, ignore_id: int | None = None) -> torch.Tensor:
    """Class maps ``(B, H, W)`` as one-hot ``(B, n_classes, H, W)`` in {0, 1} (ignored pixels: all zero)."""
    masks = torch.as_tensor(np.ascontiguousarray(masks) if isinstance(masks, np.ndarray) else masks).long()
    labelled = (masks >= 0) & (masks < n_classes)
    bad = ~labelled if ignore_id is None else ~labelled & (masks != ignore_id)
    if bool(bad.any()):
        raise ValueError(f"mask values {sorted(int(v) for v in torch.unique(masks[bad]))} are not class ids "
                         f"0..{n_classes - 1}")
    one_hot = torch.zeros(masks.shape[0], n_classes, *masks.shape[1:])
    one_hot.scatter_(1, torch.where(labelled, masks, 0).unsqueeze(1), labelled.unsqueeze(1).float())
    return one_hot


def autoencoder_input(config: LatentAutoencoderConfig, images: np.ndarray, masks: np.ndarray,
                      ignore_id: int | None = None) -> torch.Tensor:
    """The tiles an autoencoder of ``config.kind`` encodes, from image and mask tiles."""
    return image_input(images) if config.kind == "image" else mask_input(masks, config.n_classes, ignore_id)


def reconstruction_loss(config: LatentAutoencoderConfig, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 for an image, cross-entropy over the classes for a one-hot mask (ignored pixels left out)."""
    if config.kind == "image":
        return F.l1_loss(output, target)
    labelled = target.sum(dim=1) > 0
    ce = F.cross_entropy(output, target.argmax(dim=1), reduction="none")
    return (ce * labelled).sum() / labelled.sum().clamp_min(1)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL of the diagonal Gaussian posterior from N(0, I), summed over the latent and averaged over the batch."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1).mean()


# ---------------------------------------------------------------- training


@dataclass
class AutoencoderTraining:
    """How one autoencoder is trained (the family's options fill it)."""

    steps: int
    batch_size: int
    learning_rate: float = 1e-3
    kl_weight: float = 1e-6


def train_autoencoder(
    autoencoder: LatentAutoencoder,
    next_batch: Callable[[np.random.Generator, int], torch.Tensor],
    training: AutoencoderTraining,
    settings: LoopSettings,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainResult:
    """Train ``autoencoder`` in place through the one trainer: reconstruction loss of a posterior sample
    plus ``kl_weight`` x KL, where the KL (a per-image sum, as in LDM) is divided by the number of data
    values per image so that it weighs against the per-value reconstruction loss as LDM's sums do.
    AdamW with a cosine learning-rate decay. ``next_batch(rng, batch_size)`` gives data tensors on the CPU.
    """
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=training.learning_rate, weight_decay=0.0)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=min(50, training.steps // 10),
                             num_training_steps=training.steps)
    config = autoencoder.config

    def draw(rng: np.random.Generator) -> tuple[int, torch.Tensor]:
        return int(rng.integers(0, 2**63 - 1)), next_batch(rng, training.batch_size)

    def step(run: Run, item: tuple[int, torch.Tensor]) -> dict[str, float]:
        seed, x = item
        x = x.to(run.device)
        generator = torch.Generator(device=run.device).manual_seed(seed)
        output, mean, logvar = run.modules["autoencoder"](x, generator)
        rec = reconstruction_loss(config, output, x)
        kl = kl_divergence(mean, logvar)
        loss = rec + training.kl_weight * kl / math.prod(x.shape[1:])
        run.update("autoencoder", loss, clip=1.0)
        return {"loss": float(loss.detach()), "reconstruction": float(rec.detach()), "kl": float(kl.detach())}

    recipe = Recipe({"autoencoder": autoencoder}, {"autoencoder": optimizer}, draw, step,
                    identity={"autoencoder": config.to_dict()}, schedulers={"lr": schedule})
    return train(recipe, settings, progress, should_stop)


# ---------------------------------------------------------------- measuring reconstruction


@torch.no_grad()
def reconstruction_scores(autoencoder: LatentAutoencoder, images: np.ndarray, masks: np.ndarray,
                          ignore_id: int | None = None, batch_size: int = 16) -> dict[str, float]:
    """How well ``autoencoder`` reconstructs held-out tiles through its latent (posterior mean).

    Image: ``mse`` (on [0, 1] grey values) and ``psnr`` (dB, peak 1). Mask: ``pixel_accuracy``, ``miou``
    (mean over the classes present in the tiles or the reconstructions) of the argmax class map and
    ``boundary_f1``: F1 of the phase-boundary pixels, a boundary pixel counting as found within 1 px, mean over
    the tiles (:func:`~napari_microsynth.core.metrics.phase_boundary_f1`).
    """
    config = autoencoder.config
    device = autoencoder.latent_mean.device
    decoded = []
    for start in range(0, len(images), batch_size):
        x = autoencoder_input(config, images[start:start + batch_size], masks[start:start + batch_size], ignore_id)
        decoded.append(autoencoder.decode(autoencoder.encode(x.to(device))).cpu())
    out = torch.cat(decoded)
    if config.kind == "image":
        mse = float(((torch.from_numpy(image_output(out)) - torch.from_numpy(images)) ** 2).mean())
        return {"mse": mse, "psnr": float(10 * np.log10(1.0 / max(mse, 1e-12)))}
    predicted = out.argmax(dim=1).numpy()
    cm = confusion_matrix(masks, predicted, config.n_classes, ignore_id)
    return {"pixel_accuracy": pixel_accuracy(cm), "miou": mean_iou(cm),
            "boundary_f1": float(np.mean([phase_boundary_f1(t, g, ignore_id, tolerance=1)
                                          for t, g in zip(masks, predicted)]))}
