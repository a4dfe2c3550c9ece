"""Generator commands: train a family, generate pairs into a store, evaluate a generator, and the
augmentation benchmark.

Their generator options are not listed here: each family declares its training and sampling options and
the flags are built from them once the command line names the family (``microsynth train-generator NAME
--help``, ``microsynth generate MODEL OUT --help``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_data_options, add_device_options, command, labelled, model_folder, set_threads, terminal
from ._options import add_option_flags, given_options, option_values, with_defaults

DEFAULT_PAIRS = 8
#: older, shorter flags of some options, kept working where the command has no other use for them
ALIASES = {"learning_rate": ("--lr",), "guidance_scale": ("--guidance",)}


def _family_of_folder(value: str | None) -> type | None:
    from ..generators import generator_class

    return None if value is None else generator_class(model_folder(value))


# ---------------------------------------------------------------- train-generator

#: where train-generator's defaults differ from the family's (and OUT/work holds the checkpoints)
TRAIN_DEFAULTS = {"checkpoint_every": 500, "lr_warmup_steps": None}
TRAIN_NOTES = {"lr_warmup_steps": " (auto: a tenth of the steps, at most 500)",
               "checkpoint_dir": " (auto here: OUT/work)", "seed": "; here also of the initial weights"}


def _train_generator_arguments(p: argparse.ArgumentParser) -> None:
    from ..generators import available_generators

    p.add_argument("name", help=f"generator family: {', '.join(available_generators())}; "
                                "'train-generator NAME --help' lists its training options")
    add_data_options(p, ("train", "train"))
    p.add_argument("--preset", default="small", help="network size: tiny, small (CPU), paper or large (GPU; "
                                                     "large for two-stage-gan); 'NAME --help' lists the family's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any training setting of the family, e.g. translator_steps=5000 (repeatable; an unknown "
                        "key lists the known ones)")
    add_device_options(p)
    p.add_argument("--out", required=True, help="output folder: OUT/model, checkpoints in OUT/work")


def _train_generator_flags(p: argparse.ArgumentParser, cls: type) -> None:
    add_option_flags(p, with_defaults(cls.training_options(), TRAIN_DEFAULTS, TRAIN_NOTES),
                     f"{cls.name} training options (presets: {', '.join(cls.presets)})", ALIASES)


def _training_values(cls: type, args: argparse.Namespace) -> dict:
    """The family's training settings from the flags and ``--set`` over the command's defaults."""
    from ..core.options import parse_settings

    options = cls.training_options()
    values = option_values(args, options, {**TRAIN_DEFAULTS, "checkpoint_dir": str(Path(args.out) / "work")})
    try:
        values.update(parse_settings(cls.TrainConfig, args.set))
    except ValueError as exc:
        raise ValueError(f"--set {exc}") from None
    if values.get("lr_warmup_steps", 0) is None:
        steps = values.get("steps", next(o.default for o in options if o.name == "steps"))
        values["lr_warmup_steps"] = min(500, steps // 10)
    return values


@command("train-generator", "train a generator (two-stage-gan, pf-diffseg, two-stage) on labelled micrographs",
         ("Train a registered generator family on random tiles of the labelled micrographs and write OUT/model. "
          "Re-running with the same OUT resumes from its checkpoints."),
         _train_generator_arguments,
         family=lambda known: None if known.name is None else _family(known.name),
         family_flags=_train_generator_flags)
def _train_generator(args: argparse.Namespace) -> int:
    set_threads(args)
    cls = _family(args.name)
    values = _training_values(cls, args)
    config = cls.training_config(**values)
    samples = labelled(Path(args.data), args.train_split, args.schema, args)
    generator = cls(samples[0].schema, args.preset, args.device, values.get("seed", 0))
    out = Path(args.out)
    progress, stop = terminal(args, f"training {args.name}")
    with stop.installed():
        summary = generator.train(samples, config, progress, stop)
    progress.close()
    generator.save(out / "model")
    print(f"{args.name}: {summary['steps']} steps, final loss {summary['final_loss']:.4f}; "
          f"model folder written to {out / 'model'}")
    return 0


def _family(name: str) -> type:
    from ..generators import get_generator

    return get_generator(name)


# ---------------------------------------------------------------- generate


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="generator model folder or bundled model name; 'generate MODEL OUT --help' lists "
                                 "its sampling options")
    p.add_argument("out", help="dataset store to write (appended to if it exists)")
    p.add_argument("-n", type=int, default=None,
                   help=f"number of pairs (default {DEFAULT_PAIRS}; with --csv one per row)")
    _condition_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the first pair (pair i gets seed + i)")
    p.add_argument("--upscale", metavar="SR_MODEL",
                   help="super-resolution model folder: every pair is doubled in size before it is stored "
                        "(paper 000's pipeline, 128 -> 256 px)")
    p.add_argument("--upscale-steps", type=int, default=None, metavar="N",
                   help="denoising steps of the super-resolution (default: its sampler's)")
    add_device_options(p)


def _upscaler(args: argparse.Namespace):
    """The super-resolution model of ``--upscale`` (None without it)."""
    if not args.upscale:
        return None
    from ..generators.super_resolution import SuperResolution

    return SuperResolution.load(model_folder(args.upscale), device=args.device)


def _condition_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fractions", help="one target for every pair, e.g. 0.6,0.2,0.15,0.05")
    p.add_argument("--csv", help="CSV of targets, one column per phase name (or per property of a property-conditioned "
                                 "generator, which without --csv or --boost-from draws plausible conditions itself)")
    p.add_argument("--boost-from", metavar="DATA", help="draw targets from this data's tile fractions with "
                                                        "rare phases boosted (paper 000, sec. 2.2.2)")
    p.add_argument("--split", default=None, help="split of --boost-from data")
    p.add_argument("--boost-level", action="append", default=[], metavar="PHASE=LEVEL",
                   help="with --boost-from: the mean fraction of PHASE over the targets, e.g. defect=0.1 or "
                        "'martensite/austenite=20%%' (repeatable; not given: the paper's plain oversampling)")
    p.add_argument("--boost-share", action="append", default=[], metavar="PHASE=SHARE",
                   help="with --boost-from: the share of the targets drawn from PHASE's boosting mode, e.g. "
                        "defect=0.3 (0 turns it off; the data mode keeps the rest; default: the paper's 70/20/10)")


def _sampling_flags(p: argparse.ArgumentParser, cls: type) -> None:
    add_option_flags(p, cls.sampling_options(), f"{cls.name} sampling options (not given: the family's defaults)",
                     ALIASES)


def _conditions(args: argparse.Namespace, generator, n: int | None):
    """Target fraction vectors from --fractions, --csv, or paper 000's boosted sampler over --boost-from data
    (for a property-conditioned generator: property values inside the data's convex hull, paper 004, and
    without any of these its own plausible conditions); ``n`` of them (None: one per CSV row, else
    DEFAULT_PAIRS)."""
    import numpy as np

    from ..core.fractions import parse_fractions
    from ..generators.base import conditions_from_csv

    given = [bool(args.fractions), bool(args.csv), bool(args.boost_from)]
    if sum(given) > 1:
        raise ValueError("give only one of --fractions, --csv and --boost-from")
    boost_flags = [flag for flag, value in (("--boost-level", args.boost_level), ("--boost-share", args.boost_share))
                   if value]
    if boost_flags and not args.boost_from:
        raise ValueError(f"{' and '.join(boost_flags)} set how targets drawn from data are boosted: "
                         "give the data with --boost-from DATA")
    if n is not None and n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    if args.fractions:
        fractions, note = parse_fractions(args.fractions, generator.schema.names)
        if note:
            print(f"note: {note}")
        return np.tile(fractions, (n or DEFAULT_PAIRS, 1))
    if args.csv:
        rows = conditions_from_csv(args.csv, generator.condition_spec)
        if n is not None and n > len(rows):
            raise ValueError(f"{args.csv} has {len(rows)} condition rows but -n asks for {n} pairs; "
                             "leave -n out to use every row")
        return rows[:n]
    if args.boost_from:
        spec = generator.condition_spec
        if spec.kind == "properties" and boost_flags:
            raise ValueError(f"{' and '.join(boost_flags)} boost phase fractions, but {generator.name} is "
                             "conditioned on properties")
        if spec.kind == "properties":
            from ..generators.base import plausible_conditions

            real = labelled(Path(args.boost_from), args.split, None, args)
            return plausible_conditions(spec, real, n or DEFAULT_PAIRS, seed=args.seed)
        return _boosted_targets(args, generator.schema, n or DEFAULT_PAIRS)
    if generator.condition_spec.kind == "properties":  # where the model was trained (tim3: Algorithm 1)
        return generator.plausible_conditions(n or DEFAULT_PAIRS, seed=args.seed)
    raise ValueError("say what to generate: --fractions 0.7,0.1,... , --csv FILE or --boost-from DATA")


def targets_plot_path(out: Path) -> Path:
    """Where ``generate --boost-from`` puts its target histogram: beside the output store."""
    return out.with_name(f"{out.stem}_targets.png")


def _boosted_targets(args: argparse.Namespace, schema, n: int):
    """Paper 000's boosted fraction targets over the --boost-from data's tiles, with --boost-level and
    --boost-share; prints the modes and the per-phase mean target fraction, and writes the target histogram
    beside the output store."""
    import numpy as np

    from ..core.conditions import (
        default_shares,
        parse_boost_levels,
        parse_boost_shares,
        target_sampler,
        tile_fractions,
        with_boost_shares,
    )
    from ..engines.reports import format_target_summary, plot_target_histogram, target_summary_rows

    levels = parse_boost_levels(args.boost_level, schema)
    share_changes = parse_boost_shares(args.boost_share, schema)
    real_samples = labelled(Path(args.boost_from), args.split, None, args)
    if tuple(real_samples[0].schema.names) != tuple(schema.names):
        raise ValueError(f"--boost-from {args.boost_from} has the phases {', '.join(real_samples[0].schema.names)}; "
                         f"the generator makes {', '.join(schema.names)}")
    real = tile_fractions(real_samples)
    shares = with_boost_shares(default_shares(schema, real), share_changes)
    sampler = target_sampler(real, schema, shares, levels)
    targets = sampler.sample(n, np.random.default_rng(args.seed))
    modes = []
    for mode, given, used in zip(sampler.modes, sampler.given_shares, sampler.shares):
        grown = f", grown from {100 * given:.0f} % to reach its level" if used > given + 1e-9 else ""
        level = "" if mode.level is None else f" (level {100 * mode.level:g} %{grown})"
        modes.append(f"{mode.label} {100 * used:.1f} %{level}")
    print(f"targets from {len(real)} real tiles of {Path(args.boost_from).name}: " + ", ".join(modes))
    rows = target_summary_rows(targets, real, schema, levels, sampler.expected_mean())
    print(format_target_summary(rows, len(real), len(targets)))
    path = plot_target_histogram(targets, real, schema, targets_plot_path(Path(args.out)), levels)
    print(f"target histogram: {path}")
    return targets


@command("generate", "generate micrograph + mask pairs into a dataset store",
         ("Sample pairs from a generator model folder (or bundled name) and append them, with provenance, to a "
          "dataset store (created if missing). Running the same command again continues a stopped run without "
          "duplicates; another run into the same store never reuses a stored seed."),
         _generate_arguments,
         family=lambda known: _family_of_folder(known.model),
         family_flags=_sampling_flags)
def _generate(args: argparse.Namespace) -> int:
    from ..core.store import removed_if_left_empty
    from ..engines.generation import GenerateRun, open_output_store
    from ..generators import load_generator

    set_threads(args)
    generator = load_generator(model_folder(args.model), device=args.device)
    options = given_options(args, generator.sampling_options())  # the others keep the family's defaults
    conditions = _conditions(args, generator, args.n)
    upscaler = _upscaler(args)
    out = Path(args.out)
    progress, stop = terminal(args, f"generating with {generator.name}")
    with removed_if_left_empty(out), stop.installed():
        store = open_output_store(out, generator.schema, description=f"synthetic pairs from {generator.name}")
        run = GenerateRun.plan(generator, store, conditions, n=len(conditions), seed=args.seed,
                               upscaler=upscaler, upscale_steps=args.upscale_steps, **options)
        if run.note:
            print(f"note: {run.note}")
        written = run.write(store, progress=progress, should_stop=stop)
    progress.close()
    resumed = f"; {run.done} of this run's {run.n} pairs were already there" if run.done else ""
    print(f"wrote {written} synthetic pairs to {out} ({len(store)} samples in the store{resumed})")
    return 0


# ---------------------------------------------------------------- evaluate-generator

#: options that make the rows of an evaluation (--guidance, --fraction-control), not one setting for all
ROW_OPTIONS = ("guidance_scale", "fraction_control")
EVALUATION_DEFAULTS = {"batch_size": 16}


def _evaluate_generator_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="generator model folder or bundled name; 'evaluate-generator MODEL DATA --help' "
                                 "lists its sampling options")
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
    p.add_argument("--timing-n", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    add_device_options(p)
    p.add_argument("--out", required=True)


def _evaluation_options(cls: type) -> list:
    return [o for o in cls.sampling_options() if o.name not in ROW_OPTIONS]


def _evaluate_generator_flags(p: argparse.ArgumentParser, cls: type) -> None:
    add_option_flags(p, with_defaults(_evaluation_options(cls), EVALUATION_DEFAULTS),
                     f"{cls.name} sampling options of every row")


def _agreement_segmenter(value: str | None, schema, device: str):
    """--segmenter: a model folder or bundled name, "none", or (not given) the bundled plm-uhcs-demo when it
    segments the data's phases."""
    from ..engines.generator_evaluation import AgreementSegmenter
    from ..models.folder import read_model_config

    if value == "none":
        return None
    folder = model_folder(value or "plm-uhcs-demo")
    phases = tuple(p["name"] for p in read_model_config(folder)["schema"]["phases"])
    if value is None and phases != tuple(schema.names):
        print(f"note: no mask-image agreement column: the bundled {folder.name} segments {', '.join(phases)}, "
              f"not the data's phases; pass --segmenter MODEL trained on real {schema.name} data")
        return None
    return AgreementSegmenter.from_folder(folder, device=device)


