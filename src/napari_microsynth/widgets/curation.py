"""Dock widget "Curation": go through candidate pairs of a dataset store, correct masks, accept or reject.

The queue is a dataset store (the zarr store of :mod:`napari_microsynth.core.store`): generated pairs
the Synthesis widget wrote into it as pending (its Curate button opens this widget on them), predicted
phase maps saved by the Phase ratios widget, or any image + labels layers added here. The current pair is shown as an image layer and an editable labels layer
("curation image" / "curation mask"), with the other layers hidden while "show only the pair being curated"
is ticked; paint, fill and erase with napari's label tools. The clean-up panel removes small regions per
phase, shows what it would change first, and is undone with Undo (or Ctrl+Z).

Every decision is written to the store at once: accept, reject and flag set the sample's status, and a
mask that differs from the stored one is saved as a correction (a new mask version, provenance origin
"corrected" with the number of changed pixels) before the widget moves on. Closing napari or a crash
therefore loses at most the edits of the pair on screen.

Keyboard shortcuts (viewer-wide, chosen not to clash with napari's own or with its menu mnemonics):
Alt+Right / Alt+Left next / previous, Alt+A accept, Alt+R reject, Alt+G flag.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
)

from ..core.curation import accept_within, fraction_errors, reject_small_phases
from ..core.sample import STATUSES
from ..core.store import DatasetStore, is_store
from ._dock import PluginDock, not_a_store
from ._engine_worker import EngineProgress
from .cleanup_panel import CleanupPanel

IMAGE_LAYER = "curation image"
MASK_LAYER = "curation mask"
QUEUE_FILTERS = ("pending", "flagged", "accepted", "rejected", "all")
SHORTCUTS = {
    "Alt-Right": "next_pair",
    "Alt-Left": "previous_pair",
    "Alt-A": "accept",
    "Alt-R": "reject",
    "Alt-G": "flag",
}


class CurationWidget(PluginDock):
    """Correct, accept, reject or flag the pairs of a dataset store, one at a time or by rule."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.store: DatasetStore | None = None
        self.queue: list[int] = []
        self.position = -1
        self._shown_index: int | None = None
        self._shown_mask: np.ndarray | None = None  # the store's mask of the pair on screen, as read
        self._errors = np.zeros(0)  # fraction error per store sample (NaN without a target)

        self._hidden: list = []  # layers this widget hid, shown again when "show only the pair" is unticked
        self._view_key = None  # (shape, scale) the camera was last fitted to

        self.store_label = QLabel("no store open")
        self.store_label.setWordWrap(True)
        self.open_button = QPushButton("Open store...")
        self.open_button.clicked.connect(self._open_dialog)
        self.add_layers_button = QPushButton("Add selected image + labels layers")
        self.add_layers_button.setToolTip(
            "Append the selected image and labels layers (e.g. a micrograph with its predicted phase map) "
            "to the store as pending pairs"
        )
        self.add_layers_button.clicked.connect(self._add_clicked)
        self.message = QLabel("")
        self.message.setWordWrap(True)

        self.filter_combo = QComboBox()
        self.filter_combo.addItems(QUEUE_FILTERS)
        self.filter_combo.currentTextChanged.connect(lambda _text: self.refresh_queue())
        self.only_pair_box = QCheckBox("show only the pair being curated")
        self.only_pair_box.setChecked(True)
        self.only_pair_box.setToolTip("hide the other layers while curating; untick to show them again")
        self.only_pair_box.toggled.connect(self._only_pair_toggled)
        self.queue_list = QListWidget()
        self.queue_list.setMinimumHeight(120)
        self.queue_list.currentRowChanged.connect(self._row_chosen)
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        self.cleanup = CleanupPanel()
        self.cleanup.apply_button.clicked.connect(self.clean_up_mask)
        self.cleanup.undo_button.clicked.connect(self.undo_edit)
        self.cleanup.set_mask(None)

        self.counts_label = QLabel("")
        layout = self.form
        layout.addWidget(self.store_label)
        layout.addWidget(self.open_button)
        layout.addWidget(self.add_layers_button)
        layout.addWidget(self.message)
        show = QHBoxLayout()
        show.addWidget(QLabel("Show"))
        show.addWidget(self.filter_combo, 1)
        layout.addLayout(show)
        layout.addWidget(self.only_pair_box)
        layout.addWidget(self.queue_list, 1)
        layout.addWidget(self.info_label)
        layout.addLayout(self._decision_buttons())
        layout.addWidget(self.cleanup)
        layout.addWidget(self._rules_box())
        layout.addWidget(self.counts_label)
        for key, method in SHORTCUTS.items():
            self.viewer.bind_key(key, lambda _viewer, m=method: getattr(self, m)(), overwrite=True)
        self.viewer.layers.selection.events.changed.connect(self._update_actions)
        self._update_actions()

    def _decision_buttons(self) -> QHBoxLayout:
        buttons = QHBoxLayout()
        self.decision_buttons = []
        for text, slot, tip in (
            ("< Previous", self.previous_pair, "Alt+Left"),
            ("Accept", self.accept, "Alt+A"),
            ("Reject", self.reject, "Alt+R"),
            ("Flag", self.flag, "Alt+G"),
            ("Next >", self.next_pair, "Alt+Right"),
        ):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _checked=False, s=slot: s())
            buttons.addWidget(button)
            self.decision_buttons.append(button)
        return buttons

    def _rules_box(self) -> QGroupBox:
        self.max_error = QDoubleSpinBox()
        self.max_error.setRange(0.0, 100.0)
        self.max_error.setValue(5.0)
        self.max_error.setSuffix(" % points")
        accept_rule = QPushButton("Accept pending within")
        accept_rule.clicked.connect(lambda: self.accept_by_fraction_error(self.max_error.value() / 100.0))
        self.min_pixels = QSpinBox()
        self.min_pixels.setRange(0, 10_000_000)
        self.min_pixels.setValue(200)
        self.min_pixels.setSuffix(" px")
        reject_rule = QPushButton("Reject pending with a phase under")
        reject_rule.clicked.connect(lambda: self.reject_by_small_phase(self.min_pixels.value()))
        self.min_agreement = QDoubleSpinBox()
        self.min_agreement.setRange(0.0, 1.0)
        self.min_agreement.setSingleStep(0.05)
        self.min_agreement.setValue(0.5)
        self.min_agreement.setPrefix("mIoU ")
        agreement_rule = QPushButton("Keep pending pairs a real-data segmenter agrees with")
        agreement_rule.setToolTip("The segmenter segments each pending pair's image; pairs whose mask it agrees "
                                  "with at least this much are accepted, the others rejected.")
        agreement_rule.clicked.connect(lambda: self.keep_agreeing(self.min_agreement.value()))
        from .phase_ratio import bundled_segmenters

        self.agreement_model = QComboBox()
        self._agreement_folders = {f"bundled: {k}": v for k, v in bundled_segmenters().items()}
        self.agreement_model.addItems(list(self._agreement_folders))
        self.rule_progress = EngineProgress()
        rules = QFormLayout()
        rules.addRow(accept_rule, self.max_error)
        rules.addRow(reject_rule, self.min_pixels)
        rules.addRow(agreement_rule, self.min_agreement)
        rules.addRow("segmenter", self.agreement_model)
        rules.addRow(self.rule_progress)
        self.rules_box = QGroupBox("Batch rules (pending pairs only)")
        self.rules_box.setLayout(rules)
        return self.rules_box

    def _update_actions(self, _event=None) -> None:
        """Enable what can be done now: adding needs a store and selected image + labels layers, deciding
        and cleaning need a pair on screen, the rules an open store."""
        self.add_layers_button.setEnabled(self.store is not None and bool(self._selected_pairs()))
        for button in self.decision_buttons:
            button.setEnabled(self._shown_index is not None)
        self.rules_box.setEnabled(self.store is not None)
        if self._shown_index is None:
            self.cleanup.set_mask(None)

    # ------------------------------------------------------------------ store and queue

    def open_store(self, path: str | Path) -> None:
        """Open an existing dataset store for curation (pairs are added to it with :meth:`add_selected_layers`).

        Edits of the pair on screen are saved first; opening the same store again (e.g. after more pairs
        were generated into it) reads the new pairs and keeps the pair on screen when it is still queued.
        """
        path = Path(path)
        if not is_store(path):
            raise ValueError(not_a_store(path))
        self._save_edits()
        same = self.store is not None and self.store.path.resolve() == path.resolve()
        keep = self._shown_index if same else None
        self.store = DatasetStore.open(path, mode="a")
        self.store_label.setText(f"{path}: {len(self.store)} pairs, schema {self.store.schema.name}")
        self.message.setText("")
        self._shown_index = None
        self.cleanup.show_phases(self.store.schema)
        self.refresh_queue(keep)

    def _open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a dataset store (.zarr)")
        if path:
            try:
                self.open_store(path)
            except (ValueError, OSError) as exc:
                self.message.setText(f"cannot open {Path(path).name}: {exc}")

    def refresh_queue(self, show: int | None = None) -> None:
        """Rebuild the list from the store for the chosen filter and show pair ``show`` when it is in the
        list, else the first pair in it."""
        self._save_edits()
        if self.store is None:
            return
        wanted = self.filter_combo.currentText()
        self._errors = fraction_errors(self.store)
        statuses = self.store.statuses()
        self.queue = [i for i, s in enumerate(statuses) if wanted == "all" or s == wanted]
        self.queue_list.blockSignals(True)
        self.queue_list.clear()
        for index in self.queue:
            self.queue_list.addItem(QListWidgetItem(self._row_text(index)))
        self.queue_list.blockSignals(False)
        self._update_counts()
        self.position = -1
        if self.queue:
            self._go_to(self.queue.index(show) if show in self.queue else 0)
        else:
            self._shown_index = None
            for name in (IMAGE_LAYER, MASK_LAYER):
                if name in self.viewer.layers:
                    self.viewer.layers[name].visible = False
            self.info_label.setText(f"no {wanted} pairs" if wanted != "all" else "the store is empty")
        self._update_actions()

    def _row_text(self, index: int) -> str:
        store = self.store
        origin = store.provenance(index).origin
        error = self._errors[index]
        target = "" if np.isnan(error) else f", off target by {100 * error:.1f} pts"
        return f"#{index} {store.names[index]} [{store.status(index)}] {origin}{target}"

    def _update_counts(self) -> None:
        if self.store is None:
            return
        from collections import Counter

        counts = Counter(self.store.statuses())
        self.counts_label.setText(", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES))

    # ------------------------------------------------------------------ showing one pair

    @property
    def current_index(self) -> int | None:
        """Store index of the pair on screen, None when there is none."""
        return self._shown_index

    def _row_chosen(self, row: int) -> None:
        if 0 <= row < len(self.queue) and row != self.position:
            self._save_edits()
            self._go_to(row)

    def _go_to(self, row: int) -> None:
        self.position = row
        index = self.queue[row]
        sample = self.store[index]
        image, labels = self._show_layers(sample)
        self._shown_index, self._shown_mask = index, sample.mask
        _forget_history(labels)
        self.viewer.layers.selection.active = labels
        self._hide_others()
        view_key = (sample.shape, tuple(labels.scale))
        if view_key != self._view_key:
            self.viewer.reset_view(layers=[image, labels])
            self._view_key = view_key
        self.cleanup.set_mask(labels.data, sample.pixel_size_um, defaults=True)
        self.queue_list.blockSignals(True)
        self.queue_list.setCurrentRow(row)
        self.queue_list.blockSignals(False)
        self._show_info(index)

    def _show_layers(self, sample):
        """Put the pair into the curation image and mask layers (made on first use), in its physical scale."""
        from ..napari_io import label_colormap, phase_features, physical_scale

        scale = physical_scale([sample.pixel_size_um])
        if IMAGE_LAYER in self.viewer.layers:
            self.viewer.layers[IMAGE_LAYER].data = sample.image
        else:
            self.viewer.add_image(sample.image, name=IMAGE_LAYER, colormap="gray", contrast_limits=(0.0, 1.0), **scale)
        if MASK_LAYER in self.viewer.layers:
            self.viewer.layers[MASK_LAYER].data = sample.mask.copy()
        else:
            schema = self.store.schema
            labels = self.viewer.add_labels(sample.mask.copy(), name=MASK_LAYER, opacity=0.5,
                                            colormap=label_colormap(schema), features=phase_features(schema), **scale)
            for event in (labels.events.paint, labels.events.data):  # the preview follows every edit
                event.connect(lambda _event: self.cleanup.set_mask(self.current_mask()))
        layers = self.viewer.layers[IMAGE_LAYER], self.viewer.layers[MASK_LAYER]
        for layer in layers:
            layer.scale, layer.units, layer.visible = scale["scale"], scale["units"], True
        if sample.pixel_size_um is not None:
            self.viewer.canvas.overlays.scale_bar.visible = True
        return layers

    def _hide_others(self) -> None:
        """Hide every other layer (remembering which) while "show only the pair being curated" is ticked."""
        if not self.only_pair_box.isChecked():
            return
        for layer in self.viewer.layers:
            if layer.name not in (IMAGE_LAYER, MASK_LAYER) and layer.visible:
                layer.visible = False
                self._hidden.append(layer)

    def _only_pair_toggled(self, only_pair: bool) -> None:
        if only_pair:
            if self._shown_index is not None:
                self._hide_others()
            return
        for layer in self._hidden:
            if layer in self.viewer.layers:
                layer.visible = True
        self._hidden = []

    def _show_info(self, index: int) -> None:
        schema = self.store.schema
        provenance = self.store.provenance(index)
        achieved = self.store.fractions()[index]
        target = (provenance.condition or {}).get("fractions")
        parts = [f"#{index} {self.store.names[index]}: {provenance.origin}, {self.store.status(index)}"]
        if provenance.generator:
            parts.append(f"from {provenance.generator} seed {provenance.seed}")
        if provenance.changed_pixels:
            parts.append(f"{provenance.changed_pixels} pixels corrected")
        rows = []
        for k, name in enumerate(schema.names):
            wanted = "" if target is None else f"{100 * target[k]:.1f} -> "
            rows.append(f"{name} {wanted}{100 * achieved[k]:.1f} %")
        self.info_label.setText("; ".join(parts) + "\n" + ", ".join(rows))

    def current_mask(self) -> np.ndarray | None:
        """The mask on screen (with the user's edits), None when no pair is shown."""
        if self._shown_index is None or MASK_LAYER not in self.viewer.layers:
            return None
        return np.asarray(self.viewer.layers[MASK_LAYER].data)

    def _save_edits(self) -> bool:
        """Write the on-screen mask to the store as a correction if it was edited; True if it was."""
        mask = self.current_mask()
        if mask is None or self.store is None:
            return False
        if np.array_equal(mask, self._shown_mask):
            return False
        self.store.replace_mask(self._shown_index, mask)
        self._shown_mask = mask.copy()
        return True

    # ------------------------------------------------------------------ decisions

    def _decide(self, status: str) -> None:
        if self._shown_index is None:
            return
        index = self._shown_index
        if self._save_edits():
            self._errors = fraction_errors(self.store)
        self.store.set_status(index, status)
        self.queue_list.item(self.position).setText(self._row_text(index))
        self._update_counts()
        self._show_info(index)
        self.next_pair()

    def accept(self) -> None:
        """Accept the pair on screen (saving its corrected mask) and move on."""
        self._decide("accepted")

    def reject(self) -> None:
        """Reject the pair on screen (it stays in the store but is left out of exports) and move on."""
        self._decide("rejected")

    def flag(self) -> None:
        """Flag the pair on screen for a second look and move on."""
        self._decide("flagged")

    def next_pair(self) -> None:
        if self.position + 1 < len(self.queue):
            self._save_edits()
            self._go_to(self.position + 1)

    def previous_pair(self) -> None:
        if self.position > 0:
            self._save_edits()
            self._go_to(self.position - 1)

    def clean_up_mask(self) -> None:
        """Paper 002's clean-up on the mask on screen with the panel's per-phase sizes, as one undoable edit
        of the labels layer (saved as a correction on the next decision like any other edit)."""
        mask = self.current_mask()
        if mask is None:
            return
        labels = self.viewer.layers[MASK_LAYER]
        self.cleanup.set_mask(mask)
        cleaned = self.cleanup.cleaned()
        changed = np.nonzero(cleaned != mask)
        with labels.block_history():  # one undo step, announced by the layer's paint event
            labels.data_setitem(changed, cleaned[changed])

    def undo_edit(self) -> None:
        """Undo the last edit of the mask on screen (clean-up, paint or fill)."""
        if self.current_mask() is not None:
            self.viewer.layers[MASK_LAYER].undo()
            self.cleanup.set_mask(self.current_mask())

    def accept_by_fraction_error(self, max_error: float) -> list[int]:
        """Accept every pending pair whose achieved fractions are within ``max_error`` of its target."""
        return self._apply_rule(lambda: accept_within(self.store, max_error))

    def reject_by_small_phase(self, min_pixels: int) -> list[int]:
        """Reject every pending pair in which some present phase has fewer than ``min_pixels`` pixels."""
        return self._apply_rule(lambda: reject_small_phases(self.store, min_pixels))

    def set_agreement_model(self, folder: str | Path) -> None:
        """Offer a segmenter model folder (trained on real micrographs) for the agreement rule, and choose it."""
        label = f"folder: {Path(folder).name}"
        self._agreement_folders[label] = Path(folder)
        if self.agreement_model.findText(label) < 0:
            self.agreement_model.addItem(label)
        self.agreement_model.setCurrentText(label)

    def keep_agreeing(self, min_miou: float) -> None:
        """Accept the pending pairs the chosen segmenter agrees with (mIoU >= ``min_miou``), reject the rest;
        runs in the background (the segmenter looks at every pending pair)."""
        if self.store is None or self.rule_progress.busy:
            return
        self._save_edits()
        self.rules_box.setEnabled(False)
        folder = self._agreement_folders[self.agreement_model.currentText()]
        self.rule_progress.start(agreement_job, self._agreement_done, self._agreement_failed,
                                 lambda: self._agreement_done(None), store=self.store, folder=folder,
                                 min_miou=min_miou)

    def _agreement_done(self, result) -> None:
        self.rules_box.setEnabled(self.store is not None)
        self.refresh_queue()
        if result is not None:
            self.message.setText(f"agreement rule: accepted {len(result.accepted)}, rejected {len(result.rejected)} "
                                 f"of {len(result.scores)} pending pairs")

    def _agreement_failed(self, exc) -> None:
        self.rules_box.setEnabled(self.store is not None)
        self.message.setText(f"agreement rule failed: {exc}")

    def _apply_rule(self, rule) -> list[int]:
        if self.store is None:
            return []
        self._save_edits()
        changed = rule()
        self.refresh_queue()
        return changed

    # ------------------------------------------------------------------ adding pairs

    def _selected_pairs(self) -> list:
        """Layer data of the selected image and labels layers other than the curation pair ([] without both)."""
        selected = [layer for layer in self.viewer.layers.selection if layer.name not in (IMAGE_LAYER, MASK_LAYER)]
        kinds = {layer._type_string for layer in selected}
        if not {"image", "labels"} <= kinds:
            return []
        return [layer.as_layer_data_tuple() for layer in selected if layer._type_string in ("image", "labels")]

    def add_selected_layers(self) -> int:
        """Append the selected image + labels layers to the store as pending pairs; returns how many."""
        from ..napari_io import write_store

        if self.store is None:
            raise ValueError("open a store first (Open store...)")
        data = self._selected_pairs()
        if not data:
            raise ValueError("select an image layer and its labels layer (Ctrl+click in the layer list) to add them")
        before = len(self.store)
        self._save_edits()
        write_store(str(self.store.path), data)
        self.open_store(self.store.path)
        return len(self.store) - before

    def _add_clicked(self) -> None:
        try:
            added = self.add_selected_layers()
        except (ValueError, OSError) as exc:
            self.message.setText(f"cannot add the layers: {exc}")
            return
        self.message.setText(f"added {added} pending pairs to {self.store.path.name}")


def _forget_history(labels) -> None:
    """Clear a labels layer's undo history, so Undo cannot write the previous pair's pixels into this one
    (napari keeps the history when the data is replaced, and clears it when the layer stops being editable)."""
    mode = labels.mode
    labels.editable = False
    labels.editable = True
    labels.mode = mode


def agreement_job(store, folder, min_miou, progress, should_stop):
    """The agreement rule with the segmenter in ``folder`` (run in a worker)."""
    from ..engines.agreement import accept_agreeing
    from ..models.segmenter import Segmenter

    return accept_agreeing(store, Segmenter.load(folder), min_miou, Path(folder).name, progress, should_stop)

