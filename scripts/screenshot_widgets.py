"""Render the README screenshots: the bundled sample in the Phase ratios widget, pairs from the bundled
generator in the Synthesis widget, or a store in the Curation widget.

Run under a virtual X server:

    xvfb-run -a .venv/bin/python scripts/screenshot_widgets.py phase-ratio OUT.png
    xvfb-run -a .venv/bin/python scripts/screenshot_widgets.py synthesis OUT.png
    xvfb-run -a .venv/bin/python scripts/screenshot_widgets.py curation OUT.png demo_output/generated.zarr
"""
import sys

import napari
from qtpy.QtWidgets import QApplication

from napari_microsynth.core.sample_data import load_sample


def settle(app, rounds: int = 20) -> None:
    for _ in range(rounds):
        app.processEvents()


def phase_ratio(viewer, app) -> None:
    from napari_microsynth.widgets.phase_ratio import PhaseRatioWidget

    sample = load_sample()
    viewer.add_image(sample.image, name=sample.name)
    widget = PhaseRatioWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Phase ratios", area="right")
    widget.segment()
    while widget.session is None:
        app.processEvents()
    widget.sliders.set_phase(1, 0.12)
    while widget.updating:
        app.processEvents()


def synthesis(viewer, app) -> None:
    import tempfile
    from pathlib import Path

    from napari_microsynth.widgets.synthesis import SynthesisWidget

    widget = SynthesisWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Synthesis", area="right")
    widget.device_combo.setCurrentText("cpu")
    widget.use_store(Path(tempfile.mkdtemp()) / "synthetic.zarr")  # not the user's session store
    widget.sliders.set_fractions([0.6, 0.2, 0.12, 0.08])
    widget.pairs_box.setValue(8)
    widget.generate()
    while widget.running:
        app.processEvents()
    viewer.reset_view()


def curation(viewer, app, store: str) -> None:
    from napari_microsynth.widgets.curation import CurationWidget

    widget = CurationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Curation", area="right")
    widget.filter_combo.setCurrentText("all")
    widget.open_store(store)
    viewer.reset_view()


def main(which: str, out: str, *args: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    app = QApplication.instance()
    {"phase-ratio": phase_ratio, "synthesis": synthesis, "curation": curation}[which](viewer, app, *args)
    settle(app)
    viewer.screenshot(out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
