"""Segmentation commands: train a segmenter (with or without the Phase Learning Module), compare baseline
and PLM on held-out micrographs, segment one micrograph."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_data_options, add_device_options, command, labelled, model_folder, require_window, set_threads, terminal


def _segmentation_arguments(p: argparse.ArgumentParser) -> None:
    """The data and the segmenter's network and training, shared by ``train-segmenter`` and ``evaluate``."""
    add_data_options(p, ("train", "train"), ("test", "test"))
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
    p.add_argument("--ratio-source", choices=("tile", "micrograph"), default="tile",
                   help="PLM training ratio: each tile's own fractions (paper 001, default) or its whole "
                        "micrograph's, as inference feeds every window")
    p.add_argument("--ratio-alpha", type=float, nargs=2, default=(1.0, 1.0), metavar=("LOW", "HIGH"),
                   help="train on expert guesses of the ratio with accuracy alpha drawn from [LOW, HIGH] (paper 001 "
                        "App. A.2); 1 1 = exact ratios (default)")
    p.add_argument("--ratio-weight", type=float, default=1.0,
                   help="weight of the ratio MSE loss against Dice + CE (paper 001: 1, the default)")
    p.add_argument("--plm-width", type=int, default=0, metavar="E",
                   help="PLM channel width; 0 = one channel per phase (paper 001's text), 256 = its Table 6 sizes")
    p.add_argument("--paper-recipe", action="store_true",
                   help="paper 001's ratio training: each tile's exact ratio, ratio weight 1, no dropout, width 0 "
                        "(overrides the four options above and --ratio-dropout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=200, metavar="N", help="checkpoint every N steps (a kill loses < N)")
    add_device_options(p)
    p.add_argument("--out", required=True, help="output folder (re-running resumes from its checkpoints)")


def _segmentation_config(args: argparse.Namespace, plm: str):
    from ..engines.segmentation import SegmentationConfig

    config = SegmentationConfig(
        arch=args.arch, preset=args.preset, encoder=args.encoder, plm=plm, tile_size=args.tile,
        input_scale=args.input_scale, batch_size=args.batch_size, steps=args.steps, lr=args.lr,
        ratio_dropout=args.ratio_dropout, ratio_source=args.ratio_source, ratio_alpha=tuple(args.ratio_alpha),
        ratio_weight=args.ratio_weight, plm_width=args.plm_width, seed=args.seed, device=args.device,
        checkpoint_every=args.checkpoint_every,
    )
    return config.with_paper_ratio_recipe() if args.paper_recipe else config


@command("train-segmenter", "train a segmentation model (with or without the PLM)",
         ("Train an smp segmenter, optionally with paper 001's Phase Learning Module, on the train split; write "
          "OUT/model (config.json, weights, model card). An interrupted training resumes when run again with the "
          "same OUT."),
         _segmentation_arguments)
def _train_segmenter(args: argparse.Namespace) -> int:
    from ..engines.evaluation import evaluate
    from ..engines.segmentation import train_segmenter

    set_threads(args)
    train = labelled(Path(args.data), args.train_split, args.schema, args)
    config = _segmentation_config(args, args.plm)
    progress, stop = terminal(args, "training")
    with stop.installed():
        result = train_segmenter(train, config, Path(args.out) / "work", progress, stop)
    progress.close()
    result.extra["data"] = f"{Path(args.data).name}: train split {args.train_split!r} ({len(train)} micrographs)"
    metrics = None
    if args.test_split:
        test = labelled(Path(args.data), args.test_split, args.schema, args)
        metrics = evaluate(result.model, test, "true" if result.model.uses_ratio else None)
        metrics = {f"test ({args.test_split}, true ratio)" if result.model.uses_ratio else f"test ({args.test_split})":
                   {"miou": metrics["miou"], "accuracy": metrics["accuracy"], "mciou": metrics["mciou"]}}
    folder = result.save(Path(args.out) / "model", metrics=metrics)
    print(f"model folder written to {folder}")
    if metrics:
        print(metrics)
    return 0


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    _segmentation_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--val-split", default="val",
                   help="split the ratio correction's temperature is fitted on ('none': temperature 1)")
    p.add_argument("--trust", type=float, nargs="+", default=[0.5, 1.0], metavar="L",
                   help="trust levels of the 'baseline + correction' and 'PLM + correction' rows (0: none)")
    p.add_argument("--variants", nargs="+", metavar="V",
                   help="networks to compare instead of baseline and --plm: PLM settings (baseline, RE, SA, SA+FA, "
                        "RE+SA, RE+SA+FA) with optional ':paper' (paper 001's ratio recipe) and ':wE' (PLM width E), "
                        "e.g. baseline RE+SA+FA RE+SA+FA:paper RE SA SA+FA RE+SA (paper 001's ablation)")


