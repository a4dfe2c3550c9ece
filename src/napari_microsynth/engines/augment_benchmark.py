"""The augmentation benchmark: does adding synthetic pairs to the real training tiles improve segmentation?

Protocol of paper 000 (sec. 2.3, Table 3, Fig. 9), scaled to what the hardware allows, with the fairness
controls the paper leaves implicit (issue 11). Each is an option, written into ``report.md``:

- **Settings**: the same plain segmenter (architecture, encoder, steps, seeds) trained on the real training
  tiles alone ("basic aug.": flips, 90-degree rotations, brightness/contrast; no magnification change) and
  on the real tiles plus synthetic pairs at real:synthetic ratios 1:r (the paper: 1:1 ... 1:10, up to 5000
  synthetic next to 500 real 256 px tiles), optionally also with only the pairs a real-data segmenter
  agrees with (``agreement``: the real-only model of the first seed judges every pool pair; pairs whose
  mask and its phase map reach that mIoU are kept). ``agreement_classes`` "all" averages the IoU over every
  class; "judged" only over the classes the judge itself segments at the threshold on the validation
  micrographs, and only on the pixels the mask gives one of them (a judge blind to a rare phase otherwise
  rejects exactly the pairs rich in it).
- **Equal real-tile visits** (``budget``): ``"real-batch"`` (default) puts ``synthetic_per_batch`` synthetic
  tiles on top of each full batch of real tiles, so every setting sees each real tile as often as real only;
  ``"fixed-epochs"`` draws from the union and scales the steps with its size (the paper's fixed epochs);
  ``"fixed-steps"`` draws from the union for the same steps (synthetic tiles displace real ones: the
  earlier protocol, kept for comparison). ``synthetic_weight`` weighs a synthetic tile's loss.
- **Generation at the paper's pipeline**: pairs for paper 000's boosted fraction targets (optionally with
  boost ``levels``), doubled by a super-resolution model when one is given (paper 000 generates at 256 px
  and upsamples 2x), then brought to the real pixel size.
- **Scores**: whole held-out micrographs, sliding windows -> mIoU and mean Dice over the paper's class set
  (MetalDAM: precipitate left out, sec. 2.1) and over all classes, per-class IoU and Dice, missing-class
  IoU (paper 002), boundary F1, pixel accuracy; mean and sample standard deviation over >= 3 seeds.
- **Selection on validation**: the setting with the best mean validation mIoU is the one reported; the paper
  picks its best ratio on the test set, which this benchmark does not do. Test numbers of every setting
  are shown too, with whether its spread over seeds overlaps real only.

Synthetic pairs come from a generator model folder (a pool is generated once into ``OUT/synthetic.zarr`` and
reused, the first ``r * n_real`` pairs for ratio r) or from a dataset store of curated pairs (its accepted
ones). Every trained model's scores are written to ``OUT/runs/<setting>_seed<s>/metrics.json`` as it
finishes, the agreement scores to ``OUT/agreement.json``, and the pool is committed pair by pair, so an
interrupted benchmark resumes where it stopped, and a run with more seeds or other ratios reuses what is done.
"""
from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..core.curation import accepted_indices
from ..core.folder_export import write_csv
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.resample import median_pixel_size, to_real_scale
from ..core.sample import Sample
from ..core.schema import PhaseSchema
from ..core.store import DatasetStore, is_store
from ..core.tiles import labelled_tiles
from .evaluation import evaluate
from .segmentation import SegmentationConfig, train_segmenter
from .training_set import synthetic_needed

POOL_STORE = "synthetic.zarr"
AGREEMENT_FILE = "agreement.json"
TARGETS_PNG = "pool_targets.png"
POOL_PLAN = "pool.json"  # the number of pairs the pool's targets were drawn for
#: Config fields a finished benchmark folder may be re-run with changed (:func:`_check_settings_file`).
EXTENDABLE = ("ratios", "seeds", "agreement", "agreement_ratios", "agreement_classes")
#: Which classes the agreement rule averages over (see the module docstring).
AGREEMENT_CLASSES = ("all", "judged")
#: How the step budget treats real tiles (see the module docstring).
BUDGETS = ("real-batch", "fixed-epochs", "fixed-steps")
#: The classes paper 000 scores MetalDAM on (sec. 2.1: "We will also ignore precipitate class").
PAPER_CLASS_SETS = {"metaldam": ("matrix", "austenite", "martensite/austenite", "defect")}
#: How a setting's test mIoU interval stands against real only's (:func:`apart_from`).
SPREAD_WORDS = {1: "gain, apart", -1: "loss, apart", 0: "overlaps", None: "n/a (one seed)"}
#: Scores kept per split; "set" = over the benchmark's class set, "all" = over every class.
SCORES = ("miou_set", "dice_set", "miou_all", "dice_all", "accuracy", "mciou", "boundary_f1")


