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
#: With a boost level, a boosting mode's targets hold on average at most this share of the richest real
#: tile's fraction of the phase; a level that needs more grows the mode's share instead (the project's choice).
MODE_MEAN_LIMIT = 0.75


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
    ``level``: optional boost level of a boosting mode, the mean fraction of its phase over *all* drawn
    targets (see :class:`BoostedFractionSampler`); None keeps the paper's plain oversampling.
    """

    share: float
    boost: int | None = None
    name: str = ""
    level: float | None = None

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

    **Boost levels** (the project's addition; issue 11). Paper 000's 20 % MA and 10 % defect are the
    *shares* of its boosting modes, and oversampling real tiles cannot make a phase more common than the
    tiles rich in it are (Fig. 12a reports MA and defect about doubled). A mode with a ``level`` instead
    reaches a stated class ratio: ``level`` is the mean fraction of its phase over *all* drawn targets (what
    the target histogram's mean and Fig. 12a show), not only over its own mode. To get there the mode
    shifts the boosted phase's fraction of every vector it picks by one common amount (so the tile-to-tile
    spread of the rich tiles is kept), clipped to ``[0, richest real tile]`` (a target never asks for a
    tile richer in the phase than any the generator has seen), and scales the other phases of the vector
    proportionally so it still sums to 1; then it jitters as usual. The shift is solved exactly (before
    jitter) against the other modes' contribution, so the data mode keeps reproducing the real tiles.
    Where the level would need the mode's targets to average more than :data:`MODE_MEAN_LIMIT` of the
    richest real tile, the mode's share grows instead (taken from the data modes) to the smallest share
    that reaches the level: ``shares`` holds the shares in use, ``given_shares`` the ones asked for.
    A level below what the plain mixture gives thins the phase in its mode the same way. Levels that
    together leave the data modes no share, or a level the other modes already exceed, raise ValueError.

    >>> real = np.array([[0.9, 0.1, 0.0], [0.5, 0.2, 0.3], [0.6, 0.4, 0.0]])
    >>> sampler = BoostedFractionSampler(real, [FractionMode(0.7), FractionMode(0.3, boost=2)])
    >>> sampler.sample(4, np.random.default_rng(0)).shape
    (4, 3)
    >>> levelled = BoostedFractionSampler(real, [FractionMode(0.7), FractionMode(0.3, boost=2, level=0.2)])
    >>> round(float(levelled.expected_mean()[2]), 6)
    0.2
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
        self.given_shares = self.shares.copy()
        self.sigma = float(sigma)
        self.epsilon = float(epsilon)
        #: per mode: the (N, C) vectors it picks from (``real``, or shifted ones for a mode with a level)
        self._rows = [self.real] * len(self.modes)
        if any(mode.level is not None for mode in self.modes):
            self._solve_levels()

    @classmethod
    def from_shares(
        cls,
        real_fractions,
        shares: Mapping[str, float],
        schema: PhaseSchema,
        levels: Mapping[str, float] | None = None,
        **kwargs,
    ) -> "BoostedFractionSampler":
        """Build from ``{"data": 0.7, "<phase name>": 0.2, ...}`` (see :func:`default_shares`), with optional
        boost ``levels`` by phase name (:func:`check_boost_levels`). A level for a phase without a mode in
        ``shares`` adds a boosting mode for it, whose share is taken from the data mode as the level needs."""
        by_class = check_boost_levels(levels, schema)
        modes = []
        for name, share in shares.items():
            boost = None if name == "data" else schema.index_of(name)
            modes.append(FractionMode(float(share), boost, name, None if boost is None else by_class.pop(boost, None)))
        modes += [FractionMode(0.0, k, schema.names[k], level) for k, level in by_class.items()]
        return cls(real_fractions, modes, **kwargs)

    # ------------------------------------------------------------------ boost levels

    def _shifted(self, k: int, shift: float) -> np.ndarray:
        """The real vectors with class ``k``'s fraction shifted by ``shift`` (clipped to [0, richest real
        tile]) and the other classes scaled so each vector sums to 1."""
        c = self.real[:, k]
        new = np.clip(c + shift, 0.0, np.maximum(c, self.real[:, k].max()))
        rest = 1.0 - c
        out = self.real * np.divide(1.0 - new, rest, out=np.zeros_like(rest), where=rest > 1e-12)[:, None]
        whole = rest <= 1e-12
        others = self.real.mean(axis=0)
        others[k] = 0.0
        if whole.any() and others.sum() > 0:  # a tile of class k only: the rest as the other classes' real mean
            out[whole] = (1.0 - new[whole])[:, None] * (others / others.sum())
        out[:, k] = new
        return out

    def _shift_for(self, m: int, target: float) -> float:
        """The shift of mode ``m``'s boosted fraction that makes its picked vectors average ``target``."""
        k, w = self.modes[m].boost, self._pick[m]
        c = self.real[:, k]
        top = np.maximum(c, c.max())

        def mean(shift: float) -> float:
            return float(w @ np.clip(c + shift, 0.0, top))

        lo, hi = -1.0, 1.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if mean(mid) < target else (lo, mid)
        return 0.5 * (lo + hi)

    def _mode_means(self) -> np.ndarray:
        """``(M, C)``: the mean vector (before jitter) each mode draws."""
        return np.stack([
            rows.mean(axis=0) if pick is None else pick @ rows for rows, pick in zip(self._rows, self._pick)
        ])

    def expected_mean(self) -> np.ndarray:
        """The mean target vector the sampler draws (before jitter, which moves it by well under a point)."""
        return self.shares @ self._mode_means()

    def _solve_levels(self) -> None:
        """Per-mode shifts (and, where needed, grown shares) that give every level as the overall mean."""
        levelled = [m for m, mode in enumerate(self.modes) if mode.level is not None]
        data = [m for m, mode in enumerate(self.modes) if mode.boost is None]
        boosted = [self.modes[m].boost for m in levelled]
        for m in levelled:
            mode = self.modes[m]
            if mode.boost is None:
                raise ValueError(f"mode {mode.label!r} draws real vectors uniformly: only a boosting mode takes a level")
            if not 0.0 < mode.level < 1.0:
                raise ValueError(f"mode {mode.label!r}: a boost level must lie between 0 and 1, got {mode.level}")
            if boosted.count(mode.boost) > 1:
                raise ValueError(f"two modes give class {mode.boost} a boost level; give it one")
        shares = self.shares.copy()
        shifts = {m: 0.0 for m in levelled}
        for _ in range(200):
            means = self._mode_means()
            for m in levelled:
                mode, k = self.modes[m], self.modes[m].boost
                others = float(shares @ means[:, k] - shares[m] * means[m, k])
                limit = MODE_MEAN_LIMIT * float(self.real[:, k].max())
                need = (mode.level - others) / shares[m] if shares[m] > 0 else np.inf
                if need > limit:  # grow this mode's share, taken from the data modes
                    share_data = float(shares[data].sum()) if data else 0.0
                    mean_data = float(means[data[0], k]) if data else 0.0
                    fixed = others - share_data * mean_data  # the other boosting modes
                    if limit <= mean_data:
                        raise ValueError(self._level_error(mode, "even the richest real tiles hold too little of it"))
                    grown = (mode.level - fixed - (share_data + shares[m]) * mean_data) / (limit - mean_data)
                    left = share_data + shares[m] - grown
                    if not data or left < 0:
                        raise ValueError(self._level_error(
                            mode, f"its mode's targets may hold at most {100 * limit:.1f} % of it (3/4 of the "
                                  "richest real tile), so the mode would need more than the data modes' share of "
                                  "the targets"))
                    if share_data > 0:
                        shares[data] *= left / share_data
                    shares[m], need = grown, limit
                if need < 0:
                    raise ValueError(self._level_error(
                        mode, f"the other modes alone already give {100 * others:.2f} %; give a higher level"))
                shifts[m] = self._shift_for(m, need)
                self._rows[m] = self._shifted(k, shifts[m])
            self.shares = shares
            reached = self.expected_mean()
            if all(abs(reached[self.modes[m].boost] - self.modes[m].level) < 1e-7 for m in levelled):
                return
        raise ValueError("the boost levels " + ", ".join(
            f"{self.modes[m].label} {100 * self.modes[m].level:g} %" for m in levelled) + " cannot all be reached")

    def _level_error(self, mode: FractionMode, why: str) -> str:
        c = self.real[:, mode.boost]
        return (f"cannot reach a {mode.label} level of {100 * mode.level:g} % of the targets: {why} (the real "
                f"tiles hold {100 * c.mean():.2f} % on average, the richest {100 * c.max():.1f} %)")

    def sample(self, n: int, rng: np.random.Generator, return_modes: bool = False):
        """``n`` jittered fraction vectors ``(n, C)``; with ``return_modes`` also the mode index of each."""
        rng = _generator(rng)
        mode_idx = rng.choice(len(self.modes), size=int(n), p=self.shares)
        rows = np.empty(int(n), dtype=np.int64)
        for m, pick in enumerate(self._pick):
            where = np.flatnonzero(mode_idx == m)
            rows[where] = rng.choice(self.real.shape[0], size=where.size, p=pick)
        picked = self.real[rows]
        for m, mode_rows in enumerate(self._rows):
            if mode_rows is not self.real:
                where = mode_idx == m
                picked[where] = mode_rows[rows[where]]
        out = jitter_fractions(picked, rng, self.sigma, self.epsilon)
        return (out, mode_idx) if return_modes else out


