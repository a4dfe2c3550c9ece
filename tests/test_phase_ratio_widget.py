"""The "Phase ratios" widget with the bundled demo model on the bundled UHCS sample micrograph."""
from __future__ import annotations

import numpy as np
import pytest

from napari_microsynth.core.store import DatasetStore
from napari_microsynth.core.sample_data import load_sample
from napari_microsynth.resources import resources_dir

DEMO_MODEL = "plm-uhcs-demo"


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    from napari_microsynth.widgets.phase_ratio import PhaseRatioWidget

    viewer = make_napari_viewer()
    sample = load_sample()
    viewer.add_image(sample.image, name="uhcs1648")
    w = PhaseRatioWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert f"bundled: {DEMO_MODEL}" in [w.model_combo.itemText(i) for i in range(w.model_combo.count())]
    w.model_combo.setCurrentText(f"bundled: {DEMO_MODEL}")
    return w


def _segment(widget, qtbot):
    widget.segment()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=60_000)
    return widget


def _settle(widget, qtbot):
    qtbot.waitUntil(lambda: not widget.updating, timeout=30_000)


def test_sliders_sum_to_one_and_locked_phase_stays(widget, qtbot):
    _segment(widget, qtbot)
    sliders = widget.sliders
    sliders.lock_boxes[3].setChecked(True)
    locked_value = sliders.fractions[3]
    sliders.sliders[1].setValue(400)  # a user drags cementite to 40 %
    assert sliders.fractions.sum() == pytest.approx(1.0)
    assert sliders.fractions[1] == pytest.approx(0.4, abs=1e-3)
    assert sliders.fractions[3] == pytest.approx(locked_value)
    shown = [s.value() for s in sliders.sliders]
    assert sum(shown) == pytest.approx(1000, abs=len(shown))


def _shown_fractions(widget) -> np.ndarray:
    return np.bincount(np.asarray(widget.labels_layer.data).ravel(), minlength=4) / widget.labels_layer.data.size


def test_dragging_a_slider_at_full_trust_the_map_follows_each_position(widget, qtbot):
    _segment(widget, qtbot)
    assert widget.trust.value == 1.0 and "trust" in widget.trust.hint.text().lower()
    laths = widget.session.schema.index_of("widmanstaetten")
    for percent in (5, 15, 30, 45, 20):
        widget.sliders.sliders[laths].setValue(10 * percent)  # the user drags Widmanstaetten to percent %
        _settle(widget, qtbot)
        asked = widget.sliders.fractions
        assert asked[laths] == pytest.approx(percent / 100, abs=1e-3)
        np.testing.assert_allclose(_shown_fractions(widget), asked, atol=0.01)
        shown = [float(label.text().rstrip(" %")) for label in widget.sliders.achieved_labels]
        np.testing.assert_allclose(shown, 100 * asked, atol=1.0)


def test_the_map_updates_while_the_hand_still_moves(widget, qtbot):
    _segment(widget, qtbot)
    updates = []
    widget.labels_layer.events.data.connect(lambda event: updates.append(event))
    laths = widget.session.schema.index_of("widmanstaetten")
    for value in np.linspace(50, 400, 30).astype(int):  # 30 moves, closer together than a debounce waits
        widget.sliders.sliders[laths].setValue(int(value))
        qtbot.wait(25)
    during = len(updates)
    _settle(widget, qtbot)
    assert during >= 2, "the map should follow while the slider is being dragged"
    assert _shown_fractions(widget)[laths] == pytest.approx(0.4, abs=0.01)  # and ends at the last position


def test_trust_zero_is_the_networks_own_map(widget, qtbot):
    _segment(widget, qtbot)
    laths = widget.session.schema.index_of("widmanstaetten")
    widget.sliders.set_phase(laths, 0.3)
    widget.trust.spin.setValue(0.0)
    _settle(widget, qtbot)
    assert widget.trust.slider.value() == 0
    expected, _ = widget.session.predict(widget.sliders.fractions)
    np.testing.assert_array_equal(np.asarray(widget.labels_layer.data), expected)
    widget.trust.slider.setValue(50)  # half trust: halfway from the network's own fractions
    _settle(widget, qtbot)
    assert widget.trust.value == 0.5
    own = np.bincount(expected.ravel(), minlength=4) / expected.size
    assert _shown_fractions(widget)[laths] == pytest.approx((own[laths] + 0.3) / 2, abs=0.01)


def test_raising_a_phase_grows_its_area_in_the_labels_layer(widget, qtbot):
    """At trust 0 (paper 001's behaviour) the PLM alone still moves the map with the ratio."""
    _segment(widget, qtbot)
    widget.trust.spin.setValue(0.0)
    layer = widget.labels_layer
    assert layer is not None and layer.data.shape == (484, 645)
    laths = widget.session.schema.index_of("widmanstaetten")
    widget.sliders.set_phase(laths, 0.02)
    _settle(widget, qtbot)
    low = int((np.asarray(layer.data) == laths).sum())
    widget.sliders.set_phase(laths, 0.3)
    _settle(widget, qtbot)
    high = int((np.asarray(layer.data) == laths).sum())
    assert high > low * 1.5, (low, high)
    achieved = widget.sliders.achieved_labels[laths].text()
    assert achieved.endswith("%") and achieved != "–"


