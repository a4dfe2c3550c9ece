"""Two-stage baseline: a mask diffusion model, then a mask-conditioned image diffusion model.

The SegGuidedDiff-style comparison of paper 000 (sec. 3, Tables 3 and 5, Table A2): first a phase mask
is generated, then a micrograph is generated for that mask. Paper 000 reports that this split costs
time (1.20 s mask + 1.21 s image = 2.41 s per pair against 2.01 s for the one-stage PF-DiffSeg on its
GPU, Table 5) and some MIoU (68.58 % against 70.42 %).

What the paper says about its two-stage models (Table A2): the same U-Net widths as PF-DiffSeg
(128, 128, 256, 256, 512, 512, two ResNet blocks per stage) with self-attention, trained with plain
MSE, AdamW, lr 1e-4, cosine schedule; the image model is conditioned on the 128 x 128 mask. There the
mask model is unconditional (Table A2, "Condition size: None"); here it is conditioned on the
phase-fraction vector like PF-DiffSeg (one linear projection into every ResNet block, cross-attention
at the deepest level), so both generators share the same contract and their fraction control can be
compared. The image model sees the clean one-channel-per-class mask as extra input channels
(``context_channels``), exactly the mask that is returned with the image.

>>> gen = TwoStage(PhaseSchema.bundled("uhcs"), "tiny", device="cpu")
>>> gen.mask_denoiser.config.target_channels, gen.image_denoiser.config.context_channels
(4, 4)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..core.options import apply_options, option
from ..core.progress import Cancelled, ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Provenance, Sample
from ..models.diffusion import (
    DenoiserConfig,
    build_denoiser,
    decode_image,
    decode_mask,
    encode_image,
    encode_mask,
    reverse_diffusion,
    seeded_noise,
    snap_to_fractions,
)
from ..models.diffusion_training import DenoiserBatch, DiffusionTrainConfig, TrainResult, train_denoiser
from . import register_generator
from ._diffusion import (
    DenoiserSampling,
    DiffusionGenerator,
    architecture_text,
    preset_settings,
    run_summary,
)
from .base import batch_ranges, stage_records
from .pf_diffseg import PRESETS

STAGES = ("mask", "image")
MASK_NOISE, IMAGE_NOISE = 0, 1  # noise streams of one seed (see models.diffusion.seeded_noise)


def two_stage_configs(n_classes: int, preset: str = "small", **overrides: Any) -> tuple[DenoiserConfig, DenoiserConfig]:
    """The mask denoiser (``n_classes`` channels, fraction-conditioned) and the image denoiser (1 channel,
    the mask as ``n_classes`` context channels) for one of PF-DiffSeg's presets, so both methods compare
    at equal network size."""
    settings = preset_settings("two-stage", PRESETS, preset, overrides)
    if n_classes < 2:
        raise ValueError(f"the two-stage generator needs a schema with at least 2 phases, got {n_classes}")
    mask = DenoiserConfig(target_channels=n_classes, condition_dim=n_classes, **settings)
    image = DenoiserConfig(target_channels=1, context_channels=n_classes, **settings)
    return mask, image


@dataclass
class TwoStageTrainConfig(DiffusionTrainConfig):
    """Training settings, used for each of the two stages in turn (``steps`` per stage).

    checkpoint_dir: each stage writes its checkpoints to a ``mask`` / ``image`` subfolder; a resumed
    run skips a finished mask stage.
    """

    l1_weight: float = option(0.0, "lambda of the MSE + lambda * L1 noise loss (0 = plain MSE, as paper 000 "
                                   "trains SegGuidedDiff, Table A2)", low=0)
    downscale: int = option(2, "crops of resolution x downscale px are reduced to the model resolution", low=1)
    augment: bool = option(True, "random flips and 90-degree rotations of the training tiles")


@register_generator
class TwoStage(DiffusionGenerator):
    """Mask diffusion conditioned on phase fractions, then image diffusion conditioned on that mask."""

    name = "two-stage"
    version = "1"
    description = "Two-stage baseline (SegGuidedDiff-style): phase mask first, then a micrograph for the mask"
    label = "the two-stage generator"
    TrainConfig = TwoStageTrainConfig
    presets = tuple(PRESETS)  # PF-DiffSeg's sizes, so both methods compare at equal network size
    denoiser_names = ("mask_denoiser", "image_denoiser")
    sampling_stages = STAGES

    @classmethod
    def _preset_configs(cls, n_classes: int, preset: str) -> tuple[DenoiserConfig, DenoiserConfig]:
        return two_stage_configs(n_classes, preset)

    def _make_networks(self, configs: tuple[DenoiserConfig, DenoiserConfig], seed: int) -> None:
        (mask_config, image_config), n = configs, self.schema.n_classes
        if (mask_config.target_channels, mask_config.condition_dim, mask_config.context_channels) != (n, n, 0):
            raise ValueError(
                f"the mask stage for {n} phases needs {n} target channels, condition_dim {n} and no context"
            )
        if (image_config.target_channels, image_config.condition_dim, image_config.context_channels) != (1, 0, n):
            raise ValueError(
                f"the image stage for {n} phases needs 1 target channel, no condition vector and {n} context channels"
            )
        if mask_config.resolution != image_config.resolution:
            raise ValueError(
                f"both stages need the same resolution, got {mask_config.resolution} and {image_config.resolution}"
            )
        self.mask_denoiser = build_denoiser(mask_config, seed=seed).to(self.device).eval()
        self.image_denoiser = build_denoiser(image_config, seed=seed + 1).to(self.device).eval()

    # ------------------------------------------------------------ training

    def train(
        self,
        samples: list[Sample],
        config: TwoStageTrainConfig | None = None,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> dict[str, Any]:
        """Train the mask stage, then the image stage, on random tiles of annotated micrographs.

        Progress runs over both stages (``2 * steps``). Returns ``{"steps", "final_loss", "stages"}``:
        steps per stage, the mean of the two stages' final losses and, per stage, ``steps``,
        ``final_loss``, ``resumed_from`` and ``losses``.
        """
        config, tiles = self._training_tiles(samples, config)
        n, ignore = self.schema.n_classes, self.schema.ignore_id

        def mask_batch(rng: np.random.Generator, batch_size: int) -> DenoiserBatch:
            _, masks = tiles.draw(rng, batch_size)
            return DenoiserBatch(
                target=encode_mask(torch.from_numpy(masks), n, ignore), condition=self._fractions_of(masks)
            )

        def image_batch(rng: np.random.Generator, batch_size: int) -> DenoiserBatch:
            images, masks = tiles.draw(rng, batch_size)
            return DenoiserBatch(
                target=encode_image(torch.from_numpy(images)), context=encode_mask(torch.from_numpy(masks), n, ignore)
            )

        results: dict[str, TrainResult] = {}
        for k, (stage, denoiser, next_batch) in enumerate(
            (("mask", self.mask_denoiser, mask_batch), ("image", self.image_denoiser, image_batch))
        ):
            stage_config = replace(
                config, checkpoint_dir=None if config.checkpoint_dir is None else str(Path(config.checkpoint_dir) / stage)
            )

            def stage_progress(done: int, total: int, message: str, k: int = k, stage: str = stage) -> None:
                progress(k * config.steps + done, 2 * config.steps, f"{stage} stage: {message}")

            try:
                results[stage] = train_denoiser(
                    denoiser, next_batch, stage_config, self.device, stage_progress, should_stop
                )
            except Cancelled as stopped:
                results[stage] = stopped.result  # type: ignore[attr-defined]
                self._record(samples, config, results)
                raise
        self._record(samples, config, results)
        finals = [r.final_loss for r in results.values() if r.final_loss is not None]
        return {
            "steps": config.steps,
            "final_loss": float(np.mean(finals)) if finals else None,
            "stages": {stage: run_summary(r) for stage, r in results.items()},
        }

    def _record(self, samples: list[Sample], config: TwoStageTrainConfig, results: dict[str, TrainResult]) -> None:
        finals = {stage: r.final_loss for stage, r in results.items()}
        known = [v for v in finals.values() if v is not None]
        self._set_training(
            samples,
            config,
            steps=min(r.steps for r in results.values()) if len(results) == 2 else 0,
            final_loss=float(np.mean(known)) if known else None,
            mixed_precision=next(iter(results.values())).mixed_precision,
            **stage_records(results),
        )

    # ------------------------------------------------------------ files

    def _model_card(self, config: dict[str, Any]) -> str:
        cfg = self.mask_denoiser.config
        about = [
            "Generates a phase mask conditioned on the phase-fraction vector, then a grey micrograph conditioned",
            "on that mask (the SegGuidedDiff-style baseline of paper 000 of napari-microsynth).",
        ]
        return self._card("Two-stage generator", about, [
            f"- resolution: {cfg.resolution} px, {architecture_text(cfg)}, for each of the two denoisers",
            f"- pixel size of generated tiles: {self.pixel_size_um if self.pixel_size_um else 'unknown'} um",
            self._training_line("steps per stage", "mean of both stages, last 50 steps each"),
            "- weights: exponential moving average of the training weights (mask_denoiser, image_denoiser)",
        ])

    # ------------------------------------------------------------ sampling

    def _shape(self, channels: int) -> tuple[int, int, int]:
        return channels, self.resolution, self.resolution

    def _images_for(
        self, context: torch.Tensor, seeds: Sequence[int], sampler: str, steps: int, on_step
    ) -> np.ndarray:
        """Stage 2: images ``(B, H, W)`` in [0, 1] for the encoded masks ``context``."""
        noise = seeded_noise(seeds, self._shape(1), stream=IMAGE_NOISE).to(self.device)
        x = reverse_diffusion(self.image_denoiser, noise, context=context, sampler=sampler, steps=steps, on_step=on_step)
        return decode_image(x).cpu().numpy()

    def _denoise(self, seeds, condition, sampler, steps, guidance_scale, on_step, control, clean):
        noise = seeded_noise(seeds, self._shape(self.schema.n_classes), stream=MASK_NOISE).to(self.device)
        x = reverse_diffusion(
            self.mask_denoiser, noise, condition, sampler=sampler, steps=steps, guidance_scale=guidance_scale,
            on_step=on_step, control=control,
        )
        # the image is made for this mask afterwards, so the mask can be snapped to the exact fractions
        masks = decode_mask(x) if control is None else snap_to_fractions(x, condition, control.strength)
        masks = clean(masks.cpu().numpy())
        context = encode_mask(torch.from_numpy(masks), self.schema.n_classes).to(self.device)
        images = self._images_for(context, seeds, sampler, steps, lambda done, of: on_step(done, of, 1))
        return images, masks

    def images_for_masks(
        self,
        masks: Sequence[np.ndarray],
        seed: int = 0,
        sampler: str = "ddim",
        steps: int | None = None,
        batch_size: int = 4,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> Iterator[Sample]:
        """Stage 2 alone: a synthetic micrograph for each given mask (mask ``i`` gets seed ``seed + i``).

        Masks must be ``resolution`` square and hold class ids of the schema (ignored pixels count as "no
        class"). A pair from :meth:`sample` with seed ``s`` is reproduced exactly by passing its mask with
        ``seed=s``. The yielded Samples keep the given mask; ``provenance.extra["stage"]`` is ``"image"``.
        """
        settings = asdict(apply_options(DenoiserSampling, dict(sampler=sampler, steps=steps, batch_size=batch_size)))
        arrays = [np.asarray(m) for m in masks]
        wrong = [i for i, m in enumerate(arrays) if m.shape != (self.resolution, self.resolution)]
        if wrong:
            raise ValueError(f"masks {wrong} are not {self.resolution} x {self.resolution} (the model resolution)")
        for m in arrays:
            self.schema.validate_mask(m)
        return self._translate(arrays, int(seed), settings, progress, should_stop)

    def _translate(
        self, masks: list[np.ndarray], seed: int, settings: dict[str, Any], progress: ProgressFn, should_stop: StopFn
    ) -> Iterator[Sample]:
        steps = settings["steps"]
        batches = batch_ranges(len(masks), settings["batch_size"])
        for b, index in enumerate(batches):
            check_stop(should_stop)

            def on_step(done: int, of: int, b: int = b) -> None:
                progress(b * steps + done, len(batches) * steps, f"image step {done}/{of}")
                check_stop(should_stop)

            batch = torch.from_numpy(np.stack([masks[i].astype(np.int64) for i in index]))
            context = encode_mask(batch, self.schema.n_classes, self.schema.ignore_id).to(self.device)
            images = self._images_for(context, [seed + i for i in index], settings["sampler"], steps, on_step)
            for j, i in enumerate(index):
                yield Sample(
                    image=images[j],
                    schema=self.schema,
                    mask=masks[i],
                    name=f"{self.name}-image-{seed + i}",
                    pixel_size_um=self.pixel_size_um,
                    provenance=Provenance(
                        origin="synthetic",
                        generator=self.name,
                        generator_version=self.version,
                        model_checksum=self.model_checksum,
                        seed=seed + i,
                        extra={"stage": "image", "sampling": settings},
                    ),
                )
