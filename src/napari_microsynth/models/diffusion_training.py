"""Training loop for the diffusion denoisers, and random training tiles from annotated micrographs.

:func:`train_denoiser` knows nothing about what is diffused: a caller hands it a ``next_batch(rng)``
function returning a :class:`DenoiserBatch` (target channels in [-1, 1], an optional global condition
vector, optional clean context channels). PF-DiffSeg diffuses ``[image, mask]`` with a fraction vector;
a mask-only stage diffuses the mask; an image stage diffuses the image with the mask as context.

Loop (paper 000, Table A2 and eq. 3): noise-prediction loss MSE + lambda * L1 (lambda = 1, Table A1),
AdamW at lr 1e-4 with a cosine learning-rate schedule, DDPM forward process with the model's (cosine)
noise schedule. Our additions: condition dropout for classifier-free guidance, EMA weights (used for
sampling and saved), gradient clipping, checkpoints with exact resume, and ``accelerate`` so several
GPUs are a launch flag away; mixed precision only on GPU. Checkpoints hold safetensors weights, a
``weights_only`` training state and JSON (:mod:`.checkpoint`), so resuming never unpickles code.

Randomness is derived from ``(seed, step, process)`` at every step, so a resumed run draws exactly the
batches and noise the uninterrupted run would have drawn.

This module sits with the models (not in ``engines``) because generators train their own networks and
imports only point downwards (core <- models/generators <- engines).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.options import option
from ..core.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from ..core.sample import Sample
from ..core.schema import PhaseSchema
from .checkpoint import read_checkpoint_files, write_checkpoint_files
from .diffusion import Denoiser, training_scheduler

TRAINER_STATE = "trainer_state.json"
MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")


@dataclass
class DiffusionTrainConfig:
    """Settings of the denoiser training loop.

    steps: total optimisation steps (a resumed run continues up to this number).
    learning_rate / lr_schedule: 1e-4 with a cosine schedule (paper 000, Table A2; the table's "Scheduler:
        Cosine" may mean the learning-rate or the noise schedule, so we use cosine for both), after
        ``lr_warmup_steps`` of linear warm-up.
    l1_weight: lambda of the MSE + lambda * L1 noise loss (paper 000, eq. 3; lambda = 1 was best, Table A1).
    condition_dropout: probability that a sample's condition is replaced by the null (all-zero) condition,
        which enables classifier-free guidance at sampling time (not in paper 000; 0 switches it off).
    ema_decay: decay of the exponential moving average of the weights used for sampling.
    mixed_precision: "auto" (bf16/fp16 on CUDA, none elsewhere), "no", "fp16", "bf16" (GPU only).
    checkpoint_dir / checkpoint_every / keep_checkpoints / resume: periodic checkpoints
        (``checkpoint-<step>`` folders) and whether to continue from the newest one.
    """

    steps: int = option(10_000, "optimisation steps (a resumed run continues up to this number)", low=1)
    batch_size: int = option(16, "training tiles per step", low=1)
    learning_rate: float = option(1e-4, "AdamW learning rate (paper 000: 1e-4)", low=0)
    lr_schedule: str = option("cosine", "learning-rate schedule after the warm-up", choices=("cosine", "constant"))
    lr_warmup_steps: int = option(500, "steps of linear learning-rate warm-up", low=0)
    weight_decay: float = option(1e-2, "AdamW weight decay", low=0, advanced=True)
    l1_weight: float = option(1.0, "lambda of the MSE + lambda * L1 noise loss (paper 000: 1)", low=0)
    condition_dropout: float = option(0.1, "share of tiles trained without their condition (classifier-free "
                                           "guidance; 0 = off, as in paper 000)", low=0, high=1)
    ema_decay: float = option(0.9999, "decay of the weights' moving average used for sampling", low=0, high=1,
                              advanced=True)
    grad_clip: float = option(1.0, "gradient norm clipping", low=0, advanced=True)
    mixed_precision: str = option("auto", "mixed precision (GPU only; auto: bf16/fp16 on CUDA)",
                                  choices=MIXED_PRECISION_CHOICES, advanced=True)
    checkpoint_dir: str | None = option(None, "folder of the periodic checkpoints (none: no checkpoints)",
                                        advanced=True)
    checkpoint_every: int = option(1000, "steps between checkpoints", low=1)
    keep_checkpoints: int = option(2, "checkpoints kept (older ones are deleted)", low=1, advanced=True)
    resume: bool = option(True, "continue from the newest checkpoint in checkpoint_dir", advanced=True)
    seed: int = option(0, "seed of the training run (tile draws, noise, condition dropout)")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {self.mixed_precision!r}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every and keep_checkpoints must be >= 1")


@dataclass
class DenoiserBatch:
    """One training batch: ``target`` (B, C, H, W) in [-1, 1] to be noised, ``condition`` (B, D) or None,
    ``context`` (B, Cc, H, W) clean channels or None."""

    target: torch.Tensor
    condition: torch.Tensor | None = None
    context: torch.Tensor | None = None


@dataclass
class TrainResult:
    """Outcome of :func:`train_denoiser`: the step reached, the loss of every step (including the steps
    before a resume), the step resumed from (None for a fresh start) and the precision used."""

    steps: int
    losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None
    mixed_precision: str = "no"

    @property
    def final_loss(self) -> float | None:
        """Mean loss over the last (up to) 50 steps."""
        return float(np.mean(self.losses[-50:])) if self.losses else None


# ---------------------------------------------------------------- training tiles


def downscale_pair(
    image: np.ndarray, mask: np.ndarray, factor: int, schema: PhaseSchema
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce an (image, mask) pair by an integer ``factor``: image by block mean, mask by drawing each
    block's class with probability equal to its share of the block (``schema.ignore_id`` counts like a
    class). Class ids stay exact and, unlike a majority vote (which erodes thin or small phases and
    needs a tie rule), the expected class fractions equal the original ones. The draws are seeded from
    the mask's content, so the same pair always gives the same result. Sides must be multiples of ``factor``.

    >>> mask = np.kron([[0, 1], [2, 3]], np.ones((2, 2), int))  # pure 2x2 blocks keep their class
    >>> downscale_pair(np.zeros((4, 4), np.float32), mask, 2, PhaseSchema.bundled("uhcs"))[1]
    array([[0, 1],
           [2, 3]])
    """
    import zlib

    h, w = image.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"cannot downscale a {h}x{w} pair by {factor}: sides must be multiples of it")
    if factor == 1:
        return image.astype(np.float32), mask.astype(np.int64)
    f = factor
    small = image.reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    n, ignore = schema.n_classes, schema.ignore_id
    labels = np.ascontiguousarray(mask if ignore is None else np.where(mask == ignore, n, mask), dtype=np.int64)
    blocks = labels.reshape(h // f, f, w // f, f).transpose(0, 2, 1, 3).reshape(h // f, w // f, f * f)
    votes = (blocks[..., None] == np.arange(n + 1)).sum(axis=2)
    below = np.cumsum(votes, axis=-1) / (f * f)  # share of the block held by classes 0..c
    draw = np.random.default_rng(zlib.crc32(labels.tobytes())).random((h // f, w // f))
    reduced = (draw[..., None] >= below).sum(axis=-1)
    if ignore is not None:
        reduced = np.where(reduced == n, ignore, reduced)
    return small.astype(np.float32), reduced.astype(np.int64)


class RandomPairTiles:
    """Random square (image, mask) training tiles cut from whole annotated micrographs.

    A crop of ``tile * downscale`` pixels is taken at a random position (larger micrographs are picked
    proportionally more often), reduced by ``downscale`` (image: block mean; mask: a class drawn per block
    in proportion to its share, see :func:`downscale_pair`, so class ids stay exact and fractions unbiased)
    and, with ``augment``, flipped and rotated by a random multiple of 90 degrees. Paper 000 (sec. 2.1, 2.2.1) cuts 256 px tiles and trains its diffusion model at 128 px,
    i.e. ``downscale=2``.

    >>> tiles = RandomPairTiles(samples, tile=64, downscale=2)       # doctest: +SKIP
    >>> images, masks = tiles.draw(np.random.default_rng(0), 8)      # doctest: +SKIP
    """

    def __init__(self, samples: Sequence[Sample], tile: int, downscale: int = 1, augment: bool = True):
        if not samples:
            raise ValueError("no training samples given")
        if tile < 1 or downscale < 1:
            raise ValueError(f"tile and downscale must be >= 1, got {tile}, {downscale}")
        self.tile, self.downscale, self.augment = int(tile), int(downscale), augment
        self.crop = self.tile * self.downscale
        self.schema = samples[0].schema
        unlabelled = [s.name for s in samples if s.mask is None]
        if unlabelled:
            raise ValueError(f"training samples need masks; these have none: {unlabelled}")
        different = [s.name for s in samples if s.schema.n_classes != self.schema.n_classes]
        if different:
            raise ValueError(f"samples {different} use a schema other than {self.schema.name!r}")
        small = [f"{s.name} {s.shape}" for s in samples if min(s.shape) < self.crop]
        if small:
            raise ValueError(
                f"micrographs smaller than the {self.crop} px crop (tile {tile} x downscale {downscale}): {small}"
            )
        for s in samples:
            self.schema.validate_mask(s.mask)
        self.samples = list(samples)
        area = np.array([(s.shape[0] - self.crop + 1) * (s.shape[1] - self.crop + 1) for s in samples], float)
        self._weights = area / area.sum()

    def draw(
        self, rng: np.random.Generator, n: int, with_sources: bool = False
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` tiles: images ``(n, tile, tile)`` float32 in [0, 1] and masks ``(n, tile, tile)`` int64;
        with ``with_sources`` also the index into ``samples`` of each tile's micrograph."""
        images = np.empty((n, self.tile, self.tile), np.float32)
        masks = np.empty((n, self.tile, self.tile), np.int64)
        sources = np.empty(n, np.int64)
        for i in range(n):
            images[i], masks[i], sources[i] = self._one(rng)
        return (images, masks, sources) if with_sources else (images, masks)

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        ignore = self.schema.ignore_id
        for _ in range(100):
            source = int(rng.choice(len(self.samples), p=self._weights))
            s = self.samples[source]
            y = int(rng.integers(0, s.shape[0] - self.crop + 1))
            x = int(rng.integers(0, s.shape[1] - self.crop + 1))
            image = s.image[y : y + self.crop, x : x + self.crop]
            mask = s.mask[y : y + self.crop, x : x + self.crop].astype(np.int64)
            if self.downscale > 1:
                image, mask = downscale_pair(image, mask, self.downscale, self.schema)
            if ignore is None or np.any(mask != ignore):
                break
        else:
            raise ValueError("could not find a training tile with labelled pixels in 100 tries")
        if self.augment:
            k = int(rng.integers(0, 4))
            image, mask = np.rot90(image, k), np.rot90(mask, k)
            if rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
        return image, mask, source


# ---------------------------------------------------------------- training loop


def _mixed_precision(choice: str, device: torch.device) -> str:
    if device.type != "cuda":
        if choice in ("fp16", "bf16"):
            raise ValueError(f"mixed precision {choice!r} is only available on a CUDA GPU, not on {device.type}")
        return "no"
    if choice == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return choice


def _accelerator(device: torch.device, mixed_precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    kwargs = dict(mixed_precision=mixed_precision, cpu=device.type == "cpu")
    try:
        return Accelerator(**kwargs)
    except ValueError as exc:
        # accelerate keeps one process-wide state; an interactive session that trains again on another
        # device or precision must reset it. Only safe (and only done) outside distributed launches.
        if "already been initialized" not in str(exc) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with a trainer state) in ``folder``, oldest first."""
    found = []
    for path in folder.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / TRAINER_STATE).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint folder under ``folder``, or None."""
    found = _checkpoints(Path(folder))
    return found[-1][1] if found else None


def commit_checkpoint(path: Path, state: dict, keep: int) -> None:
    """Complete the checkpoint folder ``path`` (``<folder>/checkpoint-<step>``) by writing its trainer state
    ``state`` last (a checkpoint without it is incomplete and ignored on resume), then drop all but the
    newest ``keep`` complete checkpoints beside it."""
    tmp = path / f".{TRAINER_STATE}.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(path / TRAINER_STATE)
    for _, old in _checkpoints(path.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resume_point(path: Path, model_key: str, model_config: dict) -> tuple[int, list[float]]:
    """Step and losses recorded in checkpoint ``path``, checking it was written for ``model_config``
    (stored under ``model_key`` by :func:`commit_checkpoint`)."""
    state = json.loads((path / TRAINER_STATE).read_text())
    if state.get(model_key) != model_config:
        raise ValueError(
            f"checkpoint {path} was written for another model configuration; "
            "use a fresh checkpoint_dir or resume=False"
        )
    return int(state["step"]), [float(v) for v in state["losses"]]


def train_denoiser(
    denoiser: Denoiser,
    next_batch: Callable[[np.random.Generator, int], DenoiserBatch],
    config: DiffusionTrainConfig,
    device: torch.device | str = "cpu",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainResult:
    """Train ``denoiser`` in place for ``config.steps`` steps; on return it holds the EMA weights.

    ``next_batch(rng, batch_size)`` returns a :class:`DenoiserBatch` (on CPU). When ``should_stop()``
    turns true a checkpoint is written (if ``config.checkpoint_dir`` is set), the EMA weights are put
    in ``denoiser`` and :class:`Cancelled` is raised, carrying the partial :class:`TrainResult` as ``.result``.
    """
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    device = torch.device(device)
    precision = _mixed_precision(config.mixed_precision, device)
    accelerator = _accelerator(device, precision)
    noise_scheduler = training_scheduler(denoiser.config)
    n_timesteps = denoiser.config.num_train_timesteps

    denoiser.train()
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(
        "cosine" if config.lr_schedule == "cosine" else "constant_with_warmup",
        optimizer,
        # accelerate steps a prepared scheduler once per process at every optimiser step
        num_warmup_steps=min(config.lr_warmup_steps, config.steps) * accelerator.num_processes,
        num_training_steps=config.steps * accelerator.num_processes,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(denoiser, optimizer, lr_scheduler)
    ema = EMAModel(accelerator.unwrap_model(model).parameters(), decay=config.ema_decay)
    run = _Run(accelerator, accelerator.unwrap_model(model), optimizer, lr_scheduler, ema)

    step, losses, resumed_from = 0, [], None
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    if ckpt_dir is not None and config.resume:
        last = latest_checkpoint(ckpt_dir)
        if last is not None:
            step, losses = run.load(last)
            resumed_from = step

    def finish() -> None:
        unwrapped = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        ema.copy_to(unwrapped.parameters())
        unwrapped.eval()
        accelerator.free_memory()

    def checkpoint() -> None:
        if ckpt_dir is not None and not (ckpt_dir / f"checkpoint-{step}" / TRAINER_STATE).is_file():
            run.save(ckpt_dir, step, losses, config.keep_checkpoints)

    process = accelerator.process_index
    progress(step, config.steps, f"resumed at step {step}" if resumed_from is not None else "training")
    while step < config.steps:
        if should_stop():
            checkpoint()
            finish()
            stopped = Cancelled(f"training stopped at step {step} of {config.steps}")
            stopped.result = TrainResult(step, losses, resumed_from, precision)  # type: ignore[attr-defined]
            raise stopped
        rng = np.random.default_rng([config.seed, step, process])
        gen = torch.Generator(device=accelerator.device).manual_seed(
            int(rng.integers(0, 2**63 - 1))
        )
        batch = next_batch(rng, config.batch_size)
        x0 = batch.target.to(accelerator.device)
        noise = torch.randn(x0.shape, generator=gen, device=accelerator.device)
        t = torch.randint(0, n_timesteps, (x0.shape[0],), generator=gen, device=accelerator.device)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        condition = None if batch.condition is None else batch.condition.to(accelerator.device)
        if condition is not None and config.condition_dropout > 0:
            keep = torch.rand(x0.shape[0], generator=gen, device=accelerator.device) >= config.condition_dropout
            condition = condition * keep[:, None].to(condition.dtype)
        context = None if batch.context is None else batch.context.to(accelerator.device)

        pred = model(noisy, t, condition=condition, context=context).float()
        loss = F.mse_loss(pred, noise) + config.l1_weight * F.l1_loss(pred, noise)
        accelerator.backward(loss)
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(model).parameters())

        step += 1
        losses.append(float(loss.detach()))
        progress(step, config.steps, f"step {step}/{config.steps}  loss {losses[-1]:.4f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            checkpoint()
    finish()
    return TrainResult(steps=step, losses=losses, resumed_from=resumed_from, mixed_precision=precision)


@dataclass
class _Run:
    """What a checkpoint holds: the (unwrapped) denoiser, optimiser, learning-rate schedule and EMA."""

    accelerator: Any
    denoiser: Denoiser
    optimizer: Any
    lr_scheduler: Any
    ema: Any

    def save(self, folder: Path, step: int, losses: list[float], keep: int) -> None:
        path, acc = folder / f"checkpoint-{step}", self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            names = [name for name, _ in self.denoiser.named_parameters()]
            ema = self.ema.state_dict()
            write_checkpoint_files(
                path,
                {"denoiser": self.denoiser.state_dict(), "ema": dict(zip(names, ema.pop("shadow_params")))},
                {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
                 "ema": ema, "scaler": None if acc.scaler is None else acc.scaler.state_dict()},
            )
            commit_checkpoint(path, {"step": step, "losses": losses, "denoiser": self.denoiser.config.to_dict()}, keep)
        acc.wait_for_everyone()

    def load(self, path: Path) -> tuple[int, list[float]]:
        step, losses = resume_point(path, "denoiser", self.denoiser.config.to_dict())
        weights, training = read_checkpoint_files(path, ("denoiser", "ema"), self.accelerator.device)
        self.denoiser.load_state_dict(weights["denoiser"])
        names = [name for name, _ in self.denoiser.named_parameters()]
        self.ema.load_state_dict({**training["ema"], "shadow_params": [weights["ema"][n] for n in names]})
        self.optimizer.load_state_dict(training["optimizer"])
        self.lr_scheduler.load_state_dict(training["lr_scheduler"])
        if self.accelerator.scaler is not None and training["scaler"] is not None:
            self.accelerator.scaler.load_state_dict(training["scaler"])
        return step, losses
