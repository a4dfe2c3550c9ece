"""Batch quantification: a folder of micrographs -> each one's phase fractions, a summary and a plot.

Every micrograph is segmented with one model (optionally with a phase ratio and the ratio correction's
trust, as ``microsynth segment`` does) and its area fractions are appended to ``rows.jsonl`` in the output
folder the moment they are known, so an interrupted run resumes with the next micrograph. A file that
cannot be read or is smaller than the model's window is reported and skipped, not fatal. A TIFF too large to
read whole is segmented block by block (bounded memory) into ``phase_maps/<name>.zarr``. At the end:

- ``fractions.csv``: one row per micrograph (size, pixel size, fraction of every phase in %),
- ``summary.csv`` / ``summary.md``: per phase the mean over micrographs with its 95 % confidence interval
  (t-based, micrographs as the sampled fields, like ASTM E562's fields), standard deviation, min, max,
- ``fractions.png``: per-micrograph stacked bars and the mean +- 95 % CI per phase.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.folder_export import write_csv
from ..core.fractions import mask_fractions
from ..core.io import MICROGRAPH_SUFFIXES, read_micrograph
from ..core.large_image import is_large_micrograph
from ..core.point_count import mean_ci95
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from .inference import predict_image

ROWS_FILE = "rows.jsonl"
SETTINGS_FILE = "settings.json"


def micrograph_files(folder: str | Path) -> list[Path]:
    """The micrographs to quantify: the files of ``folder/images`` for a dataset folder, else those of
    ``folder`` itself (not its subfolders), in name order; raises when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of micrographs")
    source = folder / "images" if (folder / "images").is_dir() else folder
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in MICROGRAPH_SUFFIXES)
    if not files:
        raise ValueError(f"{source} holds no micrographs ({', '.join(MICROGRAPH_SUFFIXES)})")
    return files


@dataclass
class QuantifyResult:
    """Per-micrograph rows, skipped files with the reason, per-phase summary and the files written."""

    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    summary: list[dict[str, Any]]
    csv_path: Path
    summary_path: Path
    plot_path: Path


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an earlier, possibly interrupted run; a line torn by the interruption is cut from the file."""
    if not path.exists():
        return []
    rows = []
    text = path.read_text()
    for line in text.splitlines(keepends=True):
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
        if not line.endswith("\n"):
            break
    kept = "".join(json.dumps(row) + "\n" for row in rows)
    if kept != text:
        path.write_text(kept)
    return rows


def _append_row(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def quantify(
    model,
    files: Sequence[str | Path],
    out_dir: str | Path,
    ratio=None,
    trust: float = 0.0,
    temperature: float = 1.0,
    model_name: str = "",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> QuantifyResult:
    """Segment each of ``files`` with ``model`` and write the tables and plot into ``out_dir`` (resumes
    a run with the same settings there; refuses a folder holding another run's)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"model": model_name, "schema": model.schema.to_dict(),
                "ratio": None if ratio is None else [float(v) for v in ratio], "trust": float(trust),
                "temperature": float(temperature)}
    settings_path = out_dir / SETTINGS_FILE
    if settings_path.exists() and json.loads(settings_path.read_text()) != settings:
        raise FileExistsError(f"{out_dir} holds a quantification with other settings ({settings_path}); "
                              "choose another --out folder")
    settings_path.write_text(json.dumps(settings, indent=2))
    rows_path = out_dir / ROWS_FILE
    done = {row["micrograph"]: row for row in _read_rows(rows_path)}
    window = int(round(model.tile_size / model.input_scale))
    names = model.schema.names
    for k, path in enumerate(map(Path, files)):
        check_stop(should_stop)
        if path.name not in done:
            row = _quantify_one(model, path, window, names, ratio, trust, temperature, should_stop,
                                lambda i, n, msg, k=k: progress(k, len(files), f"{path.name}: {msg}"),
                                out_dir / "phase_maps")
            _append_row(rows_path, row)
            done[path.name] = row
        progress(k + 1, len(files), f"quantified {path.name}")
    rows = [done[Path(p).name] for p in files if "skipped" not in done[Path(p).name]]
    skipped = [{"micrograph": Path(p).name, "reason": done[Path(p).name]["skipped"]} for p in files
               if "skipped" in done[Path(p).name]]
    if not rows:
        raise ValueError("no micrograph could be quantified: " + "; ".join(f"{s['micrograph']}: {s['reason']}"
                                                                            for s in skipped))
    summary = phase_summary(rows, names)
    csv_path = write_csv(out_dir / "fractions.csv", rows, _columns(rows, names))
    summary_path = out_dir / "summary.md"
    write_csv(out_dir / "summary.csv", summary)
    summary_path.write_text(_summary_markdown(summary, rows, skipped, settings))
    plot_path = plot_fractions(rows, summary, model.schema, out_dir / "fractions.png")
    return QuantifyResult(rows, skipped, summary, csv_path, summary_path, plot_path)


