"""Evaluate a generator: fraction control, mask-image agreement, distribution quality and generation time.

What ``microsynth evaluate-generator`` runs (:func:`evaluate_generator`), for a list of named sampling
settings (:class:`SamplingSetting`, e.g. guidance scale 1 or 3, fraction control off or on) with the same
targets and seeds in every row:

1. Fraction control (paper 000, sec. 3.1, Fig. 4): one pair per target fraction vector; the fractions of
   the generated masks against the targets, per class: R^2 around the line achieved = target, the
   regression slope and the squared Pearson correlation (what paper 000's scatter plots show), and MAE.
   Paper 000 reports R^2 of 87-98 % and MAE of 0.1-1.7 percentage points for PF-DiffSeg on MetalDAM
   (matrix 98.0 % / 1.16, austenite 87.1 % / 1.68, MA 97.1 % / 1.08, defect 94.1 % / 0.13). Targets come
   from the paper's boosted mixture of jittered real tile fractions (sec. 2.2.2,
   :class:`~napari_microsynth.core.conditions.BoostedFractionSampler`), measured at the generator's scale.
2. Mask-image agreement: mIoU between each generated mask and the phase map that a segmenter trained on
   real data only gives for the generated image, next to the same segmenter's mIoU on real held-out
   tiles taken through the same steps (its ceiling).
3. Distribution quality: Frechet distance (FID's formula), KID (Binkowski et al. 2018, unbiased MMD^2 with
   the cubic polynomial kernel) and k-NN precision/recall (Kynkaanniemi et al. 2019, k = 3) of images and
   masks in the feature space of a pluggable extractor
   (:mod:`~napari_microsynth.models.feature_training`), against one half of the real micrographs and next
   to the same scores of the other half (the real-vs-real baseline). The scores are unnormalised; the
   baseline says what "as good as real" looks like. Every score names the extractor and its checksum.
4. Time per image + mask pair, at batch size 1 and batched, for this generator and any others passed
   for comparison (paper 000, Table 5: 2.01 s one-stage vs 2.41 s two-stage per pair on its GPU).

The metric functions take plain arrays and can be used on their own:

>>> a = np.random.default_rng(0).normal(size=(500, 8))
>>> round(frechet_distance(a, a), 6)
0.0
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import numpy as np

from ..core.conditions import fraction_targets
from ..core.folder_export import write_csv
from ..core.metrics import confusion_matrix, fraction_mae, fraction_pearson_r2, fraction_r2, fraction_slope, mean_iou
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Sample
from ..core.schema import PhaseSchema
from ..core.tiles import reduced_tiles, tile_boxes
from ..generators.base import Generator

if TYPE_CHECKING:
    from ..models.segmenter import Segmenter

R2_MIN_SPREAD = 0.01  # R^2, slope and r^2 only for classes whose targets vary by more than 1 point (std)
REAL_BASELINE = "real (other half)"  # the real-vs-real row of the distribution scores


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
    """Image (and mask) scores of one set against the reference tiles, and the extractor that produced
    them (name, checksum, ...). ``compared``: what was scored (a sampling setting, or :data:`REAL_BASELINE`)."""

    extractor: dict[str, Any]
    image: DistributionScores
    mask: DistributionScores | None = None
    compared: str = "synthetic"

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for modality, scores in (("image", self.image), ("mask", self.mask)):
            if scores is not None:
                out.append({
                    "compared": self.compared, "modality": modality, **vars(scores),
                    "extractor": self.extractor.get("name"), "extractor_checksum": self.extractor.get("checksum"),
                })
        return out


# ---------------------------------------------------------------- progress over several parts


class _Parts:
    """One progress bar over consecutive named parts of known sizes: ``part(name)`` is that part's ProgressFn."""

    def __init__(self, progress: ProgressFn, sizes: Mapping[str, int]):
        self.progress = progress
        self.offsets: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, size in sizes.items():
            self.offsets[name] = (offset, max(int(size), 0))
            offset += max(int(size), 0)
        self.total = max(offset, 1)

    def part(self, name: str) -> ProgressFn:
        offset, size = self.offsets[name]

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
    compared: str = "synthetic",
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
            "with reduced_tiles(samples, size, downscale) at the generator's size and scale"
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

    image = distribution_scores(feats(real, False, "real images"), feats(synthetic, False, f"{compared} images"),
                                k, kid_subsets, seed)
    mask = None
    if with_masks:
        mask = distribution_scores(feats(real, True, "real masks"), feats(synthetic, True, f"{compared} masks"),
                                   k, kid_subsets, seed)
    return DistributionQuality(extractor=dict(extractor.describe()), image=image, mask=mask, compared=compared)