def test_the_uhcs_sample_gives_no_material_warning(widget, qtbot):
    _segment(widget, qtbot)
    assert "warning" not in widget.message.text()


def test_a_micrograph_of_another_material_is_flagged(widget, qtbot, shared_data):
    from napari_microsynth.core.datasets import load_dataset
    from napari_microsynth.napari_io import META_KEY

    iron = load_dataset(shared_data / "fastfinecut_iron")[0]
    widget.viewer.add_image(iron.image[:256, :256], name="iron", metadata={META_KEY: {"schema": iron.schema.to_dict()}})
    widget.image_combo.setCurrentText("iron")
    _segment(widget, qtbot)
    text = widget.message.text()
    assert "comes from a grains dataset" in text and "ferrite matrix" in text
    assert "mean grey level" in text  # bright iron micrograph vs the darker steels the model learned


def test_the_phase_map_sits_on_the_micrographs_micrometre_grid(widget, qtbot):
    image = widget.viewer.layers["uhcs1648"]
    image.scale, image.units = (0.194, 0.194), ("um", "um")
    _segment(widget, qtbot)
    labels = widget.labels_layer
    assert tuple(labels.scale) == pytest.approx((0.194, 0.194))
    assert [str(u) for u in labels.units] == ["micrometer", "micrometer"]
    assert widget.viewer.canvas.overlays.scale_bar.visible
    assert "phase" in labels.features.columns  # the status bar names the phase under the cursor


def test_no_ratio_and_estimate(widget, qtbot):
    _segment(widget, qtbot)
    widget.no_ratio_box.setChecked(True)
    _settle(widget, qtbot)
    no_ratio = np.asarray(widget.labels_layer.data).copy()
    widget.estimate()
    estimate = widget.sliders.fractions
    counts = np.bincount(no_ratio.ravel(), minlength=4) / no_ratio.size
    np.testing.assert_allclose(estimate, counts, atol=1e-6)


def test_cancel_stops_the_first_pass(widget, qtbot):
    widget.segment()
    widget.progress.cancel()
    qtbot.waitUntil(lambda: not widget.progress.busy, timeout=60_000)
    assert widget.session is None
    assert "cancel" in widget.message.text()
    assert widget.segment_button.isEnabled()


def test_corrected_phase_map_is_saved_to_a_store(widget, qtbot, tmp_path):
    _segment(widget, qtbot)
    labels = widget.labels_layer
    data = np.asarray(labels.data).copy()
    data[:40, :40] = 3  # the metallurgist paints a Widmanstaetten lath
    changed = int((data != np.asarray(labels.data)).sum())
    labels.data = data
    index = widget.save_to_store(tmp_path / "phases.zarr")
    store = DatasetStore.open(tmp_path / "phases.zarr")
    saved = store[index]
    assert saved.provenance.origin == "corrected"
    assert saved.provenance.changed_pixels == changed > 0
    np.testing.assert_array_equal(saved.mask, data)


def test_bundled_model_card_states_its_split_and_metrics():
    card = (resources_dir() / "models" / DEMO_MODEL / "README.md").read_text()
    assert "miou" in card.lower()
    assert "test" in card.lower()


def test_segment_waits_for_a_micrograph(make_napari_viewer):
    """Item 6 of issue 16: no button that can only fail."""
    from napari_microsynth.widgets.phase_ratio import PhaseRatioWidget

    viewer = make_napari_viewer()
    widget = PhaseRatioWidget(viewer)
    assert not widget.segment_button.isEnabled() and "open a grey micrograph" in widget.segment_button.toolTip()
    layer = viewer.add_image(np.zeros((64, 64), dtype=np.float32), name="micrograph")
    assert widget.segment_button.isEnabled()
    viewer.layers.remove(layer)
    assert not widget.segment_button.isEnabled()


def test_quantify_a_folder_from_the_widget(widget, qtbot, shared_data, tmp_path):
    """The batch quantification button: every micrograph of a folder with the chosen model, tables written,
    the plot opened as a layer."""
    import shutil

    folder = tmp_path / "batch"
    folder.mkdir()
    for path in sorted((shared_data / "uhcs" / "images").iterdir())[:2]:
        shutil.copy(path, folder / path.name)
    widget.quantify_folder(folder, tmp_path / "out")
    qtbot.waitUntil(lambda: not widget.progress.busy, timeout=120_000)
    assert "2 micrographs quantified" in widget.message.text()
    assert (tmp_path / "out" / "fractions.csv").read_text().count("\n") == 3
    assert widget.viewer.layers[-1].name == "phase fractions (2 micrographs)" and widget.viewer.layers[-1].rgb
