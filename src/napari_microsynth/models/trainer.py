"""One training loop for every model: accelerate, a shardable data loader, checkpoints with exact resume,
a moving average of the weights, progress from the main process, cancel.

A model family describes its training as a :class:`Recipe`: its modules and optimisers, ``draw(rng)`` (one
step's batch, on the CPU, from a seeded generator), ``step(run, batch)`` (one optimisation step, a loss or
a GAN's critic and generator updates, each through :meth:`Run.update`) and the identity a checkpoint must
match to be resumed. :func:`train` does the rest:

- one ``accelerate.Accelerator`` per process (:func:`process_accelerator`); mixed precision only on a GPU;
- a ``DataLoader`` over step indices that accelerate shards: with N processes, process p trains step s on
  the batch drawn from ``rng(seed, s, p)``, and the history holds the mean over processes;
- ``checkpoint-<step>`` folders (:mod:`.checkpoint`: safetensors weights, a ``weights_only`` training state,
  ``trainer_state.json`` written last) and exact resume: every random draw derives from (seed, step,
  process), so a resumed run draws what the uninterrupted run would have drawn;
- an exponential moving average of chosen modules, put into them when training ends;
- progress and files from the main process only, the progress message giving the time left once two
  steps after the first have been timed; ``should_stop()`` (any process may ask) writes a checkpoint and
  raises :class:`Cancelled` carrying the partial :class:`TrainResult` as ``.result``.

>>> recipe = Recipe({"net": net}, {"net": opt}, draw=lambda rng: ..., step=lambda run, batch: {...})  # doctest: +SKIP
>>> train(recipe, LoopSettings(steps=100, device="cpu")).final_loss                                  # doctest: +SKIP
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from .checkpoint import (
    TRAINER_STATE,
    commit_checkpoint,
    latest_checkpoint,
    read_checkpoint_files,
    read_trainer_state,
    write_checkpoint_files,
)

MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")

_process_accelerator: Any = None


@dataclass
class LoopSettings:
    """What every training shares. ``device``: a resolved torch device (not "auto"); ``mixed_precision``:
    one of :data:`MIXED_PRECISION_CHOICES`; ``checkpoint_dir`` None writes no checkpoints;
    ``validate_every`` > 0 runs the ``validate`` callback of :func:`train` every that many steps and at the end."""

    steps: int
    seed: int = 0
    device: torch.device | str = "cpu"
    mixed_precision: str = "auto"
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    resume: bool = True
    validate_every: int = 0


@dataclass
class Recipe:
    """A family's training: ``modules`` and ``optimizers`` by name (checkpointed under those names),
    ``draw(rng)`` -> one batch, ``step(run, batch)`` -> logged values with at least ``"loss"``, the
    JSON-able ``identity`` a resumed checkpoint must match, learning-rate ``schedulers`` (stepped once per
    step) and the modules whose moving average (``ema_decay``) they hold when training ends."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    draw: Callable[[np.random.Generator], Any]
    step: Callable[["Run", Any], dict[str, float]]
    identity: dict[str, Any] = field(default_factory=dict)
    schedulers: dict[str, Any] = field(default_factory=dict)
    ema: tuple[str, ...] = ()
    ema_decay: float = 0.9999


@dataclass
class TrainResult:
    """Outcome of a training: the step reached, the logged values of every step (``{"step", "loss", ...}``,
    including the steps before a resume), the step resumed from (None for a fresh start), the precision."""

    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    mixed_precision: str = "no"

    @property
    def losses(self) -> list[float]:
        """The loss of every step."""
        return [h["loss"] for h in self.history]

    @property
    def final_loss(self) -> float | None:
        """Mean loss over the last (up to) 50 steps."""
        return float(np.mean(self.losses[-50:])) if self.history else None


