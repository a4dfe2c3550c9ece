"""Evaluating segmenters on held-out whole micrographs, and the PLM's phase-ratio accuracy sweep.

:func:`evaluate` pools all pixels of the test micrographs into one confusion matrix (per-class IoU,
mIoU, Dice, pixel accuracy, missing-class IoU). :func:`alpha_sweep` feeds a PLM model simulated expert
guesses of each micrograph's phase ratio at accuracy alpha (paper 001, appendix A.2, eq. 4-5) and scores
each; :func:`run_comparison` trains a baseline and a PLM model on the same split and seeds and writes
the sweep as a table and a plot of score against alpha with the baseline as reference (like paper 001,
Fig. 9, where the PLM beats the baseline above a guess accuracy of 66.2 %).

Correction rows ("+ correction (trust L)") add the ratio correction of
:mod:`~napari_microsynth.core.ratio_correction` with the guess as its target, to the PLM and to the
baseline alike: the guess carries information whichever network gets it, so the baseline with the
correction is the fair control for the PLM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.conditions import expert_guess
from ..core.folder_export import write_csv
from ..core.metrics import phase_boundary_f1, segmentation_report
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Sample
from ..models.plm import PLMFlags
from .inference import PhaseRatioSession, calibrate_temperature, predict_image

#: Guess accuracies of the sweep; None = no ratio (zeros). Paper 001 infers at 0.9 (sec. 3.2).
ALPHAS: tuple[float | None, ...] = (None, 0.3, 0.5, 0.66, 0.9, 1.0)
METRICS = ("miou", "mean_dice", "accuracy", "mciou", "boundary_f1")


def _check_test_samples(samples: Sequence[Sample], schema) -> None:
    if not samples:
        raise ValueError("no test samples given")
    for s in samples:
        if s.mask is None:
            raise ValueError(f"test sample {s.name!r} has no mask; evaluation needs annotated micrographs")
        if s.schema != schema:
            raise ValueError(f"test sample {s.name!r} uses schema {s.schema.name!r}, the model {schema.name!r}")


def _report(truths: list[np.ndarray], predictions: list[np.ndarray], schema) -> dict[str, Any]:
    report = segmentation_report(
        np.concatenate([t.ravel() for t in truths]), np.concatenate([p.ravel() for p in predictions]), schema
    )
    dice = np.array(list(report["dice"].values()), dtype=float)
    report["mean_dice"] = float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")
    report["boundary_f1"] = float(np.mean([phase_boundary_f1(t, p, schema.ignore_id)
                                           for t, p in zip(truths, predictions)]))
    report["n_samples"] = len(truths)
    return report


def evaluate(
    model,
    samples: Sequence[Sample],
    ratios=None,
    device=None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> dict[str, Any]:
    """Scores of ``model`` on annotated micrographs, all pixels pooled.

    ``ratios``: None (no ratio), ``"true"`` (each micrograph's true fractions) or an ``(N, C)`` array.
    Returns ``per_class_iou`` and ``dice`` (by phase name), ``miou``, ``mean_dice``, ``accuracy``,
    ``mciou`` (paper 002's missing-class IoU), ``boundary_f1`` (phase interfaces within 2 px, mean over
    micrographs) and ``n_samples``.
    """
    _check_test_samples(samples, model.schema)
    if isinstance(ratios, str):
        if ratios != "true":
            raise ValueError(f"ratios must be None, 'true' or an (N, C) array, got {ratios!r}")
        ratios = [s.fractions for s in samples]
    elif ratios is not None:
        ratios = np.asarray(ratios, dtype=float)
        if ratios.shape != (len(samples), model.n_classes):
            raise ValueError(f"ratios must have shape ({len(samples)}, {model.n_classes}), got {ratios.shape}")
    predictions = []
    for i, sample in enumerate(samples):
        check_stop(should_stop)
        labels, _ = predict_image(model, sample.image, None if ratios is None else ratios[i], device=device,
                                  should_stop=should_stop)
        predictions.append(labels)
        progress(i + 1, len(samples), f"evaluated {sample.name}")
    return _report([s.mask for s in samples], predictions, model.schema)


def _ratio_label(alpha: float | None) -> str:
    return "no ratio" if alpha is None else f"alpha={alpha:g}"


def _row(model_name: str, alpha: float | None, report: dict[str, Any], seed: int | None,
         trust: float = 0.0) -> dict[str, Any]:
    row: dict[str, Any] = {
        "seed": seed,
        "model": model_name if trust == 0 else f"{model_name} + correction (trust {trust:g})",
        "ratio": _ratio_label(alpha),
        "alpha": float("nan") if alpha is None else float(alpha),
        "trust": float(trust),
    }
    row.update({m: report[m] for m in METRICS})
    row.update({f"iou {name}": v for name, v in report["per_class_iou"].items()})
    return row


def sweep_settings(model, alphas: Sequence[float | None],
                   trusts: Sequence[float] = (0.0,)) -> list[tuple[float | None, float]]:
    """The (alpha, trust) pairs ``model`` is scored at: no ratio (alpha None) only at trust 0, a guessed
    ratio at trust 0 only for a PLM with its ratio encoder, and every guessed ratio at each trust > 0."""
    return [(alpha, trust) for trust in trusts for alpha in alphas
            if (alpha is None and trust == 0) or (alpha is not None and (trust > 0 or model.uses_ratio))]


def sweep_reports(
    model,
    samples: Sequence[Sample],
    alphas: Sequence[float | None] = ALPHAS,
    device=None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    trusts: Sequence[float] = (0.0,),
    temperature: float = 1.0,
) -> list[tuple[float | None, float, dict[str, Any]]]:
    """``(alpha, trust, report)`` for each of :func:`sweep_settings`: for each micrograph the model gets
    the simulated expert guess ``expert_guess(true fractions, alpha)`` (None = no ratio) and, at trust
    > 0, the ratio correction towards it (posteriors at ``temperature``). Image features are computed
    once per micrograph (:class:`PhaseRatioSession`) and reused for every setting."""
    settings = sweep_settings(model, alphas, trusts)
    _check_test_samples(samples, model.schema)
    predictions: list[list[np.ndarray]] = [[] for _ in settings]
    for i, sample in enumerate(samples):
        session = PhaseRatioSession(model, sample.image, device=device, temperature=temperature,
                                    should_stop=should_stop)
        for k, (alpha, trust) in enumerate(settings):
            ratio = None if alpha is None else expert_guess(sample.fractions, alpha)
            predictions[k].append(session.labels(ratio, trust))
        progress(i + 1, len(samples), f"swept {sample.name}")
    truths = [s.mask for s in samples]
    return [(alpha, trust, _report(truths, labels, model.schema))
            for (alpha, trust), labels in zip(settings, predictions)]


def alpha_sweep(
    model,
    samples: Sequence[Sample],
    alphas: Sequence[float | None] = ALPHAS,
    seed: int = 0,
    baseline=None,
    device=None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    trusts: Sequence[float] = (0.0,),
) -> list[dict[str, Any]]:
    """The sweep of :func:`sweep_reports` as table rows (seed, model, ratio input, alpha, trust, scores),
    with a first row for a ``baseline`` model scored on the same samples when one is given."""
    rows = []
    if baseline is not None:
        rows.append(_row("baseline", None, evaluate(baseline, samples, None, device, no_progress, should_stop), seed))
    name = f"PLM {model.plm_flags.name}"
    swept = sweep_reports(model, samples, alphas, device, progress, should_stop, trusts)
    return rows + [_row(name, alpha, report, seed, trust) for alpha, trust, report in swept]


# ----------------------------------------------------------------------------------------------
# tables and plot


def _group(rows: Sequence[dict[str, Any]]) -> list[tuple[tuple[str, str], list[dict[str, Any]]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["ratio"]), []).append(row)
    return list(groups.items())


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.array(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _cell(values: list[float]) -> str:
    mean, std = _mean_std(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {std:.4f}"


def crossover_alpha(rows: Sequence[dict[str, Any]], model: str, baseline: str = "baseline") -> float | None:
    """The guess accuracy above which ``model``'s mean mIoU (no correction) reaches the baseline's (linear
    interpolation between swept alphas), or None if it never does or always does."""
    base = _mean_std([r["miou"] for r in rows if r["model"] == baseline])[0]
    points = sorted(
        (alpha, _mean_std([r["miou"] for r in group])[0])
        for (name, _), group in _group(rows)
        if name == model and not math.isnan(alpha := group[0]["alpha"])
    )
    for (a0, m0), (a1, m1) in zip(points, points[1:]):
        if m0 < base <= m1:
            return a0 + (base - m0) * (a1 - a0) / (m1 - m0)
    return None


def sweep_markdown(rows: Sequence[dict[str, Any]], title: str = "") -> str:
    """Markdown table of the sweep, mean ± std over seeds per (model, ratio input), under ``title``
    (which data and split), and where each PLM variant wins or loses against the baseline."""
    phase_cols = [k for k in rows[0] if k.startswith("iou ")]
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    header = ["model", "ratio input", "mIoU", "mean Dice", "accuracy", "missing-class IoU", "boundary F1",
              *phase_cols]
    lines = [
        *([title.strip(), ""] if title.strip() else []),
        f"Scores on {len(seeds) or 1} training seed(s) (mean ± std where more than one).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for (model, ratio), group in _group(rows):
        cells = [_cell([r[m] for r in group]) for m in (*METRICS, *phase_cols)]
        lines.append("| " + " | ".join([model, ratio, *cells]) + " |")
    lines += _against_baseline(rows)
    if any(r["trust"] > 0 for r in rows):
        lines += ["", "'+ correction (trust L)': per-class logit bias moving the phase map's fractions the share L "
                      "of the way from the network's own to the guessed ratio (L = 1: exactly the guess); "
                      "posteriors at the temperature fitted on the validation split."]
    return "\n".join(lines) + "\n"


def _against_baseline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Lines saying, per PLM variant without correction, its mIoU and Dice difference to the baseline at
    no ratio and at each guess accuracy (mean over seeds), and its crossover accuracy."""
    base = {m: _mean_std([r[m] for r in rows if r["model"] == "baseline"])[0] for m in ("miou", "mean_dice")}
    if math.isnan(base["miou"]):
        return []
    lines = ["", "Against the baseline (mean over seeds; negative: the PLM loses):", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        if not model.startswith("PLM ") or "correction" in model:
            continue
        diffs = [f"{ratio} {100 * (_mean_std([r['miou'] for r in g])[0] - base['miou']):+.1f} mIoU / "
                 f"{100 * (_mean_std([r['mean_dice'] for r in g])[0] - base['mean_dice']):+.1f} Dice points"
                 for (name, ratio), g in _group(rows) if name == model]
        cross = crossover_alpha(rows, model)
        lines.append(f"- {model}: " + "; ".join(diffs)
                     + (f"; reaches the baseline's mIoU from a guess accuracy of about {cross:.2f}" if cross else ""))
    return lines


def write_sweep_table(rows: Sequence[dict[str, Any]], out_dir: str | Path, stem: str = "alpha_sweep",
                      title: str = "") -> tuple[Path, Path]:
    """``<stem>.csv`` (one row per seed, model and ratio input) and ``<stem>.md`` (aggregated, under
    ``title``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_csv(csv_path, rows)
    md_path.write_text(sweep_markdown(rows, title))
    return csv_path, md_path


def plot_alpha_sweep(rows: Sequence[dict[str, Any]], path: str | Path, metric: str = "miou") -> Path:
    """PNG of ``metric`` against the guess accuracy alpha for the PLM model(s), with the no-ratio PLM
    score and the baseline as horizontal references (cf. paper 001, Fig. 9)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    models = list(dict.fromkeys(r["model"] for r in rows))
    for k, model in enumerate(models):
        colour = f"C{k}"
        groups = [(g[0]["alpha"], _mean_std([r[metric] for r in g])) for (m, _), g in _group(rows) if m == model]
        swept = sorted((a, ms) for a, ms in groups if not math.isnan(a))
        flat = [ms for a, ms in groups if math.isnan(a)]
        if swept:
            alphas = [a for a, _ in swept]
            means = np.array([ms[0] for _, ms in swept])
            stds = np.array([ms[1] for _, ms in swept])
            ax.errorbar(alphas, means, yerr=stds, marker="o", capsize=3, color=colour, label=f"{model} (guessed ratio)")
        for mean, std in flat:
            style = "--" if swept else "-"
            label = f"{model} (no ratio)"
            ax.axhline(mean, linestyle=style, color=colour, label=label)
            if std > 0:
                ax.axhspan(mean - std, mean + std, color=colour, alpha=0.12)
    ax.set_xlabel("phase-ratio guess accuracy alpha")
    ax.set_ylabel({"miou": "mIoU", "mean_dice": "mean Dice"}.get(metric, metric))
    ax.set_xlim(0.0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# baseline vs PLM


@dataclass(frozen=True)
class Variant:
    """One network of a comparison: a PLM setting (an ablation name; "baseline" = no PLM) and, for PLM
    settings, its ratio recipe ("default", or "paper": paper 001's exact per-tile ratios) and width
    (None: the config's).

    Spelled ``SETTING[:paper][:wN]`` on the command line, e.g. ``RE+SA:paper`` or ``RE+SA+FA:w64``.
    """

    setting: str
    paper_recipe: bool = False
    width: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Variant":
        setting, *modifiers = str(text).strip().split(":")
        flags = PLMFlags.from_name(setting)  # raises on an unknown setting
        paper, width = False, None
        for modifier in modifiers:
            if modifier.lower() == "paper":
                paper = True
            elif modifier.lower().startswith("w") and modifier[1:].isdigit() and int(modifier[1:]) > 0:
                width = int(modifier[1:])
            else:
                raise ValueError(f"unknown modifier {modifier!r} in {text!r}: use ':paper' (paper 001's ratio "
                                 "recipe) or ':wN' (PLM width N channels)")
        if flags is None and (paper or width):
            raise ValueError(f"{text!r}: the baseline has no PLM, so no ratio recipe or width")
        return cls("baseline" if flags is None else flags.name, paper, width)

    @property
    def is_baseline(self) -> bool:
        return self.setting == "baseline"

    @property
    def label(self) -> str:
        """The model column of the tables: ``baseline``, ``PLM RE+SA``, ``PLM RE+SA+FA (paper recipe)``."""
        if self.is_baseline:
            return "baseline"
        extras = [*(["paper recipe"] if self.paper_recipe else []), *([f"width {self.width}"] if self.width else [])]
        return f"PLM {self.setting}" + (f" ({', '.join(extras)})" if extras else "")

    @property
    def folder_name(self) -> str:
        """Work folder per seed: ``baseline``, ``plm`` (the full PLM, default recipe) or e.g. ``plm-RE+SA-paper``."""
        if self.is_baseline:
            return "baseline"
        parts = [] if self.setting == "RE+SA+FA" else [self.setting]
        parts += (["paper"] if self.paper_recipe else []) + ([f"w{self.width}"] if self.width else [])
        return "-".join(["plm", *parts])

    def config(self, base, seed: int):
        """``base`` (a SegmentationConfig) for this variant and seed."""
        config = replace(base, plm=self.setting, seed=int(seed))
        if self.paper_recipe:
            config = config.with_paper_ratio_recipe()
        return replace(config, plm_width=self.width) if self.width else config


@dataclass
class ComparisonResult:
    """Rows of the sweep and the files written by :func:`run_comparison`."""

    rows: list[dict[str, Any]]
    csv_path: Path
    markdown_path: Path
    plot_path: Path
    model_folders: list[Path]


def _metrics_for_card(report: dict[str, Any], sweep: list[dict[str, Any]] | None, split: str) -> dict[str, Any]:
    """The card's metrics on ``split`` (named in every key, so cards keep the scores of several splits)."""
    metrics: dict[str, Any] = {f"test micrographs ({split})": report["n_samples"]}
    metrics.update({f"{m} ({split}, no ratio)": report[m] for m in METRICS})
    for row in sweep or []:
        if not math.isnan(row["alpha"]):
            setting = row["ratio"] if row["trust"] == 0 else f"{row['ratio']}, correction trust {row['trust']:g}"
            metrics[f"miou ({split}, {setting})"] = row["miou"]
            metrics[f"mean_dice ({split}, {setting})"] = row["mean_dice"]
    metrics[f"IoU ({split}, no ratio)"] = report["per_class_iou"]
    metrics[f"Dice ({split}, no ratio)"] = report["dice"]
    return metrics


def _earlier_metrics(folder: Path) -> dict[str, Any]:
    """Metrics an existing model folder already records (scores of other test splits), else none."""
    from ..models.folder import read_model_config

    try:
        return dict(read_model_config(folder).get("metrics") or {})
    except (FileNotFoundError, ValueError):
        return {}


def _shifted(progress: ProgressFn, base: int, total: int, label: str) -> ProgressFn:
    """``progress`` for one stage of a longer run: its steps counted from ``base`` out of ``total``."""
    return lambda done, _total, message: progress(base + done, total, f"{label}: {message}")


def run_comparison(
    train_samples: Sequence[Sample],
    test_samples: Sequence[Sample],
    config,
    seeds: Sequence[int] = (0,),
    out_dir: str | Path = "comparison",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    alphas: Sequence[float | None] = ALPHAS,
    data_description: str = "",
    trusts: Sequence[float] = (),
    val_samples: Sequence[Sample] = (),
    variants: Sequence[str | Variant] | None = None,
    test_split: str = "test",
) -> ComparisonResult:
    """Train each of ``variants`` (default: the baseline and ``config.plm``, or the full PLM if that is
    "baseline") on the same samples for each seed, score them on ``test_samples`` and write
    ``alpha_sweep-<test_split>.csv/.md/.png``. ``data_description`` (which data and split) is recorded in
    every model card.

    ``trusts`` (each > 0) add correction rows for every network; their temperature is fitted on
    ``val_samples`` (1.0 without) and recorded in the model folder (``training.temperature``).

    Each training runs in ``out_dir/seed<k>/<variant folder>`` (so an interrupted comparison resumes, and
    another test split reuses the trained networks) and leaves a model folder ``model`` there whose card
    keeps the measured metrics of every test split scored so far.
    """
    from .segmentation import train_segmenter

    if not seeds:
        raise ValueError("give at least one seed")
    if variants is None:
        variants = ("baseline", config.plm if config.plm.lower() != "baseline" else "RE+SA+FA")
    variants = [v if isinstance(v, Variant) else Variant.parse(v) for v in variants]
    if not variants or len({v.folder_name for v in variants}) < len(variants):
        raise ValueError(f"give distinct variants, got {[v.label for v in variants]}")
    out_dir = Path(out_dir)
    unit_total = len(seeds) * len(variants) * (config.steps + len(val_samples) + len(test_samples))
    rows: list[dict[str, Any]] = []
    folders: list[Path] = []
    offset = 0
    for seed in seeds:
        baseline: dict[str, Any] = {}
        for variant in variants:
            check_stop(should_stop)
            work = out_dir / f"seed{seed}" / variant.folder_name
            label = f"seed {seed}, {variant.label}"
            result = train_segmenter(train_samples, variant.config(config, seed), work,
                                     _shifted(progress, offset, unit_total, label), should_stop)
            offset += config.steps
            model, temperature = result.model, 1.0
            if val_samples:
                temperature = calibrate_temperature(model, val_samples, None,
                                                    _shifted(progress, offset, unit_total, label), should_stop)
                result.extra["temperature"] = temperature
                offset += len(val_samples)
            swept = [None, *[a for a in alphas if a is not None]]
            reports = sweep_reports(model, test_samples, swept, None, _shifted(progress, offset, unit_total, label),
                                    should_stop, (0.0, *trusts), temperature)
            offset += len(test_samples)
            sweep = [_row(variant.label, alpha, r, seed, trust) for alpha, trust, r in reports]
            rows.extend(sweep)
            if data_description:
                result.extra["data"] = data_description
            metrics = {**_earlier_metrics(work / "model"), **_metrics_for_card(reports[0][2], sweep, test_split)}
            if variant.is_baseline:
                baseline = {f"baseline {m} ({test_split}, no ratio)": reports[0][2][m] for m in ("miou", "mean_dice")}
            else:
                metrics.update(baseline)  # the card then says where this PLM loses to the baseline
            folders.append(result.save(work / "model", metrics=metrics))
    stem = f"alpha_sweep-{_file_safe(test_split)}"
    csv_path, md_path = write_sweep_table(rows, out_dir, stem, title=f"Test split: {test_split}. {data_description}")
    plot_path = plot_alpha_sweep(rows, out_dir / f"{stem}.png")
    return ComparisonResult(rows, csv_path, md_path, plot_path, folders)


def _file_safe(name: str) -> str:
    """``name`` with characters other than letters, digits, '-', '_' and '.' replaced by '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "split"
