"""TiM3 (paper 004): property-conditioned two-stage latent diffusion, on real steel processing conditions.

Paper 004 generates titanium micrographs for given mechanical properties in two latent-diffusion stages:
stage 1 makes the "metallographic image" (the phase map) from the properties, stage 2 the micrograph from
that phase map. Here the conditions are UHCS's real processing conditions (anneal temperature, anneal
time, cooling method), and the output is an image + mask pair like every other family.

What is the paper's and what is ours:

- **Latent space** (sec. 3.1): LDM autoencoders, trained here from scratch (no weights can be downloaded):
  one for the phase map (one-hot in, class logits out) and one for the grey micrograph
  (:mod:`~napari_microsynth.models.latent_autoencoder`). The ``paper`` preset uses the paper's f = 8 and
  4 latent channels at 256 px; the CPU presets use f = 4 (the README gives the f = 4 / f = 8 reconstruction
  numbers behind that choice).
- **Probabilistic property encoder** (sec. 3.2, eq. 3-6; :mod:`~napari_microsynth.models.property_encoder`):
  MLP to D, a U-component Gaussian mixture with predicted means and log-variances, embedding drawn by
  reparameterisation, in training and in inference; the plain MLP encoder of the ablation is
  ``property_encoder="mlp"``. Zero-mean Gaussian noise on the training conditions (appendix B). The
  cooling method is categorical: a one-hot block of the encoder's input (the paper has only continuous
  properties); continuous properties are mapped from their real range to [-1, 1] (anneal time on a log axis).
- **Denoisers** (sec. 3.1, 3.3; :mod:`~napari_microsynth.models.latent_denoiser`): U-Nets over latents with
  vanilla cross-attention on the embedding at every level (stage 1), LDM's noise schedule, DDIM with 20
  steps. Stage 2 concatenates the encoded phase map to the noisy latent (eq. 7). The paper encodes the phase
  map with a frozen CLIP image encoder; that is replaced here by the frozen encoder of the phase-map
  autoencoder trained here (it keeps the phase map's layout at latent resolution, which is what eq. 7
  concatenates). At sampling, stage 1's latent is decoded to the class map that is returned, and that
  very map is re-encoded for stage 2, so image and mask correspond.
- **One-stage ablation** (Table 2): ``stages="one"`` diffuses the image and phase-map latents together,
  conditioned on the properties, and decodes both.
- The denoisers train on a bank of latents of random augmented training crops, encoded once after the
  autoencoders are trained (the autoencoders are frozen by then, so this is what encoding each batch
  would give, at a fraction of the cost on a CPU). Micrographs without processing conditions still train
  the autoencoders and stage 2 (which does not see the conditions).

>>> gen = TiM3(PhaseSchema.bundled("uhcs"), "tiny", device="cpu")
>>> [p.name for p in gen.condition_spec.properties]
['anneal_temperature_c', 'anneal_time_h', 'cool_method']
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..core.conditions import hull_conditions
from ..core.options import option
from ..core.progress import Cancelled, ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Provenance, Sample
from ..core.schema import PhaseSchema
from ..core.tiles import RandomPairTiles
from ..models.device import resolve_device
from ..models.diffusion import seeded_noise
from ..models.folder import load_weights
from ..models.latent_autoencoder import (
    AutoencoderTraining,
    LatentAutoencoder,
    LatentAutoencoderConfig,
    image_input,
    image_output,
    mask_input,
    reconstruction_scores,
    train_autoencoder,
)
from ..models.latent_denoiser import (
    DEFAULT_DDIM_STEPS,
    LatentBatch,
    LatentDenoiser,
    LatentDenoiserConfig,
    LatentTraining,
    build_latent_denoiser,
    ddim_sample,
    train_latent_denoiser,
)
from ..models.property_encoder import (
    ENCODER_KINDS,
    PropertyCoder,
    PropertyEncoder,
    PropertyEncoderConfig,
    coder_for,
    conditions_of,
    embedding_noise,
    encode_conditions,
    sample_value,
)
from ..models.trainer import MIXED_PRECISION_CHOICES, LoopSettings, TrainResult
from . import register_generator
from .base import (
    ConditionSpec,
    Generator,
    PropertyRange,
    TrainingRecord,
    batch_ranges,
    stage_records,
    tile_pixel_size,
    training_tiles,
)

#: noise streams of one seed (see ``seeded_noise``): stage-1 / joint latent, stage-2 latent, embedding, DDIM eta
FIRST_NOISE, SECOND_NOISE, EMBEDDING_NOISE, STEP_NOISE = 0, 1, 2, 3
STAGE_LAYOUTS = {"two": ("stage1", "stage2"), "one": ("joint",)}
#: units shown for the properties the UHCS loader records
UNITS = {"anneal_temperature_c": "°C", "anneal_time_h": "h"}
#: before training: the conditions of the whole UHCS metadata (1732 micrographs); training sets the real ranges
UNTRAINED_CODER = PropertyCoder(
    continuous=(("anneal_temperature_c", 700.0, 1100.0, False), ("anneal_time_h", 5.0 / 60.0, 85.0, True)),
    categorical=(("cool_method", ("650-1H", "AR", "FC", "Q")),),
)

PRESETS: dict[str, dict[str, Any]] = {
    # paper 004, sec. 4.1: 256 px tiles, f = 8, 32 x 32 x 4 latents (a GPU model)
    "paper": dict(
        resolution=256,
        autoencoder=dict(block_channels=(64, 128, 256, 256), latent_channels=4, res_blocks=2, norm_groups=32),
        denoiser=dict(block_out_channels=(128, 256, 256), layers_per_block=2, norm_num_groups=32, attention_heads=8),
        encoder=dict(embed_dim=256, components=4, hidden=256, tokens=1),
    ),
    # a model this CPU trains in well under an hour: 64 px tiles (128 px crops halved), f = 4, 16 x 16 x 4 latents;
    # the 16 x 16 level of the stage-1 U-Net has no attention (the 8 x 8 and 4 x 4 levels attend to the embedding)
    "small": dict(
        resolution=64,
        autoencoder=dict(block_channels=(16, 32, 64), latent_channels=4, res_blocks=1, norm_groups=8),
        denoiser=dict(block_out_channels=(32, 64, 96), layers_per_block=1, norm_num_groups=8, attention_heads=4,
                      plain_levels=1),
        encoder=dict(embed_dim=64, components=4, hidden=128, tokens=1),
    ),
    # for tests: 32 px tiles, f = 4, 8 x 8 latents
    "tiny": dict(
        resolution=32,
        autoencoder=dict(block_channels=(8, 16, 16), latent_channels=4, res_blocks=0, norm_groups=8),
        denoiser=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, attention_heads=2),
        encoder=dict(embed_dim=16, components=2, hidden=32, tokens=1),
    ),
}


@dataclass
class TiM3TrainConfig:
    """Training settings of the two autoencoders and the latent denoiser(s) (paper 004, sec. 4.1)."""

    steps: int = option(3000, "steps of each latent denoiser (stage 1 and stage 2, or the joint one)", low=1)
    batch_size: int = option(16, "latent tiles per denoiser step (paper 004: 32)", low=1)
    learning_rate: float = option(3e-4, "AdamW learning rate of the denoisers and the property encoder", low=0)
    lr_warmup_steps: int = option(100, "steps of linear learning-rate warm-up of each denoiser", low=0)
    autoencoder_steps: int = option(1000, "steps of each autoencoder (micrograph, phase map)", low=1)
    autoencoder_batch_size: int = option(8, "tiles per autoencoder step", low=1)
    autoencoder_lr: float = option(1e-3, "AdamW learning rate of the autoencoders", low=0)
    kl_weight: float = option(1e-6, "KL weight of the autoencoders (LDM: 1e-6 on per-image sums)", low=0,
                              advanced=True)
    autoencoders_from: str | None = option(None, "a tim3 model folder whose two autoencoders are used as they are "
                                                 "(not trained again), e.g. to compare encoders or stage layouts "
                                                 "in one latent space", advanced=True)
    latent_bank: int = option(4096, "augmented training crops encoded once for the denoisers' steps", low=1)
    property_encoder: str = option("probabilistic", "probabilistic: paper 004's Gaussian-mixture encoder (eq. 3-6); "
                                                    "mlp: the plain MLP encoder of its ablation (Table 2)",
                                   choices=ENCODER_KINDS)
    stages: str = option("two", "two: phase map from the conditions, then the micrograph from the phase map "
                                "(TiM3); one: both latents together (the ablation's one-stage model)",
                         choices=tuple(STAGE_LAYOUTS))
    condition_noise: float = option(0.08, "std of the zero-mean Gaussian noise on the training conditions, as a "
                                          "share of each property's range (paper 004, appendix B: about 8 %)",
                                    low=0, high=1)
    categorical: str = option("cool_method", "sample keys used as categorical conditions, comma-separated "
                                             "('' for none; UHCS: the cooling method)")
    downscale: int = option(2, "crops of resolution x downscale px are reduced to the model resolution (paper 004 "
                               "cuts 256 px tiles at full resolution: 1 with the paper preset)", low=1)
    augment: bool = option(True, "random flips and 90-degree rotations of the training tiles")
    ema_decay: float = option(0.999, "decay of the denoisers' moving average used for sampling", low=0, high=1,
                              advanced=True)
    mixed_precision: str = option("auto", "mixed precision (GPU only; auto: bf16/fp16 on CUDA)",
                                  choices=MIXED_PRECISION_CHOICES, advanced=True)
    checkpoint_dir: str | None = option(None, "folder of the checkpoints (one subfolder per network); a rerun "
                                              "resumes", advanced=True)
    checkpoint_every: int = option(1000, "steps between checkpoints", low=1)
    keep_checkpoints: int = option(2, "checkpoints kept per network", low=1, advanced=True)
    resume: bool = option(True, "continue from the newest checkpoints", advanced=True)
    seed: int = option(0, "seed of the training draws", low=0)

    def loop(self, stage: str, steps: int, device: torch.device) -> LoopSettings:
        folder = None if self.checkpoint_dir is None else str(Path(self.checkpoint_dir) / stage)
        return LoopSettings(steps, self.seed, device, self.mixed_precision, folder, self.checkpoint_every,
                            self.keep_checkpoints, self.resume)

    @property
    def categorical_keys(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.categorical.split(",") if k.strip())


@dataclass
class TiM3Sampling:
    """Sampling options (paper 004: DDIM, 20 steps; the embedding drawn from the mixture)."""

    steps: int = option(DEFAULT_DDIM_STEPS, "DDIM steps of each stage (paper 004: 20)", low=1)
    embedding: str = option("sample", "sample: draw the property embedding from the encoder's Gaussian mixture "
                                      "(paper 004, eq. 6); mean: the mixture's mean (no draw)",
                            choices=("sample", "mean"))
    eta: float = option(0.0, "DDIM eta (0: deterministic steps, the paper's DDIM)", low=0, high=1, advanced=True)
    batch_size: int = option(4, "pairs denoised together (changes speed and memory, not the pairs)", low=1,
                             advanced=True)


def spec_of(coder: PropertyCoder) -> ConditionSpec:
    """The condition spec a coder stands for: a range per continuous property, categories per categorical one."""
    ranges = [PropertyRange(name, low, high, UNITS.get(name, "")) for name, low, high, _ in coder.continuous]
    ranges += [PropertyRange.categorical(name, categories) for name, categories in coder.categorical]
    return ConditionSpec.of_properties(ranges)


@register_generator
class TiM3(Generator):
    """Property-conditioned latent diffusion (paper 004): phase map from the conditions, then the micrograph."""

    name = "tim3"
    version = "1"
    description = ("Micrograph + phase map for processing conditions (anneal temperature, time, cooling): "
                   "two-stage latent diffusion with a probabilistic property encoder (paper 004, TiM3)")
    presets = tuple(PRESETS)
    TrainConfig = TiM3TrainConfig
    SamplingConfig = TiM3Sampling

    def __init__(self, schema: PhaseSchema, preset: str = "small", device: str = "auto", seed: int = 0):
        super().__init__(schema, preset, device, seed)
        self.device = resolve_device(device)
        self._seed = int(seed)
        settings = PRESETS[preset]
        self._resolution = int(settings["resolution"])
        ae = settings["autoencoder"]
        self._build(UNTRAINED_CODER,
                    LatentAutoencoderConfig(kind="image", **ae),
                    LatentAutoencoderConfig(kind="mask", n_classes=schema.n_classes, **ae),
                    "probabilistic", "two", seed)

    # ------------------------------------------------------------ networks

    def _configs(self, coder: PropertyCoder, image: LatentAutoencoderConfig, mask: LatentAutoencoderConfig,
                 encoder_kind: str, stages: str) -> tuple[PropertyEncoderConfig, dict[str, LatentDenoiserConfig]]:
        """The property encoder's and the denoisers' configs of this preset for a coder and a layout."""
        settings = PRESETS[self.preset] if self.preset in PRESETS else PRESETS["small"]
        encoder = PropertyEncoderConfig(input_dim=coder.dim, kind=encoder_kind, **settings["encoder"])
        size = self._resolution // image.downsampling
        common = dict(latent_size=size, **settings["denoiser"])
        if stages == "two":
            denoisers = {
                "stage1": LatentDenoiserConfig(latent_channels=mask.latent_channels,
                                               cross_attention_dim=encoder.embed_dim, **common),
                "stage2": LatentDenoiserConfig(latent_channels=image.latent_channels,
                                               context_channels=mask.latent_channels, **common),
            }
        else:
            denoisers = {"joint": LatentDenoiserConfig(latent_channels=image.latent_channels + mask.latent_channels,
                                                       cross_attention_dim=encoder.embed_dim, **common)}
        return encoder, denoisers

    def _build(self, coder: PropertyCoder, image: LatentAutoencoderConfig, mask: LatentAutoencoderConfig,
               encoder_kind: str, stages: str, seed: int, encoder: PropertyEncoderConfig | None = None,
               denoisers: dict[str, LatentDenoiserConfig] | None = None) -> None:
        """Fresh networks (initial weights from ``seed``) on :attr:`device`; configs from the preset unless given."""
        if mask.n_classes != self.schema.n_classes or image.kind != "image" or mask.kind != "mask":
            raise ValueError(f"an image autoencoder and a phase-map autoencoder for {self.schema.n_classes} "
                             "phases are needed")
        if self._resolution % image.downsampling or self._resolution % mask.downsampling:
            raise ValueError(f"tile size {self._resolution} must be a multiple of the autoencoders' downsampling")
        if image.downsampling != mask.downsampling:
            raise ValueError("both autoencoders need the same downsampling")
        if encoder is None or denoisers is None:
            encoder, denoisers = self._configs(coder, image, mask, encoder_kind, stages)
        self.coder, self.stages = coder, stages
        #: the processing conditions of the conditioned training micrographs, one per micrograph (categories as
        #: indices): what :meth:`plausible_conditions` draws between
        self.training_conditions: list[dict[str, float]] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.image_autoencoder = LatentAutoencoder(image).to(self.device).eval()
            self.mask_autoencoder = LatentAutoencoder(mask).to(self.device).eval()
            self.property_encoder = PropertyEncoder(encoder).to(self.device).eval()
        self.denoisers: dict[str, LatentDenoiser] = {
            name: build_latent_denoiser(cfg, seed + 1 + k).to(self.device).eval()
            for k, (name, cfg) in enumerate(denoisers.items())
        }
        if tuple(self.denoisers) != STAGE_LAYOUTS[stages]:
            raise ValueError(f"a {stages}-stage model has the denoisers {STAGE_LAYOUTS[stages]}, got {tuple(denoisers)}")

    @property
    def condition_spec(self) -> ConditionSpec:
        return spec_of(self.coder)

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def latent_size(self) -> int:
        return self._resolution // self.image_autoencoder.config.downsampling

    # ------------------------------------------------------------ training

    def train(
        self,
        samples: list[Sample],
        config: TiM3TrainConfig | None = None,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> dict[str, Any]:
        """Train both autoencoders, encode a bank of training crops, then the denoiser(s) with the property
        encoder. The conditions' ranges (and categories) become the model's :attr:`condition_spec`.

        Progress runs over every network (``2 * autoencoder_steps + latent_bank / 64 + n_stages * steps``).
        With ``autoencoders_from`` the autoencoders (and their latent standardisation) of that model folder are
        used as they are.
        Returns ``{"steps", "final_loss", "stages", "left_out"}``: the denoisers' steps and mean final loss,
        per network its steps, final loss and losses, and the micrographs left out of the conditioned stage
        (no processing conditions recorded).
        """
        config, tiles = training_tiles(samples, config, self.TrainConfig, self.schema, self._resolution, self.name)
        labelled = tiles.samples
        keys = config.categorical_keys
        known = [s for s in labelled if all(sample_value(s, k) is not None for k in keys) and s.properties]
        if not known:
            raise ValueError(f"{self.name} trains on micrographs with processing conditions (Sample.properties"
                             + (f" and {', '.join(keys)}" if keys else "") + "); none of the "
                             f"{len(labelled)} given records them")
        coder = coder_for(known, keys)
        conditions = conditions_of(labelled, coder)
        left_out = [s.name for s, c in zip(labelled, conditions) if c is None]
        self.pixel_size_um = tile_pixel_size(labelled, config.downscale)
        self.model_checksum = ""
        self._build(coder, self.image_autoencoder.config, self.mask_autoencoder.config, config.property_encoder,
                    config.stages, self._seed)
        self.training_conditions = [c for c in conditions if c is not None]
        given = self._given_autoencoders(config.autoencoders_from)
        names = ["image_autoencoder", "mask_autoencoder", *self.denoisers]
        ae_steps = 0 if given else config.autoencoder_steps
        steps = {"image_autoencoder": ae_steps, "mask_autoencoder": ae_steps,
                 **{name: config.steps for name in self.denoisers}}
        bank_work = max(1, config.latent_bank // 64)
        total = sum(steps.values()) + bank_work
        offsets, done = {}, 0
        for name in names[:2]:
            offsets[name], done = done, done + steps[name]
        offsets["bank"], done = done, done + bank_work
        for name in names[2:]:
            offsets[name], done = done, done + steps[name]

        def part(name: str):
            return lambda d, _, message: progress(offsets[name] + d, total, f"{name.replace('_', ' ')}: {message}")

        results: dict[str, TrainResult] = {}
        ignore = self.schema.ignore_id
        try:
            for name, ae in (("image_autoencoder", self.image_autoencoder), ("mask_autoencoder", self.mask_autoencoder)):
                if given:
                    ae.load_state_dict(given[name])
                    results[name] = TrainResult(0)
                    continue
                kind = ae.config.kind

                def ae_batch(rng: np.random.Generator, batch_size: int, kind: str = kind) -> torch.Tensor:
                    images, masks = tiles.draw(rng, batch_size)
                    return image_input(images) if kind == "image" else mask_input(masks, self.schema.n_classes, ignore)

                training = AutoencoderTraining(config.autoencoder_steps, config.autoencoder_batch_size,
                                               config.autoencoder_lr, config.kl_weight)
                results[name] = train_autoencoder(ae, ae_batch, training, config.loop(name, steps[name], self.device),
                                                  part(name), should_stop)
            check_stop(should_stop)
            bank = self._latent_bank(tiles, conditions, coder, config, part("bank"), should_stop, not given)
            reconstruction = self._reconstruction(tiles, config.seed)
            conditioned = np.flatnonzero(bank["has_condition"])
            if not len(conditioned):
                raise ValueError("no training crop comes from a micrograph with processing conditions")

            def latent_batch(rng: np.random.Generator, batch_size: int, stage: str) -> LatentBatch:
                pool = conditioned if stage != "stage2" else np.arange(len(bank["image"]))
                pick = pool[rng.integers(0, len(pool), batch_size)]
                vectors = None
                if stage != "stage2":
                    vectors = torch.from_numpy(coder.jitter(bank["vectors"][pick], rng, config.condition_noise))
                if stage == "stage1":
                    return LatentBatch(bank["mask"][pick], conditions=vectors)
                if stage == "stage2":
                    return LatentBatch(bank["image"][pick], context=bank["mask"][pick])
                return LatentBatch(torch.cat([bank["image"][pick], bank["mask"][pick]], dim=1), conditions=vectors)

            training = LatentTraining(config.steps, config.batch_size, config.learning_rate, config.lr_warmup_steps,
                                      ema_decay=config.ema_decay)
            for name, denoiser in self.denoisers.items():
                encoder = None if name == "stage2" else self.property_encoder
                results[name] = train_latent_denoiser(
                    denoiser, encoder, lambda rng, b, name=name: latent_batch(rng, b, name), training,
                    config.loop(name, steps[name], self.device), part(name), should_stop)
        except Cancelled as stopped:
            failed = next(n for n in names if n not in results)
            results[failed] = stopped.result  # type: ignore[attr-defined]
            self._record(samples, config, results, left_out, {})
            raise
        finally:
            for module in (self.image_autoencoder, self.mask_autoencoder, self.property_encoder,
                           *self.denoisers.values()):
                module.eval()
        self._record(samples, config, results, left_out, reconstruction)
        denoised = [results[n] for n in self.denoisers]
        finals = [r.final_loss for r in denoised if r.final_loss is not None]
        return {"steps": min(r.steps for r in denoised), "final_loss": float(np.mean(finals)) if finals else None,
                "stages": {n: {"steps": r.steps, "final_loss": r.final_loss, "losses": r.losses}
                           for n, r in results.items()},
                "left_out": left_out, "reconstruction": reconstruction}

    def _given_autoencoders(self, folder: str | None) -> dict[str, dict[str, torch.Tensor]]:
        """The autoencoder weights of the tim3 model folder ``folder`` (none for None), checked to fit."""
        if folder is None:
            return {}
        from ..models.folder import read_model_config

        config = read_model_config(folder)
        self.check_folder(folder, config)
        if PhaseSchema.from_dict(config["schema"]).names != self.schema.names or int(config["resolution"]) != self._resolution:
            raise ValueError(f"the autoencoders of {folder} are for other phases or another tile size than this model's")
        out = {}
        for name, ae in (("image_autoencoder", self.image_autoencoder), ("mask_autoencoder", self.mask_autoencoder)):
            if LatentAutoencoderConfig.from_dict(config[name]) != ae.config:
                raise ValueError(f"the {name.replace('_', ' ')} of {folder} is not the {self.preset} preset's")
            out[name] = load_weights(folder, name)
        return out

    @torch.no_grad()
    def _latent_bank(self, tiles: RandomPairTiles, conditions: list[dict[str, float] | None], coder: PropertyCoder,
                     config: TiM3TrainConfig, progress: ProgressFn, should_stop: StopFn,
                     standardise: bool = True) -> dict[str, Any]:
        """Standardised image and phase-map latents of ``latent_bank`` random training crops, with the coded
        conditions of their micrographs (with ``standardise``, sets both autoencoders' latent statistics first)."""
        rng = np.random.default_rng([config.seed, 7])
        ignore, n = self.schema.ignore_id, config.latent_bank
        if standardise:
            first = tiles.draw(np.random.default_rng([config.seed, 8]), min(n, 256))
            self.image_autoencoder.set_latent_statistics(
                [image_input(first[0][i:i + 32]) for i in range(0, len(first[0]), 32)])
            self.mask_autoencoder.set_latent_statistics(
                [mask_input(first[1][i:i + 32], self.schema.n_classes, ignore) for i in range(0, len(first[1]), 32)])
        images, masks, vectors, known = [], [], [], []
        zero = np.zeros(coder.dim, np.float32)
        for start in range(0, n, 64):
            check_stop(should_stop)
            im, ma, src = tiles.draw(rng, min(64, n - start), with_sources=True)
            images.append(self.image_autoencoder.encode(image_input(im).to(self.device)).cpu())
            masks.append(self.mask_autoencoder.encode(mask_input(ma, self.schema.n_classes, ignore).to(self.device)).cpu())
            rows = [conditions[int(k)] for k in src]
            vectors.append(np.stack([coder.vector([c])[0] if c is not None else zero for c in rows]))
            known.append(np.array([c is not None for c in rows]))
            progress(start // 64 + 1, max(1, n // 64), f"encoding training crops {min(n, start + 64)}/{n}")
        return {"image": torch.cat(images), "mask": torch.cat(masks), "vectors": np.concatenate(vectors),
                "has_condition": np.concatenate(known)}

    @torch.no_grad()
    def _reconstruction(self, tiles: RandomPairTiles, seed: int) -> dict[str, dict[str, float]]:
        """Reconstruction through each autoencoder of 64 fresh random training crops (for the model card)."""
        images, masks = tiles.draw(np.random.default_rng([seed, 9]), 64)
        return {name: reconstruction_scores(ae, images, masks, self.schema.ignore_id)
                for name, ae in (("image", self.image_autoencoder), ("mask", self.mask_autoencoder))}

    def _record(self, samples: list[Sample], config: TiM3TrainConfig, results: dict[str, TrainResult],
                left_out: list[str], reconstruction: dict[str, Any]) -> None:
        denoised = [results[n] for n in self.denoisers if n in results]
        finals = [r.final_loss for r in denoised if r.final_loss is not None]
        self.training = TrainingRecord.of_run(
            samples, config, min(r.steps for r in denoised) if len(denoised) == len(self.denoisers) else 0,
            float(np.mean(finals)) if finals else None, device=str(self.device), left_out=left_out,
            reconstruction=reconstruction, **stage_records(results))

    # ------------------------------------------------------------ sampling

    def plausible_conditions(self, n: int, seed: int = 0) -> list[dict[str, float]]:
        """``n`` conditions between those of the training micrographs (paper 004, Algorithm 1: uniform in the
        convex hull of each cooling method's conditions, the cooling method drawn as often as the training
        micrographs have it; :func:`~napari_microsynth.core.conditions.hull_conditions`), for :meth:`sample`.
        The model folder keeps the training conditions, so no data is needed."""
        if not self.training_conditions:
            raise ValueError("this tim3 model records no training conditions: train it first")
        return hull_conditions(self.training_conditions, [c[0] for c in self.coder.continuous],
                               [name for name, _ in self.coder.categorical], n, seed)

    def _generate(self, conditions, seeds, progress, should_stop, sampling: TiM3Sampling) -> Iterator[Sample]:
        n, steps = len(conditions), sampling.steps
        layout = tuple(self.denoisers)
        batches = batch_ranges(n, sampling.batch_size)
        total = len(batches) * len(layout) * steps
        size, ignore = self.latent_size, self.schema.ignore_id
        for b, index in enumerate(batches):
            check_stop(should_stop)
            batch_seeds = [seeds[i] for i in index]

            def on_step(done: int, of: int, stage: int) -> None:
                progress((len(layout) * b + stage) * steps + done, total,
                         f"samples {index[0] + 1}-{index[-1] + 1} of {n}: {layout[stage]} step {done}/{of}")
                check_stop(should_stop)

            wanted = [conditions[i]["properties"] for i in index]
            with torch.no_grad():
                vectors = torch.from_numpy(self.coder.vector(wanted)).to(self.device)
                tokens = encode_conditions(self.property_encoder, vectors,
                                           embedding_noise(batch_seeds, EMBEDDING_NOISE),
                                           sample=sampling.embedding == "sample")
                first = self.denoisers[layout[0]]
                noise = seeded_noise(batch_seeds, (first.config.latent_channels, size, size), FIRST_NOISE).to(self.device)
                z = ddim_sample(first, noise, tokens=tokens, steps=steps, eta=sampling.eta,
                                generators=self._step_generators(batch_seeds, 0),
                                on_step=lambda d, of: on_step(d, of, 0))
                image_channels = self.image_autoencoder.config.latent_channels
                mask_latent = z if self.stages == "two" else z[:, image_channels:]
                masks = self.mask_autoencoder.decode(mask_latent).argmax(dim=1)
                if self.stages == "two":
                    context = self.mask_autoencoder.encode(mask_input(masks.cpu(), self.schema.n_classes, ignore)
                                                           .to(self.device))
                    second = self.denoisers["stage2"]
                    noise = seeded_noise(batch_seeds, (second.config.latent_channels, size, size),
                                         SECOND_NOISE).to(self.device)
                    image_latent = ddim_sample(second, noise, context=context, steps=steps, eta=sampling.eta,
                                               generators=self._step_generators(batch_seeds, 1),
                                               on_step=lambda d, of: on_step(d, of, 1))
                else:
                    image_latent = z[:, :image_channels]
                images = image_output(self.image_autoencoder.decode(image_latent))
                masks = masks.cpu().numpy()
            for j, i in enumerate(index):
                labels = {name: categories[int(wanted[j][name])] for name, categories in self.coder.categorical}
                yield Sample(image=images[j], schema=self.schema, mask=masks[j].astype(np.int64),
                             pixel_size_um=self.pixel_size_um,
                             provenance=Provenance(origin="synthetic", extra={
                                 "downscale": self.downscale, "stages": self.stages,
                                 "property_encoder": self.property_encoder.config.kind, **labels}))

    def _step_generators(self, seeds: Sequence[int], stage: int) -> list[torch.Generator]:
        """Generators of the DDIM step noise (used when eta > 0), one per seed and stage."""
        return embedding_noise(seeds, STEP_NOISE * 16 + stage)

    # ------------------------------------------------------------ model folder

    def _folder_config(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "schema": self.schema.to_dict(),
            "resolution": self._resolution,
            "stages": self.stages,
            "coder": self.coder.to_dict(),
            "training_conditions": self.training_conditions,
            "image_autoencoder": self.image_autoencoder.config.to_dict(),
            "mask_autoencoder": self.mask_autoencoder.config.to_dict(),
            "property_encoder": self.property_encoder.config.to_dict(),
            "denoisers": {name: d.config.to_dict() for name, d in self.denoisers.items()},
            "pixel_size_um": self.pixel_size_um,
            "condition": self.condition_spec.to_dict(),
            "training": asdict(self.training),
        }

    def _folder_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        weights = {"image_autoencoder": self.image_autoencoder.state_dict(),
                   "mask_autoencoder": self.mask_autoencoder.state_dict(),
                   "property_encoder": self.property_encoder.state_dict()}
        weights.update({name: d.state_dict() for name, d in self.denoisers.items()})
        return weights

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> "TiM3":
        schema = PhaseSchema.from_dict(config["schema"])
        model = cls.__new__(cls)
        Generator.__init__(model, schema, config["preset"], device)
        model.device = resolve_device(device)
        model._seed = 0
        model._resolution = int(config["resolution"])
        encoder = PropertyEncoderConfig.from_dict(config["property_encoder"])
        model._build(PropertyCoder.from_dict(config["coder"]),
                     LatentAutoencoderConfig.from_dict(config["image_autoencoder"]),
                     LatentAutoencoderConfig.from_dict(config["mask_autoencoder"]), encoder.kind, config["stages"], 0,
                     encoder, {name: LatentDenoiserConfig.from_dict(c) for name, c in config["denoisers"].items()})
        for name in ("image_autoencoder", "mask_autoencoder", "property_encoder", *model.denoisers):
            module = getattr(model, name) if name in ("image_autoencoder", "mask_autoencoder", "property_encoder") \
                else model.denoisers[name]
            module.load_state_dict(load_weights(folder, name))
            module.to(model.device).eval()
        model.pixel_size_um = config.get("pixel_size_um")
        model.training_conditions = [dict(c) for c in config.get("training_conditions", [])]
        model.training = TrainingRecord(**config.get("training", {}))
        return model

    def _model_card(self, config: dict[str, Any]) -> str:
        t, ae = self.training, self.image_autoencoder.config
        settings = t.settings
        stage_steps, stage_loss = settings.get("stage_steps", {}), settings.get("stage_final_loss", {})
        rec = settings.get("reconstruction") or {}
        spec = self.condition_spec
        ranges = "; ".join(
            f"{p.name} {', '.join(p.categories)}" if p.categories else f"{p.name} {p.low:g} to {p.high:g} {p.unit}".rstrip()
            for p in spec.properties)
        enc = self.property_encoder.config
        lines = [
            f"# TiM3 property-conditioned latent diffusion ({self.preset} preset)", "",
            "Generates a phase map for given processing conditions, then a grey micrograph for that phase map",
            "(paper 004, TiM3), in the latent spaces of two autoencoders trained from scratch; the paper's frozen",
            "CLIP image encoder of stage 2 is replaced by the frozen encoder of the phase-map autoencoder.", "",
            f"- phase schema: {self.schema.name} ({', '.join(self.schema.names)})",
            f"- conditions (training data's ranges): {ranges}",
            f"- layout: {'two stages (phase map, then micrograph)' if self.stages == 'two' else 'one stage (joint latents)'}"
            f"; property encoder: {enc.kind} (D = {enc.embed_dim}"
            + (f", U = {enc.components} components)" if enc.kind == "probabilistic" else ")"),
            f"- tiles: {self._resolution} px (crops of {self._resolution * self.downscale} px reduced "
            f"{self.downscale}x), latents {self.latent_size} x {self.latent_size} x {ae.latent_channels} "
            f"(f = {ae.downsampling})",
            f"- pixel size of generated tiles: {self.pixel_size_um or 'unknown'} um",
        ]
        if rec:
            lines.append(f"- autoencoder reconstruction of 64 training crops: image PSNR {rec['image']['psnr']:.2f} dB "
                         f"(MSE {rec['image']['mse']:.5f}), phase map mIoU {rec['mask']['miou']:.3f} "
                         f"(pixel accuracy {rec['mask']['pixel_accuracy']:.3f})")
        lines.append(f"- training: {len(t.sample_names)} micrographs (data fingerprint {t.data_fingerprint or 'n/a'})"
                     + (f", {len(settings.get('left_out', []))} without conditions (autoencoders and stage 2 only)"
                        if settings.get("left_out") else ""))
        for name, steps in stage_steps.items():
            loss = stage_loss.get(name)
            lines.append(f"  - {name.replace('_', ' ')}: {steps} steps, final loss "
                         f"{'n/a' if loss is None else f'{loss:.4f}'}")
        lines.append("- weights: moving averages of the denoisers and the property encoder")
        return "\n".join(lines) + "\n"
