"""The "Export training set" dock widget on a real UHCS store and stand-in synthetic pairs."""
from __future__ import annotations

import numpy as np
import pytest

from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.widgets.export_widget import NO_SPLIT, ExportWidget

from helpers import make_synthetic_pairs, write_synthetic_store

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def stores(shared_data, tmp_path_factory):
    """A real store (2 train, 1 val, 1 test whole UHCS micrographs) and a store of synthetic pairs."""
    folder = shared_data / "uhcs"
    train = load_dataset(folder, split="train")
    root = tmp_path_factory.mktemp("stores")
    real = DatasetStore.create(root / "real.zarr", train[0].schema)
    for split, samples in (("train", train[:2]), ("val", load_dataset(folder, split="val")[:1]),
                           ("test", load_dataset(folder, split="test")[:1])):
        real.extend(samples, split=split)
    real_px = float(np.median([s.pixel_size_um for s in train[:2]]))
    write_synthetic_store(root / "pairs.zarr", make_synthetic_pairs(train[2:4], real_px, 256))  # 4 pairs
    return root / "real.zarr", root / "pairs.zarr"


@pytest.fixture
def widget(make_napari_viewer, stores, qtbot):
    viewer = make_napari_viewer()
    w = ExportWidget(viewer)
    viewer.window.add_dock_widget(w, name="Export training set")
    w.set_real(stores[0])
    qtbot.waitUntil(lambda: w.n_real_tiles() is not None, timeout=TIMEOUT_MS)  # the train split is counted
    return w


def test_export_writes_the_training_set_and_shows_the_class_balance(widget, stores, qtbot, tmp_path):
    assert [widget.split_combos["val"].itemText(i) for i in range(widget.split_combos["val"].count())] == [
        NO_SPLIT, "train", "val", "test"]
    assert widget.split_combos["test"].currentText() == "test"
    widget.set_synthetic(stores[1])
    assert widget.synthetic_info.text() == "4 accepted synthetic pairs (1 corrected) of 9"
    widget.preset_buttons[0].click()  # 1:1
    widget.tile_box.setValue(256)
    widget.out_edit.setText(str(tmp_path / "set"))
    widget.export_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

    assert widget.summary is not None, widget.message.text()
    assert widget.summary.counts == {"train": {"real": 4, "synthetic": 3, "corrected": 1}, "val": {"real": 1},
                                     "test": {"real": 1}}
    assert "4 real tiles + 4 synthetic" in widget.message.text()
    card = (tmp_path / "set" / "README.md").read_text()
    assert "**1:1**" in card and "fake-diffusion" in card
    table = widget.balance_view.toPlainText()
    assert "real + synthetic" in table and "widmanstaetten" in table
    assert widget.export_button.isEnabled()

    widget.export_button.click()  # the same export again: refused, nothing replaced
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert "already holds a finished export" in widget.message.text()
    assert (tmp_path / "set" / "README.md").read_text() == card


def test_cancel_stops_the_export_and_leaves_it_resumable(widget, qtbot, tmp_path):
    widget.set_synthetic(None)
    assert widget.ratio_box.value() == 0.0
    widget.tile_box.setValue(32)  # 2 micrographs x 15 x 20 tiles: long enough to cancel
    widget.out_edit.setText(str(tmp_path / "real_only"))
    widget.export_button.click()
    qtbot.waitUntil(lambda: widget.progress.bar.maximum() == 602 and widget.progress.bar.value() >= 5,
                    timeout=TIMEOUT_MS)
    widget.progress.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

    assert "cancelled" in widget.message.text() and widget.summary is None
    stored = len(DatasetStore.open(tmp_path / "real_only" / "dataset.zarr"))
    assert 5 <= stored < 602
    assert not (tmp_path / "real_only" / "README.md").exists()
    assert widget.export_button.isEnabled()


def test_presets_show_the_pairs_they_need_and_a_store_never_gets_a_failing_ratio(widget, stores, qtbot):
    """Item 9 of issue 16: with 7 accepted pairs every preset failed, after the store was set to 1:1."""
    assert widget.n_real_tiles() == 4  # two 484 x 645 micrographs, two 256 px tiles each
    widget.set_synthetic(stores[1])    # 4 accepted pairs
    assert [b.text() for b in widget.preset_buttons] == ["1:1 (4)", "1:2 (8)", "1:4 (16)", "1:6 (24)", "1:8 (32)",
                                                         "1:10 (40)"]
    assert [b.isEnabled() for b in widget.preset_buttons] == [True] + [False] * 5
    assert widget.ratio_box.value() == 1.0
    assert widget.ratio_info.text() == "4 real 256 px tiles: 1:1 uses 4 of the 4 accepted pairs"

    widget.out_edit.setText("out")
    widget.tile_box.setValue(128)      # 3 x 5 tiles per micrograph: even 1:1 needs 30 pairs
    assert not any(b.isEnabled() for b in widget.preset_buttons)
    assert widget.ratio_info.text() == "30 real 128 px tiles: 1:1 needs 30 synthetic pairs, the store has 4 accepted"
    assert not widget.export_button.isEnabled()

    widget.set_synthetic(stores[1])    # choosing the store again picks what it can fill
    assert widget.ratio_box.value() == pytest.approx(0.1)
    assert widget.ratio_info.text() == "30 real 128 px tiles: 1:0.1 uses 3 of the 4 accepted pairs"
    assert widget.export_button.isEnabled()


def test_the_synthetic_store_must_be_a_store(widget, shared_data):
    with pytest.raises(ValueError, match="is a dataset folder .* import it first"):
        widget.set_synthetic(shared_data / "uhcs")