@dataclass
class Run:
    """What a recipe's ``step`` works with: the process's accelerator, the prepared modules and optimisers."""

    accelerator: Any
    modules: dict[str, nn.Module]
    optimizers: dict[str, Any]

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def unwrap(self, name: str) -> nn.Module:
        """The module ``name`` without its distributed wrapper."""
        return self.accelerator.unwrap_model(self.modules[name])

    def update(self, name: str, loss: torch.Tensor, clip: float = 0.0) -> None:
        """One step of optimiser ``name`` on ``loss`` (gradients clipped to norm ``clip`` when > 0)."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if clip > 0:
            self.accelerator.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
        optimizer.step()


class MovingAverage:
    """Exponential moving average of a module's parameters (buffers copied), warmed up like diffusers'
    ``EMAModel``: update ``n`` (from 0) uses decay ``min(decay, (1 + n) / (10 + n))``, the first copies."""

    def __init__(self, module: nn.Module, decay: float):
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        n, self.updates = self.updates, self.updates + 1
        decay = 0.0 if n == 0 else min(self.decay, (1 + n) / (10 + n))
        for average, param in zip(self.module.parameters(), module.parameters()):
            average.lerp_(param.detach(), 1.0 - decay)
        for average, buffer in zip(self.module.buffers(), module.buffers()):
            average.copy_(buffer)


# ---------------------------------------------------------------- accelerate


def resolve_precision(choice: str, device: torch.device) -> str:
    """The mixed precision ``choice`` means on ``device``: "auto" is bf16 (fp16 without bf16) on CUDA and
    "no" elsewhere; fp16/bf16 off CUDA raise."""
    if choice not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {choice!r}")
    if device.type != "cuda":
        if choice in ("fp16", "bf16"):
            raise ValueError(f"mixed precision {choice!r} is only available on a CUDA GPU, not on {device.type}")
        return "no"
    if choice == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return choice


def process_accelerator(device: torch.device, precision: str):
    """The process's one ``Accelerator``, made by the first training and reused by every later one.

    accelerate keeps one device and precision per process (set by ``accelerate launch`` or the first
    accelerator), so a training that asks for another device type or precision raises ``ValueError``.
    Distributed modules allow parameters a step leaves unused (a condition branch fed nothing, a PLM
    ratio input that was dropped).
    """
    global _process_accelerator
    if _process_accelerator is None:
        from accelerate import Accelerator, DistributedDataParallelKwargs

        unused = DistributedDataParallelKwargs(find_unused_parameters=True)
        try:
            _process_accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=precision,
                                               kwargs_handlers=[unused])
        except ValueError as exc:  # accelerate was set up in this process before, with other settings
            raise ValueError(f"cannot train on {device.type} with mixed precision {precision!r}: {exc}") from exc
    acc = _process_accelerator
    if acc.device.type != device.type or acc.mixed_precision != precision:
        raise ValueError(
            f"this process trains on {acc.device.type} with mixed precision {acc.mixed_precision!r}; accelerate "
            f"keeps one device and precision per process, so training on {device.type} with {precision!r} "
            "needs a new process (restart the program or napari), or keep the earlier device and precision"
        )
    return acc


class _Draws(torch.utils.data.Dataset):
    """Item ``i`` is the batch process ``i % n`` trains at step ``i // n``, drawn from rng(seed, step, process)."""

    def __init__(self, draw: Callable[[np.random.Generator], Any], seed: int, processes: int):
        self.draw, self.seed, self.processes = draw, seed, processes

    def __getitem__(self, index: int) -> Any:
        step, process = divmod(index, self.processes)
        return self.draw(np.random.default_rng([self.seed, step, process]))


def _only(items: list[Any]) -> Any:
    return items[0]


def step_loader(accelerator: Any, draw: Callable[[np.random.Generator], Any], seed: int, start: int, steps: int):
    """A data loader of the batches for steps ``start .. steps - 1``, sharded by accelerate: each process gets
    every n-th item, i.e. its own batch of each step. Batches stay on the CPU (``step`` places them)."""
    n = accelerator.num_processes
    loader = torch.utils.data.DataLoader(
        _Draws(draw, seed, n), batch_size=1, sampler=range(start * n, steps * n), collate_fn=_only
    )
    return accelerator.prepare_data_loader(loader, device_placement=False)


