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
DEFAULT_PAIRS = 8

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
    from .engines.training_set import load_split

    path = Path(args.path)
    progress, stop = _terminal(args, "reading")
    with stop.installed():
        samples = load_split(path, args.split, _schema_arg(args.schema), progress, stop)
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


@command("export-folders")
def _export_folders(args: argparse.Namespace) -> int:
    from .core.store import DatasetStore, export_folder

    store = DatasetStore.open(Path(args.store))
    progress, stop = _terminal(args, "exporting")
    with stop.installed():
        out = export_folder(store, Path(args.out), overwrite=args.overwrite, progress=progress, should_stop=stop)
    progress.close()
    print(f"exported {len(store)} samples to {out}")
    return EXIT_CANCELLED if stop() else 0


@command("export")
def _export(args: argparse.Namespace) -> int:
    from .engines.training_set import export_training_set

    ratio = args.ratio if args.ratio is not None else (1.0 if args.synthetic else 0.0)
    if ratio > 0 and not args.synthetic:
        raise ValueError(f"--ratio {ratio:g} needs synthetic pairs: pass --synthetic STORE (or --ratio 0: real only)")
    real = Path(args.real)
    splits = {}
    for role, name in (("train", args.train_split), ("val", args.val_split), ("test", args.test_split)):
        splits[role] = [] if name.lower() == "none" else _labelled(real, name, args.schema, args)
    source = f"{real} (train split {args.train_split!r}, val {args.val_split!r}, test {args.test_split!r})"
    progress, stop = _terminal(args, "exporting")
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


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from .engines.demo import run_demo

    progress, stop = _terminal(args, "demo")
    with stop.installed():
        summary = run_demo(Path(args.out), overwrite=args.overwrite, progress=progress, should_stop=stop)
    progress.close()
    print(summary)
    return EXIT_CANCELLED if stop() else 0


# ---------------------------------------------------------------- segmentation commands


def _segmentation_config(args: argparse.Namespace, plm: str):
    from .engines.segmentation import SegmentationConfig

    return SegmentationConfig(
        arch=args.arch, preset=args.preset, encoder=args.encoder, plm=plm, tile_size=args.tile,
        input_scale=args.input_scale, batch_size=args.batch_size, steps=args.steps, lr=args.lr,
        ratio_dropout=args.ratio_dropout, seed=args.seed, device=args.device,
    )


def _labelled(path: Path, split: str | None, schema_name: str | None, args) -> list:
    from .engines.training_set import load_split

    progress, stop = _terminal(args, f"reading {split or 'all'}")
    with stop.installed():
        samples = load_split(path, split, _schema_arg(schema_name), progress, stop)
    progress.close()
    samples = [s for s in samples if s.mask is not None]
    if not samples:
        raise ValueError(f"{path} has no labelled samples" + (f" in split {split!r}" if split else ""))
    return samples


@command("train-segmenter")
def _train_segmenter(args: argparse.Namespace) -> int:
    from .engines.evaluation import evaluate
    from .engines.segmentation import train_segmenter

    _set_threads(args)
    train = _labelled(Path(args.data), args.train_split, args.schema, args)
    config = _segmentation_config(args, args.plm)
    progress, stop = _terminal(args, "training")
    with stop.installed():
        result = train_segmenter(train, config, Path(args.out) / "work", progress, stop)
    progress.close()
    result.extra["data"] = f"{Path(args.data).name}: train split {args.train_split!r} ({len(train)} micrographs)"
    metrics = None
    if args.test_split:
        test = _labelled(Path(args.data), args.test_split, args.schema, args)
        metrics = evaluate(result.model, test, "true" if result.model.uses_ratio else None)
        metrics = {f"test ({args.test_split}, true ratio)" if result.model.uses_ratio else f"test ({args.test_split})":
                   {"miou": metrics["miou"], "accuracy": metrics["accuracy"], "mciou": metrics["mciou"]}}
    folder = result.save(Path(args.out) / "model", metrics=metrics)
    print(f"model folder written to {folder}")
    if metrics:
        print(metrics)
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from .engines.evaluation import run_comparison

    _set_threads(args)
    train = _labelled(Path(args.data), args.train_split, args.schema, args)
    test = _labelled(Path(args.data), args.test_split, args.schema, args)
    val = [] if args.val_split.lower() == "none" else _labelled(Path(args.data), args.val_split, args.schema, args)
    config = _segmentation_config(args, args.plm)
    progress, stop = _terminal(args, "baseline vs PLM")
    with stop.installed():
        data = (f"{Path(args.data).name}: train split {args.train_split!r} ({len(train)} micrographs), "
                f"test split {args.test_split!r} ({len(test)} whole micrographs)")
        result = run_comparison(train, test, config, seeds=args.seeds, out_dir=Path(args.out),
                                progress=progress, should_stop=stop, data_description=data,
                                trusts=[t for t in args.trust if t > 0], val_samples=val)
    progress.close()
    print(result.markdown_path.read_text())
    print(f"table: {result.csv_path}\nplot: {result.plot_path}")
    for folder in result.model_folders:
        print(f"model: {folder}")
    return 0