@command("evaluate-generator", "fraction control, mask-image agreement, FD/KID, time per pair",
         ("Generate pairs for paper 000's target mixture, one row per sampling setting (guidance scales, fraction "
          "control off/on), and report achieved vs target fractions (R^2, slope, r^2, MAE, scatter PNG), "
          "agreement of each generated mask with a real-data segmenter on its image (and that segmenter's "
          "ceiling on real tiles), Frechet distance / KID / precision-recall against half of the real tiles next "
          "to the other half (domain encoder trained on --encoder-split), and timing."),
         _evaluate_generator_arguments,
         family=lambda known: _family_of_folder(known.model),
         family_flags=_evaluate_generator_flags)
def _evaluate_generator(args: argparse.Namespace) -> int:
    from ..engines.generator_evaluation import evaluate_generator, sampling_settings
    from ..generators import load_generator

    set_threads(args)
    generator = load_generator(model_folder(args.model), device=args.device)
    sampling = option_values(args, _evaluation_options(type(generator)), EVALUATION_DEFAULTS)
    real = labelled(Path(args.data), args.split, None, args)
    encoder = labelled(Path(args.data), args.encoder_split, None, args)
    if generator.condition_spec.kind == "properties":
        return _evaluate_property_generator(args, generator, real, encoder, sampling)
    segmenter = _agreement_segmenter(args.segmenter, real[0].schema, args.device)
    settings = sampling_settings(generator, args.guidance, args.fraction_control)
    progress, stop = terminal(args, "evaluating")
    with stop.installed():
        result = evaluate_generator(generator, real, encoder_samples=encoder, segmenter=segmenter, n=args.n,
                                    settings=settings, seed=args.seed, timing_n=args.timing_n,
                                    split_names={"scored": args.split, "encoder": args.encoder_split},
                                    progress=progress, should_stop=stop, **sampling)
    progress.close()
    folder = result.write(Path(args.out))
    print((folder / "report.md").read_text())
    return 0


