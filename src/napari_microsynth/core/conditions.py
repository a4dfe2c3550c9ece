"""Condition samplers: synthetic phase-fraction vectors, simulated expert guesses, property vectors.

All random functions take a ``numpy.random.Generator`` and are deterministic under its seed.

>>> import numpy as np
>>> expert_guess([0.7, 0.18, 0.12], alpha=0.5)
array([0.425, 0.295, 0.28 ])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .fractions import class_counts, normalize_fractions
from .sample import Sample
from .schema import PhaseSchema
from .tiles import reduced_tiles, tile_boxes_or_whole

if TYPE_CHECKING:
    from .store import DatasetStore

#: Paper 000, sec. 2.2.2 jitter: noise std sigma * (c + epsilon) per component.
JITTER_SIGMA = 0.02
JITTER_EPSILON = 0.01


def _generator(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


def jitter_fractions(
    fractions, rng: np.random.Generator, sigma: float = JITTER_SIGMA, epsilon: float = JITTER_EPSILON
) -> np.ndarray:
    """Perturb fraction vectors as in paper 000, sec. 2.2.2, eq. (7).

    Each component gets independent Gaussian noise of std ``sigma * (c_i + epsilon)`` (so the noise
    grows with the fraction, and absent phases can appear slightly); negatives are clipped to zero and
    each vector is renormalised to sum 1. Accepts ``(C,)`` or ``(N, C)``.
    """
    rng = _generator(rng)
    c = normalize_fractions(fractions)
    noisy = c + sigma * (c + epsilon) * rng.standard_normal(c.shape)
    return normalize_fractions(np.clip(noisy, 0.0, None))


@dataclass(frozen=True)
class FractionMode:
    """One component of the fraction mixture.

    ``share``: probability that a drawn vector comes from this mode.
    ``boost``: class index whose rich vectors are oversampled, or None to draw real vectors uniformly.
    A boosting mode picks real vector ``j`` with probability proportional to its fraction of the
    boosted class (so vectors without that phase are never picked and the richest most often). Paper
    000 only says it oversamples "vectors rich in" the phase; this weighting is the project's reading.
    On MetalDAM tiles the paper mixture then raises the mean MA fraction about 1.3x and the defect
    fraction about 3x (the paper reports both roughly doubled, Fig. 12a).
    """

    share: float
    boost: int | None = None
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or ("data" if self.boost is None else f"boost class {self.boost}")


#: Paper 000, sec. 2.2.2 mixture for MetalDAM: 70 % jittered real vectors, 20 % oversampling vectors rich in
#: martensite/austenite and 10 % rich in defects, all jittered.
PAPER_METALDAM_SHARES = {"data": 0.7, "martensite/austenite": 0.2, "defect": 0.1}


def default_shares(schema: PhaseSchema, real_fractions=None) -> dict[str, float]:
    """Mode shares by phase name (``"data"`` = uniform real vectors) for :meth:`BoostedFractionSampler.from_shares`.

    MetalDAM gets the paper's 70/20/10 (MA and defect boosted). Other schemas get the same split with the
    boosts on their rarest and second-rarest phase by mean fraction in ``real_fractions`` (only phases
    present in the data; fewer rare phases means the rest of the 30 % goes to the data mode). This
    generalisation is the project's choice, not the paper's.
    """
    if schema.name == "metaldam":
        return dict(PAPER_METALDAM_SHARES)
    if real_fractions is None:
        return {"data": 1.0}
    mean = normalize_fractions(real_fractions).reshape(-1, schema.n_classes).mean(axis=0)
    order = [int(k) for k in np.argsort(mean, kind="stable") if mean[k] > 0]
    rare = order[: min(2, len(order) - 1)]  # never boost the only (or most abundant) phase
    boosts = {schema.names[k]: share for k, share in zip(rare, (0.2, 0.1))}
    return {"data": 1.0 - sum(boosts.values()), **boosts}


class BoostedFractionSampler:
    """Mixture sampler of synthetic fraction vectors (paper 000, sec. 2.2.2).

    Each draw picks a mode by its share, picks a real fraction vector (uniformly, or weighted by the
    boosted class's fraction), and applies :func:`jitter_fractions`.

    >>> real = np.array([[0.9, 0.1, 0.0], [0.5, 0.2, 0.3], [0.6, 0.4, 0.0]])
    >>> sampler = BoostedFractionSampler(real, [FractionMode(0.7), FractionMode(0.3, boost=2)])
    >>> sampler.sample(4, np.random.default_rng(0)).shape
    (4, 3)
    """

    def __init__(self, real_fractions, modes=None, sigma: float = JITTER_SIGMA, epsilon: float = JITTER_EPSILON):
        real = np.asarray(real_fractions, dtype=np.float64)
        if real.ndim != 2 or real.shape[0] == 0:
            raise ValueError(f"real fractions must be a non-empty (N, C) array, got shape {real.shape}")
        self.real = normalize_fractions(real)
        self.modes = tuple(modes) if modes is not None else (FractionMode(1.0),)
        if not self.modes:
            raise ValueError("at least one mode is needed")
        shares = np.array([m.share for m in self.modes], dtype=np.float64)
        if np.any(shares < 0) or not np.isclose(shares.sum(), 1.0):
            raise ValueError(f"mode shares must be non-negative and sum to 1, got {shares.tolist()}")
        n_classes = self.real.shape[1]
        self._pick = []
        for mode in self.modes:
            if mode.boost is None:
                self._pick.append(None)
                continue
            if not 0 <= mode.boost < n_classes:
                raise ValueError(f"mode {mode.label!r} boosts class {mode.boost}, outside 0..{n_classes - 1}")
            weight = self.real[:, mode.boost]
            if weight.sum() <= 0:
                raise ValueError(
                    f"mode {mode.label!r}: no real vector contains class {mode.boost}, nothing to oversample"
                )
            self._pick.append(weight / weight.sum())
        self.shares = shares / shares.sum()
        self.sigma = float(sigma)
        self.epsilon = float(epsilon)

    @classmethod
    def from_shares(
        cls, real_fractions, shares: dict[str, float], schema: PhaseSchema, **kwargs
    ) -> "BoostedFractionSampler":
        """Build from ``{"data": 0.7, "<phase name>": 0.2, ...}`` (see :func:`default_shares`)."""
        modes = [
            FractionMode(float(share), None if name == "data" else schema.index_of(name), name)
            for name, share in shares.items()
        ]
        return cls(real_fractions, modes, **kwargs)

    def sample(self, n: int, rng: np.random.Generator, return_modes: bool = False):
        """``n`` jittered fraction vectors ``(n, C)``; with ``return_modes`` also the mode index of each."""
        rng = _generator(rng)
        mode_idx = rng.choice(len(self.modes), size=int(n), p=self.shares)
        rows = np.empty(int(n), dtype=np.int64)
        for m, pick in enumerate(self._pick):
            where = np.flatnonzero(mode_idx == m)
            rows[where] = rng.choice(self.real.shape[0], size=where.size, p=pick)
        out = jitter_fractions(self.real[rows], rng, self.sigma, self.epsilon)
        return (out, mode_idx) if return_modes else out


def fraction_targets(
    samples: Sequence[Sample],
    n: int,
    seed: int = 0,
    tile: int = 256,
    downscale: int = 1,
    shares: Mapping[str, float] | None = None,
) -> np.ndarray:
    """``n`` target vectors from paper 000's mixture (sec. 2.2.2): jittered phase fractions of the real
    ``tile`` px tiles reduced by ``downscale`` like a generator's training tiles
    (:func:`~napari_microsynth.core.tiles.reduced_tiles`), with the schema's rare phases oversampled
    (``shares`` default: :func:`default_shares`)."""
    labelled = [s for s in samples if s.mask is not None]
    if not labelled:
        raise ValueError("fraction targets need annotated samples")
    if tile % downscale:
        raise ValueError(f"tile {tile} px is not a multiple of downscale {downscale}")
    tiles = reduced_tiles(labelled, tile // downscale, downscale)
    if not tiles:
        raise ValueError(f"no labelled {tile} px tile in the given samples")
    real = np.stack([t.fractions for t in tiles])
    schema = labelled[0].schema
    mix = dict(shares) if shares is not None else default_shares(schema, real)
    sampler = BoostedFractionSampler.from_shares(real, mix, schema)
    return sampler.sample(int(n), np.random.default_rng(seed))


def real_fraction_vectors(store: "DatasetStore", tile: int = 256) -> np.ndarray:
    """``(N, C)`` phase-fraction vectors of the real annotated masks of a store, one per ``tile`` square.

    Like paper 000 (sec. 2.2.2) the vectors come from non-overlapping tiles of the masks (a mask smaller
    than a tile gives one vector). Synthetic samples (also hand-corrected ones) and rejected samples are
    left out, so the distribution is that of real data.
    """
    schema = store.schema
    statuses = store.statuses()
    rows = []
    for i in range(len(store)):
        if statuses[i] == "rejected" or store.provenance(i).is_synthetic:
            continue
        mask = store.mask(i)
        for y0, x0, y1, x1 in tile_boxes_or_whole(mask.shape, tile):
            counts = class_counts(mask[y0:y1, x0:x1], schema.n_classes, schema.ignore_id)
            if counts.sum():
                rows.append(counts / counts.sum())
    return np.array(rows, dtype=np.float64).reshape(-1, schema.n_classes)


def expert_guess(true_fractions, alpha: float) -> np.ndarray:
    """Simulated expert estimate of the phase ratios at accuracy ``alpha`` (paper 001, appendix A.2).

    ``G_i = alpha * P_i + (1 - alpha) * (1 - P_i) / (n - 1)``: the guess keeps a share ``alpha`` of each
    true ratio and spreads the rest of it evenly over the other phases, so it still sums to 1.
    ``alpha = 1`` returns the truth; the model is deterministic. Accepts ``(C,)`` or ``(N, C)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"guess accuracy alpha must be in [0, 1], got {alpha}")
    p = normalize_fractions(true_fractions)
    n = p.shape[-1]
    if n == 1:
        return p
    return alpha * p + (1.0 - alpha) * (1.0 - p) / (n - 1)


