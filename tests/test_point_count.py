"""ASTM E562 systematic manual point count: the grid, the estimate and its confidence interval."""
from __future__ import annotations

import numpy as np
import pytest

from napari_microsynth.core.point_count import (
    UNASSIGNED,
    disagreements,
    mean_ci95,
    point_count,
    student_t95,
    systematic_grid,
)


def test_multipliers_are_e562s_table():
    """E562's 95 % CI multipliers for n fields (t with n - 1 degrees of freedom)."""
    for fields, multiplier in ((5, 2.776), (10, 2.262), (20, 2.093), (30, 2.045)):
        assert student_t95(fields - 1) == pytest.approx(multiplier, abs=1e-3)
    with pytest.raises(ValueError, match="two fields"):
        student_t95(0)


def test_grid_points_lie_in_their_fields_one_sub_grid_each():
    points, fields = systematic_grid((480, 640), points_per_field=(5, 5), fields=(2, 4))
    assert points.shape == (200, 2) and np.bincount(fields).tolist() == [25] * 8
    rows, cols = points[:, 0] // 240, points[:, 1] // 160
    np.testing.assert_array_equal(rows * 4 + cols, fields)
    assert len({tuple(p) for p in points}) == 200
    with pytest.raises(ValueError, match="do not fit"):
        systematic_grid((10, 10), points_per_field=(5, 5), fields=(3, 3))


def test_estimate_matches_a_hand_calculation():
    """Three fields of four points, two phases; field 2 has a boundary point (1/2 to each phase).

    Phase-1 point fractions per field: 1/4, 2/4, (1 + 0.5)/4 -> mean 0.375, s = 0.125,
    CI = t(2 dof) * s / sqrt(3) = 4.303 * 0.125 / 1.732 = 0.3105."""
    assignments = [0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0]
    boundary_with = [UNASSIGNED] * 9 + [1, UNASSIGNED, UNASSIGNED]
    fields = [0] * 4 + [1] * 4 + [2] * 4
    result = point_count(assignments, fields, 2, boundary_with)
    np.testing.assert_allclose(result.field_fractions[:, 1], [0.25, 0.5, 0.375])
    assert result.fractions == pytest.approx([0.625, 0.375])
    assert result.ci95[1] == pytest.approx(4.3027 * 0.125 / np.sqrt(3), abs=1e-4)
    assert result.ci95[0] == pytest.approx(result.ci95[1])  # two phases: mirror images
    assert result.relative_accuracy[1] == pytest.approx(result.ci95[1] / 0.375)
    assert result.n_fields == 3 and result.points_counted == 12


def test_unassigned_points_are_left_out_and_bad_input_is_refused():
    result = point_count([0, 1, UNASSIGNED, 1, 1, 0], [0, 0, 0, 1, 1, 1], 3)
    np.testing.assert_allclose(result.field_fractions, [[0.5, 0.5, 0.0], [1 / 3, 2 / 3, 0.0]])
    assert np.isnan(result.relative_accuracy[2])  # an absent phase has no relative accuracy
    with pytest.raises(ValueError, match="outside 0..2"):
        point_count([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="two fields"):
        point_count([0, 1, 1], [0, 0, 0], 3)
    with pytest.raises(ValueError, match="first phase"):
        point_count([UNASSIGNED, 1], [0, 1], 3, boundary_with=[1, UNASSIGNED])


def test_a_point_count_on_a_real_phase_map_estimates_its_area_fractions(shared_data):
    """Counting the true mask at a 10 x 10 grid in 4 fields brackets the mask's pixel fractions."""
    from napari_microsynth.core.datasets import load_dataset

    sample = load_dataset(shared_data / "uhcs", split="test")[0]
    points, fields = systematic_grid(sample.shape, points_per_field=(10, 10), fields=(2, 2))
    result = point_count(sample.mask[points[:, 0], points[:, 1]], fields, sample.schema.n_classes)
    truth = sample.fractions
    assert np.all(np.abs(result.fractions - truth) <= np.maximum(result.ci95, 0.03))
    proposals = sample.mask[points[:, 0], points[:, 1]].copy()
    proposals[:5] = (proposals[:5] + 1) % sample.schema.n_classes
    assert disagreements(sample.mask[points[:, 0], points[:, 1]], proposals).tolist() == [0, 1, 2, 3, 4]


def test_mean_ci95_of_one_value_has_no_interval():
    mean, half = mean_ci95([0.3])
    assert mean == 0.3 and np.isnan(half)
