"""The Curation dock widget: correct a mask with the labels layer, accept / reject / flag, rules, shortcuts."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_microsynth.core.sample import Provenance
from napari_microsynth.core.folder_export import export_folder
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.core.tiles import tile_samples
from napari_microsynth.widgets.curation import IMAGE_LAYER, MASK_LAYER, CurationWidget


@pytest.fixture
def pair_store(read_uhcs, tmp_path):
    """Six real UHCS 128 px tiles stored as generated pairs: targets equal to their fractions for the
    first four, 20 points off for the last two."""
    tiles = tile_samples(read_uhcs(1)[0], 128)[:6]
    store = DatasetStore.create(tmp_path / "pairs.zarr", tiles[0].schema)
    for k, tile in enumerate(tiles):
        target = tile.fractions.copy()
        if k >= 4:
            target = np.roll(target, 1) * 0.8 + 0.2 * np.eye(len(target))[0]
        provenance = Provenance(origin="synthetic", generator="pf-diffseg", seed=k,
                                condition={"fractions": [float(v) for v in target / target.sum()]})
        store.append(replace(tile, name=f"pair {k}", provenance=provenance))
    return store.path


@pytest.fixture
def widget(make_napari_viewer, pair_store):
    viewer = make_napari_viewer()
    widget = CurationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Curation")
    widget.open_store(pair_store)
    return widget


def test_corrected_and_accepted_mask_is_in_the_store_as_corrected(widget, pair_store):
    viewer = widget.viewer
    assert widget.current_index == 0 and len(widget.queue) == 6
    labels = viewer.layers[MASK_LAYER]
    original = labels.data.copy()
    labels.brush_size = 9
    labels.paint((64, 64), 2)          # what a brush stroke with napari's paint tool does
    painted = labels.data.copy()
    changed = int(np.count_nonzero(painted != original))
    assert changed > 0

    widget.accept()

    assert widget.current_index == 1   # moved on to the next pair
    shown = labels.data.copy()
    labels.undo()                      # the stroke on pair 0 cannot be undone into pair 1
    np.testing.assert_array_equal(labels.data, shown)
    store = DatasetStore.open(pair_store)  # a fresh reader sees it: nothing waits for a "save"
    assert store.status(0) == "accepted"
    provenance = store.provenance(0)
    assert provenance.origin == "corrected"
    assert provenance.changed_pixels == changed
    assert provenance.extra["original_origin"] == "synthetic"
    np.testing.assert_array_equal(store.mask(0), painted)
    np.testing.assert_array_equal(store.mask(0, version="mask"), original)


def test_rejected_pair_is_left_out_of_the_export(widget, pair_store, tmp_path):
    widget.next_pair()
    widget.reject()
    store = DatasetStore.open(pair_store)
    assert store.status(1) == "rejected"
    out = export_folder(store, tmp_path / "export")
    exported = (out / "samples.csv").read_text()
    assert "pair 0" in exported and "pair 1" not in exported


def test_keyboard_shortcuts_move_and_decide(widget, pair_store):
    from app_model.types import KeyBinding

    keymap = widget.viewer.keymap

    def press(key: str) -> None:
        keymap[KeyBinding.from_str(key)](widget.viewer)

    press("Alt+Right")
    assert widget.current_index == 1
    press("Alt+Left")
    assert widget.current_index == 0
    press("Alt+G")
    assert DatasetStore.open(pair_store).status(0) == "flagged"
    assert widget.current_index == 1
    press("Alt+R")
    assert DatasetStore.open(pair_store).status(1) == "rejected"


def test_batch_rules_accept_on_target_pairs_and_leave_manual_decisions(widget, pair_store):
    widget.next_pair()
    widget.reject()  # a manual decision on pair 1, which is on target
    accepted = widget.accept_by_fraction_error(0.01)
    assert sorted(accepted) == [0, 2, 3]
    store = DatasetStore.open(pair_store)
    assert store.statuses() == ["accepted", "rejected", "accepted", "accepted", "pending", "pending"]
    # the pending queue now holds only the two off-target pairs
    assert widget.queue == [4, 5]


def test_clean_up_removes_specks_and_counts_as_a_correction(widget, pair_store):
    labels = widget.viewer.layers[MASK_LAYER]
    clean = labels.data.copy()
    specked = clean.copy()
    # single-pixel specks of another phase inside uniform 5x5 neighbourhoods
    uniform = [(y, x) for y in range(2, 126, 9) for x in range(2, 126, 9)
               if np.all(clean[y - 2:y + 3, x - 2:x + 3] == clean[y, x])]
    assert len(uniform) >= 10
    for y, x in uniform[:12]:
        specked[y, x] = (clean[y, x] + 1) % 4
    labels.data = specked
    for box in widget.cleanup.size_boxes:
        box.setValue(5)
    widget.clean_up_mask()
    cleaned = labels.data
    for y, x in uniform[:12]:
        assert cleaned[y, x] == clean[y, x]
    # besides the specks only real regions under 5 px (single spheroidite particles) were filled
    assert np.count_nonzero(cleaned != clean) < 0.02 * clean.size
    widget.accept()
    provenance = DatasetStore.open(pair_store).provenance(0)
    assert provenance.origin == "corrected" and provenance.changed_pixels == np.count_nonzero(cleaned != clean)


def test_pairs_are_shown_in_micrometres_with_a_scale_bar_and_phase_names(make_napari_viewer, read_uhcs, tmp_path):
    """A pair with a known pixel size is shown in micrometres with napari's scale bar on; hovering the mask
    names the phase in the status bar. A pair of unknown scale goes back to pixels."""
    sample = read_uhcs(1)[0]
    store = DatasetStore.create(tmp_path / "pairs.zarr", sample.schema)
    store.append(replace(sample.crop((0, 0, 64, 64)), name="known", pixel_size_um=0.388))
    store.append(replace(sample.crop((64, 0, 128, 64)), name="unknown", pixel_size_um=None))
    viewer = make_napari_viewer()
    widget = CurationWidget(viewer)
    widget.open_store(store.path)
    image, labels = viewer.layers[IMAGE_LAYER], viewer.layers[MASK_LAYER]
    for layer in (image, labels):
        np.testing.assert_allclose(layer.scale, (0.388, 0.388))
        assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert viewer.canvas.overlays.scale_bar.visible
    y, x = np.argwhere(labels.data == 2)[0]  # a spheroidite pixel
    assert "phase: spheroidite" in labels.get_status((y, x))["coordinates"]

    widget.next_pair()
    assert tuple(labels.scale) == (1.0, 1.0) and [str(u) for u in labels.units] == ["pixel", "pixel"]


def test_reopening_the_store_lists_new_pairs_keeps_the_pair_on_screen_and_its_edits(widget, pair_store, read_uhcs):
    """Synthesis's Curate button reopens the store after more pairs were generated into it."""
    widget.next_pair()
    labels = widget.viewer.layers[MASK_LAYER]
    edited = labels.data.copy()
    edited[:4] = 3
    labels.data = edited
    writer = DatasetStore.open(pair_store, mode="a")
    writer.append(replace(tile_samples(read_uhcs(1)[0], 128)[6], name="new pair"))

    widget.open_store(pair_store)

    assert widget.queue == [0, 1, 2, 3, 4, 5, 6]
    assert widget.current_index == 1
    store = DatasetStore.open(pair_store)
    np.testing.assert_array_equal(store.mask(1), edited)
    assert store.provenance(1).origin == "corrected"


