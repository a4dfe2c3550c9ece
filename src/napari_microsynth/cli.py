"""The ``microsynth`` command: headless access to everything the napari widgets do.

Every subcommand is a thin adapter: it parses arguments, calls an engine or core function with a
terminal progress bar and Ctrl-C as the stop request, and prints a short result. Bad input ends with a
one-line ``error: ...`` message and exit status 2; a cancelled run exits with 130.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import __version__

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    """Register the function that runs subcommand ``name``."""

    def decorator(func: Callable[[argparse.Namespace], int]):
        _COMMANDS[name] = func
        return func

    return decorator


def _schema_arg(value: str | None):
    from .core.schema import PhaseSchema

    if value is None:
        return None
    path = Path(value)
    return PhaseSchema.load(path) if path.suffix == ".json" or path.is_file() else PhaseSchema.bundled(value)


def _load_samples(path: Path, schema, split: str | None, progress, should_stop):
    """Samples of a dataset folder or a store (optionally one split)."""
    from .core.store import DatasetStore, is_store

    if is_store(path):
        store = DatasetStore.open(path)
        indices = range(len(store)) if split is None else store.splits.get(split)
        if indices is None:
            raise ValueError(f"store {path} has no split {split!r}; splits: {', '.join(store.splits) or 'none'}")
        return [store[i] for i in indices]
    from .core.datasets import load_dataset

    return load_dataset(path, schema=schema, split=split, progress=progress, should_stop=should_stop)


# ---------------------------------------------------------------- data commands


@command("describe")
def _describe(args: argparse.Namespace) -> int:
    from .core.store import DatasetStore, is_store

    path = Path(args.path)
    if is_store(path):
        store = DatasetStore.open(path)
        print(store.describe())
        return 0
    from .core.datasets import describe_dataset

    progress, stop = _terminal(args, "reading")
    with stop.installed():
        report = describe_dataset(path, schema=_schema_arg(args.schema), progress=progress, should_stop=stop)
    progress.close()
    print(report.as_text())
    return 1 if (args.strict and report.problems) else 0


@command("import")
def _import(args: argparse.Namespace) -> int:
    from .core.datasets import available_splits, load_dataset, read_split
    from .core.store import DatasetStore
    from .core.tiles import tile_samples

    folder, out = Path(args.folder), Path(args.store)
    schema = _schema_arg(args.schema)
    progress, stop = _terminal(args, "reading")
    with stop.installed():
        samples = load_dataset(folder, schema=schema, progress=progress, should_stop=stop)
    progress.close()
    if not samples:
        raise ValueError(f"no image/mask pairs found in {folder}")
    split_of: dict[str, str] = {}
    for split in sorted({"train", "val", "test"} & set(available_splits(folder))):
        for name in read_split(folder, split):
            split_of[name] = split
    store = DatasetStore.create(out, samples[0].schema, description=f"imported from {folder}", overwrite=args.overwrite)
    progress, stop = _terminal(args, "writing")
    n_written = 0
    with stop.installed():
        for i, sample in enumerate(samples):
            if stop():
                break
            pieces = tile_samples(sample, args.tile) if args.tile else [sample]
            for piece in pieces:
                store.append(piece, split=split_of.get(sample.name))
                n_written += 1
            progress(i + 1, len(samples), sample.name)
    progress.close()
    print(f"wrote {n_written} samples from {len(samples)} micrographs to {out}")
    for split, indices in store.splits.items():
        print(f"  split {split}: {len(indices)} samples")
    return EXIT_CANCELLED if stop() else 0


@command("tile")
def _tile(args: argparse.Namespace) -> int:
    from .core.store import DatasetStore
    from .core.tiles import tile_samples

    source = DatasetStore.open(Path(args.store))
    out = DatasetStore.create(Path(args.out), source.schema, description=f"{args.size}px tiles of {args.store}",
                              overwrite=args.overwrite)
    split_of = {i: name for name, indices in source.splits.items() for i in indices}
    progress, stop = _terminal(args, "tiling")
    n = 0
    with stop.installed():
        for i in range(len(source)):
            if stop():
                break
            for tile in tile_samples(source[i], args.size):
                out.append(tile, split=split_of.get(i))
                n += 1
            progress(i + 1, len(source), "")
    progress.close()
    print(f"wrote {n} tiles of {args.size}x{args.size} to {args.out}")
    return EXIT_CANCELLED if stop() else 0


@command("fractions")
def _fractions(args: argparse.Namespace) -> int:
    import numpy as np

    from .engines.reports import format_fraction_table, plot_fraction_histograms, write_fraction_csv

    path = Path(args.path)
    progress, stop = _terminal(args, "reading")
    with stop.installed():
        samples = _load_samples(path, _schema_arg(args.schema), args.split, progress, stop)
    progress.close()
    samples = [s for s in samples if s.mask is not None]
    if not samples:
        raise ValueError(f"{path} holds no labelled samples")
    schema = samples[0].schema
    names = [s.name for s in samples]
    fractions = np.stack([s.fractions for s in samples])
    print(format_fraction_table(names, fractions, schema))
    if args.csv:
        print(f"table written to {write_fraction_csv(args.csv, names, fractions, schema)}")
    if args.histogram:
        print(f"histograms written to {plot_fraction_histograms(args.histogram, fractions, schema, title=path.name)}")
    return 0


@command("export")
def _export(args: argparse.Namespace) -> int:
    from .core.store import DatasetStore, export_folder

    store = DatasetStore.open(Path(args.store))
    progress, stop = _terminal(args, "exporting")
    with stop.installed():
        out = export_folder(store, Path(args.out), overwrite=args.overwrite, progress=progress, should_stop=stop)
    progress.close()
    print(f"exported {len(store)} samples to {out}")
    return EXIT_CANCELLED if stop() else 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from .engines.demo import run_demo

    progress, stop = _terminal(args, "demo")
    with stop.installed():
        summary = run_demo(Path(args.out), overwrite=args.overwrite, progress=progress, should_stop=stop)
    progress.close()
    print(summary)
    return EXIT_CANCELLED if stop() else 0


# ---------------------------------------------------------------- parser


def _terminal(args: argparse.Namespace, desc: str):
    from .cli_support import InterruptFlag, TerminalProgress

    return TerminalProgress(desc, quiet=args.quiet), InterruptFlag()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microsynth",
        description=(
            "Phase segmentation and synthetic training data for metallographic micrographs.\n"
            "Typical start: 'microsynth describe FOLDER', then 'microsynth import FOLDER data.zarr'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("describe", help="check a dataset folder or store and summarise it",
                       description="Check a dataset folder (images/ + masks/) or a dataset store and print what it "
                                   "holds and any problem found (with --strict, problems give exit status 1).")
    p.add_argument("path", help="dataset folder or .zarr store")
    p.add_argument("--schema", help="schema name or JSON file (generic folders without schema.json)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any problem is found")

    p = sub.add_parser("import", help="import a dataset folder into a dataset store",
                       description="Read every image/mask pair of a folder (MetalDAM, UHCS, grain-map or generic "
                                   "images/ + masks/ layout) and write them, with their splits, into a new store.")
    p.add_argument("folder", help="dataset folder")
    p.add_argument("store", help="store to create (e.g. metaldam.zarr)")
    p.add_argument("--schema", help="bundled schema name (metaldam, uhcs, grains) or schema JSON file; "
                                    "default: recognised from the folder")
    p.add_argument("--tile", type=int, default=0, metavar="PX", help="store non-overlapping PXxPX tiles instead of "
                                                                     "whole micrographs (papers use 256)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")

    p = sub.add_parser("tile", help="cut the samples of a store into non-overlapping tiles",
                       description="Cut every sample of a store into non-overlapping square tiles (the papers "
                                   "train on 256x256) and write them to a new store, keeping splits and provenance.")
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("fractions", help="report phase fractions (table, CSV, histogram PNG)",
                       description="Print the area fraction of every phase per sample and on average.")
    p.add_argument("path", help="dataset folder or store")
    p.add_argument("--schema", help="schema name or JSON file (folders only)")
    p.add_argument("--split", help="only this split (train, val, test)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--histogram", help="also write per-phase histograms to this PNG file")

    p = sub.add_parser("export", help="export a store to plain folders (PNG/TIFF + CSV)",
                       description="Write images, masks, a samples.csv (fractions, provenance) and schema.json.")
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("demo", help="run the whole pipeline on the bundled sample data",
                       description="Run the main job on the bundled UHCS sample micrograph and write every result "
                                   "into the output folder.")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    from .core.progress import Cancelled

    try:
        return _COMMANDS[args.command](args)
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
