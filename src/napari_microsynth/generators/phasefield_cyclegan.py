"""Paper 003's generator: a phase-field grain structure, painted as a micrograph by a CycleGAN.

A pair is made in three steps (paper 003, Fig. 1):

1. **Simulate** a grain structure: a regularised Voronoi tessellation evolved by multi-order-parameter
   Allen-Cahn grain growth (:mod:`~napari_microsynth.models.phase_field`, eq. 1-3), on a periodic
   ``resolution`` x ``resolution`` px grid.
2. **Render it untextured**: the eq. 3 image ``phi = sum eta_i^2`` (bright grains, darker diffuse
   boundaries), stretched by the fixed map ``(phi - 0.4) / 0.6`` into [0, 1] and quantised to 8 bits.
3. **Translate** the untextured image with the CycleGAN's sim -> real generator ``F``
   (:mod:`~napari_microsynth.models.cyclegan`), trained on these renderings and unlabelled real micrographs.

The mask is the simulation's own grain-boundary map (pixels with a 4-neighbour in another grain, 2 px wide,
as the Fast-FineCut iron masks): class ``boundary`` of the schema on those pixels, class ``grain``
elsewhere (the bundled ``grains`` schema; a schema without those names gets class 1 for boundaries and 0 for
grains). ``instances`` holds the simulated grains (1..N; a grain cut by the image edge gives one instance per
piece); ``provenance.extra["simulation"]`` the simulator settings and seed, and, with the sampling option
``untextured`` (on by default), the untextured image the translator was given as the pair's companion image
(:data:`~napari_microsynth.core.sample.COMPANIONS`, a PNG data URI of about 25 kB at 256 px, which
:func:`untextured_image` decodes), so a preview shows simulation, micrograph and mask side by side from the
one Sample.

**Why a "properties" condition.** The user sets what the simulator is given: the grain count of the
tessellation (``grains``), the Allen-Cahn steps (``growth_steps``) and the Voronoi ``regularity`` (the
grain-size spread: 0 = Poisson Voronoi, widest; 0.75 = nearly hexagonal). These are named continuous values
with ranges, which is what :class:`~napari_microsynth.generators.base.ConditionSpec` kind "properties" is, so
the Synthesis widget builds one spin box per parameter and its seed box sets the structure (the pair's seed
is the simulation's seed) without any widget change; kind "none" with these as sampling options would put
them among the sampler's settings, where the widget's "generate with these conditions" and the recorded
``provenance.condition`` would say nothing of them. The ranges are those the translator was trained on
(structures are drawn uniformly inside them), so a condition outside them is refused with the range named:
the translator has never seen such a structure. ``conditions=None`` draws each pair's parameters uniformly
inside the ranges from its seed (the training distribution), for diverse training sets.

Presets: ``tiny`` (tests: 32 px, a few grains), ``small`` (a CPU: 256 px, 50-90 grains, CycleGAN with 16
base channels and 4 residual blocks), ``paper`` (paper 003: 512 px, about 112 grains, 1000 steps, the
ResNet-9 CycleGAN of 11.4 M parameters; for a GPU).

>>> gen = PhaseFieldCycleGAN(PhaseSchema.bundled("grains"), "tiny", device="cpu")
>>> [p.name for p in gen.condition_spec.properties]
['grains', 'growth_steps', 'regularity']
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..core.grains import grain_boundary_ids
from ..core.microstructure import MAX_REGULARITY, GrainGrowthSettings
from ..core.options import option
from ..core.progress import Cancelled, ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import COMPANIONS, Provenance, Sample, companion_images, encode_png
from ..core.schema import PhaseSchema
from ..models.cyclegan import (
    CycleGANConfig,
    CycleGANTrainConfig,
    build_cyclegan,
    parameter_count,
    train_cyclegan,
    translate,
)
from ..models.device import resolve_device
from ..models.folder import load_weights
from ..models.phase_field import simulate
from . import register_generator
from .base import ConditionSpec, Generator, PropertyRange, TrainingRecord, tile_pixel_size

#: the fixed grey map of the untextured rendering: phi (eq. 3) from PHI_DARK (and below) to 1 -> 0 to 1
PHI_DARK = 0.4
#: the companion image name of the untextured simulation a pair was translated from
UNTEXTURED = "untextured simulation"
PROPERTY_NAMES = ("grains", "growth_steps", "regularity")
UNITS = {"grains": "grains", "growth_steps": "steps", "regularity": ""}

#: per preset: structure size, CycleGAN size, training crop, structures, and the simulator ranges
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(resolution=512, cyclegan="paper", crop=256, structures=300,
                  ranges={"grains": (100, 124), "growth_steps": (1000, 1000), "regularity": (0.5, 0.7)}),
    "small": dict(resolution=256, cyclegan="small", crop=128, structures=60,
                  ranges={"grains": (50, 90), "growth_steps": (200, 1000), "regularity": (0.0, 0.6)}),
    "tiny": dict(resolution=32, cyclegan="tiny", crop=32, structures=4,
                 ranges={"grains": (6, 10), "growth_steps": (10, 30), "regularity": (0.3, 0.6)}),
}


def render_untextured(phi: np.ndarray) -> np.ndarray:
    """The untextured image of a structure: eq. 3's ``phi`` mapped linearly from [PHI_DARK, 1] to [0, 1],
    clipped and quantised to 8 bits (as the simulator's time series stores phi), float32.

    >>> render_untextured(np.array([[1.0, 0.7, 0.2]])).tolist()
    [[1.0, 0.5019607543945312, 0.0]]
    """
    grey = np.clip((np.asarray(phi, np.float64) - PHI_DARK) / (1.0 - PHI_DARK), 0.0, 1.0)
    return (np.round(grey * 255.0) / 255.0).astype(np.float32)


def untextured_image(pair: Sample) -> np.ndarray | None:
    """The untextured simulation a ``phasefield-cyclegan`` pair was translated from (float32, [0, 1]),
    None when the pair does not carry it (another family, or sampled with ``untextured=False``)."""
    return companion_images(pair).get(UNTEXTURED)


def reduce_image(image: np.ndarray, factor: int) -> np.ndarray:
    """A grey image reduced ``factor`` times by block means (the last rows / columns that do not fill a
    block are dropped)."""
    if factor == 1:
        return np.asarray(image, np.float32)
    h, w = (s - s % factor for s in image.shape)
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3)).astype(np.float32)


@dataclass
class PhaseFieldCycleGANTrainConfig:
    """Training settings: the simulated structures (domain Y) and the CycleGAN (defaults: the CycleGAN
    paper's batch size 1, lr 2e-4, lambda_cycle 10, lambda_identity 0.5). Ranges left at auto are the
    preset's (``PRESETS``); they become the model's condition ranges."""

    steps: int = option(5000, "CycleGAN steps (one generator and one critic update each)", low=1)
    batch_size: int = option(1, "crops of each domain per step (CycleGAN paper: 1)", low=1)
    crop: int | None = option(None, "side of the training crops in px, a multiple of 4 (auto: the preset's; "
                                     "at most the structure size and the reduced micrographs)", low=4)
    structures: int | None = option(None, "simulated structures the translator learns from (auto: the preset's; "
                                           "paper 003: 300)", low=1)
    downscale: int = option(2, "the real micrographs are reduced this many times, so their grains have the "
                               "simulated grains' size in px (pairs are at that scale)", low=1)
    grains_low: int | None = option(None, "fewest grains of a structure's tessellation (auto: the preset's)", low=1)
    grains_high: int | None = option(None, "most grains of a structure's tessellation (auto: the preset's)", low=1)
    growth_steps_low: int | None = option(None, "fewest Allen-Cahn steps (auto: the preset's)", low=0)
    growth_steps_high: int | None = option(None, "most Allen-Cahn steps (auto: the preset's)", low=0)
    regularity_low: float | None = option(None, "lowest Voronoi regularity (0: Poisson, widest size spread; "
                                                 "auto: the preset's)", low=0.0, high=MAX_REGULARITY)
    regularity_high: float | None = option(None, "highest Voronoi regularity (auto: the preset's)", low=0.0,
                                           high=MAX_REGULARITY)
    lr: float = option(2e-4, "Adam learning rate of generators and critics, constant for half the steps, then "
                             "linearly to 0", low=0)
    lambda_cycle: float = option(10.0, "weight of the cycle-consistency loss", low=0)
    lambda_identity: float = option(0.5, "weight of the identity loss, relative to lambda_cycle", low=0)
    checkpoint_dir: str | None = option(None, "folder for checkpoints; a rerun resumes", advanced=True)
    checkpoint_every: int = option(1000, "steps between checkpoints", low=1, advanced=True)
    keep_checkpoints: int = option(2, "checkpoints kept", low=1, advanced=True)
    resume: bool = option(True, "continue from the newest checkpoint", advanced=True)
    seed: int = option(0, "seed of the structures and the training draws", low=0, advanced=True)

    def ranges(self, preset: str) -> dict[str, tuple[float, float]]:
        """The simulator ranges of this training: given ones over the preset's, checked."""
        defaults = PRESETS[preset]["ranges"]
        out = {}
        for name in PROPERTY_NAMES:
            low = getattr(self, f"{name}_low")
            high = getattr(self, f"{name}_high")
            low = defaults[name][0] if low is None else low
            high = defaults[name][1] if high is None else high
            if low > high:
                raise ValueError(f"{name}_low {low} is above {name}_high {high}")
            out[name] = (low, high)
        return out


@dataclass
class PhaseFieldCycleGANSampling:
    """Sampling options."""

    untextured: bool = option(True, "keep the untextured simulation (the image the translator was given) in each "
                                    "pair's provenance as a PNG, for previews (about 25 kB a pair at 256 px)")


@register_generator
class PhaseFieldCycleGAN(Generator):
    """Phase-field grain structure translated into a micrograph by a CycleGAN (paper 003)."""

    name = "phasefield-cyclegan"
    version = "1"
    description = "Phase-field grain-growth structure, painted as a micrograph by a CycleGAN; mask = its boundaries"
    presets = tuple(PRESETS)
    TrainConfig = PhaseFieldCycleGANTrainConfig
    SamplingConfig = PhaseFieldCycleGANSampling

    def __init__(self, schema: PhaseSchema, preset: str = "small", device: str = "auto", seed: int = 0):
        super().__init__(schema, preset, device, seed)
        if schema.n_classes < 2:
            raise ValueError(f"{self.name} makes grain / boundary masks; schema {schema.name!r} has one class")
        settings = PRESETS[preset]
        self._build(CycleGANConfig.preset(settings["cyclegan"]), int(settings["resolution"]),
                    dict(settings["ranges"]), seed)

    def _build(self, config: CycleGANConfig, resolution: int, ranges: dict[str, tuple[float, float]],
               seed: int) -> None:
        if resolution % 4:
            raise ValueError(f"structure size {resolution} must be a multiple of 4 (the CycleGAN's)")
        self.device = resolve_device(self.device)
        self._resolution = resolution
        self._ranges = {name: (float(low), float(high)) for name, (low, high) in ranges.items()}
        #: the sim -> real generator F of the CycleGAN (its other networks exist only while training)
        self.translator = build_cyclegan(config, seed=seed)["F"].to(self.device).eval()
        self.cyclegan_config = config

    @property
    def condition_spec(self) -> ConditionSpec:
        return ConditionSpec.of_properties([PropertyRange(name, low, high, UNITS[name])
                                            for name, (low, high) in self._ranges.items()])

    @property
    def resolution(self) -> int:
        return self._resolution

    # ------------------------------------------------------------ the simulator

    def simulator_settings(self, condition: dict[str, float]) -> GrainGrowthSettings:
        """The simulator settings of a (validated) condition: grain count and steps rounded."""
        return GrainGrowthSettings(grains=int(round(condition["grains"])), size=self._resolution,
                                   steps=int(round(condition["growth_steps"])),
                                   regularity=float(condition["regularity"]), snapshot_every=0)

    def random_condition(self, seed: int) -> dict[str, float]:
        """Simulator parameters drawn uniformly inside the ranges from ``seed`` (grain count and steps whole)."""
        rng = np.random.default_rng([int(seed), 3])
        out = {}
        for name, (low, high) in self._ranges.items():
            if name == "regularity":
                out[name] = float(rng.uniform(low, high))
            else:
                out[name] = float(rng.integers(int(np.ceil(low)), int(np.floor(high)) + 1))
        return out

    def plausible_conditions(self, n: int, seed: int = 0) -> list[dict[str, float]]:
        """``n`` conditions the translator was trained for (:meth:`random_condition` of ``seed``, ``seed + 1``,
        ...): grain counts and steps whole, unlike the base class's draw."""
        return [self.random_condition(int(seed) + i) for i in range(n)]

    # ------------------------------------------------------------ training

    def train(
        self,
        samples: list[Sample],
        config: PhaseFieldCycleGANTrainConfig | None = None,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> dict[str, Any]:
        """Simulate ``structures`` structures inside the ranges, then train the CycleGAN between their
        untextured images and the real micrographs (reduced ``downscale`` times; their masks are not used).

        Progress runs over both (``structures + steps``). Returns ``{"steps", "final_loss", "stages"}``; the
        final loss is the generators' total (mean of the last 50 steps).
        """
        config = self.TrainConfig() if config is None else config
        if not isinstance(config, self.TrainConfig):
            raise TypeError(f"{self.name} takes a {self.TrainConfig.__name__}, got {type(config).__name__}")
        if not samples:
            raise ValueError("no real micrographs given (the translator learns their appearance; masks unused)")
        preset = PRESETS[self.preset]
        ranges = config.ranges(self.preset)
        structures = config.structures or preset["structures"]
        crop = config.crop or min(preset["crop"], self._resolution)
        real = [reduce_image(s.image, config.downscale) for s in samples]
        small = [f"{s.name} ({r.shape[1]}x{r.shape[0]} px reduced)"
                 for s, r in zip(samples, real) if min(r.shape) < crop]
        if crop % 4 or crop > self._resolution or small:
            raise ValueError(f"the {crop} px training crop must be a multiple of 4, at most the {self._resolution} px "
                             "structures and fit in every reduced micrograph"
                             + (f" (too small: {small})" if small else ""))
        self._ranges = {name: (float(low), float(high)) for name, (low, high) in ranges.items()}
        self.model_checksum = ""
        self.pixel_size_um = tile_pixel_size(samples, config.downscale)
        total = structures + config.steps
        simulated = []
        for i in range(structures):
            check_stop(should_stop)
            condition = self.random_condition(int(np.random.default_rng([config.seed, i]).integers(2**31)))
            result = simulate(self.simulator_settings(condition), seed=config.seed * 100_003 + i,
                              device=str(self.device), should_stop=should_stop)
            simulated.append(render_untextured(result.phi))
            progress(i + 1, total, f"simulated structure {i + 1}/{structures}")
        modules = build_cyclegan(self.cyclegan_config, seed=config.seed)
        cycle = CycleGANTrainConfig(
            steps=config.steps, batch_size=config.batch_size, crop=crop, lr=config.lr, lambda_cycle=config.lambda_cycle,
            lambda_identity=config.lambda_identity, checkpoint_every=config.checkpoint_every,
            checkpoint_dir=None if config.checkpoint_dir is None else str(Path(config.checkpoint_dir) / "cyclegan"),
            keep_checkpoints=config.keep_checkpoints, resume=config.resume, seed=config.seed)
        settings = {"resolved_ranges": {k: list(v) for k, v in ranges.items()}, "resolved_structures": structures,
                    "resolved_crop": crop, "device": str(self.device)}
        try:
            result = train_cyclegan(modules, real, simulated, cycle, self.device,
                                    lambda done, _, message: progress(structures + done, total, f"CycleGAN: {message}"),
                                    should_stop)
        except Cancelled as stopped:
            partial = getattr(stopped, "result", None)
            self._adopt(modules["F"])
            self.training = TrainingRecord.of_run(samples, config, partial.steps if partial else 0,
                                                  partial.final_loss if partial else None, **settings)
            raise
        self._adopt(modules["F"])
        self.training = TrainingRecord.of_run(samples, config, result.steps, result.final_loss, **settings)
        last = result.history[-50:]
        parts = {k: float(np.mean([h[k] for h in last])) for k in ("cycle", "adversarial", "identity", "critic_loss")}
        self.training.settings["final_losses"] = parts
        return {"steps": result.steps, "final_loss": result.final_loss,
                "stages": {"cyclegan": {"steps": result.steps, "final_loss": result.final_loss, **parts}}}

    def _adopt(self, translator: torch.nn.Module) -> None:
        self.translator = translator.to(self.device).eval()

    # ------------------------------------------------------------ sampling

    def _generate(self, conditions, seeds, progress, should_stop,
                  sampling: PhaseFieldCycleGANSampling) -> Iterator[Sample]:
        grain, boundary = grain_boundary_ids(self.schema)
        n = len(conditions)
        for i, (condition, seed) in enumerate(zip(conditions, seeds)):
            check_stop(should_stop)
            settings = self.simulator_settings(condition["properties"])
            structure = simulate(settings, seed=seed, device=str(self.device), should_stop=should_stop)
            untextured = render_untextured(structure.phi)
            [image] = translate(self.translator, [untextured], self.device)
            mask = np.where(structure.boundary, boundary, grain).astype(np.int64)
            extra: dict[str, Any] = {
                "downscale": self.downscale,
                "simulation": {**settings.to_dict(), "seed": int(seed),
                               **{k: structure.info[k] for k in ("grains_final", "instances", "coalescences")}},
            }
            if sampling.untextured:
                extra[COMPANIONS] = {UNTEXTURED: encode_png(untextured)}
            progress(i + 1, n, f"pair {i + 1}/{n}: {settings.grains} grains, {settings.steps} steps")
            yield Sample(image=np.clip(image, 0.0, 1.0).astype(np.float32), schema=self.schema, mask=mask,
                         pixel_size_um=self.pixel_size_um, instances=structure.instances,
                         provenance=Provenance(origin="synthetic", extra=extra))

    # ------------------------------------------------------------ model folder

    def _folder_config(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "schema": self.schema.to_dict(),
            "resolution": self._resolution,
            "cyclegan": self.cyclegan_config.to_dict(),
            "ranges": {k: list(v) for k, v in self._ranges.items()},
            "untextured": {"phi_dark": PHI_DARK},
            "pixel_size_um": self.pixel_size_um,
            "condition": self.condition_spec.to_dict(),
            "training": asdict(self.training),
        }

    def _folder_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"translator": self.translator.state_dict()}

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> "PhaseFieldCycleGAN":
        schema = PhaseSchema.from_dict(config["schema"])
        model = cls.__new__(cls)
        Generator.__init__(model, schema, config["preset"], device)
        model._build(CycleGANConfig.from_dict(config["cyclegan"]), int(config["resolution"]),
                     {k: tuple(v) for k, v in config["ranges"].items()}, seed=0)
        model.translator.load_state_dict(load_weights(folder, "translator"))
        model.translator.to(model.device).eval()
        model.pixel_size_um = config.get("pixel_size_um")
        model.training = TrainingRecord(**config.get("training", {}))
        return model

    def _model_card(self, config: dict[str, Any]) -> str:
        t, c = self.training, self.cyclegan_config
        ranges = ", ".join(f"{name} {low:g}-{high:g}" for name, (low, high) in self._ranges.items())
        loss = "n/a" if t.final_loss is None else f"{t.final_loss:.4f}"
        parts = t.settings.get("final_losses", {})
        lines = [
            f"# Phase-field + CycleGAN grain-structure generator ({self.preset} preset)", "",
            "Simulates a grain structure by phase-field grain growth (regularised Voronoi start, multi-order-parameter",
            "Allen-Cahn, paper 003 eq. 1-3), renders it untextured (eq. 3 image) and translates that into a micrograph",
            "with the sim -> real generator of a CycleGAN; the mask is the simulation's 2 px grain-boundary map.", "",
            f"- phase schema: {self.schema.name} ({', '.join(self.schema.names)})",
            f"- structures: {self.resolution} px; conditions (trained ranges): {ranges}",
            f"- translator F: ResNet generator, {c.base_channels} base channels, {c.residual_blocks} residual blocks, "
            f"{parameter_count(self.translator) / 1e6:.3f} M parameters (G and the PatchGAN critics: training only)",
            f"- scale: real micrographs reduced {self.downscale}x; pixel size of the pairs "
            f"{self.pixel_size_um if self.pixel_size_um else 'unknown'} um",
            f"- training: {t.steps} CycleGAN steps, {t.settings.get('resolved_structures', 'n/a')} simulated "
            "structures, "
            f"{t.settings.get('resolved_crop', 'n/a')} px crops, on {len(t.sample_names)} real micrographs (masks "
            f"unused; data fingerprint {t.data_fingerprint or 'n/a'}): {', '.join(t.sample_names) or 'none'}",
            f"- final generator loss {loss}"
            + (f" (cycle {parts['cycle']:.4f}, adversarial {parts['adversarial']:.4f}, identity "
               f"{parts['identity']:.4f}, critics {parts['critic_loss']:.4f})" if parts else ""),
        ]
        return "\n".join(lines) + "\n"
