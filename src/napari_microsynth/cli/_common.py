"""What every command shares: the command registry, the option groups declared once, terminal wiring and
the loading helpers."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130

Arguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: its help, the function that declares its arguments and the one that runs it.

    A command that runs a generator family also says which family its arguments name (``family``, given
    the command's own arguments as far as they are on the command line; None when none is named) and
    adds that family's flags (``family_flags``), so ``--help`` lists them.
    """

    name: str
    help: str
    description: str
    arguments: Arguments
    run: Run
    family: Callable[[argparse.Namespace], type | None] | None = None
    family_flags: Callable[[argparse.ArgumentParser, type], None] | None = None


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, description: str, arguments: Arguments, family=None,
            family_flags=None) -> Callable[[Run], Run]:
    """Register the decorated function as the handler of subcommand ``name`` with its ``arguments``."""

    def decorator(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, description, arguments, run, family, family_flags)
        return run

    return decorator


# ---------------------------------------------------------------- option groups declared once


def add_device_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``."""
    p.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, mps")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")


def add_data_options(p: argparse.ArgumentParser, *splits: tuple[str, str]) -> None:
    """The labelled data argument, ``--schema`` and one ``--<role>-split`` per ``(role, default)``."""
    p.add_argument("data", help="labelled data: dataset folder or store")
    p.add_argument("--schema", help="schema name or JSON file (generic folders without schema.json)")
    for role, default in splits:
        p.add_argument(f"--{role}-split", default=default, help=f"{role} split (default {default}; 'all': every micrograph)")


def add_global_options(p: argparse.ArgumentParser) -> None:
    """``-q`` and ``--debug`` after the command too; SUPPRESS keeps one given before the command."""
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars and no file-reader warnings")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the traceback of a failure")


# ---------------------------------------------------------------- helpers of the handlers


def schema_arg(value: str | None):
    """A phase schema from a bundled name or a JSON file (None stays None)."""
    from ..core.schema import PhaseSchema

    if value is None:
        return None
    path = Path(value)
    return PhaseSchema.load(path) if path.suffix == ".json" or path.is_file() else PhaseSchema.bundled(value)


def terminal(args: argparse.Namespace, desc: str):
    """A terminal progress bar and a Ctrl-C stop flag."""
    from ._terminal import InterruptFlag, TerminalProgress

    return TerminalProgress(desc, quiet=args.quiet), InterruptFlag()


def labelled(path: Path, split: str | None, schema_name: str | None, args: argparse.Namespace) -> list:
    """The labelled samples of one split of a dataset folder or store (all samples for split None)."""
    from ..core.datasets import load_split

    progress, stop = terminal(args, f"reading {split or 'all'}")
    with stop.installed():
        samples = load_split(path, split, schema_arg(schema_name), progress, stop)
    progress.close()
    samples = [s for s in samples if s.mask is not None]
    if not samples:
        raise ValueError(f"{path} has no labelled samples" + (f" in split {split!r}" if split else ""))
    return samples


def model_folder(value: str) -> Path:
    """A model folder path, or the name of a bundled model in resources/models."""
    from ..resources import resources_dir

    path = Path(value)
    if path.is_dir():
        return path
    bundled = resources_dir() / "models" / value
    if bundled.is_dir():
        return bundled
    raise FileNotFoundError(f"no model folder {value!r} (neither a folder nor a bundled model)")


def require_window(image, model, path: str) -> None:
    """Refuse a micrograph smaller than the window the segmenter looks through (its phase map would be
    made mostly of padding: a 1x1 image came out as "100 % ferrite")."""
    window = int(round(model.tile_size / model.input_scale))
    height, width = image.shape[:2]
    if height < window or width < window:
        raise ValueError(f"{path}: the micrograph is {width}x{height} px, smaller than the model's {window}x{window} px "
                         f"window ({model.tile_size} network px at input scale {model.input_scale:g}); its phase map "
                         "would be mostly padding, so segment a micrograph at least that large")


def set_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
