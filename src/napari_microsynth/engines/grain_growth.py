"""Long grain-structure jobs: simulating many phase-field structures into a folder (resumable), and grain
statistics of simulated or real grain maps (CSV tables and plots).

Simulation folder (``microsynth simulate OUT``)::

    OUT/simulation.json          settings, base seed, requested count, format version
    OUT/structure_00000.npz      one finished structure each (see :func:`save_structure`)

A structure file appears only when it is complete (written to ``*.partial`` and renamed), so an
interrupted run leaves finished structures intact and the next run with the same settings continues with
the first missing one; a finished structure is never rewritten. Structure ``i`` uses the seed
:func:`structure_seed` ``(seed, i)``, so the folder's content does not depend on where a run was stopped.
"""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.grains import astm_e112, grain_boundary_ids, grain_table, grains_of_boundary_mask, read_grain_map, summarise
from ..core.io import MASK_SUFFIXES
from ..core.microstructure import GrainGrowthSettings, connected_instances
from ..core.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from ..core.store import DatasetStore, is_store
from ..models.phase_field import GrainGrowthResult

FORMAT = "microsynth-grain-growth"
FORMAT_VERSION = 1
MANIFEST = "simulation.json"
MARKER = "microsynth_grain_growth"  # array name that marks a structure file


def structure_seed(seed: int, index: int) -> int:
    """The seed of structure ``index`` of a run with base ``seed`` (independent streams per structure)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def structure_path(out: Path, index: int) -> Path:
    return Path(out) / f"structure_{index:05d}.npz"


def is_structure_file(path: str | Path) -> bool:
    """True for a structure file written by :func:`save_structure` (reads the archive's directory only)."""
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path) as archive:
            return MARKER in archive.files
    except (OSError, ValueError):
        return False


def save_structure(path: Path, result: GrainGrowthResult, index: int) -> None:
    """Write one simulated structure atomically (``*.partial``, then renamed over ``path``).

    Arrays: ``grains`` (grain numbers), ``instances``, ``boundary`` (0/1), ``phi`` (eq. 3, float32),
    ``initial`` (the Voronoi tessellation), ``snapshot_steps``, ``snapshots`` (T, H, W grain numbers),
    ``snapshot_phi`` (T, H, W, phi x 255 as uint8) and ``meta`` (JSON: settings, seed, index, run info).
    """
    labels_dtype = np.uint16 if max(int(result.snapshots.max()), int(result.grains.max())) < 65536 else np.int32
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "index": index, "seed": result.seed,
            "settings": result.settings.to_dict(), "info": result.info}
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez_compressed(
            handle, **{MARKER: np.array(FORMAT_VERSION)}, meta=np.array(json.dumps(meta)),
            grains=result.grains.astype(labels_dtype), instances=result.instances.astype(np.int32),
            boundary=result.boundary.astype(np.uint8), phi=result.phi.astype(np.float32),
            initial=result.initial.astype(labels_dtype), snapshot_steps=result.snapshot_steps.astype(np.int64),
            snapshots=result.snapshots.astype(labels_dtype), snapshot_phi=result.snapshot_phi.astype(np.uint8),
        )
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def load_structure(path: str | Path) -> GrainGrowthResult:
    """Read a structure file back as the simulator wrote it (ValueError naming the file when it is not one)."""
    path = Path(path)
    if not is_structure_file(path):
        raise ValueError(f"{path} is not a grain-growth structure file written by 'microsynth simulate'")
    with np.load(path) as a:
        meta = json.loads(str(a["meta"]))
        return GrainGrowthResult(
            settings=GrainGrowthSettings.from_dict(meta["settings"]), seed=int(meta["seed"]),
            initial=a["initial"].astype(np.int32), grains=a["grains"].astype(np.int32), instances=a["instances"],
            boundary=a["boundary"].astype(bool), phi=a["phi"], snapshot_steps=a["snapshot_steps"],
            snapshots=a["snapshots"].astype(np.int32), snapshot_phi=a["snapshot_phi"], info=meta.get("info", {}))


