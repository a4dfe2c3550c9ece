"""Dock widget "Train segmenter": train (or fine-tune) a phase segmenter where the annotations are.

Training data: image + labels layer pairs of the viewer (a phase map corrected in the Phase ratios widget
counts as a corrected sample), or a dataset folder / store (one split, optionally a validation split).
Train runs :func:`~napari_microsynth.engines.segmentation.train_and_save` in a worker with progress and a
live plot of the loss and, with a validation split, of the validation mIoU every "validate every" steps;
Cancel stops at the next step and keeps a checkpoint, and Train again with the same output
folder resumes from it. "Fine-tune from" starts from an existing model (the bundled one, or the Phase
ratios widget's current model) with its own network settings: the correct -> retrain loop. The finished
model folder (weights, config, model card) is offered in the Phase ratios widget at once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
)

from ..models.plm import ABLATIONS
from ._dock import PluginDock
from ._engine_worker import EngineProgress
from ._layers import layer_names, layer_sample, set_combo_items

SOURCES = ("image + labels layers", "dataset folder or store")
ARCHITECTURES = ("Unet", "UnetPlusPlus", "FPN", "Linknet", "MAnet", "DeepLabV3Plus")
FROM_SCRATCH = "(start from scratch)"


class _LossRelay(QObject):
    """Carries each training step's record from the worker thread to the UI thread."""

    stepped = Signal(int, float)
    validated = Signal(int, float)

    def relay(self, record: dict) -> None:
        """The trainer's ``on_step``: the loss, and the validation mIoU of the steps that have one."""
        self.stepped.emit(int(record["step"]), float(record["loss"]))
        if "val_miou" in record:
            self.validated.emit(int(record["step"]), float(record["val_miou"]))


