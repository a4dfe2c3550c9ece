"""The Synthesis dock widget: generate pairs into the viewer, cancel, curate, save, data-distribution mode."""
from __future__ import annotations

import numpy as np
import pytest

from napari_microsynth.core.conditions import BoostedFractionSampler, default_shares
from napari_microsynth.core.sample import Provenance, Sample
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.generators.pf_diffseg import PFDiffSeg
from napari_microsynth.widgets.synthesis import SynthesisWidget, real_fraction_vectors

UHCS = PhaseSchema.bundled("uhcs")
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def generator_folder(uhcs_samples, one_thread, tmp_path_factory):
    """A tiny PF-DiffSeg trained for a few steps on three real UHCS micrographs, saved as a model folder.

    Once the bundled demo generator exists in resources/models, the widget finds it by itself; these tests
    keep the tiny model so they stay fast and independent of the demo's training.
    """
    generator = PFDiffSeg(UHCS, "tiny", device="cpu")
    config = PFDiffSeg.TrainConfig(steps=5, batch_size=4, lr_schedule="constant", lr_warmup_steps=0)
    generator.train(uhcs_samples, config)
    return generator.save(tmp_path_factory.mktemp("models") / "pf-diffseg-tiny")


@pytest.fixture
def widget(make_napari_viewer, generator_folder, qtbot):
    viewer = make_napari_viewer()
    widget = SynthesisWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Synthesis")
    widget.device_combo.setCurrentText("cpu")
    widget.add_model_folder(generator_folder)
    return widget


def generate(widget, qtbot, pairs: int, steps: int = 2, batch_size: int = 4) -> None:
    widget.pairs_box.setValue(pairs)
    widget.option_widgets["steps"].setValue(steps)
    widget.option_widgets["batch_size"].setValue(batch_size)
    widget.generate_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def layers_of(viewer, kind: str) -> list:
    return [layer for layer in viewer.layers if layer._type_string == kind]


def test_generating_two_pairs_shows_two_image_and_labels_layers_with_fractions(widget, qtbot):
    viewer = widget.viewer
    assert widget.device_label.text() == "-> cpu"
    assert len(widget.sliders.sliders) == UHCS.n_classes
    widget.sliders.set_fractions([0.5, 0.3, 0.1, 0.1])
    widget.seed_box.setValue(7)

    generate(widget, qtbot, pairs=2)

    images, labels = layers_of(viewer, "image"), layers_of(viewer, "labels")
    assert [layer.name for layer in images] == ["synth 001 image", "synth 002 image"]
    assert [layer.name for layer in labels] == ["synth 001 mask", "synth 002 mask"]
    # a preview grid: the two pairs do not sit on top of each other, and each mask lies on its image
    assert tuple(images[0].translate) != tuple(images[1].translate)
    assert tuple(labels[1].translate) == tuple(images[1].translate)
    r, g, b = UHCS.phases[2].color
    np.testing.assert_allclose(labels[0].get_color(2)[:3], np.array([r, g, b]) / 255, atol=1e-6)

    for k, layer in enumerate(labels):
        entry = layer.metadata["microsynth"]["samples"][0]
        assert entry["provenance"]["seed"] == 7 + k
        assert entry["provenance"]["generator"] == "pf-diffseg"
        np.testing.assert_allclose(entry["target_fractions"], [0.5, 0.3, 0.1, 0.1])
        row = widget.pair_list.item(k).text()
        achieved = np.bincount(np.asarray(layer.data).ravel(), minlength=4) / layer.data.size
        assert "[pending]" in row
        expected = [0.5, 0.3, 0.1, 0.1]
        for name, target, got in zip(UHCS.names, expected, achieved):
            assert f"{name} {100 * target:.1f} → {100 * got:.1f} %" in row
    assert widget.seed_box.value() == 9  # next run continues after the seeds used
    assert "generated 2 pairs" in widget.message.text()


def test_bundled_generator_is_preselected_and_generates_two_pairs(make_napari_viewer, qtbot):
    """A fresh install: the widget opens with the bundled UHCS two-stage-gan model, no training needed, and
    the pairs it makes have the phase fractions the sliders ask for."""
    viewer = make_napari_viewer()
    widget = SynthesisWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Synthesis")
    assert widget.model_combo.currentText() == "bundled: two-stage-gan-uhcs-demo"
    assert widget.option_widgets["fraction_control"].value() == 1.0
    widget.device_combo.setCurrentText("cpu")
    widget.sliders.set_fractions([0.6, 0.2, 0.15, 0.05])
    generate(widget, qtbot, pairs=2, steps=10, batch_size=2)

    images, labels = layers_of(viewer, "image"), layers_of(viewer, "labels")
    assert len(images) == 2 and len(labels) == 2
    assert all(layer.data.shape == (64, 64) for layer in images + labels)
    # the model knows its pixel size: pairs are in micrometres and sit side by side with a small gap
    width = images[0].data.shape[1] * images[0].scale[1]
    assert images[0].scale[1] == pytest.approx(widget.generator.pixel_size_um)
    assert width < abs(images[1].translate[1] - images[0].translate[1]) < 1.3 * width
    for layer in labels:
        achieved = np.bincount(np.asarray(layer.data).ravel(), minlength=4) / layer.data.size
        assert np.abs(achieved - [0.6, 0.2, 0.15, 0.05]).max() < 0.02
    assert all(layer.metadata["microsynth"]["samples"][0]["provenance"]["model_checksum"] for layer in labels)


