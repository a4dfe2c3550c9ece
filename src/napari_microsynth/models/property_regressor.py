"""The evaluation network of paper 004's property accuracy (sec. 3.4): micrograph tile -> its conditions.

Paper 004 pre-trains a ResNet-18 ``F`` to predict the properties of a microstructure image and scores a
generator by how often ``F`` reads the asked properties back from its images (eq. 9-11). No pretrained
weights can be downloaded here, so :class:`PropertyRegressor` is a small residual CNN trained from scratch on
real micrographs: one output per continuous property (on the [-1, 1] axis of a
:class:`~napari_microsynth.models.property_encoder.PropertyCoder`) and one logit per category of each
categorical property.

Before the network every tile is min-max normalised and, in training, gamma-corrected and contrast-stretched
at random (paper 004, eq. 12: ``clip(alpha * ((x - min) / (max - min)) ** eta)``, ``eta ~ N(1, sigma_eta^2)``),
so the network reads structure and texture rather than global brightness.

>>> net = PropertyRegressor(PropertyRegressorConfig(n_continuous=2, categories=(2,), widths=(8, 16)))
>>> [t.shape for t in net(torch.zeros(3, 1, 32, 32))]
[torch.Size([3, 2]), torch.Size([3, 2])]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .folder import config_from_dict


@dataclass(frozen=True)
class PropertyRegressorConfig:
    """Everything needed to rebuild a :class:`PropertyRegressor`.

    n_continuous: continuous outputs; categories: the number of categories of each categorical property;
    widths: channels of the stride-2 residual stages.
    """

    n_continuous: int
    categories: tuple[int, ...] = ()
    widths: tuple[int, ...] = (32, 64, 128, 128)

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", tuple(int(c) for c in self.categories))
        object.__setattr__(self, "widths", tuple(int(c) for c in self.widths))
        if self.n_continuous < 0 or any(c < 1 for c in self.categories) or not self.widths:
            raise ValueError("a regressor needs n_continuous >= 0, at least one category per categorical "
                             "property and one stage")
        if self.n_continuous + len(self.categories) == 0:
            raise ValueError("a regressor needs at least one property to predict")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["categories"], data["widths"] = list(self.categories), list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PropertyRegressorConfig":
        return config_from_dict(cls, data, "property regressor")


class _Stage(nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        groups = 8 if outputs % 8 == 0 else 1
        self.down = nn.Conv2d(inputs, outputs, 3, stride=2, padding=1)
        self.body = nn.Sequential(nn.GroupNorm(groups, outputs), nn.SiLU(), nn.Conv2d(outputs, outputs, 3, padding=1),
                                  nn.GroupNorm(groups, outputs), nn.SiLU(), nn.Conv2d(outputs, outputs, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.body(x)


class PropertyRegressor(nn.Module):
    """Grey tiles ``(B, 1, H, W)`` (normalised by :func:`normalise_tiles`) to continuous predictions
    ``(B, n_continuous)`` and the logits of all categorical properties concatenated ``(B, sum(categories))``."""

    def __init__(self, config: PropertyRegressorConfig):
        super().__init__()
        self.config = config
        widths = config.widths
        self.stem = nn.Conv2d(1, widths[0], 3, padding=1)
        self.stages = nn.Sequential(*[_Stage(a, b) for a, b in zip((widths[0],) + widths[:-1], widths)])
        self.head = nn.Linear(widths[-1], config.n_continuous + sum(config.categories))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = F.silu(self.stages(self.stem(x))).mean(dim=(2, 3))
        out = self.head(features)
        return out[:, : self.config.n_continuous], out[:, self.config.n_continuous:]


def normalise_tiles(images: torch.Tensor, eta: torch.Tensor | None = None, alpha: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Tiles ``(B, H, W)`` min-max normalised per tile, then ``clip(alpha * x ** eta, 0, 1)`` (paper 004, eq. 12;
    ``eta``, ``alpha`` per tile, default 1), mapped to [-1, 1] as ``(B, 1, H, W)``."""
    x = images.float()
    low = x.flatten(1).min(dim=1).values[:, None, None]
    high = x.flatten(1).max(dim=1).values[:, None, None]
    x = (x - low) / (high - low).clamp_min(1e-6)
    if eta is not None:
        x = x.clamp_min(0).pow(eta.view(-1, 1, 1))
    if alpha is not None:
        x = alpha.view(-1, 1, 1) * x
    return (x.clamp(0.0, 1.0) * 2.0 - 1.0).unsqueeze(1)
