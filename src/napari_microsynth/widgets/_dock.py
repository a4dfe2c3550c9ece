"""What the plugin's dock widgets share: a scrolling form, one tab stack for all of them, plain messages.

Four docks stacked in napari's right dock area add up their minimum heights and push the main window
past the screen. Each plugin widget is a :class:`PluginDock`: its form sits in a scroll area (so the
dock asks for the form's width but little height, and a long form scrolls), and the first time it is shown its dock joins
the other plugin docks of the same area as a tab.
"""
from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QVBoxLayout, QWidget


class PluginDock(QWidget):
    """Base of the plugin's dock widgets: ``self.form`` is the (scrolling) layout to fill."""

    def __init__(self) -> None:
        super().__init__()
        content = QWidget()
        area = QScrollArea()
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setWidget(content)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the dock is as wide as the form
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(area)
        self.scroll_area = area
        self.form = QVBoxLayout(content)
        self._joined = False

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        """The form's width (it never scrolls sideways), little height (it scrolls up and down)."""
        width = self.scroll_area.widget().minimumSizeHint().width()
        return QSize(width + self.scroll_area.verticalScrollBar().sizeHint().width(), 200)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        hint = self.scroll_area.widget().sizeHint()
        return QSize(hint.width() + self.scroll_area.verticalScrollBar().sizeHint().width(), min(hint.height(), 600))

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        if not self._joined:
            QTimer.singleShot(0, self.join_plugin_tabs)

    def join_plugin_tabs(self) -> None:
        """Put the plugin's docks of this dock's area into one tab stack with this one in front (once, when
        the dock is first shown: napari places each new dock below the others)."""
        dock = _dock_of(self)
        window = None if dock is None else dock.parentWidget()
        if self._joined or not isinstance(window, QMainWindow) or dock.isFloating():
            return
        self._joined = True
        area = window.dockWidgetArea(dock)
        docks = [other for other in window.findChildren(QDockWidget)
                 if not other.isFloating() and other.findChildren(PluginDock) and window.dockWidgetArea(other) == area]
        anchor = next(other for other in docks if other is not dock) if len(docks) > 1 else dock
        for other in docks:
            if other is not anchor and other not in window.tabifiedDockWidgets(anchor):
                window.tabifyDockWidget(anchor, other)
        dock.show()
        dock.raise_()


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def not_a_store(path: str | Path) -> str:
    """Why ``path`` cannot be opened as a dataset store, in plain words, with what to do instead."""
    from ..core.datasets import detect_layout

    path = Path(path)
    try:
        layout = detect_layout(path)
    except (ValueError, OSError):
        return (f"{path.name} is not a napari-microsynth dataset store (a .zarr folder written by "
                "`microsynth import`, the Synthesis widget or File > Save Selected Layers)")
    return (f"{path.name} is a dataset folder ({layout} layout), not a dataset store: import it first with "
            f"`microsynth import {path} {path.name}.zarr`")
