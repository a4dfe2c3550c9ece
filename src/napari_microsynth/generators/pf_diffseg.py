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
  crops by 2, see :class:`~napari_microsynth.core.tiles.RandomPairTiles`);
- sampling with DDIM in 50 steps (sec. 2.2.1).

Our additions: classifier-free guidance (condition dropout in training, ``guidance_scale`` when
sampling; 1.0 = the paper's plain conditional sampling), DPM-Solver++ (~20 steps), EMA weights, and the
small presets ``"small"`` (CPU demo, 64 px) and ``"tiny"`` (tests, 32 px).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.options import option
from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from ..core.sample import Sample
from ..models.diffusion import DenoiserConfig, build_denoiser, decode_image, decode_mask, reverse_diffusion, seeded_noise
from ..models.diffusion_training import DenoiserBatch, DiffusionTrainConfig
from . import register_generator
from ._diffusion import DiffusionGenerator, architecture_text, encode_pair, preset_settings

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
    # a model a CPU can train in an hour (about 1.2 s per step of 8 tiles on one core) and sample in seconds
    "small": dict(
        resolution=64,
        block_out_channels=(32, 64, 96, 128),
        layers_per_block=1,
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
    settings = preset_settings("PF-DiffSeg", PRESETS, preset, overrides)
    if n_classes < 2:
        raise ValueError(f"PF-DiffSeg needs a schema with at least 2 phases, got {n_classes}")
    return DenoiserConfig(target_channels=1 + n_classes, condition_dim=n_classes, **settings)


@dataclass
class PFDiffSegTrainConfig(DiffusionTrainConfig):
    """Training settings: the denoiser loop's settings plus how tiles are cut."""

    downscale: int = option(2, "crops of resolution x downscale px are reduced to the model resolution (2 = the "
                               "paper's 256 px tiles for a 128 px model)", low=1)
    augment: bool = option(True, "random flips and 90-degree rotations of the training tiles")


@register_generator
class PFDiffSeg(DiffusionGenerator):
    """Joint image + mask diffusion conditioned on a phase-fraction vector (paper 000).

    >>> gen = PFDiffSeg(PhaseSchema.bundled("uhcs"), "tiny", device="cpu")
    >>> gen.condition_spec.kind
    'fractions'
    """

    name = "pf-diffseg"
    version = "1"
    description = "PF-DiffSeg: micrograph and phase mask generated together, conditioned on phase fractions"
    label = "PF-DiffSeg"
    TrainConfig = PFDiffSegTrainConfig
    presets = tuple(PRESETS)  # "paper" (paper 000's U-Net), "small" (CPU), "tiny" (tests)
    mask_channel_offset = 1  # channel 0 is the image

    @classmethod
    def _preset_configs(cls, n_classes: int, preset: str) -> tuple[DenoiserConfig]:
        return (pf_diffseg_config(n_classes, preset),)

    def _make_networks(self, configs: tuple[DenoiserConfig], seed: int) -> None:
        (config,), n = configs, self.schema.n_classes
        if (config.target_channels, config.condition_dim, config.context_channels) != (1 + n, n, 0):
            raise ValueError(
                f"a PF-DiffSeg denoiser for {n} phases needs {1 + n} target channels, condition_dim {n} "
                f"and no context; got {config.target_channels}, {config.condition_dim}, {config.context_channels}"
            )
        self.denoiser = build_denoiser(config, seed=seed).to(self.device).eval()

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
        config, tiles = self._training_tiles(samples, config)

        def next_batch(rng: np.random.Generator, batch_size: int) -> DenoiserBatch:
            images, masks = tiles.draw(rng, batch_size)
            return DenoiserBatch(target=encode_pair(images, masks, self.schema), condition=self._fractions_of(masks))

        return self._train_recorded(samples, config, next_batch, progress, should_stop)

    # ------------------------------------------------------------ files

    def _model_card(self, config: dict[str, Any]) -> str:
        cfg = self.denoiser.config
        about = [
            "Generates a grey micrograph and its phase mask together, conditioned on the phase-fraction vector",
            "(Nguyen et al., phase-fraction guided denoising diffusion, paper 000 of napari-microsynth).",
        ]
        return self._card("PF-DiffSeg generator", about, [
            f"- resolution: {cfg.resolution} px, {architecture_text(cfg)}",
            f"- pixel size of generated tiles: {self.pixel_size_um if self.pixel_size_um else 'unknown'} um",
            self._training_line(),
            "- weights: exponential moving average of the training weights",
            "",
            "Sample with DDIM (50 steps, as in the paper) or DPM-Solver++ (about 20 steps).",
        ])

    # ------------------------------------------------------------ sampling

    def _denoise(self, seeds, condition, sampler, steps, guidance_scale, on_step, control, clean):
        cfg = self.denoiser.config
        # each sample's starting noise comes from its own seed, so it does not depend on the batching
        noise = seeded_noise(seeds, (cfg.target_channels, cfg.resolution, cfg.resolution)).to(self.device)
        x = reverse_diffusion(
            self.denoiser, noise, condition, sampler=sampler, steps=steps,
            guidance_scale=guidance_scale, on_step=on_step, control=control,
        )
        # image and mask come out together: a cleaned mask keeps the image it was generated with
        return decode_image(x[:, :1]).cpu().numpy(), clean(decode_mask(x[:, 1:]).cpu().numpy())