class TrainingWidget(PluginDock):
    """Choose data and network, train in the background with a live loss (and validation) plot, hand the
    model over."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from ..models.device import DEVICE_CHOICES
        from ..models.segmenter import PRESETS

        self.viewer = napari_viewer
        self.pairs: list[tuple[str, str]] = []
        self.losses: list[tuple[int, float]] = []
        self.val_scores: list[tuple[int, float]] = []
        self.model_folder: Path | None = None

        self.source_combo = QComboBox()
        self.source_combo.addItems(SOURCES)
        self.image_combo, self.labels_combo = QComboBox(), QComboBox()
        self.add_pair_button = QPushButton("Add pair")
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(90)
        self.remove_pair_button = QPushButton("Remove selected pair")
        self.data_path = QLineEdit()
        self.data_path.setPlaceholderText("dataset folder or .zarr store")
        self.browse_data = QPushButton("...")
        self.train_split, self.val_split = QLineEdit("train"), QLineEdit("val")
        self.arch_combo = QComboBox()
        self.arch_combo.addItems(ARCHITECTURES)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setCurrentText("small")
        self.plm_combo = QComboBox()
        self.plm_combo.addItems(list(ABLATIONS))
        self.plm_combo.setCurrentText("RE+SA+FA")
        self.init_combo = QComboBox()
        self.tile_spin, self.steps_spin = QSpinBox(), QSpinBox()
        self.tile_spin.setRange(32, 1024)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setValue(128)
        self.steps_spin.setRange(1, 1_000_000)
        self.steps_spin.setValue(1000)
        self.validate_spin = QSpinBox()
        self.validate_spin.setRange(0, 1_000_000)
        self.validate_spin.setSingleStep(50)
        self.validate_spin.setValue(200)
        self.validate_spin.setSpecialValueText("only at the end")
        self.validate_spin.setToolTip("score the validation split every this many steps (whole micrographs; "
                                      "each scoring takes a few seconds per micrograph)")
        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setRange(0.1, 1.0)
        self.scale_spin.setSingleStep(0.25)
        self.scale_spin.setValue(0.5)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.out_path = QLineEdit(str(Path.home() / "microsynth-models" / "my-segmenter"))
        self.browse_out = QPushButton("...")
        self.train_button = QPushButton("Train")
        self.corrections_button = QPushButton("Fine-tune on my corrections (Phase ratios widget)")
        self.progress = EngineProgress()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.plot = _LossPlot()
        self._relay = _LossRelay()
        self._relay.stepped.connect(self._add_loss)
        self._relay.validated.connect(self._add_val_score)

        form = QFormLayout()
        form.addRow("training data", self.source_combo)
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        form.addRow("", self.add_pair_button)
        form.addRow("pairs", self.pair_list)
        form.addRow("", self.remove_pair_button)
        form.addRow("dataset", _path_row(self.data_path, self.browse_data))
        form.addRow("train split", self.train_split)
        form.addRow("validation split", self.val_split)
        form.addRow("validate every", self.validate_spin)
        form.addRow("fine-tune from", self.init_combo)
        form.addRow("architecture", self.arch_combo)
        form.addRow("size", self.preset_combo)
        form.addRow("PLM (paper 001)", self.plm_combo)
        form.addRow("window (px)", self.tile_spin)
        form.addRow("input scale", self.scale_spin)
        form.addRow("steps", self.steps_spin)
        form.addRow("device", self.device_combo)
        form.addRow("output folder", _path_row(self.out_path, self.browse_out))
        self.form.addWidget(self.corrections_button)
        self.form.addLayout(form)
        self.form.addWidget(self.train_button)
        self.form.addWidget(self.progress)
        self.form.addWidget(self.plot)
        self.form.addWidget(self.message)
        self.form.addStretch(1)

        self.source_combo.currentIndexChanged.connect(lambda _: self._source_changed())
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button.clicked.connect(self._remove_pair)
        self.browse_data.clicked.connect(lambda: self._browse_into(self.data_path, "Dataset folder or store"))
        self.browse_out.clicked.connect(lambda: self._browse_into(self.out_path, "Output folder"))
        self.init_combo.currentIndexChanged.connect(lambda _: self._init_changed())
        self.out_path.textChanged.connect(lambda _: self._update_train_label())
        self.train_button.clicked.connect(self.train)
        self.corrections_button.clicked.connect(self.fine_tune_on_corrections)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._refresh_init_choices()
        self._source_changed()

    # ------------------------------------------------------------------ choices

    def _refresh_layers(self, event=None) -> None:
        for combo, kind in ((self.image_combo, "image"), (self.labels_combo, "labels")):
            set_combo_items(combo, layer_names(self.viewer, kind))

    def _refresh_init_choices(self) -> None:
        from .phase_ratio import bundled_segmenters

        self._init_folders = {FROM_SCRATCH: None, **{f"bundled: {k}": v for k, v in bundled_segmenters().items()}}
        self.init_combo.clear()
        self.init_combo.addItems(list(self._init_folders))

    def set_init_folder(self, folder: str | Path) -> None:
        """Offer ``folder`` (a model folder) as the model to fine-tune, and choose it."""
        label = f"folder: {Path(folder).name}"
        self._init_folders[label] = Path(folder)
        if self.init_combo.findText(label) < 0:
            self.init_combo.addItem(label)
        self.init_combo.setCurrentText(label)

    def fine_tune_on_corrections(self) -> None:
        """Set up the correct -> retrain loop: fine-tune the Phase ratios widget's model on its (corrected)
        phase map, added to the training pairs; press Train to run it."""
        from .phase_ratio import PhaseRatioWidget

        widgets = [w for w in self.viewer.window.dock_widgets.values()
                   if isinstance(w, PhaseRatioWidget) and w.session is not None and w.labels_layer is not None]
        if not widgets:
            self.message.setText("segment a micrograph in the Phase ratios widget and correct its phase map first")
            return
        ratios = widgets[0]
        self.source_combo.setCurrentIndex(0)
        self.image_combo.setCurrentText(ratios._image_name)
        self.labels_combo.setCurrentText(ratios.labels_layer.name)
        self.add_pair()
        self.set_init_folder(ratios.model_folder)
        self.steps_spin.setValue(min(self.steps_spin.value(), 200))
        self.message.setText(f"fine-tunes {ratios.model_folder.name} on {len(self.pairs)} pair(s), including your "
                             "corrected phase map; press Train")

    def _init_changed(self) -> None:
        """Fine-tuning keeps the chosen model's network: its settings are shown and locked."""
        from ..engines.segmentation import SegmentationConfig

        folder = self._init_folders.get(self.init_combo.currentText())
        network = (self.arch_combo, self.preset_combo, self.plm_combo, self.tile_spin, self.scale_spin)
        for control in network:
            control.setEnabled(folder is None)
        if folder is not None:
            recorded = SegmentationConfig.continuing(folder)
            self.arch_combo.setCurrentText(recorded.arch)
            self.preset_combo.setCurrentText(recorded.preset)
            self.plm_combo.setCurrentText(recorded.plm)
            self.tile_spin.setValue(recorded.tile_size)
            self.scale_spin.setValue(recorded.input_scale)

    def _source_changed(self) -> None:
        layers = self.source_combo.currentIndex() == 0
        for control in (self.image_combo, self.labels_combo, self.add_pair_button, self.pair_list,
                        self.remove_pair_button):
            control.setEnabled(layers)
        for control in (self.data_path, self.browse_data, self.train_split, self.val_split, self.validate_spin):
            control.setEnabled(not layers)

    def add_pair(self) -> None:
        """Add the chosen image and labels layers as one training pair."""
        pair = (self.image_combo.currentText(), self.labels_combo.currentText())
        if not all(pair):
            self.message.setText("choose an image layer and its labels layer")
            return
        if pair not in self.pairs:
            self.pairs.append(pair)
            self.pair_list.addItem(f"{pair[0]}  +  {pair[1]}")

    def _remove_pair(self) -> None:
        row = self.pair_list.currentRow()
        if row >= 0:
            self.pairs.pop(row)
            self.pair_list.takeItem(row)

    def _browse_into(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title)
        if path:
            edit.setText(path)

    def _update_train_label(self) -> None:
        from ..engines.segmentation import latest_checkpoint

        work = Path(self.out_path.text()) / "work"
        self.train_button.setText("Resume training" if work.is_dir() and latest_checkpoint(work) else "Train")

    # ------------------------------------------------------------------ training

    def training_source(self) -> dict:
        """What :func:`train_job` trains on: the layer pairs as samples (read here, on the UI thread, as
        napari layers must be), or a dataset folder / store and its splits (read by the worker)."""
        if self.source_combo.currentIndex() == 0:
            if not self.pairs:
                raise ValueError("add at least one image + labels pair")
            return {"samples": [self._pair_sample(image, labels) for image, labels in self.pairs],
                    "description": "napari layers: " + ", ".join(f"{i} + {lab}" for i, lab in self.pairs)}
        path = Path(self.data_path.text())
        if not self.data_path.text().strip() or not path.exists():
            raise ValueError("choose a dataset folder or store")
        return {"dataset": path, "train_split": self.train_split.text().strip() or None,
                "val_split": self.val_split.text().strip() or None}

    def _pair_sample(self, image_name: str, labels_name: str):
        """The pair as a sample; the Phase ratios widget's own phase map comes with its corrections."""
        from .phase_ratio import PhaseRatioWidget

        labels = self.viewer.layers[labels_name]
        for widget in self.viewer.window.dock_widgets.values():
            if isinstance(widget, PhaseRatioWidget) and widget.labels_layer is labels:
                return widget.current_sample()
        return layer_sample(self.viewer.layers[image_name], labels)

    def config(self):
        from ..engines.segmentation import SegmentationConfig

        settings = {"steps": self.steps_spin.value(), "device": self.device_combo.currentText()}
        folder = self._init_folders.get(self.init_combo.currentText())
        if folder is not None:
            return SegmentationConfig.continuing(folder, **settings, lr=2e-4, checkpoint_every=100)
        return SegmentationConfig(arch=self.arch_combo.currentText(), preset=self.preset_combo.currentText(),
                                  plm=self.plm_combo.currentText(), tile_size=self.tile_spin.value(),
                                  input_scale=self.scale_spin.value(), checkpoint_every=100, **settings)

    def train(self) -> None:
        """Start (or resume) the training in the background."""
        if self.progress.busy:
            return
        try:
            source = self.training_source()
            config = self.config()
        except (ValueError, OSError) as exc:
            self.message.setText(f"cannot train: {exc}")
            return
        self.losses, self.val_scores = [], []
        self.plot.show_losses(self.losses, self.val_scores)
        self.train_button.setEnabled(False)
        self.message.setText(f"training on {len(source['samples'])} micrographs" if "samples" in source
                             else f"training on {source['dataset'].name}")
        self.progress.start(train_job, self._trained, self._failed, self._cancelled, source=source, config=config,
                            out_dir=Path(self.out_path.text()), on_step=self._relay.relay,
                            validate_every=self.validate_spin.value())

    def _add_loss(self, step: int, loss: float) -> None:
        self.losses.append((step, loss))
        if step % 10 == 0 or len(self.losses) < 10:
            self.plot.show_losses(self.losses, self.val_scores)

    def _add_val_score(self, step: int, miou: float) -> None:
        self.val_scores.append((step, miou))
        self.plot.show_losses(self.losses, self.val_scores)

    def _trained(self, result) -> None:
        from .phase_ratio import PhaseRatioWidget

        self.model_folder, metrics = result
        self.train_button.setEnabled(True)
        self._update_train_label()
        self.plot.show_losses(self.losses, self.val_scores)
        scores = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith(("miou", "mean_dice")))
        offered = False
        for widget in self.viewer.window.dock_widgets.values():
            if isinstance(widget, PhaseRatioWidget):
                widget.add_model_folder(self.model_folder)
                offered = True
        self.message.setText(f"model written to {self.model_folder}" + (f" ({scores})" if scores else "")
                             + ("; chosen in the Phase ratios widget" if offered else ""))

    def _failed(self, exc) -> None:
        self.train_button.setEnabled(True)
        self.message.setText(f"training failed: {exc}")

    def _cancelled(self) -> None:
        self.train_button.setEnabled(True)
        self._update_train_label()
        self.message.setText("stopped; a checkpoint was kept: Resume training continues from it")


