"""Run an engine function off the UI thread with a progress bar and a Cancel button.

Engines report through ``progress(done, total, message)`` and poll ``should_stop()``. Here the progress
callback emits a Qt signal (delivered to the UI thread, so it is safe to call from the worker) and
``should_stop`` reads a flag the Cancel button sets.
"""
from __future__ import annotations

from typing import Any, Callable

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


#: exceptions that mean bad input rather than a bug (the CLI's exit status 2)
INPUT_ERRORS = (ValueError, FileExistsError, FileNotFoundError)


class _ProgressRelay(QObject):
    progressed = Signal(int, int, str)


class EngineProgress(QWidget):
    """Progress bar, status line and Cancel button for one engine run at a time."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._show)
        self._stop_requested = False
        self.worker = None

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def cancel(self) -> None:
        """Ask the running engine to stop at its next check."""
        self._stop_requested = True
        self.status.setText("cancelling...")

    def start(
        self,
        engine: Callable[..., Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[Exception], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        **kwargs: Any,
    ):
        """Run ``engine(progress=..., should_stop=..., **kwargs)`` in a napari thread worker.

        Bad input (``INPUT_ERRORS``) goes to ``on_error`` only, as a one-line message does in the CLI; any
        other exception also reaches napari's error notification with its traceback.
        """
        from napari.qt.threading import create_worker

        from ..core.progress import Cancelled

        if self.busy:
            raise RuntimeError("another operation is still running; wait for it or cancel it")
        self._stop_requested = False
        self.bar.setRange(0, 0)
        self.status.setText("starting...")
        self.cancel_button.setEnabled(True)

        def run():
            try:
                return ("done", engine(progress=self._relay.progressed.emit, should_stop=lambda: self._stop_requested,
                                       **kwargs))
            except Cancelled:
                return ("cancelled", None)
            except INPUT_ERRORS as exc:
                if on_error is None:
                    raise
                return ("failed", exc)

        worker = create_worker(run, _start_thread=False)

        def finished(result):
            self._finish()
            kind, value = result
            if kind == "cancelled":
                self.status.setText("cancelled")
                if on_cancelled is not None:
                    on_cancelled()
            elif kind == "failed":
                self.status.setText(f"failed: {value}")
                on_error(value)
            else:
                self.status.setText("done")
                on_done(value)

        def errored(exc: Exception):
            self._finish()
            self.status.setText(f"failed: {exc}")
            if on_error is not None:
                on_error(exc)

        worker.returned.connect(finished)
        worker.errored.connect(errored)
        self.worker = worker
        worker.start()
        return worker

    def _finish(self) -> None:
        self.worker = None
        self.cancel_button.setEnabled(False)
        self.bar.setRange(0, 1)
        self.bar.setValue(1)

    def _show(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(done)
        if message:
            self.status.setText(message)