@dataclass
class SimulationRun:
    """What :func:`simulate_structures` did."""

    out: Path
    written: list[Path] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    info: list[dict[str, Any]] = field(default_factory=list)


def _check_manifest(out: Path, settings: GrainGrowthSettings, seed: int, structures: int) -> None:
    """Create ``simulation.json``, or check that an existing one was written with the same settings and seed
    (a folder holds one data set; a larger ``structures`` extends it)."""
    manifest = out / MANIFEST
    wanted = {"format": FORMAT, "version": FORMAT_VERSION, "settings": settings.to_dict(), "seed": int(seed)}
    if manifest.is_file():
        try:
            found = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest} is not readable JSON ({exc}); it is not a simulation folder") from None
        if found.get("format") != FORMAT:
            raise ValueError(f"{manifest} is not a grain-growth simulation manifest")
        differ = [k for k, v in wanted["settings"].items() if found.get("settings", {}).get(k) != v]
        if found.get("seed") != int(seed):
            differ.append("seed")
        if differ:
            old = {k: found.get("settings", {}).get(k, found.get(k)) for k in differ}
            listed = ", ".join(f"{k} {v}" for k, v in old.items())
            raise ValueError(f"{out} holds structures simulated with other settings ({listed}); give the same "
                             "settings to continue it, or choose another folder")
        structures = max(structures, int(found.get("structures", 0)))
    elif out.exists() and any(p.name != MANIFEST for p in out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a simulation folder (no {MANIFEST}); choose a new or "
                              "empty folder")
    out.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_name(MANIFEST + ".partial")
    tmp.write_text(json.dumps({**wanted, "structures": int(structures)}, indent=2))
    os.replace(tmp, manifest)


def simulate_structures(out: str | Path, settings: GrainGrowthSettings, structures: int, seed: int = 0,
                        device: str = "auto", progress: ProgressFn = no_progress,
                        should_stop: StopFn = never_stop) -> SimulationRun:
    """Simulate ``structures`` structures into the folder ``out`` (see the module docstring), skipping the
    finished ones. ``progress(done_steps, total_steps, message)`` counts Euler steps over all structures to
    simulate; when ``should_stop()`` the structure in progress is dropped and :class:`Cancelled` says how
    many are finished."""
    from ..models.phase_field import simulate

    if structures < 1:
        raise ValueError(f"structures must be at least 1, got {structures}")
    out = Path(out)
    _check_manifest(out, settings, seed, structures)
    for stale in out.glob("structure_*.npz.partial"):
        stale.unlink()
    todo = [i for i in range(structures) if not structure_path(out, i).is_file()]
    run = SimulationRun(out, skipped=structures - len(todo))
    total = max(len(todo) * max(settings.steps, 1), 1)
    started = time.perf_counter()
    for k, index in enumerate(todo):
        base = k * max(settings.steps, 1)
        label = f"structure {index + 1}/{structures}"

        def report(step: int, steps: int, message: str, base=base, label=label) -> None:
            progress(base + step, total, f"{label}, {message}")

        try:
            result = simulate(settings, structure_seed(seed, index), device=device, progress=report,
                              should_stop=should_stop)
        except Cancelled:
            finished = run.skipped + len(run.written)
            raise Cancelled(f"{finished} of {structures} structures are finished in {out}; run the same command "
                            "again to continue") from None
        path = structure_path(out, index)
        save_structure(path, result, index)
        run.written.append(path)
        run.info.append(result.info)
    progress(total, total, f"{structures} structures")
    run.seconds = time.perf_counter() - started
    return run


# ---------------------------------------------------------------- grain statistics


