"""The "Phase ratios" widget on a large micrograph: an 8000 x 8000 mosaic of a real UHCS micrograph opened
lazily as a multiscale layer; the sliders steer a preview region and the whole image is segmented in the
background, while the UI thread keeps running (a 10 ms timer keeps ticking)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_microsynth.core.large_image import (
    PhaseMap,
    mirrored_mosaic,
    write_pyramid_tiff,
)
from napari_microsynth.core.sample_data import load_sample

DEMO_MODEL = "bundled: plm-uhcs-demo"


@pytest.fixture(scope="module")
def mosaic_path(tmp_path_factory):
    sample = load_sample()
    mosaic = mirrored_mosaic((sample.image * 255).round().astype(np.uint8), (8000, 8000))
    return write_pyramid_tiff(tmp_path_factory.mktemp("large") / "mosaic.tif", mosaic)


def _widget(viewer):
    from napari_microsynth.widgets.phase_ratio import PhaseRatioWidget

    widget = PhaseRatioWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_combo.setCurrentText(DEMO_MODEL)
    return widget


class Ticks:
    """Counts the ticks of a 10 ms timer on the UI thread: they only come while the UI thread is free."""

    def __init__(self):
        self.count = 0
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)
        self.timer.start(10)

    def _tick(self):
        self.count += 1


def test_a_large_micrograph_opens_lazily_and_its_sliders_steer_a_preview(make_napari_viewer, qtbot, mosaic_path):
    viewer = make_napari_viewer()
    viewer.open(str(mosaic_path), plugin="napari-microsynth")  # File > Open: read by the plugin's reader
    layer = viewer.layers["mosaic"]
    assert layer.multiscale and layer.data[0].shape == (8000, 8000)
    assert not isinstance(layer.data[0], np.ndarray)  # tiles are read when shown
    widget = _widget(viewer)
    viewer.camera.center = (0, 2000, 6000)  # the user looks at the upper right
    ticks = Ticks()
    widget.segment()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=120_000)
    assert ticks.count >= 10, "the viewer was blocked while the preview was segmented"
    assert widget.region == (1488, 5488, 2512, 6512) and widget.session.shape == (1024, 1024)
    preview = widget.labels_layer
    assert preview.data.shape == (1024, 1024) and tuple(preview.translate) == (1488, 5488)
    assert widget.apply_button.isEnabled() and not widget.save_button.isEnabled()

    threads = []
    labels = widget.session.labels
    widget.session.labels = lambda *args: (threads.append(threading.get_ident()), labels(*args))[1]
    before = np.asarray(preview.data).copy()
    laths = widget.session.schema.index_of("widmanstaetten")
    widget.sliders.set_phase(laths, 0.3)  # trust 1: the preview takes 30 % Widmanstaetten
    qtbot.waitUntil(lambda: not widget.updating, timeout=30_000)
    assert threads and threading.get_ident() not in threads  # the map was computed off the UI thread
    shown = np.asarray(preview.data)
    assert not np.array_equal(shown, before)
    assert (shown == laths).mean() == pytest.approx(0.3, abs=0.01)
    ticks.timer.stop()


def test_the_whole_large_image_is_segmented_in_the_background_and_can_be_cancelled(
        make_napari_viewer, qtbot, mosaic_path, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(mosaic_path), plugin="napari-microsynth")
    widget = _widget(viewer)
    widget.segment()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=120_000)
    ticks = Ticks()
    out = tmp_path / "mosaic-phases.zarr"
    widget.apply_to_whole(out)
    assert widget.progress.busy and not widget.segment_button.isEnabled()
    qtbot.waitUntil(lambda: "window" in widget.progress.status.text(), timeout=60_000)
    assert ticks.count >= 5  # the UI thread ran while the first block was under way
    widget.progress.cancel()
    qtbot.waitUntil(lambda: not widget.progress.busy, timeout=60_000)
    assert "cancelled" in widget.message.text() and "resumes" in widget.message.text()
    phase_map = PhaseMap.open(out)
    assert len(phase_map.blocks) == 4 and not phase_map.complete  # blocks of about 4096 px
    assert widget.segment_button.isEnabled()
    ticks.timer.stop()


def test_apply_to_whole_image_shows_the_whole_phase_map(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """With the large-image size lowered, the UHCS sample is previewed whole: the whole-image map written
    block by block equals the preview (same pixels, so the same correction) at the slider's ratio."""
    from napari_microsynth.widgets import phase_ratio

    monkeypatch.setattr(phase_ratio, "LARGE_PIXELS", 100_000)
    viewer = make_napari_viewer()
    viewer.add_image(load_sample().image, name="uhcs1648")
    widget = _widget(viewer)
    widget.segment()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=60_000)
    assert widget.region == (0, 0, 484, 645)
    widget.sliders.set_phase(widget.session.schema.index_of("spheroidite"), 0.2)
    qtbot.waitUntil(lambda: not widget.updating, timeout=30_000)
    widget.apply_to_whole(tmp_path / "phases.zarr")
    qtbot.waitUntil(lambda: widget.whole_layer is not None, timeout=60_000)
    assert "written to" in widget.message.text() and widget.whole_layer.name == "uhcs1648 phases"
    whole = np.asarray(widget.whole_layer.data)
    assert (whole == np.asarray(widget.labels_layer.data)).mean() > 0.999
