"""Training a phase segmenter (with or without the Phase Learning Module) on annotated micrographs.

Each step draws random tiles from the training micrographs and augments them. A PLM model gets a phase
ratio computed from the labels (paper 001, sec. 2.1). The loss is Dice + cross-entropy (paper 001, sec.
3.2) plus, for PLM models, the mean squared error between the phase fractions of the soft prediction
(mean softmax over the tile) and the tile's true fractions (paper 001, sec. 2.2 and 3.2).

The ratio input (paper 001 trains on exact ratios and gives no loss weights), all configurable:

- default: each tile's own true fractions, ratio-loss weight 1, 20 % of tiles without a ratio
  (``ratio_dropout``, see below); ``PAPER_RATIO_RECIPE`` is the same without the dropout.
- ``ratio_source="micrograph"`` feeds the fractions of the whole micrograph the tile comes from (what
  inference feeds every window), ``ratio_alpha`` turns them into simulated expert guesses of accuracy
  alpha drawn from that range (paper 001's error model, appendix A.2, eq. 4-5, which it uses only at
  inference) and ``ratio_weight`` weighs the ratio MSE (~1e-3 once trained, against ~0.5 for Dice + CE).
  Measured on MetalDAM and UHCS (README, 3 seeds, 800 steps): micrograph ratios with alpha in [0.6, 1]
  and weight 20 scored below the paper's recipe with and without a ratio, so they are not the default.

Training runs through the one trainer (``models.trainer``: accelerate, mixed precision only on a GPU,
batches sharded across processes), checkpoints every ``checkpoint_every`` steps into
``work_dir/checkpoints`` and resumes from the latest checkpoint when called again with the same
``work_dir``. Tile draws are seeded by (seed, step, process), so an interrupted and resumed training
follows the same path as an uninterrupted one; resuming never unpickles code (``models.checkpoint``).

Departures from the paper, all configurable: AdamW at lr 1e-3 with cosine decay instead of Adam at
1e-5 (the paper fine-tunes; here encoders start from random weights because nothing is downloaded);
``ratio_dropout`` replaces a tile's ratio by the zero "no ratio" input with that probability (the paper
always trains with the true ratio and only feeds zeros at inference, appendix A.2) so that the model's
no-ratio prediction, which seeds the ratio sliders, is trained too. Set it to 0 for the paper's setting.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.conditions import expert_guess
from ..core.domain_check import training_statistics
from ..core.fractions import class_counts
from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from ..core.sample import Sample, data_fingerprint
from ..core.schema import PhaseSchema
from ..core.tiles import random_box
from ..models import checkpoint
from ..models.device import resolve_device
from ..models.plm import PLMFlags
from ..models.segmenter import PRESETS, Segmenter
from ..models.trainer import LoopSettings, Recipe, Run, TrainResult, train

CHECKPOINT_DIR = "checkpoints"
#: Config fields that may differ between an interrupted training and its resumption.
RESUMABLE_CHANGES = ("steps", "device", "checkpoint_every", "keep_checkpoints")


@dataclass
class SegmentationConfig:
    """Everything that defines a segmentation training run (invalid values name the field and its CLI flag)."""

    arch: str = "Unet"
    preset: str = "small"
    encoder: str | None = None  # None: the preset's encoder
    plm: str = "RE+SA+FA"  # an ablation name (models.plm.ABLATIONS); "baseline" = no PLM
    tile_size: int = 256
    batch_size: int = 8  # paper 001, sec. 3.2
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    ratio_weight: float = 1.0
    ratio_dropout: float = 0.2
    ratio_source: str = "tile"  # the ratio input: "tile" (paper 001) or "micrograph" (as at inference)
    ratio_alpha: tuple[float, float] = (1.0, 1.0)  # guess accuracy range of the ratio input; (1, 1): exact
    plm_width: int = 0  # PLM channel width; 0: one channel per phase (paper 001's text)
    init_from: str | None = None  # a segmenter model folder to fine-tune (same network and phases)
    synthetic_per_batch: int = 0  # 0: tiles drawn from all samples alike; k: batch_size real + k synthetic tiles
    synthetic_weight: float = 1.0  # loss weight of a synthetic tile against a real one's 1
    scale_range: tuple[float, float] = (0.8, 1.25)  # magnification augmentation (paper 001, sec. 3.1)
    input_scale: float = 1.0  # the network sees micrographs resized by this factor (0.5: 4x less compute)
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 200
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        self.scale_range = tuple(float(v) for v in self.scale_range)  # type: ignore[assignment]
        self.ratio_alpha = tuple(float(v) for v in self.ratio_alpha)  # type: ignore[assignment]
        PLMFlags.from_name(self.plm)
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        checks = [
            (self.tile_size >= 32, f"tile_size (--tile) must be at least 32 pixels, got {self.tile_size}"),
            (self.batch_size >= 2,
             f"batch_size (--batch-size) must be at least 2 (batch normalisation), got {self.batch_size}"),
            (self.steps >= 1, f"steps (--steps) must be at least 1, got {self.steps}"),
            (self.lr > 0, f"lr (--lr) must be positive, got {self.lr}"),
            (0.0 <= self.ratio_dropout <= 1.0,
             f"ratio_dropout (--ratio-dropout) must be in [0, 1], got {self.ratio_dropout}"),
            (self.ratio_source in RATIO_SOURCES,
             f"ratio_source (--ratio-source) must be one of {', '.join(RATIO_SOURCES)}, got {self.ratio_source!r}"),
            (len(self.ratio_alpha) == 2 and 0.0 <= self.ratio_alpha[0] <= self.ratio_alpha[1] <= 1.0,
             f"ratio_alpha (--ratio-alpha) must be (low, high) with 0 <= low <= high <= 1, got {self.ratio_alpha}"),
            (self.ratio_weight >= 0, f"ratio_weight (--ratio-weight) must be at least 0, got {self.ratio_weight}"),
            (self.synthetic_per_batch >= 0,
             f"synthetic_per_batch must be at least 0, got {self.synthetic_per_batch}"),
            (self.synthetic_weight >= 0, f"synthetic_weight must be at least 0, got {self.synthetic_weight}"),
            (self.plm_width >= 0,
             f"plm_width (--plm-width) must be at least 0 (0: one channel per phase), got {self.plm_width}"),
            (self.checkpoint_every >= 1,
             f"checkpoint_every (--checkpoint-every) must be at least 1, got {self.checkpoint_every}"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}"),
            (0 < self.scale_range[0] <= self.scale_range[1],
             f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scale_range"] = list(self.scale_range)
        data["ratio_alpha"] = list(self.ratio_alpha)
        return data

    def with_paper_ratio_recipe(self) -> "SegmentationConfig":
        """This config with paper 001's ratio training (:data:`PAPER_RATIO_RECIPE`)."""
        return replace(self, **PAPER_RATIO_RECIPE)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmentationConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown segmentation config fields: {sorted(unknown)}")
        return cls(**data)

    def build_model(self, schema: PhaseSchema) -> Segmenter:
        """A freshly initialised network for this config (seeded), or the weights of ``init_from``."""
        torch.manual_seed(self.seed)
        model = Segmenter.build(schema, arch=self.arch, preset=self.preset, encoder=self.encoder,
                                plm=self.plm, tile_size=self.tile_size, input_scale=self.input_scale,
                                plm_width=self.plm_width or None)
        if self.init_from:
            start = Segmenter.load(self.init_from)
            if start.schema.names != schema.names or start.state_dict().keys() != model.state_dict().keys() or any(
                    a.shape != b.shape for a, b in zip(start.state_dict().values(), model.state_dict().values())):
                raise ValueError(f"cannot fine-tune {self.init_from}: it is not a {self.arch} ({self.preset}, PLM "
                                 f"{self.plm}) for the phases {', '.join(schema.names)}; use its own settings")
            model.load_state_dict(start.state_dict())
        return model

    @classmethod
    def continuing(cls, folder: str | Path, **changes) -> "SegmentationConfig":
        """The training config recorded in the model folder ``folder``, set to fine-tune it (``changes``
        applied on top, e.g. fewer steps or a lower learning rate)."""
        from ..models.folder import read_model_config

        recorded = dict((read_model_config(folder).get("training") or {}).get("config") or {})
        if not recorded:
            raise ValueError(f"{folder} records no training config; it cannot be fine-tuned from here")
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in recorded.items() if k in known}, "init_from": str(folder), **changes})