def paper_class_set(schema: PhaseSchema) -> tuple[str, ...]:
    """The classes paper 000 scores for this dataset (all of them where the paper says nothing)."""
    return PAPER_CLASS_SETS.get(schema.name, tuple(schema.names))


@dataclass
class AugmentBenchmarkConfig:
    """What is compared and at which scale (each field is described in the module docstring).

    ratios: synthetic pairs per real tile (0 = real only); the paper's 1:1 ... 1:10 are 1 ... 10.
    seeds: one model per setting and seed (the same seeds for every setting).
    segmentation: the segmenter and its training (``plm`` "baseline": a plain network, as in paper 000;
        ``scale_range`` (1, 1): the paper's basic augmentations have no magnification change).
    budget / synthetic_per_batch / synthetic_weight: the real-visit control and the synthetic loss weight.
    agreement: an mIoU threshold in (0, 1] for the agreement-curated settings (0: none), at
        ``agreement_ratios`` (empty: every ratio > 0), over ``agreement_classes``.
    class_set: the classes of the headline mIoU / Dice (empty: :func:`paper_class_set`).
    sampling: generator sampling options (sampler, steps, guidance_scale, batch_size) for the pool;
        levels: boost levels of the pool's fraction targets (phase name -> mean fraction; empty: paper 000's
        plain oversampling); upscale_steps: denoising steps of the super-resolution model, when one is given.
    """

    ratios: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    segmentation: SegmentationConfig = field(
        default_factory=lambda: SegmentationConfig(arch="Unet", preset="small", plm="baseline", tile_size=64,
                                                   input_scale=0.5, scale_range=(1.0, 1.0), steps=800)
    )
    budget: str = "real-batch"
    synthetic_per_batch: int = 4
    synthetic_weight: float = 1.0
    agreement: float = 0.0
    agreement_ratios: tuple[float, ...] = ()
    agreement_classes: str = "all"
    class_set: tuple[str, ...] = ()
    sampling: dict[str, Any] = field(default_factory=dict)
    levels: dict[str, float] = field(default_factory=dict)
    upscale_steps: int | None = None
    pool_seed: int = 0

    def __post_init__(self) -> None:
        self.ratios = tuple(sorted({float(r) for r in self.ratios}))
        self.seeds = tuple(int(s) for s in self.seeds)
        self.agreement_ratios = tuple(sorted({float(r) for r in self.agreement_ratios}))
        self.class_set = tuple(self.class_set)
        if not self.ratios or self.ratios[0] < 0:
            raise ValueError(f"ratios must be >= 0, got {self.ratios}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.segmentation.plm.lower() != "baseline":
            raise ValueError("the benchmark compares plain segmenters (plm='baseline'), as paper 000 does")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget (--budget) must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if self.budget == "real-batch" and self.synthetic_per_batch < 1:
            raise ValueError("the real-batch budget needs --synthetic-per-batch of at least 1")
        if self.synthetic_weight < 0:
            raise ValueError(f"synthetic_weight (--synthetic-weight) must be >= 0, got {self.synthetic_weight}")
        if not 0.0 <= self.agreement <= 1.0:
            raise ValueError(f"agreement (--agreement) is an mIoU threshold in [0, 1], got {self.agreement}")
        if self.agreement > 0 and self.ratios[0] != 0:
            raise ValueError("the agreement rule is judged by the real-only model: include ratio 0")
        if self.agreement_classes not in AGREEMENT_CLASSES:
            raise ValueError(f"agreement_classes (--agreement-classes) must be one of {', '.join(AGREEMENT_CLASSES)}, "
                             f"got {self.agreement_classes!r}")
        missing = [r for r in self.agreement_ratios if r not in self.ratios or r == 0]
        if missing:
            raise ValueError(f"--agreement-ratios {missing} are not among the ratios > 0 {list(self.ratios)}")

    @property
    def real_tile(self) -> int:
        """Tile side in real pixels: the field of view the segmenter sees."""
        return int(round(self.segmentation.tile_size / self.segmentation.input_scale))

    def settings(self) -> list["Setting"]:
        """Every trained setting: the ratios as they come, then the agreement-curated ones."""
        plain = [Setting(r) for r in self.ratios]
        if self.agreement <= 0:
            return plain
        curated = self.agreement_ratios or tuple(r for r in self.ratios if r > 0)
        return plain + [Setting(r, self.agreement, self.agreement_classes) for r in curated]

    def trained_config(self, setting: "Setting", n_real: int, n_synthetic: int) -> SegmentationConfig:
        """The segmenter's training for ``setting``: the budget and the synthetic loss weight applied."""
        seg = self.segmentation
        if n_synthetic == 0:
            return seg
        seg = replace(seg, synthetic_weight=self.synthetic_weight)
        if self.budget == "real-batch":
            return replace(seg, synthetic_per_batch=self.synthetic_per_batch)
        if self.budget == "fixed-epochs":
            return replace(seg, steps=int(round(seg.steps * (n_real + n_synthetic) / n_real)))
        return seg

    def real_visits(self, seg: SegmentationConfig, n_real: int, n_synthetic: int) -> float:
        """How often each real tile is drawn, on average, in a training with ``seg``."""
        real_per_step = (seg.batch_size if seg.synthetic_per_batch > 0
                         else seg.batch_size * n_real / (n_real + n_synthetic))
        return seg.steps * real_per_step / n_real

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["segmentation"] = self.segmentation.to_dict()
        return data


@dataclass(frozen=True)
class Setting:
    """One trained configuration: real:synthetic 1:``ratio``, the pool curated at ``agreement`` (0: not) over
    ``classes`` (:data:`AGREEMENT_CLASSES`)."""

    ratio: float
    agreement: float = 0.0
    classes: str = "all"

    @property
    def label(self) -> str:
        if self.ratio == 0:
            return "real only"
        judged = " on judged classes" if self.classes == "judged" else ""
        return f"1:{self.ratio:g}" + (f", agreement >= {self.agreement:g}{judged}" if self.agreement else "")

    def run_dir(self, out: Path, seed: int) -> Path:
        agreed = ""
        if self.agreement:
            agreed = f"_agree{self.agreement:g}" + ("_judged" if self.classes == "judged" else "")
        return out / "runs" / f"ratio{self.ratio:g}{agreed}_seed{seed}"


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
    levels: Mapping[str, float] | None = None,
    upscaler=None,
    upscale_steps: int | None = None,
    drawn: int | None = None,
) -> DatasetStore:
    """``n`` pairs from ``generator`` for paper 000's boosted fraction targets (of the real ``tile`` px
    tiles; boost ``levels`` where given) in the store at ``path``, each doubled by ``upscaler`` (a
    super-resolution model) when given; pairs already there are kept and generation continues after them.
    ``drawn`` (>= n): the pool size the targets are drawn for, so the first ``n`` pairs of a larger pool are
    the same whatever ``n`` a run needs.
    The targets' histogram against the real tiles' fractions goes beside the store (:data:`TARGETS_PNG`)."""
    from ..core.conditions import fraction_targets, tile_fractions
    from .reports import plot_target_histogram

    targets = fraction_targets(real_train, max(n, drawn or 0), seed=seed, tile=tile, downscale=generator.downscale,
                               levels=levels or None)
    real = tile_fractions(real_train, tile, generator.downscale)
    plot_target_histogram(targets, real, generator.schema, Path(path).parent / TARGETS_PNG, levels or None)
    store = DatasetStore.open(path, mode="a") if is_store(path) else DatasetStore.create(
        path, generator.schema, description=f"augmentation benchmark pool from {generator.name}")
    done = len(store)
    if done < n:
        def report(k: int, total: int, msg: str) -> None:  # the sampler counts its steps, the store the pairs
            progress(len(store), n, f"{len(store)}/{n} pairs stored; {msg}")

        pairs = generator.sample(targets[done:n], n=n - done, seed=seed + done, progress=report,
                                 should_stop=should_stop, **(sampling or {}))
        if upscaler is not None:
            pairs = upscaler.upscale_many(pairs, seed=seed + done, steps=upscale_steps, should_stop=should_stop)
        for pair in pairs:
            store.append(pair, split="synthetic")
            progress(len(store), n, f"{len(store)}/{n} pairs stored")
    return store