def _stop_requested(accelerator: Any, should_stop: StopFn) -> bool:
    """``should_stop()`` of this process, or of any process in a distributed run (all stop together)."""
    wanted = bool(should_stop())
    if accelerator.num_processes == 1:
        return wanted
    flag = torch.tensor([float(wanted)], device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum").item() > 0)


def _mean_over_processes(accelerator: Any, logs: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return {k: float(v) for k, v in logs.items()}
    values = torch.tensor([float(v) for v in logs.values()], dtype=torch.float64, device=accelerator.device)
    return dict(zip(logs, accelerator.reduce(values, "mean").tolist()))


def _average_buffers(accelerator: Any, module: nn.Module) -> None:
    """Make batch-norm statistics (updated from each process's own batches) equal on all processes."""
    if accelerator.num_processes > 1:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.copy_(accelerator.reduce(buffer.detach(), "mean"))


# ---------------------------------------------------------------- checkpoints


@dataclass
class _State:
    """Everything a checkpoint holds besides the step and history."""

    run: Run
    averages: dict[str, MovingAverage]
    schedulers: dict[str, Any]
    identity: dict[str, Any]

    def save(self, folder: Path, step: int, history: list[dict[str, float]], keep: int) -> None:
        """Write ``folder/checkpoint-<step>`` from the main process (unless it is there already)."""
        path, acc = folder / f"checkpoint-{step}", self.run.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process and not (path / TRAINER_STATE).is_file():
            weights = {name: self.run.unwrap(name).state_dict() for name in self.run.modules}
            weights.update({f"{name}_ema": avg.module.state_dict() for name, avg in self.averages.items()})
            write_checkpoint_files(path, weights, {
                "optimizers": {name: opt.state_dict() for name, opt in self.run.optimizers.items()},
                "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
                "ema_updates": {name: avg.updates for name, avg in self.averages.items()},
                "scaler": None if acc.scaler is None else acc.scaler.state_dict(),
            })
            commit_checkpoint(path, {"step": step, "history": history, "identity": self.identity}, keep)
        acc.wait_for_everyone()

    def load(self, path: Path) -> tuple[int, list[dict[str, float]]]:
        """Restore checkpoint ``path``; returns its step and history."""
        saved = read_trainer_state(path, self.identity)
        names = [*self.run.modules, *(f"{name}_ema" for name in self.averages)]
        weights, state = read_checkpoint_files(path, names, self.run.device)
        for name in self.run.modules:
            self.run.unwrap(name).load_state_dict(weights[name])
        for name, avg in self.averages.items():
            avg.module.load_state_dict(weights[f"{name}_ema"])
            avg.updates = int(state["ema_updates"][name])
        for name, optimizer in self.run.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        if self.run.accelerator.scaler is not None and state["scaler"] is not None:
            self.run.accelerator.scaler.load_state_dict(state["scaler"])
        return int(saved["step"]), list(saved["history"])


# ---------------------------------------------------------------- the loop


def _prepare(recipe: Recipe, settings: LoopSettings) -> _State:
    """Modules on the process's device with their moving averages, prepared by its accelerator."""
    device = torch.device(settings.device)
    accelerator = process_accelerator(device, resolve_precision(settings.mixed_precision, device))
    for module in recipe.modules.values():
        module.to(accelerator.device).train()
    averages = {name: MovingAverage(recipe.modules[name], recipe.ema_decay) for name in recipe.ema}
    prepared = accelerator.prepare(*recipe.modules.values(), *recipe.optimizers.values())
    k = len(recipe.modules)
    run = Run(accelerator, dict(zip(recipe.modules, prepared[:k])), dict(zip(recipe.optimizers, prepared[k:])))
    return _State(run, averages, recipe.schedulers, recipe.identity)


def _finish(state: _State) -> None:
    """Put the moving averages into their modules, equalise buffers across processes, evaluation mode."""
    acc = state.run.accelerator
    for name in state.run.modules:
        module = acc.unwrap_model(state.run.modules[name], keep_fp32_wrapper=False)
        if name in state.averages:
            module.load_state_dict(state.averages[name].module.state_dict())
        _average_buffers(acc, module)
        module.eval()


def train(
    recipe: Recipe,
    settings: LoopSettings,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    on_step: Callable[[dict[str, float]], None] | None = None,
    validate: Callable[[Run], dict[str, float]] | None = None,
) -> TrainResult:
    """Train ``recipe`` for ``settings.steps`` steps (continuing from the newest checkpoint in
    ``settings.checkpoint_dir`` with ``settings.resume``); the recipe's modules are trained in place.
    ``on_step`` receives each step's record (step and losses) on the main process, e.g. for a live plot.
    ``validate(run)`` (main process, modules in eval mode, no gradients) returns scores that are added to
    the record of every ``settings.validate_every``-th step and of the last step, so they are checkpointed
    with the losses and reach ``on_step``.

    ``should_stop()`` is asked before every step; when it turns true a checkpoint is written (with a
    checkpoint folder), the modules get their moving averages and :class:`Cancelled` is raised with the
    partial :class:`TrainResult` as ``.result``.
    """
    state = _prepare(recipe, settings)
    try:
        return _loop(recipe, settings, state, progress, should_stop, on_step, validate)
    finally:
        state.run.accelerator.free_memory()  # the accelerator serves later trainings: let go of this one


def _validated(run: Run, validate: Callable[[Run], dict[str, float]]) -> dict[str, float]:
    """``validate(run)`` with every module in eval mode and no gradients, training mode restored after."""
    modes = {name: module.training for name, module in run.modules.items()}
    for module in run.modules.values():
        module.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in validate(run).items()}
    finally:
        for name, module in run.modules.items():
            module.train(modes[name])


def time_left(seconds: float) -> str:
    """An estimate of the time a training still needs, in words.

    >>> time_left(40), time_left(300), time_left(9000)
    ('about 40 s left', 'about 5 min left', 'about 2.5 h left')
    """
    if seconds < 90:
        return f"about {round(seconds)} s left"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


def _loop(recipe: Recipe, settings: LoopSettings, state: _State, progress: ProgressFn,
          should_stop: StopFn, on_step: Callable[[dict[str, float]], None] | None = None,
          validate: Callable[[Run], dict[str, float]] | None = None) -> TrainResult:
    """The steps of :func:`train`, from the newest checkpoint (with ``settings.resume``) on."""
    acc, run = state.run.accelerator, state.run
    folder = Path(settings.checkpoint_dir) if settings.checkpoint_dir else None
    step, history, resumed_from = 0, [], None
    if folder is not None and settings.resume and (last := latest_checkpoint(folder)) is not None:
        step, history = state.load(last)
        resumed_from = step

    def result() -> TrainResult:
        return TrainResult(step, history, resumed_from, acc.mixed_precision)

    batches = iter(step_loader(acc, recipe.draw, settings.seed, step, settings.steps))
    timed_from: tuple[int, float] | None = None  # the step after which the clock runs (the first one sets up)
    while step < settings.steps:
        if _stop_requested(acc, should_stop):
            if folder is not None:
                state.save(folder, step, history, settings.keep_checkpoints)
            _finish(state)
            stopped = Cancelled(f"training stopped at step {step} of {settings.steps}"
                                + ("" if folder is None else f"; run it again to resume from {folder}"))
            stopped.result = result()  # type: ignore[attr-defined]
            raise stopped
        logs = recipe.step(run, next(batches))
        for scheduler in state.schedulers.values():
            scheduler.step()
        for name, average in state.averages.items():
            average.update(run.unwrap(name))
        step += 1
        history.append({"step": step, **_mean_over_processes(acc, logs)})
        every = settings.validate_every
        if validate is not None and every > 0 and acc.is_main_process and (step % every == 0 or step == settings.steps):
            history[-1].update(_validated(run, validate))
        if acc.is_main_process:
            now = monotonic()
            timed_from = timed_from or (step, now)
            timed = step - timed_from[0]
            left = (f"  {time_left((now - timed_from[1]) / timed * (settings.steps - step))}"
                    if timed >= 2 and step < settings.steps else "")
            progress(step, settings.steps, f"step {step}/{settings.steps}  loss {history[-1]['loss']:.4f}{left}")
            if on_step is not None:
                on_step(history[-1])
        if folder is not None and (step % settings.checkpoint_every == 0 or step == settings.steps):
            state.save(folder, step, history, settings.keep_checkpoints)
    _finish(state)
    return result()