@command("segment")
def _segment(args: argparse.Namespace) -> int:
    from PIL import Image

    from .core.fractions import mask_fractions, parse_fractions
    from .core.io import image_shape, read_micrograph, write_mask
    from .engines.inference import predict_image, stored_temperature
    from .engines.reports import phase_overlay
    from .models.device import resolve_device
    from .models.segmenter import Segmenter

    _set_threads(args)
    folder = _model_folder(args.model)
    model = Segmenter.from_pretrained(folder, device=resolve_device(args.device))
    ratio = None
    if args.ratio:
        ratio, note = parse_fractions(args.ratio, model.schema.names)
        if note:
            print(f"note: {note}")
    if args.trust and ratio is None:
        raise ValueError("--trust needs --ratio (the fractions to correct the phase map towards)")
    band = {"auto": "auto", "none": None}.get(args.info_band.lower(), args.info_band)
    image, _ = read_micrograph(args.image, info_band=int(band) if isinstance(band, str) and band.isdigit() else band)
    rows = image_shape(args.image)[0]
    if image.shape[0] < rows:
        print(f"info band: bottom {rows - image.shape[0]} rows cropped, segmenting {image.shape[0]} of {rows} rows")
    progress, stop = _terminal(args, "segmenting")
    with stop.installed():
        labels, _ = predict_image(model, image, ratio=ratio, trust=args.trust,
                                  temperature=stored_temperature(folder), progress=progress, should_stop=stop)
    progress.close()
    write_mask(args.out, labels, model.schema)
    achieved = mask_fractions(labels, model.schema)
    for name, target, value in zip(model.schema.names, ratio if ratio is not None else [None] * len(achieved), achieved):
        print(f"{name:28s} " + ("" if target is None else f"target {100 * target:5.1f} %  ") + f"achieved {100 * value:5.1f} %")
    height, width = labels.shape
    print(f"phase map {width}x{height} px (class ids shown in the phase colours) written to {args.out}")
    if args.overlay:
        Image.fromarray(phase_overlay(image, labels, model.schema)).save(args.overlay)
        print(f"overlay with legend written to {args.overlay}")
    return 0


# ---------------------------------------------------------------- generator commands


