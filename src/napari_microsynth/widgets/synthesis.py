"""Dock widget "Synthesis": generate micrograph + mask pairs from a generator, preview and curate them.

The user picks a generator (a bundled model or a model folder), sets what it is conditioned on (target
phase fractions with sum-to-one sliders, fractions drawn from a real data distribution with rare phases
boosted, named properties, or nothing) and the sampling settings, and presses Generate. Pairs are
sampled in a worker thread and each finished pair appears at once as an image + labels layer in a
preview grid and as a row of the curation list, where it can be accepted or rejected (after correcting
the mask with napari's label tools) and the accepted pairs saved to a dataset store.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.fractions import class_counts
from ..core.sample import Sample
from ..core.store import DatasetStore
from ._engine_worker import EngineProgress
from .curation_list import CurationList
from .fraction_sliders import FractionSliders

BROWSE = "Model folder..."
#: Paper 000, sec. 2.2.2 takes the real fraction vectors from 256x256 mask slices.
REAL_TILE = 256
SAMPLER_LABELS = {"ddim": "DDIM", "dpm++": "DPM-Solver++"}
GRID_GAP = 0.125  # gap between preview cells, as a share of the pair size
STATUS_COLORS = {"pending": None, "accepted": QColor(40, 150, 60), "rejected": QColor(190, 50, 50)}
MAX_SEED = 2**31 - 1


def bundled_generators() -> dict[str, Path]:
    """Display name -> folder of the generator models shipped in ``resources/models``, the demo's first."""
    from ..resources import resources_dir

    from ..engines.demo import DEMO_GENERATOR

    found = {}
    # the demo's generator (the best measured one) first, so it is preselected
    for config in sorted((resources_dir() / "models").glob("*/config.json"),
                         key=lambda path: (path.parent.name != DEMO_GENERATOR, path.parent.name)):
        if json.loads(config.read_text()).get("kind") == "generator":
            found[f"bundled: {config.parent.name}"] = config.parent
    return found


def real_fraction_vectors(store: DatasetStore, tile: int = REAL_TILE) -> np.ndarray:
    """``(N, C)`` phase-fraction vectors of the real annotated masks of a store, one per ``tile`` square.

    Like paper 000 (sec. 2.2.2) the vectors come from non-overlapping tiles of the masks (a mask smaller
    than a tile gives one vector). Synthetic samples (also hand-corrected ones) and rejected samples are
    left out, so the distribution is that of real data.
    """
    schema = store.schema
    rows = []
    for i in range(len(store)):
        provenance = store.provenance(i)
        if store.status(i) == "rejected" or "synthetic" in (provenance.origin, provenance.extra.get("original_origin")):
            continue
        mask = store.mask(i)
        boxes = tile_boxes_or_whole(mask.shape, tile)
        for y0, x0, y1, x1 in boxes:
            counts = class_counts(mask[y0:y1, x0:x1], schema.n_classes, schema.ignore_id)
            if counts.sum():
                rows.append(counts / counts.sum())
    return np.array(rows, dtype=np.float64).reshape(-1, schema.n_classes)


