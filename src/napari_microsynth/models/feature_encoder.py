"""The small CNN feature encoders of the domain feature extractor (modules only).

Training: :mod:`.feature_training`; the extractor that holds a trained pair and its model folder:
:mod:`.feature_extractors`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.schema import PhaseSchema
from .folder import config_from_dict

INPUTS = ("image", "mask")


@dataclass(frozen=True)
class FeatureEncoderConfig:
    """A small CNN: ``widths`` conv stages (each halves the size after the first; batch norm, SiLU), the
    mean and standard deviation of every stage's maps (texture statistics at every scale, so fine texture
    counts as well as coarse morphology), a linear layer to ``feature_dim`` features, and heads for phase fractions and source
    micrograph. Batch norm (not group norm, which would normalise away each tile's own contrast) keeps the
    features of one tile independent of the others once in eval mode.

    input: "image" (1 grey channel in [-1, 1]) or "mask" (one 0/1 channel per class).
    """

    input: str
    n_classes: int
    n_sources: int
    widths: tuple[int, ...] = (16, 32, 64, 128)
    feature_dim: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if self.n_classes < 2 or self.n_sources < 0 or self.feature_dim < 1 or not self.widths:
            raise ValueError("need n_classes >= 2, n_sources >= 0, feature_dim >= 1 and at least one stage")

    @property
    def in_channels(self) -> int:
        return 1 if self.input == "image" else self.n_classes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureEncoderConfig":
        return config_from_dict(cls, data, "feature encoder")


class FeatureEncoder(nn.Module):
    """``features(x)`` ``(B, feature_dim)``; ``forward(x)`` also returns fraction and source logits."""

    def __init__(self, config: FeatureEncoderConfig):
        super().__init__()
        self.config = config
        stages: list[nn.Module] = []
        channels = config.in_channels
        for i, width in enumerate(config.widths):
            stages.append(nn.Sequential(
                nn.Conv2d(channels, width, 3, stride=1 if i == 0 else 2, padding=1),
                nn.BatchNorm2d(width),
                nn.SiLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.SiLU(),
            ))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.project = nn.Linear(2 * sum(config.widths), config.feature_dim)
        self.fraction_head = nn.Linear(config.feature_dim, config.n_classes)
        self.source_head = nn.Linear(config.feature_dim, config.n_sources) if config.n_sources > 1 else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
        return self.project(torch.cat(pooled, dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        feats = self.features(x)
        sources = None if self.source_head is None else self.source_head(F.silu(feats))
        return feats, self.fraction_head(F.silu(feats)), sources


def encoder_input(kind: str, arrays: torch.Tensor, schema: PhaseSchema) -> torch.Tensor:
    """Images ``(B, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` in [-1, 1]; masks -> one-hot ``(B, C, H, W)``
    (ignored pixels are zero in every channel)."""
    if kind == "image":
        return (arrays.float() * 2.0 - 1.0).unsqueeze(1)
    masks = arrays.long()
    labelled = (masks >= 0) & (masks < schema.n_classes)
    one_hot = torch.zeros(masks.shape[0], schema.n_classes, *masks.shape[1:], device=masks.device)
    one_hot.scatter_(1, torch.where(labelled, masks, 0).unsqueeze(1), labelled.unsqueeze(1).float())
    return one_hot