@command("evaluate", "baseline vs PLM on held-out micrographs, over ratio accuracy alpha",
         ("Train a baseline and a PLM segmenter on the same split and seeds, evaluate on the held-out whole "
          "micrographs (sliding window, 50 % overlap) with the PLM given no ratio and expert-guess ratios of "
          "accuracy alpha in {0.3, 0.5, 0.66, 0.9, 1.0} (paper 001, App. A.2), and both networks with the ratio "
          "correction towards each guess at each --trust (temperature fitted on --val-split); write "
          "alpha_sweep-<test split>.csv/.md/.png. Trained networks are reused when run again with another "
          "--test-split."),
         _evaluate_arguments)
def _evaluate(args: argparse.Namespace) -> int:
    from ..engines.evaluation import run_comparison

    set_threads(args)
    train = labelled(Path(args.data), args.train_split, args.schema, args)
    test = labelled(Path(args.data), args.test_split, args.schema, args)
    val = [] if args.val_split.lower() == "none" else labelled(Path(args.data), args.val_split, args.schema, args)
    config = _segmentation_config(args, args.plm)
    progress, stop = terminal(args, "baseline vs PLM")
    with stop.installed():
        data = (f"{Path(args.data).name}: train split {args.train_split!r} ({len(train)} micrographs), "
                f"test split {args.test_split!r} ({len(test)} whole micrographs)")
        result = run_comparison(train, test, config, seeds=args.seeds, out_dir=Path(args.out),
                                progress=progress, should_stop=stop, data_description=data,
                                trusts=[t for t in args.trust if t > 0], val_samples=val,
                                variants=args.variants, test_split=args.test_split)
    progress.close()
    print(result.markdown_path.read_text())
    print(f"table: {result.csv_path}\nplot: {result.plot_path}")
    for folder in result.model_folders:
        print(f"model: {folder}")
    return 0


def _segment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("out", help="output PNG of class ids in the phase colours (a zarr phase map for a large micrograph)")
    p.add_argument("--overlay", metavar="PNG", help="also write the micrograph tinted by phase, with a legend")
    p.add_argument("--model", help=f"model folder or bundled model name (default: the bundled {DEFAULT_MODEL}, "
                                   "for UHCS steels only: refused for micrographs of a dataset of other phases)")
    p.add_argument("--ratio", help="comma-separated phase ratio, e.g. 0.7,0.1,0.15,0.05: a PLM model's input and "
                                   "the target of --trust")
    p.add_argument("--trust", type=float, default=0.0, metavar="L",
                   help="ratio correction in [0, 1]: 0 = the network alone (paper 001), 1 = the map takes the "
                        "--ratio fractions, in between that share of the way from the network's own fractions")
    p.add_argument("--info-band", default="auto",
                   help="'auto', a row count, or 'none' (a large micrograph is not searched for a band: give its rows)")
    p.add_argument("--blocks", action="store_true",
                   help="segment block by block into a zarr phase map, as TIFFs larger than 4096x4096 px always are")
    p.add_argument("--block-size", type=int, default=4096, metavar="PX",
                   help="block side for --blocks and large micrographs (peak memory grows with its square)")
    add_device_options(p)


#: The bundled model ``segment`` uses when no ``--model`` is given.
DEFAULT_MODEL = "plm-uhcs-demo"


def _check_default_model_applies(model_schema, image_schema, image_path: str) -> None:
    """Refuse the bundled default model for a micrograph of a dataset whose phases it does not know."""
    if image_schema is not None and image_schema.names != model_schema.names:
        raise ValueError(
            f"{image_path} belongs to a {image_schema.name!r} dataset ({', '.join(image_schema.names)}), but the "
            f"bundled default model {DEFAULT_MODEL} segments {model_schema.name} phases "
            f"({', '.join(model_schema.names)}); pass --model with a model trained on this material "
            "(microsynth train-segmenter)"
        )