def tile_boxes_or_whole(shape: tuple[int, int], tile: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping ``tile`` boxes of ``shape``, or the whole image when it is smaller than a tile."""
    from ..core.tiles import tile_boxes

    return tile_boxes(shape, tile) or [(0, 0, int(shape[0]), int(shape[1]))]


def format_fractions(values: Sequence[float], names: Sequence[str]) -> str:
    """``"ferrite 70.0 %, cementite 30.0 %"``."""
    return ", ".join(f"{name} {100 * float(v):.1f} %" for name, v in zip(names, values))


def stream_pairs(
    generator,
    emit: Callable[[Sample], None],
    progress,
    should_stop,
    conditions: Any,
    n: int | None,
    seed: int,
    options: dict[str, Any],
) -> int:
    """Engine run in the worker: pass every pair of ``generator.sample`` to ``emit`` as soon as it is done."""
    count = 0
    for pair in generator.sample(conditions, n=n, seed=seed, progress=progress, should_stop=should_stop, **options):
        emit(pair)
        count += 1
    return count


class _PairRelay(QObject):
    """Carries finished pairs from the worker thread to the UI thread (queued signal)."""

    pair_ready = Signal(object)


@dataclass
class _Run:
    """Where the pairs of one Generate click go in the preview grid."""

    requested: int
    seed: int
    columns: int
    origin_y: float
    cell: tuple[float, float] | None = None
    arrived: int = 0


class SynthesisWidget(QWidget):
    """Generate synthetic micrograph + mask pairs, see them arrive in a grid, accept or reject, save."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from ..models.device import DEVICE_CHOICES

        self.viewer = napari_viewer
        self.generator = None
        self.generator_folder: Path | None = None
        self._loaded_device = None
        self.curation = CurationList()
        self.sliders: FractionSliders | None = None
        self.property_boxes: dict[str, QDoubleSpinBox] = {}
        self.option_widgets: dict[str, QWidget] = {}
        self.real_fractions: np.ndarray | None = None
        self._fraction_sampler = None
        self._real_source = ""
        self._layers: list[tuple[Any, Any]] = []
        self._run: _Run | None = None
        self._next_y = 0.0
        self._relay = _PairRelay()
        self._relay.pair_ready.connect(self._add_pair)

        # generator
        self.model_combo = QComboBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_label = QLabel("")
        self.generator_info = QLabel("")
        self.generator_info.setWordWrap(True)
        generator_form = QFormLayout()
        generator_form.addRow("generator", self.model_combo)
        device_row = QHBoxLayout()
        device_row.addWidget(self.device_combo)
        device_row.addWidget(self.device_label, 1)
        generator_form.addRow("device", device_row)
        generator_form.addRow(self.generator_info)
        generator_box = QGroupBox("Generator")
        generator_box.setLayout(generator_form)

        # conditions (rebuilt for each generator's condition spec)
        self.condition_box = QGroupBox("Target")
        self.condition_layout = QVBoxLayout(self.condition_box)
        self.composition_radio = QRadioButton("target composition")
        self.distribution_radio = QRadioButton("from the data distribution")
        self.distribution_label = QLabel("")
        self.distribution_label.setWordWrap(True)
        self.store_fractions_button = QPushButton("Fractions from store...")
        self.store_fractions_button.setToolTip(
            "draw target fractions from the real annotated masks of a dataset store (256 px tiles), "
            "oversampling rare phases as in paper 000, sec. 2.2.2"
        )
        self.composition_radio.setChecked(True)

        # sampling
        self.pairs_box = QSpinBox()
        self.pairs_box.setRange(1, 10000)
        self.pairs_box.setValue(4)
        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, MAX_SEED)
        self.seed_box.setToolTip("pair i gets seed + i; after a run the seed moves past the pairs made")
        self.sampling_box = QGroupBox("Sampling")
        self.sampling_grid = QGridLayout(self.sampling_box)
        self.generate_button = QPushButton("Generate")
        self.progress = EngineProgress()

        # curation
        self.pair_list = QListWidget()
        self.pair_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.pair_list.setWordWrap(True)
        self.pair_list.setMinimumHeight(160)
        self.accept_button = QPushButton("Accept")
        self.reject_button = QPushButton("Reject")
        self.save_button = QPushButton("Save accepted to store...")
        self.counts_label = QLabel("")
        buttons = QHBoxLayout()
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.reject_button)
        curation_layout = QVBoxLayout()
        curation_layout.addWidget(self.pair_list, 1)
        curation_layout.addLayout(buttons)
        curation_layout.addWidget(self.save_button)
        curation_layout.addWidget(self.counts_label)
        curation_box = QGroupBox("Generated pairs (phase fractions: target → achieved)")
        curation_box.setLayout(curation_layout)

        self.message = QLabel("")
        self.message.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(generator_box)
        layout.addWidget(self.condition_box)
        layout.addWidget(self.sampling_box)
        layout.addWidget(self.generate_button)
        layout.addWidget(self.progress)
        layout.addWidget(curation_box, 1)
        layout.addWidget(self.message)

        self.model_combo.activated.connect(self._model_chosen)
        self.device_combo.currentTextChanged.connect(self._device_changed)
        self.store_fractions_button.clicked.connect(self._store_fractions_dialog)
        self.generate_button.clicked.connect(self.generate)
        self.pair_list.itemSelectionChanged.connect(self._selection_changed)
        self.accept_button.clicked.connect(lambda: self.set_selected_status("accepted"))
        self.reject_button.clicked.connect(lambda: self.set_selected_status("rejected"))
        self.save_button.clicked.connect(self._save_dialog)

        self._models = bundled_generators()
        self.model_combo.addItems(list(self._models))
        self.model_combo.addItem(BROWSE)
        self._device_changed(self.device_combo.currentText())
        if self._models:
            self._load(self._models[self.model_combo.currentText()])
        else:
            self._show_generator_controls()
            self.message.setText(f"no bundled generator found: choose a generator's model folder ({BROWSE})")
        self._update_curation_controls()

    # ------------------------------------------------------------------ generator choice

    def _model_chosen(self, index: int) -> None:
        label = self.model_combo.itemText(index)
        if label != BROWSE:
            self._load(self._models[label])
            return
        folder = QFileDialog.getExistingDirectory(self, "Choose a generator model folder")
        if folder:
            try:
                self.add_model_folder(folder)
                return
            except (ValueError, FileNotFoundError) as exc:
                self.message.setText(f"cannot use {folder}: {exc}")
        self._select_label_of(self.generator_folder)

    def add_model_folder(self, folder: str | Path) -> None:
        """Offer a generator's model folder (written by ``Generator.save``), select it and load it."""
        from ..models.folder import read_model_config

        folder = Path(folder)
        config = read_model_config(folder)
        if config.get("kind") != "generator":
            raise ValueError(f"{folder} holds a {config.get('kind') or 'unknown'} model, not a generator")
        label = f"folder: {folder.name}"
        if label not in self._models:
            self.model_combo.insertItem(self.model_combo.count() - 1, label)
        self._models[label] = folder
        self.model_combo.setCurrentText(label)
        self._load(folder)

    def _select_label_of(self, folder: Path | None) -> None:
        for label, known in self._models.items():
            if known == folder:
                self.model_combo.setCurrentText(label)
                return

    def _device_changed(self, choice: str) -> None:
        from ..models.device import resolve_device

        try:
            self.device_label.setText(f"-> {resolve_device(choice)}")
        except RuntimeError as exc:
            self.device_label.setText(str(exc))

    def _load(self, folder: Path) -> None:
        from ..generators import load_generator
        from ..models.device import resolve_device

        try:
            device = resolve_device(self.device_combo.currentText())
            generator = load_generator(folder, device=str(device))
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
            self.message.setText(f"cannot load the generator in {folder}: {exc}")
            self._select_label_of(self.generator_folder)
            return
        old_schema = None if self.generator is None else self.generator.schema
        self.generator, self.generator_folder, self._loaded_device = generator, folder, device
        if old_schema != generator.schema:
            self.real_fractions = None
            self._fraction_sampler = None
        spec = generator.condition_spec
        self.generator_info.setText(f"{generator.name} v{generator.version}, {spec.kind} condition")
        self.generator_info.setToolTip(
            f"{generator.description or generator.name}\nphases: {', '.join(generator.schema.names)}"
        )
        self._show_generator_controls()
        self.message.setText(f"loaded {folder.name} on {device}")

    def _generator_for_run(self):
        """The loaded generator, reloaded when the device choice changed since it was loaded."""
        from ..generators import load_generator
        from ..models.device import resolve_device

        if self.generator is None:
            raise ValueError(f"choose a generator first ({BROWSE})")
        device = resolve_device(self.device_combo.currentText())
        if device != self._loaded_device:
            self.generator = load_generator(self.generator_folder, device=str(device))
            self._loaded_device = device
        return self.generator

    # ------------------------------------------------------------------ condition and sampling controls

    def _show_generator_controls(self) -> None:
        _clear_layout(
            self.condition_layout,
            keep=(self.composition_radio, self.distribution_radio, self.distribution_label,
                  self.store_fractions_button),
        )
        self.sliders = None
        self.property_boxes = {}
        spec = None if self.generator is None else self.generator.condition_spec
        if spec is None:
            self.condition_layout.addWidget(QLabel("no generator loaded"))
        elif spec.kind == "fractions":
            self.sliders = FractionSliders(self.generator.schema)
            self.condition_layout.addWidget(self.composition_radio)
            self.condition_layout.addWidget(self.sliders)
            self.condition_layout.addWidget(self.distribution_radio)
            row = QHBoxLayout()
            row.addWidget(self.distribution_label, 1)
            row.addWidget(self.store_fractions_button)
            self.condition_layout.addLayout(row)
            self._update_distribution_controls()
        elif spec.kind == "properties":
            form = QFormLayout()
            for p in spec.properties:
                box = QDoubleSpinBox()
                span = p.high - p.low
                box.setDecimals(max(0, 3 - int(math.floor(math.log10(span)))) if span > 0 else 2)
                box.setRange(p.low, p.high)
                box.setSingleStep(span / 100 if span > 0 else 1.0)
                box.setValue((p.low + p.high) / 2)
                if p.unit:
                    box.setSuffix(f" {p.unit}")
                box.setToolTip(f"trained range {p.low:g} to {p.high:g} {p.unit}".rstrip())
                form.addRow(p.name, box)
                self.property_boxes[p.name] = box
            self.condition_layout.addLayout(form)
        else:
            self.condition_layout.addWidget(QLabel("this generator is unconditional: nothing to set"))
        self._build_sampling_controls()
        self.generate_button.setEnabled(self.generator is not None)

    def _update_distribution_controls(self) -> None:
        if self._fraction_sampler is None:
            self.distribution_radio.setText("from the data distribution")
            self.distribution_label.setText("no real phase fractions known: choose a store of annotated micrographs")
            self.distribution_radio.setEnabled(False)
            self.composition_radio.setChecked(True)
            return
        boosts = [
            f"{mode.label} ({100 * share:.0f} %)"
            for mode, share in zip(self._fraction_sampler.modes, self._fraction_sampler.shares)
            if mode.boost is not None
        ]
        self.distribution_radio.setText(
            "from the data distribution" + (f", boosting {', '.join(boosts)}" if boosts else "")
        )
        self.distribution_label.setText(f"{len(self.real_fractions)} real tile fractions from {self._real_source}")
        self.distribution_radio.setEnabled(True)

    def use_store_fractions(self, path: str | Path) -> int:
        """Take the real phase-fraction distribution from a dataset store and select that mode.

        Returns the number of fraction vectors (one per 256 px tile of each real mask).
        """
        from ..core.conditions import BoostedFractionSampler, default_shares

        if self.generator is None or self.generator.condition_spec.kind != "fractions":
            raise ValueError("load a generator conditioned on phase fractions first")
        store = DatasetStore.open(path)
        schema = self.generator.schema
        if store.schema.names != schema.names:
            raise ValueError(
                f"the store's phases ({', '.join(store.schema.names)}) differ from the generator's "
                f"({', '.join(schema.names)})"
            )
        real = real_fraction_vectors(store)
        if not len(real):
            raise ValueError(f"{path} holds no real annotated masks (only synthetic or rejected samples)")
        self._fraction_sampler = BoostedFractionSampler.from_shares(real, default_shares(schema, real), schema)
        self.real_fractions = real
        self._real_source = Path(path).name
        self._update_distribution_controls()
        self.distribution_radio.setChecked(True)
        return len(real)

    def _store_fractions_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset store with real annotated micrographs")
        if folder:
            try:
                self.use_store_fractions(folder)
            except (ValueError, OSError) as exc:
                self.message.setText(f"cannot use {folder}: {exc}")

    def _build_sampling_controls(self) -> None:
        from ..models.diffusion import DEFAULT_SAMPLING_STEPS, SAMPLERS

        _clear_layout(self.sampling_grid, keep=(self.pairs_box, self.seed_box))
        self.option_widgets = {}
        defaults = {} if self.generator is None else dict(self.generator.sampling_defaults)
        cells: list[tuple[str, QWidget]] = [("pairs", self.pairs_box), ("seed", self.seed_box)]
        for key, default in defaults.items():
            if key == "sampler":
                widget = QComboBox()
                for name in SAMPLERS:
                    widget.addItem(SAMPLER_LABELS.get(name, name), name)
                widget.setCurrentIndex(max(0, widget.findData(default)))
                widget.setToolTip("DDIM: 50 steps as in paper 000, sec. 2.2.1; DPM-Solver++: about 20 steps")
            elif key == "steps":
                widget = QSpinBox()
                widget.setRange(1, 1000)
                widget.setValue(int(default) if default is not None else 50)
            elif key == "guidance_scale":
                widget = QDoubleSpinBox()
                widget.setRange(0.0, 20.0)
                widget.setSingleStep(0.5)
                widget.setValue(float(default))
                widget.setToolTip("classifier-free guidance; 1 = plain conditional sampling")
            elif key == "fraction_control":
                widget = QDoubleSpinBox()
                widget.setRange(0.0, 1.0)
                widget.setSingleStep(0.25)
                widget.setValue(float(default))
                widget.setToolTip("steer every denoising step towards the target fractions: 1 = full "
                                  "(achieved within about a point), 0 = off (paper 000's plain sampling)")
            elif key == "control_temperature":
                widget = QDoubleSpinBox()
                widget.setRange(0.5, 50.0)
                widget.setValue(float(default))
                widget.setToolTip("softmax temperature of the fraction control on the mask channels")
            elif isinstance(default, bool):
                widget = QCheckBox()
                widget.setChecked(default)
            elif isinstance(default, int):
                widget = QSpinBox()
                widget.setRange(1 if key == "batch_size" else 0, 10000)
                widget.setValue(default)
            elif isinstance(default, float):
                widget = QDoubleSpinBox()
                widget.setRange(-1e6, 1e6)
                widget.setValue(default)
            else:
                continue  # an option without a simple default keeps the generator's default
            self.option_widgets[key] = widget
            cells.append((key.replace("_", " "), widget))
        sampler, steps = self.option_widgets.get("sampler"), self.option_widgets.get("steps")
        if sampler is not None and steps is not None:
            def sampler_changed(_index: int) -> None:
                steps.setValue(DEFAULT_SAMPLING_STEPS.get(sampler.currentData(), steps.value()))

            sampler.currentIndexChanged.connect(sampler_changed)
            if defaults.get("steps") is None:
                sampler_changed(sampler.currentIndex())
        for k, (label, widget) in enumerate(cells):
            row, col = divmod(k, 2)
            self.sampling_grid.addWidget(QLabel(label), row, 2 * col)
            self.sampling_grid.addWidget(widget, row, 2 * col + 1)
        self.sampling_grid.setColumnStretch(1, 1)
        self.sampling_grid.setColumnStretch(3, 1)

    def sampling_options(self) -> dict[str, Any]:
        """The generator options set in the widget (keys of the generator's ``sampling_defaults``)."""
        options = {}
        for key, widget in self.option_widgets.items():
            if isinstance(widget, QComboBox):
                options[key] = widget.currentData()
            elif isinstance(widget, QCheckBox):
                options[key] = widget.isChecked()
            else:
                options[key] = widget.value()
        return options

    def conditions(self) -> tuple[Any, int | None]:
        """``(conditions, n)`` for ``Generator.sample`` from the controls and the number of pairs."""
        n = self.pairs_box.value()
        spec = self.generator.condition_spec
        if spec.kind == "fractions":
            if self.distribution_radio.isChecked() and self._fraction_sampler is not None:
                rng = np.random.default_rng(self.seed_box.value())
                return self._fraction_sampler.sample(n, rng), None
            return self.sliders.fractions, n
        if spec.kind == "properties":
            return {name: box.value() for name, box in self.property_boxes.items()}, n
        return None, n

    # ------------------------------------------------------------------ generation

    @property
    def running(self) -> bool:
        """True while pairs are being generated (tests wait on this)."""
        return self.progress.busy

    def generate(self) -> None:
        """Start sampling in a worker; every finished pair is added to the viewer as it arrives."""
        if self.running:
            return
        try:
            generator = self._generator_for_run()
            conditions, n = self.conditions()
            options = self.sampling_options()
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            self.message.setText(f"cannot generate: {exc}")
            return
        requested = n if n is not None else len(conditions)
        seed = self.seed_box.value()
        self._run = _Run(requested, seed, columns=max(1, math.ceil(math.sqrt(requested))), origin_y=self._next_y)
        self._set_running(True)
        self.message.setText(f"generating {requested} pairs with {self.generator_folder.name}...")
        self.progress.start(
            stream_pairs,
            on_done=lambda count: self._run_finished("done"),
            on_error=lambda exc: self._run_finished(f"failed: {exc}"),
            on_cancelled=lambda: self._run_finished("cancelled"),
            generator=generator,
            emit=self._relay.pair_ready.emit,
            conditions=conditions,
            n=n,
            seed=seed,
            options=options,
        )

    def cancel(self) -> None:
        """Stop generating before the next denoising step; pairs already shown stay."""
        self.progress.cancel()

    def _set_running(self, running: bool) -> None:
        controls = (self.generate_button, self.model_combo, self.device_combo, self.condition_box, self.sampling_box)
        for widget in controls:
            widget.setEnabled(not running)

    def _run_finished(self, how: str) -> None:
        run = self._run
        self._set_running(False)
        if run.arrived:
            self.seed_box.setValue(min(MAX_SEED, run.seed + run.arrived))
            self.viewer.reset_view()
        seeds = ""
        if run.arrived:
            seeds = f" (seeds {run.seed}-{run.seed + run.arrived - 1}; next seed {self.seed_box.value()})"
        if how == "done":
            self.message.setText(f"generated {run.arrived} pairs{seeds}")
        elif how == "cancelled":
            self.message.setText(f"cancelled after {run.arrived} of {run.requested} pairs{seeds}")
        else:
            self.message.setText(f"generation {how}")

    def _add_pair(self, pair: Sample) -> None:
        from ..napari_io import layer_pair, physical_scale

        run = self._run
        if run.cell is None:  # in world units: micrometres when the pixel size is known
            sy, sx = physical_scale([pair.pixel_size_um])["scale"]
            h, w = pair.shape
            gap = max(2.0, GRID_GAP * max(h, w))
            run.cell = ((h + gap) * sy, (w + gap) * sx)
        row, col = divmod(run.arrived, run.columns)
        translate = (run.origin_y + row * run.cell[0], col * run.cell[1])
        self._next_y = max(self._next_y, translate[0] + run.cell[0])
        run.arrived += 1

        stem = self._free_stem()
        entry = {
            "name": pair.name,
            "pixel_size_um": pair.pixel_size_um,
            "properties": dict(pair.properties),
            "provenance": pair.provenance.to_dict(),
            "status": "pending",
            "target_fractions": pair.provenance.condition.get("fractions") if pair.provenance.condition else None,
            "achieved_fractions": pair.fractions.tolist(),
        }
        layers = []
        for data, kwargs, kind in layer_pair(pair.image, pair.mask, pair.schema, [entry], stem):
            layers.append(getattr(self.viewer, f"add_{kind}")(data, translate=translate, **kwargs))
        image_layer, labels_layer = layers
        index = self.curation.add(pair, image_layer.name, labels_layer.name)
        self._layers.append((image_layer, labels_layer))
        labels_layer.events.paint.connect(lambda event, i=index: self._refresh_row(i))
        labels_layer.events.data.connect(lambda event, i=index: self._refresh_row(i))
        self.pair_list.addItem(QListWidgetItem())
        self._refresh_row(index)
        if run.arrived == 1:
            self.viewer.reset_view()
        self._update_curation_controls()

    def _free_stem(self) -> str:
        number = len(self.curation) + 1
        while f"synth {number:03d} image" in self.viewer.layers or f"synth {number:03d} mask" in self.viewer.layers:
            number += 1
        return f"synth {number:03d}"

    # ------------------------------------------------------------------ curation

    def current_mask(self, index: int) -> np.ndarray | None:
        """The labels layer data of pair ``index`` (None when the layer was removed from the viewer)."""
        labels_layer = self._layers[index][1]
        return np.asarray(labels_layer.data) if labels_layer in self.viewer.layers else None

    def achieved(self, index: int) -> np.ndarray:
        """Phase fractions of pair ``index``'s current (possibly edited) mask."""
        return self.curation[index].curated(self.current_mask(index)).fractions

    def row_text(self, index: int) -> str:
        """The curation list row of pair ``index``: name, status, seed, then target -> achieved fractions in %."""
        entry = self.curation[index]
        names = entry.sample.schema.names
        condition = entry.sample.provenance.condition or {}
        head = f"{entry.image_layer.removesuffix(' image')}  [{entry.status}]  seed {entry.sample.provenance.seed}"
        try:
            achieved = self.achieved(index)
        except ValueError as exc:
            return f"{head}\ninvalid mask: {exc}"
        if entry.target is not None:
            return f"{head}\n" + ", ".join(
                f"{name} {100 * t:.1f} → {100 * a:.1f} %" for name, t, a in zip(names, entry.target, achieved)
            )
        if "properties" in condition:
            target = ", ".join(f"{k} = {v:g}" for k, v in condition["properties"].items())
        else:
            target = "unconditional"
        return f"{head}\n{target} → {format_fractions(achieved, names)}"

    def _refresh_row(self, index: int) -> None:
        entry = self.curation[index]
        item = self.pair_list.item(index)
        item.setText(self.row_text(index))
        color = STATUS_COLORS[entry.status]
        item.setForeground(color if color is not None else self.pair_list.palette().text().color())
        for layer in self._layers[index]:
            info = layer.metadata.get("microsynth", {})
            for sample_entry in info.get("samples", []):
                sample_entry["status"] = entry.status
                if layer is self._layers[index][1]:
                    try:
                        sample_entry["achieved_fractions"] = self.achieved(index).tolist()
                    except ValueError:
                        sample_entry["achieved_fractions"] = None
        if self.sliders is not None and item.isSelected() and entry.sample.schema == self.sliders.schema:
            self._show_achieved(index)

    def _show_achieved(self, index: int) -> None:
        try:
            self.sliders.set_achieved(self.achieved(index))
        except ValueError:
            self.sliders.set_achieved(None)

    def selected_rows(self) -> list[int]:
        return sorted(self.pair_list.row(item) for item in self.pair_list.selectedItems())

    def _selection_changed(self) -> None:
        rows = self.selected_rows()
        self._update_curation_controls()
        if not rows:
            return
        labels_layer = self._layers[rows[-1]][1]
        if labels_layer in self.viewer.layers:
            self.viewer.layers.selection.active = labels_layer
        if self.sliders is not None and self.curation[rows[-1]].sample.schema == self.sliders.schema:
            self._show_achieved(rows[-1])

    def set_status(self, index: int, status: str) -> None:
        """Mark pair ``index`` pending, accepted or rejected."""
        self.curation.set_status(index, status)
        self._refresh_row(index)
        self._update_curation_controls()

    def set_selected_status(self, status: str) -> None:
        """Accept or reject the pairs selected in the list."""
        for index in self.selected_rows():
            self.set_status(index, status)

    def _update_curation_controls(self) -> None:
        counts = self.curation.counts()
        self.accept_button.setEnabled(bool(self.pair_list.selectedItems()))
        self.reject_button.setEnabled(bool(self.pair_list.selectedItems()))
        self.save_button.setEnabled(counts["accepted"] > 0)
        self.counts_label.setText(
            f"{len(self.curation)} pairs: {counts['accepted']} accepted, {counts['rejected']} rejected, "
            f"{counts['pending']} pending"
        )

    def save_accepted(self, path: str | Path) -> list[int]:
        """Append the accepted pairs, with their current labels, to a dataset store; returns their indices.

        A pair whose labels were edited is saved with origin "corrected" and the number of changed pixels.
        """
        masks = {}
        for index in self.curation.indices("accepted"):
            mask = self.current_mask(index)
            if mask is not None:
                masks[index] = mask
        key = str(Path(path).resolve())
        corrected = sum(
            1 for index, mask in masks.items()
            if key not in self.curation[index].saved_to
            and self.curation[index].curated(mask).provenance.origin == "corrected"
        )
        added = self.curation.save_accepted(path, masks)
        self.message.setText(
            f"saved {len(added)} accepted pairs to {path}"
            + (f" ({corrected} with corrected masks)" if corrected else "")
        )
        return added

    def _save_dialog(self) -> None:
        path = QFileDialog.getSaveFileName(self, "Dataset store", "synthetic.zarr", "Dataset store (*.zarr)")[0]
        if path:
            try:
                self.save_accepted(path)
            except (ValueError, OSError) as exc:
                self.message.setText(f"could not save: {exc}")


def _clear_layout(layout, keep: Sequence[QWidget] = ()) -> None:
    """Empty a layout (and its nested layouts): widgets in ``keep`` are detached for reuse, others deleted."""
    while layout.count():
        item = layout.takeAt(0)
        widget = item.widget()
        if widget is not None:
            widget.setParent(None)  # detached at once (a deferred delete may wait for the event loop)
            if not any(widget is kept for kept in keep):
                widget.deleteLater()
        elif item.layout() is not None:
            _clear_layout(item.layout(), keep)
            item.layout().deleteLater()
