"""Augmented training sets: real tiles plus curated synthetic pairs at a real-to-synthetic ratio.

Paper 000 (sec. 2.3) trains segmenters on real tiles mixed with synthetic pairs at real-to-synthetic
ratios 1:1, 1:2, 1:4, 1:6, 1:8 and 1:10 (500 real and 5000 synthetic samples at 1:10) and evaluates on
held-out whole real micrographs with 256x256 sliding windows. :func:`export_training_set` writes such a
set, with the real validation and test micrographs kept whole and apart::

    OUT/export_plan.json          written FIRST: settings + the ordered (name, split, origin) list
    OUT/dataset.zarr              DatasetStore; splits train (real tiles + synthetic), val, test (whole real)
    OUT/class_balance.csv/.png    pixel share per phase, real only vs real + synthetic
    OUT/fraction_histograms.png   per-tile phase fractions, real tiles vs synthetic pairs
    OUT/folders/                  optional plain PNG + CSV copy (core.store.export_folder)
    OUT/README.md                 dataset card, written LAST (its presence marks a finished export)

>>> tiles = real_tiles(train_micrographs, tile=256)                                   # doctest: +SKIP
>>> scaled = [to_real_scale(p, 0.2, 256) for p in accepted_pairs(store)]            # doctest: +SKIP
>>> train = compose_training_set(tiles, scaled, ratio=4)                             # doctest: +SKIP
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.fractions import class_counts
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Sample
from ..core.schema import PhaseSchema
from ..core.store import DatasetStore, atomic_write_bytes, export_folder, is_store, spreadsheet_safe
from ..core.tiles import tile_shape, tile_samples

#: Real-to-synthetic ratios of paper 000, sec. 2.3 (1:R = R synthetic pairs per real tile).
PAPER_RATIOS = (1, 2, 4, 6, 8, 10)
PLAN_FILE = "export_plan.json"
CARD_FILE = "README.md"
STORE_NAME = "dataset.zarr"
FOLDERS_NAME = "folders"
BALANCE_CSV = "class_balance.csv"
BALANCE_PNG = "class_balance.png"
HISTOGRAM_PNG = "fraction_histograms.png"
PLAN_FORMAT = "napari-microsynth-training-set-plan"
PLAN_VERSION = 1
SYNTHETIC_ORIGINS = ("synthetic", "corrected")
#: Everything an export writes into OUT; ``overwrite`` removes these (and their ``.partial`` temporaries) only.
EXPORT_ENTRIES = (PLAN_FILE, STORE_NAME, BALANCE_CSV, BALANCE_PNG, HISTOGRAM_PNG, FOLDERS_NAME, CARD_FILE)


# ---------------------------------------------------------------------------------------- loading


def load_split(
    path: str | Path,
    split: str | None = None,
    schema: PhaseSchema | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> list[Sample]:
    """Samples of a dataset folder (``core.datasets.load_dataset``) or a dataset store, optionally one split."""
    path = Path(path)
    if is_store(path):
        store = DatasetStore.open(path)
        indices = range(len(store)) if split is None else store.splits.get(split)
        if indices is None:
            raise ValueError(f"store {path} has no split {split!r}; splits: {', '.join(store.splits) or 'none'}")
        samples = []
        for done, i in enumerate(indices):
            check_stop(should_stop)
            samples.append(store[i])
            progress(done + 1, len(indices), f"read {samples[-1].name}")
        return samples
    from ..core.datasets import load_dataset

    return load_dataset(path, schema=schema, split=split, progress=progress, should_stop=should_stop)


def _is_synthetic(provenance) -> bool:
    """Generated, or generated and then hand-corrected (``extra["original_origin"] == "synthetic"``)."""
    return provenance.origin == "synthetic" or (
        provenance.origin == "corrected" and provenance.extra.get("original_origin") == "synthetic"
    )


def accepted_indices(store: DatasetStore) -> list[int]:
    """Store indices of the accepted synthetic pairs (see :func:`accepted_pairs`), read from metadata only."""
    statuses = store.statuses()
    return [i for i in range(len(store)) if statuses[i] == "accepted" and _is_synthetic(store.provenance(i))]


def accepted_pairs(store: DatasetStore | str | Path) -> list[Sample]:
    """The accepted synthetic pairs of a store, in store order.

    A pair counts when its status is ``accepted`` and it is synthetic: origin ``synthetic``, or
    ``corrected`` with ``provenance.extra["original_origin"] == "synthetic"`` (a hand-corrected
    generated mask). A corrected *prediction* of a real micrograph (origin ``corrected`` from the
    Phase ratios widget) is a real image and is left out, as are pending, flagged and rejected pairs.
    """
    if not isinstance(store, DatasetStore):
        store = DatasetStore.open(store)
    return [store[i] for i in accepted_indices(store)]


# ------------------------------------------------------------------------------------ composition


def real_tiles(samples: Sequence[Sample], tile=256) -> list[Sample]:
    """Non-overlapping full ``tile`` tiles (row-major) of every real training micrograph, in input order.

    Each tile keeps its micrograph's provenance with the crop box (``core.tiles.tile_samples``);
    remainders at the right/bottom edge narrower than a tile are left out.
    """
    tile_shape(tile)
    tiles = []
    for sample in samples:
        if sample.mask is None:
            raise ValueError(f"real micrograph {sample.name!r} has no mask; a training set needs labelled samples")
        tiles.extend(tile_samples(sample, tile))
    return tiles


def median_pixel_size(samples: Sequence[Sample]) -> float | None:
    """Median of the known pixel sizes of ``samples`` (um/px), None when none is known."""
    known = [s.pixel_size_um for s in samples if s.pixel_size_um]
    return float(np.median(known)) if known else None


def scale_factor(pair: Sample, real_pixel_size_um: float | None) -> float:
    """``pair.pixel_size_um / real_pixel_size_um``; when either pixel size is unknown, the generator's
    ``provenance.extra["downscale"]`` (its tiles' scale relative to its training micrographs), else 1."""
    if pair.pixel_size_um and real_pixel_size_um:
        return float(pair.pixel_size_um) / float(real_pixel_size_um)
    return float(pair.provenance.extra.get("downscale", 1.0))


def _scaled_shape(pair: Sample, real_pixel_size_um: float | None, tile) -> tuple[int, int]:
    factor = scale_factor(pair, real_pixel_size_um)
    h, w = pair.shape
    shape = (max(1, round(h * factor)), max(1, round(w * factor)))
    th, tw = tile_shape(tile)
    if shape[0] < th or shape[1] < tw:
        at = f" (resized x{factor:g})" if factor != 1.0 else ""
        raise ValueError(
            f"synthetic pair {pair.name!r} is {shape[0]}x{shape[1]} px at the real pixel size{at}, smaller than "
            f"the {th}x{tw} training tile; choose a smaller tile or generate larger (super-resolved) pairs"
        )
    return shape


def to_real_scale(pair: Sample, real_pixel_size_um: float | None, tile=256) -> Sample:
    """Resample a generated pair to the pixel size of the real micrographs.

    Generators often work on downscaled micrographs (PF-DiffSeg here: 64 px tiles of micrographs
    shrunk 2x, ``pair.pixel_size_um`` = real pixel size x 2). The pair is resized by
    ``pair.pixel_size_um / real_pixel_size_um`` (image bilinear, anti-aliased only when shrinking; mask
    and instances nearest-neighbour). When either pixel size is unknown the factor is the generator's
    ``provenance.extra["downscale"]`` (1 when absent: the pair is returned as is). A resampled pair gets ``pixel_size_um = real_pixel_size_um`` and
    ``provenance.extra["resampled_from_px"] = [H, W]`` (its generated size) and
    ``["resampled_from_pixel_size_um"]``. Raises ``ValueError`` when the result is smaller than ``tile``.
    """
    if pair.mask is None:
        raise ValueError(f"synthetic pair {pair.name!r} has no mask")
    shape = _scaled_shape(pair, real_pixel_size_um, tile)
    if shape == pair.shape:
        return pair
    from skimage.transform import resize

    factor = scale_factor(pair, real_pixel_size_um)
    image = resize(pair.image, shape, order=1, mode="edge", anti_aliasing=factor < 1.0, preserve_range=True)

    def nearest(labels: np.ndarray) -> np.ndarray:
        resized = resize(labels, shape, order=0, mode="edge", anti_aliasing=False, preserve_range=True)
        return resized.astype(labels.dtype)

    extra = {
        **pair.provenance.extra,
        "resampled_from_px": [int(pair.shape[0]), int(pair.shape[1])],
        "resampled_from_pixel_size_um": pair.pixel_size_um,
    }
    return replace(
        pair,
        image=np.clip(image, 0.0, 1.0).astype(np.float32),
        mask=nearest(pair.mask),
        instances=None if pair.instances is None else nearest(np.asarray(pair.instances)),
        pixel_size_um=None if real_pixel_size_um is None else float(real_pixel_size_um),
        properties=dict(pair.properties),
        provenance=replace(pair.provenance, extra=extra),
    )


def synthetic_needed(ratio: float, n_real: int) -> int:
    """Synthetic pairs for ``n_real`` real tiles at real-to-synthetic ratio 1:``ratio`` (rounded half up)."""
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"ratio must be a finite number >= 0 (synthetic pairs per real tile), got {ratio}")
    return int(math.floor(ratio * n_real + 0.5))