@dataclass
class GrainSource:
    """One grain map to measure: a mask file, a structure file or sample ``index`` of a dataset store, in the
    group of the path it came from."""

    path: Path
    group: str
    structure: bool
    store: DatasetStore | None = None  # open once for all of its samples
    index: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.path.name

    def labels(self, min_area: int, split_depth: float | None) -> np.ndarray:
        """The grain labels of a mask file or of a stored sample's grain-boundary mask."""
        if self.store is None:
            return read_grain_map(self.path, min_area=min_area, split_depth=split_depth)
        _, boundary = grain_boundary_ids(self.store.schema)
        return grains_of_boundary_mask(self.store.mask(self.index) == boundary, min_area, split_depth)


def _mask_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MASK_SUFFIXES)


def grain_sources(paths: list[str | Path]) -> list[GrainSource]:
    """The grain maps the paths name: a simulation folder (its structures), a structure file, a dataset
    store (the grain-boundary masks of its samples not rejected: generated pairs, say), a dataset folder (its
    ``masks/``), a folder of mask files, or one mask file."""
    sources: list[GrainSource] = []
    for given in paths:
        path = Path(given)
        group = path.name or str(path)
        if is_store(path):
            store = DatasetStore.open(path, mode="r")
            if "boundary" not in [n.lower() for n in store.schema.names] and store.schema.n_classes != 2:
                raise ValueError(f"{path} holds {store.schema.name} phase maps ({', '.join(store.schema.names)}), "
                                 "not grain-boundary masks (a 'boundary' class)")
            found = [GrainSource(path, group, False, store, i, name) for i, name in enumerate(store.names)
                     if store.status(i) != "rejected"]
            if not found:
                raise ValueError(f"{path}: the store holds no sample that is not rejected")
        elif path.is_dir() and (path / MANIFEST).is_file():
            found = [GrainSource(p, group, True) for p in sorted(path.glob("structure_*.npz"))]
            if not found:
                raise ValueError(f"{path}: the simulation folder holds no finished structure yet")
        elif path.is_dir():
            folder = path / "masks" if (path / "masks").is_dir() else path
            found = [GrainSource(p, group, False) for p in _mask_files(folder)]
            if not found:
                raise ValueError(f"{path}: no mask files ({', '.join(MASK_SUFFIXES)}) in {folder}")
        elif path.is_file():
            found = [GrainSource(path, path.stem, is_structure_file(path))]
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
        sources.extend(found)
    return sources


@dataclass
class GrainStatsReport:
    """What :func:`grain_statistics` wrote and found."""

    out: Path
    summaries: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    files: list[Path]
    timeseries: list[dict[str, Any]] = field(default_factory=list)

    def as_text(self) -> str:
        lines = []
        for g in self.groups:
            unit = "um" if np.isfinite(g["mean_diameter_um"]) else "px"
            d, s = g[f"mean_diameter_{unit}"], g[f"std_diameter_{unit}"]
            area_unit = "um2" if unit == "um" else "px"
            a, sa = g[f"mean_area_{area_unit}"], g[f"std_area_{area_unit}"]
            g_text = (f"E112 G {g['e112_g']:.2f} (from the mean area of whole grains: {g['e112_g_mean_area']:.2f})"
                      if np.isfinite(g["e112_g"]) else "E112 G: give --pixel-size")
            lines.append(f"{g['group']}: {g['maps']} maps, {g['grains']} grains ({g['whole_grains']} whole); "
                         f"whole grains: area {a:.1f} +- {sa:.1f} {'um^2' if unit == 'um' else 'px'}, "
                         f"equivalent diameter {d:.2f} +- {s:.2f} {unit}, aspect ratio {g['mean_aspect_ratio']:.2f}, "
                         f"circularity {g['mean_circularity']:.2f}; {g_text}")
        lines.append("wrote " + ", ".join(str(p) for p in self.files))
        return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _timeseries_rows(structure: GrainGrowthResult, source: GrainSource,
                     pixel_size_um: float | None) -> list[dict[str, Any]]:
    """Mean +- std grain size per snapshot, over the simulation's whole grains (grain numbers on the periodic
    domain: no grain is cut by the image edge), and the E112 number of the snapshot's image."""
    rows = []
    px = pixel_size_um
    for step, snapshot in zip(structure.snapshot_steps.tolist(), structure.snapshots):
        areas = np.bincount(snapshot.ravel())
        areas = areas[areas > 0].astype(float)
        diameters = np.sqrt(4 * areas / np.pi)
        e112 = astm_e112(connected_instances(snapshot), px)
        rows.append({"group": source.group, "source": source.name, "step": int(step), "grains": int(areas.size),
                     "mean_area_px": areas.mean(), "std_area_px": areas.std(), "mean_diameter_px": diameters.mean(),
                     "std_diameter_px": diameters.std(),
                     "mean_diameter_um": diameters.mean() * px if px else float("nan"),
                     "std_diameter_um": diameters.std() * px if px else float("nan"),
                     "e112_g": e112.g if e112.g is not None else float("nan")})
    return rows


