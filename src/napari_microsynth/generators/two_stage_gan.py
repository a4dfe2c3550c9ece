"""Two-stage generator with a GAN image stage: fraction-controlled mask diffusion, then a SPADE translator.

Why this design (measured in the project's README, synthesis-quality section): a pixel-space diffusion
model of a few million parameters trained for an hour on a CPU (PF-DiffSeg ``small``) learns the phase
layout but not the micrograph texture; its images stay noisy. The two jobs are split here:

1. **Mask stage** (what paper 000's two-stage baseline does first): a diffusion model over the phase mask
   alone (one channel per class), conditioned on the phase-fraction vector exactly like PF-DiffSeg
   (linear projection into every ResNet block, cross-attention at the deepest level), sampled with DDIM or
   DPM-Solver++, classifier-free guidance and the sampling-time fraction control
   (:class:`~napari_microsynth.models.diffusion.FractionControl`). With the control on, the final mask's
   class thresholds are shifted once more so that its hard (argmax) fractions meet the target
   (:func:`~napari_microsynth.models.diffusion.snap_to_fractions`); since the image is painted afterwards from this very mask, this cannot
   break the image/mask correspondence.
2. **Image stage**: a conditional GAN translator (SPADE generator with noise injection, multi-scale
   PatchGAN critic; :mod:`~napari_microsynth.models.translator`) paints the micrograph for the mask.
   Adversarial training learns local texture in minutes where a denoiser needs hours, and a translation is
   one network pass instead of tens of denoising steps.

Paper 000's two-stage baseline (mask diffusion + image diffusion) stays available as ``two-stage``
and PF-DiffSeg as ``pf-diffseg`` for comparison.

>>> gen = TwoStageGAN(PhaseSchema.bundled("uhcs"), "tiny", device="cpu")
>>> gen.mask_denoiser.config.target_channels, gen.translator.config.n_classes
(4, 4)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.options import option
from ..core.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from ..core.sample import Sample
from ..models.diffusion import (
    SAMPLERS,
    DenoiserConfig,
    build_denoiser,
    encode_mask,
    reverse_diffusion,
    seeded_noise,
    snap_to_fractions,
)
from ..models.diffusion_training import DenoiserBatch, DiffusionTrainConfig, TrainResult, train_denoiser
from ..models.folder import load_weights
from ..models.translator import TranslatorConfig, build_translator, one_hot_mask
from ..models.translator_training import TranslatorTrainConfig, train_translator
from . import register_generator
from ._diffusion import DiffusionGenerator, DiffusionSampling, architecture_text, preset_settings, run_summary
from .base import stage_records
from .pf_diffseg import PRESETS as DENOISER_PRESETS

MASK_NOISE, IMAGE_NOISE = 0, 1  # noise streams of one seed

#: translator sizes per preset ("large" for a GPU; "small" trains in about half an hour on one CPU core)
TRANSLATOR_PRESETS: dict[str, dict[str, Any]] = {
    "large": dict(base_channels=64, levels=4, max_channels=512, noise_channels=64, spade_hidden=128,
                  disc_channels=64, disc_scales=2),
    "small": dict(base_channels=24, levels=3, max_channels=128, noise_channels=32, spade_hidden=24,
                  disc_channels=24, disc_scales=2),
    "tiny": dict(base_channels=8, levels=2, max_channels=32, noise_channels=8, spade_hidden=8,
                 disc_channels=8, disc_scales=1),
}
#: mask-stage denoiser per preset (PF-DiffSeg's U-Net sizes; "large" = paper 000's Table A2)
MASK_PRESETS = {"large": "paper", "small": "small", "tiny": "tiny"}


def two_stage_gan_configs(n_classes: int, preset: str = "small") -> tuple[DenoiserConfig, TranslatorConfig]:
    """The mask denoiser (``n_classes`` channels, fraction-conditioned) and the translator of a preset."""
    if preset not in TRANSLATOR_PRESETS:
        raise ValueError(f"unknown two-stage-gan preset {preset!r}; choose one of {', '.join(TRANSLATOR_PRESETS)}")
    if n_classes < 2:
        raise ValueError(f"two-stage-gan needs a schema with at least 2 phases, got {n_classes}")
    settings = preset_settings("two-stage-gan", DENOISER_PRESETS, MASK_PRESETS[preset], {})
    mask = DenoiserConfig(target_channels=n_classes, condition_dim=n_classes, **settings)
    return mask, TranslatorConfig(n_classes=n_classes, **TRANSLATOR_PRESETS[preset])


@dataclass
class TwoStageGANTrainConfig(DiffusionTrainConfig):
    """Training settings: the mask denoiser's (``steps``, ``batch_size``, ``learning_rate`` ...) and the
    translator's (``translator_*``, critic learning rate 4x ``translator_lr``; see :class:`~napari_microsynth.models.translator_training.TranslatorTrainConfig`).

    checkpoint_dir: the mask stage writes to ``mask/``, the translator to ``translator/``; a resumed run
    skips a finished stage.
    """

    downscale: int = option(2, "crops of resolution x downscale px are reduced to the model resolution", low=1)
    augment: bool = option(True, "random flips and 90-degree rotations of the training tiles")
    translator_steps: int = option(5000, "GAN steps of the image stage (after the mask stage's steps)", low=1)
    translator_batch_size: int = option(8, "training tiles per translator step", low=1)
    translator_lr: float = option(1e-4, "translator learning rate (the critic's is 4x)", low=0)
    feature_matching_weight: float = option(10.0, "weight of the critic feature-matching loss", low=0)
    lowpass_weight: float = option(10.0, "weight of the low-pass image loss against the real tile", low=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.translator_steps < 1 or self.translator_batch_size < 1:
            raise ValueError("translator_steps and translator_batch_size must be >= 1")

    def translator_config(self) -> TranslatorTrainConfig:
        return TranslatorTrainConfig(
            steps=self.translator_steps, batch_size=self.translator_batch_size,
            generator_lr=self.translator_lr, critic_lr=4 * self.translator_lr,
            feature_matching_weight=self.feature_matching_weight, lowpass_weight=self.lowpass_weight,
            checkpoint_dir=None if self.checkpoint_dir is None else str(Path(self.checkpoint_dir) / "translator"),
            checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints, resume=self.resume,
            seed=self.seed,
        )


@dataclass
class TwoStageGANSampling(DiffusionSampling):
    """Sampling options: DPM-Solver++ in 20 steps by default (the measured setting of the README)."""

    sampler: str = option("dpm++", "reverse-diffusion sampler of the mask stage: DPM-Solver++ (about 20 steps) "
                                   "or DDIM (paper 000, 50 steps)", choices=SAMPLERS)


@register_generator
class TwoStageGAN(DiffusionGenerator):
    """Fraction-conditioned mask diffusion, then a GAN that paints the micrograph for the mask."""

    name = "two-stage-gan"
    version = "1"
    description = "Phase mask by fraction-controlled diffusion, micrograph painted for it by a SPADE GAN"
    label = "the two-stage-gan generator"
    TrainConfig = TwoStageGANTrainConfig
    SamplingConfig = TwoStageGANSampling
    presets = tuple(TRANSLATOR_PRESETS)  # "large" (GPU), "small" (CPU), "tiny" (tests)
    denoiser_names = ("mask_denoiser",)
    sampling_stages = ("mask",)

    @classmethod
    def _preset_configs(cls, n_classes: int, preset: str) -> tuple[DenoiserConfig, TranslatorConfig]:
        return two_stage_gan_configs(n_classes, preset)

    @classmethod
    def _folder_configs(cls, config: dict[str, Any]) -> tuple[DenoiserConfig, TranslatorConfig]:
        return DenoiserConfig.from_dict(config["mask_denoiser"]), TranslatorConfig.from_dict(config["translator"])

    def _make_networks(self, configs: tuple[DenoiserConfig, TranslatorConfig], seed: int) -> None:
        (mask_config, translator_config), n = configs, self.schema.n_classes
        if (mask_config.target_channels, mask_config.condition_dim, mask_config.context_channels) != (n, n, 0):
            raise ValueError(f"the mask stage for {n} phases needs {n} target channels, condition_dim {n}, no context")
        if translator_config.n_classes != n:
            raise ValueError(f"the translator must take {n} mask channels, got {translator_config.n_classes}")
        self.mask_denoiser = build_denoiser(mask_config, seed=seed).to(self.device).eval()
        self.translator, self.critic = build_translator(translator_config, seed=seed + 1)
        self.translator.to(self.device).eval()

    # ------------------------------------------------------------ training

    def train(
        self,
        samples: list[Sample],
        config: TwoStageGANTrainConfig | None = None,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> dict[str, Any]:
        """Train the mask stage, then the translator, on random tiles of annotated micrographs.

        Progress runs over both (``steps + translator_steps``). Returns ``{"steps", "final_loss", "stages"}``
        with the mask stage's steps and loss and, per stage, ``steps``, ``final_loss``, ``resumed_from``, ``losses``.
        """
        config, tiles = self._training_tiles(samples, config)
        n, ignore = self.schema.n_classes, self.schema.ignore_id
        total = config.steps + config.translator_steps

        def mask_batch(rng: np.random.Generator, batch_size: int) -> DenoiserBatch:
            _, masks = tiles.draw(rng, batch_size)
            return DenoiserBatch(target=encode_mask(torch.from_numpy(masks), n, ignore),
                                 condition=self._fractions_of(masks))

        def pair_batch(rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
            images, masks = tiles.draw(rng, batch_size)
            return torch.from_numpy(images)[:, None] * 2 - 1, one_hot_mask(torch.from_numpy(masks), n, ignore)

        mask_config = replace(config, checkpoint_dir=None if config.checkpoint_dir is None
                              else str(Path(config.checkpoint_dir) / "mask"))
        results: dict[str, TrainResult] = {}
        try:
            results["mask"] = train_denoiser(
                self.mask_denoiser, mask_batch, mask_config, self.device,
                lambda done, _, message: progress(done, total, f"mask stage: {message}"), should_stop,
            )
            results["translator"] = train_translator(
                self.translator, self.critic, pair_batch, config.translator_config(), self.device,
                lambda done, _, message: progress(config.steps + done, total, f"translator: {message}"), should_stop,
            )
        except Cancelled as stopped:
            results[("mask", "translator")[len(results)]] = stopped.result  # type: ignore[attr-defined]
            self._record(samples, config, results)
            raise
        self._record(samples, config, results)
        return {
            "steps": config.steps,
            "final_loss": results["mask"].final_loss,
            "stages": {stage: run_summary(r) for stage, r in results.items()},
        }

    def _record(self, samples: list[Sample], config: TwoStageGANTrainConfig, results: dict[str, TrainResult]) -> None:
        mask = results.get("mask")
        self._set_training(
            samples, config,
            steps=mask.steps if mask else 0,
            final_loss=mask.final_loss if mask else None,
            mixed_precision=mask.mixed_precision if mask else "no",
            **stage_records(results),
        )

    # ------------------------------------------------------------ files

    def _folder_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {**super()._folder_weights(), "translator": self.translator.state_dict()}

    def _folder_config(self) -> dict[str, Any]:
        return {**super()._folder_config(), "translator": self.translator.config.to_dict()}

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> "TwoStageGAN":
        model = super()._from_folder(folder, config, device)
        model.translator.load_state_dict(load_weights(folder, "translator"))
        model.translator.to(model.device).eval()
        return model

    def _model_card(self, config: dict[str, Any]) -> str:
        cfg, tcfg = self.mask_denoiser.config, self.translator.config
        params = sum(p.numel() for p in self.translator.parameters()) / 1e6
        about = [
            "Generates a phase mask by diffusion conditioned on the phase-fraction vector (with sampling-time",
            "fraction control), then paints a grey micrograph for that mask with a SPADE GAN translator.",
        ]
        return self._card("Two-stage-gan generator", about, [
            f"- resolution: {cfg.resolution} px; mask denoiser {architecture_text(cfg)}",
            f"- translator: SPADE generator, widths {tcfg.widths()}, {params:.2f} M parameters; "
            f"{tcfg.disc_scales}-scale PatchGAN critic (training only)",
            f"- pixel size of generated tiles: {self.pixel_size_um if self.pixel_size_um else 'unknown'} um",
            self._training_line("mask-stage steps", "mask stage, mean of last 50 steps"),
            f"- translator steps: {self.training.settings.get('stage_steps', {}).get('translator', 'n/a')}",
            "- weights: exponential moving averages of the training weights (mask_denoiser, translator)",
        ])

    # ------------------------------------------------------------ sampling

    def _denoise(self, seeds, condition, sampler, steps, guidance_scale, on_step, control, clean):
        res, n = self.resolution, self.schema.n_classes
        noise = seeded_noise(seeds, (n, res, res), stream=MASK_NOISE).to(self.device)
        x = reverse_diffusion(self.mask_denoiser, noise, condition, sampler=sampler, steps=steps,
                              guidance_scale=guidance_scale, on_step=on_step, control=control)
        masks = x.argmax(dim=1) if control is None else snap_to_fractions(x, condition, control.strength)
        masks = clean(masks.cpu().numpy())
        return self.paint(torch.from_numpy(masks), seeds), masks

    @torch.no_grad()
    def paint(self, masks: torch.Tensor, seeds: list[int]) -> np.ndarray:
        """Micrographs ``(B, H, W)`` in [0, 1] for class maps ``(B, H, W)``, texture noise from ``seeds``."""
        h, w = masks.shape[-2:]
        noise = [t.to(self.device) for t in self.translator.draw_noise(seeds, h, w, stream=IMAGE_NOISE)]
        one_hot = one_hot_mask(masks.to(self.device), self.schema.n_classes, self.schema.ignore_id)
        return ((self.translator(one_hot, noise)[:, 0] + 1) / 2).clamp(0, 1).cpu().numpy()