def _simplex_weights(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Uniform barycentric weights on the k-simplex from sorted uniform spacings (paper 004, Algorithm 1)."""
    q = np.sort(rng.random((n, k)), axis=1)
    q = np.concatenate([np.zeros((n, 1)), q, np.ones((n, 1))], axis=1)
    return np.diff(q, axis=1)


def sample_convex_hull(points, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points drawn uniformly inside the convex hull of ``points`` ``(N, D)`` (paper 004, Algorithm 1).

    The hull is split into Delaunay simplices, a simplex is chosen with probability proportional to its
    volume, and a point is placed uniformly in it (barycentric weights from sorted uniforms). Points
    are standardised per dimension before triangulating, which keeps volume ratios (and so uniformity)
    while making properties of very different units well conditioned. Raises ``ValueError`` for fewer
    than ``D + 1`` points or points that lie in a lower-dimensional subspace.
    """
    from scipy.spatial import Delaunay, QhullError

    rng = _generator(rng)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"points must be a finite (N, D) array, got shape {pts.shape}")
    n_pts, dim = pts.shape
    if dim < 1 or n_pts < dim + 1:
        raise ValueError(f"a convex hull in {dim} dimensions needs at least {dim + 1} points, got {n_pts}")
    scale = pts.std(axis=0)
    if np.any(scale == 0):
        flat = np.flatnonzero(scale == 0).tolist()
        raise ValueError(f"points are constant along dimension(s) {flat}: the hull is flat")
    z = (pts - pts.mean(axis=0)) / scale
    if dim == 1:
        lo, hi = pts[:, 0].min(), pts[:, 0].max()
        return lo + (hi - lo) * rng.random((int(n), 1))
    try:
        tri = Delaunay(z)
    except QhullError as exc:
        raise ValueError(
            f"cannot triangulate the points (they may lie in a lower-dimensional subspace): {exc}"
        ) from exc
    corners = z[tri.simplices]  # (S, D+1, D)
    volumes = np.abs(np.linalg.det(corners[:, 1:] - corners[:, :1]))
    if volumes.sum() <= 0:
        raise ValueError("the points span no volume (they lie in a lower-dimensional subspace)")
    chosen = rng.choice(len(volumes), size=int(n), p=volumes / volumes.sum())
    weights = _simplex_weights(rng, int(n), dim)  # (n, D+1)
    return np.einsum("nk,nkd->nd", weights, pts[tri.simplices[chosen]])


def property_targets(samples: Sequence[Sample], names: Sequence[str], n: int, seed: int = 0) -> list[dict[str, float]]:
    """``n`` property conditions (dicts over ``names``) drawn uniformly inside the convex hull of the
    samples' recorded properties (paper 004, Algorithm 1: :func:`sample_convex_hull`), so a
    property-conditioned generator is asked for combinations between the processing conditions it saw.

    Samples without every one of ``names`` are left out; repeated property vectors count once.
    """
    rows = {tuple(float(s.properties[k]) for k in names) for s in samples if all(k in s.properties for k in names)}
    if not rows:
        raise ValueError(f"none of the {len(samples)} samples records all of the properties {list(names)}")
    points = sample_convex_hull(np.array(sorted(rows)), n, np.random.default_rng(seed))
    return [dict(zip(names, map(float, point))) for point in points]
