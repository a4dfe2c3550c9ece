"""VQ-VAE over "dual images": a micrograph and its phase mask stacked as channels (paper 002).

Paper 002 (sec. 3.2, 4.1, Fig. 5, Table 4) joins an RGB micrograph and its grey-coded mask into one
4-channel image and trains the Keras VQ-VAE example (van den Oord et al., 2017) on it with a codebook of
K = 10 vectors of dimension D = 64: encoder ``conv 32 (3x3, stride 2) -> conv 64 (3x3, stride 2) -> conv
D (1x1)``, nearest-codebook quantisation, decoder ``transposed conv 64 -> 32 (3x3, stride 2) -> C``.
A 256 px tile becomes a 64 x 64 grid of code indices (the paper's "z-matrices"), on which a PixelCNN
prior is trained (:mod:`.pixelcnn`).

Our micrographs are grey, so a dual image has 1 image channel plus the mask, encoded one of two ways:

- ``mask_encoding="grey"`` (the paper's): one channel, class ``c`` of ``n`` at grey ``c / (n - 1)``;
  decoded masks need paper 002's k-means snap (:func:`~napari_microsynth.core.cleanup.kmeans_snap`).
- ``mask_encoding="onehot"`` (our default): one channel per phase. A grey code orders the phases
  arbitrarily, so a blurred boundary between phase 0 and phase 3 decodes as phases 1 and 2; one channel
  per phase decodes by argmax with no such artefact, and the image channel keeps its own weight in the
  loss (``mask_weight``).

Loss (van den Oord et al., eq. 3, as in the Keras example): reconstruction MSE divided by the training
data's variance + codebook loss ``||sg[z_e] - e||^2`` + ``beta`` * commitment ``||z_e - sg[e]||^2``
(beta = 0.25), with the straight-through gradient estimator. Unused codes are restarted from encoder
outputs during training (``dead_code_restart``; not in the paper: with K = 10 a dead code is a tenth of
the vocabulary lost).

>>> cfg = VQVAEConfig(n_classes=3, hidden_channels=(8, 16), embedding_dim=4, n_embeddings=5)
>>> vq = DualImageVQVAE(cfg)
>>> x = torch.rand(2, cfg.in_channels, 32, 32) * 2 - 1
>>> vq.encode_indices(x).shape
torch.Size([2, 8, 8])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .folder import config_from_dict

MASK_ENCODINGS = ("onehot", "grey")


@dataclass(frozen=True)
class VQVAEConfig:
    """Everything needed to rebuild the VQ-VAE (stored in the model folder's ``config.json``).

    hidden_channels: encoder widths, one stride-2 convolution each (the paper's (32, 64): 4x smaller
    code grid); res_blocks: residual blocks at code resolution in encoder and decoder (0 = the paper's
    plain stack); embedding_dim / n_embeddings: D and K of the codebook (paper: 64, 10).
    """

    n_classes: int
    mask_encoding: str = "onehot"
    hidden_channels: tuple[int, ...] = (32, 64)
    res_blocks: int = 0
    embedding_dim: int = 64
    n_embeddings: int = 10
    beta: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_channels", tuple(self.hidden_channels))
        if self.mask_encoding not in MASK_ENCODINGS:
            raise ValueError(f"mask_encoding must be one of {MASK_ENCODINGS}, got {self.mask_encoding!r}")
        if self.n_classes < 2 or not self.hidden_channels or min(self.hidden_channels) < 1:
            raise ValueError("a VQ-VAE needs n_classes >= 2 and at least one positive hidden width")
        if self.embedding_dim < 1 or self.n_embeddings < 2 or self.res_blocks < 0 or self.beta < 0:
            raise ValueError("embedding_dim >= 1, n_embeddings >= 2, res_blocks >= 0 and beta >= 0 are needed")

    @property
    def in_channels(self) -> int:
        """Channels of a dual image: the micrograph plus the mask's."""
        return 1 + (self.n_classes if self.mask_encoding == "onehot" else 1)

    @property
    def downsampling(self) -> int:
        """Tile pixels per code-grid cell along each axis."""
        return 2 ** len(self.hidden_channels)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hidden_channels": list(self.hidden_channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VQVAEConfig":
        return config_from_dict(cls, data, "VQ-VAE")


def encode_dual(images: torch.Tensor, masks: torch.Tensor, config: VQVAEConfig) -> torch.Tensor:
    """Images ``(B, H, W)`` in [0, 1] and class maps ``(B, H, W)`` as dual images ``(B, C, H, W)`` in [-1, 1]."""
    image = images.float().unsqueeze(1) * 2 - 1
    if config.mask_encoding == "grey":
        mask = masks.float().unsqueeze(1) / (config.n_classes - 1)
    else:
        mask = F.one_hot(masks.long(), config.n_classes).permute(0, 3, 1, 2).float()
    return torch.cat([image, mask * 2 - 1], dim=1)


def split_dual(dual: torch.Tensor, config: VQVAEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded dual images -> images ``(B, H, W)`` in [0, 1] and the mask part in [0, 1]: the grey code
    ``(B, H, W)`` (for k-means) or per-phase scores ``(B, n_classes, H, W)`` (for argmax)."""
    unit = ((dual.clamp(-1, 1) + 1) / 2)
    mask = unit[:, 1] if config.mask_encoding == "grey" else unit[:, 1:]
    return unit[:, 0], mask


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantisation with the straight-through estimator and the VQ-VAE losses."""

    def __init__(self, n_embeddings: int, embedding_dim: int, beta: float):
        super().__init__()
        self.beta = beta
        self.codebook = nn.Embedding(n_embeddings, embedding_dim)
        self.codebook.weight.data.uniform_(-1 / n_embeddings, 1 / n_embeddings)
        #: running share of the cells that chose each code, and the number of training updates of it
        #: (buffers, so a checkpoint resumes the dead-code restarts exactly)
        self.register_buffer("usage", torch.full((n_embeddings,), 1.0 / n_embeddings))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder outputs ``(B, D, h, w)`` -> nearest code index per cell ``(B, h, w)``."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.weight.t()
                     + self.codebook.weight.pow(2).sum(1))
        return distances.argmin(1).view(z.shape[0], *z.shape[2:])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)`` -> code vectors ``(B, D, h, w)``."""
        return self.codebook(indices).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantised ``z`` (gradients pass straight through to the encoder), the VQ loss and the indices."""
        indices = self.indices(z)
        quantised = self.lookup(indices)
        loss = F.mse_loss(quantised, z.detach()) + self.beta * F.mse_loss(z, quantised.detach())
        return z + (quantised - z).detach(), loss, indices


