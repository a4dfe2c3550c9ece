"""Grain-structure commands: simulate phase-field grain growth (paper 003), and grain statistics of
simulated or real grain maps."""
from __future__ import annotations

import argparse

from ._common import add_device_options, command, set_threads, terminal
from ._options import add_option_flags, given_options


def _simulation_options():
    from ..core.microstructure import GrainGrowthSettings
    from ..core.options import declared_options

    return declared_options(GrainGrowthSettings)


def _simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="folder for the structures (created; an existing one made with the same settings "
                               "is continued)")
    p.add_argument("--structures", type=int, default=300, help="structures to simulate (default 300, the paper's)")
    p.add_argument("--seed", type=int, default=0, help="base seed; structure i has its own seed from it (default 0)")
    add_device_options(p)
    add_option_flags(p, _simulation_options(), "simulation (defaults: the paper's setting)")


@command("simulate", "simulate grain structures by phase-field grain growth (paper 003)",
         ("Start each structure from a regularised Voronoi tessellation and evolve it by multi-order-parameter "
          "Allen-Cahn grain growth (paper 003, eq. 1-3); write OUT/structure_NNNNN.npz with the grain map, "
          "the instance map, the 2 px grain-boundary mask, the eq. 3 image and the time series of snapshots. "
          "A finished structure is never rewritten: an interrupted run (Ctrl-C) is continued by running the same "
          "command again. Open a structure in napari to scrub its time series; measure the folder with "
          "'microsynth grain-stats OUT'."),
         _simulate_arguments)
def _simulate(args: argparse.Namespace) -> int:
    from ..core.microstructure import GrainGrowthSettings
    from ..engines.grain_growth import simulate_structures
    from ..models.device import resolve_device

    settings = GrainGrowthSettings(**given_options(args, _simulation_options()))
    set_threads(args)
    device = resolve_device(args.device)
    print(f"{args.structures} structures of {settings.grains} grains, {settings.size}x{settings.size} px, "
          f"{settings.steps} steps (dt {settings.dt:g}, {settings.order_parameters} order parameters) on {device}")
    progress, stop = terminal(args, "simulating")
    with stop.installed():
        run = simulate_structures(args.out, settings, args.structures, seed=args.seed, device=str(device),
                                  progress=progress, should_stop=stop)
    progress.close()
    per = f", {run.seconds / len(run.written):.1f} s per structure" if run.written else ""
    remaps = sum(i["remaps"] for i in run.info)
    coalesced = sum(i["coalescences"] for i in run.info)
    print(f"wrote {len(run.written)} structures to {run.out} ({run.skipped} were already there){per}"
          + (f"; {remaps} grain moves between order parameters, {coalesced} coalescences" if run.written else ""))
    return 0


def _stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="a simulation folder or structure file, a dataset folder (its masks/), a folder of masks or "
                        "a mask file: RGB maps with one colour per grain, integer label images, or two-valued "
                        "grain-boundary masks")
    p.add_argument("--pixel-size", type=float, metavar="UM", help="micrometres per pixel: areas in um^2 and the "
                                                                   "ASTM E112 grain-size number")
    p.add_argument("--out", default="grain_stats", help="folder for the tables and plots (default ./grain_stats)")
    p.add_argument("--min-area", type=int, default=0, metavar="PX",
                   help="boundary masks: drop grain interiors smaller than this (specks of a predicted mask)")
    p.add_argument("--split-depth", type=float, metavar="PX",
                   help="boundary masks: split grains merged through gaps in the boundaries (a predicted mask) by a "
                        "watershed with this marker depth in px (1 was best on the iron validation halves at half "
                        "resolution; deeper merges more)")


@command("grain-stats", "grain sizes, shapes and the ASTM E112 grain-size number of grain maps",
         ("Measure every grain of simulated structures or real grain maps: area, equivalent diameter, aspect "
          "ratio, circularity; the ASTM E112 grain-size number G by the planimetric (Jeffries) count (grains cut "
          "by the image edge count 1/2, the corner grains 1/4; needs --pixel-size). Writes grains.csv (one row "
          "per grain), summary.csv (per map and per PATH: mean +- std of the whole grains), "
          "size_distribution.png (one histogram per PATH) and, for simulations, timeseries.csv and growth.png "
          "(mean +- std grain size per snapshot step)."),
         _stats_arguments)
def _grain_stats(args: argparse.Namespace) -> int:
    from ..engines.grain_growth import grain_statistics

    progress, stop = terminal(args, "measuring")
    with stop.installed():
        report = grain_statistics(args.paths, args.out, pixel_size_um=args.pixel_size, min_area=args.min_area,
                                  split_depth=args.split_depth, progress=progress, should_stop=stop)
    progress.close()
    print(report.as_text())
    return 0
