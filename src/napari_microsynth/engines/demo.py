"""The main job on the bundled sample data, end to end, as the README's first command runs it.

Steps (each writes into the output folder):
1. load the bundled UHCS micrograph + mask and report its phase fractions (table, CSV, histogram PNG);
2. segment it with the bundled demo model (paper 001's PLM) without a ratio and with its true phase
   ratio, scoring both against the mask, and save the phase maps as PNG;
3. write it, its predicted phase map and its 256x256 tiles into a dataset store;
4. export the store to plain folders (PNG/TIFF + CSV).
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
DEMO_SEGMENTER = "plm-uhcs-demo"


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
    from ..core.sample_data import load_sample

    out = Path(out)
    _prepare(out, overwrite)
    lines = []
    total = 4

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

    progress(1, total, "segmenting with the bundled PLM model")
    predicted = _segment(sample, out, lines, should_stop)
    check_stop(should_stop)

    progress(2, total, "writing the dataset store")
    store_path = out / "sample.zarr"
    store = DatasetStore.create(store_path, sample.schema, description="napari-microsynth demo: bundled UHCS sample")
    store.append(sample, split="test")
    store.append(predicted, split="predicted")
    for tile in tiles:
        check_stop(should_stop)
        store.append(tile, split="tiles")
    lines.append(f"store {store_path}: {len(store)} samples (micrograph, its predicted phase map, {len(tiles)} tiles)")

    progress(3, total, "exporting plain folders")
    exported = export_folder(DatasetStore.open(store_path), out / "export", should_stop=should_stop)
    lines.append(f"exported PNG/TIFF + CSV to {exported}")
    progress(total, total, "done")
    return "\n".join(lines)


def _segment(sample, out: Path, lines: list[str], should_stop: StopFn):
    """Phase maps of ``sample`` without and with its true ratio; returns the true-ratio prediction."""
    from dataclasses import replace

    from PIL import Image

    from ..core.metrics import segmentation_report
    from ..core.sample import Provenance
    from ..models.folder import folder_checksum
    from ..models.segmenter import Segmenter
    from ..resources import resource_path
    from .inference import PhaseRatioSession

    folder = resource_path("models", DEMO_SEGMENTER)
    model = Segmenter.from_pretrained(folder)
    session = PhaseRatioSession(model, sample.image, should_stop=should_stop)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: sample.schema.n_classes] = sample.schema.colors
    lines.append(f"segmentation with bundled model {DEMO_SEGMENTER} (mIoU against the hand mask):")
    result = None
    for label, ratio in (("no ratio", None), ("true ratio", sample.fractions)):
        labels, _ = session.predict(ratio)
        report = segmentation_report(sample.mask, labels, sample.schema)
        lines.append(f"  {label:10s}  mIoU {report['miou']:.3f}  accuracy {report['accuracy']:.3f}")
        Image.fromarray(palette[labels]).save(out / f"phases_{label.replace(' ', '_')}.png")
        result = labels
    return replace(
        sample,
        mask=result,
        name=f"{sample.name} predicted",
        provenance=Provenance(origin="predicted", source=sample.name, generator=f"segmenter:{DEMO_SEGMENTER}",
                              model_checksum=folder_checksum(folder),
                              condition={"fractions": [float(v) for v in sample.fractions]}),
    )