#: Where a PLM's training ratio comes from (see the module docstring).
RATIO_SOURCES = ("tile", "micrograph")
#: Paper 001's ratio training: each tile's exact ratio, unit loss weights, no dropout, n-channel modules.
PAPER_RATIO_RECIPE: dict[str, Any] = {"ratio_source": "tile", "ratio_alpha": (1.0, 1.0), "ratio_weight": 1.0,
                                      "ratio_dropout": 0.0, "plm_width": 0}


@dataclass(kw_only=True)
class SegmentationResult(TrainResult):
    """A finished training (steps, history, resume point, precision) with the network (CPU, eval mode)
    and where it came from (``image_statistics``: the training micrographs', for
    :func:`~napari_microsynth.core.domain_check.domain_warnings`)."""

    model: Segmenter
    config: SegmentationConfig
    fingerprint: str
    n_samples: int
    work_dir: Path
    image_statistics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def training_info(self) -> dict[str, Any]:
        """What the model folder records about this training."""
        last = self.history[-1] if self.history else {}
        return {
            "config": self.config.to_dict(),
            "data_fingerprint": self.fingerprint,
            "n_training_samples": self.n_samples,
            "steps_done": int(last.get("step", 0)),
            "final_loss": float(last.get("loss", float("nan"))),
            "image_statistics": self.image_statistics,
            **self.extra,
        }

    def save(self, folder: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write the model folder (config, weights, model card with ``metrics``); in a distributed run
        the main process writes it while the others wait."""
        self.model.training_record, self.model.metrics = self.training_info(), dict(metrics or {})
        return self.model.save(folder)


def check_training_samples(samples: Sequence[Sample]) -> PhaseSchema:
    """The common schema of annotated training samples; raises with a clear message otherwise."""
    if not samples:
        raise ValueError("no training samples given")
    schema = samples[0].schema
    for s in samples:
        if s.mask is None:
            raise ValueError(f"training sample {s.name!r} has no mask; segmentation training needs annotated micrographs")
        if s.schema != schema:
            raise ValueError(f"training samples mix phase schemas: {schema.name!r} and {s.schema.name!r} ({s.name!r})")
        if class_counts(s.mask, schema.n_classes, schema.ignore_id).sum() == 0:
            raise ValueError(f"training sample {s.name!r} has no labelled pixel (its mask is all ignore id)")
    return schema


# ----------------------------------------------------------------------------------------------
# tiles and augmentation


def _crop_padded(array: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    """``array[y:y+size, x:x+size]``, reflecting at the far edges when the array is smaller."""
    h, w = array.shape
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        array = np.pad(array, ((0, pad_h), (0, pad_w)), mode="reflect")
    return array[y : y + size, x : x + size]


def _resize(tile: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    if tile.shape[0] == size:
        return tile
    t = torch.from_numpy(np.ascontiguousarray(tile, dtype=np.float32))[None, None]
    if nearest:
        return F.interpolate(t, size=(size, size), mode="nearest")[0, 0].numpy().astype(tile.dtype)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def random_tile(sample: Sample, size: int, rng: np.random.Generator, scale_range=(1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """A random augmented ``size`` x ``size`` tile (image float32, mask) of an annotated sample.

    Augmentations (paper 001, sec. 3.1): magnification (a crop of ``scale * size`` pixels resized to
    ``size``), flips, 90-degree rotations, brightness, contrast and gamma.
    """
    scale = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    crop = max(8, int(round(size * scale)))
    y, x, _, _ = random_box(sample.shape, crop, rng)
    image = _resize(_crop_padded(sample.image, y, x, crop), size, nearest=False)
    mask = _resize(_crop_padded(sample.mask, y, x, crop), size, nearest=True)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    k = int(rng.integers(0, 4))
    image, mask = np.rot90(image, k), np.rot90(mask, k)
    mean = float(image.mean())
    image = (image - mean) * rng.uniform(0.8, 1.25) + mean + rng.uniform(-0.1, 0.1)
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(mask)


def _tile_fractions(mask: np.ndarray, schema: PhaseSchema) -> np.ndarray | None:
    counts = class_counts(mask, schema.n_classes, schema.ignore_id)
    total = counts.sum()
    return counts / total if total > 0 else None


def training_batch(samples: Sequence[Sample], config: SegmentationConfig, rng: np.random.Generator,
                   micrograph_fractions: Sequence[np.ndarray] | None = None):
    """``(images (B,1,T,T), masks (B,T,T) int64, fractions (B,C), ratios (B,C), weights (B,))`` for one step.

    ``fractions`` are each tile's true fractions (the ratio loss's target); ``ratios`` the PLM's ratio
    input: the tile's or its micrograph's fractions (``config.ratio_source``; pass the samples'
    ``micrograph_fractions`` to save recomputing them) as an expert guess of accuracy drawn from
    ``config.ratio_alpha``, and zeros (no ratio) where dropped; ``weights`` each tile's loss weight
    (``config.synthetic_weight`` for a synthetic tile, 1 otherwise). With ``config.synthetic_per_batch`` k > 0
    the batch holds ``batch_size`` tiles of the real samples and k of the synthetic ones, so every real
    tile is seen as often as without synthetic data; otherwise all samples are drawn alike. Tiles whose
    mask is all ``ignore_id`` are drawn again.
    """
    schema = samples[0].schema
    if config.ratio_source == "micrograph" and micrograph_fractions is None:
        micrograph_fractions = [s.fractions for s in samples]
    synthetic = [s.provenance.is_synthetic for s in samples]
    if config.synthetic_per_batch > 0:
        real_pool = [i for i, flag in enumerate(synthetic) if not flag]
        synthetic_pool = [i for i, flag in enumerate(synthetic) if flag]
        if not real_pool:
            raise ValueError("synthetic_per_batch needs real samples next to the synthetic ones")
        draws = [(real_pool, config.batch_size)] + ([(synthetic_pool, config.synthetic_per_batch)]
                                                     if synthetic_pool else [])
    else:
        draws = [(None, config.batch_size)]
    images, masks, fracs, ratios, weights = [], [], [], [], []
    scale_range = tuple(v / config.input_scale for v in config.scale_range)
    for pool, count in draws:
        drawn = 0
        for _ in range(100 * count):
            if drawn == count:
                break
            index = int(rng.integers(0, len(samples))) if pool is None else pool[int(rng.integers(0, len(pool)))]
            image, mask = random_tile(samples[index], config.tile_size, rng, scale_range)
            fractions = _tile_fractions(mask, schema)
            if fractions is None:
                continue
            drawn += 1
            images.append(image)
            masks.append(mask.astype(np.int64))
            fracs.append(fractions)
            source = fractions if config.ratio_source == "tile" else micrograph_fractions[index]
            ratios.append(expert_guess(source, float(rng.uniform(*config.ratio_alpha))))
            weights.append(config.synthetic_weight if synthetic[index] else 1.0)
        if drawn < count:
            raise ValueError("could not draw tiles with labelled pixels: the masks are almost all ignore id")
    given = rng.random(len(images)) >= config.ratio_dropout
    return (
        torch.from_numpy(np.stack(images)[:, None]),
        torch.from_numpy(np.stack(masks)),
        torch.from_numpy(np.stack(fracs)).float(),
        torch.from_numpy(np.stack(ratios) * given[:, None]).float(),
        torch.tensor(weights, dtype=torch.float32),
    )


# ----------------------------------------------------------------------------------------------
# loss


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    fractions: torch.Tensor,
    config: SegmentationConfig,
    ignore_id: int | None = None,
    with_ratio_loss: bool = True,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted Dice + cross-entropy (+ ratio MSE) for logits ``(B,C,H,W)`` and target ``(B,H,W)``.

    Dice is the soft multi-class Dice over the batch (1 - mean over classes); the ratio term compares
    the mean softmax over each tile's labelled pixels with the tile's true fractions ``(B, C)``.
    ``weights`` ``(B,)`` weigh each tile's pixels in all three terms (None: all 1, the plain pooled losses).
    """
    logits = logits.float()
    n = logits.shape[1]
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_id is None else target != ignore_id
    weights = torch.ones(len(target), device=logits.device) if weights is None else weights.to(logits.device).float()
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    pixel_weight = weights[:, None, None] * valid
    ce_map = F.cross_entropy(logits, safe_target, reduction="none")
    ce = (ce_map * pixel_weight).sum() / pixel_weight.sum().clamp(min=1e-8)
    probs = torch.softmax(logits, dim=1) * valid[:, None]
    onehot = F.one_hot(safe_target, n).permute(0, 3, 1, 2).float() * valid[:, None]
    tile_weight = weights[:, None, None, None]
    inter = (tile_weight * probs * onehot).sum(dim=(0, 2, 3))
    denom = (tile_weight * (probs + onehot)).sum(dim=(0, 2, 3))
    dice = 1.0 - ((2.0 * inter + 1.0) / (denom + 1.0)).mean()
    total = config.dice_weight * dice + config.ce_weight * ce
    parts = {"dice": float(dice.detach()), "ce": float(ce.detach())}
    if with_ratio_loss:
        predicted = probs.sum(dim=(2, 3)) / valid.sum(dim=(1, 2)).clamp(min=1)[:, None]
        per_tile = ((predicted - fractions.to(predicted)) ** 2).mean(dim=1)
        mse = (weights * per_tile).sum() / weights.sum().clamp(min=1e-8)
        total = total + config.ratio_weight * mse
        parts["ratio_mse"] = float(mse.detach())
    parts["loss"] = float(total.detach())
    return total, parts