def check_boost_levels(levels: Mapping[str, float] | None, schema: PhaseSchema) -> dict[int, float]:
    """Boost levels by phase name (``{"martensite/austenite": 0.2, "defect": 0.1}``) as ``{class id: level}``.

    A level is the mean fraction of that phase over all drawn targets (see :class:`BoostedFractionSampler`),
    strictly between 0 and 1. Raises ValueError for an unknown phase (naming the known ones), for ``"data"``
    and for a level outside (0, 1).

    >>> check_boost_levels({"defect": 0.1}, PhaseSchema.bundled("metaldam"))
    {4: 0.1}
    """
    out: dict[int, float] = {}
    for name, level in (levels or {}).items():
        try:
            k = schema.index_of(str(name))
        except KeyError:
            raise ValueError(f"no phase {name!r} to boost; the {schema.name} phases are "
                             f"{', '.join(schema.names)}") from None
        level = float(level)
        if not (np.isfinite(level) and 0.0 < level < 1.0):
            raise ValueError(f"the boost level of {schema.names[k]} must lie between 0 and 1 (e.g. 0.2 for "
                             f"20 % of the targets' area), got {level:g}")
        if k in out:
            raise ValueError(f"{schema.names[k]} is given two boost levels")
        out[k] = level
    return out


def _parse_phase_values(texts: Sequence[str], schema: PhaseSchema, what: str, allow_zero: bool) -> dict[str, float]:
    """``["NAME=0.2", "NAME=10%"]`` as ``{canonical name: 0.2, ...}``; ``what`` names the value in errors."""
    out: dict[str, float] = {}
    for text in texts:
        name, sep, value = str(text).rpartition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"a {what} is PHASE=VALUE, e.g. {schema.names[-1]}=0.1 or {schema.names[-1]}=10%, "
                             f"got {text!r}")
        try:
            k = schema.index_of(name)
        except KeyError:
            raise ValueError(f"{text!r}: no phase {name!r}; the {schema.name} phases are "
                             f"{', '.join(schema.names)}") from None
        percent = value.endswith("%")
        try:
            number = float(value.rstrip("%").strip())
        except ValueError:
            raise ValueError(f"{text!r}: {value!r} is not a number (write 0.2 or 20%)") from None
        fraction = number / 100.0 if percent else number
        if not percent and 1.0 <= number <= 100.0:
            raise ValueError(f"{text!r}: a {what} is a fraction below 1 or a percentage; did you mean "
                             f"{name}={number:g}%?")
        low_ok = fraction >= 0.0 if allow_zero else fraction > 0.0
        if not (np.isfinite(fraction) and low_ok and fraction < 1.0):
            bound = "from 0 (off)" if allow_zero else "above 0 and"
            raise ValueError(f"{text!r}: a {what} must lie {bound} below 1 (100 %), got {value}")
        canonical = schema.names[k]
        if canonical in out:
            raise ValueError(f"{canonical} is given two {what}s: {text!r} and an earlier one")
        out[canonical] = fraction
    return out