def _path_row(edit: QLineEdit, browse: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(browse)
    return row


def train_job(source: dict, config, out_dir: Path, on_step, progress, should_stop, validate_every: int = 0):
    """:func:`~napari_microsynth.engines.segmentation.train_and_save` on a :meth:`TrainingWidget.training_source`
    (a dataset is read here, in the worker); a validation split is scored every ``validate_every`` steps."""
    from ..engines.segmentation import train_and_save

    if "samples" in source:
        samples, val, description = source["samples"], [], source["description"]
    else:
        from ..core.datasets import load_split

        path, train_split, val_split = source["dataset"], source["train_split"], source["val_split"]
        samples = [s for s in load_split(path, train_split) if s.mask is not None]
        val = [s for s in load_split(path, val_split) if s.mask is not None] if val_split else []
        description = f"{path.name}: split {train_split!r}" + (f", validation {val_split!r}" if val_split else "")
    return train_and_save(samples, config, out_dir, val, description, progress, should_stop, on_step,
                          validate_every)


class _LossPlot(QLabel):
    """The training loss against the step, and the validation mIoU on a second axis, drawn with matplotlib
    into a picture."""

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(160)

    def show_losses(self, losses: list[tuple[int, float]], val_scores: list[tuple[int, float]] = ()) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from qtpy.QtGui import QImage, QPixmap

        fig, ax = plt.subplots(figsize=(3.4, 1.8), dpi=90)
        if losses:
            steps, values = np.array(losses).T
            ax.plot(steps, values, linewidth=0.8, alpha=0.5)
            if len(values) >= 10:
                smooth = np.convolve(values, np.ones(10) / 10, mode="valid")
                ax.plot(steps[9:], smooth, linewidth=1.5)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("loss", fontsize=7)
        ax.tick_params(labelsize=6)
        if len(val_scores):
            steps, values = np.array(val_scores).T
            right = ax.twinx()
            right.plot(steps, 100 * values, "o-", color="tab:green", markersize=3, linewidth=1)
            right.set_ylabel("validation mIoU %", fontsize=7, color="tab:green")
            right.tick_params(labelsize=6, colors="tab:green")
        fig.tight_layout()
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        plt.close(fig)
        image = QImage(rgba.data, rgba.shape[1], rgba.shape[0], rgba.strides[0], QImage.Format.Format_RGBA8888)
        self.setPixmap(QPixmap.fromImage(image.copy()))
