"""Tables and pictures that describe samples: phase fractions per sample, their histograms, phase overlays, the
class balance of a training set and its real-vs-synthetic fraction histograms."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..core.folder_export import write_csv
from ..core.fractions import class_counts, mask_fractions
from ..core.sample import Sample
from ..core.schema import PhaseSchema

BALANCE_CSV = "class_balance.csv"
BALANCE_PNG = "class_balance.png"


#: the sample column of the fraction table and CSV
NAME_COLUMN = "name"


def fraction_rows(names: Sequence[str], fractions: np.ndarray, schema: PhaseSchema) -> list[dict]:
    """One row per sample: name and the fraction of every phase (by phase name)."""
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 2 or fractions.shape[1] != schema.n_classes:
        raise ValueError(f"expected fractions of shape (N, {schema.n_classes}), got {fractions.shape}")
    return [
        {NAME_COLUMN: name, **{phase: float(f) for phase, f in zip(schema.names, row)}}
        for name, row in zip(names, fractions)
    ]


def format_fraction_table(names: Sequence[str], fractions: np.ndarray, schema: PhaseSchema) -> str:
    """Plain-text table of per-sample phase fractions in percent, with the mean over samples last."""
    fractions = np.asarray(fractions, dtype=float)
    first = f"{NAME_COLUMN} (area %)"  # the CSV's column names, fractions there in [0, 1]
    width = max([len(first)] + [len(n) for n in names])
    cols = [max(len(p), 7) for p in schema.names]
    header = first.ljust(width) + "  " + "  ".join(p.rjust(c) for p, c in zip(schema.names, cols))
    lines = [header, "-" * len(header)]
    for name, row in zip(names, fractions):
        lines.append(name.ljust(width) + "  " + "  ".join(f"{100 * f:{c}.2f}" for f, c in zip(row, cols)))
    lines.append("-" * len(header))
    mean = fractions.mean(axis=0) if len(fractions) else np.zeros(schema.n_classes)
    lines.append("mean".ljust(width) + "  " + "  ".join(f"{100 * f:{c}.2f}" for f, c in zip(mean, cols)))
    return "\n".join(lines)


def write_fraction_csv(path: str | Path, names: Sequence[str], fractions: np.ndarray, schema: PhaseSchema) -> Path:
    """CSV with one row per sample and one column per phase (fractions in [0, 1])."""
    path = Path(path)
    rows = fraction_rows(names, fractions, schema)
    return write_csv(path, rows, [NAME_COLUMN, *schema.names])


def plot_fraction_histograms(path: str | Path, fractions: np.ndarray, schema: PhaseSchema, title: str = "") -> Path:
    """PNG with one histogram of the per-sample fraction per phase, drawn in the phase colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fractions = np.asarray(fractions, dtype=float)
    n = schema.n_classes
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for k, ax in enumerate(axes[0]):
        colour = schema.colors[k] / 255.0
        ax.hist(100 * fractions[:, k], bins=min(20, max(5, len(fractions))), color=colour, edgecolor="black")
        ax.set_title(schema.names[k], fontsize=10)
        ax.set_xlabel("area fraction (%)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # sample counts
        if k == 0:
            ax.set_ylabel("samples")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def phase_overlay(image: np.ndarray, mask: np.ndarray, schema: PhaseSchema, alpha: float = 0.4) -> np.ndarray:
    """The micrograph tinted with the phase colours, above a legend (colour, phase, area %): ``(H + legend, W, 3)``
    uint8 RGB.

    >>> Image.fromarray(phase_overlay(sample.image, labels, sample.schema)).save("overlay.png")  # doctest: +SKIP
    """
    from PIL import Image, ImageDraw, ImageFont

    grey = 255 * np.repeat(np.asarray(image, dtype=np.float32)[..., None], 3, axis=2)
    tinted = np.round((1 - alpha) * grey + alpha * schema.colors[mask]).astype(np.uint8)
    font = ImageFont.load_default(size=max(12, image.shape[1] // 60))
    line = font.size + 6
    legend = Image.new("RGB", (image.shape[1], 6 + line * schema.n_classes), "white")
    draw = ImageDraw.Draw(legend)
    for k, (name, share) in enumerate(zip(schema.names, mask_fractions(mask, schema))):
        y = 3 + k * line
        colour = tuple(int(c) for c in schema.colors[k])
        draw.rectangle((6, y, 6 + font.size, y + font.size), fill=colour, outline="black")
        draw.text((12 + font.size, y), f"{name}  {100 * share:.1f} %", fill="black", font=font)
    return np.concatenate([tinted, np.asarray(legend)], axis=0)


@dataclass
class ClassBalance:
    """Pixel counts per phase of the real training tiles (``before``) and of real + synthetic (``after``)."""

    schema: PhaseSchema
    before: np.ndarray
    after: np.ndarray

    @property
    def share_before(self) -> np.ndarray:
        return self.before / max(1, int(self.before.sum()))

    @property
    def share_after(self) -> np.ndarray:
        return self.after / max(1, int(self.after.sum()))

    def rows(self) -> list[dict]:
        return [
            {"phase": name, "share_real": float(b), "share_real_synthetic": float(a), "pixels_real": int(pb),
             "pixels_real_synthetic": int(pa)}
            for name, b, a, pb, pa in zip(
                self.schema.names, self.share_before, self.share_after, self.before, self.after
            )
        ]

    def as_text(self) -> str:
        """Plain-text table: pixel share per phase before/after in percent and the change in points."""
        width = max(len("phase"), *(len(n) for n in self.schema.names))
        header = f"{'phase':<{width}}  {'real only':>10}  {'real + synthetic':>16}  {'change':>10}"
        lines = [header, "-" * len(header)]
        for row in self.rows():
            b, a = 100 * row["share_real"], 100 * row["share_real_synthetic"]
            lines.append(f"{row['phase']:<{width}}  {b:9.2f} %  {a:14.2f} %  {a - b:+7.2f} pt")
        return "\n".join(lines)

    def as_markdown(self) -> str:
        lines = ["| phase | real only | real + synthetic | change |", "|---|---:|---:|---:|"]
        for row in self.rows():
            b, a = 100 * row["share_real"], 100 * row["share_real_synthetic"]
            lines.append(f"| {row['phase']} | {b:.2f} % | {a:.2f} % | {a - b:+.2f} pt |")
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> Path:
        return write_csv(path, self.rows())

    def plot(self, path: str | Path) -> Path:
        """Grouped bar chart: per phase, the pixel share in real only and in real + synthetic."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        x = np.arange(self.schema.n_classes)
        fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * self.schema.n_classes), 3.6))
        for offset, share, label, colour in (
            (-0.2, self.share_before, "real only", "0.65"),
            (0.2, self.share_after, "real + synthetic", "tab:blue"),
        ):
            bars = ax.bar(x + offset, 100 * share, width=0.4, label=label, color=colour, edgecolor="black")
            ax.bar_label(bars, labels=[f"{100 * s:.1f}" for s in share], fontsize=8, padding=2)
        ax.set_xticks(x, self.schema.names, rotation=15, fontsize=9)
        ax.set_ylabel("pixel share (%)")
        ax.set_ylim(0, 100 * max(self.share_before.max(), self.share_after.max()) * 1.15 + 1)
        ax.set_title("class balance of the training split")
        ax.legend(frameon=False)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _pixel_counts(samples: Sequence[Sample], schema: PhaseSchema) -> np.ndarray:
    total = np.zeros(schema.n_classes, dtype=np.int64)
    for sample in samples:
        if sample.mask is None:
            raise ValueError(f"sample {sample.name!r} has no mask")
        total += class_counts(sample.mask, schema.n_classes, schema.ignore_id)
    return total


def class_balance(
    samples_before: Sequence[Sample],
    samples_after: Sequence[Sample],
    schema: PhaseSchema,
    out_dir: str | Path | None = None,
) -> ClassBalance:
    """Pixel share per phase before (real only) and after (real + synthetic) adding synthetic pairs.

    With ``out_dir`` also writes ``class_balance.csv`` and ``class_balance.png`` (grouped bars) there;
    ``.as_text()`` gives the table.
    """
    balance = ClassBalance(schema, _pixel_counts(samples_before, schema), _pixel_counts(samples_after, schema))
    if out_dir is not None:
        balance.write_csv(Path(out_dir) / BALANCE_CSV)
        balance.plot(Path(out_dir) / BALANCE_PNG)
    return balance


def plot_real_vs_synthetic(path: str | Path, real: np.ndarray, synthetic: np.ndarray, schema: PhaseSchema) -> Path:
    """Per-phase histograms of the tile fractions of real tiles and synthetic pairs, overlaid (share of samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = schema.n_classes
    bins = np.linspace(0.0, 100.0, 21)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for k, ax in enumerate(axes[0]):
        for values, label, colour in ((real, "real tiles", "0.55"), (synthetic, "synthetic", "tab:blue")):
            if len(values):
                weights = np.full(len(values), 100.0 / len(values))
                ax.hist(100 * values[:, k], bins=bins, weights=weights, alpha=0.6, color=colour,
                        edgecolor="black", label=f"{label} ({len(values)})")
        ax.set_title(schema.names[k], fontsize=10)
        ax.set_xlabel("area fraction (%)")
        if k == 0:
            ax.set_ylabel("samples (%)")
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle("phase fractions per training sample")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def target_summary_rows(
    targets: np.ndarray,
    real: np.ndarray,
    schema: PhaseSchema,
    levels: Mapping[str, float] | None = None,
    expected: np.ndarray | None = None,
) -> list[dict]:
    """One row per phase: the mean and 90th percentile of its fraction over the real tiles and over the
    targets, its boost level (None where none is set) and, given the sampler's ``expected`` mean vector
    (:meth:`~napari_microsynth.core.conditions.BoostedFractionSampler.expected_mean`), the mean over many draws."""
    targets, real = np.asarray(targets, dtype=float), np.asarray(real, dtype=float)
    by_name = {schema.names[schema.index_of(name)]: float(level) for name, level in (levels or {}).items()}
    return [
        {"phase": name, "real_mean": float(real[:, k].mean()), "real_p90": float(np.percentile(real[:, k], 90)),
         "target_mean": float(targets[:, k].mean()), "target_p90": float(np.percentile(targets[:, k], 90)),
         "mixture_mean": None if expected is None else float(expected[k]), "level": by_name.get(name)}
        for k, name in enumerate(schema.names)
    ]


def format_target_summary(rows: Sequence[dict], n_real: int, n_targets: int) -> str:
    """Plain-text table of :func:`target_summary_rows` in percent."""
    width = max(len("phase"), *(len(row["phase"]) for row in rows))
    mixture = all(row.get("mixture_mean") is not None for row in rows)
    header = (f"{'phase':<{width}}  {f'real tiles ({n_real})':>17}  {f'targets ({n_targets})':>15}  "
              f"{'target p90':>10}" + (f"  {'mixture':>9}" if mixture else "") + f"  {'level':>7}")
    lines = [header, "-" * len(header)]
    for row in rows:
        level = "-" if row["level"] is None else f"{100 * row['level']:.1f} %"
        line = (f"{row['phase']:<{width}}  {100 * row['real_mean']:15.2f} %  {100 * row['target_mean']:13.2f} %  "
                f"{100 * row['target_p90']:8.1f} %")
        if mixture:
            line += f"  {100 * row['mixture_mean']:7.2f} %"
        lines.append(f"{line}  {level:>7}")
    if mixture:
        lines.append("(mixture: the mean over many draws, which a boost level sets; a few targets scatter around it)")
    return "\n".join(lines)


def target_histogram_figure(
    targets: np.ndarray,
    real: np.ndarray,
    schema: PhaseSchema,
    levels: Mapping[str, float] | None = None,
    size: tuple[float, float] | None = None,
    dpi: int = 110,
    columns: int | None = None,
):
    """A matplotlib ``Figure`` (no pyplot state, so any thread may draw it): per phase, the histogram of
    the real tile fractions and of the target fractions (share of each set), their means as dashed lines
    and the boost level, where set, as a red dotted line; one row of panels, or ``columns`` per row."""
    from matplotlib.figure import Figure

    targets, real = np.asarray(targets, dtype=float), np.asarray(real, dtype=float)
    rows = target_summary_rows(targets, real, schema, levels)
    n = schema.n_classes
    columns = min(n, columns or n)
    lines = -(-n // columns)
    fig = Figure(figsize=size or (2.9 * columns, 2.7 * lines), dpi=dpi)
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for k, (ax, row) in enumerate(zip(axes, rows)):
        top = max(real[:, k].max(initial=0.0), targets[:, k].max(initial=0.0), row["level"] or 0.0)
        bins = np.linspace(0.0, 100.0 * min(1.0, max(0.05, 1.05 * top)), 21)
        for values, label, colour in ((real, "real tiles", "0.55"), (targets, "targets", "tab:blue")):
            if len(values):
                weights = np.full(len(values), 100.0 / len(values))
                ax.hist(100 * values[:, k], bins=bins, weights=weights, alpha=0.55, color=colour,
                        edgecolor="black", linewidth=0.4, label=f"{label} ({len(values)})")
        ax.axvline(100 * row["real_mean"], color="0.3", linestyle="--", linewidth=1.2, label="real mean")
        ax.axvline(100 * row["target_mean"], color="tab:blue", linestyle="--", linewidth=1.2, label="target mean")
        title = f"{row['phase']}\nreal {100 * row['real_mean']:.1f} %, targets {100 * row['target_mean']:.1f} %"
        if row["level"] is not None:
            ax.axvline(100 * row["level"], color="tab:red", linestyle=":", linewidth=1.8, label="boost level")
            title += f"\nlevel {100 * row['level']:.1f} %"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("area fraction (%)", fontsize=7)
        ax.tick_params(labelsize=6)
        if k == 0:
            ax.set_ylabel("tiles / targets (%)", fontsize=7)
            if row["level"] is None and any(r["level"] is not None for r in rows):
                ax.plot([], [], color="tab:red", linestyle=":", linewidth=1.8, label="boost level")
            ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return fig


def plot_target_histogram(
    targets: np.ndarray,
    real: np.ndarray,
    schema: PhaseSchema,
    path: str | Path,
    levels: Mapping[str, float] | None = None,
) -> Path:
    """PNG of :func:`target_histogram_figure`: per phase, the real tile fractions against the fraction targets
    (paper 000, sec. 2.2.2, Fig. 10 and 12a), means marked, boost levels marked where set."""
    fig = target_histogram_figure(targets, real, schema, levels)
    path = Path(path)
    fig.savefig(path)
    return path