class DualImageVQVAE(nn.Module):
    """Encoder, codebook and decoder of paper 002's VQ-VAE for dual images."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        widths = config.hidden_channels
        layers: list[nn.Module] = []
        channels = config.in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU()]
            channels = width
        layers += [_Residual(channels) for _ in range(config.res_blocks)]
        layers.append(nn.Conv2d(channels, config.embedding_dim, 1))
        self.encoder = nn.Sequential(*layers)
        self.quantizer = VectorQuantizer(config.n_embeddings, config.embedding_dim, config.beta)
        layers, channels = [], config.embedding_dim
        if config.res_blocks:
            layers += [nn.Conv2d(channels, widths[-1], 3, padding=1)]
            layers += [_Residual(widths[-1]) for _ in range(config.res_blocks)] + [nn.ReLU()]
            channels = widths[-1]
        for width in reversed(widths):  # the paper's transposed convolutions 64 -> 32, each 2x up
            layers += [nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1), nn.ReLU()]
            channels = width
        layers.append(nn.Conv2d(channels, config.in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*layers)

    def encode_indices(self, dual: torch.Tensor) -> torch.Tensor:
        """Dual images ``(B, C, H, W)`` -> code grids ``(B, H / s, W / s)`` (``s`` = ``config.downsampling``)."""
        return self.quantizer.indices(self.encoder(dual))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code grids ``(B, h, w)`` -> decoded dual images ``(B, C, h * s, w * s)``."""
        return self.decoder(self.quantizer.lookup(indices))

    def forward(self, dual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, VQ loss and code indices of dual images."""
        quantised, vq_loss, indices = self.quantizer(self.encoder(dual))
        return self.decoder(quantised), vq_loss, indices

    @torch.no_grad()
    def restart_codes(self, dead: torch.Tensor, dual: torch.Tensor, generator: torch.Generator) -> None:
        """Move the codes ``dead`` (indices) onto encoder outputs of random cells of ``dual`` and reset their usage."""
        z = self.encoder(dual)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        picks = torch.randint(len(flat), (len(dead),), generator=generator).to(flat.device)
        self.quantizer.codebook.weight.data[dead] = flat[picks]
        self.quantizer.usage[dead] = 1.0 / self.config.n_embeddings


def reconstruction_loss(
    reconstruction: torch.Tensor, dual: torch.Tensor, variance: float, config: VQVAEConfig, mask_weight: float = 1.0
) -> torch.Tensor:
    """MSE over the dual image divided by the data variance (the Keras example's loss); ``mask_weight``
    scales the mask channels' share against the image channel's (1 = every channel alike)."""
    per_channel = (reconstruction - dual).pow(2).mean(dim=(0, 2, 3))
    weights = torch.ones_like(per_channel)
    weights[1:] = mask_weight
    return (per_channel * weights).sum() / weights.sum() / variance
