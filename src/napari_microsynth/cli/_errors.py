"""One place that turns a failure into the one ``error:`` line the user sees.

Files are checked where they are read (images in ``core.io``, stores in ``core.store``, model weights in
``models.folder``), which raise ``ValueError`` (or ``FileNotFoundError`` ...) naming the file; this module
only words the few failures that come from below without a file name, and the unexpected rest.
"""
from __future__ import annotations

import argparse

#: failures that are the user's input: their message is the error line, exit status 2
BAD_INPUT = (ValueError, FileNotFoundError, FileExistsError, KeyError, PermissionError)


def one_line(text: str) -> str:
    """``text`` on one line (a listed message's items joined by ' ')."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def bad_input_message(exc: BaseException, args: argparse.Namespace | None) -> str | None:
    """The error line of a failure caused by the input, or None for an unexpected failure."""
    if isinstance(exc, KeyError) and exc.args:
        return one_line(exc.args[0])
    if isinstance(exc, BAD_INPUT):
        return one_line(str(exc))
    model = getattr(args, "model", None) or getattr(args, "generator", None) or "the model folder"
    text = str(exc)
    if isinstance(exc, RuntimeError) and text.startswith("Error(s) in loading state_dict"):
        detail = next((line.strip() for line in text.splitlines()[1:] if line.strip()), "")
        return (f"{model}: the weights do not fit the network its config.json describes ({detail}); "
                "config.json and the .safetensors files come from different models")
    if type(exc).__name__ == "SafetensorError":
        return f"{model}: a weights file is not a readable safetensors file ({one_line(text)})"
    return None


def check_device(args: argparse.Namespace) -> None:
    """Refuse a ``--device`` that this machine does not have before anything is read or written."""
    device = getattr(args, "device", None)
    if device is None or str(device).lower() in ("auto", "cpu"):
        return
    from ..models.device import resolve_device

    try:
        resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--device {device}: {exc}") from None