def test_the_pair_is_shown_alone_and_hidden_layers_come_back(make_napari_viewer, read_uhcs, pair_store):
    """Item 4 of issue 16: the curation pair does not lie on top of the micrograph's corner with it showing."""
    sample = read_uhcs(1)[0]
    viewer = make_napari_viewer()
    micrograph = viewer.add_image(sample.image, name="micrograph")
    phases = viewer.add_labels(sample.mask, name="phases")
    off_already = viewer.add_image(sample.image, name="hidden by the user", visible=False)
    widget = CurationWidget(viewer)
    widget.open_store(pair_store)

    assert not micrograph.visible and not phases.visible
    assert viewer.layers[IMAGE_LAYER].visible and viewer.layers[MASK_LAYER].visible
    np.testing.assert_allclose(viewer.camera.center[-2:], (63.5, 63.5), atol=1.0)  # fitted to the 128 px pair
    widget.next_pair()
    assert not micrograph.visible

    widget.only_pair_box.setChecked(False)
    assert micrograph.visible and phases.visible and not off_already.visible
    widget.only_pair_box.setChecked(True)
    assert not micrograph.visible and viewer.layers[MASK_LAYER].visible


def test_actions_wait_for_their_prerequisites_and_messages_say_what_is_missing(
    make_napari_viewer, read_uhcs, shared_data, tmp_path, monkeypatch
):
    """Item 6 of issue 16: nothing to click that can only fail; a dataset folder is not opened as a store."""
    from qtpy.QtWidgets import QFileDialog

    sample = read_uhcs(1)[0]
    viewer = make_napari_viewer()
    widget = CurationWidget(viewer)
    image = viewer.add_image(sample.image, name="micrograph")
    labels = viewer.add_labels(sample.mask, name="phases")
    viewer.layers.selection.update({image, labels})
    assert not widget.add_layers_button.isEnabled()  # no store yet
    assert not any(button.isEnabled() for button in widget.decision_buttons)
    assert not widget.cleanup.isEnabled() and not widget.rules_box.isEnabled()
    with pytest.raises(ValueError, match=r"open a store first \(Open store...\)"):
        widget.add_selected_layers()

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(shared_data / "uhcs"))
    widget.open_button.click()
    assert widget.store is None
    assert widget.message.text() == (
        f"cannot open uhcs: uhcs is a dataset folder (uhcs layout), not a dataset store: import it first with "
        f"`microsynth import {shared_data / 'uhcs'} uhcs.zarr`")

    DatasetStore.create(tmp_path / "pairs.zarr", sample.schema).close()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(tmp_path / "pairs.zarr"))
    widget.open_button.click()
    assert widget.store is not None and widget.rules_box.isEnabled()
    assert widget.add_layers_button.isEnabled()
    viewer.layers.selection.active = image  # the image alone cannot make a pair
    assert not widget.add_layers_button.isEnabled()
    viewer.layers.selection.update({image, labels})
    widget.add_layers_button.click()
    assert widget.message.text() == "added 1 pending pairs to pairs.zarr"
    assert widget.current_index == 0 and all(button.isEnabled() for button in widget.decision_buttons)


