"""Phase Learning Module (PLM): expert phase ratios as an input to a segmentation network (paper 001).

The PLM sits on the image features of a segmentation network and produces the segmentation output
itself (paper 001, sec. 2.2: the output of the FA's final convolution is the segmentation prediction).
Here it takes the decoder output of an smp model, i.e. the image encoding of an encoder-decoder
network, in place of smp's segmentation head. Its parts, all from paper 001 sec. 2.2 and Fig. 4:

- Feature Extractor (FE): one convolution that concentrates the image features into ``n`` channels, one
  per phase.
- Spatial Awareness (SA): a coordinate convolution (CoordConv, Liu et al. 2018) on each phase channel,
  so the network can tie a phase ratio to where that phase is.
- Ratio Encoder (RE): a 2-layer MLP from the ratio vector ``(n,)`` to an ``n``-channel encoding, fused
  with the phase-wise features by element-wise multiplication.
- Feature Aggregator (FA): concatenates the spatially aware and the ratio-encoded features, a
  convolution + sigmoid gives two gates, each gate multiplies one of the two feature maps, the two
  products are summed and a final convolution gives the segmentation output. Two learnable regulators
  weigh the sum: ``gamma`` the image (spatially aware) branch and ``delta`` the ratio branch, both
  initialised to 0.5 (paper 001, sec. 2.2 and appendix A.4: a higher gamma lowers the influence of the
  ratio, a higher delta raises it).

With no ratio the paper feeds a zero vector (appendix A.2, Fig. 10); ``ratio=None`` does the same.

Choices the paper leaves open, made here: FE and SA use 3x3 kernels; the FA gate convolution and the
final convolution are 1x1 (per-pixel linear layers), so everything that depends on the ratio is per
pixel, which keeps an interactive ratio slider cheap. The RE hidden width is 128.

Width. The text describes modules working on ``n`` channels, one per phase (``width=None``, the default
and the bundled models' setting). The paper's Table 6 counts for its SAM variant, 0.0335 M parameters
for RE and 1.179 M for FA, instead fit modules working at the 256-channel embedding width: an MLP
3 -> 128 -> 256 (33 536 parameters) and a 3x3 convolution from 512 to 256 channels (1.18 M). ``width=E``
builds that variant: FE concentrates the image features into ``E`` channels, SA, RE and FA work on
``E`` channels and the final layer maps them to the ``n`` phase logits (with ``E = 256`` the RE matches
Table 6 exactly; the FA gate stays 1x1, so it has ``4 E^2`` parameters, not the 3x3 count). The
ratio-dependent part then costs ``O(E^2)`` per pixel instead of ``O(n^2)``.

With a module switched off, for the paper's ablation (Tables 2 and 3): without SA the phase features go
on unchanged; without RE there is no ratio input and FA gates the spatially aware features with
themselves; without FA the ratio-encoded features are added to the spatially aware ones. The final 1x1 convolution is kept in every setting.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

#: The settings of the paper's ablation (paper 001, Tables 2 and 3); "baseline" means no PLM at all.
ABLATIONS: dict[str, tuple[bool, bool, bool] | None] = {
    "baseline": None,
    "RE": (True, False, False),
    "SA": (False, True, False),
    "SA+FA": (False, True, True),
    "RE+SA": (True, True, False),
    "RE+SA+FA": (True, True, True),
}


@dataclass(frozen=True)
class PLMFlags:
    """Which PLM modules are on (ratio encoder, spatial awareness, feature aggregator)."""

    ratio_encoder: bool = True
    spatial_awareness: bool = True
    feature_aggregator: bool = True

    @classmethod
    def from_name(cls, name: str) -> "PLMFlags | None":
        """Flags for an ablation name such as ``"RE+SA+FA"``; None for ``"baseline"``."""
        key = {k.lower(): k for k in ABLATIONS}.get(str(name).replace(" ", "").lower())
        if key is None:
            raise ValueError(f"unknown PLM setting {name!r}; choose one of {', '.join(ABLATIONS)}")
        flags = ABLATIONS[key]
        return None if flags is None else cls(*flags)

    @property
    def name(self) -> str:
        """The ablation name (``"RE+SA"``, ...); modules in the paper's order RE, SA, FA."""
        parts = [tag for tag, on in (("RE", self.ratio_encoder), ("SA", self.spatial_awareness),
                                     ("FA", self.feature_aggregator)) if on]
        return "+".join(parts) if parts else "none"

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)


