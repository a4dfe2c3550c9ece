"""What the diffusion models (PF-DiffSeg, two-stage, super-resolution) share: construction from a preset
or from saved configs, training bookkeeping, model folders and, for the fraction-conditioned generators,
conditions and the declared sampling options.
"""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Self, Sequence

import numpy as np
import torch

from ..core.cleanup import remove_small_regions
from ..core.fractions import mask_fractions
from ..core.options import option
from ..core.progress import Cancelled, ProgressFn, StopFn, check_stop
from ..core.sample import Provenance, Sample
from ..core.schema import PhaseSchema
from ..core.tiles import RandomPairTiles
from ..models.device import resolve_device
from ..models.diffusion import (
    DEFAULT_SAMPLING_STEPS,
    SAMPLERS,
    Denoiser,
    DenoiserConfig,
    FractionControl,
    encode_image,
    encode_mask,
)
from ..models.diffusion_training import DenoiserBatch, TrainResult, train_denoiser
from ..models.folder import ModelFolderMixin, load_weights
from .base import ConditionSpec, Generator, TrainingRecord, batch_ranges, tile_pixel_size, training_tiles


def preset_settings(label: str, presets: dict[str, dict[str, Any]], preset: str, overrides: dict[str, Any]) -> dict:
    """The denoiser settings of ``preset`` with ``overrides`` applied (``label`` names the model in errors)."""
    if preset not in presets:
        raise ValueError(f"unknown {label} preset {preset!r}; choose one of {', '.join(presets)}")
    return {**presets[preset], **overrides}


def encode_pair(images: np.ndarray, masks: np.ndarray, schema: PhaseSchema) -> torch.Tensor:
    """Images ``(B, H, W)`` in [0, 1] and masks ``(B, H, W)`` as one ``(B, 1 + n_classes, H, W)`` tensor in [-1, 1]."""
    return torch.cat(
        [encode_image(torch.from_numpy(images)), encode_mask(torch.from_numpy(masks), schema.n_classes, schema.ignore_id)],
        dim=1,
    )


def run_summary(result: TrainResult) -> dict[str, Any]:
    """What :meth:`train` reports about one denoiser's run."""
    return {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "resumed_from": result.resumed_from,
        "losses": result.losses,
    }


def architecture_text(config: DenoiserConfig) -> str:
    """The U-Net's stages for a model card."""
    return f"stages {list(config.block_out_channels)}, {config.layers_per_block} ResNet blocks per stage"


@dataclass
class DenoiserSampling:
    """How a denoiser is sampled; ``steps`` None resolves to the sampler's own default here, in one place."""

    sampler: str = option("ddim", "reverse-diffusion sampler: DDIM (paper 000, 50 steps) or DPM-Solver++ "
                                  "(about 20 steps)", choices=SAMPLERS)
    steps: int | None = option(None, "denoising steps (auto: the sampler's default, 50 DDIM, 20 DPM-Solver++)",
                               low=1)
    batch_size: int = option(4, "pairs denoised together (changes speed and memory, not the pairs)", low=1)

    def __post_init__(self) -> None:
        if self.steps is None:
            self.steps = DEFAULT_SAMPLING_STEPS[self.sampler]


