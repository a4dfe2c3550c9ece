"""The augmentation benchmark: does adding synthetic pairs to the real training tiles improve segmentation?

Protocol of paper 000 (sec. 2.3, Table 3, Fig. 9), scaled to what the hardware allows:

- the same segmenter (architecture, encoder, steps, seeds) is trained on the real training tiles alone
  ("basic aug.": flips, 90-degree rotations, brightness/contrast; no magnification change) and on the
  real tiles plus synthetic pairs at real:synthetic ratios 1:r (the paper: 1:1 ... 1:10, i.e. up to 5000
  synthetic next to 500 real 256 px tiles; each model trained on the union, drawn uniformly);
- every model is scored on held-out whole real micrographs with sliding-window inference (windows
  overlapping by half, softmax averaged) -> mIoU, pixel accuracy and per-class IoU, mean and spread
  over seeds, as a table and a plot of mIoU against synthetic volume.

Synthetic pairs come from a generator model folder (a pool is generated once into ``OUT/synthetic.zarr``
with paper 000's boosted fraction targets and reused, the first ``r * n_real`` pairs for ratio r) or from
a dataset store of curated pairs (its accepted ones). Pairs are brought to the real pixel size first.

Every trained model's scores are written to ``OUT/runs/ratio<r>_seed<s>/metrics.json`` as it finishes, and
the pool is committed pair by pair, so an interrupted benchmark resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.curation import accepted_indices
from ..core.folder_export import write_csv
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.resample import median_pixel_size, to_real_scale
from ..core.sample import Sample
from ..core.store import DatasetStore, is_store
from ..core.tiles import labelled_tiles
from .evaluation import evaluate
from .segmentation import SegmentationConfig, train_segmenter
from .training_set import compose_training_set, synthetic_needed

POOL_STORE = "synthetic.zarr"


@dataclass
class AugmentBenchmarkConfig:
    """What is compared and at which scale.

    ratios: synthetic pairs per real tile (0 = real only); the paper's 1:1 ... 1:10 are 1 ... 10.
    seeds: one model per ratio and seed (same seeds for every ratio).
    segmentation: the segmenter and its training (``plm`` is "baseline": a plain network, as in paper 000;
        ``scale_range`` (1, 1): the paper's basic augmentations have no magnification change).
    sampling: generator sampling options (sampler, steps, guidance_scale, batch_size) for the pool.
    """

    ratios: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
    seeds: tuple[int, ...] = (0, 1)
    segmentation: SegmentationConfig = field(
        default_factory=lambda: SegmentationConfig(arch="Unet", preset="small", plm="baseline", tile_size=64,
                                                   input_scale=0.5, scale_range=(1.0, 1.0), steps=800)
    )
    sampling: dict[str, Any] = field(default_factory=dict)
    pool_seed: int = 0

    def __post_init__(self) -> None:
        self.ratios = tuple(sorted({float(r) for r in self.ratios}))
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.ratios or self.ratios[0] < 0:
            raise ValueError(f"ratios must be >= 0, got {self.ratios}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.segmentation.plm.lower() != "baseline":
            raise ValueError("the benchmark compares plain segmenters (plm='baseline'), as paper 000 does")

    @property
    def real_tile(self) -> int:
        """Tile side in real pixels: the field of view the segmenter sees."""
        return int(round(self.segmentation.tile_size / self.segmentation.input_scale))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["segmentation"] = self.segmentation.to_dict()
        return data


def _run_dir(out: Path, ratio: float, seed: int) -> Path:
    return out / "runs" / f"ratio{ratio:g}_seed{seed}"


def generate_pool(
    generator,
    real_train: Sequence[Sample],
    n: int,
    path: Path,
    tile: int,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> DatasetStore:
    """``n`` pairs from ``generator`` for paper 000's boosted fraction targets (of the real ``tile`` px
    tiles) in the store at ``path``; pairs already there are kept and generation continues after them."""
    from ..core.conditions import fraction_targets

    targets = fraction_targets(real_train, n, seed=seed, tile=tile, downscale=generator.downscale)
    store = DatasetStore.open(path, mode="a") if is_store(path) else DatasetStore.create(
        path, generator.schema, description=f"augmentation benchmark pool from {generator.name}")
    done = len(store)
    if done < n:
        pairs = generator.sample(targets[done:], n=n - done, seed=seed + done,
                                 progress=lambda k, total, msg: progress(done + k, n, msg),
                                 should_stop=should_stop, **(sampling or {}))
        for pair in pairs:
            store.append(pair, split="synthetic")
    return store


def _pool_pairs(store: DatasetStore, n: int, real_pixel_size: float | None, tile: int,
                accepted_only: bool) -> list[Sample]:
    indices = accepted_indices(store) if accepted_only else list(range(len(store)))
    if len(indices) < n:
        what = "accepted pairs" if accepted_only else "pairs"
        raise ValueError(f"the benchmark needs {n} synthetic pairs but {store.path} holds {len(indices)} {what}")
    return [to_real_scale(store[i], real_pixel_size, tile) for i in indices[:n]]


def _aggregate(rows: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per ratio: mean and sample standard deviation over seeds of every metric."""
    table = []
    for ratio in sorted({r["ratio"] for r in rows}):
        group = [r for r in rows if r["ratio"] == ratio]
        row: dict[str, Any] = {"ratio": ratio, "synthetic_pairs": group[0]["synthetic_pairs"],
                               "real_tiles": group[0]["real_tiles"], "seeds": len(group)}
        for key in ["miou", "accuracy", "mciou", "boundary_f1"] + [f"iou {n}" for n in names]:
            values = np.array([g.get(key, math.nan) for g in group], dtype=float)  # older runs: no boundary F1
            values = values[np.isfinite(values)]
            row[key] = float(values.mean()) if values.size else math.nan
            row[f"{key} sd"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        table.append(row)
    return table


def _markdown(table: list[dict[str, Any]], names: Sequence[str]) -> str:
    def cell(row: dict[str, Any], key: str) -> str:  # the spread over seeds only where there are several
        mean, sd = row[key], row[f"{key} sd"]
        spread = f" ± {100 * sd:.1f}" if row["seeds"] > 1 else ""
        return "n/a" if math.isnan(mean) else f"{100 * mean:.1f}{spread}"

    head = (["real:synthetic", "synthetic pairs", "mIoU %", "accuracy %", "missing-class IoU %", "boundary F1 %"]
            + [f"IoU {n} %" for n in names])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        label = "real only" if row["ratio"] == 0 else f"1:{row['ratio']:g}"
        scores = [cell(row, k) for k in ("miou", "accuracy", "mciou", "boundary_f1")]
        cells = [label, str(row["synthetic_pairs"]), *scores]
        cells += [cell(row, f"iou {n}") for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(table: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [r["ratio"] for r in table]
    miou = np.array([r["miou"] for r in table]) * 100
    sd = np.array([r["miou sd"] for r in table]) * 100
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.errorbar(ratios, miou, yerr=sd, marker="o", capsize=3, label="real + synthetic")
    ax.axhline(miou[0], color="tab:blue", linestyle="--", linewidth=1, label="real only (basic aug.)")
    ax.set_xlabel("synthetic volume (pairs per real tile)")
    ax.set_ylabel("mIoU on held-out micrographs (%)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}"


def run_augment_benchmark(
    real_train: Sequence[Sample],
    real_test: Sequence[Sample],
    out: str | Path,
    config: AugmentBenchmarkConfig,
    generator=None,
    synthetic_store: str | Path | None = None,
    data_description: str = "",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``out``; give a ``generator`` or a ``synthetic_store``.

    Returns ``{"table": rows per ratio, "runs": rows per model, "report": path of report.md}``.
    """
    if (generator is None) == (synthetic_store is None) and max(config.ratios) > 0:
        raise ValueError("give either a generator or a store of curated synthetic pairs")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "benchmark_config.json"
    if settings.exists() and json.loads(settings.read_text()) != json.loads(json.dumps(config.to_dict())):
        raise FileExistsError(f"{out} holds a benchmark with other settings ({settings}); choose another folder")
    settings.write_text(json.dumps(config.to_dict(), indent=2))

    schema = real_train[0].schema
    tile = config.real_tile
    real = labelled_tiles(real_train, tile)
    if not real:
        raise ValueError(f"the training micrographs hold no full {tile} px tile")
    n_synthetic = {r: synthetic_needed(r, len(real)) for r in config.ratios}
    total_runs = len(config.ratios) * len(config.seeds)
    progress(0, total_runs, f"{len(real)} real {tile} px tiles; {max(n_synthetic.values())} synthetic pairs needed")

    pool: list[Sample] = []
    if max(n_synthetic.values()) > 0:
        if generator is not None:
            store = generate_pool(generator, real_train, max(n_synthetic.values()), out / POOL_STORE, tile,
                                  seed=config.pool_seed, sampling=config.sampling,
                                  progress=lambda k, n, msg: progress(0, total_runs, f"generating pair {k}/{n}"),
                                  should_stop=should_stop)
            pool = _pool_pairs(store, max(n_synthetic.values()), median_pixel_size(real_train), tile, False)
        else:
            store = DatasetStore.open(Path(synthetic_store))
            pool = _pool_pairs(store, max(n_synthetic.values()), median_pixel_size(real_train), tile, True)

    rows = []
    done = 0
    for ratio in config.ratios:
        training_set = compose_training_set(real, pool, ratio)
        for seed in config.seeds:
            check_stop(should_stop)
            run_dir = _run_dir(out, ratio, seed)
            metrics_file = run_dir / "metrics.json"
            if not metrics_file.exists():
                label = f"ratio 1:{ratio:g}, seed {seed}"

                def sub(k: int, n: int, msg: str, label: str = label, base: int = done) -> None:
                    progress(base, total_runs, f"{label}: {msg}")

                seg = replace(config.segmentation, seed=seed)
                result = train_segmenter(training_set, seg, run_dir, progress=sub, should_stop=should_stop)
                report = evaluate(result.model, real_test, progress=sub, should_stop=should_stop)
                row = {"ratio": ratio, "seed": seed, "real_tiles": len(real), "synthetic_pairs": n_synthetic[ratio],
                       "miou": report["miou"], "accuracy": report["accuracy"], "mciou": report["mciou"],
                       "boundary_f1": report["boundary_f1"],
                       **{f"iou {k}": v for k, v in report["per_class_iou"].items()}}
                metrics_file.write_text(json.dumps(row, indent=2))
            rows.append(json.loads(metrics_file.read_text()))
            done += 1
            progress(done, total_runs, f"{done}/{total_runs} models trained and scored")

    table = _aggregate(rows, schema.names)
    _write_tables(out, rows, table)
    _plot(table, out / "miou_vs_synthetic_volume.png")
    report = _write_report(out, table, config, real_train, real_test, len(real), generator, synthetic_store,
                           data_description, schema.names)
    return {"table": table, "runs": rows, "report": report}


def _write_tables(out: Path, rows: list[dict[str, Any]], table: list[dict[str, Any]]) -> None:
    for name, data in (("runs.csv", rows), ("summary.csv", table)):
        write_csv(out / name, data)


def conclusion(real_only: dict[str, Any], best: dict[str, Any]) -> str:
    """The report's last line: the real+synthetic row of highest mIoU against real only, called best only
    when it beats real only.

    >>> conclusion({"miou": 0.5}, {"miou": 0.326, "ratio": 1.0})
    'No real+synthetic ratio beat real only; the closest, 1:1, scored mIoU -17.4 points against it.'
    """
    gain = 100 * (best["miou"] - real_only["miou"])
    if gain > 0:
        return f"Best real+synthetic ratio 1:{best['ratio']:g}: mIoU {gain:+.1f} points against real only."
    return (f"No real+synthetic ratio beat real only; the closest, 1:{best['ratio']:g}, scored mIoU {gain:+.1f} "
            "points against it.")


def _write_report(out: Path, table, config: AugmentBenchmarkConfig, real_train, real_test, n_real: int,
                  generator, synthetic_store, data_description: str, names: Sequence[str]) -> Path:
    seg = config.segmentation
    source = (f"generator {generator.name} (model checksum {generator.model_checksum[:12] or 'n/a'}), "
              f"pool in {POOL_STORE}, sampling {config.sampling or 'defaults'}"
              if generator is not None else f"accepted pairs of {synthetic_store}")
    best = max(table[1:], key=lambda r: r["miou"], default=None)
    lines = [
        "# Augmentation benchmark (paper 000, Table 3 / Fig. 9 protocol, scaled down)",
        "",
        f"- data: {data_description or 'real micrographs'}; {len(real_train)} training micrographs -> "
        f"{n_real} real {config.real_tile} px tiles; {len(real_test)} held-out test micrographs (whole, sliding window)",
        f"- synthetic pairs: {source}",
        f"- segmenter: {seg.arch} ({seg.preset} preset{', encoder ' + seg.encoder if seg.encoder else ''}), "
        f"no PLM, {seg.steps} steps of batch {seg.batch_size}, network tile {seg.tile_size} px at input scale "
        f"{seg.input_scale:g}, Dice + cross-entropy, flips / rot90 / brightness-contrast-gamma augmentations",
        f"- seeds: {', '.join(map(str, config.seeds))}; hardware: {_hardware()}",
        "",
        _markdown(table, names),
        "",
    ]
    if best is not None:
        lines.append(conclusion(table[0], best))
    lines += ["", "![mIoU against synthetic volume](miou_vs_synthetic_volume.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
