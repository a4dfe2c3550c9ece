"""Augmented training-set export on real UHCS micrographs.

Synthetic pairs are stand-ins made without training a generator: real UHCS tiles (of micrographs not in
the real training split used here) shrunk 2x, with the pixel size doubled, origin "synthetic" and a
fraction condition, as PF-DiffSeg's downscaled output would be.
"""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from napari_microsynth.core.curation import accepted_pairs
from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.resample import to_real_scale
from napari_microsynth.core.sample import Sample
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.core.tiles import labelled_tiles
from napari_microsynth.engines.reports import class_balance
from napari_microsynth.engines.training_set import compose_training_set, export_training_set

from helpers import CHECKSUM, make_synthetic_pairs, write_synthetic_store

TILE = 128


@pytest.fixture(scope="module")
def real(shared_data):
    folder = shared_data / "uhcs"
    train = load_dataset(folder, split="train")
    return {
        "train": train[:2],  # uhcs0007, uhcs0599: 0.194 um/px each
        "sources": train[2:4],  # stand-ins for generated pairs
        "val": load_dataset(folder, split="val")[:1],
        "test": load_dataset(folder, split="test")[:1],
    }


@pytest.fixture(scope="module")
def real_px(real) -> float:
    return float(np.median([s.pixel_size_um for s in real["train"]]))


@pytest.fixture(scope="module")
def pairs(real, real_px) -> list[Sample]:
    return make_synthetic_pairs(real["sources"], real_px, TILE)  # 2 x 15 pairs of 64x64 px


@pytest.fixture(scope="module")
def synthetic_store(pairs, tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("synthetic") / "pairs.zarr", pairs)


