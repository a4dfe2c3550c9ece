"""Dock widget "Point count (ASTM E562)": estimate phase fractions the way metallographers do by hand.

Lay a systematic grid of points over the micrograph in fields, assign each point to the phase it falls on
(select points and press a phase button, or the phase's number key on the points layer; "boundary" gives
a point 1/2 to each of two phases), optionally take the phase map's phases as a first proposal and fix
them, then Count: each phase's volume fraction with its 95 % confidence interval and relative accuracy per
E562 (:mod:`napari_microsynth.core.point_count`). Points where your phase differs from the phase map's are
marked. "Send to Phase ratios" sets the Phase ratios widget's sliders to the estimate.
"""
from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
)

from ..core.point_count import UNASSIGNED, PointCount, disagreements, point_count, systematic_grid
from ..core.schema import PhaseSchema
from ._dock import PluginDock
from ._layers import layer_names, layer_schema, set_combo_items

#: E562's usual grids (points per field side).
GRID_SIDES = (4, 5, 7, 10)
NO_PHASE_COLOUR = (1.0, 1.0, 1.0, 1.0)
DISAGREE_COLOUR = (1.0, 0.0, 0.0, 1.0)
AGREE_COLOUR = (0.0, 0.0, 0.0, 1.0)


class PointCountWidget(PluginDock):
    """Grid, per-point phase assignment, E562 estimate, and hand-over to the Phase ratios sliders."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.schema: PhaseSchema | None = None
        self.points_layer = None
        self.result: PointCount | None = None
        self._fields = np.zeros(0, dtype=np.int64)
        self._proposals: np.ndarray | None = None

        self.image_combo = QComboBox()
        self.phase_map_combo = QComboBox()
        self.grid_combo = QComboBox()
        self.grid_combo.addItems([f"{n} x {n} = {n * n} points" for n in GRID_SIDES])
        self.grid_combo.setCurrentIndex(1)
        self.field_rows, self.field_cols = QSpinBox(), QSpinBox()
        for box in (self.field_rows, self.field_cols):
            box.setRange(1, 20)
            box.setValue(2)
        self.grid_button = QPushButton("Lay grid")
        self.propose_button = QPushButton("Propose phases from the phase map")
        self.phase_buttons = QGridLayout()
        self.boundary_combo = QComboBox()
        self.count_button = QPushButton("Count")
        self.send_button = QPushButton("Send to Phase ratios")
        self.table = QLabel("")
        self.message = QLabel("Choose the micrograph and its phase map (for the phase names), then lay a grid.")
        for label in (self.table, self.message):
            label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("phases from", self.phase_map_combo)
        form.addRow("grid per field", self.grid_combo)
        fields = QHBoxLayout()
        fields.addWidget(self.field_rows)
        fields.addWidget(QLabel("x"))
        fields.addWidget(self.field_cols)
        form.addRow("fields (rows x cols)", fields)
        self.form.addLayout(form)
        self.form.addWidget(self.grid_button)
        self.form.addWidget(self.propose_button)
        self.form.addWidget(QLabel("Assign the selected points to:"))
        self.form.addLayout(self.phase_buttons)
        boundary = QFormLayout()
        boundary.addRow("on a boundary with", self.boundary_combo)
        self.form.addLayout(boundary)
        self.form.addWidget(self.count_button)
        self.form.addWidget(self.table)
        self.form.addWidget(self.send_button)
        self.form.addWidget(self.message)
        self.form.addStretch(1)

        self.grid_button.clicked.connect(self.lay_grid)
        self.propose_button.clicked.connect(self.propose)
        self.count_button.clicked.connect(self.count)
        self.send_button.clicked.connect(self.send_to_sliders)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._set_enabled()

    # ------------------------------------------------------------------ layers

    def _refresh_layers(self, event=None) -> None:
        for combo, kind in ((self.image_combo, "image"), (self.phase_map_combo, "labels")):
            set_combo_items(combo, layer_names(self.viewer, kind))
        self._set_enabled()

    def _set_enabled(self) -> None:
        has_grid = self.points_layer is not None and self.points_layer in self.viewer.layers
        self.grid_button.setEnabled(bool(self.image_combo.currentText() and self.phase_map_combo.currentText()))
        self.propose_button.setEnabled(has_grid)
        self.count_button.setEnabled(has_grid)
        self.send_button.setEnabled(self.result is not None)

    # ------------------------------------------------------------------ grid and assignment

    def lay_grid(self) -> None:
        """A points layer with the systematic grid over the chosen image, every point unassigned."""
        image = self.viewer.layers[self.image_combo.currentText()]
        phase_map = self.viewer.layers[self.phase_map_combo.currentText()]
        self.schema = layer_schema(phase_map)
        side = GRID_SIDES[self.grid_combo.currentIndex()]
        try:
            points, self._fields = systematic_grid(image.data.shape[-2:], (side, side),
                                                   (self.field_rows.value(), self.field_cols.value()))
        except ValueError as exc:
            self.message.setText(str(exc))
            return
        features = {"phase": np.full(len(points), UNASSIGNED), "boundary_with": np.full(len(points), UNASSIGNED),
                    "field": self._fields}
        name = f"{image.name} point count"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        size = max(4.0, 0.012 * max(image.data.shape[-2:]))
        self.points_layer = self.viewer.add_points(points, name=name, features=features, size=size,
                                                   scale=image.scale[-2:], units=image.units[-2:],
                                                   face_color="white", border_color="black")
        self.points_layer.mode = "select"
        self._proposals, self.result = None, None
        self._phase_controls()
        self._recolour()
        self.message.setText(f"{len(points)} points in {self.field_rows.value() * self.field_cols.value()} fields: "
                             "select points and press a phase (or its number key on the points layer).")
        self._set_enabled()

    def _phase_controls(self) -> None:
        """One button (and number key) per phase, and the boundary choice, for the current schema."""
        while self.phase_buttons.count():
            self.phase_buttons.takeAt(0).widget().deleteLater()
        for k, phase in enumerate(self.schema.phases):
            button = QPushButton(f"{k + 1}: {phase.name}")
            button.clicked.connect(lambda _=False, pid=phase.id: self.assign_selected(pid))
            self.phase_buttons.addWidget(button, k // 2, k % 2)
            if k < 9:
                self.points_layer.bind_key(str(k + 1), lambda _layer, pid=phase.id: self.assign_selected(pid),
                                           overwrite=True)
        self.boundary_combo.clear()
        self.boundary_combo.addItems(["(not on a boundary)", *self.schema.names])

    def assign(self, indices, phase_id: int, boundary_with: int = UNASSIGNED) -> None:
        """Assign points ``indices`` to ``phase_id`` (:data:`UNASSIGNED` clears them), on a boundary with
        ``boundary_with`` when that is a phase."""
        indices = np.asarray(list(indices), dtype=np.int64)
        features = self.points_layer.features
        features.loc[indices, "phase"] = int(phase_id)
        features.loc[indices, "boundary_with"] = int(boundary_with) if phase_id != UNASSIGNED else UNASSIGNED
        self.points_layer.features = features
        self.result = None
        self._recolour()
        self._set_enabled()

    def assign_selected(self, phase_id: int) -> None:
        selected = sorted(self.points_layer.selected_data)
        if not selected:
            self.message.setText("select points first (select mode: click, or drag a box)")
            return
        choice = self.boundary_combo.currentIndex() - 1
        other = self.schema.phases[choice].id if choice >= 0 else UNASSIGNED
        self.assign(selected, phase_id, UNASSIGNED if other == phase_id else other)
        names = {p.id: p.name for p in self.schema.phases}
        self.message.setText(f"{len(selected)} points -> {names[phase_id]}"
                             + (f" (boundary with {names[other]})" if other not in (UNASSIGNED, phase_id) else ""))

    def propose(self) -> None:
        """Give every unassigned point the phase map's phase under it (the proposal, to be checked)."""
        phase_map = np.asarray(self.viewer.layers[self.phase_map_combo.currentText()].data)
        points = np.asarray(self.points_layer.data).astype(np.int64)
        if phase_map.shape[-2:] != self.viewer.layers[self.image_combo.currentText()].data.shape[-2:]:
            self.message.setText("the phase map and the image differ in size; choose the image's phase map")
            return
        self._proposals = phase_map[points[:, 0], points[:, 1]].astype(np.int64)
        valid = np.isin(self._proposals, [p.id for p in self.schema.phases])
        unassigned = np.flatnonzero((self.points_layer.features["phase"].to_numpy() == UNASSIGNED) & valid)
        features = self.points_layer.features
        features.loc[unassigned, "phase"] = self._proposals[unassigned]
        self.points_layer.features = features
        self._recolour()
        self.message.setText(f"{len(unassigned)} points took the phase map's phase; check them and fix any that "
                             "are wrong, then Count.")

    def _recolour(self) -> None:
        """Points in their phase's colour (white: unassigned); red rim where you differ from the proposal."""
        phases = self.points_layer.features["phase"].to_numpy()
        colours = {p.id: tuple(c / 255 for c in p.color) + (1.0,) for p in self.schema.phases}
        self.points_layer.face_color = np.array([colours.get(int(p), NO_PHASE_COLOUR) for p in phases])
        rims = np.tile(AGREE_COLOUR, (len(phases), 1))
        if self._proposals is not None:
            rims[disagreements(phases, self._proposals)] = DISAGREE_COLOUR
        self.points_layer.border_color = rims
        self.points_layer.refresh()

    # ------------------------------------------------------------------ estimate

    def count(self) -> PointCount | None:
        """The E562 estimate of the current assignment, shown as a table."""
        features = self.points_layer.features
        try:
            self.result = point_count(features["phase"].to_numpy(), features["field"].to_numpy(),
                                      self.schema.n_classes, features["boundary_with"].to_numpy())
        except ValueError as exc:
            self.result = None
            self.message.setText(f"cannot count yet: {exc}")
            self._set_enabled()
            return None
        rows = ["<table><tr><th>phase</th><th>fraction</th><th>95 % CI</th><th>rel. accuracy</th></tr>"]
        for name, fraction, half, relative in zip(self.schema.names, self.result.fractions, self.result.ci95,
                                                  self.result.relative_accuracy):
            ra = "n/a" if np.isnan(relative) else f"{100 * relative:.0f} %"
            rows.append(f"<tr><td>{name}</td><td>{100 * fraction:.1f} %</td><td>± {100 * half:.1f}</td>"
                        f"<td>{ra}</td></tr>")
        self.table.setText("".join(rows) + "</table>")
        unassigned = int((features["phase"].to_numpy() == UNASSIGNED).sum())
        notes = [f"{self.result.points_counted} points in {self.result.n_fields} fields"]
        if unassigned:
            notes.append(f"{unassigned} unassigned points left out")
        if self._proposals is not None:
            differ = disagreements(features["phase"].to_numpy(), self._proposals)
            notes.append(f"{len(differ)} points differ from the phase map (red rim)")
        self.message.setText("; ".join(notes) + ". E562 suggests more fields until the relative accuracy is "
                             "10 % or less.")
        self._set_enabled()
        return self.result

    def send_to_sliders(self) -> None:
        """Set the Phase ratios widget's sliders (which it then follows) to the estimate."""
        from .phase_ratio import PhaseRatioWidget

        targets = [w for w in self.viewer.window.dock_widgets.values() if isinstance(w, PhaseRatioWidget)]
        widget = targets[0] if targets else None
        if widget is None or widget.sliders is None:
            self.message.setText("open the Phase ratios widget and segment the micrograph first")
            return
        if list(widget.session.schema.names) != list(self.schema.names):
            self.message.setText(f"the Phase ratios model segments {', '.join(widget.session.schema.names)}, not "
                                 f"the counted phases ({', '.join(self.schema.names)})")
            return
        widget.no_ratio_box.setChecked(False)
        widget.sliders.set_fractions(self.result.fractions)
        self.message.setText("sent to the Phase ratios sliders")
