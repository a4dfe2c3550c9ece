"""A panel of phase-fraction sliders that always sum to 1, shared by the phase-ratio and synthesis widgets."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QCheckBox, QGridLayout, QLabel, QSlider, QWidget

from ..core.fractions import normalize_fractions, set_fraction
from ..core.schema import PhaseSchema

SLIDER_STEPS = 1000  # slider resolution: 0.1 percentage point


class FractionSliders(QWidget):
    """One slider per phase (name and colour shown), lock boxes, target and achieved percentages.

    Moving one slider rescales the unlocked others so the vector keeps summing to 1
    (:func:`~napari_microsynth.core.fractions.set_fraction`). ``fractions_changed`` is emitted with the
    new vector after every user change.
    """

    fractions_changed = Signal(object)

    def __init__(self, schema: PhaseSchema, fractions: Sequence[float] | None = None, parent=None) -> None:
        super().__init__(parent)
        self.schema = schema
        n = schema.n_classes
        self._fractions = normalize_fractions(fractions if fractions is not None else np.full(n, 1.0 / n))
        self.sliders: list[QSlider] = []
        self.lock_boxes: list[QCheckBox] = []
        self.target_labels: list[QLabel] = []
        self.achieved_labels: list[QLabel] = []
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        for col, title in enumerate(("phase", "", "target", "achieved", "lock")):
            header = QLabel(f"<b>{title}</b>")
            grid.addWidget(header, 0, col)
        for k, phase in enumerate(schema.phases):
            r, g, b = phase.color
            name = QLabel(f'<span style="color: rgb({r},{g},{b});">&#9632;</span> {phase.name}')
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setRange(0, SLIDER_STEPS)
            slider.setMinimumWidth(120)
            slider.setObjectName(f"fraction_slider_{k}")
            slider.valueChanged.connect(lambda value, k=k: self._on_slider(k, value))
            target = QLabel()
            achieved = QLabel("–")
            lock = QCheckBox()
            lock.setToolTip(f"keep {phase.name} fixed while other sliders move")
            grid.addWidget(name, k + 1, 0)
            grid.addWidget(slider, k + 1, 1)
            grid.addWidget(target, k + 1, 2)
            grid.addWidget(achieved, k + 1, 3)
            grid.addWidget(lock, k + 1, 4)
            self.sliders.append(slider)
            self.lock_boxes.append(lock)
            self.target_labels.append(target)
            self.achieved_labels.append(achieved)
        grid.setColumnStretch(1, 1)
        self._show()

    @property
    def fractions(self) -> np.ndarray:
        """The current target vector (sums to 1)."""
        return self._fractions.copy()

    @property
    def locked(self) -> np.ndarray:
        return np.array([box.isChecked() for box in self.lock_boxes], dtype=bool)

    def set_fractions(self, fractions: Sequence[float], emit: bool = True) -> None:
        """Set all sliders at once (e.g. from an estimate)."""
        self._fractions = normalize_fractions(fractions)
        self._show()
        if emit:
            self.fractions_changed.emit(self.fractions)

    def set_phase(self, index: int, value: float) -> None:
        """Move one phase as a user dragging its slider would."""
        self._fractions = set_fraction(self._fractions, index, value, self.locked)
        self._show()
        self.fractions_changed.emit(self.fractions)

    def set_achieved(self, achieved: Sequence[float] | None) -> None:
        """Show the fractions the current result actually has next to the targets."""
        for k, label in enumerate(self.achieved_labels):
            label.setText("–" if achieved is None else f"{100 * achieved[k]:.1f} %")

    def _on_slider(self, index: int, raw: int) -> None:
        if self._updating:
            return
        self.set_phase(index, raw / SLIDER_STEPS)

    _updating = False

    def _show(self) -> None:
        self._updating = True
        try:
            for k, value in enumerate(self._fractions):
                self.sliders[k].setValue(int(round(value * SLIDER_STEPS)))
                self.target_labels[k].setText(f"{100 * value:.1f} %")
        finally:
            self._updating = False
