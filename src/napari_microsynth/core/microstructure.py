"""Simulated grain structures (numpy only): the simulator's declared settings, the regularised Voronoi
tessellation that starts a phase-field grain-growth run, and the grain-graph tools the simulator needs
(periodic connected grains, grain adjacency, a colouring that lets far-apart grains share one order
parameter).

The domain is periodic (a torus), as in Chen & Yang's grain-growth model (Phys. Rev. B 50, 15752, 1994),
so no grain is special because it touches the image edge; the image is then an arbitrary field of view
of the periodic structure, and grains crossing an edge are cut there as in a real micrograph.

>>> rng = np.random.default_rng(0)
>>> seeds = regularised_seeds(20, 64, 64, regularity=0.5, rng=rng)
>>> labels = voronoi_labels(seeds, 64, 64)
>>> labels.shape, int(labels.min()), int(labels.max())
((64, 64), 1, 20)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .options import declared_options, option

MAX_REGULARITY = 0.75
"""Largest Voronoi regularity accepted: seeds are placed by random sequential addition, which jams at a
disc coverage of about 0.547 (regularity sqrt(0.547 / 0.9069) = 0.777); above 0.75 placing the last seeds
takes very many rejections."""

BULK_CURVATURE_BOUND = 5.0
"""Upper bound of the second derivative of the bulk free energy (eq. 1) for order parameters in [0, 1]
with at most 1.5 summed over the other grains (true of the simulated states), used in the time-step bound
(:meth:`GrainGrowthSettings.max_stable_dt`)."""


@dataclass(frozen=True)
class GrainGrowthSettings:
    """What a phase-field grain-growth run is given (paper 003, section II.A).

    The grid spacing is 1 px. Time is in units of 1 / (L x energy density), so ``steps x dt`` is the
    simulated time; the paper's 1000 steps with dt 0.1 give t = 100, in which a round grain shrinks by
    2 pi L kappa t = 628 px^2 (Allen-Cahn motion by curvature, v = L kappa / R), enough to smooth the
    straight Voronoi edges and remove the smallest grains.
    """

    grains: int = option(112, "grains in the initial Voronoi tessellation (paper: 112)", low=1, high=100_000)
    size: int = option(512, "image height and width in px (paper: 512)", low=8, high=16_384)
    steps: int = option(1000, "Allen-Cahn time steps (paper: 1000)", low=0, high=10_000_000)
    regularity: float = option(0.6, "Voronoi regularity alpha of Zhu, Thorpe & Windle (2001): every seed at least "
                                    "alpha x the regular hexagonal spacing from the others; 0 = Poisson Voronoi "
                                    "(widest grain-size spread), 0.75 = nearly hexagonal (narrowest)",
                               low=0.0, high=MAX_REGULARITY)
    snapshot_every: int = option(50, "keep the grain map every N steps as a time series (0: the final state only)",
                                 low=0)
    dt: float = option(0.1, "time step; explicit Euler is stable for dt <= 2 / (L (8 kappa + 5)), 0.154 at L = "
                            "kappa = 1", low=1e-6, high=10.0, advanced=True)
    mobility: float = option(1.0, "kinetic coefficient L, equal for all grains (isotropic)", low=1e-6, high=100.0,
                             advanced=True)
    kappa: float = option(1.0, "gradient-energy coefficient kappa (paper: 1)", low=1e-3, high=100.0, advanced=True)
    order_parameters: str = option("coloured", "coloured: grains at least two boundaries apart share an order "
                                               "parameter (12-13 instead of 112 for the paper's setting, several "
                                               "times faster per step, same physics); "
                                               "per-grain: one order parameter per grain, as written in eq. 1",
                                   choices=("coloured", "per-grain"), advanced=True)
    check_every: int = option(10, "every N steps: report progress, honour a stop request and (coloured) move a "
                                  "grain that came within two boundaries of a grain of its own order parameter to "
                                  "a free one, before the two can meet", low=1, advanced=True)

    def __post_init__(self) -> None:
        for spec in declared_options(type(self)):
            spec.check(getattr(self, spec.name))
        if self.dt > self.max_stable_dt():
            raise ValueError(f"dt {self.dt:g} is above the explicit-Euler stability bound "
                             f"{self.max_stable_dt():.4g} = 2 / (L (8 kappa + {BULK_CURVATURE_BOUND:g})) for L = "
                             f"{self.mobility:g}, kappa = {self.kappa:g} on a 1 px grid; choose a smaller dt")
        if self.grains > self.size * self.size // 16:
            raise ValueError(f"{self.grains} grains in {self.size}x{self.size} px leave fewer than 16 px per grain; "
                             "choose fewer grains or a larger size")

    def max_stable_dt(self) -> float:
        """Largest stable explicit-Euler step: the update's linearisation has the eigenvalues
        ``1 - dt L (f'' + kappa lambda)`` with ``lambda`` in [0, 8] for the 5-point Laplacian on a 1 px grid and
        ``f''`` at most :data:`BULK_CURVATURE_BOUND`; all stay in [-1, 1] for ``dt <= 2 / (L (8 kappa + 5))``."""
        return 2.0 / (self.mobility * (8.0 * self.kappa + BULK_CURVATURE_BOUND))

    def snapshot_steps(self) -> list[int]:
        """The steps kept in the time series: 0, k, 2k, ... and always the last step."""
        if self.snapshot_every <= 0:
            return [self.steps]
        steps = list(range(0, self.steps + 1, self.snapshot_every))
        return steps if steps[-1] == self.steps else steps + [self.steps]

    def to_dict(self) -> dict:
        return {spec.name: getattr(self, spec.name) for spec in declared_options(type(self))}

    @classmethod
    def from_dict(cls, values: dict) -> GrainGrowthSettings:
        known = {spec.name for spec in declared_options(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# ---------------------------------------------------------------- regularised Voronoi tessellation


def hexagonal_spacing(n: int, height: float, width: float) -> float:
    """Seed spacing of ``n`` seeds on a regular hexagonal lattice filling ``height x width``:
    ``sqrt(2 A / (sqrt(3) n))`` (each hexagonal cell has the area ``sqrt(3) / 2 x spacing^2 = A / n``)."""
    return math.sqrt(2.0 * height * width / (math.sqrt(3.0) * n))


def _periodic_distance(points: np.ndarray, others: np.ndarray, height: float, width: float) -> np.ndarray:
    """(len(points), len(others)) minimum-image distances on the ``height x width`` torus."""
    d = np.abs(points[:, None, :] - others[None, :, :])
    d = np.minimum(d, np.array([height, width]) - d)
    return np.sqrt((d * d).sum(-1))


def regularised_seeds(n: int, height: int, width: int, regularity: float, rng: np.random.Generator,
                      batch: int = 1024, max_batches: int = 2000) -> np.ndarray:
    """``n`` seed points (row, col) for a regularised Voronoi tessellation of the periodic ``height x width``
    domain (Zhu, Thorpe & Windle, Phil. Mag. A 81, 2765, 2001, the regularisation paper 003 cites).

    Seeds are added one at a time, uniformly at random, and a candidate closer than
    ``regularity x hexagonal_spacing(n, height, width)`` to an earlier seed is rejected (random sequential
    addition of hard discs). ``regularity`` 0 gives the Poisson-Voronoi tessellation (cell-area coefficient of
    variation about 0.53); the larger it is, the narrower the cell-area distribution (1 would be the
    regular hexagonal tessellation, which random addition cannot reach, see :data:`MAX_REGULARITY`).

    >>> s = regularised_seeds(30, 100, 100, 0.7, np.random.default_rng(1))
    >>> bool(_periodic_distance(s, s, 100, 100)[~np.eye(30, dtype=bool)].min() >= 0.7 * hexagonal_spacing(30, 100, 100))
    True
    """
    if not 0.0 <= regularity <= MAX_REGULARITY:
        raise ValueError(f"regularity must be in [0, {MAX_REGULARITY}], got {regularity}")
    if n < 1:
        raise ValueError(f"need at least one seed, got {n}")
    min_distance = regularity * hexagonal_spacing(n, height, width)
    extent = np.array([height, width], dtype=np.float64)
    seeds = np.empty((n, 2))
    placed = 0
    for _ in range(max_batches):
        if placed == n:
            break
        candidates = rng.random((batch, 2)) * extent
        if placed:
            far = _periodic_distance(candidates, seeds[:placed], height, width).min(axis=1) >= min_distance
            candidates = candidates[far]
        start = placed
        for candidate in candidates:  # in order: a seed accepted from this batch rules out later candidates
            if placed == n:
                break
            if placed > start and _periodic_distance(candidate[None], seeds[start:placed], height,
                                                     width).min() < min_distance:
                continue
            seeds[placed] = candidate
            placed += 1
    if placed < n:
        raise ValueError(f"could not place {n} seeds at regularity {regularity} in {height}x{width} px "
                         f"(placed {placed}); choose a lower regularity")
    return seeds


def voronoi_labels(seeds: np.ndarray, height: int, width: int) -> np.ndarray:
    """The periodic Voronoi tessellation of ``seeds`` on the pixel grid: each pixel (its centre at
    ``(row + 0.5, col + 0.5)``) gets the number 1..n of its nearest seed (minimum-image distance).

    >>> voronoi_labels(np.array([[2.0, 2.0], [2.0, 6.0]]), 4, 8)[0].tolist()
    [1, 1, 1, 1, 2, 2, 2, 2]
    """
    from scipy.spatial import cKDTree

    extent = np.array([height, width], dtype=np.float64)
    tree = cKDTree(np.mod(seeds, extent), boxsize=extent)
    rows, cols = np.mgrid[0:height, 0:width]
    centres = np.stack([rows.ravel() + 0.5, cols.ravel() + 0.5], axis=1)
    _, nearest = tree.query(centres)
    return (nearest.reshape(height, width) + 1).astype(np.int32)


def connected_cells(labels: np.ndarray) -> np.ndarray:
    """``labels`` with every label one 4-connected region on the torus: on the pixel grid a thin Voronoi
    cell can break into pieces touching only at corners; each piece but the largest joins the neighbouring
    cell it shares most pixel edges with.

    >>> connected_cells(np.array([[1, 2, 2, 2], [2, 1, 1, 2], [2, 1, 1, 2], [2, 2, 2, 2]])).tolist()[0]
    [2, 2, 2, 2]
    """
    labels = np.array(labels, dtype=np.int32, copy=True)
    while True:
        components = periodic_components(labels)
        m = int(components.max())
        label_of = np.zeros(m + 1, dtype=np.int64)
        label_of[components.ravel()] = labels.ravel()
        sizes = np.bincount(components.ravel(), minlength=m + 1)
        largest: dict[int, int] = {}
        for c in range(1, m + 1):
            if sizes[c] > sizes[largest.get(int(label_of[c]), 0)]:
                largest[int(label_of[c])] = c
        strays = [c for c in range(1, m + 1) if largest[int(label_of[c])] != c]
        if not strays:
            return labels
        for c in strays:
            piece = components == c
            around = np.concatenate([np.roll(labels, shift, axis)[piece & (np.roll(components, shift, axis) != c)]
                                     for axis in (0, 1) for shift in (1, -1)])
            labels[piece] = np.bincount(around).argmax()


# ---------------------------------------------------------------- grain graph


def periodic_components(region_map: np.ndarray) -> np.ndarray:
    """Connected regions (4-neighbour) of equal value on the torus, numbered 1..n: a region crossing an
    image edge continues on the opposite edge.

    >>> periodic_components(np.array([[1, 2, 1]])).tolist()
    [[1, 2, 1]]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from skimage.measure import label

    region_map = np.asarray(region_map)
    if np.issubdtype(region_map.dtype, np.integer) and region_map.size and region_map.min() >= 0:
        codes = region_map.astype(np.int64) + 1
    else:
        codes = np.unique(region_map, return_inverse=True)[1].reshape(region_map.shape) + 1
    flat = label(codes, background=0, connectivity=1)
    n = int(flat.max())
    pairs = []
    edges_of_image = ((flat[0], flat[-1], codes[0], codes[-1]), (flat[:, 0], flat[:, -1], codes[:, 0], codes[:, -1]))
    for a, b, ca, cb in edges_of_image:
        same = ca == cb
        pairs.append(np.stack([a[same], b[same]], axis=1))
    edges = np.concatenate(pairs) - 1
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    # csgraph numbers the merged regions in order of their lowest raster label, i.e. of their first pixel
    _, merged = connected_components(graph, directed=False)
    return (merged[flat - 1] + 1).astype(np.int32)


