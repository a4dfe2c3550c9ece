"""2x super-resolution of image + mask pairs by diffusion (paper 000, sec. 2.2.3, Table A3).

Paper 000 found its diffusion model's quality dropping at higher resolution, so it generates 128 px pairs
and upscales them to 256 px with a second diffusion model inspired by SR3 (Saharia et al., its ref. 29):
the high-resolution pair ``[x_HR, y_HR]`` (image + mask channels) is diffused, conditioned on the
low-resolution pair ``[x_LR, y_LR]`` (sec. 2.2.3). So the model generates both a new image and a new
mask at twice the size; the mask is not simply enlarged. Table A3: ResNet + self-attention U-Net, widths
128, 128, 256, 256, 512, 512, two blocks per stage, 8 input channels (4 noisy + 4 condition) and 4 output
channels, MSE loss, AdamW, lr 1e-4, cosine schedule. The paper reports that upscaling lowered FID_mask
(68.85 -> 34.77) and left the image metrics about the same (Table 2).

How the condition enters is not spelled out; as in SR3 the low-resolution pair is upsampled to the
output size and concatenated to the noisy input as clean context channels: the image bicubically, the
one-channel-per-class mask (+1 / -1) bilinearly. Training pairs: a high-resolution tile cut from a
real micrograph and the same tile reduced 2x the way the generators' training tiles are (block mean,
class drawn in proportion to its share of the block), so a generator's output looks like what the super-resolution model was trained on.

>>> sr = SuperResolution(PhaseSchema.bundled("uhcs"), "tiny", device="cpu")
>>> sr.denoiser.config.target_channels, sr.denoiser.config.context_channels
(5, 5)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..core.fractions import mask_fractions
from ..core.options import apply_options, option
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Sample
from ..core.schema import PhaseSchema
from ..models.diffusion import (
    DenoiserConfig,
    FractionControl,
    build_denoiser,
    decode_image,
    encode_image,
    encode_mask,
    reverse_diffusion,
    seeded_noise,
    snap_to_fractions,
)
from ..core.tiles import downscale_pair
from ..models.diffusion_training import DenoiserBatch, DiffusionTrainConfig
from ._diffusion import DenoiserSampling, DiffusionModel, architecture_text, encode_pair, preset_settings

FACTOR = 2
KIND = "super-resolution"
FORMAT_VERSION = "1"

#: ``resolution`` is the output (high-resolution) size.
SR_PRESETS: dict[str, dict[str, Any]] = {
    # paper 000, sec. 2.2.3 and Table A3: 128 -> 256 px
    "paper": dict(resolution=256, block_out_channels=(128, 128, 256, 256, 512, 512), layers_per_block=2,
                  norm_num_groups=32, attention_heads=8),
    # follows PF-DiffSeg's "small" preset: 64 -> 128 px
    "small": dict(resolution=128, block_out_channels=(32, 64, 128, 128), layers_per_block=2,
                  norm_num_groups=8, attention_heads=4),
    # for tests: 16 -> 32 px
    "tiny": dict(resolution=32, block_out_channels=(16, 32, 32), layers_per_block=1,
                 norm_num_groups=8, attention_heads=2),
}


def super_resolution_config(n_classes: int, preset: str = "small", **overrides: Any) -> DenoiserConfig:
    """Denoiser of the 2x model: ``1 + n_classes`` generated channels and as many context channels."""
    settings = preset_settings("super-resolution", SR_PRESETS, preset, overrides)
    return DenoiserConfig(target_channels=1 + n_classes, context_channels=1 + n_classes, **settings)


def low_resolution_context(images: torch.Tensor, masks: torch.Tensor, schema: PhaseSchema) -> torch.Tensor:
    """The condition of the 2x model: low-resolution images ``(B, h, w)`` in [0, 1] and masks ``(B, h, w)``
    upsampled to ``(B, 1 + n_classes, 2h, 2w)`` in [-1, 1] (image bicubic, one-hot mask bilinear)."""
    image = F.interpolate(encode_image(images), scale_factor=FACTOR, mode="bicubic", align_corners=False)
    mask = encode_mask(masks, schema.n_classes, schema.ignore_id)
    mask = F.interpolate(mask, scale_factor=FACTOR, mode="bilinear", align_corners=False)
    return torch.cat([image.clamp(-1.0, 1.0), mask], dim=1)


@dataclass
class SuperResolutionTrainConfig(DiffusionTrainConfig):
    """Training settings of the 2x model (``downscale`` 1 = full resolution, as in the paper, whose 256 px
    targets are the real tiles and whose 128 px generator was trained on those tiles reduced 2x)."""

    l1_weight: float = option(0.0, "lambda of the MSE + lambda * L1 noise loss (0 = plain MSE, paper 000, "
                                   "Table A3)", low=0)
    condition_dropout: float = option(0.0, "share of tiles trained without their condition (0: the 2x model "
                                           "is always conditioned on the low-resolution pair)", low=0, high=1)
    downscale: int = option(1, "high-resolution tiles are crops of resolution x downscale px reduced by "
                               "downscale", low=1)
    augment: bool = option(True, "random flips and 90-degree rotations of the training tiles")


class SuperResolution(DiffusionModel):
    """A 2x super-resolution diffusion model for image + mask pairs (paper 000, sec. 2.2.3).

    Its :attr:`resolution` is the output tile size it was built (and trained) for; inputs are half of it.

    >>> sr = SuperResolution.load("models/sr-uhcs")                        # doctest: +SKIP
    >>> big = sr.upscale(pair)                                              # doctest: +SKIP
    >>> pairs = sr.upscale_many(generator.sample(targets, seed=1))          # doctest: +SKIP
    """

    factor = FACTOR
    label = "super-resolution"
    TrainConfig = SuperResolutionTrainConfig
    presets = tuple(SR_PRESETS)

    @classmethod
    def _preset_configs(cls, n_classes: int, preset: str) -> tuple[DenoiserConfig]:
        return (super_resolution_config(n_classes, preset),)

    def _make_networks(self, configs: tuple[DenoiserConfig], seed: int) -> None:
        (config,), n = configs, self.schema.n_classes
        if (config.target_channels, config.context_channels, config.condition_dim) != (1 + n, 1 + n, 0):
            raise ValueError(
                f"a super-resolution denoiser for {n} phases needs {1 + n} target and {1 + n} context channels "
                f"and no condition vector; got {config.target_channels}, {config.context_channels}, "
                f"{config.condition_dim}"
            )
        self.denoiser = build_denoiser(config, seed=seed).to(self.device).eval()

    # ------------------------------------------------------------ training

    def train(
        self,
        samples: list[Sample],
        config: SuperResolutionTrainConfig | None = None,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> dict[str, Any]:
        """Train on random high-resolution tiles of annotated micrographs and their 2x reductions.

        Returns ``{"steps", "final_loss", "resumed_from", "losses"}``; raises ``Cancelled`` when stopped.
        """
        config, tiles = self._training_tiles(samples, config)

        def next_batch(rng: np.random.Generator, batch_size: int) -> DenoiserBatch:
            images, masks = tiles.draw(rng, batch_size)
            small = [downscale_pair(image, mask, FACTOR, self.schema) for image, mask in zip(images, masks)]
            low_images = torch.from_numpy(np.stack([s[0] for s in small]))
            low_masks = torch.from_numpy(np.stack([s[1] for s in small]))
            return DenoiserBatch(
                target=encode_pair(images, masks, self.schema),
                context=low_resolution_context(low_images, low_masks, self.schema),
            )

        return self._train_recorded(samples, config, next_batch, progress, should_stop)

    # ------------------------------------------------------------ files

    @classmethod
    def folder_identity(cls) -> dict[str, Any]:
        return {"kind": KIND, "format_version": FORMAT_VERSION}

    def _folder_config(self) -> dict[str, Any]:
        return {**super()._folder_config(), "factor": FACTOR}

    def _model_card(self, config: dict[str, Any]) -> str:
        cfg = self.denoiser.config
        about = [
            "Generates a micrograph and its phase mask at twice the size of a given low-resolution pair",
            "(paper 000 of napari-microsynth, sec. 2.2.3).",
        ]
        return self._card("2x super-resolution model", about, [
            f"- output resolution: {cfg.resolution} px (input {cfg.resolution // FACTOR} px), {architecture_text(cfg)}",
            self._training_line(),
        ])

    # ------------------------------------------------------------ upscaling

    def upscale(
        self, sample: Sample, seed: int | None = None, sampler: str = "ddim", steps: int | None = None
    ) -> Sample:
        """``sample`` at twice the size: new image and new mask generated from the low-resolution pair.

        ``seed`` None = the sample's recorded seed (0 if it has none). Provenance is kept, with
        ``extra["super_resolution"]`` = this model's checksum and ``extra["super_resolution_sampling"]``
        the seed and sampler settings; ``pixel_size_um`` and ``extra["downscale"]`` are halved. Any size
        works whose doubled sides fit the U-Net (multiples of ``2 ** (stages - 1)``); the model was trained
        at :attr:`resolution`.
        """
        return next(self.upscale_many([sample], seed=seed, sampler=sampler, steps=steps, batch_size=1))

    def upscale_many(
        self,
        samples: Iterable[Sample],
        seed: int | None = None,
        sampler: str = "ddim",
        steps: int | None = None,
        batch_size: int = 4,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> Iterator[Sample]:
        """Upscale a stream of pairs (e.g. a generator's :meth:`sample` iterator), yielding each in turn.

        Consecutive samples of equal shape are upscaled ``batch_size`` at a time. Sample ``i`` uses seed
        ``seed + i``, or its own recorded seed when ``seed`` is None. ``progress`` counts the denoising
        steps of the current batch.
        """
        settings = asdict(apply_options(DenoiserSampling, dict(sampler=sampler, steps=steps, batch_size=batch_size)))
        return self._upscale_stream(iter(samples), seed, settings, progress, should_stop)

    def _check(self, sample: Sample) -> None:
        if sample.mask is None:
            raise ValueError(f"sample {sample.name!r} has no mask; super-resolution upscales image + mask pairs")
        if sample.schema.names != self.schema.names:
            raise ValueError(
                f"sample {sample.name!r} uses schema {sample.schema.name!r}; this model was trained for "
                f"{self.schema.name!r} ({', '.join(self.schema.names)})"
            )
        unit = 2 ** (len(self.denoiser.config.block_out_channels) - 1)
        h, w = sample.shape
        if (FACTOR * h) % unit or (FACTOR * w) % unit:
            raise ValueError(
                f"sample {sample.name!r} is {h}x{w}; twice its sides must be multiples of {unit} for this model"
            )

    def _upscale_stream(
        self, samples: Iterator[Sample], seed: int | None, settings: dict[str, Any], progress: ProgressFn,
        should_stop: StopFn,
    ) -> Iterator[Sample]:
        batch: list[tuple[Sample, int]] = []
        for i, sample in enumerate(samples):
            self._check(sample)
            if seed is not None:
                sample_seed = int(seed) + i
            else:
                sample_seed = 0 if sample.provenance.seed is None else int(sample.provenance.seed)
            if batch and (len(batch) == settings["batch_size"] or batch[0][0].shape != sample.shape):
                yield from self._upscale_batch(batch, settings, progress, should_stop)
                batch = []
            batch.append((sample, sample_seed))
        if batch:
            yield from self._upscale_batch(batch, settings, progress, should_stop)

    def _upscale_batch(
        self, batch: list[tuple[Sample, int]], settings: dict[str, Any], progress: ProgressFn, should_stop: StopFn
    ) -> Iterator[Sample]:
        check_stop(should_stop)
        steps = settings["steps"]
        names = ", ".join(s.name or "?" for s, _ in batch)

        def on_step(done: int, of: int) -> None:
            progress(done, of, f"upscaling {names}: step {done}/{of}")
            check_stop(should_stop)

        images = torch.from_numpy(np.stack([s.image for s, _ in batch]))
        masks = torch.from_numpy(np.stack([s.mask.astype(np.int64) for s, _ in batch]))
        context = low_resolution_context(images, masks, self.schema).to(self.device)
        noise = seeded_noise([seed for _, seed in batch], tuple(context.shape[1:])).to(self.device)
        # the upscaled mask keeps the low-resolution pair's phase fractions: fraction control while denoising,
        # then the class thresholds of the result shifted to meet them (the low-resolution pair fixes the content)
        fractions = torch.from_numpy(np.stack([mask_fractions(s.mask, self.schema) for s, _ in batch])).float()
        fractions = fractions.to(self.device)
        x = reverse_diffusion(self.denoiser, noise, context=context, sampler=settings["sampler"], steps=steps,
                              on_step=on_step, control=FractionControl(fractions, first_mask_channel=1))
        big_images = decode_image(x[:, :1]).cpu().numpy()
        big_masks = snap_to_fractions(x[:, 1:], fractions).cpu().numpy()
        for j, (sample, seed) in enumerate(batch):
            record = {"seed": seed, "sampler": settings["sampler"], "steps": steps}
            instances = sample.instances
            if instances is not None:  # grain labels follow the low-resolution map (nearest neighbour)
                instances = np.repeat(np.repeat(np.asarray(instances), FACTOR, axis=0), FACTOR, axis=1)
            yield replace(
                sample,
                image=big_images[j],
                mask=big_masks[j],
                instances=instances,
                pixel_size_um=None if sample.pixel_size_um is None else sample.pixel_size_um / FACTOR,
                properties=dict(sample.properties),
                provenance=replace(
                    sample.provenance,
                    extra={
                        **sample.provenance.extra,
                        **({"downscale": sample.provenance.extra["downscale"] / FACTOR}
                           if "downscale" in sample.provenance.extra else {}),
                        "super_resolution": self.model_checksum,
                        "super_resolution_sampling": record,
                    },
                ),
            )
