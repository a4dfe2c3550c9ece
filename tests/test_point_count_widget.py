"""The "Point count (ASTM E562)" widget on the bundled UHCS sample: grid, proposals, corrections, estimate,
and the hand-over to the Phase ratios sliders."""
from __future__ import annotations

import numpy as np
import pytest

from napari_microsynth.core.point_count import UNASSIGNED, point_count
from napari_microsynth.core.sample_data import load_sample
from napari_microsynth.napari_io import META_KEY, label_colormap, phase_features


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    from napari_microsynth.widgets.point_count import PointCountWidget

    viewer = make_napari_viewer()
    sample = load_sample()
    viewer.add_image(sample.image, name="uhcs1648")
    viewer.add_labels(sample.mask, name="phases", colormap=label_colormap(sample.schema),
                      features=phase_features(sample.schema))
    widget = PointCountWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.setCurrentText("uhcs1648")
    widget.phase_map_combo.setCurrentText("phases")
    return viewer, widget, sample


def test_grid_proposal_correction_and_estimate(viewer_and_widget):
    viewer, widget, sample = viewer_and_widget
    assert not widget.count_button.isEnabled()
    widget.lay_grid()  # 5 x 5 points in 2 x 2 fields
    layer = widget.points_layer
    assert len(layer.data) == 100 and list(widget.schema.names) == list(sample.schema.names)
    assert np.bincount(layer.features["field"]).tolist() == [25] * 4
    assert widget.count() is None and "two fields" in widget.message.text()  # nothing assigned yet

    widget.propose()
    points = np.asarray(layer.data).astype(int)
    truth = sample.mask[points[:, 0], points[:, 1]]
    np.testing.assert_array_equal(layer.features["phase"], truth)
    matrix = sample.schema.index_of("ferrite matrix")
    other = (truth + 1) % sample.schema.n_classes
    widget.assign([0, 1, 2], int(other[0]))  # the user disagrees with the map at three points
    layer.selected_data = {3}
    widget.boundary_combo.setCurrentIndex(1 + matrix)
    widget.assign_selected(int(other[3]))  # and puts point 3 on a boundary with the matrix
    result = widget.count()
    phases, boundary = truth.copy(), np.full(100, UNASSIGNED)
    phases[[0, 1, 2]], phases[3] = other[0], other[3]
    if other[3] != matrix:
        boundary[3] = matrix
    expected = point_count(phases, layer.features["field"], sample.schema.n_classes, boundary)
    np.testing.assert_allclose(result.fractions, expected.fractions)
    np.testing.assert_allclose(result.ci95, expected.ci95)
    assert "4 points differ from the phase map" in widget.message.text()
    assert (np.asarray(layer.border_color)[:3] == [1, 0, 0, 1]).all()
    assert "95 % CI" in widget.table.text() and "ferrite matrix" in widget.table.text()
    assert widget.send_button.isEnabled()


def test_layer_schema_comes_from_dataset_metadata_or_label_values(make_napari_viewer):
    from napari_microsynth.widgets.point_count import layer_schema

    viewer = make_napari_viewer()
    sample = load_sample()
    stored = viewer.add_labels(sample.mask, name="stored", metadata={META_KEY: {"schema": sample.schema.to_dict()}})
    plain = viewer.add_labels(np.array([[0, 2], [1, 0]]), name="painted")
    assert layer_schema(stored) == sample.schema
    assert layer_schema(plain).names == ("class 0", "class 1", "class 2")


def test_the_estimate_goes_to_the_phase_ratio_sliders(viewer_and_widget, qtbot):
    from napari_microsynth.widgets.phase_ratio import PhaseRatioWidget

    viewer, widget, sample = viewer_and_widget
    widget.lay_grid()
    widget.propose()
    result = widget.count()
    widget.send_to_sliders()
    assert "open the Phase ratios widget" in widget.message.text()
    ratios = PhaseRatioWidget(viewer)
    viewer.window.add_dock_widget(ratios)
    ratios.model_combo.setCurrentText("bundled: plm-uhcs-demo")
    ratios.image_combo.setCurrentText("uhcs1648")
    ratios.segment()
    qtbot.waitUntil(lambda: ratios.session is not None, timeout=60_000)
    widget.send_to_sliders()
    np.testing.assert_allclose(ratios.sliders.fractions, result.fractions, atol=2e-3)
    qtbot.waitUntil(lambda: not ratios.updating, timeout=30_000)
