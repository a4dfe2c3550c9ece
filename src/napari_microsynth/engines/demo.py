"""The main job on the bundled sample data, end to end, as the README's first command runs it.

Steps (each writes into the output folder):
1. load the bundled UHCS micrograph + mask and report its phase fractions (table, CSV, histogram PNG);
2. segment it with the bundled demo model (paper 001's PLM) without a ratio and with its true phase
   ratio, scoring both against the mask, and save the phase maps as PNG;
3. generate micrograph + mask pairs with the bundled demo generator (two-stage-gan: fraction-controlled
   mask diffusion + SPADE translator) for target fractions drawn from the sample's tiles with the rare
   phases boosted, into a dataset store, with a preview of real tiles above the generated pairs;
4. curate them automatically: accept the pairs whose achieved fractions are within
   ``DEMO_MAX_FRACTION_ERROR`` of their target, leave the others pending;
5. export a training set: the sample's real tiles plus the accepted pairs, as a dataset store with
   class-balance report and dataset card, and as plain folders (PNG + CSV).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.tiles import tile_samples
from .reports import format_fraction_table, plot_fraction_histograms, write_fraction_csv

DEMO_MARKER = ".microsynth-demo"
DEMO_SEGMENTER = "plm-uhcs-demo"
DEMO_GENERATOR = "two-stage-gan-uhcs-demo"
DEMO_PAIRS = 12
DEMO_GUIDANCE = 1.0  # with the fraction control on, guidance adds no accuracy (model card)
DEMO_MAX_FRACTION_ERROR = 0.05  # accept pairs whose phase fractions are all within 5 points of the target
DEMO_TILE = 128  # real pixels: the field of view of the demo generator's pairs (64 px at half resolution)


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
    total = 5

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
    _segment(sample, out, lines, should_stop)
    check_stop(should_stop)

    progress(2, total, f"generating {DEMO_PAIRS} pairs with the bundled {DEMO_GENERATOR} model")
    store = _generate(sample, out / "generated.zarr", lines, should_stop)

    progress(3, total, "accepting pairs close to their target fractions")
    from ..core.curation import accept_within, fraction_errors

    accepted = accept_within(store, DEMO_MAX_FRACTION_ERROR)
    errors = fraction_errors(store)
    lines.append(f"auto-curation: {len(accepted)} of {len(store)} pairs accepted (every phase within "
                 f"{100 * DEMO_MAX_FRACTION_ERROR:.0f} points of its target; median largest deviation "
                 f"{100 * float(np.nanmedian(errors)):.1f} points); the others stay pending for the Curation widget")

    progress(4, total, "exporting the training set")
    from ..core.tiles import labelled_tiles
    from .training_set import export_training_set

    n_real = len(labelled_tiles([sample], DEMO_TILE))
    summary = export_training_set(
        out / "training_set", [sample], synthetic=store, ratio=len(accepted) / n_real, tile=DEMO_TILE,
        description="napari-microsynth demo: the bundled UHCS micrograph and auto-curated generated pairs",
        source=f"bundled sample {sample.name}", folders=True, should_stop=should_stop,
    )
    lines.append(summary.as_text())
    lines.append(f"dataset card: {out / 'training_set' / 'README.md'}")
    progress(total, total, "done")
    return "\n".join(lines)


def _generate(sample, path: Path, lines: list[str], should_stop: StopFn):
    """Pairs from the bundled generator for boosted targets drawn from the sample's tiles, in a new store."""
    from ..core.store import DatasetStore
    from ..generators import load_generator
    from ..resources import resource_path
    from ..core.conditions import fraction_targets

    generator = load_generator(resource_path("models", DEMO_GENERATOR), device="cpu")
    targets = fraction_targets([sample], DEMO_PAIRS, seed=0, tile=DEMO_TILE)
    store = DatasetStore.create(path, sample.schema, description=f"pairs from the bundled {DEMO_GENERATOR}")
    pairs = list(generator.sample(targets, n=DEMO_PAIRS, seed=0, sampler="dpm++", batch_size=DEMO_PAIRS,
                                  guidance_scale=DEMO_GUIDANCE, should_stop=should_stop))
    store.extend(pairs, split="synthetic", should_stop=should_stop)
    real = tile_samples(sample, DEMO_TILE)[:DEMO_PAIRS]
    _save_pair_grid(real, pairs, generator.downscale, path.with_name("generated_pairs.png"))
    lines.append(f"generated {len(store)} pairs with {DEMO_GENERATOR} (DPM-Solver++, 20 steps, guidance "
                 f"{DEMO_GUIDANCE:g}, fraction control on) into {path}; "
                 f"preview {path.with_name('generated_pairs.png').name} (real tiles of the sample on top)")
    return store