def parse_boost_levels(texts: Sequence[str], schema: PhaseSchema) -> dict[str, float]:
    """Boost levels typed as ``PHASE=LEVEL`` (a fraction or a percentage) by phase name, for
    :func:`fraction_targets`.

    >>> parse_boost_levels(["martensite/austenite=0.2", "defect=10%"], PhaseSchema.bundled("metaldam"))
    {'martensite/austenite': 0.2, 'defect': 0.1}
    """
    return _parse_phase_values(texts, schema, "boost level", allow_zero=False)


def parse_boost_shares(texts: Sequence[str], schema: PhaseSchema) -> dict[str, float]:
    """Boosting-mode shares typed as ``PHASE=SHARE`` (0 turns a mode off) by phase name, for
    :func:`with_boost_shares`.

    >>> parse_boost_shares(["defect=30%"], PhaseSchema.bundled("metaldam"))
    {'defect': 0.3}
    """
    return _parse_phase_values(texts, schema, "boost share", allow_zero=True)


def with_boost_shares(shares: Mapping[str, float], changes: Mapping[str, float]) -> dict[str, float]:
    """``shares`` (see :func:`default_shares`) with the boosting-mode shares in ``changes`` set (0 drops a
    mode) and the data mode taking what is left.

    >>> with_boost_shares({"data": 0.7, "martensite/austenite": 0.2, "defect": 0.1}, {"defect": 0.3})
    {'data': 0.5, 'martensite/austenite': 0.2, 'defect': 0.3}
    """
    if not changes:
        return dict(shares)
    boosts = {name: float(share) for name, share in shares.items() if name != "data"}
    boosts.update({name: float(share) for name, share in changes.items()})
    boosts = {name: share for name, share in boosts.items() if share > 0}
    data = 1.0 - sum(boosts.values())
    if data < -1e-9:
        raise ValueError("the boosting modes' shares " + ", ".join(f"{n} {100 * s:g} %" for n, s in boosts.items())
                         + " add up to more than 100 %")
    return {"data": max(0.0, data), **boosts}