def _evaluate_property_generator(args: argparse.Namespace, generator, real: list, train: list, sampling: dict) -> int:
    """evaluate-generator for a generator conditioned on properties (paper 004): property accuracy Acc_0.1/0.2/0.3
    and mAcc of a regressor trained on --encoder-split, and FD/KID, for -n conditions drawn by Algorithm 1."""
    from ..engines.property_accuracy import coder_from_spec, evaluate_property_generators
    from ..models.property_encoder import conditions_of

    if not any(c is not None for c in conditions_of(train, coder_from_spec(generator.condition_spec))):
        names = ", ".join(p.name for p in generator.condition_spec.properties)
        raise ValueError(
            f"the {args.encoder_split!r} micrographs of {args.data} do not record {names} (the conditions of "
            f"{generator.name}), so no regressor can learn them and property accuracy cannot be measured here; "
            "a generator conditioned on simulator settings (phasefield-cyclegan) is measured by 'microsynth "
            "sim2real-benchmark' (paper 003's experiment) and by 'microsynth grain-stats PAIRS.zarr DATA' on its pairs")
    progress, stop = terminal(args, "evaluating")
    with stop.installed():
        result = evaluate_property_generators({generator.name: generator}, train, real, n=args.n, seed=args.seed,
                                              progress=progress, should_stop=stop, **sampling)
    progress.close()
    folder = result.write(Path(args.out))
    print((folder / "report.md").read_text())
    return 0


