"""The README's main job on the bundled sample data."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_microsynth.core.store import DatasetStore
from napari_microsynth.engines.demo import DEMO_PAIRS, DEMO_TILE, run_demo


def test_demo_segments_generates_curates_and_exports(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(out)
    assert "uhcs1648" in summary and "mIoU" in summary and "auto-curation" in summary
    for name in ("fractions.csv", "tile_fraction_histograms.png", "phases_no_ratio.png", "phases_true_ratio.png",
                 "generated_pairs.png"):
        assert (out / name).is_file(), name
    phase_map = np.asarray(Image.open(out / "phases_true_ratio.png"))
    assert phase_map.shape[0] > 484 and phase_map.shape[1] == 645  # the map with its legend below it
    pairs = DatasetStore.open(out / "generated.zarr")
    assert len(pairs) == DEMO_PAIRS
    assert {pairs.provenance(i).generator for i in range(len(pairs))} == {"two-stage-gan"}
    accepted = pairs.statuses().count("accepted")
    assert accepted == DEMO_PAIRS  # with the fraction control every pair is within 5 points of its target
    assert set(pairs.statuses()) <= {"accepted", "pending"}

    training = DatasetStore.open(out / "training_set" / "dataset.zarr")
    train = training.splits["train"]
    origins = [training.provenance(i).origin for i in train]
    assert origins.count("synthetic") == accepted
    assert origins.count("real") == (484 // DEMO_TILE) * (645 // DEMO_TILE)  # uhcs1648 is 645 x 484
    assert all(training.shape(i) == (DEMO_TILE, DEMO_TILE) for i in train)
    card = (out / "training_set" / "README.md").read_text()
    assert "two-stage-gan" in card
    assert (out / "training_set" / "folders" / "samples.csv").is_file()
    with pytest.raises(FileExistsError):
        run_demo(out)


def test_demo_refuses_to_delete_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a demo output"):
        run_demo(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