# ----------------------------------------------------------------------------------------------
# checkpoints


def latest_checkpoint(work_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a training work dir, or None."""
    return checkpoint.latest_checkpoint(Path(work_dir) / CHECKPOINT_DIR)


def _refuse_old_checkpoints(folder: Path) -> None:
    """Checkpoints of versions before the one trainer (``step_XXXXXXXX`` folders) cannot be resumed."""
    old = sorted(p.name for p in folder.glob("step_*") if p.is_dir())
    if old:
        raise ValueError(
            f"{folder} holds checkpoints of an older version of napari-microsynth ({', '.join(old)}) that cannot "
            "be resumed; use another work folder, or delete them to train from the start"
        )


# ----------------------------------------------------------------------------------------------
# training


def _segmenter_recipe(samples: list[Sample], config: SegmentationConfig, fingerprint: str) -> Recipe:
    """The segmenter's training for :func:`~napari_microsynth.models.trainer.train`."""
    schema = samples[0].schema
    model = config.build_model(schema)
    with_ratio_loss = config.plm.lower() != "baseline"
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(step, config.steps) / config.steps))
    )

    micrograph_fractions = [s.fractions for s in samples]

    def step(run: Run, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        images, masks, fractions, ratios, weights = (t.to(run.device) for t in batch)
        ratio = ratios if run.unwrap("model").uses_ratio else None
        logits = run.modules["model"](images, ratio)
        loss, parts = segmentation_loss(logits, masks, fractions, config, schema.ignore_id, with_ratio_loss,
                                        weights)
        run.update("model", loss)
        return parts

    resumable = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    return Recipe(
        {"model": model}, {"model": optimizer},
        lambda rng: training_batch(samples, config, rng, micrograph_fractions), step,
        identity={"config": resumable, "data_fingerprint": fingerprint}, schedulers={"lr": scheduler},
    )


def train_segmenter(
    samples: Sequence[Sample],
    config: SegmentationConfig,
    work_dir: str | Path,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    on_step=None,
    val_samples: Sequence[Sample] = (),
    validate_every: int = 0,
) -> SegmentationResult:
    """Train (or resume training) a segmenter on annotated whole micrographs.

    ``work_dir`` receives ``checkpoints/checkpoint-<step>`` folders; an existing checkpoint there is
    resumed (the config may only differ in steps, device and checkpoint settings). When
    ``should_stop()`` turns true a checkpoint is saved and
    :class:`~napari_microsynth.core.progress.Cancelled` is raised (its ``.result`` the partial
    :class:`~napari_microsynth.models.trainer.TrainResult`); calling again continues from there.
    ``on_step(record)`` gets each step's losses (for a live plot). With ``val_samples`` and
    ``validate_every`` > 0 the model is scored on them (whole micrographs; a PLM with their true ratio) every
    that many steps and at the end, and the record of that step gets ``val_miou`` and ``val_mean_dice``.
    """
    check_training_samples(samples)
    samples = list(samples)
    fingerprint = data_fingerprint(samples)
    work_dir = Path(work_dir)
    folder = work_dir / CHECKPOINT_DIR
    _refuse_old_checkpoints(folder)
    recipe = _segmenter_recipe(samples, config, fingerprint)
    settings = LoopSettings(config.steps, config.seed, resolve_device(config.device), "auto", folder,
                            config.checkpoint_every, config.keep_checkpoints,
                            validate_every=validate_every if val_samples else 0)
    done = train(recipe, settings, progress, should_stop, on_step, _validation(val_samples, should_stop))
    model = recipe.modules["model"].to("cpu").float().eval()
    return SegmentationResult(steps=done.steps, history=done.history, resumed_from=done.resumed_from,
                              mixed_precision=done.mixed_precision, model=model, config=config,
                              fingerprint=fingerprint, n_samples=len(samples), work_dir=work_dir,
                              image_statistics=training_statistics([s.image for s in samples],
                                                                   [s.pixel_size_um for s in samples]))


def _validation(val_samples: Sequence[Sample], should_stop: StopFn):
    """The trainer's ``validate`` callback: mIoU and mean Dice of the model in training on ``val_samples``."""
    if not val_samples:
        return None
    from .evaluation import evaluate

    def validate(run: Run) -> dict[str, float]:
        model = run.unwrap("model")
        report = evaluate(model, val_samples, "true" if model.uses_ratio else None, should_stop=should_stop)
        return {"val_miou": report["miou"], "val_mean_dice": report["mean_dice"]}

    return validate


def corrections_seen(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """The hand-corrected samples among ``samples`` (name, origin before correction, changed pixels), for
    the model card of a model fine-tuned on corrections."""
    return [{"name": s.name, "was": s.provenance.extra.get("original_origin", "unknown"),
             "changed_pixels": int(s.provenance.changed_pixels or 0)}
            for s in samples if s.provenance.origin == "corrected"]


def train_and_save(
    samples: Sequence[Sample],
    config: SegmentationConfig,
    out_dir: str | Path,
    val_samples: Sequence[Sample] = (),
    data_description: str = "",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    on_step=None,
    validate_every: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Train (or resume) in ``out_dir/work``, score on ``val_samples`` when given (true ratio for a PLM;
    also every ``validate_every`` steps during the training, see :func:`train_segmenter`) and write the
    model folder ``out_dir/model``; returns the folder and the measured metrics."""
    from .evaluation import evaluate

    result = train_segmenter(samples, config, Path(out_dir) / "work", progress, should_stop, on_step,
                             val_samples, validate_every)
    if data_description:
        result.extra["data"] = data_description
    if config.init_from:
        result.extra["fine_tuned_from"] = str(config.init_from)
    corrected = corrections_seen(samples)
    if corrected:
        result.extra["corrections_seen"] = corrected
    metrics: dict[str, Any] = {}
    if val_samples:
        report = evaluate(result.model, val_samples, "true" if result.model.uses_ratio else None,
                          progress=progress, should_stop=should_stop)
        setting = "true ratio" if result.model.uses_ratio else "no ratio"
        metrics = {f"{m} (validation, {setting})": report[m] for m in ("miou", "mean_dice", "accuracy", "mciou")}
    return result.save(Path(out_dir) / "model", metrics=metrics), metrics

