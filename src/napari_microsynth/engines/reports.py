"""Tables and pictures that describe samples: phase fractions per sample, their histograms, phase overlays, the
class balance of a training set and its real-vs-synthetic fraction histograms."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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