def _pool_pairs(store: DatasetStore, n: int, real_pixel_size: float | None, tile: int,
                accepted_only: bool) -> list[Sample]:
    indices = accepted_indices(store) if accepted_only else list(range(len(store)))
    if len(indices) < n:
        what = "accepted pairs" if accepted_only else "pairs"
        raise ValueError(f"the benchmark needs {n} synthetic pairs but {store.path} holds {len(indices)} {what}")
    return [to_real_scale(store[i], real_pixel_size, tile) for i in indices[:n]]


def _agreement_confusions(out: Path, judge, pool: Sequence[Sample], progress: ProgressFn,
                          should_stop: StopFn) -> np.ndarray:
    """Mask-vs-judge confusion matrix of every pool pair (cached in ``OUT/agreement.json`` in pool order, so a
    resumed benchmark does not judge again; a cache of an earlier version, scores only, is judged anew)."""
    from .generator_evaluation import agreement_confusions

    path = out / AGREEMENT_FILE
    cached = json.loads(path.read_text()) if path.exists() else {}
    confusions: list = cached.get("confusions", [])
    for start in range(len(confusions), len(pool), 64):
        check_stop(should_stop)
        confusions += agreement_confusions(judge, pool[start:start + 64], 1).tolist()
        path.write_text(json.dumps({"judge": "real-only model of the first seed", "confusions": confusions}))
        progress(len(confusions), len(pool), f"agreement of {len(confusions)}/{len(pool)} pool pairs")
    return np.array(confusions[: len(pool)])


