"""The ``microsynth`` command: headless access to everything the napari widgets do.

Every subcommand is a thin adapter: it parses arguments, calls an engine or core function with a
terminal progress bar and Ctrl-C as the stop request, and prints a short result. Bad input ends with a
one-line ``error: ...`` message and exit status 2, an unexpected failure with one line naming the command
and exit status 1 (``--debug`` adds the traceback); a cancelled run exits with 130.

Each command's arguments are declared beside its handler (:mod:`.data`, :mod:`.segmentation`,
:mod:`.generators`, :mod:`.grains`); the option groups several commands share are declared once in
:mod:`._common`, and a generator family's flags are built from its declared options (:mod:`._options`).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .. import __version__
from . import data, segmentation, generators, grains, sim2real  # noqa: F401, I001  (registers commands, in help order)
from ._common import COMMANDS, EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, Command, add_global_options
from ._errors import bad_input_message, check_device, one_line
from ._options import without_family_flags
from ._terminal import quiet_readers


class _Unreadable(Exception):
    """The command's own arguments cannot be read yet (the full parse will say why)."""


class _LenientParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _Unreadable(message)


def _own_arguments(cmd: Command, argv: Sequence[str]) -> argparse.Namespace | None:
    """The command's own arguments as far as ``argv`` gives them (none required), without the family's
    flags; None when they cannot be read."""
    parser = _LenientParser(add_help=False)
    cmd.arguments(parser)
    for action in parser._actions:  # noqa: SLF001 (argparse has no public accessor)
        action.required = False
        if not action.option_strings:
            action.nargs = "?"
    try:
        return parser.parse_known_args(without_family_flags(parser, argv))[0]
    except _Unreadable:
        return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``microsynth`` parser; the command ``argv`` names also gets the flags of the generator family
    its arguments name."""
    parser = argparse.ArgumentParser(
        prog="microsynth",
        description=(
            "Phase segmentation and synthetic training data for metallographic micrographs.\n"
            "Typical start: 'microsynth describe FOLDER', then 'microsynth import FOLDER data.zarr'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no file-reader warnings")
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    words = [i for i, token in enumerate(argv) if not token.startswith("-")]
    chosen = COMMANDS.get(argv[words[0]]) if words else None
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description)
        cmd.arguments(p)
        if cmd is chosen and cmd.family is not None:
            known = _own_arguments(cmd, argv[words[0] + 1:])
            family = None if known is None else cmd.family(known)
            if family is not None:
                cmd.family_flags(p, family)
        add_global_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure ends in one ``error:`` line (the traceback too with ``--debug``)."""
    import traceback

    from ..core.progress import Cancelled

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = None
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_BAD_INPUT
        check_device(args)
        with quiet_readers(args.quiet):
            return COMMANDS[args.command].run(args)
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # the last resort: one line naming the command, the traceback behind --debug
        if debug:
            traceback.print_exc()
        message = bad_input_message(exc, args)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return EXIT_BAD_INPUT
        command = getattr(args, "command", None) or "microsynth"
        hint = "" if debug else "; run it again with --debug for the traceback"
        print(f"error: {command} failed: {type(exc).__name__}: {one_line(str(exc))}{hint}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Under ``accelerate launch``, take this process out of the process group before exiting (a process
    that exits with the group still up can abort in its communication threads)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "EXIT_CANCELLED", "EXIT_FAILED", "build_parser", "main"]
