"""Phase-field grain growth (paper 003, section II.A): a regularised Voronoi tessellation evolved by the
multi-order-parameter Allen-Cahn model of Chen & Yang (Phys. Rev. B 50, 15752, 1994).

Free energy (eq. 1), with order parameters ``eta_i`` (1 inside grain i, 0 elsewhere)::

    F = sum_px [ sum_i (-eta_i^2 / 2 + eta_i^4 / 4) + sum_{i<j} eta_i^2 eta_j^2 + kappa / 2 sum_i |grad eta_i|^2 ]

Evolution (eq. 2), equal mobilities ``L`` (isotropic)::

    d eta_i / dt = -L (eta_i (2 S - 1 - eta_i^2) - kappa lap eta_i),   S = sum_j eta_j^2

and the picture of the paper (eq. 3) is ``phi = S``, dark along the boundaries.

Numerics: a 1 px grid with periodic edges, the 5-point Laplacian, explicit Euler with ``dt = 0.1`` by
default; that is 65 % of the stability bound ``2 / (L (8 kappa + 5)) = 0.154``
(:meth:`GrainGrowthSettings.max_stable_dt`), so the discrete free energy falls at every step (tested). The
diffuse boundary is about 5 px wide (10 %-90 % of eta), resolved by the grid.

Representation: ``order_parameters="per-grain"`` keeps one field per grain, a ``(G, H, W)`` tensor, as
eq. 1 is written (112 x 512 x 512 float32 = 117 MB). ``"coloured"`` (the default) lets grains that are at
least two grain boundaries apart share one field (a distance-2 colouring of the grain graph: 12-13 fields
for 112 grains), which is the same physics because a field decays to ~exp(-d / 1 px) within d px of its
grain: the equations at one grain never see another grain of its field. Every ``check_every`` steps the
grains are re-identified (connected regions of the argmax field, on the torus) and, before two grains of
one field can meet (when they come within two boundaries of each other because a grain between them
shrank away or a boundary switched), one of them moves, with its diffuse edge, to a field no grain near
it uses (the reduced order-parameter scheme of Krill & Chen, Acta Mater. 50, 3057, 2002, with grain
remapping). Coalescences that slip through anyway are counted in the result's ``info`` (0 in the tests
and the benchmark). Grain numbers are those of the Voronoi cells, kept through time, in both
representations.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.io import instance_boundaries
from ..core.microstructure import (
    GrainGrowthSettings,
    adjacency_pairs,
    connected_cells,
    connected_instances,
    distance_two_colouring,
    neighbour_sets,
    periodic_components,
    regularised_seeds,
    voronoi_labels,
    within_two,
)
from ..core.progress import check_stop, never_stop, no_progress
from .device import resolve_device

REMAP_RADIUS = 8
"""px around a grain that move with it to another field (its diffuse edge; eta has decayed to ~e^-8 there)."""


@dataclass
class GrainGrowthResult:
    """One simulated structure.

    ``grains``: (H, W) int32 grain numbers (the argmax of the order parameters; numbers of the initial
    Voronoi cells, so the same grain keeps its number through the time series; a grain crossing an image
    edge keeps one number on both sides). ``instances``: (H, W) int32 connected grains of the image,
    numbered 1..N (a grain cut by an edge gives one instance per piece). ``boundary``: (H, W) bool, pixels
    with a 4-neighbour in another instance (both sides marked: 2 px wide, as the Fast-FineCut iron masks).
    ``phi``: (H, W) float32, eq. 3. ``initial``: the Voronoi tessellation. ``snapshots`` (T, H, W) int32 grain
    numbers and ``snapshot_phi`` (T, H, W) uint8 (phi x 255) at ``snapshot_steps``.
    """

    settings: GrainGrowthSettings
    seed: int
    initial: np.ndarray
    grains: np.ndarray
    instances: np.ndarray
    boundary: np.ndarray
    phi: np.ndarray
    snapshot_steps: np.ndarray
    snapshots: np.ndarray
    snapshot_phi: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def laplacian(eta: torch.Tensor) -> torch.Tensor:
    """5-point Laplacian of each (H, W) plane of ``eta`` on a 1 px periodic grid."""
    p = F.pad(eta.unsqueeze(0), (1, 1, 1, 1), mode="circular")[0]
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * eta


def euler_step(eta: torch.Tensor, dt: float, mobility: float, kappa: float) -> torch.Tensor:
    """One explicit Euler step of eq. 2, in place: ``eta += dt L (kappa lap eta - eta (2 S - 1 - eta^2))``."""
    sq = eta.square()
    s = sq.sum(0)
    rate = laplacian(eta).mul_(kappa)
    rate.addcmul_(eta, sq.sub_(s, alpha=2.0).add_(1.0))  # eta (1 + eta^2 - 2 S) = -df/deta
    return eta.add_(rate, alpha=dt * mobility)


def field_argmax(eta: torch.Tensor) -> torch.Tensor:
    """``eta.argmax(0)`` (first field on ties) by a running maximum over the fields: one pass per field,
    several times faster on a CPU than torch's reduction across the leading axis."""
    best = eta[0].clone()
    index = torch.zeros(eta.shape[1:], dtype=torch.int64, device=eta.device)
    for f in range(1, eta.shape[0]):
        better = eta[f] > best
        best = torch.where(better, eta[f], best)
        index.masked_fill_(better, f)
    return index


