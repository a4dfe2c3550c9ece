"""The progress/cancel protocol every long-running engine function follows.

Engines take ``progress(done, total, message)`` and ``should_stop()`` callables. The CLI wires them
to a tqdm bar and Ctrl-C, widgets to napari's ``progress`` and a Cancel button.
"""
from __future__ import annotations

from typing import Callable

ProgressFn = Callable[[int, int, str], None]
StopFn = Callable[[], bool]


class Cancelled(Exception):
    """Raised by an engine when ``should_stop()`` returned True; partial results are already saved."""


def no_progress(done: int, total: int, message: str = "") -> None:
    """Progress callback that reports nothing."""


def never_stop() -> bool:
    """Stop check for callers that never cancel."""
    return False


def check_stop(should_stop: StopFn) -> None:
    """Raise :class:`Cancelled` when the caller asked to stop."""
    if should_stop():
        raise Cancelled("cancelled by the user")
