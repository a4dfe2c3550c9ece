"""Mask-to-micrograph translator: a SPADE generator with noise injection and a multi-scale PatchGAN critic.

The image stage of the ``two-stage-gan`` generator. Given a phase mask (one channel per class), the
generator paints a grey micrograph whose phases have the texture of the real ones; a discriminator that
sees (image, mask) pairs teaches it what texture belongs to which phase and where boundaries run.

- Generator: SPADE (Park et al., CVPR 2019, "Semantic image synthesis with spatially-adaptive
  normalization"): from a noise grid at 1/2**levels of the tile size, residual blocks whose normalised
  activations are scaled and shifted per pixel by maps computed from the mask, upsampled 2x per level.
  Per-pixel noise with a learned per-channel scale is added before each block (StyleGAN-style noise
  injection), so texture details vary between samples of the same mask.
- Discriminator: pix2pix's conditional PatchGAN (Isola et al., CVPR 2017) with spectral normalisation,
  at ``disc_scales`` image scales (pix2pixHD), returning its intermediate features for the
  feature-matching loss.

Both are fully convolutional: a translator trained on 64 px tiles can paint any size divisible by
``2 ** levels``.

>>> cfg = TranslatorConfig(n_classes=4, base_channels=8, levels=2, noise_channels=4, disc_channels=8)
>>> g = MaskTranslator(cfg)
>>> mask = torch.zeros(2, 4, 32, 32); mask[:, 0] = 1
>>> g(mask, g.draw_noise([0, 1], 32, 32)).shape
torch.Size([2, 1, 32, 32])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .folder import config_from_dict


@dataclass(frozen=True)
class TranslatorConfig:
    """Everything needed to rebuild the translator (stored in the model folder's ``config.json``).

    n_classes: mask channels. base_channels: generator width at full resolution, doubled per level down
    (capped at ``max_channels``). levels: 2x upsamplings from the noise grid. noise_channels: channels of
    the input noise grid. spade_hidden: width of the mask-to-modulation network. disc_channels / disc_scales:
    discriminator width and the number of image scales it judges.
    """

    n_classes: int
    base_channels: int = 32
    levels: int = 3
    max_channels: int = 256
    noise_channels: int = 32
    spade_hidden: int = 32
    disc_channels: int = 32
    disc_scales: int = 2

    def __post_init__(self) -> None:
        if self.n_classes < 2 or self.levels < 1 or self.disc_scales < 1:
            raise ValueError("a translator needs n_classes >= 2, levels >= 1 and disc_scales >= 1")
        if min(self.base_channels, self.noise_channels, self.spade_hidden, self.disc_channels) < 1:
            raise ValueError("translator widths must be >= 1")

    def widths(self) -> list[int]:
        """Generator width at each level, from full resolution (0) to the noise grid (``levels``)."""
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(self.levels + 1)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TranslatorConfig":
        return config_from_dict(cls, data, "translator")


def _conv3(fin: int, fout: int) -> nn.Conv2d:
    """3x3 convolution with reflection padding: zero padding lets a GAN generator tell the border from the
    centre, and it painted texture only in the middle of the tile."""
    return nn.Conv2d(fin, fout, 3, padding=1, padding_mode="reflect")


class SPADE(nn.Module):
    """Parameter-free instance normalisation, then per-pixel scale and shift computed from the mask."""

    def __init__(self, channels: int, n_classes: int, hidden: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(_conv3(n_classes, hidden), nn.ReLU())
        self.gamma = _conv3(hidden, channels)
        self.beta = _conv3(hidden, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # area resampling keeps the share of every class in a coarse cell (small particles do not vanish)
        mask = F.adaptive_avg_pool2d(mask, x.shape[-2:]) if mask.shape[-1] > x.shape[-1] else mask
        h = self.shared(mask)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEBlock(nn.Module):
    """SPADE residual block with per-pixel noise injection at its input."""

    def __init__(self, fin: int, fout: int, n_classes: int, hidden: int):
        super().__init__()
        middle = min(fin, fout)
        self.noise_scale = nn.Parameter(torch.zeros(1, fin, 1, 1))
        self.norm0, self.conv0 = SPADE(fin, n_classes, hidden), _conv3(fin, middle)
        self.norm1, self.conv1 = SPADE(middle, n_classes, hidden), _conv3(middle, fout)
        self.shortcut = None
        if fin != fout:
            self.norm_s, self.shortcut = SPADE(fin, n_classes, hidden), nn.Conv2d(fin, fout, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = x + self.noise_scale * noise
        skip = x if self.shortcut is None else self.shortcut(self.norm_s(x, mask))
        h = self.conv0(F.leaky_relu(self.norm0(x, mask), 0.2))
        h = self.conv1(F.leaky_relu(self.norm1(h, mask), 0.2))
        return skip + h


class MaskTranslator(nn.Module):
    """SPADE generator: mask ``(B, n_classes, H, W)`` (one-hot in [0, 1]) + noise -> image ``(B, 1, H, W)`` in [-1, 1]."""

    def __init__(self, config: TranslatorConfig):
        super().__init__()
        self.config = config
        widths = config.widths()
        self.head = _conv3(config.noise_channels, widths[-1])
        # one block per level from the noise grid up, the last at full resolution
        self.blocks = nn.ModuleList(
            SPADEBlock(widths[i], widths[max(i - 1, 0)], config.n_classes, config.spade_hidden)
            for i in range(config.levels, -1, -1)
        )
        self.tail = _conv3(widths[0], 1)

    def noise_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """Shapes (per sample) of the input noise grid and of the noise added before each block."""
        f = 2 ** self.config.levels
        if height % f or width % f:
            raise ValueError(f"translator tiles must have sides divisible by {f}, got {height} x {width}")
        shapes = [(self.config.noise_channels, height // f, width // f)]
        for block, level in zip(self.blocks, range(self.config.levels, -1, -1)):
            shapes.append((1, height // 2**level, width // 2**level))
        return shapes

    def draw_noise(self, seeds: Sequence[int], height: int, width: int, stream: int = 0) -> list[torch.Tensor]:
        """All noise for a batch, each sample's from its own seed (so it does not depend on the batching)."""
        out: list[list[torch.Tensor]] = [[] for _ in self.noise_shapes(height, width)]
        for seed in seeds:
            key = np.random.SeedSequence([int(seed) & (2**64 - 1), 7919, int(stream)]).generate_state(1, np.uint64)[0]
            gen = torch.Generator().manual_seed(int(key))
            for k, shape in enumerate(self.noise_shapes(height, width)):
                out[k].append(torch.randn(*shape, generator=gen))
        return [torch.stack(parts) for parts in out]

    def forward(self, mask: torch.Tensor, noise: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.head(noise[0])
        for k, block in enumerate(self.blocks):
            if k > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, mask, noise[k + 1])
        return torch.tanh(self.tail(F.leaky_relu(x, 0.2)))


class PatchCritic(nn.Module):
    """Conditional PatchGAN on (image, mask) at one scale; returns its features, the last being the scores."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        sn = nn.utils.spectral_norm
        widths = [width, width * 2, width * 4]
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            conv = nn.Conv2d(c, w, 4, stride=2 if i < 2 else 1, padding=1, padding_mode="reflect")
            layers.append(nn.Sequential(sn(conv), nn.LeakyReLU(0.2)))
            c = w
        layers.append(sn(nn.Conv2d(c, 1, 4, padding=1, padding_mode="reflect")))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiScaleCritic(nn.Module):
    """pix2pixHD's discriminator: one PatchGAN per image scale (full, 1/2, ...)."""

    def __init__(self, config: TranslatorConfig):
        super().__init__()
        self.critics = nn.ModuleList(
            PatchCritic(1 + config.n_classes, config.disc_channels) for _ in range(config.disc_scales)
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> list[list[torch.Tensor]]:
        x = torch.cat([image, mask], dim=1)
        out = []
        for k, critic in enumerate(self.critics):
            if k > 0:
                x = F.avg_pool2d(x, 2)
            out.append(critic(x))
        return out


def build_translator(config: TranslatorConfig, seed: int = 0) -> tuple[MaskTranslator, MultiScaleCritic]:
    """A freshly initialised generator and discriminator; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MaskTranslator(config), MultiScaleCritic(config)


def one_hot_mask(masks: torch.Tensor, n_classes: int, ignore_id: int | None = None) -> torch.Tensor:
    """Class maps ``(B, H, W)`` as ``(B, n_classes, H, W)`` in {0, 1} (``ignore_id`` pixels all zero)."""
    masks = masks.long()
    labelled = (masks >= 0) & (masks < n_classes)
    if ignore_id is None and not bool(labelled.all()):
        raise ValueError(f"mask values outside class ids 0..{n_classes - 1}")
    out = torch.zeros(masks.shape[0], n_classes, *masks.shape[1:], device=masks.device)
    out.scatter_(1, torch.where(labelled, masks, 0).unsqueeze(1), labelled.unsqueeze(1).float())
    return out