def free_energy(eta: torch.Tensor, kappa: float = 1.0) -> float:
    """The discrete eq. 1 (forward differences on the periodic grid), summed over the pixels."""
    sq = eta.double().square()
    s = sq.sum(0)
    bulk = (-sq / 2 + sq.square() / 4).sum() + ((s.square() - sq.square().sum(0)) / 2).sum()
    e = eta.double()
    grad = (torch.roll(e, -1, 1) - e).square().sum() + (torch.roll(e, -1, 2) - e).square().sum()
    return float(bulk + kappa / 2 * grad)


def initial_tessellation(settings: GrainGrowthSettings, seed: int) -> np.ndarray:
    """The regularised Voronoi tessellation that starts the run of ``seed``: grain numbers 1..G, each grain
    one connected region on the torus."""
    rng = np.random.default_rng(seed)
    points = regularised_seeds(settings.grains, settings.size, settings.size, settings.regularity, rng)
    return connected_cells(voronoi_labels(points, settings.size, settings.size))


class GrainGrowth:
    """A running simulation: order parameters on a device, the grain numbers tracked on the CPU.

    >>> sim = GrainGrowth(GrainGrowthSettings(grains=6, size=32, steps=20, snapshot_every=10), seed=0,
    ...                   device="cpu")
    >>> result = sim.run()
    >>> result.grains.shape, result.snapshot_steps.tolist()
    ((32, 32), [0, 10, 20])
    """

    def __init__(self, settings: GrainGrowthSettings, seed: int, device: str | torch.device = "auto",
                 initial: np.ndarray | None = None) -> None:
        self.settings = settings
        self.seed = int(seed)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.initial = initial_tessellation(settings, seed) if initial is None else np.asarray(initial, np.int32)
        n = int(self.initial.max())
        self.coloured = settings.order_parameters == "coloured"
        if self.coloured:
            colours = distance_two_colouring(n, adjacency_pairs(self.initial))
        else:
            colours = np.arange(n)
        self.field_of = {g + 1: int(c) for g, c in enumerate(colours)}  # grain number -> its field
        field_map = torch.from_numpy(colours[self.initial - 1]).to(self.device)
        self.eta = torch.zeros((int(colours.max()) + 1, *self.initial.shape), dtype=torch.float32, device=self.device)
        self.eta.scatter_(0, field_map[None], 1.0)
        self.grains = self.initial.copy()
        self.step_count = 0
        self.remaps = 0
        self.coalescences = 0
        self.fields_initial = int(self.eta.shape[0])

    # ------------------------------------------------------------------ stepping
    def advance(self, steps: int) -> None:
        """``steps`` Euler steps (no grain tracking)."""
        s = self.settings
        for _ in range(steps):
            euler_step(self.eta, s.dt, s.mobility, s.kappa)
        self.step_count += steps

    def phi(self) -> np.ndarray:
        """Eq. 3: sum of the squared order parameters, (H, W) float32."""
        return self.eta.square().sum(0).float().cpu().numpy()

    def track(self) -> np.ndarray:
        """Re-identify the grains from the argmax of the order parameters (updating ``grains``) and, in
        the coloured representation, move grains that came within two boundaries of a grain of their own
        field to a free field. Returns the grain numbers."""
        field_map = field_argmax(self.eta).cpu().numpy()
        if not self.coloured:
            self.grains = (field_map + 1).astype(np.int32)
            return self.grains
        components = periodic_components(field_map)
        self.grains = self._numbered(components, field_map)
        self._separate_same_field_grains(components, field_map)
        return self.grains

    def _numbered(self, components: np.ndarray, field_map: np.ndarray) -> np.ndarray:
        """Grain numbers of the connected regions: the previous number each region overlaps most (the
        largest region keeps it when a grain split; the smaller pieces get new numbers)."""
        previous = self.grains
        m, top = int(components.max()), int(previous.max())
        overlap = np.bincount((components.astype(np.int64) * (top + 1) + previous).ravel(),
                              minlength=(m + 1) * (top + 1)).reshape(m + 1, top + 1)
        best, sizes = overlap.argmax(1), overlap.sum(1)
        region_field = np.zeros(m + 1, dtype=np.int64)
        region_field[components.ravel()] = field_map.ravel()  # one field per region
        number = np.zeros(m + 1, dtype=np.int32)
        taken: set[int] = set()
        next_number = max(max(self.field_of), top) + 1
        for c in sorted(range(1, m + 1), key=lambda k: -sizes[k]):
            g = int(best[c])
            if g == 0 or g in taken:
                g, next_number = next_number, next_number + 1
            taken.add(g)
            number[c] = g
        # a grain of >= 20 px (too large to shrink away between two checks) whose number is gone and whose
        # pixels now lie mostly in a grain of its own field has merged with that grain
        held_by = overlap.argmax(0)
        for g in range(1, top + 1):
            if g not in taken and overlap[:, g].sum() >= 20 and region_field[held_by[g]] == self.field_of.get(g):
                self.coalescences += 1
        self.field_of = {int(number[c]): int(region_field[c]) for c in range(1, m + 1)}
        return number[components]

    def _separate_same_field_grains(self, components: np.ndarray, field_map: np.ndarray) -> None:
        """Move every grain that has a grain of its own field within two boundaries to a free field."""
        m = int(components.max())
        neighbours = neighbour_sets(m, adjacency_pairs(components))
        region_field = np.zeros(m + 1, dtype=np.int64)
        region_field[components.ravel()] = field_map.ravel()
        sizes = np.bincount(components.ravel(), minlength=m + 1)
        for c in sorted(range(1, m + 1), key=lambda k: sizes[k]):  # move the smaller grain of a pair
            near = within_two(neighbours, c)
            if not any(region_field[k] == region_field[c] for k in near):
                continue
            used = {int(region_field[k]) for k in near}
            free = [f for f in range(self.eta.shape[0]) if f not in used and f != region_field[c]]
            if free:
                target = free[0]
            else:
                target = self.eta.shape[0]
                self.eta = torch.cat([self.eta, torch.zeros_like(self.eta[:1])])
            self._move(components == c, (field_map == region_field[c]) & (components != c), int(region_field[c]),
                       target)
            field_map[components == c] = target
            region_field[c] = target
            self.field_of[int(self.grains[components == c][0])] = target
            self.remaps += 1

    def _move(self, grain: np.ndarray, others: np.ndarray, source: int, target: int) -> None:
        """Move the order parameter of ``grain`` (with its diffuse edge: pixels within REMAP_RADIUS px that
        are nearer to it than to ``others`` of its field) from field ``source`` to field ``target``."""
        from scipy.ndimage import distance_transform_edt

        r = min(REMAP_RADIUS, min(grain.shape) // 2)
        inside = np.pad(grain, r, mode="wrap")
        apart = np.pad(others, r, mode="wrap")
        d_self = distance_transform_edt(~inside)
        d_other = distance_transform_edt(~apart) if apart.any() else np.full(inside.shape, np.inf)
        region = ((d_self <= r) & (d_self < d_other))[r:-r, r:-r]
        mask = torch.from_numpy(region).to(self.device)
        moving = torch.where(mask, self.eta[source], torch.zeros((), device=self.device))
        self.eta[target] += moving
        self.eta[source] -= moving

    # ------------------------------------------------------------------ one whole run
    def run(self, progress=no_progress, should_stop=never_stop) -> GrainGrowthResult:
        """Evolve for ``settings.steps`` steps, keeping the snapshots; ``progress(step, steps, message)``
        after each check, :class:`~napari_microsynth.core.progress.Cancelled` when ``should_stop()``."""
        s = self.settings
        started = time.perf_counter()
        wanted = s.snapshot_steps()
        checks = sorted(set(range(0, s.steps + 1, s.check_every)) | set(wanted) | {s.steps})
        snapshots, snapshot_phi = [], []
        for step in checks:
            check_stop(should_stop)
            self.advance(step - self.step_count)
            self.track()
            if step in wanted:
                snapshots.append(self.grains.copy())
                snapshot_phi.append(np.round(np.clip(self.phi(), 0.0, 1.0) * 255).astype(np.uint8))
            progress(step, s.steps, f"step {step}/{s.steps}")
        grains = self.grains.copy()
        instances = connected_instances(grains)
        info = {
            "device": str(self.device),
            "seconds": round(time.perf_counter() - started, 3),
            "order_parameters": s.order_parameters,
            "fields_initial": self.fields_initial,
            "fields_final": int(self.eta.shape[0]),
            "remaps": self.remaps,
            "coalescences": self.coalescences,
            "grains_initial": int(self.initial.max()),
            "grains_final": int(np.unique(grains).size),
            "instances": int(instances.max()),
        }
        return GrainGrowthResult(
            settings=s, seed=self.seed, initial=self.initial, grains=grains, instances=instances,
            boundary=instance_boundaries(instances), phi=self.phi(), snapshot_steps=np.asarray(wanted, np.int64),
            snapshots=np.stack(snapshots), snapshot_phi=np.stack(snapshot_phi), info=info,
        )


def simulate(settings: GrainGrowthSettings, seed: int, device: str = "auto", progress=no_progress,
             should_stop=never_stop) -> GrainGrowthResult:
    """Simulate one structure: regularised Voronoi tessellation of ``seed``, then ``settings.steps``
    Allen-Cahn steps (see :class:`GrainGrowth`)."""
    return GrainGrowth(settings, seed, device).run(progress, should_stop)
