"""The Synthesis dock widget: pairs go into a dataset store as pending, Curation takes over from there;
cancel keeps what was made; the sampling form comes from the generator's declared options."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from napari_microsynth.core.conditions import BoostedFractionSampler, default_shares, real_fraction_vectors
from napari_microsynth.core.options import declared_options, option
from napari_microsynth.core.sample import Provenance, Sample
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore, is_store
from napari_microsynth.widgets.options_form import OptionsForm, control_value
from napari_microsynth.widgets.synthesis import SynthesisWidget

UHCS = PhaseSchema.bundled("uhcs")
DEMO = "two-stage-gan-uhcs-demo"
TIMEOUT_MS = 60_000


def open_widget(make_napari_viewer) -> SynthesisWidget:
    """The widget as a fresh install opens it (the bundled demo generator preselected), on the CPU."""
    viewer = make_napari_viewer()
    widget = SynthesisWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Synthesis")
    widget.device_combo.setCurrentText("cpu")
    return widget


@pytest.fixture
def widget(make_napari_viewer, one_thread, tmp_path):
    widget = open_widget(make_napari_viewer)
    widget.use_store(tmp_path / "pairs.zarr")
    return widget


def generate(widget, qtbot, pairs: int, steps: int = 2) -> None:
    widget.pairs_box.setValue(pairs)
    widget.options_form.set_value("steps", steps)
    widget.generate_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def layers_of(viewer, kind: str) -> list:
    return [layer for layer in viewer.layers if layer._type_string == kind]


def test_generated_pairs_are_pending_in_the_store_and_previewed(widget, qtbot, tmp_path):
    assert widget.model_combo.currentText() == f"bundled: {DEMO}"
    assert widget.device_label.text() == "-> cpu"
    assert str(tmp_path / "pairs.zarr") in widget.store_label.text()
    assert not widget.curate_button.isEnabled()
    widget.sliders.set_fractions([0.6, 0.2, 0.15, 0.05])
    widget.seed_box.setValue(7)

    generate(widget, qtbot, pairs=3)

    store = DatasetStore.open(tmp_path / "pairs.zarr")  # a fresh reader: everything is on disk
    assert len(store) == 3
    assert store.statuses() == ["pending"] * 3
    assert [store.provenance(i).seed for i in range(3)] == [7, 8, 9]
    assert {store.provenance(i).generator for i in range(3)} == {"two-stage-gan"}
    for i in range(3):
        np.testing.assert_allclose(store.provenance(i).condition["fractions"], [0.6, 0.2, 0.15, 0.05])
    # the preview grid: one read-only pair per stored sample, side by side, in micrometres
    images, labels = layers_of(widget.viewer, "image"), layers_of(widget.viewer, "labels")
    assert [layer.name for layer in labels] == ["synth #0 mask", "synth #1 mask", "synth #2 mask"]
    assert not any(layer.editable for layer in labels)
    for i, layer in enumerate(labels):
        np.testing.assert_array_equal(layer.data, store.mask(i))
        assert layer.metadata["microsynth"]["samples"][0]["index"] == i
    assert images[0].scale[1] == pytest.approx(widget.generator.pixel_size_um)
    width = images[0].data.shape[1] * images[0].scale[1]
    assert width < abs(images[1].translate[1] - images[0].translate[1]) < 1.3 * width
    assert widget.seed_box.value() == 10  # the next run continues after the seeds used
    assert "3 pairs pending in pairs.zarr" in widget.message.text()
    assert widget.curate_button.isEnabled() and widget.curate_button.text() == "Curate the 3 generated pairs"


def test_curate_hands_the_pairs_to_the_curation_widget_whose_decisions_reach_the_store(widget, qtbot, tmp_path):
    path = tmp_path / "pairs.zarr"
    generate(widget, qtbot, pairs=2)
    widget.curate_button.click()
    _, curation = widget.viewer.window.add_plugin_dock_widget("napari-microsynth", "Curation")
    assert curation.store.path == path
    assert curation.queue == [0, 1] and curation.current_index == 0

    curation.accept()
    curation.reject()
    assert DatasetStore.open(path).statuses() == ["accepted", "rejected"]

    # one queue: the next run's pairs join the same store and the same Curation widget
    generate(widget, qtbot, pairs=2)
    widget.curate_button.click()
    assert curation.queue == [2, 3]
    assert DatasetStore.open(path).statuses() == ["accepted", "rejected", "pending", "pending"]


def test_cancel_keeps_the_pairs_made_and_generate_continues_the_run(widget, qtbot, tmp_path):
    path = tmp_path / "pairs.zarr"
    widget.pairs_box.setValue(5)
    widget.options_form.set_value("steps", 30)
    widget.options_form.set_value("batch_size", 1)
    widget.generate_button.click()
    qtbot.waitUntil(lambda: widget._run.arrived >= 1, timeout=TIMEOUT_MS)
    widget.progress.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

    kept = len(DatasetStore.open(path))
    assert 1 <= kept < 5
    assert DatasetStore.open(path).statuses() == ["pending"] * kept
    assert len(layers_of(widget.viewer, "labels")) == kept
    assert "cancelled after" in widget.message.text() and widget.seed_box.value() == 0
    assert widget.generate_button.isEnabled()

    widget.options_form.set_value("steps", 30)  # the same run again: only the missing pairs are made
    widget.generate_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    store = DatasetStore.open(path)
    assert [store.provenance(i).seed for i in range(len(store))] == [0, 1, 2, 3, 4]
    assert f"{kept} of them from an earlier run" in widget.message.text()


def test_sampling_form_is_built_from_the_declared_options_and_passes_changes(widget, qtbot, tmp_path):
    declared = widget.generator.sampling_options()
    form = widget.options_form
    assert list(form.controls) == [option.name for option in declared]
    for option in declared:
        control = form.controls[option.name]
        assert control_value(control) == option.default
        assert control.toolTip() == option.describe()
        assert form.advanced.isAncestorOf(control) == option.advanced
    assert widget.sampling_options() == {}  # nothing changed: the generator's own defaults apply

    form.set_value("fraction_control", 0.5)
    generate(widget, qtbot, pairs=1, steps=3)

    assert widget.sampling_options() == {"fraction_control": 0.5, "steps": 3}
    sampling = DatasetStore.open(tmp_path / "pairs.zarr").provenance(0).extra["sampling"]
    assert sampling["fraction_control"] == 0.5 and sampling["steps"] == 3


def test_without_a_chosen_store_pairs_go_to_a_session_store_in_the_user_data_folder(
    make_napari_viewer, one_thread, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    widget = open_widget(make_napari_viewer)
    path = widget.store_path
    assert path.parent == tmp_path / "napari-microsynth" / "synthesis" and path.suffix == ".zarr"
    assert f"{path} (session store, created on the first Generate)" == widget.store_label.text()

    generate(widget, qtbot, pairs=1)

    assert is_store(path) and DatasetStore.open(path).statuses() == ["pending"]
    assert widget.store_label.text() == f"{path} (session store)"


def test_a_store_that_cannot_take_the_pairs_is_refused(widget, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("not a store")
    with pytest.raises(ValueError, match="not a napari-microsynth dataset store"):
        widget.use_store(tmp_path / "folder")
    other = PhaseSchema.from_dict({**UHCS.to_dict(), "name": "other"})
    DatasetStore.create(tmp_path / "other.zarr", other).close()
    with pytest.raises(ValueError, match="'other' masks"):
        widget.use_store(tmp_path / "other.zarr")
    assert widget.store_path == tmp_path / "pairs.zarr"


def test_data_distribution_mode_draws_boosted_targets_from_a_store(widget, qtbot, uhcs_samples, tmp_path):
    assert not widget.distribution_radio.isEnabled()
    assert "no real phase fractions" in widget.distribution_label.text()

    path = tmp_path / "real.zarr"
    store = DatasetStore.create(path, UHCS)
    for sample in uhcs_samples:
        store.append(sample)
    store.append(Sample(uhcs_samples[0].image, UHCS, uhcs_samples[0].mask, provenance=Provenance(origin="synthetic")))
    store.close()
    real = real_fraction_vectors(DatasetStore.open(path))

    assert widget.use_store_fractions(path) == len(real)
    assert widget.distribution_radio.isEnabled() and widget.distribution_radio.isChecked()
    assert "boosting" in widget.distribution_radio.text()
    widget.seed_box.setValue(3)
    generate(widget, qtbot, pairs=2)

    sampler = BoostedFractionSampler.from_shares(real, default_shares(UHCS, real), UHCS)
    expected = sampler.sample(2, np.random.default_rng(3))
    pairs = DatasetStore.open(tmp_path / "pairs.zarr")
    targets = np.array([pairs.provenance(i).condition["fractions"] for i in range(2)])
    np.testing.assert_allclose(targets, expected)
    assert not np.allclose(targets[0], widget.sliders.fractions)


def test_a_folder_that_is_not_a_generator_is_refused(widget, tmp_path):
    (tmp_path / "config.json").write_text('{"kind": "segmenter"}')
    with pytest.raises(ValueError, match="not a generator"):
        widget.add_model_folder(tmp_path)
    assert widget.generator_folder.name == DEMO


@dataclass
class _Settings:
    sampler: str = option("ddim", "reverse-diffusion sampler", choices=("ddim", "dpm++"))
    steps: int | None = option(None, "denoising steps (auto: the sampler's own)", low=1, high=1000)
    strength: float = option(1.0, "control strength", low=0.0, high=1.0)
    clean: bool = option(False, "clean up the mask")
    temperature: float = option(4.0, "softmax temperature", low=0.5, advanced=True)


def test_options_form_controls_follow_the_declarations(qtbot):
    form = OptionsForm(declared_options(_Settings))
    qtbot.addWidget(form)
    sampler, steps, strength = (form.controls[name] for name in ("sampler", "steps", "strength"))
    assert [sampler.itemText(i) for i in range(sampler.count())] == ["ddim", "dpm++"]
    assert steps.text() == "auto" and (steps.minimum(), steps.maximum()) == (0, 1000)
    assert (strength.minimum(), strength.maximum()) == (0.0, 1.0)
    assert not form.advanced.isExpanded() and form.advanced.isAncestorOf(form.controls["temperature"])
    assert form.values() == {"sampler": "ddim", "steps": None, "strength": 1.0, "clean": False, "temperature": 4.0}

    form.set_value("steps", 25)
    sampler.setCurrentIndex(1)
    form.controls["clean"].setChecked(True)
    assert form.changes() == {"sampler": "dpm++", "steps": 25, "clean": True}
    form.set_value("steps", None)
    assert steps.text() == "auto" and "steps" not in form.changes()
    with pytest.raises(ValueError, match="strength must be in"):
        form.set_value("strength", 2.0)


def test_the_preview_grid_lies_beside_the_micrograph_and_the_view_fits_it(widget, qtbot, read_uhcs):
    """Item 4 of issue 16: generated pairs are not piled onto the micrograph's corner."""
    sample = read_uhcs(1, pixel_size_um=0.194)[0]
    micrograph = widget.viewer.add_image(sample.image, name="micrograph", scale=(0.194, 0.194))
    right = micrograph.extent.world[1][-1]

    generate(widget, qtbot, pairs=4)

    preview = [layer for layer in widget.viewer.layers if layer is not micrograph]
    assert len(preview) == 8 and micrograph.visible
    assert widget.viewer.canvas.overlays.scale_bar.visible  # the pairs are in micrometres
    labels = preview[1]
    assert [str(u) for u in labels.units] == ["micrometer", "micrometer"]
    assert "phase: " in labels.get_status(labels.data_to_world((10, 10)), world=True)["coordinates"]
    lefts = [layer.extent.world[0][-1] for layer in preview]
    assert min(lefts) > right  # every pair right of the micrograph
    xs = sorted({round(x, 3) for x in lefts})
    assert len(xs) == 2  # a 2 x 2 grid
    center_x = widget.viewer.camera.center[-1]
    assert min(lefts) < center_x < max(layer.extent.world[1][-1] for layer in preview)  # the view is on the grid


