"""The main job on the bundled sample data, end to end, as the README's first command runs it.

Steps (each writes into the output folder):
1. load the bundled UHCS micrograph + mask and report its phase fractions (table, CSV, histogram PNG);
2. write it and its 256x256 tiles into a dataset store;
3. export the store to plain folders (PNG/TIFF + CSV).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.store import DatasetStore, export_folder
from ..core.tiles import tile_samples
from .reports import format_fraction_table, plot_fraction_histograms, write_fraction_csv

DEMO_MARKER = ".microsynth-demo"


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace an earlier demo output")
        if not (out / DEMO_MARKER).exists():
            raise FileExistsError(f"{out} holds files that are not a demo output; refusing to delete them")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by 'microsynth demo'\n")


def run_demo(out: Path, overwrite: bool = False, progress: ProgressFn = no_progress,
             should_stop: StopFn = never_stop) -> str:
    """Run the pipeline on the bundled sample into ``out``; returns a human-readable summary."""
    from ..napari_io import load_sample

    out = Path(out)
    _prepare(out, overwrite)
    lines = []
    total = 3

    progress(0, total, "loading the bundled UHCS sample")
    sample = load_sample()
    fractions = sample.fractions[None, :]
    lines.append(f"sample {sample.name}: {sample.shape[1]}x{sample.shape[0]} px, "
                 f"{sample.pixel_size_um:.3f} um/px, schema {sample.schema.name}")
    lines.append(format_fraction_table([sample.name], fractions, sample.schema))
    write_fraction_csv(out / "fractions.csv", [sample.name], fractions, sample.schema)
    tiles = tile_samples(sample, 256)
    tile_fractions = np.stack([t.fractions for t in tiles])
    plot_fraction_histograms(out / "tile_fraction_histograms.png", tile_fractions, sample.schema,
                             title=f"{sample.name}: phase fractions of its {len(tiles)} 256x256 tiles")
    check_stop(should_stop)

    progress(1, total, "writing the dataset store")
    store_path = out / "sample.zarr"
    store = DatasetStore.create(store_path, sample.schema, description="napari-microsynth demo: bundled UHCS sample")
    store.append(sample, split="test")
    for tile in tiles:
        check_stop(should_stop)
        store.append(tile, split="tiles")
    lines.append(f"store {store_path}: {len(store)} samples (1 micrograph + {len(tiles)} tiles)")

    progress(2, total, "exporting plain folders")
    exported = export_folder(DatasetStore.open(store_path), out / "export", should_stop=should_stop)
    lines.append(f"exported PNG/TIFF + CSV to {exported}")
    progress(total, total, "done")
    return "\n".join(lines)