def _palette(schema) -> np.ndarray:
    """``(256, 3)`` uint8 lookup from class id to the schema's colour."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: schema.n_classes] = schema.colors
    return palette


def _save_pair_grid(real, pairs, downscale: int, path: Path) -> None:
    """One PNG: real tiles (reduced by ``downscale`` to the generator's scale) with their masks on top,
    the generated images and masks below, each block labelled."""
    from PIL import Image, ImageDraw

    from ..core.tiles import downscale_pair

    colors = _palette(pairs[0].schema)

    def block(images, masks) -> np.ndarray:
        columns = []
        for image, mask in zip(images, masks):
            grey = np.repeat((image * 255).round().astype(np.uint8)[..., None], 3, axis=2)
            columns.append(np.concatenate([grey, colors[mask]], axis=0))
            columns.append(np.full((grey.shape[0] * 2, 2, 3), 255, np.uint8))
        return np.concatenate(columns[:-1], axis=1)

    reduced = [downscale_pair(t.image, t.mask, downscale, t.schema) for t in real]
    top = block([r[0] for r in reduced], [r[1] for r in reduced])
    bottom = block([p.image for p in pairs], [p.mask for p in pairs])
    width = max(top.shape[1], bottom.shape[1])
    label = np.full((14, width, 3), 255, np.uint8)
    rows = [label, _pad_to(top, width), label.copy(), _pad_to(bottom, width)]
    picture = Image.fromarray(np.concatenate(rows, axis=0))
    draw = ImageDraw.Draw(picture)
    draw.text((2, 1), "real tiles of the held-out sample (image, mask)", fill=(0, 0, 0))
    draw.text((2, 15 + top.shape[0]), "generated pairs (image, mask), same scale", fill=(0, 0, 0))
    picture.save(path)


def _pad_to(block: np.ndarray, width: int) -> np.ndarray:
    """``block`` padded with white on the right to ``width`` columns."""
    return np.pad(block, ((0, 0), (0, width - block.shape[1]), (0, 0)), constant_values=255)


def _segment(sample, out: Path, lines: list[str], should_stop: StopFn) -> None:
    """Phase maps of ``sample`` without and with its true ratio, scored and saved as PNG."""
    from PIL import Image

    from ..core.metrics import segmentation_report
    from ..models.segmenter import Segmenter
    from ..resources import resource_path
    from .inference import PhaseRatioSession
    from .reports import phase_overlay

    model = Segmenter.load(resource_path("models", DEMO_SEGMENTER))
    session = PhaseRatioSession(model, sample.image, should_stop=should_stop)
    lines.append(f"segmentation with bundled model {DEMO_SEGMENTER} (mIoU against the hand mask):")
    for label, ratio in (("no ratio", None), ("true ratio", sample.fractions)):
        labels, _ = session.predict(ratio)
        report = segmentation_report(sample.mask, labels, sample.schema)
        lines.append(f"  {label:10s}  mIoU {report['miou']:.3f}  accuracy {report['accuracy']:.3f}")
        # the phase colours, with a legend naming each phase and its area share
        Image.fromarray(phase_overlay(sample.image, labels, sample.schema, alpha=1.0)).save(
            out / f"phases_{label.replace(' ', '_')}.png")