def test_a_dataset_folder_gets_a_hint_to_import_it(widget, shared_data, monkeypatch):
    """Item 6 of issue 16: a dataset folder chosen where a store is needed says what to do, in one line."""
    from qtpy.QtWidgets import QFileDialog

    folder = shared_data / "uhcs"
    hint = f"import it first with `microsynth import {folder} uhcs.zarr`"
    with pytest.raises(ValueError, match="is a dataset folder"):
        widget.use_store_fractions(folder)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(folder))
    widget.store_fractions_button.click()
    assert widget.message.text().startswith("cannot use uhcs: uhcs is a dataset folder (uhcs layout)")
    assert widget.message.text().endswith(hint)
    with pytest.raises(ValueError, match="not a dataset store: import it first"):
        widget.use_store(folder)
    assert not widget.distribution_radio.isEnabled()


def test_the_plugin_docks_share_one_tab_stack_and_the_window_fits_the_screen(make_napari_viewer, qtbot):
    """Item 8 of issue 16: four docks used to stack up and push the window to 2512 px on a 1200 px screen."""
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    docks = {}
    for name in ("Phase ratios", "Synthesis", "Curation", "Export training set"):
        docks[name], _ = viewer.window.add_plugin_dock_widget("napari-microsynth", name)
        qtbot.wait(10)
    window = viewer.window._qt_window
    qtbot.waitUntil(lambda: len(window.tabifiedDockWidgets(docks["Synthesis"])) == 3, timeout=5000)

    screen = QApplication.primaryScreen().availableGeometry()
    assert window.frameGeometry().height() <= screen.height()
    assert window.frameGeometry().width() <= screen.width()
    assert all(dock.minimumSizeHint().height() < 300 for dock in docks.values())  # long forms scroll
    assert docks["Export training set"].widget().isVisible()  # the last one opened is the tab in front