def _quantify_one(model, path: Path, window: int, names, ratio, trust, temperature, should_stop, progress,
                  maps_dir: Path):
    """One row: size, pixel size and phase fractions in %, or ``{"skipped": reason}``. A TIFF too large to
    read whole is segmented block by block into ``maps_dir/<name>.zarr`` (bounded memory, resumable)."""
    try:
        if is_large_micrograph(path):
            return _quantify_large(model, path, names, ratio, trust, temperature, should_stop, progress, maps_dir)
        image, pixel_size = read_micrograph(path)
    except (OSError, ValueError) as exc:
        return {"micrograph": path.name, "skipped": str(exc)}
    if min(image.shape) < window:
        return {"micrograph": path.name,
                "skipped": f"{image.shape[1]}x{image.shape[0]} px is smaller than the model's {window} px window"}
    labels, _ = predict_image(model, image, ratio=ratio, trust=trust, temperature=temperature,
                              progress=progress, should_stop=should_stop)
    fractions = mask_fractions(labels, model.schema)
    return {"micrograph": path.name, "width": int(image.shape[1]), "height": int(image.shape[0]),
            "pixel_size_um": pixel_size, **{f"{n} %": round(100 * float(f), 3) for n, f in zip(names, fractions)}}


def _quantify_large(model, path: Path, names, ratio, trust, temperature, should_stop, progress, maps_dir: Path):
    """:func:`_quantify_one` for a large TIFF: its phase map in blocks, the fractions from the block counts."""
    from ..core.large_image import open_micrograph
    from .large_inference import segment_large

    source = open_micrograph(path)
    try:
        phase_map = segment_large(model, source.image, maps_dir / f"{path.stem}.zarr", ratio, trust, temperature,
                                  source=str(path), progress=progress, should_stop=should_stop)
        height, width = source.image.shape
        return {"micrograph": path.name, "width": int(width), "height": int(height),
                "pixel_size_um": source.pixel_size_um,
                **{f"{n} %": round(100 * float(f), 3) for n, f in zip(names, phase_map.fractions())}}
    finally:
        source.close()


def _columns(rows, names) -> list[str]:
    return ["micrograph", "width", "height", "pixel_size_um", *[f"{n} %" for n in names]]


def phase_summary(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Per phase: mean % over micrographs, 95 % CI half-width (NaN for one micrograph), sd, min, max, n."""
    summary = []
    for name in names:
        values = np.array([row[f"{name} %"] for row in rows], dtype=float)
        mean, half = mean_ci95(values)
        summary.append({"phase": name, "mean %": round(mean, 3), "95% CI ±": round(half, 3),
                        "sd": round(float(values.std(ddof=1)), 3) if values.size > 1 else float("nan"),
                        "min %": round(float(values.min()), 3), "max %": round(float(values.max()), 3),
                        "micrographs": int(values.size)})
    return summary


def _summary_markdown(summary, rows, skipped, settings) -> str:
    ratio = "no ratio" if settings["ratio"] is None else (
        "ratio " + ", ".join(f"{100 * v:.1f} %" for v in settings["ratio"]) + f", trust {settings['trust']:g}")
    lines = [f"# Phase fractions of {len(rows)} micrographs", "",
             f"Model {settings['model'] or 'given'}; {ratio}. 95 % CI: t-based over micrographs.", "",
             "| phase | mean % | 95 % CI | sd | min % | max % |", "|---|---|---|---|---|---|"]
    for s in summary:
        ci = "n/a" if np.isnan(s["95% CI ±"]) else f"± {s['95% CI ±']:.2f}"
        sd = "n/a" if np.isnan(s["sd"]) else f"{s['sd']:.2f}"
        lines.append(f"| {s['phase']} | {s['mean %']:.2f} | {ci} | {sd} | {s['min %']:.2f} | {s['max %']:.2f} |")
    if skipped:
        lines += ["", "Skipped:", *[f"- {s['micrograph']}: {s['reason']}" for s in skipped]]
    return "\n".join(lines) + "\n"


def plot_fractions(rows, summary, schema, path: str | Path) -> Path:
    """PNG: per-micrograph stacked phase bars (top) and mean +- 95 % CI per phase (bottom), phase colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = [np.array(p.color) / 255 for p in schema.phases]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.25 * len(rows) + 2), 6.5), dpi=110)
    x = np.arange(len(rows))
    base = np.zeros(len(rows))
    for name, colour in zip(schema.names, colours):
        values = np.array([row[f"{name} %"] for row in rows])
        top.bar(x, values, bottom=base, color=colour, edgecolor="none", label=name)
        base += values
    top.set_xticks(x, [row["micrograph"] for row in rows], rotation=90, fontsize=6)
    top.set_ylabel("area fraction (%)")
    top.set_ylim(0, 100)
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    means = [s["mean %"] for s in summary]
    errors = [0 if np.isnan(s["95% CI ±"]) else s["95% CI ±"] for s in summary]
    bottom.bar(schema.names, means, yerr=errors, capsize=4, color=colours, edgecolor="black", linewidth=0.5)
    bottom.set_ylabel(f"mean over {len(rows)} micrographs (%)\n± 95 % CI")
    bottom.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