def coordinate_maps(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``(1, 2, H, W)`` row and column coordinates in [-1, 1] (the CoordConv channels)."""
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([yy, xx])[None]


class RatioEncoder(nn.Module):
    """2-layer MLP: phase ratio ``(B, n)`` -> ratio encoding ``(B, width)``, one value per feature channel
    (paper 001, sec. 2.2, Fig. 4b; ``width`` defaults to ``n``, one per phase)."""

    def __init__(self, n_phases: int, hidden: int = 128, width: int | None = None):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_phases, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width or n_phases))

    def forward(self, ratio: torch.Tensor) -> torch.Tensor:
        return self.mlp(ratio)


class SpatialAwareness(nn.Module):
    """Coordinate convolution on each phase channel separately (paper 001, sec. 2.2).

    Phase channel ``i`` is stacked with the row/column coordinate maps and convolved to one channel; a
    grouped convolution does this for all phases at once.
    """

    def __init__(self, n_phases: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3 * n_phases, n_phases, kernel_size, padding=kernel_size // 2, groups=n_phases)

    def forward(self, phases: torch.Tensor) -> torch.Tensor:
        b, n, h, w = phases.shape
        coords = coordinate_maps(h, w, phases).expand(b, 2, h, w)
        stacked = torch.cat([torch.cat([phases[:, i : i + 1], coords], dim=1) for i in range(n)], dim=1)
        return self.conv(stacked)


def _per_pixel(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A linear layer over the channels of every pixel (a 1x1 convolution) for ``x`` of shape ``(B, C, P)``."""
    return torch.matmul(linear.weight, x) + linear.bias[:, None]


class FeatureAggregator(nn.Module):
    """Gated fusion of the spatially aware features ``S`` with the ratio-encoded ones ``E = S * e``
    (paper 001, sec. 2.2, Fig. 4c), weighted by the regulators gamma (image branch) and delta (ratio
    branch), both initialised to 0.5 (appendix A.4).

    In the paper's order: ``[g_s, g_e] = sigmoid(gate([S, E]))`` (a 1x1 convolution on the concatenation,
    split in two) and ``out = gamma * g_s * S + delta * g_e * E``. Because the ratio encoding ``e`` is the
    same at every pixel, ``gate([S, S * e]) = (W_s + W_e diag(e)) S + b``: the forward pass folds ``e`` into
    the gate weights instead of building ``E`` and the concatenation, which gives the same numbers with
    a third of the memory traffic (this is what keeps an interactive ratio change fast).
    """

    def __init__(self, n_phases: int):
        super().__init__()
        self.gate = nn.Linear(2 * n_phases, 2 * n_phases)
        self.gamma = nn.Parameter(torch.tensor(0.5))
        self.delta = nn.Parameter(torch.tensor(0.5))

    def forward(self, spatial: torch.Tensor, encoding: torch.Tensor | None) -> torch.Tensor:
        """``spatial`` ``(B, n, P)`` pixels, ``encoding`` ``(B, n)`` (None: no ratio branch, so ``E = S``)."""
        b, n = spatial.shape[:2]
        if encoding is None:
            encoding = torch.ones(b, n, device=spatial.device, dtype=spatial.dtype)
        w_image, w_ratio = self.gate.weight[:, :n], self.gate.weight[:, n:]
        folded = w_image + w_ratio * encoding[:, None, :]  # (B, 2n, n)
        gates = torch.sigmoid(torch.matmul(folded, spatial) + self.gate.bias[:, None])
        weight = torch.addcmul(self.gamma * gates[:, :n], (self.delta * encoding)[:, :, None], gates[:, n:])
        return spatial * weight


class PhaseLearningModule(nn.Module):
    """The PLM head: image features ``(B, C, h, w)`` + phase ratio ``(B, n)`` -> logits ``(B, n, h, w)``.

    The modules work on :attr:`width` channels: ``n`` (one per phase, the paper's text) unless ``width``
    is given (the paper's Table 6 sizes, see the module docstring).

    Split into :meth:`phase_features` (depends on the image only: FE and SA, 3x3 convolutions) and
    :meth:`fuse` (everything that depends on the ratio, per pixel), so an interactive caller can compute
    the first once per image and rerun only the second when the ratio changes.

    >>> plm = PhaseLearningModule(in_channels=16, n_phases=3)
    >>> plm(torch.zeros(2, 16, 32, 32), torch.tensor([[0.7, 0.2, 0.1]] * 2)).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(self, in_channels: int, n_phases: int, flags: PLMFlags | None = None, ratio_hidden: int = 128,
                 width: int | None = None):
        super().__init__()
        if n_phases < 1 or in_channels < 1:
            raise ValueError(f"PLM needs at least one phase and one input channel, got {n_phases}, {in_channels}")
        if width is not None and width < 1:
            raise ValueError(f"PLM width must be a positive channel count (or None: one per phase), got {width}")
        self.flags = flags or PLMFlags()
        self.n_phases = n_phases
        self.width = int(width or n_phases)
        self.feature_extractor = nn.Conv2d(in_channels, self.width, kernel_size=3, padding=1)
        self.spatial_awareness = SpatialAwareness(self.width) if self.flags.spatial_awareness else None
        self.ratio_encoder = RatioEncoder(n_phases, ratio_hidden, self.width) if self.flags.ratio_encoder else None
        self.aggregator = FeatureAggregator(self.width) if self.flags.feature_aggregator else None
        self.output = nn.Linear(self.width, n_phases)

    @property
    def uses_ratio(self) -> bool:
        return self.ratio_encoder is not None

    def phase_features(self, features: torch.Tensor) -> torch.Tensor:
        """The ratio-independent part: FE, then SA -> ``(B, width, h, w)``."""
        phases = self.feature_extractor(features)
        return self.spatial_awareness(phases) if self.spatial_awareness is not None else phases

    def check_ratio(self, ratio, batch: int, like: torch.Tensor) -> torch.Tensor:
        """``ratio`` as a ``(batch, n)`` tensor; None becomes zeros (the paper's "no ratio" input)."""
        if ratio is None:
            return torch.zeros(batch, self.n_phases, device=like.device, dtype=like.dtype)
        ratio = torch.as_tensor(ratio, device=like.device, dtype=like.dtype)
        if ratio.ndim == 1:
            ratio = ratio[None].expand(batch, -1)
        if ratio.shape != (batch, self.n_phases):
            raise ValueError(
                f"phase ratio must have shape ({self.n_phases},) or ({batch}, {self.n_phases}), got {tuple(ratio.shape)}"
            )
        return ratio

    def fuse(self, spatial: torch.Tensor, ratio=None) -> torch.Tensor:
        """The ratio-dependent part on phase features ``(B, width, *pixels)`` (any pixel layout): RE, fusion,
        FA and the output layer -> logits ``(B, n, *pixels)``. Works on a whole micrograph at once."""
        if self.ratio_encoder is None and ratio is not None:
            raise ValueError(f"this PLM ({self.flags.name}) has no ratio encoder and takes no phase ratio")
        shape = spatial.shape
        pixels = spatial.flatten(2)
        encoding = None
        if self.ratio_encoder is not None:
            encoding = self.ratio_encoder(self.check_ratio(ratio, shape[0], spatial))
        if self.aggregator is not None:
            fused = self.aggregator(pixels, encoding)
        elif encoding is not None:
            fused = pixels + pixels * encoding[:, :, None]
        else:
            fused = pixels
        return _per_pixel(self.output, fused).reshape(shape[0], self.n_phases, *shape[2:])

    def forward(self, features: torch.Tensor, ratio=None) -> torch.Tensor:
        return self.fuse(self.phase_features(features), ratio)