@pytest.fixture(scope="module")
def exported(real, synthetic_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "training_set"
    summary = export_training_set(out, real["train"], real["val"], real["test"], synthetic=synthetic_store[0].path,
                                  ratio=1, tile=TILE, description="UHCS test export", source="uhcs 16/4/4")
    return out, summary


def test_labelled_tiles_are_the_full_non_overlapping_tiles_of_each_micrograph(real):
    tiles = labelled_tiles(real["train"], TILE)
    assert len(tiles) == 2 * (484 // TILE) * (645 // TILE) == 30
    assert all(t.shape == (TILE, TILE) for t in tiles)
    first, last = tiles[0], tiles[-1]
    assert first.provenance.source.endswith("uhcs0007.tif") and first.provenance.crop_box == (0, 0, 128, 128)
    assert last.provenance.source.endswith("uhcs0599.tif") and last.provenance.crop_box == (256, 512, 384, 640)
    np.testing.assert_array_equal(last.mask, real["train"][1].mask[256:384, 512:640])


def test_generated_pairs_are_resampled_to_the_real_pixel_size(pairs, real_px):
    pair = pairs[0]
    scaled = to_real_scale(pair, real_px, TILE)
    assert pair.shape == (64, 64) and scaled.shape == (128, 128)
    assert scaled.pixel_size_um == pytest.approx(real_px)
    assert scaled.provenance.extra["resampled_from_px"] == [64, 64]
    assert scaled.provenance.seed == pair.provenance.seed and scaled.provenance.model_checksum == CHECKSUM
    # nearest-neighbour mask: the same classes, each pixel became a 2x2 block, fractions unchanged
    np.testing.assert_array_equal(scaled.mask[::2, ::2], pair.mask)
    np.testing.assert_allclose(scaled.fractions, pair.fractions, atol=1e-12)
    assert scaled.image.dtype == np.float32 and 0.0 <= scaled.image.min() and scaled.image.max() <= 1.0
    assert abs(float(scaled.image.mean()) - float(pair.image.mean())) < 0.01

    with pytest.raises(ValueError, match="smaller than the 256x256 training tile"):
        to_real_scale(pair, real_px, 256)
    unknown = replace(pair, pixel_size_um=None)
    assert to_real_scale(unknown, real_px, 64) is unknown  # pixel size unknown: factor 1, kept as is


def test_compose_takes_the_first_pairs_at_the_ratio(real, pairs):
    tiles = labelled_tiles(real["train"], TILE)
    for ratio, n_synthetic in ((0, 0), (0.5, 15), (1, 30)):
        composed = compose_training_set(tiles, pairs, ratio)
        assert len(composed) == 30 + n_synthetic
        assert all(a is b for a, b in zip(composed[:30], tiles))
        assert [s.name for s in composed[30:]] == [p.name for p in pairs[:n_synthetic]]
    with pytest.raises(ValueError, match="needs 60 synthetic pairs, but only 30 are available"):
        compose_training_set(tiles, pairs, 2)


def test_only_accepted_synthetic_pairs_are_used(synthetic_store, pairs):
    store, left_out = synthetic_store
    used = accepted_pairs(store)
    assert [p.name for p in used] == [p.name for p in pairs]
    assert used[2].provenance.origin == "corrected" and used[2].provenance.changed_pixels > 0
    assert not {p.name for p in used} & {name for names in left_out.values() for name in names}


def test_class_balance_reflects_the_added_pairs(real, pairs, real_px, tmp_path):
    tiles = labelled_tiles(real["train"], TILE)
    scaled = [to_real_scale(p, real_px, TILE) for p in pairs]
    balance = class_balance(tiles, tiles + scaled, tiles[0].schema, out_dir=tmp_path)
    counts = lambda samples: sum(np.bincount(s.mask.ravel(), minlength=4) for s in samples)  # noqa: E731
    np.testing.assert_allclose(balance.share_before, counts(tiles) / counts(tiles).sum())
    np.testing.assert_allclose(balance.share_after, counts(tiles + scaled) / counts(tiles + scaled).sum())
    rows = list(csv.DictReader((tmp_path / "class_balance.csv").open()))
    assert [r["phase"] for r in rows] == list(tiles[0].schema.names)
    assert float(rows[3]["share_real_synthetic"]) == pytest.approx(balance.share_after[3])
    assert (tmp_path / "class_balance.png").stat().st_size > 5000
    assert "widmanstaetten" in balance.as_text() and " pt" in balance.as_text()


def test_export_writes_train_val_test_and_a_dataset_card(exported, real, synthetic_store, real_px):
    out, summary = exported
    store = DatasetStore.open(out / "dataset.zarr")
    splits = store.splits
    assert {k: len(v) for k, v in splits.items()} == {"train": 60, "val": 1, "test": 1}
    assert len(store) == 62
    origins = [store.provenance(i).origin for i in splits["train"]]
    assert origins == ["real"] * 30 + ["synthetic"] * 2 + ["corrected"] + ["synthetic"] * 27
    # val/test: the whole real micrographs, never tiled, never synthetic
    for split, source in (("val", real["val"][0]), ("test", real["test"][0])):
        sample = store[splits[split][0]]
        assert sample.name == source.name and sample.shape == (484, 645)
        assert sample.provenance.origin == "real" and sample.provenance.crop_box is None
        np.testing.assert_array_equal(sample.mask, source.mask)
    synthetic = [store[i] for i in splits["train"][30:]]
    assert all(s.shape == (TILE, TILE) and s.pixel_size_um == pytest.approx(real_px) for s in synthetic)
    _, left_out = synthetic_store
    assert not set(store.names) & {name for names in left_out.values() for name in names}
    assert set(store.statuses()) == {"accepted"}

    # class balance after = real tiles + resampled synthetic pairs, as stored
    counts = store.class_counts()
    after = counts[splits["train"]].sum(axis=0)
    np.testing.assert_allclose(summary.balance.share_after, after / after.sum())
    before = counts[splits["train"][:30]].sum(axis=0)
    np.testing.assert_allclose(summary.balance.share_before, before / before.sum())
    assert not np.allclose(summary.balance.share_before, summary.balance.share_after)

    card = (out / "README.md").read_text()
    assert "UHCS test export" in card and "uhcs 16/4/4" in card
    assert "**1:1**" in card and "30 real 128x128 tiles + 30 synthetic pairs, of which 1 with hand-corrected" in card
    assert "| train | 1 | 30 | 29 | 60 |" in card  # corrected | real | synthetic | total
    assert "| fake-diffusion | 0.1 | `0123456789abcdef` | 30 | 1 | 100-129 |" in card
    assert "class_balance.png" in card and "fraction_histograms.png" in card
    for name in ("class_balance.png", "fraction_histograms.png"):
        assert (out / name).stat().st_size > 5000
    plan = json.loads((out / "export_plan.json").read_text())
    assert [tuple(e) for e in plan["samples"][:1]] == [(store.names[0], "train", "real")]
    assert len(plan["samples"]) == 62 and plan["settings"]["ratio"] == 1.0


def test_killed_export_resumes_to_the_same_store(exported, real, synthetic_store, tmp_path):
    reference_out, _ = exported
    out = tmp_path / "killed"
    calls = []

    def dies_after_17():
        calls.append(1)
        if len(calls) > 17:
            raise RuntimeError("process killed")
        return False

    with pytest.raises(RuntimeError, match="process killed"):
        export_training_set(out, real["train"], real["val"], real["test"], synthetic=synthetic_store[0].path,
                            ratio=1, tile=TILE, description="UHCS test export", source="uhcs 16/4/4",
                            should_stop=dies_after_17)
    assert len(DatasetStore.open(out / "dataset.zarr")) == 17 and not (out / "README.md").exists()

    summary = export_training_set(out, real["train"], real["val"], real["test"], synthetic=synthetic_store[0].path,
                                  ratio=1, tile=TILE, description="UHCS test export", source="uhcs 16/4/4")
    assert summary.resumed_from == 17
    resumed, reference = DatasetStore.open(out / "dataset.zarr"), DatasetStore.open(reference_out / "dataset.zarr")
    assert resumed.names == reference.names and len(set(zip(resumed.names, range(62)))) == 62
    assert resumed.splits == reference.splits
    for i in range(len(reference)):
        a, b = resumed[i], reference[i]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.provenance == b.provenance and a.pixel_size_um == b.pixel_size_um
    assert (out / "README.md").read_text() == (reference_out / "README.md").read_text()


def test_cancel_leaves_a_resumable_export(real, tmp_path):
    out = tmp_path / "cancelled"
    with pytest.raises(Cancelled):
        export_training_set(out, real["train"], ratio=0, tile=TILE, should_stop=lambda: True)
    assert (out / "export_plan.json").is_file() and not (out / "README.md").exists()
    assert len(DatasetStore.open(out / "dataset.zarr")) == 0
    summary = export_training_set(out, real["train"], ratio=0, tile=TILE)
    assert summary.counts == {"train": {"real": 30}}
    assert "No synthetic pairs (real only)" in (out / "README.md").read_text()


def test_existing_exports_are_refused_without_overwrite(real, pairs, tmp_path):
    out = tmp_path / "set"
    export_training_set(out, real["train"], real["val"], ratio=0, tile=TILE)
    with pytest.raises(FileExistsError, match="finished export"):
        export_training_set(out, real["train"], real["val"], ratio=0, tile=TILE)
    with pytest.raises(FileExistsError, match="different plan.*ratio 0.0 -> 0.5"):
        export_training_set(out, real["train"], real["val"], synthetic=pairs, ratio=0.5, tile=TILE)

    summary = export_training_set(out, real["train"], real["val"], synthetic=pairs, ratio=0.5, tile=TILE,
                                  folders=True, overwrite=True)
    assert summary.counts == {"train": {"real": 30, "synthetic": 15}, "val": {"real": 1}}
    assert len(DatasetStore.open(out / "dataset.zarr")) == 46
    rows = list(csv.DictReader((out / "folders" / "samples.csv").open()))
    assert len(rows) == 46 and rows[-1]["split"] == "val"

    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="no training-set export"):
        export_training_set(foreign, real["train"], ratio=0, tile=TILE, overwrite=True)
    assert (foreign / "chapter1.tex").read_text() == "keep me"


def test_overwrite_removes_only_the_exports_own_files_and_refuses_a_folder_holding_others(real, tmp_path):
    out = tmp_path / "set"
    export_training_set(out, real["train"], ratio=0, tile=TILE)
    exported = sorted(p.name for p in out.iterdir())
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match=r"files the export did not write \(notes.txt\)"):
        export_training_set(out, real["train"], real["val"], ratio=0, tile=TILE, overwrite=True)
    assert (out / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in out.iterdir()) == sorted([*exported, "notes.txt"])
    assert len(DatasetStore.open(out / "dataset.zarr")) == 30  # the earlier export is intact

    (out / "notes.txt").unlink()
    summary = export_training_set(out, real["train"], real["val"], ratio=0, tile=TILE, overwrite=True)
    assert summary.counts == {"train": {"real": 30}, "val": {"real": 1}}


def test_held_out_and_synthetic_data_are_kept_apart(real, pairs):
    with pytest.raises(ValueError, match="both the train and the test split: uhcs0007"):
        export_training_set("unused", real["train"], real_test=real["train"][:1], ratio=0, tile=TILE)
    with pytest.raises(ValueError, match="val sample 'fake-100' is synthetic"):
        export_training_set("unused", real["train"], real_val=pairs[:1], ratio=0, tile=TILE)
    with pytest.raises(ValueError, match="smaller than the 256x256 training tile"):
        export_training_set("unused", real["train"], synthetic=pairs, ratio=1, tile=256)
    assert not Path("unused").exists()
