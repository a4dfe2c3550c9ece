"""One-stage (PF-DiffSeg) vs two-stage (mask, then image) vs two-stage-gan (mask, then one translator pass)
time per image + mask pair, measured in one run.

Paper 000 (Table 5) reports 2.01 s per pair for the one-stage PF-DiffSeg against 1.20 s + 1.21 s = 2.41 s
for the two-stage SegGuidedDiff on its GPU, i.e. a two-stage / one-stage ratio of 1.20. Both generators
here use the same preset (network widths), sampler and number of steps (two-stage-gan: the same mask
denoiser, its ``large`` preset for PF-DiffSeg's ``paper``); untrained weights time the same as trained ones. Each generator and batch size is timed after one warm-up pair; runs on the CPU
and, when one is available, on the GPU.

    python bench/bench_generators.py                      # small preset, 20 DDIM steps (under a minute on 2 CPU cores)
    python bench/bench_generators.py --preset paper --steps 50 --devices cuda
"""
from __future__ import annotations

import argparse
import time

import torch

from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.engines.generator_evaluation import time_generation
from napari_microsynth.generators.pf_diffseg import PRESETS, PFDiffSeg
from napari_microsynth.generators.two_stage import TwoStage
from napari_microsynth.generators.two_stage_gan import MASK_PRESETS, TwoStageGAN

PAPER_SECONDS = {"one-stage": 2.01, "two-stage": 2.41}  # paper 000, Table 5
GAN_PRESET = {mask: gan for gan, mask in MASK_PRESETS.items()}  # PF-DiffSeg preset -> two-stage-gan preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per stage (paper: 50)")
    parser.add_argument("--sampler", default="ddim", choices=("ddim", "dpm++"))
    parser.add_argument("--pairs", type=int, default=4, help="pairs timed per generator and batch size")
    parser.add_argument("--batch-size", type=int, default=4, help="the batched setting (batch 1 is always timed)")
    parser.add_argument("--schema", default="metaldam", help="bundled phase schema (sets the mask channels)")
    parser.add_argument("--devices", default="auto", help="comma-separated: cpu, cuda; auto = cpu (+ cuda if present)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else [
        d.strip() for d in args.devices.split(",") if d.strip()]
    schema = PhaseSchema.bundled(args.schema)
    batch_sizes = sorted({1, args.batch_size})
    print(f"preset {args.preset}, {args.sampler} {args.steps} steps, {args.pairs} pairs per setting, schema "
          f"{schema.name} ({schema.n_classes} classes), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in devices:
        generators = {
            "one-stage": PFDiffSeg(schema, args.preset, device=device),
            "two-stage": TwoStage(schema, args.preset, device=device),
            "two-stage-gan": TwoStageGAN(schema, GAN_PRESET[args.preset], device=device),
        }
        name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
        start = time.perf_counter()
        rows = time_generation(generators, n=args.pairs, batch_sizes=batch_sizes, sampler=args.sampler,
                               steps=args.steps)
        print(f"\n{device} ({name}), measured in {time.perf_counter() - start:.1f} s")
        print(f"{'generator':<14} {'batch':>5} {'s / pair':>10}")
        seconds = {}
        for row in rows:
            seconds[row.generator, row.batch_size] = row.seconds_per_pair
            print(f"{row.generator:<14} {row.batch_size:>5} {row.seconds_per_pair:>10.4f}")
        for size in batch_sizes:
            for other in ("two-stage", "two-stage-gan"):
                ratio = seconds[other, size] / seconds["one-stage", size]
                print(f"{other} / one-stage at batch {size}: {ratio:.2f}x")
    paper = PAPER_SECONDS["two-stage"] / PAPER_SECONDS["one-stage"]
    print(f"\npaper 000, Table 5: {PAPER_SECONDS['one-stage']} s one-stage vs {PAPER_SECONDS['two-stage']} s "
          f"two-stage per pair ({paper:.2f}x), 50 DDIM steps, 128 px, its GPU")


if __name__ == "__main__":
    main()
