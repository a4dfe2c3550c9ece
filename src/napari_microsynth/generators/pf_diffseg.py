"""PF-DiffSeg: one diffusion model that generates a micrograph and its phase mask together (paper 000).

What the paper specifies (Nguyen et al., "Phase-fraction guided denoising diffusion model ...", paper 000):

- the image and the mask form one tensor that is noised and denoised in a single trajectory, linearly
  normalised to [-1, 1] (sec. 2.2.1). The paper packs a 4-class mask into 3 channels; we use one channel
  per class of the phase schema, so argmax gives back the exact class map for any number of classes;
- the condition is the global phase-fraction vector of the tile; a linear layer maps it to the width of
  the time embedding and the result is injected into every ResNet block at every scale (sec. 2.2.1);
- a six-stage U-Net, widths 128, 128, 256, 256, 512, 512, two ResNet blocks per stage, with
  multi-head cross-attention at the deepest level (sec. 2.2.1, Table A2) -> preset ``"paper"``;
  the paper gives no token count or width for the cross-attention: we map the fraction vector linearly
  to ``condition_tokens`` tokens;
- loss MSE + lambda * L1 on the predicted noise with lambda = 1 (eq. 3, Table A1); AdamW, lr 1e-4,
  cosine schedule (Table A2); 128 x 128 model trained on 256 px tiles (sec. 2.1; we downscale the
  crops by 2, see :class:`~napari_microsynth.models.diffusion_training.RandomPairTiles`);
- sampling with DDIM in 50 steps (sec. 2.2.1).

Our additions: classifier-free guidance (condition dropout in training, ``guidance_scale`` when
sampling; 1.0 = the paper's plain conditional sampling), DPM-Solver++ (~20 steps), EMA weights, and the
small presets ``"small"`` (CPU demo, 64 px) and ``"tiny"`` (tests, 32 px).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..core.fractions import mask_fractions
from ..core.progress import Cancelled, ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Provenance, Sample
from ..core.schema import PhaseSchema
from ..models.diffusion_training import DenoiserBatch, DiffusionTrainConfig, RandomPairTiles, train_denoiser
from ..models.device import resolve_device
from ..models.diffusion import (
    DenoiserConfig,
    build_denoiser,
    decode_image,
    decode_mask,
    encode_image,
    encode_mask,
    reverse_diffusion,
    sampling_settings,
    seeded_noise,
)
from ..models.folder import folder_checksum, load_weights, read_model_config, save_model_folder
from . import register_generator
from .base import ConditionSpec, Generator, TrainingRecord, data_fingerprint

PRESETS: dict[str, dict[str, Any]] = {
    # paper 000, sec. 2.2.1 and Table A2
    "paper": dict(
        resolution=128,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        layers_per_block=2,
        norm_num_groups=32,
        attention_heads=8,
        cross_attention_dim=256,
        condition_tokens=4,
    ),
    # a model a CPU can train in an hour and sample in seconds
    "small": dict(
        resolution=64,
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=2,
        norm_num_groups=8,
        attention_heads=4,
        cross_attention_dim=64,
        condition_tokens=4,
    ),
    # for tests: a few training steps take well under a second on a CPU
    "tiny": dict(
        resolution=32,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_heads=2,
        cross_attention_dim=32,
        condition_tokens=2,
    ),
}


def pf_diffseg_config(n_classes: int, preset: str = "small", **overrides: Any) -> DenoiserConfig:
    """The denoiser of PF-DiffSeg for ``n_classes`` phases: ``1 + n_classes`` channels, fraction-conditioned."""
    if preset not in PRESETS:
        raise ValueError(f"unknown PF-DiffSeg preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if n_classes < 2:
        raise ValueError(f"PF-DiffSeg needs a schema with at least 2 phases, got {n_classes}")
    settings = {**PRESETS[preset], **overrides}
    return DenoiserConfig(target_channels=1 + n_classes, condition_dim=n_classes, **settings)


@dataclass
class PFDiffSegTrainConfig(DiffusionTrainConfig):
    """Training settings: the denoiser loop's settings plus how tiles are cut.

    downscale: crops of ``resolution * downscale`` pixels are reduced to the model resolution
        (2 = the paper's 256 px tiles for a 128 px model).
    augment: random flips and 90-degree rotations of the tiles.
    """

    downscale: int = 2
    augment: bool = True


@register_generator
class PFDiffSeg(Generator):
    """Joint image + mask diffusion conditioned on a phase-fraction vector (paper 000).

    >>> gen = PFDiffSeg(PhaseSchema.bundled("uhcs"), "tiny", device="cpu")
    >>> gen.condition_spec.kind
    'fractions'
    """

    name = "pf-diffseg"
    version = "1"
    description = "PF-DiffSeg: micrograph and phase mask generated together, conditioned on phase fractions"
    TrainConfig = PFDiffSegTrainConfig
    sampling_defaults = {"sampler": "ddim", "steps": None, "guidance_scale": 1.0, "batch_size": 4}

    def __init__(
        self,
        schema: PhaseSchema,
        model: DenoiserConfig | str = "small",
        device: str = "auto",
        seed: int = 0,
    ):
        """``model`` is a preset name (``"paper"``, ``"small"``, ``"tiny"``) or a full denoiser config;
        ``seed`` fixes the initial weights."""
        super().__init__(schema)
        n = schema.n_classes
        config = pf_diffseg_config(n, model) if isinstance(model, str) else model
        if (config.target_channels, config.condition_dim, config.context_channels) != (1 + n, n, 0):
            raise ValueError(
                f"a PF-DiffSeg denoiser for {n} phases needs {1 + n} target channels, condition_dim {n} "
                f"and no context; got {config.target_channels}, {config.condition_dim}, {config.context_channels}"
            )
        self.preset = model if isinstance(model, str) else "custom"
        self.device = resolve_device(device)
        self.denoiser = build_denoiser(config, seed=seed).to(self.device).eval()
        #: pixel size of generated samples (training pixel size x downscale), when known
        self.pixel_size_um: float | None = None
        self.training = TrainingRecord()

    @property
    def condition_spec(self) -> ConditionSpec:
        return ConditionSpec.fractions(self.schema)

    @property
    def resolution(self) -> int:
        return self.denoiser.config.resolution

    # ------------------------------------------------------------ training

    def train(
        self,
        samples: list[Sample],
        config: PFDiffSegTrainConfig | None = None,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> dict[str, Any]:
        """Train on random tiles of annotated micrographs; the generator then holds the EMA weights.

        Returns ``{"steps", "final_loss", "resumed_from", "losses"}``.
        """
        config = PFDiffSegTrainConfig() if config is None else config
        if not isinstance(config, PFDiffSegTrainConfig):
            raise TypeError(f"PF-DiffSeg takes a PFDiffSegTrainConfig, got {type(config).__name__}")
        foreign = [s.name for s in samples if s.schema.names != self.schema.names]
        if foreign:
            raise ValueError(f"samples {foreign} do not use this generator's schema {self.schema.name!r}")
        tiles = RandomPairTiles(samples, self.resolution, config.downscale, config.augment)
        n, ignore = self.schema.n_classes, self.schema.ignore_id

        def next_batch(rng: np.random.Generator, batch_size: int) -> DenoiserBatch:
            images, masks = tiles.draw(rng, batch_size)
            target = torch.cat(
                [encode_image(torch.from_numpy(images)), encode_mask(torch.from_numpy(masks), n, ignore)], dim=1
            )
            # the condition of a tile is its own phase-fraction vector (paper 000, sec. 2.2.1)
            condition = torch.from_numpy(np.stack([mask_fractions(m, self.schema) for m in masks])).float()
            return DenoiserBatch(target=target, condition=condition)

        self.model_checksum = ""
        known = [s.pixel_size_um for s in samples if s.pixel_size_um]
        self.pixel_size_um = float(np.median(known)) * config.downscale if known else None
        try:
            result = train_denoiser(self.denoiser, next_batch, config, self.device, progress, should_stop)
        except Cancelled as stopped:
            self._record(samples, config, stopped.result)  # type: ignore[attr-defined]
            raise
        self._record(samples, config, result)
        return {
            "steps": result.steps,
            "final_loss": result.final_loss,
            "resumed_from": result.resumed_from,
            "losses": result.losses,
        }

    def _record(self, samples: list[Sample], config: PFDiffSegTrainConfig, result) -> None:
        self.training = TrainingRecord(
            data_fingerprint=data_fingerprint(samples),
            sample_names=[s.name for s in samples],
            steps=result.steps,
            final_loss=result.final_loss,
            settings={**asdict(config), "device": str(self.device), "mixed_precision": result.mixed_precision},
        )

    # ------------------------------------------------------------ files

    def save(self, folder: str | Path) -> Path:
        config = {
            "kind": "generator",
            "generator": self.name,
            "generator_version": self.version,
            "preset": self.preset,
            "schema": self.schema.to_dict(),
            "denoiser": self.denoiser.config.to_dict(),
            "condition": self.condition_spec.to_dict(),
            "pixel_size_um": self.pixel_size_um,
            "training": asdict(self.training),
        }
        folder = save_model_folder(folder, config, {"denoiser": self.denoiser.state_dict()}, self._model_card())
        self.model_checksum = folder_checksum(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> "PFDiffSeg":
        config = read_model_config(folder)
        if config.get("generator") != cls.name:
            raise ValueError(f"{folder} holds a {config.get('generator') or 'non-generator'} model, not {cls.name}")
        if config.get("generator_version") != cls.version:
            raise ValueError(
                f"{folder} was written by {cls.name} format version {config.get('generator_version')}; "
                f"this code reads version {cls.version}"
            )
        schema = PhaseSchema.from_dict(config["schema"])
        generator = cls(schema, DenoiserConfig.from_dict(config["denoiser"]), device=device)
        generator.preset = config.get("preset", "custom")
        generator.denoiser.load_state_dict(load_weights(folder, "denoiser"))
        generator.denoiser.to(generator.device).eval()
        generator.pixel_size_um = config.get("pixel_size_um")
        generator.training = TrainingRecord(**config.get("training", {}))
        generator.model_checksum = folder_checksum(folder)
        return generator

    def _model_card(self) -> str:
        cfg = self.denoiser.config
        t = self.training
        loss = "n/a" if t.final_loss is None else f"{t.final_loss:.4f}"
        lines = [
            f"# PF-DiffSeg generator ({self.preset} preset)",
            "",
            "Generates a grey micrograph and its phase mask together, conditioned on the phase-fraction vector",
            "(Nguyen et al., phase-fraction guided denoising diffusion, paper 000 of napari-microsynth).",
            "",
            f"- phase schema: {self.schema.name} ({', '.join(self.schema.names)})",
            f"- resolution: {cfg.resolution} px, stages {list(cfg.block_out_channels)}, "
            f"{cfg.layers_per_block} ResNet blocks per stage",
            f"- pixel size of generated tiles: {self.pixel_size_um if self.pixel_size_um else 'unknown'} um",
            f"- training: {t.steps} steps on {len(t.sample_names)} micrographs (data fingerprint "
            f"{t.data_fingerprint or 'n/a'}), final loss (mean of last 50 steps) {loss}",
            "- weights: exponential moving average of the training weights",
            "",
            "Sample with DDIM (50 steps, as in the paper) or DPM-Solver++ (about 20 steps).",
        ]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ sampling

    def check_sampling_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return sampling_settings(options["sampler"], options["steps"], options["batch_size"], options["guidance_scale"])

    def _generate(
        self,
        conditions: list[dict[str, Any] | None],
        seeds: list[int],
        progress: ProgressFn,
        should_stop: StopFn,
        sampler: str = "ddim",
        steps: int = 50,
        guidance_scale: float = 1.0,
        batch_size: int = 4,
    ) -> Iterator[Sample]:
        cfg = self.denoiser.config
        n = len(conditions)
        starts = list(range(0, n, batch_size))
        total = len(starts) * steps
        for b, start in enumerate(starts):
            check_stop(should_stop)
            index = range(start, min(start + batch_size, n))
            # each sample's starting noise comes from its own seed, so it does not depend on the batching
            noise = seeded_noise([seeds[i] for i in index], (cfg.target_channels, cfg.resolution, cfg.resolution))
            noise = noise.to(self.device)
            condition = torch.tensor(
                [conditions[i]["fractions"] for i in index], dtype=torch.float32, device=self.device
            )

            def on_step(done: int, of: int, b: int = b, index: range = index) -> None:
                progress(b * steps + done, total, f"samples {index[0] + 1}-{index[-1] + 1} of {n}: step {done}/{of}")
                check_stop(should_stop)

            x = reverse_diffusion(
                self.denoiser, noise, condition, sampler=sampler, steps=steps,
                guidance_scale=guidance_scale, on_step=on_step,
            )
            images = decode_image(x[:, :1]).cpu().numpy()
            masks = decode_mask(x[:, 1:]).cpu().numpy()
            for j in range(len(index)):
                yield Sample(
                    image=images[j],
                    schema=self.schema,
                    mask=masks[j],
                    pixel_size_um=self.pixel_size_um,
                    provenance=Provenance(origin="synthetic"),
                )
