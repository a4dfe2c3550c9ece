"""Property encoders of TiM3 (paper 004, sec. 3.2, eq. 3-6): processing conditions to a condition embedding.

The conditions of a micrograph (here UHCS's anneal temperature, anneal time and cooling method) arrive as
one input vector (:class:`PropertyCoder`): each continuous property mapped linearly from its real range to
[-1, 1] (on a log axis where the coder says so, e.g. anneal times from minutes to days), each categorical
property as a one-hot block (TiM3 only has continuous properties; a category has no order, so it gets
its own inputs rather than a number on a line).

:class:`PropertyEncoder` with ``kind="probabilistic"`` is the paper's encoder: an MLP ``phi_f`` to ``D``
(eq. 3), two networks ``phi_mu`` and ``phi_sigma`` predicting the means and log-variances of a
``U``-component diagonal Gaussian mixture (eq. 4-5), and an embedding drawn by the reparameterisation of
eq. 6, ``g = mean_u mu_u + mean_u sigma_u * eps_u`` with ``eps_u ~ N(0, I_D)`` and ``sigma_u = exp(logvar_u / 2)``
(the paper calls phi_sigma's output the log-variance and multiplies "sigma" by the noise; we read sigma as
the standard deviation it implies). The draw is made in training and in inference, as in the paper; a
seeded generator makes it reproducible. ``kind="mlp"`` is the plain MLP encoder of the paper's ablation
(Table 2, "Baseline"). Zero-mean Gaussian noise on the training conditions (paper 004, appendix B) is added
by :meth:`PropertyCoder.jitter`, before encoding.

The embedding is handed to the latent denoiser as ``tokens`` cross-attention tokens of width ``D`` (the paper
uses one vector, i.e. ``tokens=1``).

>>> coder = PropertyCoder(continuous=(("t", 800.0, 1000.0, False),), categorical=(("cool", ("AR", "Q")),))
>>> coder.vector([{"t": 900.0, "cool": 1.0}]).tolist()
[[0.0, 0.0, 1.0]]
>>> enc = PropertyEncoder(PropertyEncoderConfig(input_dim=coder.dim, embed_dim=8, components=3))
>>> enc(torch.zeros(2, 3)).shape
torch.Size([2, 1, 8])
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..core.sample import Sample
from .folder import config_from_dict

ENCODER_KINDS = ("probabilistic", "mlp")
#: a continuous property whose real range spans this factor or more is coded on a log axis
LOG_AXIS_SPAN = 10.0


@dataclass(frozen=True)
class PropertyCoder:
    """How a condition dict becomes the encoder's input vector (stored in the model folder's config).

    continuous: ``(name, low, high, log)`` per continuous property: ``low``..``high`` (the real range) maps to
        -1..1, on a log axis when ``log``.
    categorical: ``(name, categories)`` per categorical property; a condition holds the category's index
        (as :meth:`~napari_microsynth.generators.base.ConditionSpec.validate` records it).
    """

    continuous: tuple[tuple[str, float, float, bool], ...] = ()
    categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "continuous", tuple((str(n), float(lo), float(hi), bool(lg))
                                                     for n, lo, hi, lg in self.continuous))
        object.__setattr__(self, "categorical", tuple((str(n), tuple(map(str, c))) for n, c in self.categorical))
        for name, low, high, log in self.continuous:
            if log and low <= 0:
                raise ValueError(f"property {name!r}: a log axis needs a positive range, got low {low}")
        if not self.continuous and not self.categorical:
            raise ValueError("a property coder needs at least one property")

    @classmethod
    def from_ranges(cls, continuous: Sequence[tuple[str, float, float]],
                    categorical: Sequence[tuple[str, Sequence[str]]] = ()) -> "PropertyCoder":
        """A coder for ``(name, low, high)`` ranges, each on a log axis where it is positive and spans a factor
        :data:`LOG_AXIS_SPAN` or more (anneal times from minutes to a day), and ``(name, categories)``."""
        return cls(tuple((n, lo, hi, bool(lo > 0 and hi / lo >= LOG_AXIS_SPAN)) for n, lo, hi in continuous),
                   tuple((n, tuple(c)) for n, c in categorical))

    @property
    def dim(self) -> int:
        """Length of the input vector."""
        return len(self.continuous) + sum(len(c) for _, c in self.categorical)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, *_ in self.continuous) + tuple(n for n, _ in self.categorical)

    def _axis(self, value: np.ndarray, low: float, high: float, log: bool) -> np.ndarray:
        if log:
            value, low, high = np.log(np.maximum(value, 1e-12)), math.log(low), math.log(high)
        return 2.0 * (value - low) / (high - low) - 1.0 if high > low else np.zeros_like(value)

    def continuous_part(self, conditions: Sequence[Mapping[str, float]]) -> np.ndarray:
        """``(N, n_continuous)``: the continuous properties on their [-1, 1] axes."""
        out = np.zeros((len(conditions), len(self.continuous)), np.float32)
        for j, (name, low, high, log) in enumerate(self.continuous):
            out[:, j] = self._axis(np.array([float(c[name]) for c in conditions]), low, high, log)
        return out

    def categorical_part(self, conditions: Sequence[Mapping[str, float]]) -> np.ndarray:
        """``(N, total categories)``: one one-hot block per categorical property."""
        blocks = []
        for name, categories in self.categorical:
            codes = np.array([int(round(float(c[name]))) for c in conditions])
            if np.any((codes < 0) | (codes >= len(categories))):
                raise ValueError(f"property {name!r}: category codes must lie in 0..{len(categories) - 1}")
            blocks.append(np.eye(len(categories), dtype=np.float32)[codes])
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(conditions), 0), np.float32)

    def vector(self, conditions: Sequence[Mapping[str, float]]) -> np.ndarray:
        """``(N, dim)`` float32 input vectors of condition dicts."""
        return np.concatenate([self.continuous_part(conditions), self.categorical_part(conditions)], axis=1)

    def jitter(self, vectors: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
        """Input vectors with zero-mean Gaussian noise on the continuous part (paper 004, appendix B): std
        ``fraction`` of each property's range (the paper's Table 4 uses about 4-12 % of the range, 8 % in
        the median); categorical blocks are left exact."""
        out = np.array(vectors, dtype=np.float32, copy=True)
        k = len(self.continuous)
        if fraction > 0 and k:
            out[:, :k] += (2.0 * fraction * rng.standard_normal((len(out), k))).astype(np.float32)
        return out

    def decode_continuous(self, values: np.ndarray) -> np.ndarray:
        """``(N, n_continuous)`` positions on the [-1, 1] axes back to property values."""
        out = np.zeros_like(values, dtype=np.float64)
        for j, (_, low, high, log) in enumerate(self.continuous):
            a, b = (math.log(low), math.log(high)) if log else (low, high)
            v = a + (np.asarray(values[:, j], np.float64) + 1.0) / 2.0 * (b - a)
            out[:, j] = np.exp(v) if log else v
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"continuous": [list(c) for c in self.continuous],
                "categorical": [[n, list(c)] for n, c in self.categorical]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PropertyCoder":
        return cls(tuple(tuple(c) for c in data.get("continuous", ())),
                   tuple((n, tuple(c)) for n, c in data.get("categorical", ())))


def sample_value(sample: Sample, name: str) -> Any:
    """A recorded condition of a sample: ``properties[name]``, else ``provenance.extra[name]`` (where the UHCS
    loader keeps the cooling method); None when neither has it."""
    if name in sample.properties:
        return sample.properties[name]
    return sample.provenance.extra.get(name)


def coder_for(samples: Sequence[Sample], categorical: Sequence[str]) -> PropertyCoder:
    """The coder of the processing conditions the samples record: every numeric property all of them have,
    on its real range (a log axis where it spans a factor :data:`LOG_AXIS_SPAN`), and the categorical keys
    with the categories they hold (sorted)."""
    if not samples:
        raise ValueError("no samples with processing conditions")
    numeric = sorted(set.intersection(*(set(s.properties) for s in samples)) - set(categorical))
    continuous = []
    for name in numeric:
        values = np.array([float(s.properties[name]) for s in samples])
        continuous.append((name, float(values.min()), float(values.max())))
    categories = [(key, sorted({str(sample_value(s, key)) for s in samples})) for key in categorical]
    return PropertyCoder.from_ranges(continuous, categories)


def conditions_of(samples: Sequence[Sample], coder: PropertyCoder) -> list[dict[str, float] | None]:
    """Each sample's conditions in the coder's form (categories as indices), None where one is missing or a
    category is unknown to the coder."""
    out: list[dict[str, float] | None] = []
    for s in samples:
        condition: dict[str, float] | None = {}
        for name, *_ in coder.continuous:
            value = s.properties.get(name)
            if value is None:
                condition = None
                break
            condition[name] = float(value)
        for name, categories in coder.categorical if condition is not None else ():
            label = sample_value(s, name)
            if label is None or str(label) not in categories:
                condition = None
                break
            condition[name] = float(categories.index(str(label)))
        out.append(condition)
    return out


@dataclass(frozen=True)
class PropertyEncoderConfig:
    """Everything needed to rebuild a :class:`PropertyEncoder`.

    input_dim: length of the coded condition vector (:attr:`PropertyCoder.dim`).
    kind: "probabilistic" (paper 004, eq. 3-6) or "mlp" (the ablation's plain encoder).
    embed_dim: ``D``, the width of the embedding (and of the denoiser's cross-attention).
    components: ``U``, Gaussian mixture components.
    hidden: width of the MLPs.
    tokens: cross-attention tokens the embedding is given as (paper: 1).
    """

    input_dim: int
    kind: str = "probabilistic"
    embed_dim: int = 64
    components: int = 4
    hidden: int = 128
    tokens: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"property encoder kind must be one of {ENCODER_KINDS}, got {self.kind!r}")
        if min(self.input_dim, self.embed_dim, self.components, self.hidden, self.tokens) < 1:
            raise ValueError("input_dim, embed_dim, components, hidden and tokens must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PropertyEncoderConfig":
        return config_from_dict(cls, data, "property encoder")


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, outputs))


class PropertyEncoder(nn.Module):
    """Coded conditions ``(B, input_dim)`` to cross-attention tokens ``(B, tokens, embed_dim)``."""

    def __init__(self, config: PropertyEncoderConfig):
        super().__init__()
        self.config = config
        d, u, h, k = config.embed_dim, config.components, config.hidden, config.tokens
        self.phi_f = _mlp(config.input_dim, h, d)  # eq. 3
        if config.kind == "probabilistic":
            self.phi_mu = _mlp(d, h, u * k * d)  # eq. 4
            self.phi_sigma = _mlp(d, h, u * k * d)
        else:
            self.head = nn.Linear(d, k * d)

    def distribution(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and log-variances ``(B, U, tokens, D)`` of the mixture components (probabilistic kind)."""
        if self.config.kind != "probabilistic":
            raise ValueError("only the probabilistic encoder predicts a distribution")
        c = self.config
        f = self.phi_f(y)
        shape = (len(y), c.components, c.tokens, c.embed_dim)
        return self.phi_mu(f).view(shape), self.phi_sigma(f).view(shape).clamp(-20.0, 10.0)

    def forward(self, y: torch.Tensor, generator: torch.Generator | None = None,
                sample: bool = True) -> torch.Tensor:
        """Tokens for coded conditions ``y``; the probabilistic kind draws eq. 6's embedding (with ``generator``)
        unless ``sample`` is False, which gives the mixture's mean."""
        c = self.config
        if c.kind == "mlp":
            return self.head(self.phi_f(y)).view(len(y), c.tokens, c.embed_dim)
        mu, logvar = self.distribution(y)
        g = mu.mean(dim=1)
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            g = g + (torch.exp(0.5 * logvar) * eps).mean(dim=1)
        return g


def embedding_noise(seeds: Sequence[int], stream: int) -> list[torch.Generator]:
    """One CPU generator per seed for the embedding draws (a stream of its own, see ``seeded_noise``)."""
    out = []
    for seed in seeds:
        key = int(np.random.SeedSequence([int(seed) & (2**64 - 1), int(stream)]).generate_state(1, np.uint64)[0])
        out.append(torch.Generator().manual_seed(key))
    return out


def encode_conditions(encoder: PropertyEncoder, vectors: torch.Tensor, generators: Sequence[torch.Generator] | None,
                      sample: bool = True) -> torch.Tensor:
    """Tokens for a batch whose embedding draws come from one generator per row (so a row depends only on
    its own seed, not on the batch it is in)."""
    if encoder.config.kind == "mlp" or not sample or generators is None:
        return encoder(vectors, sample=sample and generators is None)
    mu, logvar = encoder.distribution(vectors)
    eps = torch.stack([torch.randn(mu.shape[1:], generator=g) for g in generators]).to(mu)
    return mu.mean(dim=1) + (torch.exp(0.5 * logvar) * eps).mean(dim=1)
