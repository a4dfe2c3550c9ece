"""Render the README screenshot: the bundled sample segmented in the Phase ratios widget.

Run under a virtual X server: ``xvfb-run -a .venv/bin/python scripts/screenshot_widgets.py OUT.png``.
"""
import sys

import napari
from qtpy.QtWidgets import QApplication

from napari_microsynth.core.sample_data import load_sample
from napari_microsynth.widgets.phase_ratio import PhaseRatioWidget


def main(out: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    sample = load_sample()
    viewer.add_image(sample.image, name=sample.name)
    widget = PhaseRatioWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Phase ratios", area="right")
    widget.segment()
    app = QApplication.instance()
    while widget.session is None:
        app.processEvents()
    widget.sliders.set_phase(1, 0.12)
    while widget.updating:
        app.processEvents()
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1])
