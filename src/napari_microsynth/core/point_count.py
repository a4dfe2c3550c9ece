"""Volume fractions by systematic manual point count, the way ASTM E562 has metallographers estimate them.

A grid of points is laid over the micrograph in ``fields`` (E562 counts one grid per field of view; here a
micrograph is divided into ``rows x cols`` fields, each with its own ``points_per_field`` sub-grid). The
user assigns every point to the phase it falls in; a point on a phase boundary counts 1/2 to each of the
two phases (E562 counts boundary points as 1/2). Per phase:

- ``P_p(i)`` = points in the phase / points of field ``i`` (its point fraction in that field),
- the estimate is the mean ``P_p`` over the ``n`` fields,
- its 95 % confidence interval is ``t * s / sqrt(n)`` with ``s`` the standard deviation of ``P_p(i)``
  over fields and ``t`` the two-sided 95 % Student multiplier for ``n - 1`` degrees of freedom (E562's
  table of multipliers: 2.776 for 5 fields, 2.262 for 10, 2.093 for 20, 2.045 for 30),
- the relative accuracy ``%RA`` = CI / mean (E562 suggests adding fields until it is 10 % or less).

>>> points, fields = systematic_grid((100, 100), points_per_field=(2, 2), fields=(1, 2))
>>> points.shape, fields.tolist()
((8, 2), [0, 0, 0, 0, 1, 1, 1, 1])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A point nobody assigned (it is left out of its field's count).
UNASSIGNED = -1


def student_t95(dof: int) -> float:
    """Two-sided 95 % Student-t multiplier for ``dof`` degrees of freedom (1.96 in the limit)."""
    if dof < 1:
        raise ValueError(f"a confidence interval needs at least two fields (1 degree of freedom), got {dof + 1}")
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def mean_ci95(values) -> tuple[float, float]:
    """Mean of ``values`` and the half-width of its 95 % confidence interval (t-based; NaN for one value)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"expected a non-empty list of values, got shape {values.shape}")
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan")
    return mean, student_t95(values.size - 1) * float(values.std(ddof=1)) / float(np.sqrt(values.size))


def systematic_grid(shape, points_per_field=(5, 5), fields=(2, 2)) -> tuple[np.ndarray, np.ndarray]:
    """Grid points ``(N, 2)`` (row, column; pixel centres) over an image of ``shape`` and the field index of
    each point ``(N,)``: the image is divided into ``fields`` = (rows, cols) equal fields, each holding a
    ``points_per_field`` = (rows, cols) grid centred in its cells (E562's 16-, 25-, 49-, 100-point grids
    are 4x4, 5x5, 7x7, 10x10)."""
    height, width = int(shape[0]), int(shape[1])
    (pr, pc), (fr, fc) = (tuple(int(v) for v in points_per_field), tuple(int(v) for v in fields))
    if min(pr, pc, fr, fc) < 1:
        raise ValueError(f"points per field and fields must be at least 1 x 1, got {points_per_field}, {fields}")
    if fr * pr > height or fc * pc > width:
        raise ValueError(f"{fr * pr} x {fc * pc} grid points do not fit a {height} x {width} px image")
    ys = (np.arange(fr * pr) + 0.5) * height / (fr * pr)
    xs = (np.arange(fc * pc) + 0.5) * width / (fc * pc)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    field_of_row, field_of_col = np.arange(fr * pr) // pr, np.arange(fc * pc) // pc
    field = field_of_row[:, None] * fc + field_of_col[None, :]
    order = np.argsort(field.ravel(), kind="stable")  # points grouped field by field
    points = np.stack([yy.ravel(), xx.ravel()], axis=1)[order]
    return np.floor(points).astype(np.int64), field.ravel()[order]


@dataclass(frozen=True)
class PointCount:
    """E562 estimate per phase: ``fractions`` (mean point fraction over fields), ``ci95`` (half-widths),
    ``relative_accuracy`` (CI / mean; NaN for an absent phase), ``field_fractions`` ``(fields, phases)``
    and the number of points counted."""

    fractions: np.ndarray
    ci95: np.ndarray
    relative_accuracy: np.ndarray
    field_fractions: np.ndarray
    points_counted: int

    @property
    def n_fields(self) -> int:
        return int(self.field_fractions.shape[0])


def point_count(assignments, fields, n_phases: int, boundary_with=None) -> PointCount:
    """The E562 estimate from per-point phase ids ``assignments`` ``(N,)`` (:data:`UNASSIGNED` points are
    left out), their field index ``fields`` ``(N,)`` and, for points on a boundary, the other phase
    ``boundary_with`` ``(N,)`` (:data:`UNASSIGNED` elsewhere): such a point counts 1/2 to each phase."""
    assignments = np.asarray(assignments, dtype=np.int64)
    fields = np.asarray(fields, dtype=np.int64)
    boundary_with = (np.full_like(assignments, UNASSIGNED) if boundary_with is None
                     else np.asarray(boundary_with, dtype=np.int64))
    if not assignments.shape == fields.shape == boundary_with.shape or assignments.ndim != 1:
        raise ValueError("assignments, fields and boundary_with must be 1-D and of the same length")
    for name, ids in (("assignments", assignments), ("boundary_with", boundary_with)):
        bad = (ids != UNASSIGNED) & ((ids < 0) | (ids >= n_phases))
        if bad.any():
            raise ValueError(f"{name} holds phase ids outside 0..{n_phases - 1}: {sorted(set(ids[bad].tolist()))}")
    if ((boundary_with != UNASSIGNED) & (assignments == UNASSIGNED)).any():
        raise ValueError("a boundary point needs its first phase assigned too")
    counted = assignments != UNASSIGNED
    field_ids = np.unique(fields[counted])
    if field_ids.size < 2:
        raise ValueError(f"the point count needs assigned points in at least two fields, got {field_ids.size}")
    per_field = np.zeros((field_ids.size, n_phases))
    for row, field in enumerate(field_ids):
        here = counted & (fields == field)
        half = here & (boundary_with != UNASSIGNED)
        np.add.at(per_field[row], assignments[here & ~half], 1.0)
        np.add.at(per_field[row], assignments[half], 0.5)
        np.add.at(per_field[row], boundary_with[half], 0.5)
        per_field[row] /= here.sum()
    means, halves = zip(*(mean_ci95(per_field[:, k]) for k in range(n_phases)))
    means, halves = np.array(means), np.array(halves)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(means > 0, halves / means, np.nan)
    return PointCount(means, halves, relative, per_field, int(counted.sum()))


def disagreements(assignments, proposals) -> np.ndarray:
    """Indices of assigned points whose phase differs from the model's proposal at the same point."""
    assignments, proposals = np.asarray(assignments), np.asarray(proposals)
    return np.flatnonzero((assignments != UNASSIGNED) & (assignments != proposals))