def _pixels(label) -> bytes:
    image = label.pixmap().toImage()
    return bytes(image.constBits().asarray(image.sizeInBytes()))


def test_boost_levels_of_the_data_distribution_change_the_targets_and_their_histogram(widget, uhcs_samples, tmp_path):
    """Issue 11: a boost level per boosted phase (in %, off = the paper's plain oversampling); the target
    histogram follows the levels, and Generate asks for the levelled targets."""
    from napari_microsynth.core.conditions import target_sampler

    path = tmp_path / "real.zarr"
    with DatasetStore.create(path, UHCS) as store:
        for sample in uhcs_samples:
            store.append(sample)
    real = real_fraction_vectors(DatasetStore.open(path))
    assert not widget.levels_box.isVisibleTo(widget)
    widget.use_store_fractions(path)

    assert widget.levels_box.isVisibleTo(widget)
    assert list(widget.level_boxes) == [name for name in default_shares(UHCS, real) if name != "data"]
    laths = widget.level_boxes["widmanstaetten"]
    assert laths.value() == 0 and laths.text() == "off (paper)" and widget.boost_levels == {}
    assert not widget.target_plot.pixmap().isNull() and widget.target_plot.pixmap().width() > 200
    paper_plot = _pixels(widget.target_plot)
    w = UHCS.index_of("widmanstaetten")
    paper_mean = widget.preview_targets[:, w].mean()
    assert paper_mean == pytest.approx(0.10, abs=0.01)

    laths.setValue(12.0)
    assert widget.boost_levels == {"widmanstaetten": 0.12}
    assert widget.preview_targets[:, w].mean() == pytest.approx(0.12, abs=0.005)
    assert _pixels(widget.target_plot) != paper_plot
    assert widget.distribution_radio.text().endswith("boosting spheroidite (20 %), widmanstaetten (27 %)")
    assert "widmanstaetten draws 27 % of the targets (not 10 %) to reach its level" in widget.levels_note.text()
    widget.seed_box.setValue(4)
    widget.pairs_box.setValue(3)
    targets, n = widget.conditions()
    expected = target_sampler(real, UHCS, default_shares(UHCS, real), {"widmanstaetten": 0.12})
    np.testing.assert_allclose(targets, expected.sample(3, np.random.default_rng(4)))
    assert n is None

    # a level the data cannot give is named, and Generate refuses the data mode until it is changed
    laths.setValue(20.0)
    assert "cannot reach a widmanstaetten level of 20 %" in widget.levels_note.text()
    widget.generate_button.click()
    assert widget.message.text().startswith("cannot generate: change the boost levels: cannot reach")
    assert not widget.running

    laths.setValue(0.0)  # off again: exactly the paper's targets
    assert widget.levels_note.text() == ""
    assert widget.distribution_radio.text().endswith("boosting spheroidite (20 %), widmanstaetten (10 %)")
    assert _pixels(widget.target_plot) == paper_plot
    paper = BoostedFractionSampler.from_shares(real, default_shares(UHCS, real), UHCS)
    np.testing.assert_array_equal(widget.conditions()[0], paper.sample(3, np.random.default_rng(4)))


