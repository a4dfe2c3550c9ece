"""Evaluate a generator: fraction control, distribution quality against real tiles, and generation time.

What ``microsynth evaluate-generator`` runs (:func:`evaluate_generator`), in three parts:

1. Fraction control (paper 000, sec. 3.1, Fig. 4): generate one pair per target fraction vector and
   compare the fractions of the generated masks with the targets, per class: R^2 and MAE. Paper 000
   reports R^2 of 87-98 % and MAE of 0.1-1.7 percentage points for PF-DiffSeg on MetalDAM (matrix 98.0 % /
   1.16, austenite 87.1 % / 1.68, MA 97.1 % / 1.08, defect 94.1 % / 0.13). Targets come from the paper's
   boosted mixture of jittered real tile fractions (sec. 2.2.2, :class:`~napari_microsynth.core.conditions.
   BoostedFractionSampler`) or are given. Run at several classifier-free guidance scales (1 = the paper's
   plain conditional sampling) with the same seeds, so the rows compare like with like.
2. Distribution quality: Frechet distance (FID's formula), KID (Binkowski et al. 2018, unbiased MMD^2 with
   the cubic polynomial kernel) and k-NN precision/recall (Kynkaanniemi et al. 2019, k = 3) between
   real tiles and synthetic pairs, for images and for masks, in the feature space of a pluggable
   extractor (:mod:`~napari_microsynth.models.feature_encoder`); every score names the extractor and its
   checksum. Paper 000 (Table 2) uses FID, IS and precision/recall with Inception features.
3. Time per image + mask pair, at batch size 1 and batched, for this generator and any others passed
   for comparison (paper 000, Table 5: 2.01 s one-stage vs 2.41 s two-stage per pair on its GPU).

The metric functions take plain arrays and can be used on their own:

>>> a = np.random.default_rng(0).normal(size=(500, 8))
>>> round(frechet_distance(a, a), 6)
0.0
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from ..core.conditions import BoostedFractionSampler, default_shares
from ..core.fractions import mask_fractions
from ..core.metrics import fraction_mae, fraction_r2
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Sample
from ..core.schema import PhaseSchema
from ..core.tiles import tile_boxes
from ..generators.base import Generator
from ..models.diffusion_training import downscale_pair

R2_MIN_SPREAD = 0.01  # fraction-control R^2 only for classes whose targets vary by more than 1 point (std)


class FeatureExtractor(Protocol):
    """What the distribution metrics need from a feature extractor."""

    name: str
    checksum: str

    def image_features(self, images: np.ndarray) -> np.ndarray: ...

    def mask_features(self, masks: np.ndarray, schema: PhaseSchema) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------- distribution metrics


def _features(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be an (N, D) feature array with N >= 2, got shape {x.shape}")
    return x


def frechet_distance(real, synthetic) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``(N, D)``, ``(M, D)`` (the FID formula):
    ``|mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))``."""
    a, b = _features("real", real), _features("synthetic", synthetic)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    mu = a.mean(axis=0) - b.mean(axis=0)
    s_a, s_b = np.cov(a, rowvar=False).reshape(a.shape[1], -1), np.cov(b, rowvar=False).reshape(b.shape[1], -1)
    # Tr((S_a S_b)^(1/2)) = sum of sqrt of the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric, PSD)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(max(mu @ mu + np.trace(s_a) + np.trace(s_b) - 2.0 * cross, 0.0))