@dataclass
class DiffusionSampling(DenoiserSampling):
    """Sampling options of the fraction-conditioned diffusion generators.

    ``min_region_px`` is paper 002's mask clean-up (sec. 4.2); ``fraction_control`` the strength of the
    sampling-time fraction control (:class:`~napari_microsynth.models.diffusion.FractionControl`; 0 =
    paper 000's plain sampling) and ``control_temperature`` its softmax temperature.
    """

    guidance_scale: float = option(1.0, "classifier-free guidance scale (1 = plain conditional sampling)", low=0)
    min_region_px: int = option(0, "mask clean-up after sampling: phase regions under this many pixels are "
                                   "filled from their neighbours (0 = off)", low=0)
    fraction_control: float = option(1.0, "strength of the sampling-time fraction control, 0 (off, paper 000) "
                                          "to 1 (achieved within about a point)", low=0, high=1)
    control_temperature: float = option(4.0, "softmax temperature of the fraction control on the mask channels",
                                        low=0, advanced=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.control_temperature <= 0:
            raise ValueError(f"control_temperature must be a positive number, got {self.control_temperature}")


class DiffusionModel(ModelFolderMixin):
    """Base of the diffusion models: construction, training bookkeeping, model folders.

    Subclasses set ``label`` (the model's name in messages), ``TrainConfig``, ``presets`` and
    ``denoiser_names`` (the attributes holding their denoisers, also their config keys and weight files in
    the model folder), and implement :meth:`_preset_configs` and :meth:`_make_networks` (the network
    configs of a preset, and the networks built from configs), :meth:`folder_identity` (generators
    inherit it) and :meth:`_model_card`.
    """

    label: ClassVar[str]
    TrainConfig: ClassVar[type]
    presets: ClassVar[tuple[str, ...]]
    denoiser_names: ClassVar[tuple[str, ...]] = ("denoiser",)
    schema: PhaseSchema

    def __init__(self, schema: PhaseSchema, preset: str = "small", device: str = "auto", seed: int = 0):
        """An untrained model of network size ``preset`` on ``device``; ``seed`` fixes the initial weights."""
        self._build(schema, preset, self._preset_configs(schema.n_classes, preset), device, seed)

    @classmethod
    def from_configs(cls, schema: PhaseSchema, configs: Sequence[Any], device: str = "auto", seed: int = 0) -> Self:
        """A model with explicit network configs (in the order of :meth:`_preset_configs`) instead of a
        preset; its preset reads ``"custom"``."""
        model = cls.__new__(cls)
        model._build(schema, "custom", tuple(configs), device, seed)
        return model

    def _build(self, schema: PhaseSchema, preset: str, configs: tuple[Any, ...], device: str, seed: int) -> None:
        self.schema = schema
        self.preset = preset
        self.device = resolve_device(device)
        self.training = TrainingRecord()
        self.model_checksum = ""
        self._make_networks(configs, seed)

    @classmethod
    @abc.abstractmethod
    def _preset_configs(cls, n_classes: int, preset: str) -> tuple[Any, ...]:
        """The network configs of ``preset`` for ``n_classes`` phases (a ValueError for an unknown preset)."""

    @abc.abstractmethod
    def _make_networks(self, configs: tuple[Any, ...], seed: int) -> None:
        """Check ``configs`` against the schema and build the networks, initial weights from ``seed``."""

    def _denoisers(self) -> dict[str, Denoiser]:
        return {name: getattr(self, name) for name in self.denoiser_names}

    @property
    def resolution(self) -> int:
        """Size of the tiles the model generates (and was trained on)."""
        return next(iter(self._denoisers().values())).config.resolution

    # ------------------------------------------------------------ training

    def _training_tiles(self, samples: list[Sample], config: Any) -> tuple[Any, RandomPairTiles]:
        """The checked training config (None = defaults) and the random training tiles of ``samples``."""
        config, tiles = training_tiles(samples, config, self.TrainConfig, self.schema, self.resolution, self.label)
        self.model_checksum = ""
        return config, tiles

    def _train_recorded(
        self,
        samples: list[Sample],
        config: Any,
        next_batch: Callable[[np.random.Generator, int], DenoiserBatch],
        progress: ProgressFn,
        should_stop: StopFn,
    ) -> dict[str, Any]:
        """Train the model's one denoiser and record the run, also a cancelled one; returns its summary."""
        (denoiser,) = self._denoisers().values()

        def record(result: TrainResult) -> None:
            self._set_training(samples, config, result.steps, result.final_loss, result.mixed_precision)

        try:
            result = train_denoiser(denoiser, next_batch, config, self.device, progress, should_stop)
        except Cancelled as stopped:
            record(stopped.result)  # type: ignore[attr-defined]
            raise
        record(result)
        return run_summary(result)

    def _set_training(
        self,
        samples: list[Sample],
        config: Any,
        steps: int,
        final_loss: float | None,
        mixed_precision: str,
        **settings: Any,
    ) -> None:
        """Set :attr:`training` from a run (``settings``: entries added to the training settings)."""
        self.training = TrainingRecord.of_run(samples, config, steps, final_loss, device=str(self.device),
                                              mixed_precision=mixed_precision, **settings)

    def _training_line(self, steps: str = "steps", loss_of: str = "mean of last 50 steps") -> str:
        """The model card's line about the training run."""
        t = self.training
        loss = "n/a" if t.final_loss is None else f"{t.final_loss:.4f}"
        return (
            f"- training: {t.steps} {steps} on {len(t.sample_names)} micrographs (data fingerprint "
            f"{t.data_fingerprint or 'n/a'}), final loss ({loss_of}) {loss}"
        )

    # ------------------------------------------------------------ files

    def _card(self, title: str, about: Sequence[str], details: Sequence[str]) -> str:
        """A README.md: ``title``, what the model does, its phase schema and ``details`` (list lines)."""
        names = ", ".join(self.schema.names)
        lines = [f"# {title} ({self.preset} preset)", "", *about, "", f"- phase schema: {self.schema.name} ({names})"]
        return "\n".join([*lines, *details]) + "\n"

    def _folder_config(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "schema": self.schema.to_dict(),
            **{name: d.config.to_dict() for name, d in self._denoisers().items()},
            "training": asdict(self.training),
        }

    def _folder_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """The state dicts saved in the model folder, by weights-file name (default: the denoisers)."""
        return {name: d.state_dict() for name, d in self._denoisers().items()}

    @classmethod
    def _folder_configs(cls, config: dict[str, Any]) -> tuple[Any, ...]:
        """The network configs saved in a folder's ``config.json`` (default: the denoisers')."""
        return tuple(DenoiserConfig.from_dict(config[name]) for name in cls.denoiser_names)

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> Self:
        """The model built from the folder's network configs, its denoisers' weights and training record loaded."""
        model = cls.from_configs(PhaseSchema.from_dict(config["schema"]), cls._folder_configs(config), device=device)
        model.preset = config.get("preset", "custom")
        for name, denoiser in model._denoisers().items():
            denoiser.load_state_dict(load_weights(folder, name))
            denoiser.to(model.device).eval()
        model.training = TrainingRecord(**config.get("training", {}))
        return model


class DiffusionGenerator(DiffusionModel, Generator):
    """A fraction-conditioned diffusion generator (PF-DiffSeg, two-stage).

    Subclasses implement :meth:`_denoise` and name its denoising passes in ``sampling_stages``. Generated
    tiles carry :attr:`pixel_size_um`: the training micrographs' pixel size times the training
    ``downscale``, when known, and ``provenance.extra["downscale"]`` (that factor, known even when the
    pixel size is not), so they can be brought back to the scale of the real micrographs.
    """

    SamplingConfig = DiffusionSampling
    #: the denoising passes made for each batch, as progress messages name them ("" for a single pass)
    sampling_stages: ClassVar[tuple[str, ...]] = ("",)
    #: index of the first mask channel in the diffused tensor (the fraction control acts from there on)
    mask_channel_offset: ClassVar[int] = 0

    @property
    def condition_spec(self) -> ConditionSpec:
        return ConditionSpec.fractions(self.schema)

    def _training_tiles(self, samples: list[Sample], config: Any) -> tuple[Any, RandomPairTiles]:
        config, tiles = super()._training_tiles(samples, config)
        self.pixel_size_um = tile_pixel_size(samples, config.downscale)
        return config, tiles

    def _fractions_of(self, masks: np.ndarray) -> torch.Tensor:
        """The phase-fraction vector of each training tile, its condition (paper 000, sec. 2.2.1)."""
        return torch.from_numpy(np.stack([mask_fractions(m, self.schema) for m in masks])).float()

    @abc.abstractmethod
    def _denoise(
        self,
        seeds: list[int],
        condition: torch.Tensor,
        sampler: str,
        steps: int,
        guidance_scale: float,
        on_step: Callable[..., None],
        control: FractionControl | None,
        clean: Callable[[np.ndarray], np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(B, H, W)`` in [0, 1] and masks for one batch of seeds and fraction vectors ``(B, C)``.

        ``on_step(done, of, stage)`` after every denoising step of pass ``stage`` (default 0); ``control``
        (None = off) goes to the reverse diffusion that generates the mask; ``clean`` (the mask clean-up,
        class maps ``(B, H, W)`` in and out) is applied to the masks, before the image is made where a
        model makes the image for the mask.
        """

    def _generate(
        self,
        conditions: list[dict[str, Any] | None],
        seeds: list[int],
        progress: ProgressFn,
        should_stop: StopFn,
        sampling: DiffusionSampling,
    ) -> Iterator[Sample]:
        n, steps = len(conditions), sampling.steps
        batches = batch_ranges(n, sampling.batch_size)
        stages = self.sampling_stages
        total = len(batches) * len(stages) * steps
        for b, index in enumerate(batches):
            check_stop(should_stop)

            def on_step(done: int, of: int, stage: int = 0) -> None:
                step = f"{stages[stage]} step".lstrip()
                progress(
                    (len(stages) * b + stage) * steps + done,
                    total,
                    f"samples {index[0] + 1}-{index[-1] + 1} of {n}: {step} {done}/{of}",
                )
                check_stop(should_stop)

            condition = torch.tensor(
                [conditions[i]["fractions"] for i in index], dtype=torch.float32, device=self.device
            )
            control = None
            if sampling.fraction_control > 0:
                control = FractionControl(condition, self.mask_channel_offset, sampling.fraction_control,
                                          sampling.control_temperature)
            images, masks = self._denoise(
                [seeds[i] for i in index], condition, sampling.sampler, steps, sampling.guidance_scale, on_step,
                control, lambda masks: self._clean(masks, sampling.min_region_px),
            )
            for j in range(len(index)):
                yield Sample(
                    image=images[j],
                    schema=self.schema,
                    mask=masks[j],
                    pixel_size_um=self.pixel_size_um,
                    provenance=Provenance(origin="synthetic", extra={"downscale": self.downscale}),
                )

    def _clean(self, masks: np.ndarray, min_region_px: int) -> np.ndarray:
        """Paper 002's clean-up of a batch of class maps (unchanged when ``min_region_px`` is 0)."""
        if not min_region_px:
            return masks
        return np.stack([remove_small_regions(m, self.schema, min_region_px) for m in masks])

    def _folder_config(self) -> dict[str, Any]:
        return {**super()._folder_config(), "condition": self.condition_spec.to_dict(),
                "pixel_size_um": self.pixel_size_um}

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> Self:
        model = super()._from_folder(folder, config, device)
        model.pixel_size_um = config.get("pixel_size_um")
        return model
