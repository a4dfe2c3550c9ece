"""Tables and pictures that describe samples: phase fractions per sample, their histograms, phase overlays."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.fractions import mask_fractions
from ..core.schema import PhaseSchema
from ..core.store import spreadsheet_safe


def fraction_rows(names: Sequence[str], fractions: np.ndarray, schema: PhaseSchema) -> list[dict]:
    """One row per sample: name and the fraction of every phase (by phase name)."""
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 2 or fractions.shape[1] != schema.n_classes:
        raise ValueError(f"expected fractions of shape (N, {schema.n_classes}), got {fractions.shape}")
    return [
        {"name": name, **{phase: float(f) for phase, f in zip(schema.names, row)}}
        for name, row in zip(names, fractions)
    ]


def format_fraction_table(names: Sequence[str], fractions: np.ndarray, schema: PhaseSchema) -> str:
    """Plain-text table of per-sample phase fractions in percent, with the mean over samples last."""
    fractions = np.asarray(fractions, dtype=float)
    width = max([len("sample (area %)")] + [len(n) for n in names])
    cols = [max(len(p), 7) for p in schema.names]
    header = "sample (area %)".ljust(width) + "  " + "  ".join(p.rjust(c) for p, c in zip(schema.names, cols))
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
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["name", *schema.names])
        writer.writeheader()
        writer.writerows(spreadsheet_safe(row) for row in rows)
    return path


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
