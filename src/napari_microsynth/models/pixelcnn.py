"""PixelCNN priors over VQ-VAE code grids (paper 002, sec. 4.2), plain and gated.

A prior models the code grid autoregressively, row by row and left to right:
``p(z) = prod_i p(z_i | z_<i)``. Sampling starts from an empty grid and draws one code at a time.

- ``kind="plain"``: the PixelCNN of paper 002 (van den Oord et al., 2016a, as in the Keras VQ-VAE example
  the paper adapts): a 7x7 type-A masked convolution, residual blocks ``1x1 -> 3x3 type-B masked -> 1x1``
  and two 1x1 type-B layers. Its masked kernels have a *blind spot* (pixels above and to the right of
  the current one beyond the kernel reach are never seen), which paper 002 names as the reason it fails
  on structured layouts (sec. 7).
- ``kind="gated"``: the gated PixelCNN (van den Oord et al., 2016b, "Conditional image generation with
  PixelCNN decoders"), which paper 002's outlook proposes: a vertical stack that sees every row above
  and a horizontal stack that sees the current row to the left, joined at every layer, with gated
  activations ``tanh(.) * sigmoid(.)``; no blind spot. With ``condition_dim > 0`` every gate gets a
  learned bias from a condition vector (the phase fractions of the tile), the class-conditional form of
  that paper, so a user can ask for phase fractions.

Causality is built from padding and shifts: a convolution only ever sees rows above (vertical stack) or
columns to the left (horizontal stack) of its output.

Sampling cost: a code at ``(i, j)`` depends only on codes within :attr:`PixelCNNPrior.reach` rows above
and columns either side, so each step runs the network on that window instead of the whole grid; the
gated prior also computes its vertical stack once per row. Both give exactly the logits of a full pass
(tested).

>>> prior = PixelCNNPrior(PriorConfig(n_codes=5, channels=8, layers=2, condition_dim=3))
>>> codes = torch.zeros(2, 6, 6, dtype=torch.long)
>>> prior(codes, torch.full((2, 3), 1 / 3)).shape
torch.Size([2, 5, 6, 6])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .folder import config_from_dict

PRIOR_KINDS = ("gated", "plain")


@dataclass(frozen=True)
class PriorConfig:
    """Everything needed to rebuild a prior (stored in the model folder's ``config.json``).

    n_codes: K, the codebook size. kind: "gated" or "plain". channels: feature width (Keras example: 128).
    layers: gated layers, or the plain prior's residual blocks (Keras example: 2). kernel: the gated
    layers' kernel size. condition_dim: length of the condition vector (0 = unconditional; gated only).
    """

    n_codes: int
    kind: str = "gated"
    channels: int = 64
    layers: int = 8
    kernel: int = 3
    condition_dim: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"prior kind must be one of {PRIOR_KINDS}, got {self.kind!r}")
        if self.n_codes < 2 or self.channels < 2 or self.layers < 1 or self.kernel < 3 or self.kernel % 2 == 0:
            raise ValueError("a prior needs n_codes >= 2, channels >= 2, layers >= 1 and an odd kernel >= 3")
        if self.condition_dim < 0 or (self.condition_dim and self.kind == "plain"):
            raise ValueError("only the gated prior takes a condition (condition_dim > 0)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PriorConfig":
        return config_from_dict(cls, data, "PixelCNN prior")


def _down(x: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """Shift a feature map down by ``rows`` (zeros enter at the top)."""
    return F.pad(x, (0, 0, rows, 0))[:, :, : x.shape[2]]


def _right(x: torch.Tensor) -> torch.Tensor:
    """Shift a feature map right by one column (zeros enter at the left)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, : x.shape[3]]