# ---------------------------------------------------------------- augment-benchmark

POOL_DEFAULTS = {"batch_size": 16}
POOL_ALIASES = {**ALIASES, "batch_size": ("--sampling-batch",)}


def _augment_benchmark_arguments(p: argparse.ArgumentParser) -> None:
    add_data_options(p, ("train", "train"), ("val", "val"), ("test", "test"))
    p.add_argument("--generator", help="generator model folder or bundled name: a pool of pairs is generated "
                                       "('--generator MODEL --help' lists its sampling options)")
    p.add_argument("--synthetic", help="dataset store of curated pairs (its accepted ones are used)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0, 1, 2, 4, 8],
                   help="synthetic pairs per real tile; 0 = real only (paper: 1, 2, 4, 6, 8, 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", default="real-batch", choices=["real-batch", "fixed-epochs", "fixed-steps"],
                   help="real-batch: synthetic tiles on top of each full real batch; fixed-epochs: steps scale with "
                        "the data; both keep real-tile visits equal. fixed-steps: the earlier protocol, where "
                        "synthetic tiles displace real ones")
    p.add_argument("--synthetic-per-batch", type=int, default=4, metavar="K",
                   help="synthetic tiles added to each batch with --budget real-batch")
    p.add_argument("--synthetic-weight", type=float, default=1.0, metavar="W",
                   help="loss weight of a synthetic tile (a real one: 1)")
    p.add_argument("--agreement", type=float, default=0.0, metavar="MIOU",
                   help="also train on only the pool pairs the real-only model agrees with at this mIoU (0: no)")
    p.add_argument("--agreement-ratios", type=float, nargs="+", default=[], metavar="R",
                   help="ratios of the agreement-curated settings (default: every ratio > 0)")
    p.add_argument("--agreement-classes", choices=["all", "judged"], default="all",
                   help="classes the agreement mIoU averages over: all, or judged: those the real-only model "
                        "segments at the --agreement IoU on the validation split, on the pixels the mask gives them")
    p.add_argument("--classes", nargs="+", metavar="PHASE",
                   help="classes of the headline mIoU / Dice (default: paper 000's set; MetalDAM without "
                        "precipitate)")
    p.add_argument("--boost-level", action="append", default=[], metavar="PHASE=LEVEL",
                   help="boost level of the pool's fraction targets (mean fraction of that phase), repeatable")
    p.add_argument("--upscale", metavar="SR_MODEL",
                   help="super-resolution model folder: pool pairs are doubled before use (paper 000's pipeline)")
    p.add_argument("--upscale-steps", type=int, default=None, metavar="N",
                   help="denoising steps of the super-resolution (default: its sampler's)")
    p.add_argument("--arch", default="Unet")
    p.add_argument("--preset", default="small")
    p.add_argument("--encoder")
    p.add_argument("--tile", type=int, default=64, help="network window in pixels")
    p.add_argument("--input-scale", type=float, default=0.5,
                   help="network pixels per real pixel; the real tile is tile / input-scale pixels")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool-seed", type=int, default=0)
    add_device_options(p)
    p.add_argument("--out", required=True)