def tile_fractions(samples: Sequence[Sample], tile: int = 256, downscale: int = 1) -> np.ndarray:
    """``(N, C)`` phase fractions of the labelled ``tile`` px tiles of ``samples`` reduced by ``downscale`` like
    a generator's training tiles (:func:`~napari_microsynth.core.tiles.reduced_tiles`): the real vectors
    paper 000's sampler draws from."""
    labelled = [s for s in samples if s.mask is not None]
    if not labelled:
        raise ValueError("fraction targets need annotated samples")
    if tile % downscale:
        raise ValueError(f"tile {tile} px is not a multiple of downscale {downscale}")
    tiles = reduced_tiles(labelled, tile // downscale, downscale)
    if not tiles:
        raise ValueError(f"no labelled {tile} px tile in the given samples")
    return np.stack([t.fractions for t in tiles])


def target_sampler(
    real: np.ndarray,
    schema: PhaseSchema,
    shares: Mapping[str, float] | None = None,
    levels: Mapping[str, float] | None = None,
) -> BoostedFractionSampler:
    """Paper 000's mixture over the real tile fractions ``real`` (``shares`` default: :func:`default_shares`),
    with optional boost ``levels`` by phase name (see :class:`BoostedFractionSampler`)."""
    mix = dict(shares) if shares is not None else default_shares(schema, real)
    return BoostedFractionSampler.from_shares(real, mix, schema, levels=levels or None)


def fraction_targets(
    samples: Sequence[Sample],
    n: int,
    seed: int = 0,
    tile: int = 256,
    downscale: int = 1,
    shares: Mapping[str, float] | None = None,
    levels: Mapping[str, float] | None = None,
) -> np.ndarray:
    """``n`` target vectors from paper 000's mixture (sec. 2.2.2): jittered phase fractions of the real
    ``tile`` px tiles reduced by ``downscale`` like a generator's training tiles (:func:`tile_fractions`),
    with the schema's rare phases oversampled (``shares`` default: :func:`default_shares`).

    ``levels`` (``{"martensite/austenite": 0.2, "defect": 0.1}``) sets boost levels: the mean fraction of
    each named phase over the ``n`` targets (the project's addition, see :class:`BoostedFractionSampler`);
    phases not named keep the paper's plain oversampling, and ``None`` gives exactly the paper's targets.
    A level for a phase without a mode in ``shares`` adds a boosting mode for it. Unknown phase names and
    levels outside (0, 1) raise ValueError.
    """
    real = tile_fractions(samples, tile, downscale)
    schema = next(s for s in samples if s.mask is not None).schema
    return target_sampler(real, schema, shares, levels).sample(int(n), np.random.default_rng(seed))


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


def sample_hull_in_span(points, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points drawn uniformly inside the convex hull of ``points`` ``(N, D)`` within their affine span.

    Where the points span all ``D`` dimensions this is :func:`sample_convex_hull` (paper 004, Algorithm 1).
    Fewer distinct points, or points on a line or plane, span less: a single point is returned ``n``
    times, collinear points give points on their segment, and so on (the hull is triangulated in the
    coordinates of the span). This is what a group of real conditions that shares one category often looks
    like (UHCS: the air-cooled micrographs were all annealed at 970 C for 90 min).

    >>> sample_hull_in_span([[800.0, 1.0], [900.0, 1.0]], 3, np.random.default_rng(0))[:, 1].tolist()
    [1.0, 1.0, 1.0]
    """
    rng = _generator(rng)
    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if pts.ndim != 2 or len(pts) == 0 or not np.all(np.isfinite(pts)):
        raise ValueError(f"points must be a finite, non-empty (N, D) array, got shape {np.shape(points)}")
    if len(pts) == 1:
        return np.repeat(pts, int(n), axis=0)
    scale = np.where(pts.std(axis=0) > 0, pts.std(axis=0), 1.0)  # rank judged in units of each dimension
    center = pts.mean(axis=0)
    _, s, vt = np.linalg.svd((pts - center) / scale, full_matrices=False)
    rank = int(np.sum(s > s[0] * 1e-9))
    basis = vt[:rank]  # (r, D), orthonormal in the scaled space
    coords = ((pts - center) / scale) @ basis.T
    drawn = sample_convex_hull(coords, n, rng)
    return center + (drawn @ basis) * scale


def _property_value(sample: Sample, name: str):
    """A recorded condition of a sample: ``properties[name]``, else ``provenance.extra[name]`` (where the
    UHCS loader keeps the categorical ``cool_method``); None when neither has it."""
    if name in sample.properties:
        return sample.properties[name]
    return sample.provenance.extra.get(name)


def mixed_property_targets(
    samples: Sequence[Sample],
    continuous: Sequence[str],
    categorical: Mapping[str, Sequence[str]],
    n: int,
    seed: int = 0,
) -> list[dict[str, float]]:
    """``n`` conditions with continuous and categorical properties, for a generator conditioned on both
    (paper 004's Algorithm 1 with categories handled explicitly; the choice is the project's).

    A category (the combination of the ``categorical`` properties, e.g. the cooling method) is drawn from
    the empirical distribution of the samples (each micrograph counts once), then the continuous
    properties are drawn uniformly inside the convex hull of that category's distinct real vectors
    (:func:`sample_hull_in_span`, so a category seen under one condition only keeps it). A single hull over
    all categories would ask for combinations never made (UHCS: air cooling after 800 C for 24 h), which is
    what Algorithm 1's hull is there to avoid; a categorical axis has no "between" for a hull to fill.

    Categorical values are read from ``Sample.properties`` or ``provenance.extra`` (the category's name, or
    its index as a number) and returned as the index into ``categorical[name]`` (a float), the form
    :meth:`~napari_microsynth.generators.base.ConditionSpec.validate` records. Samples missing a value, or
    with a category outside ``categorical[name]``, are left out.
    """
    rows = []
    for s in samples:
        values = [_property_value(s, k) for k in continuous]
        labels = [_property_value(s, k) for k in categorical]
        if any(v is None for v in values + labels):
            continue
        row = {k: float(v) for k, v in zip(continuous, values)}
        for (name, categories), label in zip(categorical.items(), labels):
            known = [str(c).lower() for c in categories]
            if isinstance(label, str) and label.lower() in known:
                row[name] = float(known.index(label.lower()))
            elif not isinstance(label, str) and float(label).is_integer() and 0 <= label < len(known):
                row[name] = float(label)
            else:
                break
        else:
            rows.append(row)
    if not rows:
        raise ValueError(f"none of the {len(samples)} samples records all of the properties "
                         f"{list(continuous) + list(categorical)} with a known category")
    return hull_conditions(rows, continuous, list(categorical), n, seed)


def hull_conditions(
    rows: Sequence[Mapping[str, float]],
    continuous: Sequence[str],
    categorical: Sequence[str],
    n: int,
    seed: int = 0,
) -> list[dict[str, float]]:
    """:func:`mixed_property_targets` for recorded conditions ``rows`` (one per micrograph, categorical values
    as category indices), e.g. the training conditions a model folder keeps.

    >>> rows = [{"T": 800.0, "cool": 1.0}, {"T": 900.0, "cool": 1.0}, {"T": 970.0, "cool": 0.0}]
    >>> sorted({r["cool"] for r in hull_conditions(rows, ["T"], ["cool"], 20)})
    [0.0, 1.0]
    """
    if not rows:
        raise ValueError("no recorded conditions to draw from")
    rng = np.random.default_rng(seed)
    names = list(continuous)
    groups: dict[tuple[int, ...], list[tuple[float, ...]]] = {}
    for row in rows:
        key = tuple(int(round(float(row[k]))) for k in categorical)
        groups.setdefault(key, []).append(tuple(float(row[k]) for k in names))
    keys = sorted(groups)
    counts = np.array([len(groups[k]) for k in keys], dtype=np.float64)
    chosen = rng.choice(len(keys), size=int(n), p=counts / counts.sum())
    out: list[dict[str, float] | None] = [None] * int(n)
    for g, key in enumerate(keys):
        where = np.flatnonzero(chosen == g)
        if not where.size:
            continue
        drawn = sample_hull_in_span(groups[key], where.size, rng) if names else np.zeros((where.size, 0))
        for i, row in zip(where, drawn):
            out[i] = {**dict(zip(names, map(float, row))), **{k: float(c) for k, c in zip(categorical, key)}}
    return out  # type: ignore[return-value]
