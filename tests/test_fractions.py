"""Phase fractions of masks and the slider rule for editing a fraction vector."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from PIL import Image

from napari_microsynth.core.fractions import (
    class_counts,
    mask_fractions,
    normalize_fractions,
    parse_fractions,
    set_fraction,
)
from napari_microsynth.core.schema import Phase, PhaseSchema


def _metaldam_mask(shared_data, name: str) -> np.ndarray:
    mask = np.array(Image.open(shared_data / "metaldam" / "masks" / f"{name}.png"))
    return mask[..., 0] if mask.ndim == 3 else mask


def test_class_counts_hand_case_with_ignore():
    mask = np.array([[0, 0, 2], [255, 1, 2], [2, 255, 0]])
    # class 0: 3 pixels, class 1: 1, class 2: 3; the two 255 pixels are skipped
    assert class_counts(mask, 3, ignore_id=255).tolist() == [3, 1, 3]
    assert class_counts(np.zeros((2, 2), dtype=np.uint8), 3).tolist() == [4, 0, 0]


def test_class_counts_rejects_unknown_ids_and_floats():
    with pytest.raises(ValueError, match=r"\[5\] outside 0..2"):
        class_counts(np.array([[0, 5]]), 3)
    with pytest.raises(ValueError, match="outside"):
        class_counts(np.array([[0, 255]]), 3)  # 255 is not declared as ignore id here
    with pytest.raises(ValueError, match="integer"):
        class_counts(np.array([[0.0, 1.0]]), 3)


def test_mask_fractions_skip_ignore_id():
    schema = PhaseSchema("t", (Phase(0, "a", (0, 0, 0)), Phase(1, "b", (255, 255, 255))), ignore_id=9)
    mask = np.array([[0, 1, 1, 9]])
    np.testing.assert_allclose(mask_fractions(mask, schema), [1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="no labelled pixels"):
        mask_fractions(np.full((2, 2), 9), schema)


@pytest.mark.real_data("metaldam")
def test_metaldam_fractions_match_official_pixel_counts(shared_data):
    """The per-class pixel counts of the official MetalDAM metadata are reproduced from the mask files."""
    schema = PhaseSchema.bundled("metaldam")
    db = sqlite3.connect(shared_data / "metaldam" / "MetalDAM_metadata.sqlite")
    rows = db.execute(
        "select annotation_path, label0, label1, label2, label3, label4 from micrograph"
        " where micrograph_id in (0, 1, 2)"
    ).fetchall()
    for path, *labels in rows:
        mask = _metaldam_mask(shared_data, path.split("/")[-1][:-4])
        assert class_counts(mask, schema.n_classes).tolist() == labels
        np.testing.assert_allclose(mask_fractions(mask, schema), np.array(labels) / sum(labels))


@pytest.mark.real_data("uhcs")
def test_uhcs_overall_shares_match_dataset_card(shared_data):
    """SOURCE.txt states the class shares over all 24 UHCS masks: 74.38 / 12.98 / 9.97 / 2.67 %."""
    total = sum(class_counts(np.load(p), 4) for p in sorted((shared_data / "uhcs" / "masks").glob("*.npy")))
    np.testing.assert_allclose(100 * total / total.sum(), [74.38, 12.98, 9.97, 2.67], atol=0.006)


def test_normalize_fractions():
    np.testing.assert_allclose(normalize_fractions([2, 0, 2]), [0.5, 0.0, 0.5])
    np.testing.assert_allclose(normalize_fractions([[1, 3], [5, 5]]), [[0.25, 0.75], [0.5, 0.5]])
    with pytest.raises(ValueError, match="all zero"):
        normalize_fractions([0, 0, 0])
    with pytest.raises(ValueError, match="finite"):
        normalize_fractions([0.5, np.nan])
    with pytest.raises(ValueError, match="too large"):
        normalize_fractions([1e308, 1e308, 0])


def test_negative_fractions_are_rejected_not_clipped():
    with pytest.raises(ValueError, match="cannot be negative"):
        normalize_fractions([2, -1, 2])
    with pytest.raises(ValueError, match="cannot be negative: b -0.1"):
        parse_fractions("0.6,-0.1,0.5", ["a", "b", "c"])


def test_typed_fractions_are_rescaled_only_with_a_note():
    fractions, note = parse_fractions("0.6, 0.3, 0.1", ["a", "b", "c"])
    np.testing.assert_allclose(fractions, [0.6, 0.3, 0.1])
    assert note is None
    fractions, note = parse_fractions("60,30,10", ["a", "b", "c"])
    np.testing.assert_allclose(fractions, [0.6, 0.3, 0.1])
    assert note == "fractions 60,30,10 sum to 100, not 1: rescaled to a 0.6, b 0.3, c 0.1"
    with pytest.raises(ValueError, match=r"one value per phase \(3: a, b, c\), got 2"):
        parse_fractions("0.5,0.5", ["a", "b", "c"])


def test_set_fraction_rescales_others_proportionally():
    # 0.3 moves to 0.6: the others (0.5, 0.2) share the remaining 0.4 in ratio 5:2
    out = set_fraction([0.3, 0.5, 0.2], 0, 0.6)
    np.testing.assert_allclose(out, [0.6, 0.4 * 5 / 7, 0.4 * 2 / 7])


def test_set_fraction_keeps_locked_phases():
    # phase 1 locked at 0.5: phase 0 may take at most 0.5; phase 2 gets what is left
    out = set_fraction([0.3, 0.5, 0.2], 0, 0.4, locked=[1])
    np.testing.assert_allclose(out, [0.4, 0.5, 0.1])
    clipped = set_fraction([0.3, 0.5, 0.2], 0, 0.9, locked=[1])
    np.testing.assert_allclose(clipped, [0.5, 0.5, 0.0])
    as_mask = set_fraction([0.3, 0.5, 0.2], 0, 0.4, locked=np.array([False, True, False]))
    np.testing.assert_allclose(as_mask, out)


def test_set_fraction_zero_others_share_equally_and_all_locked_forces_value():
    np.testing.assert_allclose(set_fraction([1.0, 0.0, 0.0], 0, 0.4), [0.4, 0.3, 0.3])
    # every other phase locked: the moved phase can only hold what they leave
    np.testing.assert_allclose(set_fraction([0.2, 0.5, 0.3], 0, 0.9, locked=[1, 2]), [0.2, 0.5, 0.3])
    np.testing.assert_allclose(set_fraction([0.2, 0.5, 0.3], 0, -0.5), [0.0, 0.625, 0.375])


def test_set_fraction_always_valid_under_random_edits():
    rng = np.random.default_rng(3)
    v = normalize_fractions(rng.random(5))
    for _ in range(500):
        index = int(rng.integers(5))
        locked = np.flatnonzero(rng.random(5) < 0.3)
        before = v.copy()
        v = set_fraction(v, index, rng.uniform(-0.2, 1.2), locked=locked)
        assert v.min() >= 0
        assert v.sum() == pytest.approx(1.0, abs=1e-12)
        kept = [k for k in locked if k != index]
        np.testing.assert_allclose(v[kept], before[kept], atol=1e-12)


def test_set_fraction_rejects_bad_index():
    with pytest.raises(ValueError, match="outside 0..2"):
        set_fraction([0.3, 0.5, 0.2], 3, 0.1)
