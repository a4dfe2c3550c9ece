"""Dock widget "Synthesis": generate micrograph + mask pairs from a generator into a dataset store.

The user picks a generator (a bundled model or a model folder), sets what it is conditioned on (target
phase fractions with sum-to-one sliders, fractions drawn from a real data distribution with rare phases
boosted, named properties, or nothing) and the sampling options the generator declares, and presses
Generate. In the data-distribution mode a boost level per boosted phase (the mean fraction of that phase
over the targets; off = paper 000's plain oversampling) can be set, and a histogram of the real tile
fractions against the resulting targets follows the levels. The pairs are made in a worker thread by :class:`~napari_microsynth.engines.generation.GenerateRun`
(the engine of ``microsynth generate``): each one is written to the dataset store as "pending" the moment
it is done, so a crash or a cancel loses nothing, and shown in a preview grid. The store is one the user
chose or a session store in the user data folder; **Curate** opens the Curation widget on it, the one
place where pairs are corrected, accepted or rejected. The preview grid lies to the right of the other
layers (a micrograph, the curation pair), never on top of them, and the view is fitted to it.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.sample import Sample, companion_images
from ..core.store import DatasetStore, is_store
from ._dock import PluginDock, not_a_store
from ._engine_worker import EngineProgress
from .fraction_sliders import FractionSliders
from .options_form import OptionsForm

BROWSE = "Model folder..."
PLUGIN = "napari-microsynth"
GRID_GAP = 0.125  # gap between preview cells, as a share of the pair size
MAX_SEED = 2**31 - 1
PREVIEW_TARGETS = 2000  # targets drawn for the target histogram of the data-distribution mode


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


def session_store_path(schema_name: str, stamp: str) -> Path:
    """Where a session's pairs go when the user chose no store: the user data folder, one store per
    session (``stamp``) and phase schema, so it outlives a crash of napari."""
    from platformdirs import user_data_dir

    return Path(user_data_dir(PLUGIN)) / "synthesis" / f"session-{stamp}-{schema_name}.zarr"


def generate_into_store(
    path: Path,
    generator,
    conditions: Any,
    n: int | None,
    seed: int,
    options: dict[str, Any],
    on_plan: Callable[[Any], None],
    on_pair: Callable[[int, Sample], None],
    progress,
    should_stop,
) -> int:
    """Engine run in the worker: a :class:`GenerateRun` into the store at ``path`` (created when missing).

    ``on_plan(run)`` once the run is planned, ``on_pair(index, pair)`` after each pair is stored as pending.
    Returns the number of pairs written; raises ``Cancelled`` with the pairs so far kept in the store.
    """
    from ..engines.generation import GenerateRun

    if is_store(path):
        store = DatasetStore.open(path, mode="a", check_data=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = DatasetStore.create(path, generator.schema, description=f"synthetic pairs from {generator.name}")
    with store:
        if store.schema != generator.schema:
            raise ValueError(f"{path} holds {store.schema.name!r} masks ({', '.join(store.schema.names)}), "
                             f"the generator makes {generator.schema.name!r} ones; choose another store")
        run = GenerateRun.plan(generator, store, conditions, n=n, seed=seed, **options)
        on_plan(run)
        return run.write(store, progress=progress, should_stop=should_stop, on_pair=on_pair)


class _PairRelay(QObject):
    """Carries the plan and the stored pairs from the worker thread to the UI thread (queued signals)."""

    planned = Signal(object)
    pair_ready = Signal(int, object)


@dataclass
class _Run:
    """One Generate click: where its pairs go in the preview grid and what has arrived."""

    columns: int
    origin: tuple[float, float]
    plan: Any = None
    cell: tuple[float, float] | None = None
    picture_width: float = 0.0  # one picture and its gap, in world units
    arrived: int = 0
    achieved: list[np.ndarray] = field(default_factory=list)
    layers: list = field(default_factory=list)


class SynthesisWidget(PluginDock):
    """Generate synthetic micrograph + mask pairs into a dataset store, preview them, hand over to Curation."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.generator = None
        self.generator_folder: Path | None = None
        self._loaded_device = None
        self.sliders: FractionSliders | None = None
        self.property_boxes: dict[str, QDoubleSpinBox | QComboBox] = {}
        self.options_form: OptionsForm | None = None
        self.real_fractions: np.ndarray | None = None
        self._fraction_sampler = None
        self._base_shares: dict[str, float] = {}
        self.level_boxes: dict[str, QDoubleSpinBox] = {}
        self._levels_error = ""
        self.preview_targets: np.ndarray | None = None  # the targets the histogram shows
        self._real_source = ""
        self._chosen_store: Path | None = None
        self._session_stamp = time.strftime("%Y%m%d-%H%M%S")
        self._written: dict[Path, int] = {}  # pairs this widget wrote, per store
        self._run: _Run | None = None
        self._preview: list = []  # the preview layers of every run, in the grid right of the other layers
        self._next_y = 0.0
        self._relay = _PairRelay()
        self._relay.planned.connect(self._run_planned)
        self._relay.pair_ready.connect(self._add_pair)
        self.generate_button = QPushButton("Generate")
        self.progress = EngineProgress()
        self.message = QLabel("")
        self.message.setWordWrap(True)

        layout = self.form
        layout.addWidget(self._generator_box())
        layout.addWidget(self._condition_box())
        layout.addWidget(self._sampling_box())
        layout.addWidget(self._store_box())
        layout.addWidget(self.generate_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.curate_button)
        layout.addWidget(self.message)
        layout.addStretch(1)
        self.generate_button.clicked.connect(self.generate)

        self._models = bundled_generators()
        self.model_combo.addItems(list(self._models))
        self.model_combo.addItem(BROWSE)
        self._device_changed(self.device_combo.currentText())
        if self._models:
            self._load(self._models[self.model_combo.currentText()])
        else:
            self._show_generator_controls()
            self._show_store()
            self.message.setText(f"no bundled generator found: choose a generator's model folder ({BROWSE})")

    def _generator_box(self) -> QGroupBox:
        from ..models.device import DEVICE_CHOICES

        self.model_combo = QComboBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_label = QLabel("")
        self.generator_info = QLabel("")
        self.generator_info.setWordWrap(True)
        form = QFormLayout()
        form.addRow("generator", self.model_combo)
        device_row = QHBoxLayout()
        device_row.addWidget(self.device_combo)
        device_row.addWidget(self.device_label, 1)
        form.addRow("device", device_row)
        form.addRow(self.generator_info)
        self.model_combo.activated.connect(self._model_chosen)
        self.device_combo.currentTextChanged.connect(self._device_changed)
        box = QGroupBox("Generator")
        box.setLayout(form)
        return box

    def _condition_box(self) -> QGroupBox:
        """The "Target" box; its controls are rebuilt for each generator's condition spec."""
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
        self.store_fractions_button.clicked.connect(self._store_fractions_dialog)
        self.composition_radio.setChecked(True)
        self.levels_box = QWidget()
        levels = QVBoxLayout(self.levels_box)
        levels.setContentsMargins(0, 0, 0, 0)
        self.levels_form = QFormLayout()
        levels.addLayout(self.levels_form)
        self.levels_note = QLabel("")
        self.levels_note.setWordWrap(True)
        levels.addWidget(self.levels_note)
        self.target_plot = QLabel("")
        self.target_plot.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.target_plot.setToolTip("phase fractions of the real tiles (grey) and of the targets the data mode "
                                    f"draws ({PREVIEW_TARGETS} drawn, blue); dashed: means, red dotted: boost levels")
        levels.addWidget(self.target_plot)
        self.levels_box.setVisible(False)
        self.plausible_button = QPushButton("Sample plausible conditions")
        self.plausible_button.setToolTip("set the conditions to a draw from where the model was trained (between the "
                                         "training micrographs' conditions where the model keeps them; the seed box "
                                         "sets the draw)")
        self.plausible_button.clicked.connect(self.sample_plausible_conditions)
        self.plausible_per_pair = QCheckBox("a new plausible draw for every pair")
        self.plausible_per_pair.setToolTip("each pair gets its own condition, drawn as the button draws one")
        self.plausible_per_pair.toggled.connect(self._enable_property_boxes)
        return self.condition_box

    def _sampling_box(self) -> QGroupBox:
        """Number of pairs and seed; the generator's declared sampling options are added below them."""
        self.pairs_box = QSpinBox()
        self.pairs_box.setRange(1, 10000)
        self.pairs_box.setValue(4)
        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, MAX_SEED)
        self.seed_box.setToolTip("pair i gets seed + i; after a finished run the seed moves past the pairs made, "
                                 "after a cancel it stays, so Generate continues the run")
        grid = QGridLayout()
        for col, (label, box) in enumerate((("pairs", self.pairs_box), ("seed", self.seed_box))):
            grid.addWidget(QLabel(label), 0, 2 * col)
            grid.addWidget(box, 0, 2 * col + 1)
            grid.setColumnStretch(2 * col + 1, 1)
        self.sampling_box = QGroupBox("Sampling")
        self.sampling_layout = QVBoxLayout(self.sampling_box)
        self.sampling_layout.addLayout(grid)
        return self.sampling_box

    def _store_box(self) -> QGroupBox:
        """Where the pairs go (shown as a path) and the hand-over to the Curation widget."""
        self.store_label = QLabel("")
        self.store_label.setWordWrap(True)
        self.store_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.store_button = QPushButton("Store...")
        self.store_button.setToolTip("write the pairs into a dataset store of your choice (new or existing)")
        self.store_button.clicked.connect(self._store_dialog)
        self.curate_button = QPushButton("Curate")
        self.curate_button.setToolTip("open the Curation widget on the store: correct, accept or reject the pairs")
        self.curate_button.clicked.connect(self.curate)
        self.curate_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.store_label, 1)
        row.addWidget(self.store_button)
        self.store_box = QGroupBox("Pairs are stored as pending in")
        self.store_box.setLayout(row)
        return self.store_box

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
            self._base_shares = {}
            self._build_level_boxes()
        spec = generator.condition_spec
        self.generator_info.setText(f"{generator.name} v{generator.version}, {spec.kind} condition")
        self.generator_info.setToolTip(
            f"{generator.description or generator.name}\nphases: {', '.join(generator.schema.names)}"
        )
        self._show_generator_controls()
        self._show_store()
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
                  self.store_fractions_button, self.levels_box, self.plausible_button, self.plausible_per_pair),
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
            self.condition_layout.addWidget(self.levels_box)
            self._update_distribution_controls()
        elif spec.kind == "properties":
            form = QFormLayout()
            for p in spec.properties:
                box = _property_control(p)
                form.addRow(p.name, box)
                self.property_boxes[p.name] = box
            self.condition_layout.addLayout(form)
            self._enable_property_boxes()
            self.condition_layout.addWidget(self.plausible_button)
            self.condition_layout.addWidget(self.plausible_per_pair)
        else:
            self.condition_layout.addWidget(QLabel("this generator is unconditional: nothing to set"))
        self._build_sampling_controls()
        self.generate_button.setEnabled(self.generator is not None)

    def _update_distribution_controls(self) -> None:
        # (only inside the Target box: a parentless widget made visible would open as a window of its own)
        self.levels_box.setVisible(self._fraction_sampler is not None and self.levels_box.parent() is not None)
        if self._fraction_sampler is None:
            self.distribution_radio.setText("from the data distribution")
            self.distribution_label.setText("no real phase fractions known: choose a store of annotated micrographs")
            self.distribution_radio.setEnabled(False)
            self.composition_radio.setChecked(True)
            return
        boosts = [
            f"{mode.label} ({100 * share:.0f} %)"
            for mode, share in zip(self._fraction_sampler.modes, self._fraction_sampler.shares)
            if mode.boost is not None and share > 0
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
        from ..core.conditions import default_shares, real_fraction_vectors

        if self.generator is None or self.generator.condition_spec.kind != "fractions":
            raise ValueError("load a generator conditioned on phase fractions first")
        if not is_store(path):
            raise ValueError(not_a_store(path))
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
        self.real_fractions = real
        self._base_shares = default_shares(schema, real)
        self._real_source = Path(path).name
        self._build_level_boxes()
        self._apply_levels()
        self.distribution_radio.setChecked(True)
        return len(real)

    # ------------------------------------------------------------------ boost levels of the data distribution

    @property
    def boost_levels(self) -> dict[str, float]:
        """The boost levels set (phase name -> mean fraction of the phase over the targets); off ones left out."""
        return {name: box.value() / 100.0 for name, box in self.level_boxes.items() if box.value() > 0}

    def _build_level_boxes(self) -> None:
        """One boost-level spin box (in %, 0 = off) per phase the data distribution boosts."""
        while self.levels_form.rowCount():
            self.levels_form.removeRow(0)
        self.level_boxes = {}
        if self.real_fractions is None or self.generator is None:
            return
        schema = self.generator.schema
        for name in self._base_shares:
            if name == "data":
                continue
            k = schema.index_of(name)
            box = QDoubleSpinBox()
            box.setRange(0.0, 95.0)
            box.setDecimals(1)
            box.setSingleStep(1.0)
            box.setSuffix(" %")
            box.setSpecialValueText("off (paper)")
            box.setKeyboardTracking(False)  # a typed level applies on Enter, not at every digit
            box.setToolTip(
                f"boost level: the mean fraction of {name} over all targets (real tiles: "
                f"{100 * self.real_fractions[:, k].mean():.1f} %); its boosting mode shifts {name} in the rich tiles "
                f"it draws (never past the richest real tile) and draws more targets if it must. Off: paper 000's "
                f"plain oversampling of the tiles rich in {name}"
            )
            box.valueChanged.connect(self._apply_levels)
            self.levels_form.addRow(f"{name} level", box)
            self.level_boxes[name] = box

    def _apply_levels(self, *_) -> None:
        """Rebuild the target sampler for the levels set and redraw the target histogram (cheap numpy: on the UI
        thread). A level that cannot be reached is named; Generate refuses the data mode until it is changed."""
        from ..core.conditions import target_sampler

        if self.real_fractions is None or self.generator is None:
            return
        schema, levels = self.generator.schema, self.boost_levels
        try:
            sampler = target_sampler(self.real_fractions, schema, self._base_shares, levels)
        except ValueError as exc:
            self._levels_error = str(exc)
            self.levels_note.setText(f"<span style='color:#e05050'>{exc}</span>")
            return
        self._levels_error = ""
        self._fraction_sampler = sampler
        grown = [f"{mode.label} draws {100 * used:.0f} % of the targets (not {100 * given:.0f} %) to reach its level"
                 for mode, given, used in zip(sampler.modes, sampler.given_shares, sampler.shares) if used > given + 1e-9]
        self.levels_note.setText("; ".join(grown))
        self.preview_targets = sampler.sample(PREVIEW_TARGETS, np.random.default_rng(0))
        self._draw_target_histogram(levels)
        self._update_distribution_controls()

    def _draw_target_histogram(self, levels: dict[str, float]) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from qtpy.QtGui import QImage, QPixmap

        from ..engines.reports import target_histogram_figure

        schema = self.generator.schema
        columns = 3 if schema.n_classes > 4 else 2
        rows = -(-schema.n_classes // columns)
        fig = target_histogram_figure(self.preview_targets, self.real_fractions, schema, levels,
                                      size=(4.6, 1.9 * rows), dpi=90, columns=columns)
        for ax in fig.axes:
            ax.title.set_fontsize(6)
        fig.tight_layout(pad=0.4)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        image = QImage(rgba.data, rgba.shape[1], rgba.shape[0], rgba.strides[0], QImage.Format.Format_RGBA8888)
        self.target_plot.setPixmap(QPixmap.fromImage(image.copy()))

    def _store_fractions_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset store with real annotated micrographs")
        if folder:
            try:
                self.use_store_fractions(folder)
            except (ValueError, OSError) as exc:
                self.message.setText(f"cannot use {Path(folder).name}: {exc}")

    def _build_sampling_controls(self) -> None:
        """The form of the loaded generator's declared sampling options (below pairs and seed)."""
        if self.options_form is not None:
            self.sampling_layout.removeWidget(self.options_form)
            self.options_form.setParent(None)
            self.options_form.deleteLater()
            self.options_form = None
        if self.generator is not None:
            self.options_form = OptionsForm(self.generator.sampling_options())
            self.sampling_layout.addWidget(self.options_form)

    def sampling_options(self) -> dict[str, Any]:
        """The sampling options changed from the generator's declared defaults (keywords for sampling)."""
        return {} if self.options_form is None else self.options_form.changes()

    def conditions(self) -> tuple[Any, int | None]:
        """``(conditions, n)`` for ``Generator.sample`` from the controls and the number of pairs."""
        n = self.pairs_box.value()
        spec = self.generator.condition_spec
        if spec.kind == "fractions":
            if self.distribution_radio.isChecked() and self._fraction_sampler is not None:
                if self._levels_error:
                    raise ValueError(f"change the boost levels: {self._levels_error}")
                rng = np.random.default_rng(self.seed_box.value())
                return self._fraction_sampler.sample(n, rng), None
            return self.sliders.fractions, n
        if spec.kind == "properties":
            if self.plausible_per_pair.isChecked():
                return self.generator.plausible_conditions(n, self.seed_box.value()), None
            return {name: _control_value(box) for name, box in self.property_boxes.items()}, n
        return None, n

    def _enable_property_boxes(self, *_) -> None:
        """The condition controls are set by hand unless every pair draws its own condition."""
        for box in self.property_boxes.values():
            box.setEnabled(not self.plausible_per_pair.isChecked())

    def sample_plausible_conditions(self) -> None:
        """Set the condition controls to one plausible draw (:meth:`Generator.plausible_conditions`)."""
        try:
            [condition] = self.generator.plausible_conditions(1, self.seed_box.value())
        except ValueError as exc:
            self.message.setText(str(exc))
            return
        for name, value in condition.items():
            box = self.property_boxes[name]
            if isinstance(box, QComboBox):
                box.setCurrentIndex(int(value))
            else:
                box.setValue(value)

    # ------------------------------------------------------------------ the store

    @property
    def store_path(self) -> Path | None:
        """The store the pairs go to: the chosen one, else this session's store for the generator's schema."""
        if self._chosen_store is not None:
            return self._chosen_store
        if self.generator is None:
            return None
        return session_store_path(self.generator.schema.name, self._session_stamp)

    def use_store(self, path: str | Path) -> None:
        """Write the pairs into the dataset store at ``path`` (created on the first Generate when missing)."""
        path = Path(path)
        if path.exists() and not is_store(path):
            raise ValueError(not_a_store(path))
        if is_store(path) and self.generator is not None:
            schema = DatasetStore.open(path, check_data=False).schema
            if schema != self.generator.schema:
                raise ValueError(f"{path.name} holds {schema.name!r} masks, the generator makes "
                                 f"{self.generator.schema.name!r} ones")
        self._chosen_store = path
        self._show_store()

    def _store_dialog(self) -> None:
        path = QFileDialog.getSaveFileName(
            self, "Dataset store for the generated pairs", "synthetic.zarr", "Dataset store (*.zarr)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )[0]
        if path:
            try:
                self.use_store(path)
            except (ValueError, OSError) as exc:
                self.message.setText(f"cannot use {path}: {exc}")

    def _show_store(self) -> None:
        path = self.store_path
        if path is None:
            self.store_label.setText("no generator loaded")
            return
        kind = "chosen store" if path == self._chosen_store else "session store"
        state = "" if is_store(path) else ", created on the first Generate"
        self.store_label.setText(f"{path} ({kind}{state})")
        written = self._written.get(path, 0)
        self.curate_button.setEnabled(written > 0 and not self.running)
        self.curate_button.setText(f"Curate the {written} generated pairs" if written else "Curate")

    def curate(self):
        """Open (or bring forward) the Curation widget on the store, showing its pending pairs; returns it."""
        dock, widget = self.viewer.window.add_plugin_dock_widget(PLUGIN, "Curation")
        dock.show()
        dock.raise_()
        widget.open_store(self.store_path)
        widget.filter_combo.setCurrentText("pending")
        return widget

    # ------------------------------------------------------------------ generation

    @property
    def running(self) -> bool:
        """True while pairs are being generated (tests wait on this)."""
        return self.progress.busy

    def generate(self) -> None:
        """Start a generate run in a worker; every pair is stored as pending and previewed as it arrives."""
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
        self._run = _Run(columns=max(1, math.ceil(math.sqrt(requested))), origin=(self._next_y, self._grid_x()))
        path = self.store_path
        self.message.setText(f"generating {requested} pairs with {self.generator_folder.name} into {path.name}...")
        self.progress.start(
            generate_into_store,
            on_done=lambda written: self._run_finished("done"),
            on_error=lambda exc: self._run_finished(f"failed: {exc}"),
            on_cancelled=lambda: self._run_finished("cancelled"),
            path=path,
            generator=generator,
            conditions=conditions,
            n=n,
            seed=self.seed_box.value(),
            options=options,
            on_plan=self._relay.planned.emit,
            on_pair=self._relay.pair_ready.emit,
        )
        self._set_running(True)

    def cancel(self) -> None:
        """Stop generating before the next denoising step; the pairs stored so far stay in the store."""
        self.progress.cancel()

    def _set_running(self, running: bool) -> None:
        for widget in (self.generate_button, self.model_combo, self.device_combo, self.condition_box,
                       self.sampling_box, self.store_box):
            widget.setEnabled(not running)
        self._show_store()

    def _run_planned(self, plan) -> None:
        self._run.plan = plan
        if plan.note:
            self.message.setText(f"note: {plan.note}")

    def _run_finished(self, how: str) -> None:
        run, plan = self._run, self._run.plan
        self._set_running(False)
        if run.arrived:
            self.viewer.reset_view(layers=run.layers)
        where = f"in {self.store_path.name}"
        if plan is None or how.startswith("failed"):
            self.message.setText(f"generation {how}" + (f"; {run.arrived} pairs stored {where}" if run.arrived else ""))
            return
        stored = plan.done + run.arrived
        seeds = f"seeds {plan.first_seed}-{plan.first_seed + stored - 1}" if stored else "no pairs"
        resumed = f", {plan.done} of them from an earlier run" if plan.done else ""
        if how == "done":
            self.seed_box.setValue(min(MAX_SEED, plan.first_seed + plan.n))
            self.message.setText(f"{stored} pairs pending {where} ({seeds}{resumed}); next seed {self.seed_box.value()}")
        else:
            self.message.setText(f"cancelled after {stored} of {plan.n} pairs, stored {where} ({seeds}{resumed}); "
                                 "Generate again continues the run")

    def _add_pair(self, index: int, pair: Sample) -> None:
        """Show a stored pair in the preview grid (read-only: masks are corrected in the Curation widget)."""
        from ..napari_io import layer_pair, physical_scale

        run = self._run
        companions = companion_images(pair)  # shown right of the pair, in its cell (an untextured simulation)
        if run.cell is None:  # in world units: micrometres when the pixel size is known
            sy, sx = physical_scale([pair.pixel_size_um])["scale"]
            h, w = pair.shape
            gap = max(2.0, GRID_GAP * max(h, w))
            run.picture_width = (w + gap) * sx
            run.cell = ((h + gap) * sy, run.picture_width * (1 + len(companions)))
        row, col = divmod(run.arrived, run.columns)
        translate = (run.origin[0] + row * run.cell[0], run.origin[1] + col * run.cell[1])
        self._next_y = max(self._next_y, translate[0] + run.cell[0])
        run.arrived += 1
        path = self.store_path
        self._written[path] = self._written.get(path, 0) + 1
        entry = {"index": index, "name": pair.name, "pixel_size_um": pair.pixel_size_um,
                 "properties": dict(pair.properties), "provenance": pair.provenance.to_dict(), "status": "pending"}
        for data, kwargs, kind in layer_pair(pair.image, pair.mask, pair.schema, [entry], f"synth #{index}",
                                             store=str(path)):
            layer = getattr(self.viewer, f"add_{kind}")(data, translate=translate, **kwargs)
            layer.editable = kind == "image"
            run.layers.append(layer)
            self._preview.append(layer)
        for k, (name, picture) in enumerate(companions.items(), start=1):
            beside = (translate[0], translate[1] + k * run.picture_width)
            layer = self.viewer.add_image(picture, name=f"synth #{index} {name}", colormap="gray",
                                          contrast_limits=(0.0, 1.0), translate=beside,
                                          **physical_scale([pair.pixel_size_um]))
            run.layers.append(layer)
            self._preview.append(layer)
        self._show_achieved(run, pair)
        if run.arrived == 1:
            if pair.pixel_size_um is not None:
                self.viewer.canvas.overlays.scale_bar.visible = True
            self.viewer.reset_view(layers=run.layers)
        self._show_store()

    def _grid_x(self) -> float:
        """Left edge of the preview grid in world units: right of every layer that is not a preview pair."""
        others = [layer for layer in self.viewer.layers if not any(layer is mine for mine in self._preview)]
        if not others:
            return 0.0
        right = max(float(layer.extent.world[1][-1]) for layer in others)
        return right + GRID_GAP * right

    def _show_achieved(self, run: _Run, pair: Sample) -> None:
        """The sliders' "achieved" column: the mean fractions of this run's pairs for the slider target."""
        if self.sliders is None or pair.schema != self.sliders.schema:
            return
        if self.distribution_radio.isChecked():
            self.sliders.set_achieved(None)
            return
        run.achieved.append(pair.fractions)
        self.sliders.set_achieved(np.mean(run.achieved, axis=0))


def _property_control(p) -> QWidget:
    """The control of one property condition: a list of its categories, or a number box over its trained range."""
    if p.categories:
        box = QComboBox()
        box.addItems(list(p.categories))
        box.setToolTip(f"trained categories: {', '.join(p.categories)}")
        return box
    box = QDoubleSpinBox()
    span = p.high - p.low
    box.setDecimals(max(0, 3 - int(math.floor(math.log10(span)))) if span > 0 else 2)
    box.setRange(p.low, p.high)
    box.setSingleStep(span / 100 if span > 0 else 1.0)
    box.setValue((p.low + p.high) / 2)
    if p.unit:
        box.setSuffix(f" {p.unit}")
    box.setToolTip(f"trained range {p.low:g} to {p.high:g} {p.unit}".rstrip())
    return box


def _control_value(box: QWidget) -> Any:
    """A property control's condition value: the category's name, or the number."""
    return box.currentText() if isinstance(box, QComboBox) else box.value()


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
