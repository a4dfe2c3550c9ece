"""Phase-field grain growth at the paper's setting (512 x 512 px, 112 grains, 1000 steps, 300 structures):
seconds per step and per structure, coloured order parameters against one per grain, measured in one run.

The reference is eq. 1 as written, one order parameter per grain (a 112 x 512 x 512 tensor); the default
shares an order parameter between grains at least two boundaries apart (12-13 fields for 112 grains).
Both run the same Euler step; the coloured run also re-identifies grains every ``check_every`` steps.
A whole structure (``--steps``, default 1000) is timed for the coloured representation; the per-grain
reference is timed over ``--reference-steps`` steps and its structure time extrapolated (stated as such).
Structures per hour and the time for 300 structures follow from the measured structure time.

    nice -n 10 python bench/bench_phase_field.py                      # the paper's setting on this machine
    nice -n 10 python bench/bench_phase_field.py --steps 200           # shorter; the 1000-step time extrapolated
    python bench/bench_phase_field.py --device cuda
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_microsynth.core.microstructure import GrainGrowthSettings
from napari_microsynth.models.phase_field import GrainGrowth


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grains", type=int, default=112)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1000, help="steps of the timed coloured structure (paper: 1000)")
    parser.add_argument("--reference-steps", type=int, default=20, help="steps timed for the per-grain reference")
    parser.add_argument("--structures", type=int, default=300, help="structures of the paper's data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    paper_steps = 1000
    base = {"grains": args.grains, "size": args.size, "snapshot_every": 50}
    settings = GrainGrowthSettings(**base, steps=args.steps)
    start = time.perf_counter()
    sim = GrainGrowth(settings, seed=args.seed, device=args.device)
    init_s = time.perf_counter() - start
    device = sim.device
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{args.grains} grains, {args.size}x{args.size} px, dt {settings.dt}, check every {settings.check_every} "
          f"steps, snapshots every {settings.snapshot_every}; torch {torch.__version__} on {device} ({name}), "
          f"{torch.get_num_threads()} CPU threads")
    print(f"initial tessellation + fields: {init_s:.2f} s ({sim.fields_initial} coloured fields for "
          f"{args.grains} grains)")

    # the per-grain reference: Euler steps only
    reference = GrainGrowth(GrainGrowthSettings(**base, steps=args.reference_steps, order_parameters="per-grain"),
                            seed=args.seed, device=device, initial=sim.initial)
    reference.advance(1)
    _sync(device)
    start = time.perf_counter()
    reference.advance(args.reference_steps)
    _sync(device)
    per_grain_step = (time.perf_counter() - start) / args.reference_steps
    del reference

    # coloured: Euler steps only, then one whole structure (checks, tracking, snapshots)
    probe = GrainGrowth(settings, seed=args.seed, device=device, initial=sim.initial)
    probe.advance(1)
    _sync(device)
    start = time.perf_counter()
    probe.advance(args.reference_steps)
    _sync(device)
    coloured_step = (time.perf_counter() - start) / args.reference_steps
    start = time.perf_counter()
    for _ in range(5):
        probe.track()
    track_s = (time.perf_counter() - start) / 5
    del probe

    start = time.perf_counter()
    result = sim.run()
    _sync(device)
    structure_s = time.perf_counter() - start + init_s
    per_step = structure_s / max(args.steps, 1)
    measured = args.steps == paper_steps
    structure_1000 = init_s + (structure_s - init_s) * paper_steps / max(args.steps, 1)
    areas = np.bincount(result.grains.ravel())[1:]
    areas = areas[areas > 0]

    print(f"\nper Euler step (same state, {args.reference_steps} steps): coloured {coloured_step * 1e3:.1f} ms, "
          f"per-grain {per_grain_step * 1e3:.1f} ms -> per-grain / coloured = {per_grain_step / coloured_step:.1f}x")
    print(f"grain re-identification (coloured, every {settings.check_every} steps): {track_s * 1e3:.1f} ms "
          f"= {track_s / settings.check_every / coloured_step * 100:.0f} % on top of the steps")
    print(f"one structure, {args.steps} steps measured: {structure_s:.1f} s ({per_step * 1e3:.1f} ms per step incl. "
          f"checks and {len(result.snapshot_steps)} snapshots); remaps {result.info['remaps']}, coalescences "
          f"{result.info['coalescences']}, grains {result.info['grains_initial']} -> {result.info['grains_final']}, "
          f"mean grain area {areas.mean():.0f} px (CV {areas.std() / areas.mean():.2f})")
    how = "measured" if measured else f"extrapolated from {args.steps} measured steps"
    print(f"paper setting, 1000 steps per structure ({how}): coloured {structure_1000:.0f} s per structure "
          f"-> {args.structures} structures in {structure_1000 * args.structures / 3600:.1f} h "
          f"({3600 / structure_1000:.0f} structures per hour)")
    reference_1000 = init_s + per_grain_step * paper_steps
    print(f"per-grain reference, 1000 steps (extrapolated from {args.reference_steps} measured steps): "
          f"{reference_1000:.0f} s per structure -> {args.structures} structures in "
          f"{reference_1000 * args.structures / 3600:.1f} h")


if __name__ == "__main__":
    main()