def judged_classes(judge_metrics: Mapping[str, Any], schema: PhaseSchema, threshold: float) -> list[int]:
    """The classes the judge segments at ``threshold`` IoU or better on the validation micrographs (its
    ``metrics.json`` scores)."""
    return [i for i, name in enumerate(schema.names) if judge_metrics.get(f"val iou {name}", math.nan) >= threshold]


def agreement_scores(confusions: np.ndarray, judged: Sequence[int] | None) -> list[float]:
    """Per pair: mIoU of mask and judge over the judged classes (:func:`~.generator_evaluation.judged_agreement`;
    ``judged`` None: every class, the plain mIoU; nan counts as no agreement)."""
    from .generator_evaluation import judged_agreement

    classes = range(confusions.shape[-1]) if judged is None else judged
    return [judged_agreement(cm, classes) for cm in confusions]


def _scores(report: dict[str, Any], class_set: Sequence[str]) -> dict[str, float]:
    """The benchmark's numbers from an :func:`evaluate` report (class-set means ignore absent classes)."""
    def mean(values: Mapping[str, float], names: Sequence[str]) -> float:
        picked = np.array([values[n] for n in names], dtype=float)
        return float(np.nanmean(picked)) if np.isfinite(picked).any() else math.nan

    iou, dice = report["per_class_iou"], report["dice"]
    return {"miou_set": mean(iou, class_set), "dice_set": mean(dice, class_set), "miou_all": report["miou"],
            "dice_all": report["mean_dice"], "accuracy": report["accuracy"], "mciou": report["mciou"],
            "boundary_f1": report["boundary_f1"],
            **{f"iou {k}": v for k, v in iou.items()}, **{f"dice {k}": v for k, v in dice.items()}}


def _aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting (in the order first seen): mean and sample standard deviation over seeds of
    every score."""
    table = []
    for label in dict.fromkeys(r["setting"] for r in rows):
        group = [r for r in rows if r["setting"] == label]
        row: dict[str, Any] = {k: group[0][k] for k in ("setting", "ratio", "agreement", "synthetic_pairs",
                                                       "real_tiles", "steps", "real_visits")}
        row["seeds"] = len(group)
        for key in [k for k in group[0] if k.startswith(("val ", "test "))]:
            values = np.array([g.get(key, math.nan) for g in group], dtype=float)
            values = values[np.isfinite(values)]
            row[key] = float(values.mean()) if values.size else math.nan
            row[f"{key} sd"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        table.append(row)
    return table


def choose_on_validation(table: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of best mean validation mIoU over the class set (None without validation scores)."""
    scored = [r for r in table if math.isfinite(r.get("val miou_set", math.nan))]
    return max(scored, key=lambda r: r["val miou_set"], default=None)


