"""Augmented training sets: real tiles plus curated synthetic pairs at a real-to-synthetic ratio.

Paper 000 (sec. 2.3) trains segmenters on real tiles mixed with synthetic pairs at real-to-synthetic
ratios 1:1, 1:2, 1:4, 1:6, 1:8 and 1:10 (500 real and 5000 synthetic samples at 1:10) and evaluates on
held-out whole real micrographs with 256x256 sliding windows. :func:`export_training_set` writes such a
set, with the real validation and test micrographs kept whole and apart::

    OUT/export_plan.json          written FIRST: settings + the ordered (name, split, origin) list
    OUT/dataset.zarr              DatasetStore; splits train (real tiles + synthetic), val, test (whole real)
    OUT/class_balance.csv/.png    pixel share per phase, real only vs real + synthetic
    OUT/fraction_histograms.png   per-tile phase fractions, real tiles vs synthetic pairs
    OUT/folders/                  optional plain PNG + CSV copy (core.folder_export.export_folder)
    OUT/README.md                 dataset card, written LAST (its presence marks a finished export)

The pieces live where they belong: tiles in ``core.tiles`` (:func:`labelled_tiles`), the accepted pairs of
a store in ``core.curation``, resampling to the real pixel size in ``core.resample``, the class balance and
histograms in ``engines.reports``.

>>> tiles = labelled_tiles(train_micrographs, tile=256)                               # doctest: +SKIP
>>> scaled = [to_real_scale(p, 0.2, 256) for p in accepted_pairs(store)]            # doctest: +SKIP
>>> train = compose_training_set(tiles, scaled, ratio=4)                             # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..core.curation import accepted_indices, accepted_pairs
from ..core.folder_export import atomic_write_bytes, export_folder
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.resample import median_pixel_size, scaled_shape, to_real_scale
from ..core.sample import Sample, data_fingerprint
from ..core.schema import PhaseSchema
from ..core.store import DatasetStore, is_store
from ..core.tiles import labelled_tiles, tile_shape
from .reports import BALANCE_CSV, BALANCE_PNG, ClassBalance, plot_real_vs_synthetic

#: Real-to-synthetic ratios of paper 000, sec. 2.3 (1:R = R synthetic pairs per real tile).
PAPER_RATIOS = (1, 2, 4, 6, 8, 10)
PLAN_FILE = "export_plan.json"
CARD_FILE = "README.md"
STORE_NAME = "dataset.zarr"
FOLDERS_NAME = "folders"
HISTOGRAM_PNG = "fraction_histograms.png"
PLAN_FORMAT = "napari-microsynth-training-set-plan"
PLAN_VERSION = 1
SYNTHETIC_ORIGINS = ("synthetic", "corrected")
#: Everything an export writes into OUT; ``overwrite`` removes these (and their ``.partial`` temporaries) only.
EXPORT_ENTRIES = (PLAN_FILE, STORE_NAME, BALANCE_CSV, BALANCE_PNG, HISTOGRAM_PNG, FOLDERS_NAME, CARD_FILE)


# ------------------------------------------------------------------------------------ composition


def synthetic_needed(ratio: float, n_real: int) -> int:
    """Synthetic pairs for ``n_real`` real tiles at real-to-synthetic ratio 1:``ratio`` (rounded half up)."""
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"ratio must be a finite number >= 0 (synthetic pairs per real tile), got {ratio}")
    return int(math.floor(ratio * n_real + 0.5))


def compose_training_set(real_tiles: Sequence[Sample], synthetic: Sequence[Sample], ratio: float,
                         not_available: str = "") -> list[Sample]:
    """The real tiles followed by the first ``round(ratio * len(real_tiles))`` synthetic pairs (given order).

    ``ratio`` 0 gives the real tiles only. Deterministic: the same inputs give the same list. Raises
    ``ValueError`` when fewer synthetic pairs are available than the ratio needs (``not_available``, e.g.
    what else their store holds, ends its message).
    """
    if not real_tiles:
        raise ValueError("no real training tiles: the training set needs real samples (micrographs smaller "
                         "than a tile?)")
    needed = synthetic_needed(ratio, len(real_tiles))
    if needed > len(synthetic):
        raise ValueError(
            f"ratio 1:{float(ratio):g} with {len(real_tiles)} real tiles needs {needed} synthetic pairs, "
            f"but only {len(synthetic)} are available{not_available}"
        )
    return list(real_tiles) + list(synthetic[:needed])


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


def _check_real(name: str, samples: Sequence[Sample], schema: PhaseSchema) -> None:
    for sample in samples:
        if sample.mask is None:
            raise ValueError(f"real {name} micrograph {sample.name!r} has no mask")
        if sample.provenance.is_synthetic:
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
        raise FileExistsError(f"{out} {why}; replace it with --overwrite")
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
            raise FileExistsError(f"{path} does not match {out / PLAN_FILE}; redo the export with --overwrite")
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


def _synthetic_pairs(synthetic: Sequence[Sample] | DatasetStore | str | Path | None) -> tuple[list[Sample], str, str]:
    """The synthetic pairs to mix in (a store's accepted pairs), the store they came from ('' for a list) with
    how they were accepted (by hand, by which batch rule) and, for a store, the synthetic pairs it holds that
    are not accepted, in words ('' when none)."""
    if isinstance(synthetic, (str, Path)):
        synthetic = DatasetStore.open(synthetic)
    if not isinstance(synthetic, DatasetStore):
        return list(synthetic or []), "", ""
    statuses = synthetic.statuses()
    others = Counter(statuses[i] for i in range(len(synthetic))
                     if statuses[i] != "accepted" and synthetic.provenance(i).is_synthetic)
    rules = Counter(synthetic.status_rule(i) or "by hand" for i in accepted_indices(synthetic))
    how = "; ".join(f"{n} {rule if rule == 'by hand' else f'by the rule {rule!r}'}" for rule, n in rules.items())
    not_accepted = ("" if not others else f" (accepted ones; {synthetic.path} also holds "
                    + ", ".join(f"{n} {state}" for state, n in sorted(others.items()))
                    + (" pairs: accept pending pairs with 'microsynth curate' or the Curation widget)"
                       if others["pending"] else " pairs)"))
    return accepted_pairs(synthetic), str(synthetic.path) + (f" (accepted: {how})" if how else ""), not_accepted


def _check_inputs(real: dict[str, Sequence[Sample]], synthetic: Sequence[Sample], schema: PhaseSchema) -> None:
    """Real splits hold real annotated micrographs of ``schema``, never one micrograph twice; pairs are synthetic."""
    for name, samples in real.items():
        _check_real(name, samples, schema)
    for pair in synthetic:
        if pair.schema != schema:
            raise ValueError(
                f"synthetic pair {pair.name!r} uses schema {pair.schema.name!r}, the real data {schema.name!r}"
            )
        if not pair.provenance.is_synthetic:
            raise ValueError(f"synthetic pair {pair.name!r} has origin {pair.provenance.origin!r}, not synthetic")
    names = {split: {s.name for s in samples} for split, samples in real.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(names[a] & names[b])
        if shared:
            raise ValueError(f"micrographs in both the {a} and the {b} split: {', '.join(shared[:5])}")


def _write_reports(out: Path, store: DatasetStore, plan: dict) -> tuple[ClassBalance, dict[str, Path]]:
    """Class balance (CSV + PNG) and fraction histograms of the train split, from the store's class counts
    and fractions (no image reads)."""
    train = store.splits.get("train", [])
    real_ix = [i for i in train if plan["samples"][i][2] == "real"]
    synth_ix = [i for i in train if plan["samples"][i][2] != "real"]
    counts = store.class_counts()
    balance = ClassBalance(store.schema, counts[real_ix].sum(axis=0), counts[train].sum(axis=0))
    files = {"store": store.path, "plan": out / PLAN_FILE,
             "balance_csv": balance.write_csv(out / BALANCE_CSV), "balance_png": balance.plot(out / BALANCE_PNG)}
    fractions = store.fractions()
    files["histograms"] = plot_real_vs_synthetic(out / HISTOGRAM_PNG, fractions[real_ix], fractions[synth_ix],
                                                 store.schema)
    return balance, files


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
    cancel or a kill the same call continues with the samples not yet stored (no duplicates); until it
    finishes, the store is marked unfinished (``DatasetStore.unfinished``: ``describe`` reports it, readers
    refuse it). A folder
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
    synthetic, synthetic_source, not_accepted = _synthetic_pairs(synthetic)
    _check_inputs({"train": real_train, "val": real_val, "test": real_test}, synthetic, schema)

    tiles = labelled_tiles(real_train, (th, tw))
    chosen = compose_training_set(tiles, synthetic, ratio, not_accepted)[len(tiles):]
    real_px = median_pixel_size(real_train)
    for pair in chosen:
        scaled_shape(pair, real_px, (th, tw))  # refuse too-small pairs before writing anything
    items: list[tuple[str, Sample]] = ([("train", t) for t in tiles] + [("train", p) for p in chosen]
                                       + [("val", s) for s in real_val] + [("test", s) for s in real_test])
    settings = {"ratio": float(ratio), "tile": [th, tw], "schema": schema.name, "real_pixel_size_um": real_px,
                "fingerprint": data_fingerprint([*real_train, *chosen, *real_val, *real_test])}
    plan = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "settings": settings,
            "samples": [[s.name, split, s.provenance.origin] for split, s in items]}
    _prepare_out(out, plan, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if _read_plan(out) != plan:
        atomic_write_bytes(out / PLAN_FILE, (json.dumps(plan, indent=1) + "\n").encode())

    store_description = (f"training set: {len(tiles)} real {th}x{tw} tiles + {len(chosen)} synthetic pairs "
                         f"(1:{float(ratio):g}); val/test whole real micrographs"
                         + (f"; {description}" if description else ""))
    store = _open_store(out, plan, schema, store_description)
    resumed_from = _store_items(store, items, out, real_px, (th, tw), progress, should_stop)
    balance, files = _write_reports(out, store, plan)
    if folders:
        files["folders"] = export_folder(store, out / FOLDERS_NAME, overwrite=True, progress=progress,
                                         should_stop=should_stop)
    split_counts: dict[str, dict[str, int]] = {}
    for name, split, origin in plan["samples"]:
        split_counts.setdefault(split, Counter())[origin] += 1
    synth_ix = [i for i in store.splits.get("train", []) if plan["samples"][i][2] != "real"]
    summary = TrainingSetSummary(
        out=out, ratio=float(ratio), tile=(th, tw), counts={k: dict(v) for k, v in split_counts.items()},
        balance=balance, generators=_generator_uses(store, synth_ix), real_pixel_size_um=real_px,
        resumed_from=resumed_from, files=files,
    )
    card = _card(summary, description, source, synthetic_source, folders, schema)
    store.set_unfinished(None)  # before the card, which marks the folder finished (a kill between: a re-run ends it)
    atomic_write_bytes(out / CARD_FILE, card.encode())
    files["card"] = out / CARD_FILE
    return summary


def _store_items(store: DatasetStore, items: list[tuple[str, Sample]], out: Path, real_px: float | None,
                 tile: tuple[int, int], progress: ProgressFn, should_stop: StopFn) -> int:
    """Append the planned samples not yet in ``store`` (synthetic training pairs brought to the real pixel
    size), the store marked unfinished meanwhile; returns how many were already there."""
    note = (f"training-set export of {len(items)} samples into {out}, in progress or interrupted; running the same "
            "export command again finishes it")
    if store.unfinished != note:
        store.set_unfinished(note)
    resumed_from = len(store)
    for i in range(resumed_from, len(items)):
        check_stop(should_stop)
        split, sample = items[i]
        if split == "train" and sample.provenance.origin != "real":
            sample = to_real_scale(sample, real_px, tile)
        store.append(sample, split=split, status="accepted")
        progress(i + 1, len(items), f"stored {split} {sample.name}")
    return resumed_from