def split_by_micrograph(samples: Sequence[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Two halves of the micrographs with about equal area (largest first, each to the smaller half), so
    the tiles of one micrograph, often near-duplicates of each other, all land in one half."""
    if len(samples) < 2:
        raise ValueError(f"a real-vs-real baseline needs at least 2 micrographs, got {len(samples)}")
    halves: tuple[list[Sample], list[Sample]] = ([], [])
    for sample in sorted(samples, key=lambda s: -s.image.size):
        min(halves, key=lambda half: sum(s.image.size for s in half)).append(sample)
    return halves


def _subset(items: Sequence[Sample], m: int, seed: int) -> list[Sample]:
    """``m`` of ``items`` (all when there are no more), drawn without replacement, in their order."""
    if len(items) <= m:
        return list(items)
    return [items[i] for i in sorted(np.random.default_rng(seed).choice(len(items), m, replace=False))]


# ---------------------------------------------------------------- sampling settings and fraction control


@dataclass(frozen=True)
class SamplingSetting:
    """One evaluation row: a name and the sampling options it sets over the generator's defaults."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _guidance_rows(generator: Generator, scales: Sequence[float], label: str = "", **options: Any) -> list[SamplingSetting]:
    if "guidance_scale" not in {o.name for o in generator.sampling_options()} or not scales:
        return [SamplingSetting(label or "defaults", options)]
    suffix = f", {label}" if label else ""
    return [SamplingSetting(f"guidance {g:g}{suffix}", {"guidance_scale": float(g), **options}) for g in scales]


def sampling_settings(
    generator: Generator, guidance_scales: Sequence[float] = (1.0, 3.0), fraction_controls: Sequence[float] = (0.0, 1.0)
) -> list[SamplingSetting]:
    """The evaluation rows for a generator.

    Without a ``fraction_control`` option: one row per guidance scale (one with the defaults when it has no
    ``guidance_scale`` either). With it: for strength 0, paper 000's plain sampling at each guidance scale;
    for the default strength, the generator's defaults ("control on (defaults)"); other strengths, one row each.

    >>> [s.name for s in sampling_settings(get_generator("pf-diffseg")(schema, "tiny"))]   # doctest: +SKIP
    ['guidance 1, control off', 'guidance 3, control off', 'control on (defaults)']
    """
    default = {o.name: o.default for o in generator.sampling_options()}.get("fraction_control")
    if default is None:
        return _guidance_rows(generator, guidance_scales)
    rows = []
    for strength in fraction_controls:
        if strength == 0:
            rows += _guidance_rows(generator, guidance_scales, "control off", fraction_control=0.0)
        elif strength == default:
            rows.append(SamplingSetting("control on (defaults)"))
        else:
            rows.append(SamplingSetting(f"control {strength:g}", {"fraction_control": float(strength)}))
    return rows


@dataclass
class FractionControl:
    """Targets, achieved fractions (of the generated masks) and pairs of one sampling setting; ``options``
    are the ones applied over the generator's defaults, ``agreement`` the mask-image mIoU of each pair."""

    setting: str
    options: dict[str, Any]
    class_names: tuple[str, ...]
    targets: np.ndarray
    achieved: np.ndarray
    pairs: list[Sample] = field(default_factory=list, repr=False)
    agreement: np.ndarray | None = None

    @property
    def r2(self) -> np.ndarray:
        """Per class, around achieved = target; nan where the targets spread by 1 percentage point or less (std)."""
        return fraction_r2(self.targets, self.achieved, min_spread=R2_MIN_SPREAD)

    @property
    def slope(self) -> np.ndarray:
        """Per class, achieved on target (1 = follows the targets one to one); nan as :attr:`r2`."""
        return fraction_slope(self.targets, self.achieved, min_spread=R2_MIN_SPREAD)

    @property
    def pearson_r2(self) -> np.ndarray:
        """Per class, squared Pearson correlation; nan as :attr:`r2`."""
        return fraction_pearson_r2(self.targets, self.achieved, min_spread=R2_MIN_SPREAD)

    @property
    def mae(self) -> np.ndarray:
        return fraction_mae(self.targets, self.achieved)

    @property
    def agreement_miou(self) -> float:
        """Mean mask-image agreement mIoU over the pairs (nan when not measured)."""
        return _nanmean(self.agreement) if self.agreement is not None else float("nan")

    def rows(self) -> list[dict[str, Any]]:
        """One row per class plus a "mean" row: R^2, slope, r^2 and MAE (fractions, not percent)."""
        scores = {"r2": self.r2, "slope": self.slope, "pearson_r2": self.pearson_r2, "mae": self.mae}
        rows = [{"setting": self.setting, "class": name, **{k: float(v[c]) for k, v in scores.items()},
                 "n": len(self.targets)} for c, name in enumerate(self.class_names)]
        rows.append({"setting": self.setting, "class": "mean", **{k: _nanmean(v) for k, v in scores.items()},
                     "n": len(self.targets)})
        return rows

    def summary(self) -> dict[str, Any]:
        """One row: the setting, its options, mean MAE and R^2, and the mean agreement mIoU."""
        return {"setting": self.setting, "options": json.dumps(self.options, default=_json_default),
                "n": len(self.targets), "mean_mae": float(np.mean(self.mae)), "mean_r2": _nanmean(self.r2),
                "agreement_miou": self.agreement_miou}


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def evaluate_fraction_control(
    generator: Generator,
    targets,
    settings: Sequence[SamplingSetting] | None = None,
    seed: int = 0,
    keep_pairs: bool = True,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    **sampling: Any,
) -> list[FractionControl]:
    """Generate one pair per target vector for each sampling setting (same targets and seeds) and measure
    the fractions of the generated masks. ``settings`` None: one row with the generator's defaults.
    ``sampling``: options for every row (a row's own options win); options the generator does not
    declare are left out."""
    if generator.condition_spec.kind != "fractions":
        raise ValueError(f"generator {generator.name!r} is not conditioned on phase fractions")
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or len(targets) < 2:
        raise ValueError(f"targets must be an (N, n_classes) array with N >= 2, got shape {targets.shape}")
    settings = [SamplingSetting("defaults")] if settings is None else list(settings)
    if len({s.name for s in settings}) < len(settings):
        raise ValueError(f"sampling settings need distinct names, got {[s.name for s in settings]}")
    results = []
    for k, setting in enumerate(settings):
        options = generator.declared_sampling({**sampling, **setting.options})
        pairs, achieved, wanted = [], [], []
        for pair in generator.sample(targets, seed=seed, should_stop=should_stop, **options):
            achieved.append(pair.fractions)
            wanted.append(pair.provenance.condition["fractions"])
            if keep_pairs:
                pairs.append(pair)
            progress(k * len(targets) + len(achieved), len(settings) * len(targets),
                     f"fraction control ({setting.name}): {len(achieved)}/{len(targets)} pairs")
        results.append(FractionControl(setting.name, generator.declared_sampling(setting.options),
                                       tuple(generator.schema.names), np.array(wanted), np.array(achieved), pairs))
    return results


def plot_fraction_control(results: Sequence[FractionControl], path: str | Path) -> Path:
    """Target vs achieved fraction, one panel per class, one colour per sampling setting (like paper 000,
    Fig. 4); R^2, slope and MAE in each legend entry. Written as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = results[0].class_names
    fig = Figure(figsize=(3.2 * len(names), 3.6), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for c, (ax, name) in enumerate(zip(axes, names)):
        top = max(max(float(r.targets[:, c].max()), float(r.achieved[:, c].max())) for r in results)
        top = min(1.0, top * 1.05 + 0.01)
        ax.plot([0, top * 100], [0, top * 100], color="0.6", lw=1, ls="--")
        for r in results:
            r2 = "n/a" if np.isnan(r.r2[c]) else f"{100 * r.r2[c]:.1f}%"
            ax.scatter(100 * r.targets[:, c], 100 * r.achieved[:, c], s=10, alpha=0.7,
                       label=f"{r.setting}: R²={r2}, slope={r.slope[c]:.2f}, MAE={100 * r.mae[c]:.2f}")
        ax.set_xlim(0, 100 * top)
        ax.set_ylim(0, 100 * top)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("target fraction (%)")
        if c == 0:
            ax.set_ylabel("achieved fraction (%)")
        ax.legend(fontsize=5, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------- mask-image agreement


@dataclass
class AgreementSegmenter:
    """A segmenter trained on real data only, and what the report says about it."""

    model: "Segmenter"
    name: str
    checksum: str = ""
    trained_on: str = ""

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu") -> "AgreementSegmenter":
        from ..models.segmenter import Segmenter

        model = Segmenter.load(folder, device=device)
        return cls(model, Path(folder).name, model.model_checksum, str(model.training_record.get("data", "")))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "trained_on": self.trained_on,
                "input_scale": self.model.input_scale, "phase_ratio": "none"}


@dataclass
class Agreement:
    """The segmenter used for mask-image agreement and its mIoU on real held-out tiles (the ceiling)."""

    segmenter: dict[str, Any]
    ceiling: float
    n_real: int


def segmenter_labels(segmenter: "Segmenter", image: np.ndarray, downscale: int) -> np.ndarray:
    """The segmenter's phase map of a tile reduced by ``downscale``, at the tile's size: the tile is enlarged
    back to the micrographs' pixel size (each pixel repeated), segmented without a phase ratio, and the
    class probabilities are averaged over each ``downscale`` block."""
    from .inference import predict_image

    h, w = image.shape
    enlarged = np.repeat(np.repeat(np.asarray(image, np.float32), downscale, axis=0), downscale, axis=1)
    _, probs = predict_image(segmenter, enlarged)
    return probs.reshape(-1, h, downscale, w, downscale).mean(axis=(2, 4)).argmax(axis=0)


def agreement_confusions(
    segmenter: "Segmenter",
    pairs: Sequence[Sample],
    downscale: int,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> np.ndarray:
    """Per pair: the ``(C, C)`` confusion matrix of its mask (rows) against :func:`segmenter_labels` of its
    image (columns); ``(N, C, C)``."""
    if segmenter.schema.names != pairs[0].schema.names:
        raise ValueError(f"the segmenter's phases {segmenter.schema.names} are not the pairs' {pairs[0].schema.names}")
    schema, out = pairs[0].schema, []
    for i, pair in enumerate(pairs):
        check_stop(should_stop)
        labels = segmenter_labels(segmenter, pair.image, downscale)
        out.append(confusion_matrix(pair.mask, labels, schema.n_classes, schema.ignore_id))
        progress(i + 1, len(pairs), f"mask-image agreement: {i + 1}/{len(pairs)} tiles")
    return np.array(out)


def agreement_miou(
    segmenter: "Segmenter",
    pairs: Sequence[Sample],
    downscale: int,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> np.ndarray:
    """Per pair: mIoU between its mask and :func:`segmenter_labels` of its image (classes in neither map
    left out)."""
    return np.array([mean_iou(cm) for cm in agreement_confusions(segmenter, pairs, downscale, progress, should_stop)])


def judged_agreement(cm: np.ndarray, judged: Sequence[int]) -> float:
    """Agreement over the classes a judge can see: the mean IoU of the ``judged`` classes over the pixels the
    mask gives a judged class (pixels of other classes say nothing either way), from a mask-vs-judge confusion
    matrix; nan when the mask and the judge hold none of them there.

    >>> cm = np.array([[8, 0, 2], [0, 0, 0], [0, 0, 5]])  # class 2 unjudged: its pixels do not count
    >>> judged_agreement(cm, [0, 1]), round(mean_iou(cm), 3)
    (0.8, 0.757)
    """
    kept = np.asarray(cm, dtype=np.float64)[list(judged)]
    tp = kept[np.arange(len(judged)), list(judged)]
    union = kept.sum(axis=1) + kept[:, list(judged)].sum(axis=0) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present])) if present.any() else math.nan


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

    sizes = {label: list(batch_sizes) if "batch_size" in {o.name for o in gen.sampling_options()} else [None]
             for label, gen in generators.items()}
    total = sum(len(s) for s in sizes.values()) * (n + int(warmup))
    done = 0
    rows = []
    for label, gen in generators.items():
        options = gen.declared_sampling({k: v for k, v in sampling.items() if k != "batch_size"})
        cond = default_condition(gen) if condition is None else condition
        for size in sizes[label]:
            opts = options if size is None else {**options, "batch_size": int(size)}
            if warmup:
                for _ in gen.sample(cond, n=1, seed=seed, should_stop=should_stop, **opts):
                    pass
                done += 1
                progress(done, total, f"{label}: warm-up")
            device = str(gen.device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for i, _ in enumerate(gen.sample(cond, n=n, seed=seed, should_stop=should_stop, **opts)):
                done += 1
                progress(done, total, f"{label}, batch {size or 1}: {i + 1}/{n} pairs")
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            settings = gen.sampling_settings(**opts)
            rows.append(GenerationTime(label, int(size or 1), n, elapsed / n, device, settings))
    return rows


# ---------------------------------------------------------------- everything together


@dataclass
class GeneratorEvaluation:
    """The results of :func:`evaluate_generator`; :meth:`write` saves them as a report folder.

    ``distribution``: the real-vs-real baseline first, then one entry per sampling setting. ``data``: which
    micrographs (and splits) were scored and which trained the feature encoder.
    """

    generator: dict[str, Any]
    fraction_control: list[FractionControl]
    distribution: list[DistributionQuality]
    agreement: Agreement | None
    timing: list[GenerationTime]
    data: dict[str, Any] = field(default_factory=dict)

    def fraction_rows(self) -> list[dict[str, Any]]:
        return [row for result in self.fraction_control for row in result.rows()]

    def summary_rows(self) -> list[dict[str, Any]]:
        ceiling = float("nan") if self.agreement is None else self.agreement.ceiling
        return [{**r.summary(), "agreement_ceiling": ceiling} for r in self.fraction_control]

    def to_markdown(self) -> str:
        g = self.generator
        lines = [f"# Evaluation of generator {g.get('name')} (checksum {g.get('checksum') or 'unsaved'})", "",
                 *self._data_lines(), ""]
        if self.fraction_control:
            lines += self._fraction_lines()
        if self.distribution:
            lines += self._distribution_lines()
        if self.timing:
            lines += ["## Generation time per image + mask pair", "",
                      "| generator | batch | seconds / pair | device | steps |", "|---|---|---|---|---|"]
            for t in self.timing:
                lines.append(f"| {t.generator} | {t.batch_size} | {t.seconds_per_pair:.3f} | {t.device} "
                             f"| {t.sampling.get('steps', '')} |")
            lines.append("")
        return "\n".join(lines)

    def _data_lines(self) -> list[str]:
        scored, encoder = self.data.get("scored", {}), self.data.get("encoder", {})
        lines = [f"- real tiles scored: {_split_text(scored)}, cut into {scored.get('tiles')}"]
        if encoder:
            lines.append(f"- domain feature encoder trained on: {_split_text(encoder)} (none of them scored)")
        lines.append(f"- sampling options (each row overrides the ones it names): "
                     f"{json.dumps(self.generator.get('sampling'), default=_json_default)}")
        return lines

    def _fraction_lines(self) -> list[str]:
        names = self.fraction_control[0].class_names
        a = self.agreement
        lines = [
            f"## Fraction control ({len(self.fraction_control[0].targets)} target vectors, same targets and seeds "
            "in every row)",
            "",
            "Per class: R² around achieved = target (%) / slope of achieved on target / Pearson r² (%) / MAE",
            "(percentage points). Paper 000 reports R² 87-98 % and MAE 0.1-1.7 pp per class for PF-DiffSeg on",
            "MetalDAM (Fig. 4). R², slope and r² are n/a for a class whose targets vary by 1 point (std) or less.",
        ]
        if a is not None:
            s = a.segmenter
            lines += [
                "",
                f"Agreement: mean mIoU between each generated mask and the phase map that segmenter {s.get('name')}",
                f"(checksum {s.get('checksum')}, no phase ratio; training data: {s.get('trained_on') or 'not recorded'})",
                f"gives for the generated image. Its ceiling, the same on the {a.n_real} real scored tiles taken",
                f"through the same steps (reduced like the generator's tiles, enlarged back): **{a.ceiling:.3f}**.",
            ]
        header = "| setting | " + " | ".join(names) + " | mean MAE (pp) |"
        header += f" agreement mIoU (ceiling {a.ceiling:.3f}) |" if a is not None else ""
        lines += ["", header, "|---" * (len(names) + 2 + (a is not None)) + "|"]
        for r in self.fraction_control:
            cells = [_class_cell(r.r2[c], r.slope[c], r.pearson_r2[c], r.mae[c]) for c in range(len(names))]
            row = f"| {r.setting} | " + " | ".join(cells) + f" | {100 * np.mean(r.mae):.2f} |"
            lines.append(row + (f" {r.agreement_miou:.3f} |" if a is not None else ""))
        return lines + [""]

    def _distribution_lines(self) -> list[str]:
        e = self.distribution[0].extractor
        scored = self.data.get("scored", {})
        lines = [
            f"## Distribution quality (features: {e.get('name')}, checksum {e.get('checksum')})",
            "",
            f"Each set is compared with the real tiles of half A ({', '.join(scored.get('reference_half', []))}).",
            f"\"{REAL_BASELINE}\" is half B ({', '.join(scored.get('baseline_half', []))}): the scores of real",
            "micrographs the reference has not seen. A generator as good as real data scores about the same; FD and",
            "KID are unnormalised, so read them against that row. Lower FD/KID and higher precision/recall are better.",
            "",
            "| compared | modality | FD | KID (x1000) | precision | recall | reference | compared tiles |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for quality in self.distribution:
            for row in quality.rows():
                spread = f" ± {1000 * row['kid_std']:.2f}" if row["kid_std"] > 0 else ""  # 0 when subsets = whole sets
                lines.append(
                    f"| {row['compared']} | {row['modality']} | {row['fd']:.3f} | {1000 * row['kid']:.2f}{spread} "
                    f"| {row['precision']:.3f} | {row['recall']:.3f} | {row['n_real']} | {row['n_synthetic']} |"
                )
        return lines + [""]

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "data": self.data,
            "settings": self.summary_rows(),
            "fraction_control": self.fraction_rows(),
            "agreement": None if self.agreement is None else vars(self.agreement),
            "distribution": None if not self.distribution else {
                "extractor": self.distribution[0].extractor,
                "scores": [row for quality in self.distribution for row in quality.rows()]},
            "timing": [vars(t) for t in self.timing],
        }

    def write(self, folder: str | Path) -> Path:
        """``report.md``, ``evaluation.json``, ``settings.csv``, ``fraction_control.csv`` + ``.png``,
        ``distribution.csv``, ``timing.csv`` (the parts that were run)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.to_markdown())
        (folder / "evaluation.json").write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")
        if self.fraction_control:
            write_csv(folder / "settings.csv", self.summary_rows())
            write_csv(folder / "fraction_control.csv", self.fraction_rows())
            plot_fraction_control(self.fraction_control, folder / "fraction_control.png")
        if self.distribution:
            write_csv(folder / "distribution.csv", [row for q in self.distribution for row in q.rows()])
        if self.timing:
            write_csv(folder / "timing.csv", [
                {k: v for k, v in vars(t).items() if k != "sampling"} | {"steps": t.sampling.get("steps")}
                for t in self.timing
            ])
        return folder


def _split_text(part: Mapping[str, Any]) -> str:
    names = part.get("micrographs", [])
    split = f"split {part['split']!r}, " if part.get("split") else ""
    return f"{split}{len(names)} micrographs ({', '.join(names)})"


def _class_cell(r2: float, slope: float, pearson_r2: float, mae: float) -> str:
    if np.isnan(r2):
        return f"n/a / n/a / n/a / {100 * mae:.2f}"
    return f"{100 * r2:.1f} / {slope:.2f} / {100 * pearson_r2:.1f} / {100 * mae:.2f}"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def evaluate_generator(
    generator: Generator,
    real_samples: Sequence[Sample],
    encoder_samples: Sequence[Sample] | None = None,
    extractor: FeatureExtractor | None = None,
    segmenter: AgreementSegmenter | None = None,
    n: int = 64,
    targets=None,
    settings: Sequence[SamplingSetting] | None = None,
    downscale: int | None = None,
    compare: Mapping[str, Generator] | None = None,
    timing_n: int = 4,
    timing_batch_sizes: Sequence[int] = (1, 4),
    seed: int = 0,
    split_names: Mapping[str, str] | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    **sampling: Any,
) -> GeneratorEvaluation:
    """Fraction control, mask-image agreement, distribution quality and timing of a fraction-conditioned
    generator, one row per sampling setting (``settings`` None: :func:`sampling_settings`).

    ``real_samples``: annotated held-out micrographs to score, at least two. ``targets``: ``(N, n_classes)``
    vectors, or None for ``n`` vectors of paper 000's boosted mixture over their tiles. Real tiles are cut
    at the generator's size and reduced by ``downscale`` (None = the generator's training setting when it
    records one, else 1). ``extractor`` None trains the domain feature encoders on ``encoder_samples``
    (e.g. the generator's training split), which must not include a scored micrograph. ``segmenter``:
    trained on real data only, for the agreement column (None = no agreement). ``compare``: more
    generators to time alongside; ``timing_n`` 0 skips timing. ``sampling`` options go to every generator
    that has them (e.g. ``steps``). ``split_names``: ``{"scored": ..., "encoder": ...}`` for the report.
    """
    labelled = [s for s in real_samples if s.mask is not None]
    if not labelled:
        raise ValueError("evaluating a generator needs annotated real micrographs")
    halves = split_by_micrograph(labelled)
    encoder_names = _encoder_names(extractor, encoder_samples, labelled)
    downscale = generator.downscale if downscale is None else downscale
    size = generator.resolution
    if targets is None:  # at the generator's training crop
        targets = fraction_targets(labelled, n, seed=seed, tile=size * downscale, downscale=downscale)
    targets = np.asarray(targets, dtype=np.float64)
    settings = sampling_settings(generator) if settings is None else list(settings)
    timed = {generator.name: generator, **(compare or {})} if timing_n > 0 else {}
    n_real = sum(len(tile_boxes(s.shape, size * downscale)) for s in labelled)
    parts = _Parts(progress, {
        "control": len(settings) * len(targets),
        "encoder": 0 if extractor is not None else _encoder_steps(),
        "distribution": 2 * (len(settings) + 1) * (n_real // 2 + min(n_real // 2, len(targets))),
        "agreement": 0 if segmenter is None else len(settings) * len(targets) + n_real,
        "timing": len(timed) * len(timing_batch_sizes) * (timing_n + 1),
    })

    control = evaluate_fraction_control(generator, targets, settings, seed=seed, progress=parts.part("control"),
                                        should_stop=should_stop, **sampling)
    reference, held_out = (reduced_tiles(half, size, downscale) for half in halves)
    if extractor is None:
        extractor = _train_extractor(encoder_samples, size, downscale, seed, generator, parts.part("encoder"),
                                     should_stop)
    distribution = _distribution(reference, held_out, control, extractor, len(targets), seed,
                                 parts.part("distribution"), should_stop)
    agreement = None
    if segmenter is not None:
        agreement = _agreement(segmenter, [*reference, *held_out], control, downscale, parts.part("agreement"),
                               should_stop)
    timing = []
    if timed:
        timing = time_generation(timed, n=timing_n, batch_sizes=timing_batch_sizes, seed=seed,
                                 progress=parts.part("timing"), should_stop=should_stop, **sampling)
    names = dict(split_names or {})
    data = {
        "scored": {"split": names.get("scored"), "micrographs": [s.name for s in labelled],
                   "reference_half": [s.name for s in halves[0]], "baseline_half": [s.name for s in halves[1]],
                   "tiles": f"{size} px tiles at downscale {downscale} (the generator's scale)"},
        "encoder": {"split": names.get("encoder"), "micrographs": encoder_names} if encoder_names else {},
    }
    return GeneratorEvaluation(_generator_info(generator, sampling), control, distribution, agreement, timing, data)


def _encoder_steps() -> int:
    from ..models.feature_training import FeatureTrainConfig

    return FeatureTrainConfig().steps


def _encoder_names(extractor: FeatureExtractor | None, encoder_samples, scored: Sequence[Sample]) -> list[str]:
    """The micrographs the feature encoder is (or will be) trained on; raises if one of them is scored."""
    if extractor is None and not encoder_samples:
        raise ValueError("the domain feature encoder needs training micrographs other than the scored ones: "
                         "pass encoder_samples (e.g. the generator's training split) or a trained extractor")
    names = [s.name for s in encoder_samples] if extractor is None else list(extractor.describe().get("trained_on", []))
    both = sorted(set(names) & {s.name for s in scored})
    if both:
        raise ValueError(f"the feature encoder would score micrographs it was trained on: {both}; "
                         "train it on another split than the one scored")
    return names


def _train_extractor(samples, size, downscale, seed, generator, progress, should_stop) -> FeatureExtractor:
    from ..models.feature_training import FeatureTrainConfig, train_domain_extractor

    return train_domain_extractor(
        [s for s in samples if s.mask is not None], FeatureTrainConfig(tile=size, downscale=downscale, seed=seed),
        device=str(generator.device), progress=progress, should_stop=should_stop,
    )


def _distribution(reference, held_out, control, extractor, n, seed, progress, should_stop) -> list[DistributionQuality]:
    """Half B of the real tiles (the baseline), then each setting's pairs, against half A; every compared
    set holds the same number of tiles, so FD's small-sample bias is alike in every row."""
    m = min(len(held_out), n)
    compared = [(REAL_BASELINE, _subset(held_out, m, seed))] + [(r.setting, _subset(r.pairs, m, seed)) for r in control]
    parts = _Parts(progress, {name: 1 for name, _ in compared})
    return [evaluate_distribution(reference, tiles, extractor, seed=seed, compared=name, progress=parts.part(name),
                                  should_stop=should_stop) for name, tiles in compared]


def _agreement(segmenter, real, control, downscale, progress, should_stop) -> Agreement:
    """Agreement mIoU of each setting's pairs (stored on them) and the ceiling on the real tiles."""
    parts = _Parts(progress, {"real": len(real), **{r.setting: len(r.pairs) for r in control}})
    ceiling = agreement_miou(segmenter.model, real, downscale, parts.part("real"), should_stop)
    for r in control:
        r.agreement = agreement_miou(segmenter.model, r.pairs, downscale, parts.part(r.setting), should_stop)
    return Agreement(segmenter.describe(), _nanmean(ceiling), len(real))


def _generator_info(generator: Generator, sampling: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": generator.name,
        "version": generator.version,
        "checksum": generator.model_checksum,
        "preset": generator.preset,
        "sampling": generator.sampling_settings(**generator.declared_sampling(sampling)),
    }