def compose_training_set(real_tiles: Sequence[Sample], synthetic: Sequence[Sample], ratio: float) -> list[Sample]:
    """The real tiles followed by the first ``round(ratio * len(real_tiles))`` synthetic pairs (given order).

    ``ratio`` 0 gives the real tiles only. Deterministic: the same inputs give the same list. Raises
    ``ValueError`` when fewer synthetic pairs are available than the ratio needs.
    """
    if not real_tiles:
        raise ValueError("no real training tiles: the training set needs real samples (micrographs smaller "
                         "than a tile?)")
    needed = synthetic_needed(ratio, len(real_tiles))
    if needed > len(synthetic):
        raise ValueError(
            f"ratio 1:{float(ratio):g} with {len(real_tiles)} real tiles needs {needed} synthetic pairs, "
            f"but only {len(synthetic)} are available"
        )
    return list(real_tiles) + list(synthetic[:needed])


# ---------------------------------------------------------------------------------- class balance


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
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.rows()[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(spreadsheet_safe(row) for row in self.rows())
        path = Path(path)
        atomic_write_bytes(path, buffer.getvalue().encode())
        return path

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


# ------------------------------------------------------------------------------------------ export


@dataclass
class GeneratorUse:
    """One generator model whose pairs are in the training set."""

    generator: str
    version: str
    model_checksum: str
    pairs: int
    seeds: tuple[int, int] | None  # (lowest, highest) seed; None when no pair records one
    corrected: int


@dataclass
class TrainingSetSummary:
    """What :func:`export_training_set` wrote."""

    out: Path
    ratio: float
    tile: tuple[int, int]
    counts: dict[str, dict[str, int]]  # split -> origin -> samples
    balance: ClassBalance
    generators: list[GeneratorUse]
    real_pixel_size_um: float | None
    resumed_from: int = 0  # samples already in the store when this run started
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def n_real_tiles(self) -> int:
        return self.counts.get("train", {}).get("real", 0)

    @property
    def n_synthetic(self) -> int:
        return sum(n for origin, n in self.counts.get("train", {}).items() if origin in SYNTHETIC_ORIGINS)

    @property
    def n_corrected(self) -> int:
        return self.counts.get("train", {}).get("corrected", 0)

    def as_text(self) -> str:
        lines = [f"training set written to {self.out}" + (f" (resumed after {self.resumed_from} samples)"
                                                          if self.resumed_from else "")]
        for split, origins in self.counts.items():
            lines.append(f"  {split:<6s} " + ", ".join(f"{n} {origin}" for origin, n in origins.items()))
        lines.append(f"  ratio 1:{self.ratio:g} ({self.n_synthetic} synthetic pairs, {self.n_corrected} corrected, "
                     f"per {self.n_real_tiles} real {self.tile[0]}x{self.tile[1]} tiles)")
        lines.append(self.balance.as_text())
        return "\n".join(lines)


def _fingerprint(samples: Sequence[Sample]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for sample in samples:
        digest.update(f"{sample.name}|{sample.shape}|{sample.pixel_size_um}|".encode())
        digest.update(np.ascontiguousarray(sample.image).tobytes())
        digest.update(np.ascontiguousarray(sample.mask).tobytes())  # type: ignore[arg-type]
    return digest.hexdigest()


def _check_real(name: str, samples: Sequence[Sample], schema: PhaseSchema) -> None:
    for sample in samples:
        if sample.mask is None:
            raise ValueError(f"real {name} micrograph {sample.name!r} has no mask")
        if _is_synthetic(sample.provenance):
            raise ValueError(f"{name} sample {sample.name!r} is synthetic; real_{name} must hold real micrographs only")
        if sample.schema != schema:
            raise ValueError(f"{name} sample {sample.name!r} uses schema {sample.schema.name!r}, not {schema.name!r}")


def _read_plan(out: Path) -> dict | None:
    path = out / PLAN_FILE
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and plan.get("format") == PLAN_FORMAT else None


def _plan_difference(old: dict, new: dict) -> str:
    settings = [f"{k} {old['settings'].get(k)!r} -> {v!r}" for k, v in new["settings"].items()
                if old["settings"].get(k) != v and k != "fingerprint"]
    if settings:
        return "; ".join(settings)
    if len(old["samples"]) != len(new["samples"]):
        return f"{len(old['samples'])} -> {len(new['samples'])} samples"
    return "different input samples"


def _prepare_out(out: Path, plan: dict, overwrite: bool) -> None:
    """Check OUT against ``plan``: new/empty -> fresh; same unfinished plan -> resume (unless ``overwrite``);
    finished or different -> refuse, or with ``overwrite`` delete the earlier export's files (only in a folder
    holding an export plan and nothing else)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    old = _read_plan(out)
    if old is None:
        raise FileExistsError(
            f"{out} holds files but no training-set export ({PLAN_FILE}); refusing to touch it, choose a new folder"
        )
    finished = (out / CARD_FILE).exists()
    same = old.get("settings") == plan["settings"] and old.get("samples") == plan["samples"]
    if same and not finished and not overwrite:
        return  # resume
    if not overwrite:
        why = ("already holds a finished export" if same
               else f"holds an export with a different plan ({_plan_difference(old, plan)})")
        raise FileExistsError(f"{out} {why}; pass overwrite=True (--overwrite) to replace it")
    entries = list(out.iterdir())
    foreign = sorted(e.name for e in entries if e.name.removesuffix(".partial") not in EXPORT_ENTRIES)
    if foreign:
        raise FileExistsError(
            f"{out} holds files the export did not write ({', '.join(foreign[:5])}); overwriting removes only "
            "an export's own files, so move those elsewhere or choose a new folder"
        )
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _open_store(out: Path, plan: dict, schema: PhaseSchema, description: str) -> DatasetStore:
    path = out / STORE_NAME
    if is_store(path):
        store = DatasetStore.open(path, mode="a")
        done = len(store)
        expected = [(name or f"sample_{i:06d}", split) for i, (name, split, _) in enumerate(plan["samples"][:done])]
        split_of = {i: s for s, indices in store.splits.items() for i in indices}
        found = [(store.names[i], split_of.get(i)) for i in range(done)]
        if done > len(plan["samples"]) or found != expected:
            raise FileExistsError(f"{path} does not match {out / PLAN_FILE}; pass overwrite=True to redo the export")
        return store
    if path.exists():  # a store whose creation was interrupted before its metadata was written
        shutil.rmtree(path)
    return DatasetStore.create(path, schema, description=description)


def _generator_uses(store: DatasetStore, indices: Sequence[int]) -> list[GeneratorUse]:
    groups: dict[tuple[str, str, str], list] = {}
    for i in indices:
        p = store.provenance(i)
        groups.setdefault((p.generator or "unknown", p.generator_version, p.model_checksum), []).append(p)
    uses = []
    for (name, version, checksum), provenances in groups.items():
        seeds = [p.seed for p in provenances if p.seed is not None]
        uses.append(GeneratorUse(name, version, checksum, len(provenances),
                                 (min(seeds), max(seeds)) if seeds else None,
                                 sum(p.origin == "corrected" for p in provenances)))
    return uses


def _card(summary: TrainingSetSummary, description: str, source: str, synthetic_source: str, folders: bool,
          schema: PhaseSchema) -> str:
    tile = f"{summary.tile[0]}x{summary.tile[1]}"
    counts = summary.counts
    origins = sorted({o for split in counts.values() for o in split})
    lines = [
        "# Augmented training set",
        "",
        description or "Real training tiles mixed with curated synthetic micrograph + mask pairs.",
        "",
        f"- real data: {source or 'not recorded'}",
        f"- synthetic pairs: {synthetic_source or ('none (real only)' if not summary.n_synthetic else 'not recorded')}",
        f"- phase schema: `{schema.name}` ({', '.join(schema.names)})",
        f"- real-to-synthetic ratio **1:{summary.ratio:g}**: {summary.n_real_tiles} real {tile} tiles + "
        f"{summary.n_synthetic} synthetic pairs, of which {summary.n_corrected} with hand-corrected masks "
        "(paper 000, sec. 2.3, compares 1:1, 1:2, 1:4, 1:6, 1:8 and 1:10)",
        f"- train: non-overlapping {tile} tiles of the real training micrographs, then the first accepted "
        "synthetic pairs in store order, resampled to the real pixel size "
        + (f"({summary.real_pixel_size_um:.4g} um/px, median of the real training micrographs)"
           if summary.real_pixel_size_um else "(pixel sizes unknown: pairs resized by their generator's "
           "downscale factor)"),
        "- val / test: whole real micrographs, never tiled and never mixed with synthetic pairs (evaluate "
        "them with sliding windows, e.g. 256x256 at 50 % overlap as in paper 000)",
        "",
        "## Contents",
        "",
        "| split | " + " | ".join(origins) + " | total |",
        "|---|" + "---:|" * (len(origins) + 1),
    ]
    for split, by_origin in counts.items():
        lines.append(f"| {split} | " + " | ".join(str(by_origin.get(o, 0)) for o in origins)
                     + f" | {sum(by_origin.values())} |")
    lines += ["", "## Generators", ""]
    if summary.generators:
        lines += ["| generator | version | model checksum | pairs | corrected | seeds |", "|---|---|---|---:|---:|---|"]
        for use in summary.generators:
            seeds = f"{use.seeds[0]}-{use.seeds[1]}" if use.seeds else "-"
            lines.append(f"| {use.generator} | {use.version or '-'} | `{use.model_checksum or '-'}` | {use.pairs} | "
                         f"{use.corrected} | {seeds} |")
    else:
        lines.append("No synthetic pairs (real only).")
    lines += [
        "",
        "## Class balance of the training split (pixel share)",
        "",
        summary.balance.as_markdown(),
        "",
        f"![class balance]({BALANCE_PNG}) ([table]({BALANCE_CSV}))",
        "",
        f"![phase fractions per training sample, real tiles vs synthetic pairs]({HISTOGRAM_PNG})",
        "",
        "## Files",
        "",
        f"- `{STORE_NAME}`: napari-microsynth dataset store (zarr v3) with splits `train`, `val`, `test`; every "
        "sample carries its provenance (source file and crop box, or generator, checksum, condition and seed). "
        "Open with `DatasetStore.open(path)` or `microsynth describe`.",
    ]
    if folders:
        lines.append(f"- `{FOLDERS_NAME}/`: the same samples as PNG images and index-PNG masks with `samples.csv`.")
    lines += [f"- `{PLAN_FILE}`: the settings and the ordered sample list this export was written from.", ""]
    return "\n".join(lines)


def export_training_set(
    out: str | Path,
    real_train: Sequence[Sample],
    real_val: Sequence[Sample] = (),
    real_test: Sequence[Sample] = (),
    synthetic: Sequence[Sample] | DatasetStore | str | Path | None = None,
    ratio: float = 1.0,
    tile=256,
    *,
    description: str = "",
    source: str = "",
    folders: bool = False,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainingSetSummary:
    """Write an augmented training set to ``out`` (layout in the module docstring); returns its summary.

    ``train`` = the real tiles of ``real_train`` + the first ``round(ratio * tiles)`` synthetic pairs
    (:func:`compose_training_set`), each resampled to the median pixel size of ``real_train``
    (:func:`to_real_scale`). ``val`` / ``test`` = the whole micrographs of ``real_val`` / ``real_test``.
    ``synthetic`` is a list of pairs or a store (its :func:`accepted_pairs`). ``source`` and
    ``description`` go into the dataset card; generator, model checksum and seeds come from the pairs'
    provenance. Every stored sample gets status ``accepted``.

    Resumable: the plan file is written first and the store commits one sample at a time, so after a
    cancel or a kill the same call continues with the samples not yet stored (no duplicates). A folder
    with a finished export (``README.md`` present) or a different plan raises ``FileExistsError``;
    ``overwrite`` deletes the earlier export's files and starts over (a folder without an export plan, or
    holding any file an export does not write, is refused and left untouched).
    ``progress`` is called per sample; ``should_stop`` is checked before each sample (:class:`Cancelled`).
    """
    out = Path(out)
    if not real_train:
        raise ValueError("real_train is empty: a training set needs real training micrographs")
    schema = real_train[0].schema
    th, tw = tile_shape(tile)
    synthetic_source = ""
    if isinstance(synthetic, (str, Path)):
        synthetic = DatasetStore.open(synthetic)
    if isinstance(synthetic, DatasetStore):
        synthetic_source = str(synthetic.path)
        synthetic = accepted_pairs(synthetic)
    synthetic = list(synthetic or [])
    for name, samples in (("train", real_train), ("val", real_val), ("test", real_test)):
        _check_real(name, samples, schema)
    for pair in synthetic:
        if pair.schema != schema:
            raise ValueError(
                f"synthetic pair {pair.name!r} uses schema {pair.schema.name!r}, the real data {schema.name!r}"
            )
        if not _is_synthetic(pair.provenance):
            raise ValueError(f"synthetic pair {pair.name!r} has origin {pair.provenance.origin!r}, not synthetic")
    names = {split: {s.name for s in samples} for split, samples in
             (("train", real_train), ("val", real_val), ("test", real_test))}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(names[a] & names[b])
        if shared:
            raise ValueError(f"micrographs in both the {a} and the {b} split: {', '.join(shared[:5])}")

    tiles = real_tiles(real_train, (th, tw))
    chosen = compose_training_set(tiles, synthetic, ratio)[len(tiles):]
    real_px = median_pixel_size(real_train)
    for pair in chosen:
        _scaled_shape(pair, real_px, (th, tw))  # refuse too-small pairs before writing anything

    items: list[tuple[str, Sample]] = ([("train", t) for t in tiles] + [("train", p) for p in chosen]
                                       + [("val", s) for s in real_val] + [("test", s) for s in real_test])
    settings = {
        "ratio": float(ratio),
        "tile": [th, tw],
        "schema": schema.name,
        "real_pixel_size_um": real_px,
        "fingerprint": _fingerprint([*real_train, *chosen, *real_val, *real_test]),
    }
    plan = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "settings": settings,
        "samples": [[s.name, split, s.provenance.origin] for split, s in items],
    }
    _prepare_out(out, plan, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if _read_plan(out) != plan:
        atomic_write_bytes(out / PLAN_FILE, (json.dumps(plan, indent=1) + "\n").encode())

    store_description = (f"training set: {len(tiles)} real {th}x{tw} tiles + {len(chosen)} synthetic pairs "
                         f"(1:{float(ratio):g}); val/test whole real micrographs"
                         + (f"; {description}" if description else ""))
    store = _open_store(out, plan, schema, store_description)
    resumed_from = len(store)
    for i in range(resumed_from, len(items)):
        check_stop(should_stop)
        split, sample = items[i]
        if split == "train" and sample.provenance.origin != "real":
            sample = to_real_scale(sample, real_px, (th, tw))
        store.append(sample, split=split, status="accepted")
        progress(i + 1, len(items), f"stored {split} {sample.name}")

    # reports: from the store's class counts and fractions (no image reads), the card last
    train = store.splits.get("train", [])
    real_ix = [i for i in train if plan["samples"][i][2] == "real"]
    synth_ix = [i for i in train if plan["samples"][i][2] != "real"]
    counts = store.class_counts()
    balance = ClassBalance(schema, counts[real_ix].sum(axis=0), counts[train].sum(axis=0))
    files = {"store": store.path, "plan": out / PLAN_FILE,
             "balance_csv": balance.write_csv(out / BALANCE_CSV), "balance_png": balance.plot(out / BALANCE_PNG)}
    fractions = store.fractions()
    files["histograms"] = plot_real_vs_synthetic(out / HISTOGRAM_PNG, fractions[real_ix], fractions[synth_ix],
                                                 schema)
    if folders:
        files["folders"] = export_folder(store, out / FOLDERS_NAME, overwrite=True, progress=progress,
                                         should_stop=should_stop)
    split_counts: dict[str, dict[str, int]] = {}
    for name, split, origin in plan["samples"]:
        split_counts.setdefault(split, Counter())[origin] += 1
    summary = TrainingSetSummary(
        out=out, ratio=float(ratio), tile=(th, tw), counts={k: dict(v) for k, v in split_counts.items()},
        balance=balance, generators=_generator_uses(store, synth_ix), real_pixel_size_um=real_px,
        resumed_from=resumed_from, files=files,
    )
    card = _card(summary, description, source, synthetic_source, folders, schema)
    atomic_write_bytes(out / CARD_FILE, card.encode())
    files["card"] = out / CARD_FILE
    return summary
