"""Paper 003's experiment as one command: a U-Net trained only on translated simulations, tested on real
grain boundaries, against few real regions and untextured simulations."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_device_options, command, labelled, model_folder, set_threads, terminal


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="labelled grain micrographs (e.g. ../shared/data/fastfinecut_iron): folder or store")
    p.add_argument("--split", default=None, help="split of DATA to use (default: every labelled micrograph)")
    p.add_argument("--translator", metavar="MODEL",
                   help="a trained phasefield-cyclegan model folder; without it, OUT/train_region is written (the "
                        "train halves, for training a translator that never sees a test region) and the command "
                        "to train one is printed")
    p.add_argument("--out", required=True, help="output folder (re-running with the same OUT resumes)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="U-Net seeds (default 0 1 2)")
    p.add_argument("--real-images", type=int, default=2, metavar="K",
                   help="baseline 1 trains on the train halves of the first K micrographs (default 2)")
    p.add_argument("--pairs", type=int, default=60, metavar="N",
                   help="simulated structures of baseline 2 and of the method (default 60; paper 003: 180)")
    p.add_argument("--pool-seed", type=int, default=0, help="seed of the first structure (default 0)")
    p.add_argument("--test-half", default="right", choices=["right", "left", "bottom", "top"],
                   help="half of each micrograph that is the test region (default right)")
    p.add_argument("--min-grain-area", type=int, default=16, metavar="PX",
                   help="predicted grain interiors below this many px are specks, not grains (default 16)")
    p.add_argument("--tolerance", type=float, default=2.0, metavar="PX", help="boundary F1 tolerance (default 2)")
    p.add_argument("--marker-depths", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0], metavar="PX",
                   help="marker depths of the split grains to choose from on the validation regions (the train "
                        "halves of the micrographs after the first --real-images)")
    p.add_argument("--marker-depth", type=float, metavar="PX",
                   help="use this marker depth instead of choosing one (default where no micrograph is left for "
                        "validation: 1)")
    p.add_argument("--arch", default="Unet")
    p.add_argument("--preset", default="tiny", help="U-Net size: tiny, small, base (default tiny)")
    p.add_argument("--tile", type=int, default=128, help="U-Net window in px at the translator's scale (default 128)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=300, help="U-Net steps per run (default 300)")
    p.add_argument("--lr", type=float, default=1e-3)
    add_device_options(p)


@command("sim2real-benchmark", "paper 003's experiment: U-Net on synthetic grain images vs two baselines",
         ("Train one U-Net recipe on three sets: the train halves of a few real micrographs with classic "
          "augmentation (baseline 1), untextured phase-field simulations (baseline 2), and the same simulations "
          "translated by the CycleGAN of --translator (paper 003); test each on the other halves of every real "
          "micrograph at the translator's scale: boundary IoU, mean IoU, boundary F1 and the ASTM E112 grain-size "
          "number error of the predicted grains (interiors, and grains split by a watershed whose marker depth is "
          "chosen on validation regions); mean +- sd over --seeds in OUT/report.md (with runs.csv, "
          "summary.csv, examples.png). Without --translator: write OUT/train_region for training one."),
         _arguments)
def _sim2real_benchmark(args: argparse.Namespace) -> int:
    from ..engines.segmentation import SegmentationConfig
    from ..engines.sim2real import Sim2RealConfig, run_sim2real_benchmark, write_region_folder
    from ..generators import load_generator

    set_threads(args)
    real = labelled(Path(args.data), args.split, None, args)
    out = Path(args.out)
    if not args.translator:
        folder = write_region_folder(real, out / "train_region", args.test_half)
        print(f"wrote the train halves of {len(real)} micrographs to {folder}; train a translator on them with\n"
              f"  microsynth train-generator phasefield-cyclegan {folder} --train-split train "
              f"--out {out / 'translator'}"
              f"\nthen run this command again with --translator {out / 'translator' / 'model'}")
        return 0
    translator = load_generator(model_folder(args.translator), device=args.device)
    if translator.name != "phasefield-cyclegan":
        raise ValueError(f"--translator must be a phasefield-cyclegan model folder, not {translator.name}")
    segmentation = SegmentationConfig(arch=args.arch, preset=args.preset, plm="baseline", tile_size=args.tile,
                                      batch_size=args.batch_size, steps=args.steps, lr=args.lr, device=args.device)
    config = Sim2RealConfig(seeds=tuple(args.seeds), real_images=args.real_images, pairs=args.pairs,
                            pool_seed=args.pool_seed, test_half=args.test_half, min_grain_area=args.min_grain_area,
                            tolerance=args.tolerance, marker_depths=tuple(args.marker_depths),
                            marker_depth=args.marker_depth, segmentation=segmentation)
    data = f"{Path(args.data).name}" + (f", split {args.split!r}" if args.split else "") + f" ({len(real)} micrographs)"
    progress, stop = terminal(args, "sim2real benchmark")
    with stop.installed():
        result = run_sim2real_benchmark(real, translator, out, config, data_description=data, progress=progress,
                                        should_stop=stop)
    progress.close()
    print(result.report.read_text())
    return 0
