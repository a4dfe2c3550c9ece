"""Paper 004's ablation (Table 2) on UHCS: MLP vs probabilistic property encoder, one- vs two-stage, measured in
one run with one property regressor, one feature encoder and the same conditions and seeds for every model.

The reference model (``--model``, a trained tim3 folder, e.g. from ``microsynth train-generator tim3``) gives
the latent space: every variant is trained with its two autoencoders (``autoencoders_from``) and its
training settings, changing only ``stages`` and ``property_encoder``, so the rows differ only in what the
ablation changes. Variants already trained in ``--out`` are loaded, not trained again.

Rows: the real held-out tiles with their own conditions (the regressor's ceiling, the real-vs-real FD/KID),
then each variant: Acc_0.1/0.2/0.3 and mAcc (eq. 9-11) for ``-n`` conditions drawn with Algorithm 1 from the
training split, FD/KID of the images against half of the held-out real tiles. The paper's Table 2 rows are
"Baseline" (one stage, MLP), "+ Probabilistic Encoder" (one stage) and "+ Two-stage Generation" (TiM3).

    python bench/bench_tim3_ablation.py --model runs/tim3/model --out runs/tim3-ablation
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.engines.property_accuracy import RegressorTrainConfig, evaluate_property_generators
from napari_microsynth.generators import load_generator
from napari_microsynth.generators.tim3 import TiM3

DATA = Path(os.environ.get("MICROSYNTH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "uhcs"
#: Table 2's rows (and the fourth combination): name -> (stages, property encoder)
VARIANTS = {"baseline (one stage, MLP)": ("one", "mlp"), "+ probabilistic encoder (one stage)": ("one", "probabilistic"),
            "two stages, MLP": ("two", "mlp"), "TiM3 (two stages, probabilistic)": ("two", "probabilistic")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="trained tim3 model folder (its latent space is shared)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--scored-split", default="test")
    parser.add_argument("-n", type=int, default=128, help="conditions drawn with Algorithm 1 (paper: 10 000)")
    parser.add_argument("--regressor-steps", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=None, help="denoiser steps of the variants (default: the model's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = [s for s in load_dataset(args.data, split=args.train_split) if s.mask is not None]
    scored = [s for s in load_dataset(args.data, split=args.scored_split) if s.mask is not None]
    reference = load_generator(args.model)
    settings = {k: v for k, v in reference.training.settings.items() if k in {o.name for o in TiM3.training_options()}}
    generators, times = {}, {}
    for name, (stages, encoder) in VARIANTS.items():
        if (reference.stages, reference.property_encoder.config.kind) == (stages, encoder):
            generators[name] = reference
            continue
        folder = out / f"{stages}-{encoder}"
        if not (folder / "config.json").is_file():
            config = TiM3.training_config(**{**settings, "stages": stages, "property_encoder": encoder,
                                             "autoencoders_from": str(args.model), "checkpoint_dir": None,
                                             **({"steps": args.steps} if args.steps else {})})
            generator = TiM3(reference.schema, reference.preset, "cpu", seed=args.seed)
            start = time.perf_counter()
            generator.train(train, config)
            times[name] = time.perf_counter() - start
            generator.save(folder)
            print(f"trained {name} in {times[name] / 60:.1f} min", flush=True)
        generators[name] = load_generator(folder)
    result = evaluate_property_generators(
        generators, train, scored, n=args.n, seed=args.seed,
        regressor_config=RegressorTrainConfig(steps=args.regressor_steps, tile=reference.resolution,
                                              downscale=reference.downscale, seed=args.seed),
        progress=lambda d, t, m: print(f"\r{d}/{t} {m[:60]:<60}", end="", flush=True))
    print()
    result.write(out / "evaluation")
    (out / "training_times.json").write_text(json.dumps(times, indent=2) + "\n")
    print(result.to_markdown())


if __name__ == "__main__":
    main()