def _pool_flags(p: argparse.ArgumentParser, cls: type) -> None:
    add_option_flags(p, with_defaults(cls.sampling_options(), POOL_DEFAULTS),
                     f"{cls.name} sampling options of the pool (--sampling-NAME where the benchmark has --NAME)",
                     POOL_ALIASES, prefix="sampling-")


@command("augment-benchmark", "segmentation with real vs real + synthetic training data",
         ("Paper 000's augmentation experiment with equal real-tile visits: train the same plain segmenter on the "
          "real training tiles alone and with synthetic pairs at real:synthetic ratios 1:r (optionally only the "
          "pairs the real-only model agrees with), score each on the held-out whole validation and test "
          "micrographs (sliding window), choose the setting on validation and write report.md, summary.csv, "
          "runs.csv and miou_vs_synthetic_volume.png. Re-running with the same OUT resumes."),
         _augment_benchmark_arguments,
         family=lambda known: _family_of_folder(known.generator),
         family_flags=_pool_flags)
def _augment_benchmark(args: argparse.Namespace) -> int:
    from ..core.conditions import parse_boost_levels
    from ..engines.augment_benchmark import AugmentBenchmarkConfig, run_augment_benchmark
    from ..engines.segmentation import SegmentationConfig
    from ..generators import load_generator

    if bool(args.generator) == bool(args.synthetic):
        raise ValueError("give either --generator MODEL or --synthetic STORE")
    if args.synthetic and (args.boost_level or args.upscale):
        raise ValueError("--boost-level and --upscale shape a generated pool; a --synthetic store is used as it is")
    set_threads(args)
    generator = load_generator(model_folder(args.generator), device=args.device) if args.generator else None
    sampling = option_values(args, generator.sampling_options(), POOL_DEFAULTS) if generator else {}
    train = labelled(Path(args.data), args.train_split, args.schema, args)
    val = [] if args.val_split.lower() == "none" else labelled(Path(args.data), args.val_split, args.schema, args)
    test = labelled(Path(args.data), args.test_split, args.schema, args)
    segmentation = SegmentationConfig(arch=args.arch, preset=args.preset, encoder=args.encoder, plm="baseline",
                                      tile_size=args.tile, input_scale=args.input_scale, batch_size=args.batch_size,
                                      steps=args.steps, lr=args.lr, scale_range=(1.0, 1.0), device=args.device)
    config = AugmentBenchmarkConfig(
        ratios=tuple(args.ratios), seeds=tuple(args.seeds), segmentation=segmentation, budget=args.budget,
        synthetic_per_batch=args.synthetic_per_batch, synthetic_weight=args.synthetic_weight,
        agreement=args.agreement, agreement_ratios=tuple(args.agreement_ratios),
        agreement_classes=args.agreement_classes, class_set=tuple(args.classes or ()),
        sampling=sampling, levels=parse_boost_levels(args.boost_level, train[0].schema),
        upscale_steps=args.upscale_steps, pool_seed=args.pool_seed)
    data = (f"{Path(args.data).name}: train split {args.train_split!r} ({len(train)} micrographs), "
            + (f"validation split {args.val_split!r} ({len(val)}), " if val else "")
            + f"test split {args.test_split!r} ({len(test)} whole micrographs)")
    progress, stop = terminal(args, "augmentation benchmark")
    with stop.installed():
        result = run_augment_benchmark(train, test, Path(args.out), config, generator=generator,
                                       synthetic_store=args.synthetic, data_description=data,
                                       progress=progress, should_stop=stop, real_val=val, upscaler=_upscaler(args))
    progress.close()
    print(result["report"].read_text())
    return 0