def apart_from(row: dict[str, Any], reference: dict[str, Any], key: str = "test miou_set") -> int | None:
    """+1 when ``row``'s mean - sd lies above ``reference``'s mean + sd (a gain whose spread over seeds does
    not overlap), -1 for the opposite loss, 0 when the spreads overlap, None with a single seed (no spread).

    >>> apart_from({"m": 0.50, "m sd": 0.01, "seeds": 3}, {"m": 0.47, "m sd": 0.01, "seeds": 3}, "m")
    1
    """
    if min(row.get("seeds", 2), reference.get("seeds", 2)) < 2:
        return None
    low, high = row[key] - row[f"{key} sd"], row[key] + row[f"{key} sd"]
    ref_low, ref_high = reference[key] - reference[f"{key} sd"], reference[key] + reference[f"{key} sd"]
    return 1 if low > ref_high else -1 if high < ref_low else 0


def _markdown(table: list[dict[str, Any]], names: Sequence[str], class_set: Sequence[str],
              chosen: dict[str, Any] | None) -> str:
    def cell(row: dict[str, Any], key: str) -> str:  # the spread over seeds only where there are several
        mean, sd = row.get(key, math.nan), row.get(f"{key} sd", 0.0)
        spread = f" ± {100 * sd:.1f}" if row["seeds"] > 1 else ""
        return "n/a" if math.isnan(mean) else f"{100 * mean:.1f}{spread}"

    subset = list(class_set) != list(names)
    set_name = f"{len(class_set)} classes" if subset else "all"
    all_columns = ["test miou_all", "test dice_all"] if subset else []
    head = (["setting", "synthetic pairs", "steps", "real visits / tile", f"val mIoU ({set_name})",
             f"test mIoU ({set_name})", f"test Dice ({set_name})"]
            + ["test mIoU (all)", "test Dice (all)"] * subset
            + ["missing-class IoU", "boundary F1", "vs real only"] + [f"IoU {n}" for n in names])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        label = row["setting"] + (" **(chosen on val)**" if row is chosen else "")
        side = SPREAD_WORDS[apart_from(row, table[0])] if row is not table[0] else ""
        cells = [label, str(row["synthetic_pairs"]), str(row["steps"]), f"{row['real_visits']:.1f}",
                 cell(row, "val miou_set"), cell(row, "test miou_set"), cell(row, "test dice_set"),
                 *(cell(row, key) for key in all_columns), cell(row, "test mciou"),
                 cell(row, "test boundary_f1"), side]
        cells += [cell(row, f"test iou {n}") for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(table: list[dict[str, Any]], path: Path, set_name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    real = table[0]
    mean, sd = 100 * real["test miou_set"], 100 * real["test miou_set sd"]
    ax.axhspan(mean - sd, mean + sd, color="tab:blue", alpha=0.15)
    ax.axhline(mean, color="tab:blue", linestyle="--", linewidth=1, label="real only (basic aug.)")
    for agreement, style in ((0.0, "o-"), *((a, "s--") for a in sorted({r["agreement"] for r in table} - {0.0}))):
        rows = [r for r in table if r["agreement"] == agreement and r["ratio"] > 0]
        if rows:
            ax.errorbar([r["ratio"] for r in rows], [100 * r["test miou_set"] for r in rows],
                        yerr=[100 * r["test miou_set sd"] for r in rows], fmt=style, capsize=3,
                        label="real + synthetic" + (f" (agreement >= {agreement:g})" if agreement else ""))
    ax.set_xlabel("synthetic volume (pairs per real tile)")
    ax.set_ylabel(f"test mIoU, {set_name} (%)")
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


def _check_settings_file(out: Path, config: AugmentBenchmarkConfig) -> None:
    """Refuse a folder whose benchmark was run with other settings. Ratios, seeds, the agreement threshold and
    ratios may change (settings are added or left out and every finished run is reused), as long as the generated pool
    need not grow beyond the ratios it was drawn for and the agreement judge (the first seed) stays."""
    settings = out / "benchmark_config.json"
    new = json.loads(json.dumps(config.to_dict()))
    if settings.exists():
        old = json.loads(settings.read_text())
        changed = sorted(k for k in set(old) | set(new) if k not in EXTENDABLE and old.get(k) != new.get(k))
        if changed:
            raise FileExistsError(f"{out} holds a benchmark with other settings ({', '.join(changed)} differ, see "
                                  f"{settings}); choose another folder")
        if config.agreement and old["seeds"][0] != new["seeds"][0]:
            raise FileExistsError(f"the agreement judge of {out} is the real-only model of seed {old['seeds'][0]}; "
                                  "keep that seed first")
    settings.write_text(json.dumps(new, indent=2))


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
    real_val: Sequence[Sample] = (),
    upscaler=None,
) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``out``; give a ``generator`` (and optionally a super-resolution
    ``upscaler``) or a ``synthetic_store``. ``real_val``: whole micrographs the reported setting is chosen on.

    Returns ``{"table": rows per setting, "runs": rows per model, "chosen": the row chosen on validation
    (None without ``real_val``), "report": path of report.md}``.
    """
    if (generator is None) == (synthetic_store is None) and max(config.ratios) > 0:
        raise ValueError("give either a generator or a store of curated synthetic pairs")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings_file(out, config)
    schema = real_train[0].schema
    class_set = config.class_set or paper_class_set(schema)
    unknown = [n for n in class_set if n not in schema.names]
    if unknown:
        raise ValueError(f"class set names {unknown} are not phases of {schema.name}: {', '.join(schema.names)}")

    tile = config.real_tile
    real = labelled_tiles(real_train, tile)
    if not real:
        raise ValueError(f"the training micrographs hold no full {tile} px tile")
    n_synthetic = {r: synthetic_needed(r, len(real)) for r in config.ratios}
    settings = config.settings()
    total_runs = len(settings) * len(config.seeds)
    progress(0, total_runs, f"{len(real)} real {tile} px tiles; {max(n_synthetic.values())} synthetic pairs needed")
    pool = _pool(out, config, real_train, tile, max(n_synthetic.values()), generator, synthetic_store, upscaler,
                 lambda k, n, msg: progress(0, total_runs, f"synthetic pool: {msg}"), should_stop)

    if config.agreement and config.agreement_classes == "judged" and not real_val:
        raise ValueError("the judged classes of the agreement rule are found on validation micrographs: give some")
    rows, done, curated, judged, skipped = [], 0, None, None, []
    for setting in settings:
        if setting.agreement and curated is None:
            first = config.seeds[0]
            judge_dir = Setting(0.0).run_dir(out, first)
            judge = _train(real, replace(config.segmentation, seed=first), judge_dir, should_stop)
            confusions = _agreement_confusions(out, judge, pool, lambda k, n, msg: progress(done, total_runs, msg),
                                               should_stop)
            if setting.classes == "judged":
                judged = judged_classes(json.loads((judge_dir / "metrics.json").read_text()), schema,
                                        config.agreement)
            scores = agreement_scores(confusions, judged)
            curated = [p for p, score in zip(pool, scores) if score >= config.agreement]
        source = curated if setting.agreement else pool
        needed = n_synthetic[setting.ratio]
        if needed > len(source):
            skipped.append(f"{setting.label}: needs {needed} pairs, {len(source)} of the pool reached the agreement")
            done += len(config.seeds)
            continue
        seg = config.trained_config(setting, len(real), needed)
        for seed in config.seeds:
            check_stop(should_stop)
            metrics_file = setting.run_dir(out, seed) / "metrics.json"
            if not metrics_file.exists():
                def sub(k: int, n: int, msg: str, label: str = f"{setting.label}, seed {seed}", base: int = done) -> None:
                    progress(base, total_runs, f"{label}: {msg}")

                model = _train(real + source[:needed], replace(seg, seed=seed), setting.run_dir(out, seed),
                               should_stop, sub)
                row = {"setting": setting.label, "ratio": setting.ratio, "agreement": setting.agreement,
                       "seed": seed, "real_tiles": len(real), "synthetic_pairs": needed, "steps": seg.steps,
                       "real_visits": config.real_visits(seg, len(real), needed)}
                for split, samples in (("val", real_val), ("test", real_test)):
                    if samples:
                        report = evaluate(model, samples, progress=sub, should_stop=should_stop)
                        row.update({f"{split} {k}": v for k, v in _scores(report, class_set).items()})
                metrics_file.write_text(json.dumps(row, indent=2))
            rows.append(json.loads(metrics_file.read_text()))
            done += 1
            progress(done, total_runs, f"{done}/{total_runs} models trained and scored")

    table = _aggregate(rows)
    chosen = choose_on_validation(table)
    for name, data in (("runs.csv", rows), ("summary.csv", table)):
        write_csv(out / name, data)
    set_name = "all classes" if list(class_set) == list(schema.names) else ", ".join(class_set)
    _plot(table, out / "miou_vs_synthetic_volume.png", set_name)
    report = _write_report(out, table, chosen, config, class_set, skipped, dict(
        real_train=real_train, real_test=real_test, real_val=real_val, n_real=len(real), generator=generator,
        upscaler=upscaler, synthetic_store=synthetic_store, data_description=data_description,
        n_pool=len(pool), n_curated=None if curated is None else len(curated),
        judged=None if judged is None else [schema.names[i] for i in judged]))
    return {"table": table, "runs": rows, "chosen": chosen, "report": report}


def _pool(out: Path, config: AugmentBenchmarkConfig, real_train, tile: int, n: int, generator, synthetic_store,
          upscaler, progress: ProgressFn, should_stop: StopFn) -> list[Sample]:
    """The synthetic pairs at the real pixel size: generated into ``OUT/synthetic.zarr`` or the accepted
    pairs of ``synthetic_store`` (n of them; with an agreement rule every pair of the pool)."""
    if n == 0:
        return []
    if generator is not None:
        plan = out / POOL_PLAN
        if plan.exists():
            drawn = json.loads(plan.read_text())["pairs"]
        else:  # a pool of an earlier version holds what it was drawn for
            drawn = len(DatasetStore.open(out / POOL_STORE)) if is_store(out / POOL_STORE) else n
            plan.write_text(json.dumps({"pairs": drawn}))
        if n > drawn:
            raise FileExistsError(f"the pool in {out / POOL_STORE} was drawn as {drawn} pairs; {n} need a new folder "
                                  "(its targets depend on the pool size)")
        n = drawn if config.agreement else n
        store = generate_pool(generator, real_train, n, out / POOL_STORE, tile, seed=config.pool_seed,
                              sampling=config.sampling, progress=progress, should_stop=should_stop,
                              levels=config.levels, upscaler=upscaler, upscale_steps=config.upscale_steps,
                              drawn=drawn)
        accepted_only = False
    else:
        store, accepted_only = DatasetStore.open(Path(synthetic_store)), True
    available = len(accepted_indices(store)) if accepted_only else len(store)
    return _pool_pairs(store, max(n, available) if config.agreement else n, median_pixel_size(real_train), tile,
                       accepted_only)


def _train(samples: Sequence[Sample], seg: SegmentationConfig, run_dir: Path, should_stop: StopFn,
           progress: ProgressFn = no_progress):
    """The trained segmenter of ``run_dir`` (trained there, or read back from its last checkpoint)."""
    return train_segmenter(samples, seg, run_dir, progress=progress, should_stop=should_stop).model


def conclusion(table: list[dict[str, Any]], chosen: dict[str, Any] | None) -> list[str]:
    """The report's closing lines: the setting chosen on validation against real only on test, and which
    settings' test spreads do not overlap real only's.

    >>> rows = [{"setting": "real only", "test miou_set": 0.50, "test miou_set sd": 0.01},
    ...         {"setting": "1:1", "test miou_set": 0.46, "test miou_set sd": 0.01}]
    >>> conclusion(rows, rows[0])[0]
    'Chosen on validation: real only (no synthetic setting beat it there).'
    >>> conclusion(rows, rows[1])[0]
    'Chosen on validation: 1:1; on test it scores mIoU -4.0 points against real only (spreads apart: a loss).'
    """
    real = table[0]
    lines = []
    if chosen is None:
        lines.append("No validation split: no setting was chosen; the test rows are for reading only.")
    elif chosen is real:
        lines.append("Chosen on validation: real only (no synthetic setting beat it there).")
    else:
        gain = 100 * (chosen["test miou_set"] - real["test miou_set"])
        verdict = {1: "spreads apart: a gain", -1: "spreads apart: a loss", 0: "spreads overlap",
                   None: "one seed: no spread to compare"}[apart_from(chosen, real)]
        lines.append(f"Chosen on validation: {chosen['setting']}; on test it scores mIoU {gain:+.1f} points "
                     f"against real only ({verdict}).")
    gains = [r["setting"] for r in table[1:] if apart_from(r, real) == 1]
    losses = [r["setting"] for r in table[1:] if apart_from(r, real) == -1]
    lines.append("Settings whose test mIoU spread lies above real only's: " + (", ".join(gains) or "none") + "; below: "
                 + (", ".join(losses) or "none") + ".")
    return lines


def _write_report(out: Path, table, chosen, config: AugmentBenchmarkConfig, class_set, skipped: list[str],
                  facts: dict[str, Any]) -> Path:
    seg, generator, upscaler = config.segmentation, facts["generator"], facts["upscaler"]
    names = facts["real_train"][0].schema.names
    if generator is not None:
        levels = ", ".join(f"{k} {v:g}" for k, v in config.levels.items()) or "none (paper 000's oversampling)"
        source = (f"generator {generator.name} (model checksum {generator.model_checksum[:12] or 'n/a'}), "
                  f"{facts['n_pool']} pairs in {POOL_STORE}, boosted targets with boost levels: {levels}; sampling "
                  f"{config.sampling or 'defaults'}; "
                  + (f"doubled by super-resolution model {upscaler.model_checksum[:12]} ({config.upscale_steps or 'default'} steps)"
                     if upscaler is not None else "no super-resolution (pairs enlarged to the real pixel size)"))
    else:
        source = f"accepted pairs of {facts['synthetic_store']}"
    budget = {"real-batch": f"real-batch: every batch = {seg.batch_size} real tiles + {config.synthetic_per_batch} "
                            "synthetic ones, same steps (equal real-tile visits)",
              "fixed-epochs": "fixed-epochs: union drawn uniformly, steps scaled with its size (equal real visits)",
              "fixed-steps": "fixed-steps: union drawn uniformly for the same steps (synthetic displaces real)"}
    val = facts["real_val"]
    lines = [
        "# Augmentation benchmark (paper 000, Table 3 / Fig. 9 protocol, scaled down)",
        "",
        f"- data: {facts['data_description'] or 'real micrographs'}; {len(facts['real_train'])} training micrographs "
        f"-> {facts['n_real']} real {config.real_tile} px tiles; {len(val)} validation and "
        f"{len(facts['real_test'])} test micrographs, held out, whole (sliding window)",
        f"- synthetic pairs: {source}",
        f"- budget: {budget[config.budget]}; synthetic loss weight {config.synthetic_weight:g}",
        "- agreement rule: " + (f"pairs whose mask and the real-only model's (seed {config.seeds[0]}) phase map of "
                                f"their image reach mIoU {config.agreement:g}"
                                + (f" over the classes that model segments at IoU >= {config.agreement:g} on the "
                                   f"validation micrographs ({', '.join(facts['judged']) or 'none'}), on the pixels "
                                   "the mask gives them" if facts["judged"] is not None else "")
                                + f": {facts['n_curated']} of {facts['n_pool']} pool pairs"
                                if config.agreement else "not used"),
        f"- segmenter: {seg.arch} ({seg.preset} preset{', encoder ' + seg.encoder if seg.encoder else ''}), "
        f"no PLM, {seg.steps} steps of batch {seg.batch_size} (real only), network tile {seg.tile_size} px at input "
        f"scale {seg.input_scale:g}, Dice + cross-entropy, flips / rot90 / brightness-contrast-gamma augmentations",
        f"- class set of the headline mIoU / Dice: {', '.join(class_set)}"
        + (" (paper 000's)" if tuple(class_set) == PAPER_CLASS_SETS.get(facts["real_train"][0].schema.name) else ""),
        "- the reported setting is chosen on the validation mIoU, never on test",
        f"- seeds: {', '.join(map(str, config.seeds))}"
        + (" (mean and sample standard deviation over them)" if len(config.seeds) > 1 else "")
        + f"; hardware: {_hardware()}",
        "",
        _markdown(table, names, class_set, chosen),
        "",
        "Per-class IoU in %, test split. \"vs real only\": whether the interval of the setting's test mIoU "
        "(mean minus to mean plus one sd) lies apart from real only's.",
        "",
        *conclusion(table, chosen),
        *(["", "Not trained: " + "; ".join(skipped) + "."] if skipped else []),
        "",
        "![test mIoU against synthetic volume](miou_vs_synthetic_volume.png)",
        "",
        *([f"![the pool's fraction targets against the real tiles]({TARGETS_PNG})", ""] if generator is not None else []),
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