def kernel_distance(real, synthetic, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the kernel ``(x.y / D + 1)^3``, mean and std over random subsets.

    Unbiased, so it is near 0 (and may be slightly negative) for two samples of one distribution.
    """
    a, b = _features("real", real), _features("synthetic", synthetic)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    m = min(subset_size, a.shape[0], b.shape[0])
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        k_xx = (x @ x.T / d + 1) ** 3
        k_yy = (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values.append(within - 2.0 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def _pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(axis=1)[:, None] + (y * y).sum(axis=1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.clip(sq, 0, None))


def _inside_manifold(reference: np.ndarray, query: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Whether each query point lies within the k-NN radius of some reference point (rows in chunks, so
    memory stays ``chunk x N``)."""
    radii = np.concatenate([
        np.partition(_pairwise_distances(reference[i : i + chunk], reference), k, axis=1)[:, k]  # [:, 0] is itself
        for i in range(0, len(reference), chunk)
    ])
    inside = [
        (_pairwise_distances(query[i : i + chunk], reference) <= radii[None, :] * (1 + 1e-9) + 1e-12).any(axis=1)
        for i in range(0, len(query), chunk)
    ]
    return np.concatenate(inside)


def manifold_precision_recall(real, synthetic, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision = share of synthetic points inside the
    real manifold (union of balls reaching each real point's k-th nearest real neighbour), recall = share
    of real points inside the synthetic manifold."""
    a, b = _features("real", real), _features("synthetic", synthetic)
    if min(a.shape[0], b.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points in each set")
    return float(_inside_manifold(a, b, k).mean()), float(_inside_manifold(b, a, k).mean())


@dataclass
class DistributionScores:
    """Scores of one modality (images or masks); lower FD/KID and higher precision/recall are better."""

    fd: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    n_real: int
    n_synthetic: int


def distribution_scores(real_features, synthetic_features, k: int = 3, kid_subsets: int = 100, seed: int = 0) -> DistributionScores:
    """All distribution scores for two feature sets."""
    kid, kid_std = kernel_distance(real_features, synthetic_features, n_subsets=kid_subsets, seed=seed)
    precision, recall = manifold_precision_recall(real_features, synthetic_features, k)
    return DistributionScores(
        fd=frechet_distance(real_features, synthetic_features), kid=kid, kid_std=kid_std, precision=precision,
        recall=recall, n_real=len(real_features), n_synthetic=len(synthetic_features),
    )


@dataclass
class DistributionQuality:
    """Image (and mask) scores, and the extractor that produced them (name, checksum, ...)."""

    extractor: dict[str, Any]
    image: DistributionScores
    mask: DistributionScores | None = None

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for modality, scores in (("image", self.image), ("mask", self.mask)):
            if scores is not None:
                out.append({
                    "modality": modality, **vars(scores),
                    "extractor": self.extractor.get("name"), "extractor_checksum": self.extractor.get("checksum"),
                })
        return out


# ---------------------------------------------------------------- progress over several parts


class _Parts:
    """One progress bar over consecutive parts of known sizes: ``part(i)`` is the ProgressFn of part ``i``."""

    def __init__(self, progress: ProgressFn, sizes: Sequence[int]):
        self.progress = progress
        self.sizes = [max(int(s), 0) for s in sizes]
        self.total = max(sum(self.sizes), 1)

    def part(self, i: int) -> ProgressFn:
        offset, size = sum(self.sizes[:i]), self.sizes[i]

        def report(done: int, total: int, message: str) -> None:
            self.progress(offset + round(size * done / max(total, 1)), self.total, message)

        return report


def _features_in_chunks(fn, arrays: np.ndarray, report, should_stop: StopFn, chunk: int = 64) -> np.ndarray:
    out = []
    for start in range(0, len(arrays), chunk):
        check_stop(should_stop)
        part = arrays[start : start + chunk]
        out.append(fn(part))
        report(len(part))
    return np.concatenate(out)


def evaluate_distribution(
    real: Sequence[Sample],
    synthetic: Sequence[Sample],
    extractor: FeatureExtractor,
    k: int = 3,
    kid_subsets: int = 100,
    seed: int = 0,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> DistributionQuality:
    """FD, KID and precision/recall of synthetic vs real images (and masks, when every sample has one).

    Both sets must hold tiles of one size at the same pixel scale (see :func:`real_tiles`).
    """
    if len(real) <= k or len(synthetic) <= k:
        raise ValueError(f"need more than k={k} real and synthetic samples, got {len(real)} and {len(synthetic)}")
    shapes = {s.shape for s in [*real, *synthetic]}
    if len(shapes) != 1:
        raise ValueError(
            f"real and synthetic tiles must all have one size, got {sorted(shapes)}; cut the real micrographs "
            "with real_tiles(samples, size, downscale) at the generator's size and scale"
        )
    with_masks = all(s.mask is not None for s in [*real, *synthetic])
    total = (len(real) + len(synthetic)) * (2 if with_masks else 1)
    done = 0
    schema = real[0].schema

    def feats(samples: Sequence[Sample], masks: bool, label: str) -> np.ndarray:
        def report(count: int) -> None:
            nonlocal done
            done += count
            progress(done, total, f"features of {label}")

        if masks:
            arrays = np.stack([s.mask for s in samples])
            return _features_in_chunks(lambda m: extractor.mask_features(m, schema), arrays, report, should_stop)
        return _features_in_chunks(extractor.image_features, np.stack([s.image for s in samples]), report,
                                   should_stop)

    image = distribution_scores(feats(real, False, "real images"), feats(synthetic, False, "synthetic images"),
                                k, kid_subsets, seed)
    mask = None
    if with_masks:
        mask = distribution_scores(feats(real, True, "real masks"), feats(synthetic, True, "synthetic masks"),
                                   k, kid_subsets, seed)
    return DistributionQuality(extractor=dict(extractor.describe()), image=image, mask=mask)


def real_tiles(samples: Iterable[Sample], size: int, downscale: int = 1) -> list[Sample]:
    """Non-overlapping ``size * downscale`` px tiles of micrographs reduced to ``size`` px, the way the
    generators' training tiles are made (image block mean, mask majority class); tiles without labelled
    pixels are dropped."""
    out = []
    for sample in samples:
        for box in tile_boxes(sample.shape, size * downscale):
            tile = sample.crop(box)
            image, mask = tile.image.reshape(size, downscale, size, downscale).mean(axis=(1, 3)), None
            if tile.mask is not None:
                image, mask = downscale_pair(tile.image, tile.mask, downscale, tile.schema)
                if tile.schema.ignore_id is not None and np.all(mask == tile.schema.ignore_id):
                    continue
            pixel = None if tile.pixel_size_um is None else tile.pixel_size_um * downscale
            out.append(replace(tile, image=image, mask=mask, instances=None, pixel_size_um=pixel))
    return out


# ---------------------------------------------------------------- fraction control


def fraction_targets(
    samples: Sequence[Sample],
    n: int,
    seed: int = 0,
    tile: int = 256,
    shares: Mapping[str, float] | None = None,
) -> np.ndarray:
    """``n`` target vectors from paper 000's mixture (sec. 2.2.2): jittered phase fractions of the real
    ``tile`` px tiles, with the schema's rare phases oversampled (``shares`` default:
    :func:`~napari_microsynth.core.conditions.default_shares`)."""
    labelled = [s for s in samples if s.mask is not None]
    if not labelled:
        raise ValueError("fraction targets need annotated samples")
    schema = labelled[0].schema
    real = []
    for s in labelled:
        for y0, x0, y1, x1 in tile_boxes(s.shape, tile):
            mask = s.mask[y0:y1, x0:x1]
            if schema.ignore_id is None or np.any(mask != schema.ignore_id):
                real.append(mask_fractions(mask, schema))
    if not real:
        raise ValueError(f"no labelled {tile} px tile in the given samples")
    real = np.stack(real)
    mix = dict(shares) if shares is not None else default_shares(schema, real)
    sampler = BoostedFractionSampler.from_shares(real, mix, schema)
    return sampler.sample(int(n), np.random.default_rng(seed))


@dataclass
class FractionControl:
    """Targets and achieved (generated mask) fractions at one guidance scale (None = generator default)."""

    guidance_scale: float | None
    class_names: tuple[str, ...]
    targets: np.ndarray
    achieved: np.ndarray
    pairs: list[Sample] = field(default_factory=list, repr=False)

    @property
    def r2(self) -> np.ndarray:
        """Per class; nan where the targets spread by 1 percentage point or less (std)."""
        return fraction_r2(self.targets, self.achieved, min_spread=R2_MIN_SPREAD)

    @property
    def mae(self) -> np.ndarray:
        return fraction_mae(self.targets, self.achieved)

    def rows(self) -> list[dict[str, Any]]:
        """One row per class plus a "mean" row: R^2 and MAE (fractions, not percent)."""
        r2, mae = self.r2, self.mae
        rows = [
            {"guidance_scale": self.guidance_scale, "class": name, "r2": float(r2[c]), "mae": float(mae[c]),
             "n": len(self.targets)}
            for c, name in enumerate(self.class_names)
        ]
        mean_r2 = float(np.nanmean(r2)) if np.isfinite(r2).any() else float("nan")
        rows.append({"guidance_scale": self.guidance_scale, "class": "mean", "r2": mean_r2,
                     "mae": float(np.mean(mae)), "n": len(self.targets)})
        return rows


def evaluate_fraction_control(
    generator: Generator,
    targets,
    guidance_scales: Sequence[float] | None = (1.0, 3.0),
    seed: int = 0,
    keep_pairs: bool = True,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    **sampling: Any,
) -> list[FractionControl]:
    """Generate one pair per target vector at each guidance scale (same seeds) and measure the fractions of
    the generated masks. ``guidance_scales`` None = once with the generator's own setting."""
    if generator.condition_spec.kind != "fractions":
        raise ValueError(f"generator {generator.name!r} is not conditioned on phase fractions")
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or len(targets) < 2:
        raise ValueError(f"targets must be an (N, n_classes) array with N >= 2, got shape {targets.shape}")
    scales: list[float | None] = [None] if guidance_scales is None else [float(g) for g in guidance_scales]
    if scales != [None] and "guidance_scale" not in generator.sampling_defaults:
        raise ValueError(f"generator {generator.name!r} has no guidance_scale option; pass guidance_scales=None")
    results = []
    for k, scale in enumerate(scales):
        options = dict(sampling) if scale is None else {**sampling, "guidance_scale": scale}
        pairs, achieved, wanted = [], [], []
        for pair in generator.sample(targets, seed=seed, should_stop=should_stop, **options):
            achieved.append(pair.fractions)
            wanted.append(pair.provenance.condition["fractions"])
            if keep_pairs:
                pairs.append(pair)
            progress(k * len(targets) + len(achieved), len(scales) * len(targets),
                     f"fraction control (guidance {scale if scale is not None else 'default'}): "
                     f"{len(achieved)}/{len(targets)} pairs")
        results.append(FractionControl(scale, tuple(generator.schema.names), np.array(wanted), np.array(achieved),
                                       pairs))
    return results


def plot_fraction_control(results: Sequence[FractionControl], path: str | Path) -> Path:
    """Target vs achieved fraction, one panel per class, one colour per guidance scale (like paper 000,
    Fig. 4); R^2 and MAE in each legend entry. Written as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = results[0].class_names
    fig = Figure(figsize=(3.2 * len(names), 3.4), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for c, (ax, name) in enumerate(zip(axes, names)):
        top = max(max(float(r.targets[:, c].max()), float(r.achieved[:, c].max())) for r in results)
        top = min(1.0, top * 1.05 + 0.01)
        ax.plot([0, top], [0, top], color="0.6", lw=1, ls="--")
        for r in results:
            scale = "default" if r.guidance_scale is None else f"{r.guidance_scale:g}"
            r2 = "n/a" if np.isnan(r.r2[c]) else f"{100 * r.r2[c]:.1f}%"
            ax.scatter(100 * r.targets[:, c], 100 * r.achieved[:, c], s=10, alpha=0.7,
                       label=f"g={scale}: R²={r2}, MAE={100 * r.mae[c]:.2f}")
        ax.set_xlim(0, 100 * top)
        ax.set_ylim(0, 100 * top)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("target fraction (%)")
        if c == 0:
            ax.set_ylabel("achieved fraction (%)")
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------- timing


@dataclass
class GenerationTime:
    """Seconds per image + mask pair of one generator at one batch size."""

    generator: str
    batch_size: int
    n: int
    seconds_per_pair: float
    device: str
    sampling: dict[str, Any]


def default_condition(generator: Generator):
    """A condition any generator of its kind accepts: equal fractions, mid-range properties, or None."""
    spec = generator.condition_spec
    if spec.kind == "fractions":
        return np.full(len(spec.class_names), 1.0 / len(spec.class_names))
    if spec.kind == "properties":
        return {p.name: (p.low + p.high) / 2 for p in spec.properties}
    return None


def time_generation(
    generators: Mapping[str, Generator],
    condition: Any = None,
    n: int = 4,
    batch_sizes: Sequence[int] = (1, 4),
    seed: int = 0,
    warmup: bool = True,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    **sampling: Any,
) -> list[GenerationTime]:
    """Wall-clock seconds per pair for each generator and batch size (``n`` pairs each, after one warm-up
    pair). ``sampling`` options are passed to the generators that have them (e.g. ``steps``); a generator
    without a ``batch_size`` option is timed once."""
    import torch

    sizes = {label: list(batch_sizes) if "batch_size" in gen.sampling_defaults else [None]
             for label, gen in generators.items()}
    total = sum(len(s) for s in sizes.values()) * (n + int(warmup))
    done = 0
    rows = []
    for label, gen in generators.items():
        options = {k: v for k, v in sampling.items() if k in gen.sampling_defaults and k != "batch_size"}
        cond = default_condition(gen) if condition is None else condition
        for size in sizes[label]:
            opts = options if size is None else {**options, "batch_size": int(size)}
            if warmup:
                for _ in gen.sample(cond, n=1, seed=seed, should_stop=should_stop, **opts):
                    pass
                done += 1
                progress(done, total, f"{label}: warm-up")
            device = str(getattr(gen, "device", "cpu"))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for i, _ in enumerate(gen.sample(cond, n=n, seed=seed, should_stop=should_stop, **opts)):
                done += 1
                progress(done, total, f"{label}, batch {size or 1}: {i + 1}/{n} pairs")
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            settings = gen.check_sampling_options({**gen.sampling_defaults, **opts})
            rows.append(GenerationTime(label, int(size or 1), n, elapsed / n, device, settings))
    return rows


# ---------------------------------------------------------------- everything together


@dataclass
class GeneratorEvaluation:
    """The results of :func:`evaluate_generator`; :meth:`write` saves them as a report folder."""

    generator: dict[str, Any]
    fraction_control: list[FractionControl]
    distribution: DistributionQuality | None
    timing: list[GenerationTime]

    def fraction_rows(self) -> list[dict[str, Any]]:
        return [row for result in self.fraction_control for row in result.rows()]

    def to_markdown(self) -> str:
        g = self.generator
        lines = [f"# Evaluation of generator {g.get('name')} (checksum {g.get('checksum') or 'unsaved'})", ""]
        if self.fraction_control:
            n = len(self.fraction_control[0].targets)
            lines += [
                f"## Fraction control ({n} target vectors)",
                "",
                "Achieved = phase fractions of the generated masks. Paper 000 reports R² 87-98 % and MAE",
                "0.1-1.7 percentage points per class for PF-DiffSeg on MetalDAM (Fig. 4). R² is n/a for a class",
                "whose targets vary by 1 point (std) or less.",
                "",
                "| guidance | class | R² (%) | MAE (pp) |",
                "|---|---|---|---|",
            ]
            for row in self.fraction_rows():
                scale = "default" if row["guidance_scale"] is None else f"{row['guidance_scale']:g}"
                r2 = "n/a" if np.isnan(row["r2"]) else f"{100 * row['r2']:.1f}"
                lines.append(f"| {scale} | {row['class']} | {r2} | {100 * row['mae']:.2f} |")
            lines.append("")
        if self.distribution is not None:
            e = self.distribution.extractor
            lines += [
                f"## Distribution quality (features: {e.get('name')}, checksum {e.get('checksum')})",
                "",
                "| modality | FD | KID (x1000) | precision | recall | real | synthetic |",
                "|---|---|---|---|---|---|---|",
            ]
            for row in self.distribution.rows():
                lines.append(
                    f"| {row['modality']} | {row['fd']:.3f} | {1000 * row['kid']:.2f} ± {1000 * row['kid_std']:.2f} "
                    f"| {row['precision']:.3f} | {row['recall']:.3f} | {row['n_real']} | {row['n_synthetic']} |"
                )
            lines.append("")
        if self.timing:
            lines += ["## Generation time per image + mask pair", "",
                      "| generator | batch | seconds / pair | device | steps |", "|---|---|---|---|---|"]
            for t in self.timing:
                lines.append(f"| {t.generator} | {t.batch_size} | {t.seconds_per_pair:.3f} | {t.device} "
                             f"| {t.sampling.get('steps', '')} |")
            lines.append("")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "fraction_control": self.fraction_rows(),
            "distribution": None if self.distribution is None else {
                "extractor": self.distribution.extractor, "scores": self.distribution.rows()},
            "timing": [vars(t) for t in self.timing],
        }

    def write(self, folder: str | Path) -> Path:
        """``report.md``, ``evaluation.json``, ``fraction_control.csv`` + ``.png``, ``distribution.csv``,
        ``timing.csv`` (the parts that were run)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.to_markdown())
        (folder / "evaluation.json").write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")
        if self.fraction_control:
            _write_csv(folder / "fraction_control.csv", self.fraction_rows())
            plot_fraction_control(self.fraction_control, folder / "fraction_control.png")
        if self.distribution is not None:
            _write_csv(folder / "distribution.csv", self.distribution.rows())
        if self.timing:
            _write_csv(folder / "timing.csv", [
                {k: v for k, v in vars(t).items() if k != "sampling"} | {"steps": t.sampling.get("steps")}
                for t in self.timing
            ])
        return folder


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def evaluate_generator(
    generator: Generator,
    real_samples: Sequence[Sample],
    extractor: FeatureExtractor | None = None,
    n: int = 64,
    targets=None,
    guidance_scales: Sequence[float] | None = (1.0, 3.0),
    downscale: int | None = None,
    compare: Mapping[str, Generator] | None = None,
    timing_n: int = 4,
    timing_batch_sizes: Sequence[int] = (1, 4),
    seed: int = 0,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    **sampling: Any,
) -> GeneratorEvaluation:
    """Fraction control, distribution quality and timing of a fraction-conditioned generator.

    ``targets``: ``(N, n_classes)`` vectors, or None for ``n`` vectors of paper 000's boosted mixture over
    the real tiles. The pairs of the first guidance scale are compared with real tiles of the same size
    (``downscale``: how much the generator's tiles were reduced; None = the generator's training setting
    when it records one, else 1). ``extractor`` None trains the domain feature encoders on
    ``real_samples`` first (default settings: a few minutes on a CPU). ``compare``: more generators to time alongside
    (e.g. ``{"two-stage": ...}``); ``timing_n`` 0 skips timing. ``sampling`` options go to every
    generator that has them (e.g. ``steps``).
    """
    from ..models.feature_encoder import FeatureTrainConfig, train_domain_extractor

    labelled = [s for s in real_samples if s.mask is not None]
    if not labelled:
        raise ValueError("evaluating a generator needs annotated real micrographs")
    if downscale is None:
        downscale = getattr(generator, "downscale", 1)
    size = getattr(generator, "resolution", None)  # known up front for the diffusion generators
    if targets is None:
        # the generator's training crop; paper 000's 256 px tiles when the generator does not say
        targets = fraction_targets(labelled, n, seed=seed, tile=size * downscale if size else 256)
    targets = np.asarray(targets, dtype=np.float64)
    timed = {generator.name: generator, **(compare or {})} if timing_n > 0 else {}
    n_real = sum(len(tile_boxes(s.shape, size * downscale)) for s in labelled) if size else len(targets)
    parts = _Parts(progress, [
        (1 if guidance_scales is None else len(guidance_scales)) * len(targets),
        FeatureTrainConfig().steps if extractor is None else 0,
        2 * (n_real + len(targets)),
        len(timed) * len(timing_batch_sizes) * (timing_n + 1),
    ])

    control = evaluate_fraction_control(generator, targets, guidance_scales, seed=seed, progress=parts.part(0),
                                        should_stop=should_stop, **sampling)
    pairs = control[0].pairs
    size = pairs[0].shape[0]
    if extractor is None:
        extractor = train_domain_extractor(
            labelled, FeatureTrainConfig(tile=size, downscale=downscale, seed=seed),
            device=str(getattr(generator, "device", "auto")), progress=parts.part(1), should_stop=should_stop,
        )
    distribution = evaluate_distribution(real_tiles(labelled, size, downscale), pairs, extractor, seed=seed,
                                         progress=parts.part(2), should_stop=should_stop)
    timing = []
    if timed:
        timing = time_generation(timed, n=timing_n, batch_sizes=timing_batch_sizes, seed=seed,
                                 progress=parts.part(3), should_stop=should_stop, **sampling)
    own = {k: v for k, v in sampling.items() if k in generator.sampling_defaults}
    info = {
        "name": generator.name,
        "version": generator.version,
        "checksum": generator.model_checksum,
        "preset": getattr(generator, "preset", None),
        "sampling": generator.check_sampling_options({**generator.sampling_defaults, **own}),
    }
    return GeneratorEvaluation(info, control, distribution, timing)