def _model_and_ratio(args: argparse.Namespace, image_path, image_schema):
    """``(folder, segmenter, ratio)`` of ``--model`` (the bundled default only where its phases apply to the
    micrograph's dataset) and ``--ratio`` (None without; ``--trust`` needs it)."""
    from ..core.fractions import parse_fractions
    from ..models.segmenter import Segmenter

    folder = model_folder(args.model or DEFAULT_MODEL)
    model = Segmenter.load(folder, device=args.device)
    if args.model is None:
        _check_default_model_applies(model.schema, image_schema, str(image_path))
    ratio = None
    if args.ratio:
        ratio, note = parse_fractions(args.ratio, model.schema.names)
        if note:
            print(f"note: {note}")
    if args.trust and ratio is None:
        raise ValueError("--trust needs --ratio (the fractions to correct the phase map towards)")
    return folder, model, ratio


@command("segment", "segment one micrograph with a model folder",
         ("Whole-micrograph phase map (sliding window, 50 % overlap) written as an indexed-colour PNG: pixel "
          "values are class ids, shown in the phase colours. A TIFF larger than 4096x4096 px (or any micrograph "
          "with --blocks) is read lazily and segmented block by block into a zarr phase map with a display "
          "pyramid (OUT with the suffix .zarr), in bounded memory; running the command again resumes it."),
         _segment_arguments)