def connected_instances(grains: np.ndarray) -> np.ndarray:
    """Connected (4-neighbour) regions of equal grain number in the image, numbered 1..N; not periodic:
    the image edge cuts a grain that crosses it into one instance per piece.

    >>> connected_instances(np.array([[5, 7, 5]])).tolist()
    [[1, 2, 3]]
    """
    from skimage.measure import label

    return label(np.asarray(grains) + 1, background=0, connectivity=1).astype(np.int32)


def adjacency_pairs(labels: np.ndarray, periodic: bool = True) -> np.ndarray:
    """The (k, 2) unique pairs ``(a, b)``, ``a < b``, of labels that touch (4-neighbours), across the image
    edges too when ``periodic``.

    >>> adjacency_pairs(np.array([[1, 2, 3]]), periodic=False).tolist()
    [[1, 2], [2, 3]]
    """
    labels = np.asarray(labels)
    pieces = []
    for axis in (0, 1):
        if periodic:
            a, b = labels, np.roll(labels, -1, axis=axis)
        else:
            a = labels[:-1] if axis == 0 else labels[:, :-1]
            b = labels[1:] if axis == 0 else labels[:, 1:]
        differ = a != b
        pieces.append(np.stack([np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])], axis=1))
    pairs = np.concatenate(pieces).astype(np.int64)
    if not len(pairs):
        return pairs.reshape(0, 2)
    base = int(pairs.max()) + 1
    codes = np.unique(pairs[:, 0] * base + pairs[:, 1])
    return np.stack([codes // base, codes % base], axis=1)


def neighbour_sets(n: int, pairs: np.ndarray) -> list[set[int]]:
    """``sets[i]`` = the labels touching label ``i`` (labels 1..n; index 0 unused)."""
    sets: list[set[int]] = [set() for _ in range(n + 1)]
    for a, b in pairs.tolist():
        sets[a].add(b)
        sets[b].add(a)
    return sets


def within_two(neighbours: list[set[int]], i: int) -> set[int]:
    """Labels at most two grain boundaries away from ``i`` (its neighbours and theirs), without ``i``."""
    near = set(neighbours[i])
    for j in neighbours[i]:
        near |= neighbours[j]
    near.discard(i)
    return near


def distance_two_colouring(n: int, pairs: np.ndarray) -> np.ndarray:
    """Colours 0..c-1 of labels 1..n (``colours[i - 1]``) such that no two labels within two grain
    boundaries of each other share a colour (greedy, most-constrained label first). Grains sharing a colour
    then always have a whole grain between them, which is what lets them share one order parameter.

    >>> distance_two_colouring(4, np.array([[1, 2], [2, 3], [3, 4]])).tolist()  # a chain 1-2-3-4
    [2, 0, 1, 2]
    """
    neighbours = neighbour_sets(n, pairs)
    near = [within_two(neighbours, i) for i in range(n + 1)]
    colours = np.full(n + 1, -1, dtype=np.int64)
    for i in sorted(range(1, n + 1), key=lambda k: (-len(near[k]), k)):
        used = {colours[j] for j in near[i] if colours[j] >= 0}
        c = 0
        while c in used:
            c += 1
        colours[i] = c
    return colours[1:]
