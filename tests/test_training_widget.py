"""The "Train segmenter" widget: train from layers, cancel and resume, fine-tune on a corrected phase map."""
from __future__ import annotations

import json

import numpy as np
import pytest

from napari_microsynth.core.sample_data import load_sample
from napari_microsynth.napari_io import label_colormap, phase_features

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    sample = load_sample()
    viewer.add_image(sample.image, name="uhcs1648")
    viewer.add_labels(sample.mask, name="annotation", colormap=label_colormap(sample.schema),
                      features=phase_features(sample.schema))
    return viewer


def _training_widget(viewer, tmp_path, steps: int):
    from napari_microsynth.widgets.training import TrainingWidget

    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.setCurrentText("uhcs1648")
    widget.labels_combo.setCurrentText("annotation")
    widget.add_pair()
    widget.preset_combo.setCurrentText("tiny")
    widget.plm_combo.setCurrentText("RE+SA+FA")
    widget.tile_spin.setValue(64)
    widget.steps_spin.setValue(steps)
    widget.device_combo.setCurrentText("cpu")
    widget.out_path.setText(str(tmp_path / "model-out"))
    return widget


def test_a_model_trained_from_layers_appears_in_the_phase_ratio_widget(viewer, tmp_path, qtbot):
    from napari_microsynth.widgets.phase_ratio import PhaseRatioWidget

    ratios = PhaseRatioWidget(viewer)
    viewer.window.add_dock_widget(ratios)
    widget = _training_widget(viewer, tmp_path, steps=12)
    widget.train()
    qtbot.waitUntil(lambda: widget.model_folder is not None, timeout=120_000)
    assert len(widget.losses) == 12 and widget.plot.pixmap() is not None
    assert ratios.model_combo.currentText() == "folder: model"
    card = (widget.model_folder / "README.md").read_text()
    assert "napari layers: uhcs1648 + annotation" in card and "PLM: RE+SA+FA" in card
    assert widget.train_button.text() == "Resume training" and widget.train_button.isEnabled()


def test_cancel_keeps_a_checkpoint_and_train_resumes_from_it(viewer, tmp_path, qtbot):
    widget = _training_widget(viewer, tmp_path, steps=400)
    widget.train()
    qtbot.waitUntil(lambda: len(widget.losses) >= 3, timeout=60_000)
    widget.progress.cancel()
    qtbot.waitUntil(lambda: not widget.progress.busy, timeout=60_000)
    assert "a checkpoint was kept" in widget.message.text() and widget.train_button.text() == "Resume training"
    stopped_at = widget.losses[-1][0]
    widget.steps_spin.setValue(stopped_at + 2)
    widget.train()
    qtbot.waitUntil(lambda: widget.model_folder is not None, timeout=60_000)
    training = json.loads((widget.model_folder / "config.json").read_text())["training"]
    assert training["steps_done"] == stopped_at + 2
    assert [step for step, _ in widget.losses] == [stopped_at + 1, stopped_at + 2]  # continued, not restarted


def test_fine_tune_on_a_corrected_phase_map(viewer, tmp_path, qtbot):
    from napari_microsynth.widgets.phase_ratio import PhaseRatioWidget

    ratios = PhaseRatioWidget(viewer)
    viewer.window.add_dock_widget(ratios)
    ratios.model_combo.setCurrentText("bundled: plm-uhcs-demo")
    ratios.image_combo.setCurrentText("uhcs1648")
    ratios.segment()
    qtbot.waitUntil(lambda: ratios.session is not None and ratios.labels_layer is not None, timeout=60_000)
    qtbot.waitUntil(lambda: not ratios.updating, timeout=30_000)
    corrected = np.asarray(ratios.labels_layer.data).copy()
    corrected[:40, :60] = 3  # the metallurgist paints a Widmanstaetten colony the model missed
    ratios.labels_layer.data = corrected
    changed = int((corrected != ratios._predicted).sum())
    assert changed > 0

    from napari_microsynth.widgets.training import TrainingWidget

    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.fine_tune_on_corrections()
    assert widget.init_combo.currentText() == "folder: plm-uhcs-demo"
    assert not widget.arch_combo.isEnabled() and widget.preset_combo.currentText() == "small"
    widget.steps_spin.setValue(2)
    widget.device_combo.setCurrentText("cpu")
    widget.out_path.setText(str(tmp_path / "fine-tuned"))
    widget.train()
    qtbot.waitUntil(lambda: widget.model_folder is not None, timeout=120_000)
    training = json.loads((widget.model_folder / "config.json").read_text())["training"]
    assert training["fine_tuned_from"].endswith("plm-uhcs-demo")
    assert training["corrections_seen"] == [{"name": "uhcs1648", "was": "predicted", "changed_pixels": changed}]
    assert ratios.model_combo.currentText() == "folder: model"


def test_a_dataset_folder_is_read_in_the_background_and_validated(viewer, tmp_path, qtbot, shared_data):
    widget = _training_widget(viewer, tmp_path, steps=4)
    widget.source_combo.setCurrentIndex(1)
    widget.data_path.setText(str(shared_data / "uhcs"))
    widget.train_split.setText("train")
    widget.val_split.setText("val")
    widget.validate_spin.setValue(2)
    widget.train()
    qtbot.waitUntil(lambda: widget.model_folder is not None, timeout=120_000)
    config = json.loads((widget.model_folder / "config.json").read_text())
    assert config["training"]["data"] == "uhcs: split 'train', validation 'val'"
    assert "miou (validation, true ratio)" in config["metrics"]
    # the validation mIoU was plotted live, at steps 2 and 4, next to the loss
    assert [step for step, _ in widget.val_scores] == [2, 4]
    assert all(0.0 <= miou <= 1.0 for _, miou in widget.val_scores)
    assert widget.val_scores[-1][1] == pytest.approx(config["metrics"]["miou (validation, true ratio)"], abs=1e-6)
