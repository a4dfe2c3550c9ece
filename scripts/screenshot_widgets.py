"""Render the README screenshots of the plugin widgets on a 1920x1080 screen, in one napari session as a
user would go through it: the bundled UHCS sample in Phase ratios, eight pairs from the bundled generator
in Synthesis (beside the micrograph), the last of them in Curation, and Export with the UHCS fixtures of
tests/data as real data and the accepted pairs ("synthesis" part); then a corrected phase map fine-tuned
on in Train segmenter and a point count of the micrograph ("loop" part).

Run under a virtual X server of that size (napari's canvas needs OpenGL):

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshot_widgets.py [OUT_DIR [PART]]

OUT_DIR defaults to resources/screenshots; PART is "all" (default), "synthesis", "loop" or "grains" (the
bundled phase-field + CycleGAN generator alone, in a viewer of its own). Each PNG is
stored with a 256-colour palette to stay small.
"""
import sys
import tempfile
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_microsynth.core.sample_data import load_sample

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-microsynth"


def wait(app, until=lambda: True, rounds: int = 20, timeout_s: float = 900.0) -> None:
    """Process Qt events until ``until()`` holds (or raise after ``timeout_s``), then a few more rounds for
    painting."""
    import time

    start = time.monotonic()
    while not until():
        app.processEvents()
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"waited {timeout_s:.0f} s for the widgets")
    for _ in range(rounds):
        app.processEvents()


def save(viewer, app, out: Path) -> None:
    wait(app)
    shot = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False))
    shot.convert("RGB").quantize(256).save(out, optimize=True)
    print(f"wrote {out} ({shot.width}x{shot.height}, {out.stat().st_size // 1024} KiB)")


def phase_ratio(viewer, app, out: Path) -> None:
    sample = load_sample()
    viewer.add_image(sample.image, name=sample.name, scale=(sample.pixel_size_um,) * 2, units=("um", "um"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Phase ratios")
    widget.device_combo.setCurrentText("cpu")
    widget.segment()
    wait(app, lambda: widget.session is not None)
    widget.sliders.set_phase(1, 0.12)
    wait(app, lambda: not widget.updating)
    save(viewer, app, out / "phase_ratio_widget.png")
    return widget


def synthesis(viewer, app, out: Path, store: Path):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesis")
    widget.device_combo.setCurrentText("cpu")
    widget.use_store(store)  # not the user's session store
    widget.sliders.set_fractions([0.6, 0.2, 0.12, 0.08])
    widget.pairs_box.setValue(8)
    widget.generate()
    wait(app, lambda: not widget.running)
    save(viewer, app, out / "synthesis_widget.png")
    return widget


def grain_synthesis(viewer, app, out: Path, store: Path) -> None:
    """The bundled phase-field + CycleGAN generator: its simulator controls, four pairs from plausible
    conditions, each shown as micrograph + boundary mask beside the untextured simulation."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesis")
    widget.device_combo.setCurrentText("cpu")
    widget.model_combo.setCurrentText("bundled: phasefield-cyclegan-iron-demo")
    widget._model_chosen(widget.model_combo.currentIndex())
    widget.use_store(store)
    widget.plausible_per_pair.setChecked(True)
    widget.pairs_box.setValue(4)
    widget.generate()
    wait(app, lambda: not widget.running)
    save(viewer, app, out / "synthesis_grains.png")


def curation(viewer, app, out: Path, synthesis_widget):
    widget = synthesis_widget.curate()
    for _ in range(7):  # accept the pairs, so Export has some
        widget.accept()
    for box in widget.cleanup.size_boxes:  # a larger size than the default, to show what the preview warns about
        box.setValue(40)
    save(viewer, app, out / "curation_widget.png")
    widget.accept()


def export(viewer, app, out: Path, store: Path, folder: Path) -> None:
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Export training set")
    widget.set_real(ROOT / "tests" / "data" / "uhcs")
    wait(app, lambda: widget.n_real_tiles() is not None)
    widget.tile_box.setValue(128)  # the generated pairs are 128 px at the real pixel size
    widget.set_synthetic(store)
    widget.out_edit.setText(str(folder))
    widget.export()
    wait(app, lambda: not widget.running)
    save(viewer, app, out / "export_widget.png")


def correction_loop(viewer, app, out: Path, work: Path, ratio_widget) -> None:
    """Paint a correction into the Phase ratios phase map, fine-tune the model on it (a few steps)."""
    corrected = ratio_widget.labels_layer.data.copy()
    corrected[300:420, 80:260] = 3  # a Widmanstaetten colony painted in by hand
    ratio_widget.labels_layer.data = corrected
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Train segmenter")
    widget.fine_tune_on_corrections()
    widget.steps_spin.setValue(20)
    widget.device_combo.setCurrentText("cpu")
    widget.out_path.setText(str(work / "fine-tuned"))
    widget.train()
    wait(app, lambda: not widget.progress.busy)
    if widget.model_folder is None:
        raise RuntimeError(f"fine-tuning failed: {widget.message.text()}")
    save(viewer, app, out / "training_widget.png")


def point_count(viewer, app, out: Path, ratio_widget) -> None:
    """A 5 x 5 grid in 3 x 4 fields over the micrograph, proposals from the phase map, counted."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Point count (ASTM E562)")
    widget.image_combo.setCurrentText(ratio_widget._image_name)
    widget.phase_map_combo.setCurrentText(ratio_widget.labels_layer.name)
    widget.field_rows.setValue(3)
    widget.field_cols.setValue(4)
    widget.lay_grid()
    widget.propose()
    widget.assign(range(0, 300, 37), 1)  # the user disagrees with a few proposals
    widget.count()
    save(viewer, app, out / "point_count_widget.png")


def main(out: str = str(ROOT / "resources" / "screenshots"), part: str = "all") -> None:
    if part not in ("all", "synthesis", "loop", "grains"):
        raise SystemExit(f"PART must be all, synthesis, loop or grains, got {part!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1920, 1080)  # the whole screen (Xvfb has no window manager to maximise it)
    app = QApplication.instance()
    wait(app)
    if part == "grains":
        grain_synthesis(viewer, app, out, work / "grains.zarr")
        viewer.close()
        return
    ratio_widget = phase_ratio(viewer, app, out)
    if part in ("all", "synthesis"):
        synthesis_widget = synthesis(viewer, app, out, work / "synthetic.zarr")
        curation(viewer, app, out, synthesis_widget)
        export(viewer, app, out, work / "synthetic.zarr", work / "training_set")
    if part in ("all", "loop"):
        correction_loop(viewer, app, out, work, ratio_widget)
        point_count(viewer, app, out, ratio_widget)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