def _segment(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..core.fractions import mask_fractions
    from ..core.io import image_shape, read_micrograph, write_mask
    from ..core.domain_check import dataset_schema_of
    from ..core.large_image import is_large_micrograph
    from ..engines.inference import predict_image, stored_temperature
    from ..engines.reports import phase_overlay

    set_threads(args)
    image_schema = dataset_schema_of(args.image)
    folder, model, ratio = _model_and_ratio(args, args.image, image_schema)
    band = {"auto": "auto", "none": None}.get(args.info_band.lower(), args.info_band)
    band = int(band) if isinstance(band, str) and band.isdigit() else band
    if args.blocks or is_large_micrograph(args.image):
        return _segment_blocks(args, model, folder, image_schema, ratio, band)
    image, pixel_size = read_micrograph(args.image, info_band=band)
    require_window(image, model, args.image)
    rows = image_shape(args.image)[0]
    if image.shape[0] < rows:
        print(f"info band: bottom {rows - image.shape[0]} rows cropped, segmenting {image.shape[0]} of {rows} rows")
    _report_model_and_domain(args, model, folder, image, pixel_size, image_schema)
    progress, stop = terminal(args, "segmenting")
    with stop.installed():
        labels, _ = predict_image(model, image, ratio=ratio, trust=args.trust,
                                  temperature=stored_temperature(folder), progress=progress, should_stop=stop)
    progress.close()
    write_mask(args.out, labels, model.schema)
    _print_fractions(model.schema.names, ratio, mask_fractions(labels, model.schema))
    height, width = labels.shape
    print(f"phase map {width}x{height} px (class ids shown in the phase colours) written to {args.out}")
    if args.overlay:
        Image.fromarray(phase_overlay(image, labels, model.schema)).save(args.overlay)
        print(f"overlay with legend written to {args.overlay}")
    return 0


def _report_model_and_domain(args, model, folder, image, pixel_size, image_schema) -> None:
    """Say which phases the model segments and warn when the micrograph is unlike its training data."""
    from ..engines.inference import micrograph_warnings

    print(f"model {folder.name} segments into {model.schema.name} phases: {', '.join(model.schema.names)}")
    warnings = micrograph_warnings(folder, model.schema, image, pixel_size, image_schema)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if warnings and args.model is None:
        print(f"warning: no --model given, so the bundled {DEFAULT_MODEL} (UHCS steels) segmented this micrograph; "
              "for another material pass --model with a model trained on it (microsynth train-segmenter)",
              file=sys.stderr)


def _print_fractions(names, ratio, achieved) -> None:
    for name, target, value in zip(names, ratio if ratio is not None else [None] * len(achieved), achieved):
        print(f"{name:28s} " + ("" if target is None else f"target {100 * target:5.1f} %  ") + f"achieved {100 * value:5.1f} %")


def _segment_blocks(args: argparse.Namespace, model, folder: Path, image_schema, ratio, band) -> int:
    """``segment`` of a large micrograph: read lazily, segmented block by block into a zarr phase map."""
    from ..core.io import read_micrograph
    from ..core.large_image import is_large_micrograph, open_micrograph
    from ..engines.inference import stored_temperature
    from ..engines.large_inference import segment_large

    if band is not None and not isinstance(band, int) and band != "auto":
        raise ValueError(f"--info-band must be 'auto', a row count or 'none', got {args.info_band!r}")
    if is_large_micrograph(args.image):  # read lazily; 'auto' finds no information band here
        micrograph = open_micrograph(args.image, band if isinstance(band, int) else 0)
        image, pixel_size = micrograph.image, micrograph.pixel_size_um
    else:  # --blocks for a micrograph that fits in memory: read whole, its features still block by block
        micrograph, (image, pixel_size) = None, read_micrograph(args.image, info_band=band)
    out = Path(args.out)
    if out.suffix.lower() != ".zarr":
        out = out.with_suffix(".zarr")
        print(f"note: segmenting block by block, so the phase map is a zarr store: {out}")
    try:
        require_window(image, model, args.image)
        height, width = image.shape
        centre = image[max(0, height // 2 - 1024) : height // 2 + 1024, max(0, width // 2 - 1024) : width // 2 + 1024]
        _report_model_and_domain(args, model, folder, centre, pixel_size, image_schema)
        progress, stop = terminal(args, "segmenting")
        with stop.installed():
            phase_map = segment_large(model, image, out, ratio, args.trust, stored_temperature(folder),
                                      block=args.block_size, source=str(Path(args.image).resolve()),
                                      progress=progress, should_stop=stop)
        progress.close()
    finally:
        if micrograph is not None:
            micrograph.close()
    _print_fractions(model.schema.names, ratio, phase_map.fractions())
    print(f"phase map {width}x{height} px in {len(phase_map.blocks)} blocks, with a {len(phase_map.levels)}-level "
          f"display pyramid, written to {out}")
    if args.overlay:
        print("note: --overlay is not written for a micrograph segmented block by block (open the phase map in napari)")
    return 0


def _quantify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a folder of micrographs, or a dataset folder (its images/ are used)")
    p.add_argument("--out", required=True, help="output folder (re-running resumes with the next micrograph)")
    p.add_argument("--model", help=f"model folder or bundled model name (default: the bundled {DEFAULT_MODEL}, "
                                   "for UHCS steels only)")
    p.add_argument("--ratio", help="comma-separated phase ratio: a PLM model's input and the target of --trust")
    p.add_argument("--trust", type=float, default=0.0, metavar="L", help="ratio correction in [0, 1] (see segment)")
    add_device_options(p)


@command("quantify", "phase fractions of every micrograph in a folder, with a summary and a plot",
         ("Segment every micrograph of FOLDER with one model and write OUT/fractions.csv (one row per micrograph), "
          "OUT/summary.csv/.md (per phase: mean with its 95 % confidence interval over micrographs, sd, min, max) "
          "and OUT/fractions.png. Unreadable or too small files are listed and skipped. An interrupted run resumes."),
         _quantify_arguments)
def _quantify(args: argparse.Namespace) -> int:
    from ..core.domain_check import dataset_schema_of
    from ..engines.inference import stored_temperature
    from ..engines.quantify import micrograph_files, quantify

    set_threads(args)
    files = micrograph_files(args.folder)
    folder, model, ratio = _model_and_ratio(args, files[0], dataset_schema_of(files[0]))
    print(f"{len(files)} micrographs; model {folder.name} segments into {', '.join(model.schema.names)}")
    progress, stop = terminal(args, "quantifying")
    with stop.installed():
        result = quantify(model, files, args.out, ratio, args.trust, stored_temperature(folder), folder.name,
                          progress, stop)
    progress.close()
    for skipped in result.skipped:
        print(f"skipped {skipped['micrograph']}: {skipped['reason']}", file=sys.stderr)
    print(result.summary_path.read_text())
    print(f"per micrograph: {result.csv_path}\nplot: {result.plot_path}")
    return 0
