"""Paper 003's experiment: a U-Net trained only on synthetic grain images + simulated masks, tested on the
grain boundaries of real micrographs, against the paper's two baselines.

Three training sets, one identical U-Net recipe (paper 003, sec. III.B):

- ``real``: the labelled train regions of a few real micrographs (``real_images``), with the classic
  augmentation of the segmenter's training (magnification 0.8-1.25x, flips, 90-degree turns, brightness,
  contrast, gamma): paper 003's baseline 1, "few real patches with classic augmentation".
- ``untextured``: ``pairs`` simulated structures as the translator is given them (the eq. 3 image, grains
  bright and boundaries dark, no texture) with their boundary masks: baseline 2.
- ``translated``: the same structures translated by the CycleGAN's sim -> real generator, same masks:
  the paper's method. Baseline 2 and the method share the structures, so their difference is the
  translator's alone.

Test: the test regions of every real micrograph with their hand-drawn grain boundaries. Each micrograph is
split in two halves (``test_half``: the right half by default); training (baseline 1) uses only the other
halves, so no test pixel's grains are seen labelled, also across serial sections (Fast-FineCut's five
slices share grains at the same position). Everything is at the translator's scale: micrographs reduced
``translator.downscale`` times (block mean), hand instance maps by the block's centre pixel, boundaries
recomputed there (2 px wide, as the simulated masks).

Scores per run (all test regions): boundary IoU (pixels of the boundary class, pooled), mean IoU of grain
and boundary, boundary F1 (predicted boundary pixels within ``tolerance`` px of hand ones and vice versa,
mean over the regions), and the ASTM E112 grain-size number error: the predicted boundaries are turned
into grains and counted by E112's planimetric rule (edge grains 1/2, corner grains 1/4) like the hand map;
``G = log2(N_A) + const``, so ``dG = log2(N_pred / N_hand)`` needs no pixel size. Grains are made two ways:
the 4-connected interiors of the predicted boundary mask (specks under ``min_grain_area`` px dropped,
boundaries filled from the nearest grain; a gap in a predicted boundary merges two grains), and split grains
(:func:`~napari_microsynth.core.grains.grains_from_boundary_probability`: a watershed of the distance to the
predicted boundaries from its h-maxima, which closes such gaps). The marker depth of the split is chosen on
validation regions, the train halves of the micrographs no U-Net trains on (from ``marker_depths``, lowest
mean |dG| over every run), or is ``marker_depth`` when given or when no micrograph is left for validation.
The table gives mean +- sd over the seeds (U-Net initialisation and tile draws; the synthetic pool is one,
drawn with ``pool_seed``).

Files in ``out``: ``pool.npz`` (the synthetic pairs; reused when run again), ``runs/<set>-seed<k>/`` (U-Net
checkpoints, ``scores.json``; a finished run is not repeated, an interrupted one resumes; a run made with
other settings is refused rather than mixed into the table), ``runs.csv``,
``summary.csv``, ``report.md``, ``examples.png``.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.grains import astm_e112, grain_boundary_ids, grains_from_boundary_probability, labels_from_boundaries
from ..core.io import instance_boundaries
from ..core.metrics import boundary_f1, confusion_matrix, per_class_iou
from ..core.microstructure import connected_instances
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Provenance, Sample
from ..generators.phasefield_cyclegan import reduce_image, untextured_image
from .segmentation import SegmentationConfig, train_segmenter

SETS = ("real", "untextured", "translated")
SET_LABELS = {
    "real": "few real regions + classic augmentation (baseline 1)",
    "untextured": "untextured simulations (baseline 2)",
    "translated": "simulations translated by the CycleGAN (paper 003)",
}
METRICS = ("boundary_iou", "miou", "boundary_f1", "e112_abs_dg", "e112_abs_dg_split")
METRIC_LABELS = {"boundary_iou": "boundary IoU", "miou": "mean IoU", "boundary_f1": "boundary F1",
                 "e112_abs_dg": "E112 ΔG error, interiors (absolute)",
                 "e112_abs_dg_split": "E112 ΔG error, split grains (absolute)"}
#: the split grains' marker depth (px) where no validation region is left to choose it: the one chosen on the
#: Fast-FineCut iron validation halves (README, paper 003's experiment)
DEFAULT_MARKER_DEPTH = 1.0
HALVES = ("right", "left", "bottom", "top")


@dataclass
class Sim2RealConfig:
    """The experiment's settings (see the module docstring)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    real_images: int = 2
    pairs: int = 60
    pool_seed: int = 0
    test_half: str = "right"
    min_grain_area: int = 16
    tolerance: float = 2.0
    marker_depths: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    marker_depth: float | None = None
    segmentation: SegmentationConfig = field(default_factory=lambda: SegmentationConfig(
        arch="Unet", preset="tiny", plm="baseline", tile_size=128, batch_size=8, steps=300))

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        fallback = DEFAULT_MARKER_DEPTH if self.marker_depth is None else float(self.marker_depth)
        self.marker_depths = tuple(sorted({*(float(d) for d in self.marker_depths), fallback}))
        checks = [
            (len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
             f"seeds must be one or more distinct numbers, got {self.seeds}"),
            (self.real_images >= 1, f"real_images must be at least 1, got {self.real_images}"),
            (self.pairs >= 1, f"pairs must be at least 1, got {self.pairs}"),
            (self.test_half in HALVES, f"test_half must be one of {', '.join(HALVES)}, got {self.test_half!r}"),
            (self.min_grain_area >= 0, f"min_grain_area must be >= 0, got {self.min_grain_area}"),
            (self.tolerance >= 0, f"tolerance must be >= 0, got {self.tolerance}"),
            (len(self.marker_depths) >= 1 and all(d > 0 for d in self.marker_depths),
             f"marker depths must be one or more positive numbers, got {self.marker_depths}"),
            (self.segmentation.plm.lower() == "baseline", "the experiment trains a plain U-Net (plm 'baseline')"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# ---------------------------------------------------------------- real data at the translator's scale


def at_scale(sample: Sample, factor: int) -> Sample:
    """A labelled grain micrograph reduced ``factor`` times: image by block means, the instance map by each
    block's centre pixel (then relabelled into connected grains), the boundary mask recomputed from it
    (2 px, grain / boundary ids of the sample's schema)."""
    if sample.instances is None:
        raise ValueError(f"{sample.name}: the experiment needs grain instance maps (a grains dataset)")
    image = reduce_image(sample.image, factor)
    h, w = image.shape
    c = factor // 2
    instances = connected_instances(np.asarray(sample.instances)[c:h * factor:factor, c:w * factor:factor])
    grain, boundary = grain_boundary_ids(sample.schema)
    mask = np.where(instance_boundaries(instances), boundary, grain).astype(np.int64)
    px = None if sample.pixel_size_um is None else sample.pixel_size_um * factor
    return replace(sample, image=image, mask=mask, instances=instances, pixel_size_um=px,
                   provenance=replace(sample.provenance, extra={**sample.provenance.extra, "downscale": factor}))


def halves(sample: Sample, test_half: str) -> tuple[Sample, Sample]:
    """``(train part, test part)`` of a sample: the ``test_half`` half is the test part; instances are
    relabelled and boundaries recomputed inside each part (the cut is not a boundary)."""
    h, w = sample.shape
    boxes = {"right": ((0, 0, h, w // 2), (0, w // 2, h, w)), "left": ((0, w // 2, h, w), (0, 0, h, w // 2)),
             "bottom": ((0, 0, h // 2, w), (h // 2, 0, h, w)), "top": ((h // 2, 0, h, w), (0, 0, h // 2, w))}
    grain, boundary = grain_boundary_ids(sample.schema)
    parts = []
    for box, role in zip(boxes[test_half], ("train", "test")):
        part = sample.crop(box, name=f"{sample.name} {role}")
        instances = connected_instances(part.instances)
        mask = np.where(instance_boundaries(instances), boundary, grain).astype(np.int64)
        parts.append(replace(part, instances=instances, mask=mask))
    return parts[0], parts[1]


def write_region_folder(samples: Sequence[Sample], folder: str | Path, test_half: str = "right") -> Path:
    """A grains dataset folder of the train parts of ``samples`` at full resolution (``images/*.tif`` grey,
    ``masks/*.tif`` one RGB colour per grain, ``splits/train.txt`` naming them all), for training the
    translator on what the experiment may see: ``microsynth train-generator phasefield-cyclegan FOLDER``."""
    import tifffile

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    (folder / "splits").mkdir(parents=True, exist_ok=True)
    names = []
    for sample in samples:
        train, _ = halves(sample, test_half)
        stem = f"{sample.name}_train"
        ids = np.asarray(train.instances, np.int64)
        colours = np.stack([ids & 255, (ids >> 8) & 255, np.full_like(ids, 200)], axis=-1).astype(np.uint8)
        tifffile.imwrite(folder / "images" / f"{stem}.tif", np.round(train.image * 255).astype(np.uint8))
        tifffile.imwrite(folder / "masks" / f"{stem}.tif", colours, photometric="rgb")
        names.append(f"{stem}.tif")
    (folder / "splits" / "train.txt").write_text("".join(f"{n}\n" for n in names))
    (folder / "README.txt").write_text(
        f"Train parts ({'left' if test_half == 'right' else 'other'} halves; the {test_half} halves are the test "
        "regions of 'microsynth sim2real-benchmark') of:\n" + "".join(f"  {s.provenance.source or s.name}\n"
                                                                     for s in samples))
    return folder


# ---------------------------------------------------------------- scores


def _dg(grains: np.ndarray, hand) -> tuple[float, float]:
    """``(E112 equivalent grains, dG against the hand map)`` of a grain map (-inf where nothing was found)."""
    found = astm_e112(grains) if grains.max() > 0 else None
    ratio = (found.grains_per_px / hand.grains_per_px) if found and hand.grains_per_px > 0 else 0.0
    return (found.equivalent_grains if found else 0.0), (math.log2(ratio) if ratio > 0 else float("-inf"))


def split_grain_dg(truth: Sample, boundary_probability: np.ndarray, depths: Sequence[float],
                   hand=None) -> dict[str, float]:
    """dG of the split grains of a predicted boundary probability map against a region's hand map (its E112
    count ``hand`` when already made), per marker depth (keys: the depths as text, for JSON)."""
    hand = astm_e112(truth.instances) if hand is None else hand
    return {f"{d:g}": _dg(grains_from_boundary_probability(boundary_probability, d), hand)[1] for d in depths}


def grain_scores(truth: Sample, predicted: np.ndarray, boundary_probability: np.ndarray, min_grain_area: int,
                 tolerance: float, depths: Sequence[float]) -> dict[str, Any]:
    """Scores of one predicted class map and its boundary probabilities against a test region (see the module
    docstring); the split grains' dG per marker depth."""
    grain, boundary = grain_boundary_ids(truth.schema)
    true_b, pred_b = truth.mask == boundary, np.asarray(predicted) == boundary
    hand = astm_e112(truth.instances)
    found, dg = _dg(labels_from_boundaries(pred_b, fill=True, min_area=min_grain_area), hand)
    return {
        "confusion": confusion_matrix(truth.mask, predicted, truth.schema.n_classes).tolist(),
        "boundary_f1": boundary_f1(true_b, pred_b, tolerance),
        "e112_hand_grains": hand.equivalent_grains,
        "e112_predicted_grains": found,
        "e112_dg": dg,
        "e112_dg_split": split_grain_dg(truth, boundary_probability, depths, hand),
    }


def run_scores(per_image: Sequence[dict[str, Any]], boundary: int) -> dict[str, float]:
    """The pooled scores of one run from its per-region scores (the split grains' scores are added once the
    marker depth is chosen: :func:`split_scores`)."""
    cm = np.sum([np.asarray(s["confusion"]) for s in per_image], axis=0)
    iou = per_class_iou(cm)
    dg = np.array([s["e112_dg"] for s in per_image], float)
    return {"boundary_iou": float(iou[boundary]), "miou": float(np.nanmean(iou)),
            "boundary_f1": float(np.mean([s["boundary_f1"] for s in per_image])),
            "e112_abs_dg": float(np.mean(np.abs(dg))), "e112_dg": float(np.mean(dg)),
            "hand_grains": float(np.sum([s["e112_hand_grains"] for s in per_image])),
            "predicted_grains": float(np.sum([s["e112_predicted_grains"] for s in per_image]))}


def split_scores(per_image: Sequence[dict[str, Any]], depth: float) -> dict[str, float]:
    """A run's split-grain dG (mean absolute and signed over the regions) at marker depth ``depth``."""
    dg = np.array([s["e112_dg_split"][f"{depth:g}"] for s in per_image], float)
    return {"e112_abs_dg_split": float(np.mean(np.abs(dg))), "e112_dg_split": float(np.mean(dg))}


def choose_marker_depth(rows: Sequence[dict[str, Any]], depths: Sequence[float]) -> tuple[float, dict[str, float]]:
    """The marker depth with the lowest mean |dG| on the validation regions over every run, and that mean per
    depth (depths as text)."""
    means = {f"{d:g}": float(np.mean([np.mean(np.abs([v[f"{d:g}"] for v in r["validation_dg_split"]]))
                                      for r in rows])) for d in depths}
    best = min(depths, key=lambda d: means[f"{d:g}"])
    return float(best), means


# ---------------------------------------------------------------- the synthetic pool


def synthetic_pool(translator, pairs: int, seed: int, path: Path, progress: ProgressFn = no_progress,
                   should_stop: StopFn = never_stop) -> tuple[list[Sample], list[Sample]]:
    """``(untextured, translated)`` training samples of ``pairs`` structures drawn inside the translator's
    ranges (seeds ``seed``, ``seed + 1``, ...), cached in ``path`` for this translator, count and seed."""
    key = {"checksum": translator.model_checksum, "pairs": pairs, "seed": seed, "resolution": translator.resolution}
    if path.is_file():
        with np.load(path) as saved:
            if json.loads(str(saved["key"])) == key:
                return _pool_samples(translator, saved["untextured"], saved["translated"], saved["masks"], seed)
    untextured, translated, masks = [], [], []
    for i, pair in enumerate(translator.sample(None, n=pairs, seed=seed, untextured=True, should_stop=should_stop)):
        untextured.append(untextured_image(pair))
        translated.append(pair.image)
        masks.append(pair.mask.astype(np.uint8))
        progress(i + 1, pairs, f"synthetic pair {i + 1}/{pairs}")
    tmp = path.with_suffix(".partial.npz")
    np.savez_compressed(tmp, key=json.dumps(key), untextured=np.stack(untextured), translated=np.stack(translated),
                        masks=np.stack(masks))
    tmp.replace(path)
    return _pool_samples(translator, np.stack(untextured), np.stack(translated), np.stack(masks), seed)


def _pool_samples(translator, untextured, translated, masks, seed: int) -> tuple[list[Sample], list[Sample]]:
    def made(images, kind: str) -> list[Sample]:
        return [Sample(image=image, schema=translator.schema, mask=mask.astype(np.int64), name=f"{kind}-{seed + i}",
                       provenance=Provenance(origin="synthetic", generator=translator.name, seed=seed + i,
                                             model_checksum=translator.model_checksum))
                for i, (image, mask) in enumerate(zip(images, masks))]

    return made(untextured, "untextured"), made(translated, "translated")


# ---------------------------------------------------------------- the experiment


@dataclass
class Sim2RealResult:
    out: Path
    rows: list[dict[str, Any]]
    report: Path


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def run_sim2real_benchmark(real: Sequence[Sample], translator, out: str | Path, config: Sim2RealConfig,
                           data_description: str = "", progress: ProgressFn = no_progress,
                           should_stop: StopFn = never_stop) -> Sim2RealResult:
    """Train the U-Net on each training set with each seed, score it on the test regions, write the report
    (see the module docstring). ``real``: labelled grain micrographs at full resolution (their instance
    maps are the hand maps); ``translator``: a trained ``phasefield-cyclegan`` generator."""
    from .inference import predict_image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    real = list(real)
    if not real:
        raise ValueError("no labelled real micrographs given")
    if tuple(translator.schema.names) != tuple(real[0].schema.names):
        raise ValueError(f"the translator makes {', '.join(translator.schema.names)} masks; the data has "
                         f"{', '.join(real[0].schema.names)}")
    if config.real_images > len(real):
        raise ValueError(f"real_images {config.real_images} is more than the {len(real)} labelled micrographs")
    factor = translator.downscale
    parts = [halves(at_scale(s, factor), config.test_half) for s in real]
    train_real = [train for train, _ in parts[:config.real_images]]
    validation = [train for train, _ in parts[config.real_images:]]  # labelled, and no U-Net trains on them
    test = [t for _, t in parts]
    seg = config.segmentation
    per_run = seg.steps + len(test) + len(validation)
    total = config.pairs + len(SETS) * len(config.seeds) * per_run
    started = time.perf_counter()
    untextured, translated = synthetic_pool(
        translator, config.pairs, config.pool_seed, out / "pool.npz",
        lambda done, _, message: progress(done, total, message), should_stop)
    training = {"real": train_real, "untextured": untextured, "translated": translated}
    _, boundary = grain_boundary_ids(real[0].schema)
    # what a finished run depends on besides its set and seed (a rerun with other settings is refused)
    settings = {**{k: v for k, v in seg.to_dict().items() if k not in ("seed", "device")},
                "translator": translator.model_checksum, "pairs": config.pairs, "pool_seed": config.pool_seed,
                "real_images": config.real_images, "test_half": config.test_half,
                "min_grain_area": config.min_grain_area, "tolerance": config.tolerance,
                "marker_depths": list(config.marker_depths), "micrographs": [s.name for s in real]}
    rows = []
    for k, (name, seed) in enumerate((n, s) for n in SETS for s in config.seeds):
        base = config.pairs + k * per_run
        check_stop(should_stop)
        folder = out / "runs" / f"{name}-seed{seed}"
        scores_path = folder / "scores.json"
        if scores_path.is_file():
            earlier = json.loads(scores_path.read_text())
            changed = sorted(k for k in set(settings) | set(earlier.get("settings", {}))
                             if settings.get(k) != earlier.get("settings", {}).get(k))
            if changed:
                raise ValueError(f"{out} holds runs made with other settings ({', '.join(changed)}); use another "
                                 "output folder")
            rows.append(earlier)
            progress(base + per_run, total, f"{name}, seed {seed}: done earlier")
            continue
        run_started = time.perf_counter()
        label = f"{name}, seed {seed}"
        result = train_segmenter(training[name], replace(seg, seed=seed), folder,
                                 lambda done, _, message: progress(base + done, total, f"{label}: {message}"),
                                 should_stop)
        trained = time.perf_counter() - run_started
        per_image, per_validation = [], []
        for i, region in enumerate(test + validation):
            check_stop(should_stop)
            labels, probabilities = predict_image(result.model, region.image, should_stop=should_stop)
            if i < len(test):
                per_image.append({"name": region.name, **grain_scores(
                    region, labels, probabilities[boundary], config.min_grain_area, config.tolerance,
                    config.marker_depths)})
            else:
                per_validation.append(split_grain_dg(region, probabilities[boundary], config.marker_depths))
            if i == 0:
                np.save(folder / "example_prediction.npy", labels.astype(np.uint8))
            progress(base + seg.steps + i + 1, total, f"{label}: scored {region.name}")
        row = {"set": name, "seed": seed, **run_scores(per_image, boundary), "train_seconds": round(trained, 1),
               "training_samples": len(training[name]), "per_image": per_image,
               "validation_dg_split": per_validation, "settings": settings}
        scores_path.write_text(json.dumps(row, indent=1) + "\n")
        rows.append(row)
    if config.marker_depth is not None or not validation:
        depth, on_validation = (DEFAULT_MARKER_DEPTH if config.marker_depth is None else config.marker_depth), {}
    else:
        depth, on_validation = choose_marker_depth(rows, config.marker_depths)
    rows = [{**row, **split_scores(row["per_image"], depth)} for row in rows]
    report = _write_report(out, rows, config, translator, train_real, test, untextured, translated,
                           data_description, time.perf_counter() - started, validation, depth, on_validation)
    return Sim2RealResult(out, rows, report)


# ---------------------------------------------------------------- report


def _write_report(out: Path, rows, config: Sim2RealConfig, translator, train_real, test, untextured, translated,
                  data_description: str, seconds: float, validation: Sequence[Sample], depth: float,
                  on_validation: dict[str, float]) -> Path:
    flat = [{k: v for k, v in r.items() if k not in ("per_image", "validation_dg_split", "settings")} for r in rows]
    with (out / "runs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    summary = []
    for name in SETS:
        mine = [r for r in rows if r["set"] == name]
        entry: dict[str, Any] = {"set": name, "runs": len(mine)}
        for metric in (*METRICS, "e112_dg", "e112_dg_split"):
            entry[f"{metric}_mean"], entry[f"{metric}_sd"] = _mean_sd([r[metric] for r in mine])
        summary.append(entry)
    with (out / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    seg, t = config.segmentation, translator.training
    _, boundary = grain_boundary_ids(translator.schema)
    hand = sum(astm_e112(region.instances).equivalent_grains for region in test)
    seen = sorted(set(t.sample_names) & {s.name.rsplit(" ", 1)[0] for s in test})
    lines = [
        "# Paper 003's experiment: U-Net on synthetic grain images, tested on real grain boundaries", "",
        "| training set | " + " | ".join(METRIC_LABELS[m] for m in METRICS)
        + " | E112 ΔG, interiors (signed) | E112 ΔG, split grains (signed) |",
        "|---|" + "---|" * (len(METRICS) + 2),
    ]
    for entry in summary:
        cells = [f"{entry[f'{m}_mean']:.3f} ± {entry[f'{m}_sd']:.3f}" for m in (*METRICS, "e112_dg", "e112_dg_split")]
        lines.append(f"| {SET_LABELS[entry['set']]} | " + " | ".join(cells) + " |")
    lines += [
        "", f"Mean ± sd over {len(config.seeds)} seeds ({', '.join(map(str, config.seeds))}: U-Net initialisation and "
        "tile draws). Paper 003 reports IoU 0.88 and boundary F1 0.90 for its method at 512 px, 180 images, 200 "
        "epochs on a GPU.", "",
        "## Setting, in full", "",
        f"- data: {data_description or f'{len(test)} labelled grain micrographs'}; reduced {translator.downscale}x "
        f"(the translator's scale); {test[0].shape[1]}x{test[0].shape[0]} px regions",
        f"- test: the {config.test_half} half of every micrograph ({len(test)} regions, {int(hand)} hand grains by "
        f"E112's count), hand boundaries 2 px at this scale; boundary F1 tolerance {config.tolerance:g} px; "
        f"predicted grains: interiors of at least {config.min_grain_area} px, and split grains (watershed of the "
        f"distance to the predicted boundaries, marker depth {depth:g} px, "
        + (f"chosen on the validation regions: the train halves of {', '.join(s.name for s in validation)}, which "
           "no U-Net trains on; mean |ΔG| there over every run per depth: "
           + ", ".join(f"{d} px {v:.3f}" for d, v in on_validation.items()) + ")"
           if on_validation else ("given" if config.marker_depth is not None else "the default: no micrograph "
                                  "was left for validation") + ")"),
        f"- baseline 1: the other halves of the first {len(train_real)} micrographs "
        f"({', '.join(s.name for s in train_real)}), labelled",
        f"- baseline 2 and method: the same {len(translated)} structures (pool seed {config.pool_seed}), "
        f"{translator.resolution} px, parameters drawn uniformly inside the translator's ranges "
        + ", ".join(f"{p.name} {p.low:g}-{p.high:g}" for p in translator.condition_spec.properties),
        f"- translator: phasefield-cyclegan {translator.preset} (checksum {translator.model_checksum or 'unsaved'}), "
        f"{t.steps} CycleGAN steps on {len(t.sample_names)} real micrographs ({', '.join(t.sample_names)}; labels "
        "unused)" + (f"; it saw the test regions of {', '.join(seen)} unlabelled (the paper's transductive setting)"
                     if seen else ""),
        f"- U-Net: {seg.arch}, preset {seg.preset} (encoder from random weights), {seg.tile_size} px tiles, batch "
        f"{seg.batch_size}, {seg.steps} steps, AdamW lr {seg.lr:g} with cosine decay, Dice + cross-entropy, the same "
        f"for every set; augmentation: magnification {seg.scale_range[0]:g}-{seg.scale_range[1]:g}x, flips, "
        "90-degree turns, brightness / contrast / gamma",
        f"- wall time of this call: {seconds / 60:.1f} min (runs done in an earlier call not included); training "
        "seconds per run in runs.csv", "",
        "Files: runs.csv (one row per run), summary.csv, runs/<set>-seed<k>/scores.json (per region), examples.png.",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    _plot_examples(out / "examples.png", test[0], untextured[0], translated[0], config.seeds[0], boundary)
    return report


def _plot_examples(path: Path, region: Sample, untextured: Sample, translated: Sample, seed: int,
                   boundary: int) -> None:
    """One synthetic pair, and the first test region with the hand boundaries and each set's prediction."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    predictions = {}
    for name in SETS:
        file = path.parent / "runs" / f"{name}-seed{seed}" / "example_prediction.npy"
        if file.is_file():
            predictions[name] = np.load(file) == boundary
    panels = [("untextured simulation", untextured.image, "gray"), ("translated (CycleGAN)", translated.image, "gray"),
              ("its mask", translated.mask == boundary, "gray_r"), ("real test region", region.image, "gray"),
              ("hand boundaries", region.mask == boundary, "gray_r")]
    panels += [(f"U-Net: {name}", p, "gray_r") for name, p in predictions.items()]
    fig = Figure(figsize=(2.4 * len(panels), 2.8), dpi=110)
    FigureCanvasAgg(fig)
    for i, (title, data, cmap) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(data, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)


__all__ = ["SETS", "Sim2RealConfig", "Sim2RealResult", "at_scale", "choose_marker_depth", "grain_scores", "halves",
           "run_scores", "run_sim2real_benchmark", "split_grain_dg", "split_scores", "synthetic_pool",
           "write_region_folder"]
