"""Dock widget "Export training set": real tiles + accepted synthetic pairs at a ratio, written with a card.

The user picks the real labelled data (a dataset folder or store) and its train / val / test splits, a
store of curated synthetic pairs (its accepted count is shown), the real-to-synthetic ratio (paper 000,
sec. 2.3: 1:1 ... 1:10), the tile size and an output folder, and presses Export. Each ratio preset shows
how many synthetic pairs it needs for the real data's tiles; those needing more than the store's accepted
pairs are disabled, and a store is never chosen with a ratio it cannot fill. Loading and writing run
in a worker with a progress bar and Cancel (``engines.training_set.export_training_set``); pressing
Export again with the same settings continues a cancelled export. The class-balance table is shown
when it is done.
"""
from __future__ import annotations

import math
from pathlib import Path

from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
)

from ..core.tiles import tile_boxes
from ..engines.training_set import PAPER_RATIOS, TrainingSetSummary, synthetic_needed
from ._dock import PluginDock, not_a_store
from ._engine_worker import EngineProgress

NO_SPLIT = "(none)"


def export_from_paths(
    real: Path,
    splits: dict[str, str | None],
    synthetic: Path | None,
    out: Path,
    ratio: float,
    tile: int,
    folders: bool,
    overwrite: bool,
    progress,
    should_stop,
) -> TrainingSetSummary:
    """Worker: read the real splits (labelled samples only), then export the training set."""
    from ..core.datasets import load_split
    from ..engines.training_set import export_training_set

    loaded = {}
    for role, name in splits.items():
        samples = [] if name is None else load_split(real, name, progress=progress, should_stop=should_stop)
        loaded[role] = [s for s in samples if s.mask is not None]
    source = f"{real} (" + ", ".join(f"{role} split {name!r}" for role, name in splits.items() if name) + ")"
    return export_training_set(
        out, loaded["train"], loaded["val"], loaded["test"], synthetic=synthetic, ratio=ratio, tile=tile,
        source=source, folders=folders, overwrite=overwrite, progress=progress, should_stop=should_stop,
    )


def labelled_shapes(real: Path, split: str, progress, should_stop) -> list[tuple[int, int]]:
    """Worker: the sizes of the labelled micrographs of one split (what the real tiles are cut from)."""
    from ..core.datasets import load_split

    samples = load_split(real, split, progress=progress, should_stop=should_stop)
    return [sample.shape for sample in samples if sample.mask is not None]


