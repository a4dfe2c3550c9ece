"""Tables and plots that describe a set of samples: phase fractions per sample and their histograms."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.schema import PhaseSchema


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
    width = max([len("sample"), len("mean")] + [len(n) for n in names])
    cols = [max(len(p), 7) for p in schema.names]
    header = "sample".ljust(width) + "  " + "  ".join(p.rjust(c) for p, c in zip(schema.names, cols))
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
        writer.writerows(rows)
    return path


def plot_fraction_histograms(path: str | Path, fractions: np.ndarray, schema: PhaseSchema, title: str = "") -> Path:
    """PNG with one histogram of the per-sample fraction per phase, drawn in the phase colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = np.asarray(fractions, dtype=float)
    n = schema.n_classes
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for k, ax in enumerate(axes[0]):
        colour = schema.colors[k] / 255.0
        ax.hist(100 * fractions[:, k], bins=min(20, max(5, len(fractions))), color=colour, edgecolor="black")
        ax.set_title(schema.names[k], fontsize=10)
        ax.set_xlabel("area fraction (%)")
        if k == 0:
            ax.set_ylabel("samples")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