def choose_bundled(widget, name: str) -> None:
    label = f"bundled: {name}"
    widget.model_combo.setCurrentText(label)
    widget._model_chosen(widget.model_combo.currentIndex())
    assert widget.generator_folder.name == name


def test_grain_structures_show_the_simulator_controls_and_the_untextured_simulation_beside_each_pair(widget, qtbot):
    """Issue 14: the phase-field + CycleGAN family gets its own controls (grain count, steps, regularity in
    their trained ranges), and each preview cell shows micrograph + boundary mask and the simulation it was
    translated from."""
    choose_bundled(widget, "phasefield-cyclegan-iron-demo")
    boxes = widget.property_boxes
    assert list(boxes) == ["grains", "growth_steps", "regularity"]
    assert (boxes["grains"].minimum(), boxes["grains"].maximum()) == (50, 90)
    assert widget.plausible_button.isVisibleTo(widget) and widget.sliders is None
    widget.seed_box.setValue(3)
    widget.plausible_button.click()
    drawn = {name: box.value() for name, box in boxes.items()}
    assert drawn != {"grains": 70.0, "growth_steps": 600.0, "regularity": 0.3}  # not the middle of the ranges
    boxes["grains"].setValue(60)
    boxes["growth_steps"].setValue(200)

    widget.pairs_box.setValue(2)
    widget.generate_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=4 * TIMEOUT_MS)

    store = DatasetStore.open(widget.store_path)
    assert len(store) == 2 and store.provenance(0).condition["properties"]["grains"] == 60
    names = [layer.name for layer in widget.viewer.layers]
    assert names == ["synth #0 image", "synth #0 mask", "synth #0 untextured simulation",
                     "synth #1 image", "synth #1 mask", "synth #1 untextured simulation"]
    image, mask, untextured = widget.viewer.layers[:3]
    assert untextured.data.shape == image.data.shape
    # beside the pair, not on it, and the next pair beside both
    assert untextured.extent.world[0][1] > image.extent.world[1][1]
    assert widget.viewer.layers[3].extent.world[0][1] > untextured.extent.world[1][1]
    grains, boundaries = untextured.data[mask.data == 0], untextured.data[mask.data == 1]
    assert grains.mean() > boundaries.mean() + 0.2  # the simulation's boundaries are where the mask has them

    widget.plausible_per_pair.setChecked(True)
    assert not boxes["grains"].isEnabled()
    conditions, n = widget.conditions()
    assert n is None and len(conditions) == 2 and conditions[0] != conditions[1]
