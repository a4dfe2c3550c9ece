"""The Curation widget's clean-up panel: paper 002's "remove small regions", one minimum size per phase.

Each row is a phase of the schema (its colour and name, so the panel is also the mask's legend), the
phase's area share, its minimum region size in pixels and what the clean-up would change in it (pixels
and regions removed) with the sizes as set, before anything is applied. The defaults come from the
pixel size: regions under :data:`SPECK_AREA_UM2` are specks, but never so large a size that it would
take away more than :data:`MAX_DEFAULT_LOSS` of a phase, so a phase made of small particles (UHCS
spheroidite) is kept.

>>> import numpy as np
>>> from napari_microsynth.core.schema import PhaseSchema
>>> mask = np.zeros((20, 20), dtype=np.uint8)
>>> mask[5, 5] = 1                                  # a one-pixel speck of cementite
>>> default_min_sizes(mask, PhaseSchema.bundled("uhcs"), pixel_size_um=0.388)
[7, 1, 7, 7]
"""
from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout

from ..core.cleanup import PAPER_MIN_SIZE, remove_small_regions
from ..core.schema import PhaseSchema

#: Regions smaller than this area (1 um across) are specks, not phase regions.
SPECK_AREA_UM2 = 1.0
#: A default minimum size never removes more than this share of a phase's pixels.
MAX_DEFAULT_LOSS = 0.1
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connected regions, as remove_small_regions counts them


def region_sizes(mask: np.ndarray, class_id: int) -> np.ndarray:
    """Pixel counts of the 8-connected regions of one class."""
    from scipy import ndimage

    labels, n = ndimage.label(mask == class_id, structure=_EIGHT)
    return np.bincount(labels.ravel(), minlength=n + 1)[1:]


def default_min_sizes(mask: np.ndarray, schema: PhaseSchema, pixel_size_um: float | None) -> list[int]:
    """Minimum region size per phase: a :data:`SPECK_AREA_UM2` speck in pixels (paper 002's 200 px when
    the pixel size is unknown), lowered for a phase until at most :data:`MAX_DEFAULT_LOSS` of its pixels
    would be removed (1 removes nothing)."""
    base = PAPER_MIN_SIZE if pixel_size_um is None else max(1, round(SPECK_AREA_UM2 / pixel_size_um**2))
    sizes = []
    for class_id in range(schema.n_classes):
        regions = region_sizes(mask, class_id)
        allowed = MAX_DEFAULT_LOSS * regions.sum()
        candidates = sorted({base, 1, *(int(r) for r in regions if r < base)}, reverse=True)
        sizes.append(next(t for t in candidates if regions[regions < t].sum() <= allowed))
    return sizes


def removal_preview(mask: np.ndarray, cleaned: np.ndarray, n_classes: int) -> list[tuple[int, int]]:
    """``(pixels, regions)`` of each class that the clean-up from ``mask`` to ``cleaned`` removes."""
    from scipy import ndimage

    changed = cleaned != mask
    preview = []
    for class_id in range(n_classes):
        gone = changed & (mask == class_id)
        if not gone.any():
            preview.append((0, 0))
            continue
        labels, _ = ndimage.label(mask == class_id, structure=_EIGHT)
        preview.append((int(gone.sum()), len(np.unique(labels[gone]))))
    return preview


class CleanupPanel(QGroupBox):
    """Per-phase minimum sizes with a preview of what they remove; Apply and Undo are the caller's."""

    def __init__(self, parent=None) -> None:
        super().__init__("Remove smaller regions (paper 002 clean-up)", parent)
        self.schema: PhaseSchema | None = None
        self._mask: np.ndarray | None = None
        self.size_boxes: list[QSpinBox] = []
        self.share_labels: list[QLabel] = []
        self.preview_labels: list[QLabel] = []
        self.grid = QGridLayout()
        self.apply_button = QPushButton("Remove smaller regions")
        self.apply_button.setToolTip("fill each region under its phase's minimum size from the neighbouring "
                                     "phase; undo with Undo or Ctrl+Z on the mask layer")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("undo the last edit of the mask (clean-up, paint or fill), as Ctrl+Z does")
        buttons = QHBoxLayout()
        buttons.addWidget(self.apply_button, 1)
        buttons.addWidget(self.undo_button)
        layout = QVBoxLayout(self)
        layout.addLayout(self.grid)
        layout.addLayout(buttons)

    def show_phases(self, schema: PhaseSchema) -> None:
        """One row per phase of ``schema`` (rebuilt when the schema changes)."""
        if schema == self.schema:
            return
        while self.grid.count():
            self.grid.takeAt(0).widget().deleteLater()
        self.schema = schema
        self.size_boxes, self.share_labels, self.preview_labels = [], [], []
        for col, title in enumerate(("phase", "area", "min. size", "would remove")):
            self.grid.addWidget(QLabel(f"<b>{title}</b>"), 0, col)
        for k, phase in enumerate(schema.phases):
            r, g, b = phase.color
            box = QSpinBox()
            box.setRange(1, 1_000_000)
            box.setSuffix(" px")
            box.setToolTip(f"{phase.name} regions smaller than this are filled from their neighbours (1: keep all)")
            box.valueChanged.connect(lambda _value: self._show_preview())
            share, preview = QLabel(""), QLabel("")
            row = (QLabel(f'<span style="color: rgb({r},{g},{b});">&#9632;</span> {phase.name}'), share, box, preview)
            for col, widget in enumerate(row):
                self.grid.addWidget(widget, k + 1, col)
            self.size_boxes.append(box)
            self.share_labels.append(share)
            self.preview_labels.append(preview)

    def min_sizes(self) -> list[int]:
        """The minimum region size of each phase, in pixels."""
        return [box.value() for box in self.size_boxes]

    def set_mask(self, mask: np.ndarray | None, pixel_size_um: float | None = None, defaults: bool = False) -> None:
        """Show the phase shares and the preview for ``mask``; ``defaults`` also resets the sizes for it."""
        self._mask = None if mask is None else np.asarray(mask)
        self.setEnabled(self._mask is not None)
        if self._mask is None:
            return
        if defaults:
            for box, size in zip(self.size_boxes, default_min_sizes(self._mask, self.schema, pixel_size_um)):
                box.blockSignals(True)
                box.setValue(size)
                box.blockSignals(False)
        counts = np.bincount(self._mask.ravel(), minlength=self.schema.n_classes)[:self.schema.n_classes]
        for label, count in zip(self.share_labels, counts):
            label.setText(f"{100 * count / max(1, self._mask.size):.1f} %")
        self._show_preview()

    def cleaned(self) -> np.ndarray:
        """The mask as the clean-up with the current sizes would leave it."""
        return remove_small_regions(self._mask, self.schema, min_size=self.min_sizes())

    def _show_preview(self) -> None:
        if self._mask is None:
            return
        preview = removal_preview(self._mask, self.cleaned(), self.schema.n_classes)
        for label, (pixels, regions) in zip(self.preview_labels, preview):
            label.setText(f"{pixels} px in {regions} regions" if pixels else "nothing")
        self.apply_button.setEnabled(any(pixels for pixels, _ in preview))