def test_cancel_stops_a_long_run_and_keeps_the_pairs_shown(widget, qtbot):
    viewer = widget.viewer
    widget.pairs_box.setValue(8)
    widget.option_widgets["steps"].setValue(150)
    widget.option_widgets["batch_size"].setValue(1)
    widget.generate_button.click()
    qtbot.waitUntil(lambda: len(widget.curation) >= 1, timeout=TIMEOUT_MS)
    widget.progress.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

    shown = len(viewer.layers)
    assert 1 <= len(widget.curation) < 8
    assert shown == 2 * len(widget.curation)
    qtbot.wait(500)
    assert len(viewer.layers) == shown
    assert "cancelled after" in widget.message.text()
    assert widget.generate_button.isEnabled()


def test_accept_reject_and_save_accepted_pairs_with_corrections(widget, qtbot, tmp_path):
    generate(widget, qtbot, pairs=3)
    widget.pair_list.setCurrentRow(0)
    widget.accept_button.click()
    widget.pair_list.setCurrentRow(1)
    widget.reject_button.click()
    widget.pair_list.setCurrentRow(2)
    widget.accept_button.click()
    assert [entry.status for entry in widget.curation] == ["accepted", "rejected", "accepted"]
    assert "[rejected]" in widget.pair_list.item(1).text()
    assert widget.viewer.layers.selection.active.name == "synth 003 mask"
    assert widget.viewer.layers["synth 002 mask"].metadata["microsynth"]["samples"][0]["status"] == "rejected"

    # hand-correct pair 3: paint its top rows as spheroidite
    labels = widget.viewer.layers["synth 003 mask"]
    original = np.asarray(labels.data).copy()
    edited = original.copy()
    edited[:8] = 2
    labels.data = edited
    changed = int(np.count_nonzero(edited != original))
    assert changed > 0
    assert f"→ {100 * np.mean(edited == 2):.1f} %" in widget.pair_list.item(2).text().split("spheroidite")[1]

    path = tmp_path / "curated.zarr"
    assert widget.save_accepted(path) == [0, 1]
    store = DatasetStore.open(path)
    assert len(store) == 2
    assert [store.provenance(i).origin for i in range(2)] == ["synthetic", "corrected"]
    assert store.provenance(1).changed_pixels == changed
    np.testing.assert_array_equal(store.mask(1), edited)
    assert [store.provenance(i).seed for i in range(2)] == [0, 2]
    assert {store.provenance(i).generator for i in range(2)} == {"pf-diffseg"}
    assert store.statuses() == ["accepted", "accepted"]

    # saving again adds nothing twice
    with pytest.raises(ValueError, match="already saved"):
        widget.save_accepted(path)
    assert len(DatasetStore.open(path)) == 2


def test_data_distribution_mode_draws_boosted_targets_from_a_store(widget, qtbot, uhcs_samples, tmp_path):
    assert not widget.distribution_radio.isEnabled()
    assert "no real phase fractions" in widget.distribution_label.text()

    path = tmp_path / "real.zarr"
    store = DatasetStore.create(path, UHCS)
    for sample in uhcs_samples:
        store.append(sample)
    store.append(Sample(uhcs_samples[0].image, UHCS, uhcs_samples[0].mask, provenance=Provenance(origin="synthetic")))
    real = real_fraction_vectors(DatasetStore.open(path))
    tiles = sum(max(1, (s.shape[0] // 256) * (s.shape[1] // 256)) for s in uhcs_samples)
    assert real.shape == (tiles, UHCS.n_classes)  # the synthetic sample is left out

    assert widget.use_store_fractions(path) == tiles
    assert widget.distribution_radio.isEnabled() and widget.distribution_radio.isChecked()
    assert "boosting" in widget.distribution_radio.text()
    widget.seed_box.setValue(3)
    generate(widget, qtbot, pairs=2)

    sampler = BoostedFractionSampler.from_shares(real, default_shares(UHCS, real), UHCS)
    expected = sampler.sample(2, np.random.default_rng(3))
    targets = np.array([entry.target for entry in widget.curation])
    np.testing.assert_allclose(targets, expected)
    assert not np.allclose(targets[0], widget.sliders.fractions)


def test_a_folder_that_is_not_a_generator_is_refused(widget, tmp_path):
    (tmp_path / "config.json").write_text('{"kind": "segmenter"}')
    with pytest.raises(ValueError, match="not a generator"):
        widget.add_model_folder(tmp_path)
    assert widget.generator_folder.name == "pf-diffseg-tiny"