def test_clean_up_defaults_per_phase_previews_its_changes_and_is_undone(make_napari_viewer, read_uhcs, tmp_path):
    """Item 7 of issue 16: the default sizes keep the particle phase, the preview tells what a size would
    remove before anything is applied, and the clean-up is one undoable step."""
    sample = read_uhcs(1, pixel_size_um=0.388)[0].crop((0, 0, 128, 128))
    store = DatasetStore.create(tmp_path / "pairs.zarr", sample.schema)
    store.append(sample)
    viewer = make_napari_viewer()
    widget = CurationWidget(viewer)
    widget.open_store(store.path)
    panel, labels = widget.cleanup, viewer.layers[MASK_LAYER]
    original = labels.data.copy()
    spheroidite = int(np.count_nonzero(original == 2))
    assert spheroidite > 0

    sizes = panel.min_sizes()  # a 1 um^2 speck is 7 px at 0.388 um; never more than 10 % of a phase
    assert max(sizes) == 7
    after_defaults = panel.cleaned()
    assert np.count_nonzero((original == 2) & (after_defaults != 2)) <= 0.1 * spheroidite
    for box in panel.size_boxes:  # paper 002's 200 px would erase every spheroidite particle: the preview says so
        box.setValue(200)
    assert panel.preview_labels[2].text().startswith(f"{spheroidite} px in ")
    panel.size_boxes[2].setValue(1)
    assert panel.preview_labels[2].text() == "nothing"
    removed = [(int(np.count_nonzero((original == k) & (panel.cleaned() != original))), k) for k in range(4)]

    panel.apply_button.click()
    for pixels, k in removed:
        assert np.count_nonzero((original == k) & (labels.data != original)) == pixels
    assert np.count_nonzero(labels.data == 2) == spheroidite
    assert not panel.apply_button.isEnabled()  # nothing left to remove at these sizes

    labels.undo()  # napari's own undo (Ctrl+Z) restores the mask ...
    np.testing.assert_array_equal(labels.data, original)
    panel.apply_button.click()
    panel.undo_button.click()  # ... and so does the panel's Undo
    np.testing.assert_array_equal(labels.data, original)
    assert panel.apply_button.isEnabled()


def test_agreement_rule_keeps_pairs_the_real_data_segmenter_agrees_with(make_napari_viewer, read_uhcs, tmp_path, qtbot):
    """Pairs 1 and 3 have their phases swapped around: the bundled segmenter rejects them in the background,
    accepts the others, and a pair decided by hand keeps its status."""
    tiles = tile_samples(read_uhcs(1)[0], 200)[:4]
    store = DatasetStore.create(tmp_path / "pairs.zarr", tiles[0].schema)
    for k, tile in enumerate(tiles):
        mask = tile.mask if k % 2 == 0 else ((tile.mask + 1) % 4).astype(tile.mask.dtype)
        store.append(replace(tile, name=f"pair {k}", mask=mask, provenance=Provenance(origin="synthetic", seed=k)))
    path = store.path
    store.close()
    viewer = make_napari_viewer()
    widget = CurationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Curation")
    widget.open_store(path)
    widget.reject()  # pair 0 rejected by hand
    widget.keep_agreeing(0.3)
    qtbot.waitUntil(lambda: not widget.rule_progress.busy, timeout=120_000)
    assert "accepted 1, rejected 2 of 3 pending pairs" in widget.message.text()
    stored = DatasetStore.open(path)
    assert stored.statuses() == ["rejected", "rejected", "accepted", "rejected"]
    assert stored.status_rule(0) is None and stored.status_rule(2).startswith("agreement mIoU with plm-uhcs-demo")