@command("train-generator")
def _train_generator(args: argparse.Namespace) -> int:
    from .generators import get_generator

    _set_threads(args)
    cls = get_generator(args.name)
    samples = _labelled(Path(args.data), args.train_split, args.schema, args)
    out = Path(args.out)
    generator = cls(samples[0].schema, model=args.preset, device=args.device, seed=args.seed)
    config = cls.TrainConfig(**{
        **dict(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
               lr_warmup_steps=min(500, args.steps // 10), checkpoint_dir=str(out / "work"),
               checkpoint_every=args.checkpoint_every),
        **_config_settings(cls.TrainConfig, args.set or []),
    })
    progress, stop = _terminal(args, f"training {args.name}")
    with stop.installed():
        summary = generator.train(samples, config, progress, stop)
    progress.close()
    generator.save(out / "model")
    print(f"{args.name}: {summary['steps']} steps, final loss {summary['final_loss']:.4f}; "
          f"model folder written to {out / 'model'}")
    return 0


def _conditions(args: argparse.Namespace, schema, n: int | None):
    """Target fraction vectors from --fractions, --csv, or paper 000's boosted sampler over --boost-from data;
    ``n`` of them (None: one per CSV row, else DEFAULT_PAIRS)."""
    import numpy as np

    from .core.fractions import parse_fractions
    from .generators.base import conditions_from_csv

    given = [bool(args.fractions), bool(args.csv), bool(args.boost_from)]
    if sum(given) > 1:
        raise ValueError("give only one of --fractions, --csv and --boost-from")
    if n is not None and n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    if args.fractions:
        fractions, note = parse_fractions(args.fractions, schema.names)
        if note:
            print(f"note: {note}")
        return np.tile(fractions, (n or DEFAULT_PAIRS, 1))
    if args.csv:
        rows = conditions_from_csv(args.csv, schema)
        if n is not None and n > len(rows):
            raise ValueError(f"{args.csv} has {len(rows)} condition rows but -n asks for {n} pairs; "
                             "leave -n out to use every row")
        return rows[:n]
    if args.boost_from:
        from .engines.generator_evaluation import fraction_targets

        real = _labelled(Path(args.boost_from), args.split, None, args)
        return fraction_targets(real, n or DEFAULT_PAIRS, seed=args.seed)
    raise ValueError("say what to generate: --fractions 0.7,0.1,... , --csv FILE or --boost-from DATA")


def _config_settings(config_class, pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings as settings of the dataclass ``config_class``, each value parsed as its field's type."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(config_class)}
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}")
        default = fields[key].default
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {key}: expected true or false, got {value!r}")
            settings[key] = value.lower() in ("true", "1")
        elif isinstance(default, (int, float)):
            try:
                settings[key] = type(default)(value)
            except ValueError:
                raise ValueError(f"--set {key}: expected a number, got {value!r}") from None
        else:
            settings[key] = value
    return settings


@command("generate")
def _generate(args: argparse.Namespace) -> int:
    from .core.store import DatasetStore, is_store
    from .engines.generation import GenerateRun
    from .generators import load_generator

    _set_threads(args)
    generator = load_generator(_model_folder(args.model), device=args.device)
    conditions = _conditions(args, generator.schema, args.n)
    out = Path(args.out)
    store = DatasetStore.open(out, mode="a") if is_store(out) else DatasetStore.create(
        out, generator.schema, description=f"synthetic pairs from {generator.name}")
    # options left out keep the generator's own defaults (its best measured setting)
    given = {"sampler": args.sampler, "guidance_scale": args.guidance, "steps": args.steps or None,
             "fraction_control": args.fraction_control}
    options = {k: v for k, v in given.items() if v is not None and k in generator.sampling_defaults}
    run = GenerateRun.plan(generator, store, conditions, n=len(conditions), seed=args.seed, **options)
    if run.note:
        print(f"note: {run.note}")
    progress, stop = _terminal(args, f"generating with {generator.name}")
    with stop.installed():
        written = run.write(store, progress=progress, should_stop=stop)
    progress.close()
    resumed = f"; {run.done} of this run's {run.n} pairs were already there" if run.done else ""
    print(f"wrote {written} synthetic pairs to {out} ({len(store)} samples in the store{resumed})")
    return 0


def _agreement_segmenter(value: str | None, schema, device: str):
    """--segmenter: a model folder or bundled name, "none", or (not given) the bundled plm-uhcs-demo when it
    segments the data's phases."""
    from .engines.generator_evaluation import AgreementSegmenter
    from .models.folder import read_model_config

    if value == "none":
        return None
    folder = _model_folder(value or "plm-uhcs-demo")
    phases = tuple(p["name"] for p in read_model_config(folder)["schema"]["phases"])
    if value is None and phases != tuple(schema.names):
        print(f"note: no mask-image agreement column: the bundled {folder.name} segments {', '.join(phases)}, "
              f"not the data's phases; pass --segmenter MODEL trained on real {schema.name} data")
        return None
    return AgreementSegmenter.from_folder(folder, device=device)


@command("evaluate-generator")
def _evaluate_generator(args: argparse.Namespace) -> int:
    from .engines.generator_evaluation import evaluate_generator, sampling_settings
    from .generators import load_generator

    _set_threads(args)
    generator = load_generator(_model_folder(args.model), device=args.device)
    real = _labelled(Path(args.data), args.split, None, args)
    encoder = _labelled(Path(args.data), args.encoder_split, None, args)
    segmenter = _agreement_segmenter(args.segmenter, real[0].schema, args.device)
    settings = sampling_settings(generator, args.guidance, args.fraction_control)
    progress, stop = _terminal(args, "evaluating")
    with stop.installed():
        result = evaluate_generator(generator, real, encoder_samples=encoder, segmenter=segmenter, n=args.n,
                                    settings=settings, seed=args.seed, timing_n=args.timing_n,
                                    split_names={"scored": args.split, "encoder": args.encoder_split},
                                    progress=progress, should_stop=stop, sampler=args.sampler,
                                    batch_size=args.batch_size, min_region_px=args.min_region_px,
                                    **({"steps": args.steps} if args.steps else {}))
    progress.close()
    folder = result.write(Path(args.out))
    print((folder / "report.md").read_text())
    return 0


@command("augment-benchmark")
def _augment_benchmark(args: argparse.Namespace) -> int:
    from .engines.augment_benchmark import AugmentBenchmarkConfig, run_augment_benchmark
    from .engines.segmentation import SegmentationConfig
    from .generators import load_generator

    if bool(args.generator) == bool(args.synthetic):
        raise ValueError("give either --generator MODEL or --synthetic STORE")
    _set_threads(args)
    train = _labelled(Path(args.data), args.train_split, args.schema, args)
    test = _labelled(Path(args.data), args.test_split, args.schema, args)
    segmentation = SegmentationConfig(arch=args.arch, preset=args.preset, encoder=args.encoder, plm="baseline",
                                      tile_size=args.tile, input_scale=args.input_scale, batch_size=args.batch_size,
                                      steps=args.steps, lr=args.lr, scale_range=(1.0, 1.0), device=args.device)
    sampling = {"sampler": args.sampler, "guidance_scale": args.guidance, "batch_size": args.sampling_batch,
                "min_region_px": args.min_region_px}
    if args.sampling_steps:
        sampling["steps"] = args.sampling_steps
    config = AugmentBenchmarkConfig(ratios=tuple(args.ratios), seeds=tuple(args.seeds), segmentation=segmentation,
                                    sampling=sampling if args.generator else {}, pool_seed=args.pool_seed)
    generator = load_generator(_model_folder(args.generator), device=args.device) if args.generator else None
    data = (f"{Path(args.data).name}: train split {args.train_split!r} ({len(train)} micrographs), "
            f"test split {args.test_split!r} ({len(test)} whole micrographs)")
    progress, stop = _terminal(args, "augmentation benchmark")
    with stop.installed():
        result = run_augment_benchmark(train, test, Path(args.out), config, generator=generator,
                                       synthetic_store=args.synthetic, data_description=data,
                                       progress=progress, should_stop=stop)
    progress.close()
    print(result["report"].read_text())
    return 0


def _model_folder(value: str) -> Path:
    """A model folder path, or the name of a bundled model in resources/models."""
    from .resources import resources_dir

    path = Path(value)
    if path.is_dir():
        return path
    bundled = resources_dir() / "models" / value
    if bundled.is_dir():
        return bundled
    raise FileNotFoundError(f"no model folder {value!r} (neither a folder nor a bundled model)")


def _set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


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

    p = sub.add_parser("export-folders", help="export a store to plain folders (PNG/TIFF + CSV)",
                       description="Write images, masks, a samples.csv (fractions, provenance) and schema.json. "
                                   "An interrupted export is completed by running the command again.")
    p.add_argument("store")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a finished export in OUT")

    p = sub.add_parser("export", help="build an augmented training set: real tiles + synthetic pairs at a ratio",
                       description="Write OUT/dataset.zarr with split 'train' = non-overlapping tiles of the real "
                                   "training micrographs + the first accepted synthetic pairs of --synthetic "
                                   "(round(ratio x tiles), resampled to the real pixel size) and splits 'val' / "
                                   "'test' = whole real micrographs, plus class_balance.csv/.png, "
                                   "fraction_histograms.png and a dataset card README.md. Paper 000 (sec. 2.3) "
                                   "uses real-to-synthetic ratios 1:1, 1:2, 1:4, 1:6, 1:8, 1:10. An interrupted "
                                   "export resumes when run again with the same arguments.")
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

    def training_options(p):
        p.add_argument("data", help="dataset folder or store")
        p.add_argument("--schema", help="schema name or JSON file (generic folders)")
        p.add_argument("--train-split", default="train")
        p.add_argument("--test-split", default="test")
        p.add_argument("--arch", default="Unet", help="smp architecture: Unet, UnetPlusPlus, Linknet, MAnet, FPN, ...")
        p.add_argument("--preset", default="small", help="network size: tiny, small (CPU), base (GPU)")
        p.add_argument("--encoder", help="smp encoder name (overrides the preset's)")
        p.add_argument("--plm", default="RE+SA+FA", help="PLM setting: baseline, RE, SA, SA+FA, RE+SA, RE+SA+FA")
        p.add_argument("--tile", type=int, default=256, help="training/inference window in network pixels")
        p.add_argument("--input-scale", type=float, default=1.0,
                       help="resize micrographs by this factor for the network (0.5 = 4x less compute)")
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--steps", type=int, default=2000)
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--ratio-dropout", type=float, default=0.2,
                       help="share of tiles trained without a ratio (0 = paper 001 setting)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
        p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
        p.add_argument("--out", required=True, help="output folder (re-running resumes from its checkpoints)")

    p = sub.add_parser("train-segmenter", help="train a segmentation model (with or without the PLM)",
                       description="Train an smp segmenter, optionally with paper 001's Phase Learning Module, on "
                                   "the train split; write OUT/model (config.json, weights, model card). An "
                                   "interrupted training resumes when run again with the same OUT.")
    training_options(p)

    p = sub.add_parser("evaluate", help="baseline vs PLM on held-out micrographs, over ratio accuracy alpha",
                       description="Train a baseline and a PLM segmenter on the same split and seeds, evaluate on "
                                   "the held-out whole micrographs (sliding window, 50 % overlap) with the PLM "
                                   "given no ratio and expert-guess ratios of accuracy alpha in {0.3, 0.5, 0.66, "
                                   "0.9, 1.0} (paper 001, App. A.2), and both networks with the ratio correction "
                                   "towards each guess at each --trust (temperature fitted on --val-split); write "
                                   "alpha_sweep.csv/.md/.png.")
    training_options(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--val-split", default="val",
                   help="split the ratio correction's temperature is fitted on ('none': temperature 1)")
    p.add_argument("--trust", type=float, nargs="+", default=[0.5, 1.0], metavar="L",
                   help="trust levels of the 'baseline + correction' and 'PLM + correction' rows (0: none)")

    p = sub.add_parser("segment", help="segment one micrograph with a model folder",
                       description="Whole-micrograph phase map (sliding window, 50 % overlap) written as an "
                                   "indexed-colour PNG: pixel values are class ids, shown in the phase colours.")
    p.add_argument("image")
    p.add_argument("out", help="output PNG of class ids in the phase colours")
    p.add_argument("--overlay", metavar="PNG", help="also write the micrograph tinted by phase, with a legend")
    p.add_argument("--model", default="plm-uhcs-demo", help="model folder or bundled model name")
    p.add_argument("--ratio", help="comma-separated phase ratio, e.g. 0.7,0.1,0.15,0.05: a PLM model's input and "
                                   "the target of --trust")
    p.add_argument("--trust", type=float, default=0.0, metavar="L",
                   help="ratio correction in [0, 1]: 0 = the network alone (paper 001), 1 = the map takes the "
                        "--ratio fractions, in between that share of the way from the network's own fractions")
    p.add_argument("--info-band", default="auto", help="'auto', a row count, or 'none'")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)

    p = sub.add_parser("train-generator", help="train a generator (two-stage-gan, pf-diffseg, two-stage) on "
                                               "labelled micrographs",
                       description="Train a registered generator on random tiles of the labelled micrographs and "
                                   "write OUT/model. Re-running with the same OUT resumes from its checkpoints.")
    p.add_argument("name", help="generator name: two-stage-gan (best measured), pf-diffseg (paper 000), two-stage")
    p.add_argument("data", help="dataset folder or store")
    p.add_argument("--schema")
    p.add_argument("--train-split", default="train")
    p.add_argument("--preset", default="small", help="network size: tiny, small (CPU), paper or large (GPU; large for two-stage-gan)")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other training setting of the generator, e.g. translator_steps=5000 "
                        "(repeatable; an unknown key lists the known ones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True)

    def condition_options(p):
        p.add_argument("--fractions", help="one target for every pair, e.g. 0.6,0.2,0.15,0.05")
        p.add_argument("--csv", help="CSV of targets, one column per phase name")
        p.add_argument("--boost-from", metavar="DATA", help="draw targets from this data's tile fractions with "
                                                            "rare phases boosted (paper 000, sec. 2.2.2)")
        p.add_argument("--split", default=None, help="split of --boost-from / evaluation data")

    p = sub.add_parser("generate", help="generate micrograph + mask pairs into a dataset store",
                       description="Sample pairs from a generator model folder (or bundled name) and append "
                                   "them, with provenance, to a dataset store (created if missing). Running "
                                   "the same command again continues a stopped run without duplicates; "
                                   "another run into the same store never reuses a stored seed.")
    p.add_argument("model", help="generator model folder or bundled model name")
    p.add_argument("out", help="dataset store to write (appended to if it exists)")
    p.add_argument("-n", type=int, default=None,
                   help=f"number of pairs (default {DEFAULT_PAIRS}; with --csv one per row)")
    condition_options(p)
    p.add_argument("--sampler", default=None, choices=["ddim", "dpm++"],
                   help="default: the generator's (DPM-Solver++ for two-stage-gan, DDIM for the others)")
    p.add_argument("--steps", type=int, default=0, help="denoising steps (default: 50 DDIM, 20 DPM-Solver++)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 1 = none)")
    p.add_argument("--fraction-control", type=float, default=None, metavar="S",
                   help="strength of the sampling-time fraction control, 0 (off, paper 000) to 1 (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)

    p = sub.add_parser("evaluate-generator", help="fraction control, mask-image agreement, FD/KID, time per pair",
                       description="Generate pairs for paper 000's target mixture, one row per sampling setting "
                                   "(guidance scales, fraction control off/on), and report achieved vs target "
                                   "fractions (R^2, slope, r^2, MAE, scatter PNG), agreement of each generated mask "
                                   "with a real-data segmenter on its image (and that segmenter's ceiling on real "
                                   "tiles), Frechet distance / KID / precision-recall against half of the real "
                                   "tiles next to the other half (domain encoder trained on --encoder-split), and "
                                   "timing.")
    p.add_argument("model")
    p.add_argument("data", help="real labelled data (folder or store)")
    p.add_argument("--split", default="test", help="held-out split whose tiles are scored")
    p.add_argument("--encoder-split", default="train",
                   help="split the domain feature encoder is trained on (must not share a micrograph with --split)")
    p.add_argument("--segmenter", metavar="MODEL",
                   help="segmenter trained on real data only, for mask-image agreement: model folder, bundled name "
                        "or 'none' (default: the bundled plm-uhcs-demo when it has the data's phases)")
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0],
                   help="classifier-free guidance scales of the plain-sampling rows (1 = none, the paper's sampling)")
    p.add_argument("--fraction-control", type=float, nargs="+", default=[0.0, 1.0],
                   help="fraction-control strengths to compare, for generators that have the option: 0 = off "
                        "(one row per --guidance scale), others one row each with the generator's defaults")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "dpm++"])
    p.add_argument("--steps", type=int, default=0, help="denoising steps (default: 50 DDIM, 20 DPM-Solver++)")
    p.add_argument("--batch-size", type=int, default=16, help="pairs denoised together")
    p.add_argument("--min-region-px", type=int, default=0,
                   help="paper 002's mask clean-up after sampling: fill phase regions under this size (0 = off)")
    p.add_argument("--timing-n", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True)

    p = sub.add_parser("augment-benchmark", help="segmentation with real vs real + synthetic training data",
                       description="Paper 000's augmentation experiment: train the same plain segmenter on the "
                                   "real training tiles alone and with synthetic pairs at real:synthetic ratios "
                                   "1:r, score each on the held-out whole micrographs (sliding window), and write "
                                   "report.md, summary.csv, runs.csv and miou_vs_synthetic_volume.png. Re-running "
                                   "with the same OUT resumes.")
    p.add_argument("data", help="real labelled data (dataset folder or store)")
    p.add_argument("--generator", help="generator model folder or bundled name: a pool of pairs is generated")
    p.add_argument("--synthetic", help="dataset store of curated pairs (its accepted ones are used)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0, 1, 2, 4],
                   help="synthetic pairs per real tile; 0 = real only (paper: 1, 2, 4, 6, 8, 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--schema")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--arch", default="Unet")
    p.add_argument("--preset", default="small")
    p.add_argument("--encoder")
    p.add_argument("--tile", type=int, default=64, help="network window in pixels")
    p.add_argument("--input-scale", type=float, default=0.5,
                   help="network pixels per real pixel; the real tile is tile / input-scale pixels")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sampler", default="dpm++", choices=["ddim", "dpm++"])
    p.add_argument("--sampling-steps", type=int, default=0, help="denoising steps (default of the sampler)")
    p.add_argument("--sampling-batch", type=int, default=16)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--min-region-px", type=int, default=0,
                   help="paper 002's mask clean-up of the generated pairs (0 = off)")
    p.add_argument("--pool-seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True)

    p = sub.add_parser("demo", help="run the whole pipeline on the bundled sample data",
                       description="Run the main job on the bundled UHCS sample micrograph and write every result "
                                   "into the output folder.")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--overwrite", action="store_true")
    for p in sub.choices.values():  # -q also after the command; SUPPRESS keeps a -q given before it
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
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