def _pool(group: str, tables: list[dict[str, np.ndarray]], e112s: list, px: float | None) -> dict[str, Any]:
    """One summary over several maps: their whole grains pooled, E112 from the summed equivalent grains over
    the summed field areas (the N_A of the fields together)."""
    from ..core.grains import E112Result, g_from_grains_per_mm2

    table = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
    equivalent = sum(e.equivalent_grains for e in e112s)
    field_px = sum(e.field_px for e in e112s)
    n_a = equivalent / (field_px * (px * 1e-3) ** 2) if px else None
    whole_areas = table["area_px"][~table["touches_border"]]
    g_area = None
    if px and whole_areas.size:
        g_area = -3.3223 * np.log10(whole_areas.mean() * (px * 1e-3) ** 2) - 2.955
    pooled = E112Result(sum(e.inside for e in e112s), sum(e.intercepted for e in e112s), sum(e.corners for e in e112s),
                        equivalent, field_px, equivalent / field_px, n_a,
                        g_from_grains_per_mm2(n_a) if n_a else None, g_area)
    return {"group": group, "maps": len(tables), **summarise(table, pooled, px)}


def grain_statistics(paths: list[str | Path], out: str | Path, pixel_size_um: float | None = None, min_area: int = 0,
                     split_depth: float | None = None, progress: ProgressFn = no_progress,
                     should_stop: StopFn = never_stop) -> GrainStatsReport:
    """Grain statistics of every grain map the paths name (:func:`grain_sources`), written to ``out``:

    - ``grains.csv``: one row per grain (:data:`~napari_microsynth.core.grains.GRAIN_COLUMNS`, with its map);
    - ``summary.csv``: one row per map and one per path given (its maps pooled): mean +- std area and
      equivalent diameter of the whole grains, mean aspect ratio and circularity, E112 numbers;
    - ``size_distribution.png``: the equivalent-diameter histogram of the whole grains, one per path given;
    - for simulated structures, ``timeseries.csv`` and ``growth.png``: mean +- std grain size per snapshot.

    A structure is measured on its final instance map (the image, as a micrograph would show it); real
    masks are read with :func:`~napari_microsynth.core.grains.read_grain_map` (``min_area`` drops specks of
    a boundary mask; ``split_depth`` splits a boundary mask's grains merged through gaps instead,
    :func:`~napari_microsynth.core.grains.grains_from_boundary_probability`). Cancelling stops before the
    next map; nothing is written then.
    """
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise ValueError(f"the pixel size must be positive, got {pixel_size_um}")
    sources = grain_sources(paths)
    out = Path(out)
    px = pixel_size_um
    grain_rows, summaries, series = [], [], []
    by_group: dict[str, tuple[list, list]] = {}
    for k, source in enumerate(sources):
        if should_stop():
            raise Cancelled("grain statistics cancelled; nothing was written")
        if source.structure:
            structure = load_structure(source.path)
            labels = structure.instances
            series.extend(_timeseries_rows(structure, source, px))
        else:
            labels = source.labels(min_area, split_depth)
        table = grain_table(labels, px)
        e112 = astm_e112(labels, px)
        for i in range(table["label"].size):
            grain_rows.append({"group": source.group, "source": source.name,
                               **{c: (v[i].item() if hasattr(v[i], "item") else v[i]) for c, v in table.items()}})
        summaries.append({"group": source.group, "source": source.name, **summarise(table, e112, px)})
        tables, e112s = by_group.setdefault(source.group, ([], []))
        tables.append(table)
        e112s.append(e112)
        progress(k + 1, len(sources), source.name)
    groups = [_pool(group, tables, e112s, px) for group, (tables, e112s) in by_group.items()]
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "grains.csv", out / "summary.csv", out / "size_distribution.png"]
    _write_csv(files[0], grain_rows)
    _write_csv(files[1], [{"source": "(all)", **g} for g in groups] + [{**s, "maps": 1} for s in summaries])
    _plot_size_distribution(files[2], by_group, px)
    if series:
        files += [out / "timeseries.csv", out / "growth.png"]
        _write_csv(files[3], series)
        _plot_growth(files[4], series, px)
    return GrainStatsReport(out, summaries, groups, files, series)