class _MaskedConv(nn.Conv2d):
    """A square convolution that sees only pixels above and to the left (type "A") or also the centre ("B")."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, kernel: int):
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2)
        mask = torch.ones_like(self.weight)
        mask[:, :, kernel // 2, kernel // 2 + (kind == "B"):] = 0
        mask[:, :, kernel // 2 + 1:] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class _PlainBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  _MaskedConv("B", channels, channels // 2, 3), nn.ReLU(),
                                  nn.Conv2d(channels // 2, channels, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _GatedLayer(nn.Module):
    """One gated layer: vertical stack (rows above), horizontal stack (row to the left), condition bias."""

    def __init__(self, channels: int, kernel: int, condition_dim: int, first: bool):
        super().__init__()
        self.half, self.first = kernel // 2, first
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.half + 1, kernel))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.half + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.condition = nn.Linear(condition_dim, 4 * channels) if condition_dim else None

    def biases(self, condition: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | tuple[int, int]:
        """The gate biases ``(B, 2C, 1, 1)`` of the vertical and horizontal stacks from the condition."""
        if self.condition is None:
            return 0, 0
        vertical, horizontal = self.condition(condition)[:, :, None, None].chunk(2, dim=1)
        return vertical, horizontal

    def vertical_pre(self, v: torch.Tensor) -> torch.Tensor:
        """Vertical pre-activation at each row from rows ``i - half .. i`` of ``v`` (of the rows above for
        the first layer, whose input is the code grid itself)."""
        if self.first:
            v = _down(v)
        return self.vertical(F.pad(v, (self.half, self.half, self.half, 0)))

    def horizontal_out(self, h: torch.Tensor, v_pre: torch.Tensor, bias) -> torch.Tensor:
        """Next horizontal features from ``h`` (columns ``j - half .. j``; strictly left of ``j`` in the
        first layer) and the vertical pre-activation of the same row (which has seen only rows above)."""
        source = _right(h) if self.first else h
        pre = self.horizontal(F.pad(source, (self.half, 0, 0, 0))) + self.vertical_to_horizontal(v_pre)
        out = self.out(_gate(pre + bias))
        return out if self.first else h + out


def _gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class PixelCNNPrior(nn.Module):
    """Autoregressive prior over code grids ``(B, h, w)`` of ``n_codes`` values."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.embed = nn.Conv2d(config.n_codes, c, 1) if config.kind == "gated" else None
        if config.kind == "gated":
            self.layers = nn.ModuleList(
                _GatedLayer(c, config.kernel, config.condition_dim, first=i == 0) for i in range(config.layers))
        else:
            self.layers = nn.ModuleList([nn.Sequential(_MaskedConv("A", config.n_codes, c, 7), nn.ReLU()),
                                         *(_PlainBlock(c) for _ in range(config.layers)),
                                         nn.Sequential(_MaskedConv("B", c, c, 1), nn.ReLU(),
                                                       _MaskedConv("B", c, c, 1), nn.ReLU())])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, config.n_codes, 1))

    @property
    def reach(self) -> int:
        """How many rows above and columns either side a code's logits can depend on."""
        if self.config.kind == "gated":
            return 1 + self.config.layers * (self.config.kernel // 2)
        return 3 + self.config.layers

    def _one_hot(self, codes: torch.Tensor) -> torch.Tensor:
        return F.one_hot(codes.long(), self.config.n_codes).permute(0, 3, 1, 2).float()

    def _check_condition(self, condition: torch.Tensor | None, batch: int) -> None:
        wanted = self.config.condition_dim
        if wanted and (condition is None or tuple(condition.shape) != (batch, wanted)):
            raise ValueError(f"this prior needs a condition of shape ({batch}, {wanted})")
        if not wanted and condition is not None:
            raise ValueError("this prior is unconditional; pass condition=None")

    def forward(self, codes: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, n_codes, h, w)``: at each cell, the distribution of its code given the codes before it."""
        self._check_condition(condition, codes.shape[0])
        x = self._one_hot(codes)
        if self.config.kind == "plain":
            for layer in self.layers:
                x = layer(x)
            return self.head(x)
        v = h = self.embed(x)
        for layer in self.layers:
            v_bias, h_bias = layer.biases(condition)
            v_pre = layer.vertical_pre(v)
            h = layer.horizontal_out(h, v_pre, h_bias)
            v = _gate(v_pre + v_bias)
        return self.head(h)

    @torch.no_grad()
    def sample(
        self,
        shape: tuple[int, int, int],
        condition: torch.Tensor | None = None,
        generators: list[torch.Generator] | None = None,
        temperature: float = 1.0,
        adjust: Callable[[torch.Tensor, int, int, torch.Tensor], torch.Tensor] | None = None,
        on_row: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Code grids ``(B, h, w)`` drawn one code at a time from an empty grid (paper 002, sec. 4.2).

        ``adjust(logits (B, n_codes), i, j, codes)`` may change the logits before each draw (the fraction
        control); ``on_row(done, rows)`` after each row (progress, cancel). ``generators``: one per grid
        (CPU), so each grid depends only on its own seed, whatever else is in the batch.
        """
        batch, rows, cols = shape
        self._check_condition(condition, batch)
        generators = generators or [torch.Generator().manual_seed(i) for i in range(batch)]
        if len(generators) != batch:
            raise ValueError(f"need one generator per grid: {batch}, got {len(generators)}")
        device = next(self.parameters()).device
        codes = torch.zeros(shape, dtype=torch.long, device=device)
        for i in range(rows):
            logits_at = self._row_logits(codes, condition, i)
            for j in range(cols):
                logits = logits_at(j) / temperature
                if adjust is not None:
                    logits = adjust(logits, i, j, codes)
                cumulative = torch.softmax(logits.double(), dim=1).cumsum(dim=1).cpu()
                uniform = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])
                drawn = torch.searchsorted(cumulative, (uniform * cumulative[:, -1])[:, None]).flatten()
                codes[:, i, j] = drawn.clamp(max=self.config.n_codes - 1).to(device)
            if on_row is not None:
                on_row(i + 1, rows)
        return codes

    def _row_logits(self, codes: torch.Tensor, condition: torch.Tensor | None, i: int):
        """A function ``j -> logits (B, n_codes)`` of cell ``(i, j)``, run on the window that can matter."""
        top = max(0, i - self.reach)
        strip = codes[:, top: i + 1]
        if self.config.kind == "plain":
            def plain(j: int) -> torch.Tensor:
                left, right = max(0, j - self.reach), j + self.reach + 1
                return self(strip[:, :, left:right], condition)[:, :, -1, j - left]
            return plain
        # gated: the vertical stack of this row once, then the horizontal stack on a few columns per cell
        x = self._one_hot(strip)
        v = self.embed(x)
        row_pre, biases = [], []
        for layer in self.layers:
            v_bias, h_bias = layer.biases(condition)
            v_pre = layer.vertical_pre(v)
            row_pre.append(v_pre[:, :, -1:])
            biases.append(h_bias)
            v = _gate(v_pre + v_bias)

        def gated(j: int) -> torch.Tensor:
            left = max(0, j - self.reach)
            h = self.embed(self._one_hot(codes[:, i: i + 1, left: j + 1]))  # this row as drawn so far
            for layer, v_pre, h_bias in zip(self.layers, row_pre, biases):
                h = layer.horizontal_out(h, v_pre[:, :, :, left: j + 1], h_bias)
            return self.head(h)[:, :, 0, -1]
        return gated


