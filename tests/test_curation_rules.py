"""Batch curation rules over a dataset store of real UHCS tiles with synthetic-style provenance."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_microsynth.core.curation import (
    accept_within,
    fraction_error,
    fraction_errors,
    reject_small_phases,
    smallest_phase_pixels,
)
from napari_microsynth.core.fractions import mask_fractions
from napari_microsynth.core.sample import Provenance
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.core.tiles import tile_samples

WRONG_BY = np.array([-0.10, 0.10, 0.0, 0.0])  # a generator that missed the target by 10 points


@pytest.fixture(scope="module")
def tiles(read_uhcs):
    """12 real 200x200 tiles (uhcs0007, uhcs0599) posing as generated pairs: every third hit its target
    exactly, every third missed it by 10 points, every third has no fraction target."""
    out = []
    for sample in read_uhcs(2):
        for tile in tile_samples(sample, 200):
            k = len(out)
            if k % 3 == 0:
                condition = {"fractions": [float(v) for v in tile.fractions]}
            elif k % 3 == 1:
                condition = {"fractions": [float(v) for v in tile.fractions + WRONG_BY]}
            else:
                condition = {"properties": {"anneal_temperature": 900.0}}
            out.append(dataclasses.replace(tile, provenance=Provenance(
                origin="synthetic", source=tile.name, generator="pf-diffseg", condition=condition, seed=k)))
    assert len(out) == 12
    return out


@pytest.fixture()
def store(tmp_path, tiles):
    store = DatasetStore.create(tmp_path / "pairs.zarr", tiles[0].schema)
    store.extend(tiles)
    return store


def smallest_present(mask, n_classes):
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=n_classes)
    return counts[counts > 0].min()


def test_store_errors_use_metadata_only_and_match_the_samples(store, tiles, monkeypatch):
    expected = [fraction_error(t) for t in tiles]
    assert expected[0::3] == [0.0] * 4
    assert np.allclose(expected[1::3], 0.10)
    assert expected[2::3] == [None] * 4

    def no_arrays(*args, **kwargs):
        raise AssertionError("the rule read an image or mask array")

    for name in ("__getitem__", "image", "mask"):
        monkeypatch.setattr(DatasetStore, name, no_arrays)
    errors = fraction_errors(store)
    assert errors.shape == (12,)
    assert np.all(np.isnan(errors[2::3]))
    assert np.allclose(errors[0::3], 0.0, atol=1e-12) and np.allclose(errors[1::3], 0.10)
    assert np.array_equal(smallest_phase_pixels(store), [smallest_present(t.mask, 4) for t in tiles])


def test_accept_within_accepts_the_pairs_on_target_and_persists(store, tiles):
    assert accept_within(store, max_error=0.05) == [0, 3, 6, 9]
    assert accept_within(store, max_error=0.05) == []  # already accepted: nothing changes
    reopened = DatasetStore.open(store.path)
    statuses = reopened.statuses()
    assert [i for i, s in enumerate(statuses) if s == "accepted"] == [0, 3, 6, 9]
    assert all(s == "pending" for i, s in enumerate(statuses) if i % 3)
    # a looser tolerance also takes the pairs 10 points off, but never the ones without a target
    assert accept_within(store, max_error=0.15) == [1, 4, 7, 10]
    assert [store.status(i) for i in (2, 5, 8, 11)] == ["pending"] * 4


def test_manual_decisions_are_kept_unless_asked(store):
    store.set_status(0, "rejected")
    store.set_status(1, "flagged")
    assert accept_within(store, max_error=0.2) == [3, 4, 6, 7, 9, 10]
    assert store.status(0) == "rejected" and store.status(1) == "flagged"
    assert accept_within(store, max_error=0.2, only_pending=False) == [0, 1]
    assert DatasetStore.open(store.path).statuses()[:2] == ["accepted", "accepted"]


def test_indices_limit_the_rule(store):
    assert accept_within(store, max_error=0.05, indices=[9, 0, 1, 2, 0]) == [0, 9]
    assert store.statuses().count("accepted") == 2


def test_reject_small_phases_uses_the_real_class_counts(store, tiles):
    smallest = [smallest_present(t.mask, 4) for t in tiles]
    expected = [i for i, n in enumerate(smallest) if n < 250]
    assert 0 < len(expected) < len(tiles)  # real tiles with a phase of only a few dozen pixels
    store.set_status(expected[0], "accepted")  # a user kept this one on purpose
    assert reject_small_phases(store, min_pixels=250) == expected[1:]
    assert store.status(expected[0]) == "accepted"
    assert [i for i, s in enumerate(DatasetStore.open(store.path).statuses()) if s == "rejected"] == expected[1:]
    assert reject_small_phases(store, min_pixels=0) == []


def test_absent_phase_is_not_a_small_phase(store, tiles):
    counts = np.bincount(tiles[0].mask.ravel(), minlength=4)
    assert counts[1] == 0 and counts[counts > 0].min() >= 1000  # no cementite network, others large
    rejected = reject_small_phases(store, min_pixels=1000)
    assert 0 not in rejected
    assert rejected == [i for i, t in enumerate(tiles) if smallest_present(t.mask, 4) < 1000]


def test_corrected_mask_changes_the_error(store, tiles):
    mask = tiles[0].mask.copy()
    mask[:20] = 1  # the curator paints 20 rows of the on-target pair as cementite network
    store.replace_mask(0, mask)
    target = np.array(tiles[0].provenance.condition["fractions"])
    expected = np.abs(target - mask_fractions(mask, tiles[0].schema)).max()
    assert fraction_errors(store)[0] == pytest.approx(expected) and expected > 0.05
    assert 0 not in accept_within(store, max_error=0.05)


def test_sample_level_error_rules(tiles):
    real = dataclasses.replace(tiles[0], provenance=Provenance(origin="real"))
    assert fraction_error(real) is None
    with pytest.raises(ValueError, match="no mask"):
        fraction_error(dataclasses.replace(tiles[0], mask=None))
    bad = dataclasses.replace(tiles[0], provenance=Provenance(origin="synthetic", condition={"fractions": [0.5, 0.5]}))
    with pytest.raises(ValueError, match="4 finite numbers"):
        fraction_error(bad)
    with pytest.raises(ValueError, match="expected a Sample"):
        fraction_error(tiles[0].mask)


def test_store_with_a_malformed_target_names_the_sample(tmp_path, tiles):
    store = DatasetStore.create(tmp_path / "bad.zarr", tiles[0].schema)
    store.append(tiles[0])
    wrong_length = Provenance(origin="synthetic", condition={"fractions": [1.0]})
    store.append(dataclasses.replace(tiles[1], provenance=wrong_length))
    with pytest.raises(ValueError, match="sample 1: condition fractions"):
        fraction_errors(store)


@pytest.mark.parametrize(
    "rule, kwargs, message",
    [
        (accept_within, {"max_error": -0.1}, r"in \[0, 1\]"),
        (accept_within, {"max_error": 5}, r"in \[0, 1\]"),
        (accept_within, {"max_error": float("nan")}, r"in \[0, 1\]"),
        (accept_within, {"max_error": "0.05"}, "number"),
        (reject_small_phases, {"min_pixels": -1}, ">= 0"),
        (reject_small_phases, {"min_pixels": 2.5}, "integer"),
        (accept_within, {"max_error": 0.1, "indices": [0, 12, -1]}, r"\[-1, 12\] out of range"),
        (accept_within, {"max_error": 0.1, "indices": [1.0]}, "integers"),
    ],
)
def test_bad_arguments_raise_and_change_nothing(store, rule, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rule(store, **kwargs)
    assert set(store.statuses()) == {"pending"}


def test_read_only_store_is_refused(store):
    with pytest.raises(PermissionError, match="read-only"):
        accept_within(DatasetStore.open(store.path), max_error=0.05)


def test_agreement_rule_keeps_the_pairs_a_real_data_segmenter_agrees_with(tmp_path, tiles, capsys):
    """Half the pairs have their true masks, half masks with the phases swapped around (what a generator
    with mask-image inconsistency produces): the bundled segmenter accepts the first, rejects the second,
    and the rule is recorded with each status and named in the export's card."""
    from napari_microsynth.cli import main
    from napari_microsynth.engines.agreement import accept_agreeing
    from napari_microsynth.engines.training_set import _synthetic_pairs
    from napari_microsynth.models.segmenter import Segmenter
    from napari_microsynth.resources import resources_dir

    pairs = [t if k % 2 == 0 else dataclasses.replace(t, mask=((t.mask + 1) % 4).astype(t.mask.dtype))
             for k, t in enumerate(tiles[:8])]
    store = DatasetStore.create(tmp_path / "pairs.zarr", pairs[0].schema)
    store.extend(pairs)
    store.set_status(7, "flagged")  # a person's decision is left alone
    segmenter = Segmenter.load(resources_dir() / "models" / "plm-uhcs-demo")
    result = accept_agreeing(store, segmenter, 0.3, "plm-uhcs-demo")
    assert sorted(result.scores) == list(range(7))
    assert result.accepted == [0, 2, 4, 6] and result.rejected == [1, 3, 5]
    assert min(result.scores[i] for i in (0, 2, 4, 6)) > max(result.scores[i] for i in (1, 3, 5))
    assert store.status_rule(0) == "agreement mIoU with plm-uhcs-demo >= 0.3"
    assert store.status_rule(1) == "agreement mIoU with plm-uhcs-demo < 0.3"
    assert store.status(7) == "flagged" and store.status_rule(7) is None
    source = _synthetic_pairs(store)[1]
    assert "4 by the rule 'agreement mIoU with plm-uhcs-demo >= 0.3'" in source
    store.close()

    again = DatasetStore.create(tmp_path / "cli.zarr", pairs[0].schema)
    again.extend(pairs[:4])
    again.close()
    assert main(["-q", "curate", str(tmp_path / "cli.zarr"), "--agreement", "0.3", "--threads", "2"]) == 0
    assert "accepted 2, rejected 2 of 4 pending pairs" in capsys.readouterr().out
    assert main(["-q", "curate", str(tmp_path / "cli.zarr"), "--segmenter", "plm-uhcs-demo"]) == 2
