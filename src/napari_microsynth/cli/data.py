"""Data commands: check (and propose a schema), import, tile, describe fractions, curate, export; and the
whole-pipeline demo."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (EXIT_CANCELLED, add_device_options, command, labelled, model_folder, schema_arg,
                      set_threads, terminal)


def _describe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="dataset folder, .zarr store, training-set export folder, phase map or large TIFF")
    p.add_argument("--schema", help="schema name or JSON file (generic folders without schema.json)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any problem is found")
    p.add_argument("--full", action="store_true", help="stores: also read every image and mask (decoding, mask "
                                                       "values, class counts); without it only the structure "
                                                       "is checked")
    p.add_argument("--propose-schema", nargs="?", const="", metavar="JSON",
                   help="folders: inspect the masks (class ids, grey levels, colours, overlays, grain maps; file "
                        "names) and write a draft schema explaining each field to JSON (default FOLDER/schema.json) "
                        "for you to rename its phases; then summarise the folder with it")


@command("describe", "check a dataset folder or store and summarise it",
         ("Check a dataset folder (images/ + masks/) or a dataset store and print what it holds and any problem "
          "found (with --strict, problems give exit status 1; a folder where no micrograph has a mask always "
          "does). A store's structure is checked quickly; --full reads all its data. An unfinished store (an "
          "export in progress or interrupted) gives exit status 1. --propose-schema drafts the schema.json of a "
          "folder of your own."),
         _describe_arguments)
def _describe(args: argparse.Namespace) -> int:
    from ..core.large_image import describe_large
    from ..core.store import DatasetStore, has_store_metadata
    from ..engines.training_set import PLAN_FILE, STORE_NAME

    path = Path(args.path)
    large = describe_large(path)  # a phase map or a large TIFF, described without reading its pixels
    if large is not None:
        print(large[0])
        return 0 if large[1] else 1
    if (path / PLAN_FILE).is_file() and has_store_metadata(path / STORE_NAME):
        print(f"training-set export {path}: its store {STORE_NAME}")
        path = path / STORE_NAME
    if has_store_metadata(path):
        if args.propose_schema is not None:
            raise ValueError(f"{path} is a dataset store, which holds its schema; --propose-schema is for folders")
        store = DatasetStore.open(path, check_data=args.full)
        print(store.describe())
        return 1 if store.unfinished else 0
    from ..core.datasets import describe_dataset

    schema = _proposed_schema(path, args) if args.propose_schema is not None else schema_arg(args.schema)
    progress, stop = terminal(args, "reading")
    with stop.installed():
        report = describe_dataset(path, schema=schema, progress=progress, should_stop=stop)
    progress.close()
    print(report.as_text())
    return 1 if (report.n_labelled == 0 or args.strict and report.problems) else 0


def _proposed_schema(folder: Path, args: argparse.Namespace):
    """Write the draft schema of ``--propose-schema`` (never over an existing file) and return it."""
    from ..core.schema_draft import propose_schema

    if args.schema:
        raise ValueError("give either --schema or --propose-schema")
    target = Path(args.propose_schema) if args.propose_schema else folder / "schema.json"
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it to propose a new one, or name another file: "
                              "--propose-schema draft.json")
    progress, stop = terminal(args, "inspecting masks")
    with stop.installed():
        draft = propose_schema(folder, progress, stop)
    progress.close()
    draft.save(target)
    print(draft.as_text())
    use = "" if target == folder / "schema.json" else f" --schema {target}"
    print(f"draft schema written to {target}: rename its phases (and the schema), then run "
          f"'microsynth describe {folder}{use}' and 'microsynth import {folder} STORE{use}'\n")
    return draft.schema


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="dataset folder")
    p.add_argument("store", help="store to create (e.g. metaldam.zarr)")
    p.add_argument("--schema", help="bundled schema name (metaldam, uhcs, grains) or schema JSON file; "
                                    "default: recognised from the folder")
    p.add_argument("--tile", type=int, default=0, metavar="PX", help="store non-overlapping PXxPX tiles instead of "
                                                                     "whole micrographs (papers use 256)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")


@command("import", "import a dataset folder into a dataset store",
         ("Read every image/mask pair of a folder (MetalDAM, UHCS, grain-map or generic images/ + masks/ layout; "
          "the masks read as its schema.json says) and write them, with every split of its split files (a "
          "micrograph may be in several), into a new store. Micrographs without a mask are left out."),
         _import_arguments)
def _import(args: argparse.Namespace) -> int:
    from ..core.datasets import NO_MASKS, available_splits, load_dataset, read_split
    from ..core.store import DatasetStore, removed_if_left_empty
    from ..core.tiles import tile_samples

    folder, out = Path(args.folder), Path(args.store)
    schema = schema_arg(args.schema)
    progress, stop = terminal(args, "reading")
    with stop.installed():
        read = load_dataset(folder, schema=schema, progress=progress, should_stop=stop)
    progress.close()
    samples = [s for s in read if s.mask is not None]
    if not samples:
        raise ValueError(f"{folder}: {NO_MASKS}")
    if len(samples) < len(read):
        unlabelled = [s.name for s in read if s.mask is None]
        print(f"note: {len(unlabelled)} micrographs without a mask are left out: {', '.join(unlabelled[:5])}"
              + (" ..." if len(unlabelled) > 5 else ""))
    if args.tile and not any(min(s.shape) >= args.tile for s in samples):
        raise ValueError(f"--tile {args.tile} is larger than every micrograph of {folder} (largest "
                         f"{max(max(s.shape) for s in samples)} px); choose a smaller tile or leave --tile out")
    splits_of: dict[str, list[str]] = {}
    for split in available_splits(folder):
        for name in read_split(folder, split):
            splits_of.setdefault(name, []).append(split)
    progress, stop = terminal(args, "writing")
    n_written = 0
    with removed_if_left_empty(out), stop.installed():
        store = DatasetStore.create(out, samples[0].schema, description=f"imported from {folder}",
                                    overwrite=args.overwrite)
        for i, sample in enumerate(samples):
            if stop():
                break
            pieces = tile_samples(sample, args.tile) if args.tile else [sample]
            for piece in pieces:
                store.append(piece, split=splits_of.get(sample.name))
                n_written += 1
            progress(i + 1, len(samples), sample.name)
    progress.close()
    print(f"wrote {n_written} samples from {len(samples)} micrographs to {out}")
    for split, indices in store.splits.items():
        print(f"  split {split}: {len(indices)} samples")
    return EXIT_CANCELLED if stop() else 0


def _tile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--overwrite", action="store_true")


@command("tile", "cut the samples of a store into non-overlapping tiles",
         ("Cut every sample of a store into non-overlapping square tiles (the papers train on 256x256) and write "
          "them to a new store, keeping splits and provenance."),
         _tile_arguments)
def _tile(args: argparse.Namespace) -> int:
    from ..core.store import DatasetStore, removed_if_left_empty
    from ..core.tiles import tile_samples

    source = DatasetStore.open(Path(args.store))
    splits_of: dict[int, list[str]] = {}
    for name, indices in source.splits.items():
        for i in indices:
            splits_of.setdefault(i, []).append(name)
    progress, stop = terminal(args, "tiling")
    n = 0
    with removed_if_left_empty(args.out), stop.installed():
        out = DatasetStore.create(Path(args.out), source.schema, description=f"{args.size}px tiles of {args.store}",
                                  overwrite=args.overwrite)
        for i in range(len(source)):
            if stop():
                break
            for tile in tile_samples(source[i], args.size):
                out.append(tile, split=splits_of.get(i))
                n += 1
            progress(i + 1, len(source), "")
        if not n and not stop():
            raise ValueError(f"--size {args.size} is larger than every sample of {args.store}: no tile written")
    progress.close()
    print(f"wrote {n} tiles of {args.size}x{args.size} to {args.out}")
    return EXIT_CANCELLED if stop() else 0


def _fractions_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="dataset folder, store, or a phase map segmented block by block")
    p.add_argument("--schema", help="schema name or JSON file (folders only)")
    p.add_argument("--split", help="only this split (train, val, test)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--histogram", help="also write per-phase histograms to this PNG file")


@command("fractions", "report phase fractions (table, CSV, histogram PNG)",
         "Print the area fraction of every phase per sample and on average.",
         _fractions_arguments)
def _fractions(args: argparse.Namespace) -> int:
    from ..core.datasets import split_fractions
    from ..core.large_image import is_phase_map, phase_map_fractions
    from ..engines.reports import format_fraction_table, plot_fraction_histograms, write_fraction_csv

    path = Path(args.path)
    progress, stop = terminal(args, "reading")
    with stop.installed():  # a phase map segmented block by block: from its stored block counts
        names, fractions, schema = (phase_map_fractions(path) if is_phase_map(path) else
                                    split_fractions(path, args.split, schema_arg(args.schema), progress, stop))
    progress.close()
    if not names:
        raise ValueError(f"{path} holds no labelled samples" + (f" in split {args.split!r}" if args.split else ""))
    print(format_fraction_table(names, fractions, schema))
    if args.csv:
        print(f"table written to {write_fraction_csv(args.csv, names, fractions, schema)}")
    if args.histogram:
        print(f"histograms written to {plot_fraction_histograms(args.histogram, fractions, schema, title=path.name)}")
    return 0


def _curate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="dataset store of generated pairs (e.g. written by 'generate')")
    p.add_argument("--reject-smaller-than", type=int, metavar="PX",
                   help="reject pairs in which a phase that is present covers fewer than PX pixels")
    p.add_argument("--accept-within", type=float, metavar="POINTS",
                   help="accept pairs whose mask is within POINTS percentage points of its target fractions in "
                        "every phase")
    p.add_argument("--agreement", type=float, metavar="MIOU",
                   help="accept pending pairs whose mask a segmenter trained on real data agrees with (mIoU between "
                        "its phase map of the pair's image and the pair's mask) at least MIOU (0..1), reject the rest")
    p.add_argument("--segmenter", metavar="MODEL",
                   help="segmenter model folder or bundled name for --agreement (default: the bundled plm-uhcs-demo, "
                        "UHCS phases only)")
    p.add_argument("--accept-all", action="store_true", help="accept every pair still pending after the rules above")
    add_device_options(p)


@command("curate", "accept or reject generated pairs by rule",
         ("Apply the Curation widget's batch rules to the pending pairs of a store, in this order: reject pairs "
          "with a too small phase, accept pairs close to their target fractions, accept or reject by agreement "
          "with a real-data segmenter, accept all the rest. Each status records the rule that set it. Pairs "
          "already accepted, rejected or flagged keep their status. Only accepted pairs are exported."),
         _curate_arguments)
def _curate(args: argparse.Namespace) -> int:
    from collections import Counter

    from ..core.curation import accept_all, accept_within, reject_small_phases
    from ..core.store import DatasetStore

    if (args.reject_smaller_than is None and args.accept_within is None and args.agreement is None
            and not args.accept_all):
        raise ValueError("say which rule to apply: --reject-smaller-than PX, --accept-within POINTS, "
                         "--agreement MIOU, --accept-all")
    if args.segmenter and args.agreement is None:
        raise ValueError("--segmenter is the model of the --agreement rule; give --agreement MIOU too")
    if args.agreement is not None and not 0 <= args.agreement <= 1:
        raise ValueError(f"--agreement is an mIoU in 0..1, got {args.agreement:g}")
    if args.reject_smaller_than is not None and args.reject_smaller_than < 0:
        raise ValueError(f"--reject-smaller-than must be 0 or more pixels, got {args.reject_smaller_than}")
    if args.accept_within is not None and not 0 <= args.accept_within <= 100:
        raise ValueError(f"--accept-within must be 0..100 percentage points, got {args.accept_within:g}")
    with DatasetStore.open(Path(args.store), mode="a") as store:
        if args.reject_smaller_than is not None:
            changed = reject_small_phases(store, args.reject_smaller_than)
            print(f"rejected {len(changed)} pairs with a phase under {args.reject_smaller_than} px")
        if args.accept_within is not None:
            changed = accept_within(store, args.accept_within / 100)
            print(f"accepted {len(changed)} pairs within {args.accept_within:g} points of their target fractions")
        if args.agreement is not None:
            _curate_by_agreement(store, args)
        if args.accept_all:
            print(f"accepted the {len(accept_all(store))} other pending pairs")
        states = Counter(store.statuses())
    print(f"{args.store}: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))
    return 0


def _curate_by_agreement(store, args: argparse.Namespace) -> None:
    """The --agreement rule with the --segmenter model (default: the bundled UHCS demo model)."""
    import numpy as np

    from ..engines.agreement import accept_agreeing
    from ..models.segmenter import Segmenter

    set_threads(args)
    folder = model_folder(args.segmenter or "plm-uhcs-demo")
    segmenter = Segmenter.load(folder, device=args.device)
    progress, stop = terminal(args, "agreement")
    with stop.installed():
        result = accept_agreeing(store, segmenter, args.agreement, folder.name, progress, stop)
    progress.close()
    scores = np.array(list(result.scores.values()))
    spread = f" (agreement {scores.min():.2f}..{scores.max():.2f}, median {np.median(scores):.2f})" if scores.size else ""
    print(f"agreement with {folder.name} >= {args.agreement:g}: accepted {len(result.accepted)}, rejected "
          f"{len(result.rejected)} of {len(result.scores)} pending pairs{spread}")


def _export_folders_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a finished export in OUT")


@command("export-folders", "export a store to plain folders (PNG/TIFF + CSV)",
         ("Write images, masks, a samples.csv (fractions, provenance) and schema.json. An interrupted export is "
          "completed by running the command again."),
         _export_folders_arguments)
def _export_folders(args: argparse.Namespace) -> int:
    from ..core.folder_export import export_folder
    from ..core.store import DatasetStore

    store = DatasetStore.open(Path(args.store))
    progress, stop = terminal(args, "exporting")
    with stop.installed():
        out = export_folder(store, Path(args.out), overwrite=args.overwrite, progress=progress, should_stop=stop)
    progress.close()
    print(f"exported {len(store)} samples to {out}")
    return EXIT_CANCELLED if stop() else 0


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("real", help="real labelled data: dataset folder or store")
    p.add_argument("--synthetic", metavar="STORE", help="store with curated synthetic pairs (its accepted ones are "
                                                        "used, in store order); omit for real only")
    p.add_argument("--ratio", type=float, default=None, metavar="R",
                   help="synthetic pairs per real tile, 1:R (default 1 with --synthetic, 0 without)")
    p.add_argument("--tile", type=int, default=256, help="real training tile size in pixels")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val", help="held-out validation split ('none' to leave out)")
    p.add_argument("--test-split", default="test", help="held-out test split ('none' to leave out)")
    p.add_argument("--schema", help="schema name or JSON file (generic folders)")
    p.add_argument("--description", default="", help="free text for the dataset card")
    p.add_argument("--folders", action="store_true", help="also write OUT/folders (PNG images, masks, samples.csv)")
    p.add_argument("--overwrite", action="store_true", help="start over, replacing an earlier export in OUT")
    p.add_argument("--out", required=True, help="output folder")


@command("export", "build an augmented training set: real tiles + synthetic pairs at a ratio",
         ("Write OUT/dataset.zarr with split 'train' = non-overlapping tiles of the real training micrographs + "
          "the first accepted synthetic pairs of --synthetic (round(ratio x tiles), resampled to the real pixel "
          "size) and splits 'val' / 'test' = whole real micrographs, plus class_balance.csv/.png, "
          "fraction_histograms.png and a dataset card README.md. Paper 000 (sec. 2.3) uses real-to-synthetic "
          "ratios 1:1, 1:2, 1:4, 1:6, 1:8, 1:10. An interrupted export resumes when run again with the same "
          "arguments."),
         _export_arguments)
def _export(args: argparse.Namespace) -> int:
    from ..engines.training_set import export_training_set

    ratio = args.ratio if args.ratio is not None else (1.0 if args.synthetic else 0.0)
    if ratio > 0 and not args.synthetic:
        raise ValueError(f"--ratio {ratio:g} needs synthetic pairs: pass --synthetic STORE (or --ratio 0: real only)")
    real = Path(args.real)
    splits = {}
    for role, name in (("train", args.train_split), ("val", args.val_split), ("test", args.test_split)):
        splits[role] = [] if name.lower() == "none" else labelled(real, name, args.schema, args)
    source = f"{real} (train split {args.train_split!r}, val {args.val_split!r}, test {args.test_split!r})"
    progress, stop = terminal(args, "exporting")
    with stop.installed():
        summary = export_training_set(
            Path(args.out), splits["train"], splits["val"], splits["test"],
            synthetic=Path(args.synthetic) if args.synthetic else None, ratio=ratio, tile=args.tile,
            description=args.description, source=source, folders=args.folders, overwrite=args.overwrite,
            progress=progress, should_stop=stop,
        )
    progress.close()
    print(summary.as_text())
    print(f"dataset card: {summary.files['card']}")
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_output")
    p.add_argument("--overwrite", action="store_true")


@command("demo", "run the whole pipeline on the bundled sample data",
         ("Run the main job on the bundled UHCS sample micrograph and write every result into the output "
          "folder."),
         _demo_arguments)
def _demo(args: argparse.Namespace) -> int:
    from ..engines.demo import run_demo

    progress, stop = terminal(args, "demo")
    with stop.installed():
        summary = run_demo(Path(args.out), overwrite=args.overwrite, progress=progress, should_stop=stop)
    progress.close()
    print(summary)
    return EXIT_CANCELLED if stop() else 0