def _plot_size_distribution(path: Path, by_group: dict[str, tuple[list, list]], px: float | None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    unit = "um" if px else "px"
    values = {g: np.concatenate([t["equivalent_diameter_px"][~t["touches_border"]] for t in tables]) * (px or 1.0)
              for g, (tables, _) in by_group.items()}
    everything = np.concatenate(list(values.values()))
    bins = np.histogram_bin_edges(everything, bins=30) if everything.size else 10
    for group, v in values.items():
        ax.hist(v, bins=bins, density=True, histtype="step", linewidth=1.5,
                label=f"{group} ({v.size} grains, {v.mean():.1f} +- {v.std():.1f} {unit})" if v.size else group)
    ax.set_xlabel(f"equivalent diameter of whole grains ({unit})")
    ax.set_ylabel("density")
    ax.set_title("Grain size distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _plot_growth(path: Path, rows: list[dict[str, Any]], px: float | None) -> None:
    """Mean +- std grain size per step (all structures of a group pooled), and the mean grain area."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    size_ax, area_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    unit = "um" if px else "px"
    scale = px or 1.0
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        steps = sorted({r["step"] for r in mine})
        mean, std, area = [], [], []
        for step in steps:
            at = [r for r in mine if r["step"] == step]
            n = np.array([r["grains"] for r in at], float)
            m = np.array([r["mean_diameter_px"] for r in at])
            s = np.array([r["std_diameter_px"] for r in at])
            a = np.array([r["mean_area_px"] for r in at])
            total = (n * m).sum() / n.sum()  # pooled over the structures' grains
            var = (n * (s**2 + (m - total) ** 2)).sum() / n.sum()
            mean.append(total * scale)
            std.append(np.sqrt(var) * scale)
            area.append((n * a).sum() / n.sum() * scale * scale)
        structures = len({r["source"] for r in mine})
        size_ax.errorbar(steps, mean, yerr=std, marker="o", markersize=3, capsize=2,
                         label=f"{group} ({structures} structure{'s' * (structures != 1)})")
        area_ax.plot(steps, area, marker="o", markersize=3, label=group)
    size_ax.set_xlabel("step")
    size_ax.set_ylabel(f"equivalent diameter ({unit}), mean +- std")
    size_ax.set_title("Grain growth")
    size_ax.legend(fontsize=8)
    area_ax.set_xlabel("step")
    area_ax.set_ylabel(f"mean grain area ({unit}^2)")
    area_ax.set_title("Mean grain area")
    fig.tight_layout()
    fig.savefig(path)


__all__ = ["GrainStatsReport", "SimulationRun", "Structure", "grain_sources", "grain_statistics",
           "is_structure_file", "load_structure", "save_structure", "simulate_structures", "structure_path",
           "structure_seed"]
