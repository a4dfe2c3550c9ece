"""Dock widget "Phase ratios": segment a micrograph and steer the phase map with expert phase ratios.

The image-dependent part of the network runs once per micrograph in a worker (progress + Cancel);
afterwards every slider move reruns only the cheap ratio head (paper 001's Phase Learning Module) and
the ratio correction at the chosen trust, also off the UI thread. Updates are throttled, not debounced:
while a slider moves, a new update starts at most every :data:`THROTTLE_MS` (and never while one is
running), and the last position is always shown.

A large micrograph (a multiscale layer, or more than :data:`~napari_microsynth.core.large_image.LARGE_PIXELS`
pixels) is previewed: the session covers a :data:`PREVIEW_SIDE` square around the view's centre, at full
resolution and on the whole micrograph's window grid (so the preview is the whole map's phase map there,
except that the ratio correction's bias is solved on the preview's pixels), and the sliders steer it
instantly. "Apply to whole image" then segments the whole micrograph with the current ratio and trust
block by block in the background (:func:`~napari_microsynth.engines.large_inference.segment_large`, progress
+ Cancel, resumable) into a zarr phase map shown as a multiscale labels layer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ..core.fractions import mask_fractions
from ..core.io import to_unit_float
from ..core.large_image import LARGE_PIXELS, GreyArray
from ..core.sample import Provenance, Sample
from ..core.schema import PhaseSchema
from ._dock import PluginDock
from ._engine_worker import EngineProgress
from ._layers import set_combo_items
from .fraction_sliders import FractionSliders

THROTTLE_MS = 50
TRUST_STEPS = 100
DEFAULT_TRUST = 1.0
TRUST_HINT = (
    "Trust: how closely the phase map follows your fractions. 1: exactly (achieved = target). "
    "0: the network alone, your ratio is only its input (paper 001). In between: the map's fractions "
    "go that share of the way from the model's own estimate to yours; lower it when your estimate is rough."
)
BROWSE = "Model folder..."
#: Side of the square region of a large micrograph the sliders preview.
PREVIEW_SIDE = 1024
_NOTHING = object()  # no slider request waiting


def bundled_segmenters() -> dict[str, Path]:
    """Display name -> folder of the segmentation models shipped in ``resources/models``."""
    import json

    from ..resources import resources_dir

    found = {}
    for config in sorted((resources_dir() / "models").glob("*/config.json")):
        if json.loads(config.read_text()).get("kind") == "segmenter":
            found[f"bundled: {config.parent.name}"] = config.parent
    return found


class TrustControl(QWidget):
    """Slider + spin box for the ratio correction's trust in [0, 1], with a hint saying what it means."""

    changed = Signal(float)

    def __init__(self, value: float = DEFAULT_TRUST, parent=None) -> None:
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, TRUST_STEPS)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(0.0, 1.0)
        self.spin.setSingleStep(0.05)
        self.spin.setDecimals(2)
        self.hint = QLabel(TRUST_HINT)
        self.hint.setWordWrap(True)
        self.spin.setValue(value)
        self.slider.setValue(round(value * TRUST_STEPS))
        self.slider.valueChanged.connect(lambda step: self.spin.setValue(step / TRUST_STEPS))
        self.spin.valueChanged.connect(self._spin_changed)
        row = QHBoxLayout()
        row.addWidget(QLabel("trust"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.hint)

    @property
    def value(self) -> float:
        return float(self.spin.value())

    def _spin_changed(self, value: float) -> None:
        self.slider.setValue(round(value * TRUST_STEPS))  # no signal when the slider moved the spin box
        self.changed.emit(float(value))


class PhaseRatioWidget(PluginDock):
    """Choose an image and a model, segment, then drag phase-ratio sliders and watch the labels follow."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from ..models.device import DEVICE_CHOICES

        self.viewer = napari_viewer
        self.model = None
        self.model_folder: Path | None = None
        self.session = None
        self.labels_layer = None
        self.whole_layer = None
        self.region = None  # the previewed region of a large micrograph, None for a whole one
        self.sliders: FractionSliders | None = None
        self._predicted: np.ndarray | None = None
        self._pending: object = _NOTHING
        self._update_running = False

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_label = QLabel("")
        self.segment_button = QPushButton("Segment")
        self.trust = TrustControl()
        self.no_ratio_box = QCheckBox("no ratio (segment from the image alone)")
        self.estimate_button = QPushButton("Estimate ratios from the image")
        self.save_button = QPushButton("Save image + phases to store...")
        self.quantify_button = QPushButton("Quantify a folder of micrographs...")
        self.quantify_button.setToolTip("Phase fractions of every micrograph in a folder with the chosen model (and "
                                        "the ratio and trust in use): a CSV, a summary with 95 % CIs and a plot")
        self.apply_button = QPushButton("Apply to whole image...")
        self.apply_button.setToolTip("segment the whole large micrograph with the current ratio and trust into a "
                                     "zarr phase map, in the background")
        self.progress = EngineProgress()
        self.slider_area = QVBoxLayout()
        self.message = QLabel("")
        self.message.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_combo)
        device_row = QHBoxLayout()
        device_row.addWidget(self.device_combo)
        device_row.addWidget(self.device_label, 1)
        form.addRow("device", device_row)
        layout = self.form
        layout.addLayout(form)
        layout.addWidget(self.segment_button)
        layout.addWidget(self.progress)
        layout.addLayout(self.slider_area)
        layout.addWidget(self.trust)
        layout.addWidget(self.no_ratio_box)
        layout.addWidget(self.estimate_button)
        layout.addWidget(self.save_button)
        layout.addWidget(self.quantify_button)
        layout.addWidget(self.apply_button)
        layout.addWidget(self.message)
        layout.addStretch(1)

        self._throttle = QTimer(self)
        self._throttle.setSingleShot(True)
        self._throttle.setInterval(THROTTLE_MS)
        self._throttle.timeout.connect(self._start_pending)

        self.segment_button.clicked.connect(self.segment)
        self.estimate_button.clicked.connect(self.estimate)
        self.no_ratio_box.toggled.connect(lambda _: self._request_update())
        self.trust.changed.connect(lambda _: self._request_update())
        self.save_button.clicked.connect(self._save_dialog)
        self.quantify_button.clicked.connect(self._quantify_dialog)
        self.apply_button.clicked.connect(self._apply_dialog)
        self.model_combo.activated.connect(self._model_chosen)
        self.device_combo.currentTextChanged.connect(self._device_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()
        self._refresh_models()
        self._device_changed(self.device_combo.currentText())
        self._set_session_controls(False)

    # ------------------------------------------------------------------ choices

    def _refresh_images(self, event=None) -> None:
        from napari.layers import Image

        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 2]
        set_combo_items(self.image_combo, names)
        self.segment_button.setEnabled(bool(names) and not self.progress.busy)  # nothing to segment yet
        self.segment_button.setToolTip("" if names else "open a grey micrograph first (File > Open, or the UHCS sample)")

    def _refresh_models(self) -> None:
        self._models = bundled_segmenters()
        self.model_combo.clear()
        self.model_combo.addItems(list(self._models))
        self.model_combo.addItem(BROWSE)

    def _model_chosen(self, index: int) -> None:
        if self.model_combo.itemText(index) != BROWSE:
            return
        folder = QFileDialog.getExistingDirectory(self, "Choose a segmentation model folder")
        if folder:
            self.add_model_folder(folder)

    def add_model_folder(self, folder: str | Path) -> None:
        """Offer a user's model folder (written by ``microsynth train-segmenter``) and select it."""
        folder = Path(folder)
        label = f"folder: {folder.name}"
        self._models[label] = folder
        self.model_combo.insertItem(self.model_combo.count() - 1, label)
        self.model_combo.setCurrentText(label)

    def _device_changed(self, choice: str) -> None:
        from ..models.device import resolve_device

        try:
            self.device_label.setText(f"-> {resolve_device(choice)}")
        except RuntimeError as exc:
            self.device_label.setText(str(exc))

    def _image_layer(self):
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("open a grey micrograph first (File > Open, or the UHCS sample data)")
        return self.viewer.layers[name]

    # ------------------------------------------------------------------ segmentation

    def segment(self) -> None:
        """Load the chosen model and compute the cached image features of the chosen micrograph."""
        from ..models.device import resolve_device

        try:
            layer = self._image_layer()
            region = None
            if is_large(layer):
                source = GreyArray(layer.data[0] if layer.multiscale else layer.data)
                region = self._preview_region(layer, source.shape)
                image = source[region[0] : region[2], region[1] : region[3]]
            else:
                source = image = as_unit_grey(np.asarray(layer.data))
            folder = self._models.get(self.model_combo.currentText())
            if folder is None:
                raise ValueError("choose a model (the bundled demo model or a model folder)")
            device = resolve_device(self.device_combo.currentText())
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            self.message.setText(f"cannot segment: {exc}")
            return
        where = "" if region is None else f" (preview of rows {region[0]}-{region[2]}, columns {region[1]}-{region[3]})"
        self.message.setText(f"segmenting {layer.name}{where} with {folder.name} on {device}...")
        self.segment_button.setEnabled(False)
        self._image_name = layer.name
        self._image = image  # the pixels the session covers
        self._source = source
        self.region = region
        self.progress.start(
            open_session,
            on_done=self._session_ready,
            on_error=self._segment_failed,
            on_cancelled=lambda: self._segment_failed(None),
            folder=folder,
            loaded=self.model if self.model_folder == folder else None,
            image=source,
            device=device,
            region=region,
        )

    def quantify_folder(self, folder: str | Path, out: str | Path) -> None:
        """Batch quantification (``microsynth quantify``) of the micrographs in ``folder`` into ``out`` with
        the chosen model and the ratio and trust in use, in the background; the plot opens as a layer."""
        from ..engines.inference import stored_temperature
        from ..engines.quantify import micrograph_files

        model_folder = self._models.get(self.model_combo.currentText())
        try:
            if model_folder is None:
                raise ValueError("choose a model (the bundled demo model or a model folder)")
            files = micrograph_files(folder)
        except ValueError as exc:
            self.message.setText(f"cannot quantify: {exc}")
            return
        ratio = self.current_ratio()
        self.message.setText(f"quantifying {len(files)} micrographs of {Path(folder).name} with {model_folder.name}...")
        self.progress.start(quantify_job, on_done=self._quantified,
                            on_error=lambda exc: self.message.setText(f"quantification failed: {exc}"),
                            on_cancelled=lambda: self.message.setText("quantification stopped; run it again into the "
                                                                      "same folder to continue"),
                            folder=model_folder, files=files, out=Path(out), ratio=ratio,
                            trust=self.trust.value if ratio is not None else 0.0,
                            temperature=stored_temperature(model_folder))

    def _quantified(self, result) -> None:
        from PIL import Image

        plot = np.asarray(Image.open(result.plot_path).convert("RGB"))
        self.viewer.add_image(plot, name=f"phase fractions ({len(result.rows)} micrographs)", rgb=True)
        skipped = f"; {len(result.skipped)} skipped (see summary.md)" if result.skipped else ""
        self.message.setText(f"{len(result.rows)} micrographs quantified{skipped}: {result.csv_path}, "
                             f"{result.summary_path}")

    def _quantify_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of micrographs")
        if not folder:
            return
        out = QFileDialog.getExistingDirectory(self, "Output folder for the tables and the plot")
        if out:
            self.quantify_folder(folder, out)

    def _preview_region(self, layer, shape) -> tuple[int, int, int, int]:
        """A :data:`PREVIEW_SIDE` square (or the whole side, when shorter) around the view's centre."""
        centre = layer.world_to_data(self.viewer.camera.center)[-2:]
        box = []
        for c, n in zip(centre, shape):
            side = min(PREVIEW_SIDE, n)
            start = int(np.clip(round(c) - side // 2, 0, n - side))
            box.append((start, start + side))
        return box[0][0], box[1][0], box[0][1], box[1][1]

    def _segment_failed(self, exc) -> None:
        self.segment_button.setEnabled(True)
        self.message.setText("segmentation cancelled" if exc is None else f"segmentation failed: {exc}")

    def _session_ready(self, opened) -> None:
        self.model_folder, session, (labels, fractions) = opened
        self.model = session.model
        self.session = session
        self.segment_button.setEnabled(True)
        schema = session.schema
        if self.sliders is None or self.sliders.schema != schema:
            if self.sliders is not None:
                self.sliders.setParent(None)
            self.sliders = FractionSliders(schema)
            self.sliders.fractions_changed.connect(lambda _: self._request_update())
            self.slider_area.addWidget(self.sliders)
        self._set_session_controls(True)
        self._show_labels((labels, fractions))
        self._no_ratio_fractions = fractions
        self.sliders.set_fractions(fractions, emit=False)
        hint = ("drag the sliders to steer the phase map" if session.uses_ratio
                else "this model has no Phase Learning Module: the sliders steer the map through the ratio "
                     "correction only (trust > 0)")
        if self.region is not None:
            hint += ("; the map shown is a preview of this region, 'Apply to whole image' segments the whole "
                     "micrograph with the ratio and trust you chose")
        warnings = self._domain_warnings()
        self.message.setText("\n".join([*(f"warning: {w}" for w in warnings), hint]))
        if warnings:
            from napari.utils.notifications import show_warning

            show_warning(f"{self.model_folder.name} on {self._image_name}: " + "; ".join(warnings))

    def _domain_warnings(self) -> list[str]:
        """How the segmented micrograph differs from the model's training micrographs (schema from the
        layer's dataset metadata, when it came from a dataset)."""
        from ..engines.inference import micrograph_warnings
        from ..napari_io import META_KEY

        meta = self.viewer.layers[self._image_name].metadata.get(META_KEY, {}) \
            if self._image_name in self.viewer.layers else {}
        image_schema = PhaseSchema.from_dict(meta["schema"]) if "schema" in meta else None
        return micrograph_warnings(self.model_folder, self.session.schema, self._image, None, image_schema)

    def _set_session_controls(self, enabled: bool) -> None:
        for control in (self.estimate_button, self.save_button, self.no_ratio_box, self.trust, self.sliders):
            if control is not None:
                control.setEnabled(enabled)
        self.save_button.setEnabled(enabled and self.region is None)  # a large micrograph's map is a zarr
        self.apply_button.setEnabled(enabled and self.region is not None)

    def estimate(self) -> None:
        """Set the sliders to the phase fractions of the no-ratio prediction (made when segmenting)."""
        if self.session is None:
            return
        self.sliders.set_fractions(self._no_ratio_fractions)

    # ------------------------------------------------------------------ live updates

    def current_ratio(self):
        """The ratio in use: the slider vector, or None when "no ratio" is ticked (or for a model without
        the PLM's ratio encoder at trust 0, where a ratio has no effect)."""
        if self.session is None or self.no_ratio_box.isChecked():
            return None
        if not self.session.uses_ratio and self.trust.value == 0:
            return None
        return self.sliders.fractions

    def _request_update(self) -> None:
        if self.session is None:
            return
        self._pending = (self.current_ratio(), self.trust.value)
        self._start_pending()

    def _start_pending(self) -> None:
        """Start the latest request, unless an update is running or one started under THROTTLE_MS ago
        (then the worker's end or the throttle timer calls this again)."""
        from napari.qt.threading import create_worker

        if self._pending is _NOTHING or self._update_running or self._throttle.isActive():
            return
        (ratio, trust), session = self._pending, self.session
        self._pending = _NOTHING
        self._update_running = True
        self._throttle.start()
        worker = create_worker(slider_update, session, ratio, trust, _start_thread=False)
        worker.returned.connect(self._show_labels)
        worker.errored.connect(lambda exc: self.message.setText(f"update failed: {exc}"))
        worker.finished.connect(self._update_finished)
        worker.start()
        self._update_worker = worker

    def _update_finished(self) -> None:
        self._update_running = False
        self._start_pending()

    @property
    def updating(self) -> bool:
        """True while a slider change is still being computed or waits for its turn (tests wait on this)."""
        return self._update_running or self._pending is not _NOTHING

    def _show_labels(self, result: tuple[np.ndarray, np.ndarray]) -> None:
        """Show a phase map and its fractions (the achieved column)."""
        from ..napari_io import label_colormap, phase_features

        labels, achieved = result
        schema = self.session.schema
        self._predicted = labels
        origin = (0, 0) if self.region is None else self.region[:2]
        name = f"{self._image_name} phases" + ("" if self.region is None else " (preview)")
        if self.labels_layer is None or self.labels_layer not in self.viewer.layers:
            self.labels_layer = self.viewer.add_labels(labels, name=name, opacity=0.55, colormap=label_colormap(schema),
                                                       features=phase_features(schema), **self._on_image_grid(origin))
            self._show_scale_bar()
        else:
            self.labels_layer.data = labels
            self.labels_layer.name = name
            self.labels_layer.translate = self._on_image_grid(origin).get("translate", self.labels_layer.translate)
        self.sliders.set_achieved(achieved)

    def _on_image_grid(self, origin=(0, 0)) -> dict:
        """Layer ``scale``, ``units`` and ``translate`` that put a map whose top-left pixel is the
        micrograph's pixel ``origin`` on the micrograph's physical grid (empty when the image layer is gone)."""
        if self._image_name not in self.viewer.layers:
            return {}
        image = self.viewer.layers[self._image_name]
        translate = np.asarray(image.translate)[-2:] + np.asarray(origin) * np.asarray(image.scale)[-2:]
        return {"scale": image.scale, "units": image.units, "translate": translate}

    def _show_scale_bar(self) -> None:
        """Show the scale bar when the micrograph is in micrometres."""
        image = self.viewer.layers[self._image_name] if self._image_name in self.viewer.layers else None
        if image is not None and any(str(unit) in ("micrometer", "um") for unit in image.units):
            self.viewer.canvas.overlays.scale_bar.visible = True

    # ------------------------------------------------------------------ whole large micrograph

    def apply_to_whole(self, out: str | Path) -> None:
        """Segment the whole large micrograph with the current ratio and trust into the phase map ``out``
        (a zarr store; an unfinished one of the same run is resumed) in the background."""
        from ..engines.large_inference import segment_large

        if self.session is None or self.region is None:
            self.message.setText("segment a large micrograph first (its preview)")
            return
        ratio, trust = self.current_ratio(), self.trust.value
        self.segment_button.setEnabled(False)
        self.apply_button.setEnabled(False)
        self.message.setText(f"segmenting all of {self._image_name} into {out} in the background; the preview "
                             "keeps following the sliders")
        self.progress.start(segment_large, on_done=self._whole_ready, on_error=self._whole_failed,
                            on_cancelled=lambda: self._whole_failed(None), model=self.model, image=self._source,
                            out=Path(out), ratio=ratio, trust=trust, temperature=self.session.temperature,
                            source=self._image_name)

    def _whole_ready(self, phase_map) -> None:
        from ..napari_io import phase_map_layer

        self.segment_button.setEnabled(True)
        self.apply_button.setEnabled(True)
        data, kwargs, _ = phase_map_layer(phase_map, f"{self._image_name} phases", **self._on_image_grid())
        if self.whole_layer is not None and self.whole_layer in self.viewer.layers:
            self.viewer.layers.remove(self.whole_layer)
        self.whole_layer = self.viewer.add_labels(data, **kwargs)
        shares = ", ".join(f"{name} {100 * v:.1f} %" for name, v in zip(phase_map.schema.names, phase_map.fractions()))
        self.message.setText(f"whole-image phase map written to {phase_map.path}: {shares}")

    def _whole_failed(self, exc) -> None:
        self.segment_button.setEnabled(True)
        self.apply_button.setEnabled(True)
        self.message.setText("whole-image segmentation cancelled (running it again resumes it)" if exc is None
                             else f"whole-image segmentation failed: {exc}")

    def _apply_dialog(self) -> None:
        path = QFileDialog.getSaveFileName(self, "Phase map", f"{self._image_name}-phases.zarr", "Phase map (*.zarr)")[0]
        if path:
            self.apply_to_whole(path)

    # ------------------------------------------------------------------ saving

    def current_sample(self) -> Sample:
        """The micrograph with the (possibly hand-corrected) phase map as a :class:`Sample`."""
        if self.session is None or self.labels_layer is None:
            raise ValueError("segment a micrograph first")
        if self.region is not None:
            raise ValueError("a large micrograph is not saved into a dataset store: 'Apply to whole image' writes its "
                             "phase map as a zarr store")
        mask = np.asarray(self.labels_layer.data).astype(np.int32)
        changed = int((mask != self._predicted).sum())
        ratio = self.current_ratio()
        provenance = Provenance(
            origin="predicted",
            source=self._image_name,
            generator=f"segmenter:{self.model.arch}",
            model_checksum=self.model.model_checksum,  # computed when the folder was loaded
            condition=None if ratio is None else {"fractions": [float(v) for v in ratio], "trust": self.trust.value},
            changed_pixels=changed,
        )
        if changed:
            provenance = provenance.corrected(changed)
        return Sample(self._image, self.session.schema, mask=mask, name=self._image_name, provenance=provenance)

    def save_to_store(self, path: str | Path) -> int:
        """Append the current image + phase map to a dataset store (created if missing); returns its index."""
        from ..core.store import DatasetStore, is_store

        sample = self.current_sample()
        path = Path(path)
        store = DatasetStore.open(path, mode="a") if is_store(path) else DatasetStore.create(path, sample.schema)
        index = store.append(sample)
        self.message.setText(f"saved as sample {index} of {path} ({sample.provenance.origin})")
        return index

    def _save_dialog(self) -> None:
        path = QFileDialog.getSaveFileName(self, "Dataset store", "phases.zarr", "Dataset store (*.zarr)")[0]
        if path:
            try:
                self.save_to_store(path)
            except (ValueError, OSError) as exc:
                self.message.setText(f"could not save: {exc}")



def open_session(folder, loaded, image, device, progress, should_stop, region=None):
    """Engine run in the worker: load the model (unless ``loaded`` already holds it), cache the
    micrograph's image features (of ``region`` only, when given), then compute the no-ratio phase map
    and its fractions."""
    from ..engines.inference import PhaseRatioSession, stored_temperature
    from ..models.segmenter import Segmenter

    model = loaded if loaded is not None else Segmenter.load(folder, device=device)
    session = PhaseRatioSession(model, image, device=device, temperature=stored_temperature(folder),
                                progress=progress, should_stop=should_stop, region=region)
    return folder, session, slider_update(session, None, 0.0)


def slider_update(session, ratio, trust: float) -> tuple[np.ndarray, np.ndarray]:
    """Worker job for one slider position: the phase map (uint8) and its phase fractions."""
    labels = session.labels(ratio, trust)
    return labels, mask_fractions(labels, session.schema)


def is_large(layer) -> bool:
    """True for an image layer the widget previews instead of segmenting whole: multiscale, or more than
    :data:`~napari_microsynth.core.large_image.LARGE_PIXELS` pixels."""
    return bool(layer.multiscale) or layer.data.shape[0] * layer.data.shape[1] > LARGE_PIXELS


def as_unit_grey(data: np.ndarray) -> np.ndarray:
    """A napari image layer's data as float32 grey in [0, 1] (RGB with equal channels is accepted; floats
    outside [0, 1] are rescaled to their range)."""
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        rgb = data[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise ValueError("the image is in colour; napari-microsynth works on grey micrographs")
        data = rgb[..., 0]
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D grey micrograph, got an image of shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating) and (data.min() < 0 or data.max() > 1):
        lo, hi = float(data.min()), float(data.max())
        data = (data - lo) / (hi - lo if hi > lo else 1.0)
    return to_unit_float(data)


def quantify_job(folder, files, out, ratio, trust, temperature, progress, should_stop):
    """``microsynth quantify`` with the model in ``folder`` (run in a worker)."""
    from ..engines.quantify import quantify
    from ..models.segmenter import Segmenter

    return quantify(Segmenter.load(folder), files, out, ratio, trust, temperature, Path(folder).name, progress,
                    should_stop)