def composition_tilt(logits: torch.Tensor, composition: torch.Tensor, goal: torch.Tensor,
                     iterations: int = 12, max_bias: float = 20.0) -> torch.Tensor:
    """Logits ``(B, K)`` tilted so that the expected composition of the drawn code is ``goal`` ``(B, C)``.

    ``composition`` ``(K, C)``: what each code paints (e.g. its mean phase fractions). Among all
    distributions with that expectation, the one closest (in KL) to ``softmax(logits)`` is
    ``p_k ~ exp(logits_k + b . composition_k)``, where ``b`` minimises the convex
    ``logsumexp(logits + b . composition) - b . goal``. Newton steps (Hessian: the covariance of the
    composition under ``p``) with backtracking find it; ``b`` is capped at ``max_bias``, so a goal outside
    what the codes can paint is approached as far as the codes allow.

    >>> m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> tilted = composition_tilt(torch.zeros(1, 2), m, torch.tensor([[0.8, 0.2]]))
    >>> [round(p, 3) for p in torch.softmax(tilted, 1)[0].tolist()]
    [0.8, 0.2]
    """
    m = composition.to(logits)
    b = torch.zeros(logits.shape[0], m.shape[1], dtype=logits.dtype, device=logits.device)
    ridge = 1e-6 * torch.eye(m.shape[1], dtype=logits.dtype, device=logits.device)

    def dual(bias: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(logits + bias @ m.T, dim=1) - (bias * goal).sum(1)

    for _ in range(iterations):
        p = torch.softmax(logits + b @ m.T, dim=1)
        mean = p @ m
        covariance = torch.einsum("bk,kc,kd->bcd", p, m, m) - mean[:, :, None] * mean[:, None, :]
        step = torch.linalg.lstsq(covariance + ridge, (goal - mean)[:, :, None]).solution[:, :, 0]
        candidates = torch.stack([(b + step / 2 ** t).clamp(-max_bias, max_bias) for t in range(6)])
        values = torch.stack([dual(c) for c in candidates])  # (6, B): keep the best, or stay
        best = values.argmin(0)
        improved = values[best, torch.arange(len(b))] < dual(b)
        b = torch.where(improved[:, None], candidates[best, torch.arange(len(b))], b)
    return logits + b @ m.T