def _path_row(edit: QLineEdit, button: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


class ExportWidget(PluginDock):
    """Choose real data, synthetic store, ratio, tile size and output folder; export with progress and Cancel."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.real_path: Path | None = None
        self.synthetic_path: Path | None = None
        self.accepted: int | None = None  # accepted pairs in the synthetic store
        self.real_shapes: list[tuple[int, int]] | None = None  # labelled train micrographs, once counted
        self._default_ratio_pending = False
        self.summary: TrainingSetSummary | None = None

        self.real_edit = QLineEdit()
        self.real_edit.setReadOnly(True)
        self.real_button = QPushButton("Choose...")
        self.split_combos = {role: QComboBox() for role in ("train", "val", "test")}
        self.synthetic_edit = QLineEdit()
        self.synthetic_edit.setReadOnly(True)
        self.synthetic_edit.setPlaceholderText("none: real only")
        self.synthetic_button = QPushButton("Choose...")
        self.synthetic_info = QLabel("")
        self.ratio_info = QLabel("")
        self.ratio_info.setWordWrap(True)
        self.ratio_box = QDoubleSpinBox()
        self.ratio_box.setRange(0.0, 10.0)
        self.ratio_box.setDecimals(1)
        self.ratio_box.setSingleStep(1.0)
        self.ratio_box.setPrefix("1 : ")
        self.ratio_box.setToolTip("synthetic pairs per real tile (0 = real only); paper 000 compares 1:1 ... 1:10")
        self.preset_buttons = [QPushButton(f"1:{r}") for r in PAPER_RATIOS]
        self.tile_box = QSpinBox()
        self.tile_box.setRange(16, 4096)
        self.tile_box.setValue(256)
        self.tile_box.setSuffix(" px")
        self.folders_box = QCheckBox("also write plain folders (PNG + CSV)")
        self.overwrite_box = QCheckBox("replace an existing export in the output folder")
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("output folder")
        self.out_button = QPushButton("Choose...")
        self.export_button = QPushButton("Export")
        self.progress = EngineProgress()
        self.balance_view = QPlainTextEdit()
        self.balance_view.setReadOnly(True)
        self.balance_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.balance_view.setMinimumHeight(140)
        self.balance_view.setPlaceholderText("class balance (pixel share per phase) appears here after an export")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.export_button.setEnabled(False)

        self._lay_out()

        self.real_button.clicked.connect(
            lambda: self._choose("Real labelled data: dataset folder or .zarr store", self.set_real))
        self.synthetic_button.clicked.connect(
            lambda: self._choose("Store with curated synthetic pairs (.zarr)", self.set_synthetic))
        self.out_button.clicked.connect(self._choose_out)
        self.export_button.clicked.connect(self.export)
        self.split_combos["train"].currentTextChanged.connect(lambda _text: self._count_real_tiles())
        for signal in (self.ratio_box.valueChanged, self.tile_box.valueChanged, self.out_edit.textChanged):
            signal.connect(lambda _value: self._update_ratio_info())
        self.set_synthetic(None)

    def _lay_out(self) -> None:
        """Place the controls: the choices as a form, then options, Export, progress, class balance, messages."""
        presets = QHBoxLayout()
        for button, ratio in zip(self.preset_buttons, PAPER_RATIOS):
            button.clicked.connect(lambda _=False, r=ratio: self.ratio_box.setValue(r))
            presets.addWidget(button)
        form = QFormLayout()
        form.addRow("real data", _path_row(self.real_edit, self.real_button))
        for role, combo in self.split_combos.items():
            form.addRow(f"{role} split", combo)
        form.addRow("synthetic store", _path_row(self.synthetic_edit, self.synthetic_button))
        form.addRow("", self.synthetic_info)
        form.addRow("real : synthetic", self.ratio_box)
        form.addRow("", presets)
        form.addRow("", self.ratio_info)
        form.addRow("tile size", self.tile_box)
        form.addRow("output", _path_row(self.out_edit, self.out_button))
        layout = self.form
        layout.addLayout(form)
        layout.addWidget(self.folders_box)
        layout.addWidget(self.overwrite_box)
        layout.addWidget(self.export_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.balance_view, 1)
        layout.addWidget(self.message)

    # ------------------------------------------------------------------ choices

    def set_real(self, path: str | Path) -> None:
        """Use a dataset folder or store as the real data and list its splits."""
        from ..core.datasets import available_splits
        from ..core.store import DatasetStore, is_store

        path = Path(path)
        names = list(DatasetStore.open(path, check_data=False).splits) if is_store(path) else available_splits(path)
        self.real_path = path
        self.real_edit.setText(str(path))
        for role, combo in self.split_combos.items():
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(([] if role == "train" else [NO_SPLIT]) + names)
            if role in names:
                combo.setCurrentText(role)
            combo.blockSignals(False)
        self.message.setText(f"real data: {path.name} ({len(names)} splits)")
        self._count_real_tiles()

    def set_synthetic(self, path: str | Path | None) -> None:
        """Use a store of synthetic pairs (None = real only); shows how many are accepted."""
        from ..core.store import DatasetStore, is_store
        from ..core.curation import accepted_indices

        if path is None:
            self.synthetic_path, self.accepted = None, None
            self.synthetic_edit.clear()
            self.synthetic_info.setText("real only")
            self.ratio_box.setValue(0.0)
            return
        if not is_store(path):
            raise ValueError(not_a_store(path))
        store = DatasetStore.open(Path(path), check_data=False)
        accepted = accepted_indices(store)
        corrected = sum(store.provenance(i).origin == "corrected" for i in accepted)
        self.synthetic_path = Path(path)
        self.synthetic_edit.setText(str(path))
        self.synthetic_info.setText(f"{len(accepted)} accepted synthetic pairs ({corrected} corrected) of {len(store)}")
        self.accepted = len(accepted)
        self._default_ratio_pending = True
        self._set_default_ratio()

    def n_real_tiles(self) -> int | None:
        """Real training tiles at the chosen tile size (None until the train split is counted)."""
        if self.real_shapes is None:
            return None
        return sum(len(tile_boxes(shape, self.tile_box.value())) for shape in self.real_shapes)

    def _count_real_tiles(self) -> None:
        """Read the train split's micrograph sizes in a worker; the presets show their needs afterwards."""
        self.real_shapes = None
        self._update_ratio_info()
        split = self.split_combos["train"].currentText()
        if self.real_path is None or not split or self.running:
            return
        self.progress.start(labelled_shapes, on_done=self._counted,
                            on_error=lambda exc: self.message.setText(f"cannot read the train split: {exc}"),
                            real=self.real_path, split=split)
        self._update_ratio_info()

    def _counted(self, shapes: list[tuple[int, int]]) -> None:
        self.real_shapes = shapes
        self.progress.status.setText(f"{len(shapes)} labelled train micrographs")
        self._set_default_ratio()
        self._update_ratio_info()

    def _set_default_ratio(self) -> None:
        """After a store is chosen: 1:1, or the largest ratio (0.1 steps) its accepted pairs can fill."""
        n_real = self.n_real_tiles()
        if not self._default_ratio_pending or self.accepted is None or not n_real:
            return
        self._default_ratio_pending = False
        ratio = min(1.0, math.floor(10 * self.accepted / n_real) / 10)
        while ratio > 0 and synthetic_needed(ratio, n_real) > self.accepted:
            ratio = round(ratio - 0.1, 1)
        self.ratio_box.setValue(ratio)

    def _update_ratio_info(self) -> None:
        """Presets labelled with the pairs they need (infeasible ones disabled), the ratio's need, Export's state."""
        n_real = self.n_real_tiles()
        for button, ratio in zip(self.preset_buttons, PAPER_RATIOS):
            needed = None if n_real is None else synthetic_needed(ratio, n_real)
            button.setText(f"1:{ratio}" if needed is None else f"1:{ratio} ({needed})")
            button.setToolTip("" if needed is None else f"needs {needed} accepted synthetic pairs for {n_real} real tiles")
            button.setEnabled(needed is not None and self.accepted is not None and needed <= self.accepted)
        ratio, feasible = self.ratio_box.value(), n_real is not None
        if n_real is None:
            self.ratio_info.setText("counting the real tiles..." if self.running else "")
        elif ratio > 0 and self.accepted is None:
            self.ratio_info.setText(f"{n_real} real tiles; a ratio above 0 needs a synthetic store")
            feasible = False
        elif ratio > 0:
            needed = synthetic_needed(ratio, n_real)
            feasible = needed <= self.accepted
            self.ratio_info.setText(f"{n_real} real {self.tile_box.value()} px tiles: 1:{ratio:g} "
                                    + (f"uses {needed} of the {self.accepted} accepted pairs" if feasible else
                                       f"needs {needed} synthetic pairs, the store has {self.accepted} accepted"))
        else:
            self.ratio_info.setText(f"{n_real} real {self.tile_box.value()} px tiles, no synthetic pairs")
        self.export_button.setEnabled(feasible and not self.running and bool(self.out_edit.text().strip()))

    def _choose(self, title: str, use) -> None:
        """Ask for a folder and hand it to ``use`` (``set_real`` / ``set_synthetic``), reporting bad choices."""
        folder = QFileDialog.getExistingDirectory(self, title)
        if folder:
            try:
                use(folder)
            except (ValueError, OSError) as exc:
                self.message.setText(f"cannot use {folder}: {exc}")

    def _choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder for the training set")
        if folder:
            self.out_edit.setText(folder)

    # ------------------------------------------------------------------ export

    @property
    def running(self) -> bool:
        """True while an export runs (tests wait on this)."""
        return self.progress.busy

    def export(self) -> None:
        """Start the export in a worker; the class balance is shown when it is done."""
        if self.running:
            return
        if self.real_path is None or not self.split_combos["train"].currentText():
            self.message.setText("choose the real data (a dataset folder or store with a train split) first")
            return
        if not self.out_edit.text().strip():
            self.message.setText("choose an output folder first")
            return
        if self.ratio_box.value() > 0 and self.synthetic_path is None:
            self.message.setText("a ratio above 0 needs a synthetic store (or set the ratio to 0 for real only)")
            return
        splits = {role: (None if combo.currentText() == NO_SPLIT else combo.currentText())
                  for role, combo in self.split_combos.items()}
        out = Path(self.out_edit.text().strip())
        self.summary = None
        self.export_button.setEnabled(False)
        self.message.setText(f"exporting to {out}...")
        self.progress.start(
            export_from_paths,
            on_done=self._done,
            on_error=lambda exc: self._finished(f"export failed: {exc}"),
            on_cancelled=self._cancelled,
            real=self.real_path, splits=splits, synthetic=self.synthetic_path if self.ratio_box.value() > 0 else None,
            out=out, ratio=self.ratio_box.value(), tile=self.tile_box.value(), folders=self.folders_box.isChecked(),
            overwrite=self.overwrite_box.isChecked(),
        )

    def cancel(self) -> None:
        """Stop after the sample being written; Export with the same settings resumes."""
        self.progress.cancel()

    def _cancelled(self) -> None:
        self.overwrite_box.setChecked(False)  # the earlier export is gone: Export again continues this one
        self._finished("cancelled; press Export again with the same settings to continue where it stopped")

    def _done(self, summary: TrainingSetSummary) -> None:
        self.summary = summary
        self.balance_view.setPlainText(summary.balance.as_text())
        counts = ", ".join(f"{split} {sum(origins.values())}" for split, origins in summary.counts.items())
        self._finished(f"exported {counts} samples ({summary.n_real_tiles} real tiles + {summary.n_synthetic} "
                       f"synthetic, 1:{summary.ratio:g}) to {summary.out}; see README.md there")

    def _finished(self, message: str) -> None:
        self._update_ratio_info()
        self.message.setText(message)
