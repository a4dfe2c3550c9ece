"""Wiring of engine callbacks to the terminal: a tqdm progress bar and Ctrl-C as "stop"."""
from __future__ import annotations

import logging
import signal
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm


class TerminalProgress:
    """A ``progress(done, total, message)`` callback drawing one tqdm bar per task message prefix."""

    def __init__(self, desc: str, quiet: bool = False) -> None:
        self.desc = desc
        self.quiet = quiet
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if self.quiet:
            return
        if self._bar is None or self._bar.total != total:
            self.close()
            self._bar = tqdm(total=total, desc=self.desc, file=sys.stderr, dynamic_ncols=True, leave=False)
        self._bar.n = done
        if message:
            self._bar.set_postfix_str(message, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class InterruptFlag:
    """``should_stop()`` callable that turns the first Ctrl-C into a polite stop request.

    The engine stops at its next check (saving what it has); a second Ctrl-C aborts at once.
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    @contextmanager
    def installed(self) -> Iterator["InterruptFlag"]:
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):  # noqa: ARG001
            if self.requested:
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            self.requested = True
            print("\nstopping after the current step (Ctrl-C again to abort now)...", file=sys.stderr)

        signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


@contextmanager
def quiet_readers(quiet: bool) -> Iterator[None]:
    """With ``-q``: no warnings of the file readers (tifffile logs one for each TIFF whose tags it finds
    unusual, e.g. an RGBA mask with ImageJ metadata, even though the pixels read fine)."""
    if not quiet:
        yield
        return
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="tifffile")
            yield
    finally:
        logger.setLevel(level)
