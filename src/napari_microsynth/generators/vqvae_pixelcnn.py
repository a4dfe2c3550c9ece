"""Paper 002's dual-image generator: a VQ-VAE over micrograph + mask, a PixelCNN prior over its codes.

Training (paper 002, sec. 3.3, 4.1, 4.2): the VQ-VAE (:mod:`~napari_microsynth.models.vqvae`) learns to
reconstruct dual images (micrograph and mask stacked as channels) through a codebook of K codes; the
encoder turns a bank of training tiles into code grids ("z-matrices"), on which the PixelCNN prior
(:mod:`~napari_microsynth.models.pixelcnn`) is fitted. Sampling draws a code grid from an empty one, code
by code, and the decoder turns it into a micrograph and its mask; the mask is cleaned up as in paper 002
(sec. 4.2): k-means snap of a grey-coded mask, then small regions filled from their neighbours.

Presets: ``paper`` is paper 002's setting (256 px tiles, encoder 32 -> 64, K = 10, D = 64, grey-coded
mask, the plain PixelCNN of the Keras example: unconditional, 128 channels, 2 residual blocks);
``small`` (CPU) and ``large`` (GPU) go beyond it along the paper's own outlook: one mask channel per
phase, a gated PixelCNN with no blind spot, conditioned on the tile's phase fractions so a user can ask
for them; ``tiny`` is for tests.

Fraction control (beyond the paper): the sampling-time control of the diffusion families has an
autoregressive counterpart. Each code paints a typical phase composition (measured on the training
tiles' reconstructions); while a grid is drawn, the logits of every draw are tilted (minimum KL,
:func:`~napari_microsynth.models.pixelcnn.composition_tilt`) towards the composition the remaining cells
need for the grid to reach the target, and the decoded mask's class thresholds are shifted to the target
(:func:`~napari_microsynth.models.diffusion.snap_to_fractions`). ``fraction_control`` 0 is the paper's
plain sampling (the ``paper`` preset's prior then ignores the target altogether). It is off by default:
on UHCS the conditioned prior alone came within 5.6 points of the targets with the best mask-image
agreement of the families, while full control met the targets exactly but lowered that agreement (the
bundled model's card has the numbers).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..core.cleanup import kmeans_snap, remove_small_regions
from ..core.fractions import mask_fractions
from ..core.options import option
from ..core.progress import Cancelled, ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Provenance, Sample
from ..core.schema import PhaseSchema
from ..core.tiles import RandomPairTiles
from ..models.device import resolve_device
from ..models.diffusion import seeded_noise, snap_to_fractions
from ..models.dual_image_training import train_prior, train_vqvae
from ..models.folder import load_weights
from ..models.pixelcnn import PixelCNNPrior, PriorConfig, composition_tilt
from ..models.trainer import LoopSettings, TrainResult
from ..models.vqvae import DualImageVQVAE, VQVAEConfig, encode_dual, split_dual
from . import register_generator
from .base import ConditionSpec, Generator, TrainingRecord, batch_ranges, stage_records, tile_pixel_size, training_tiles

TIE_NOISE = 1  # noise stream of a seed for breaking ties in the decoded mask

#: per preset: tile size, VQ-VAE and prior settings (the prior's condition_dim is set from the schema)
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(resolution=256, vqvae=dict(mask_encoding="grey", hidden_channels=(32, 64), res_blocks=0,
                                             embedding_dim=64, n_embeddings=10),
                  prior=dict(kind="plain", channels=128, layers=2)),
    "large": dict(resolution=256, vqvae=dict(hidden_channels=(64, 128), res_blocks=2, embedding_dim=64,
                                             n_embeddings=32),
                  prior=dict(kind="gated", channels=128, layers=12)),
    "small": dict(resolution=128, vqvae=dict(hidden_channels=(32, 64), res_blocks=1, embedding_dim=64,
                                             n_embeddings=10),
                  prior=dict(kind="gated", channels=64, layers=8)),
    "tiny": dict(resolution=32, vqvae=dict(hidden_channels=(8, 16), res_blocks=0, embedding_dim=8,
                                           n_embeddings=6),
                 prior=dict(kind="gated", channels=8, layers=2)),
}


def preset_configs(schema: PhaseSchema, preset: str) -> tuple[VQVAEConfig, PriorConfig]:
    """The VQ-VAE and prior configs of a preset for ``schema``'s phases."""
    settings = PRESETS[preset]
    vqvae = VQVAEConfig(n_classes=schema.n_classes, **settings["vqvae"])
    gated = settings["prior"]["kind"] == "gated"
    prior = PriorConfig(n_codes=vqvae.n_embeddings, condition_dim=schema.n_classes if gated else 0,
                        **settings["prior"])
    return vqvae, prior


@dataclass
class VQVAEPixelCNNTrainConfig:
    """Training settings of both stages (paper 002: batch 8, 50 000 VQ-VAE updates on 62 tiles)."""

    steps: int = option(2000, "VQ-VAE updates (paper 002: 50 000)", low=1)
    prior_steps: int = option(1000, "PixelCNN updates on the code grids", low=1)
    batch_size: int = option(8, "training tiles per VQ-VAE update (paper 002: 8)", low=1)
    prior_batch_size: int = option(16, "code grids per PixelCNN update", low=1)
    vqvae_lr: float = option(3e-4, "VQ-VAE learning rate (Adam)", low=0)
    prior_lr: float = option(1e-3, "PixelCNN learning rate (Adam)", low=0)
    mask_weight: float = option(1.0, "weight of the mask channels against the image channel in the "
                                     "reconstruction loss (1 = all channels alike, the paper's)", low=0)
    code_bank: int = option(1024, "training tiles encoded into code grids for the PixelCNN (augmented crops)",
                            low=1)
    downscale: int = option(1, "crops of resolution x downscale px are reduced to the tile size", low=1)
    augment: bool = option(True, "random flips and 90-degree rotations of the training tiles")
    mixed_precision: str = option("auto", "bf16/fp16 on a GPU with 'auto'", choices=("auto", "no", "fp16", "bf16"),
                                  advanced=True)
    checkpoint_dir: str | None = option(None, "folder for checkpoints (vqvae/, prior/); a rerun resumes",
                                        advanced=True)
    checkpoint_every: int = option(500, "steps between checkpoints", low=1, advanced=True)
    keep_checkpoints: int = option(2, "checkpoints kept per stage", low=1, advanced=True)
    resume: bool = option(True, "continue from the newest checkpoint", advanced=True)
    seed: int = option(0, "seed of the training draws", low=0, advanced=True)

    def loop(self, stage: str, steps: int, device: torch.device) -> LoopSettings:
        """The trainer settings of one stage (its checkpoints in ``checkpoint_dir/<stage>``)."""
        folder = None if self.checkpoint_dir is None else str(Path(self.checkpoint_dir) / stage)
        return LoopSettings(steps, self.seed, device, self.mixed_precision, folder, self.checkpoint_every,
                            self.keep_checkpoints, self.resume)


@dataclass
class VQVAEPixelCNNSampling:
    """Sampling options."""

    fraction_control: float = option(0.0, "strength of the fraction control while codes are drawn and on the "
                                          "decoded mask, 0 (off: the prior's own conditioning) to 1 (exact "
                                          "fractions, at a measured cost in mask-image agreement)", low=0, high=1)
    temperature: float = option(1.0, "softmax temperature of the code draws (below 1: more typical, less varied)",
                                low=0.05, high=5)
    min_region_px: int = option(0, "paper 002's clean-up: phase regions under this many pixels are filled "
                                   "from their neighbours (paper: 200 at its 256 px tiles; 0 = off)", low=0)
    batch_size: int = option(4, "code grids drawn together", low=1, advanced=True)


@register_generator
class VQVAEPixelCNN(Generator):
    """Dual-image VQ-VAE + PixelCNN prior (paper 002), with a fraction-conditioned gated prior and control."""

    name = "vqvae-pixelcnn"
    version = "1"
    description = "Micrograph and mask decoded together from a code grid drawn by a PixelCNN (paper 002)"
    presets = tuple(PRESETS)
    TrainConfig = VQVAEPixelCNNTrainConfig
    SamplingConfig = VQVAEPixelCNNSampling

    def __init__(self, schema: PhaseSchema, preset: str = "small", device: str = "auto", seed: int = 0):
        super().__init__(schema, preset, device, seed)
        self._build(*preset_configs(schema, preset), PRESETS[preset]["resolution"], seed)

    def _build(self, vqvae: VQVAEConfig, prior: PriorConfig, resolution: int, seed: int) -> None:
        """Fresh networks from their configs (initial weights from ``seed``) on :attr:`device`."""
        if vqvae.n_classes != self.schema.n_classes or prior.n_codes != vqvae.n_embeddings:
            raise ValueError(f"a VQ-VAE for {self.schema.n_classes} phases and a prior over its "
                             f"{vqvae.n_embeddings} codes are needed")
        if resolution % vqvae.downsampling:
            raise ValueError(f"tile size {resolution} must be a multiple of {vqvae.downsampling}")
        self.device = resolve_device(self.device)
        torch.manual_seed(seed)
        self.vqvae = DualImageVQVAE(vqvae).to(self.device).eval()
        self.prior = PixelCNNPrior(prior).to(self.device).eval()
        self._resolution = resolution
        #: per code, the mean phase fractions the decoder paints for it (measured when training)
        self.composition = torch.full((vqvae.n_embeddings, self.schema.n_classes), 1.0 / self.schema.n_classes)
        #: variance of the training dual images (the reconstruction loss is divided by it)
        self.variance = 1.0

    @property
    def condition_spec(self) -> ConditionSpec:
        return ConditionSpec.fractions(self.schema)

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def grid(self) -> int:
        """Side of the code grid of one tile."""
        return self.resolution // self.vqvae.config.downsampling

    # ------------------------------------------------------------ training

    def train(
        self,
        samples: list[Sample],
        config: VQVAEPixelCNNTrainConfig | None = None,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> dict[str, Any]:
        """Train the VQ-VAE, encode a bank of training tiles, train the prior on their code grids.

        Progress runs over both stages (``steps + prior_steps``). Returns ``{"steps", "final_loss",
        "stages"}``: the VQ-VAE's steps and loss, and per stage its steps, final loss and losses.
        """
        config, tiles = training_tiles(samples, config, self.TrainConfig, self.schema, self.resolution, self.name)
        self.pixel_size_um = tile_pixel_size(samples, config.downscale)
        self.model_checksum = ""
        self.variance = float(self._dual(*tiles.draw(np.random.default_rng(config.seed), 64)).var())
        total = config.steps + config.prior_steps
        results: dict[str, TrainResult] = {}
        try:
            results["vqvae"] = train_vqvae(
                self.vqvae, lambda rng: self._dual(*tiles.draw(rng, config.batch_size)),
                config.loop("vqvae", config.steps, self.device), config.vqvae_lr, self.variance,
                config.mask_weight, lambda done, _, message: progress(done, total, f"VQ-VAE: {message}"), should_stop)
            codes, fractions = self._code_bank(tiles, config.code_bank, config.seed)
            conditioned = self.prior.config.condition_dim > 0

            def grids(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
                pick = torch.from_numpy(rng.integers(0, len(codes), config.prior_batch_size))
                return codes[pick], fractions[pick] if conditioned else None

            results["prior"] = train_prior(
                self.prior, grids, config.loop("prior", config.prior_steps, self.device), config.prior_lr,
                lambda done, _, message: progress(config.steps + done, total, f"PixelCNN: {message}"),
                should_stop)
        except Cancelled as stopped:
            results[("vqvae", "prior")[len(results)]] = stopped.result  # type: ignore[attr-defined]
            self._record(samples, config, results)
            raise
        self._record(samples, config, results)
        return {"steps": results["vqvae"].steps, "final_loss": results["vqvae"].final_loss,
                "stages": {stage: {"steps": r.steps, "final_loss": r.final_loss, "losses": r.losses}
                           for stage, r in results.items()}}

    def _dual(self, images: np.ndarray, masks: np.ndarray) -> torch.Tensor:
        """Training tiles as dual images (CPU)."""
        return encode_dual(torch.from_numpy(np.ascontiguousarray(images)),
                           torch.from_numpy(np.ascontiguousarray(masks)), self.vqvae.config)

    @torch.no_grad()
    def _code_bank(self, tiles: RandomPairTiles, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Code grids and phase fractions of ``n`` random training tiles; sets :attr:`composition` from
        what the decoder paints for each code in them."""
        rng = np.random.default_rng([seed, 1])
        n_codes, n_classes = self.vqvae.config.n_embeddings, self.schema.n_classes
        painted = torch.zeros(n_codes, n_classes, dtype=torch.float64)
        codes, fractions = [], []
        for start in range(0, n, 32):
            images, masks = tiles.draw(rng, min(32, n - start))
            grid = self.vqvae.encode_indices(self._dual(images, masks).to(self.device))
            decoded = self._hard_masks(split_dual(self.vqvae.decode_indices(grid), self.vqvae.config)[1])
            s = self.vqvae.config.downsampling
            cells = torch.nn.functional.one_hot(torch.from_numpy(decoded), n_classes).double()
            cells = cells.reshape(len(grid), self.grid, s, self.grid, s, n_classes).mean(dim=(2, 4))
            painted.index_add_(0, grid.cpu().flatten(), cells.reshape(-1, n_classes))
            codes.append(grid.cpu())
            fractions.append(torch.from_numpy(np.stack([mask_fractions(m, self.schema) for m in masks])).float())
        counts = painted.sum(dim=1, keepdim=True)
        self.composition = torch.where(counts > 0, painted / counts.clamp(min=1e-12), 1.0 / n_classes).float()
        return torch.cat(codes), torch.cat(fractions)

    def _record(self, samples: list[Sample], config: VQVAEPixelCNNTrainConfig, results: dict[str, TrainResult]) -> None:
        first = results.get("vqvae")
        self.training = TrainingRecord.of_run(samples, config, first.steps if first else 0,
                                              first.final_loss if first else None, device=str(self.device),
                                              **stage_records(results))

    # ------------------------------------------------------------ sampling

    def _generate(self, conditions, seeds, progress, should_stop, sampling: VQVAEPixelCNNSampling) -> Iterator[Sample]:
        n, rows = len(conditions), self.grid
        batches = batch_ranges(n, sampling.batch_size)
        for b, index in enumerate(batches):
            check_stop(should_stop)

            def on_row(done: int, of: int) -> None:
                progress(b * rows + done, len(batches) * rows,
                         f"samples {index[0] + 1}-{index[-1] + 1} of {n}: row {done}/{of} of the code grid")
                check_stop(should_stop)

            targets = torch.tensor([conditions[i]["fractions"] for i in index], dtype=torch.float32)
            condition = targets.to(self.device) if self.prior.config.condition_dim else None
            control = self._control(targets, sampling.fraction_control) if sampling.fraction_control > 0 else None
            generators = [torch.Generator().manual_seed(seeds[i]) for i in index]
            with torch.no_grad():
                codes = self.prior.sample((len(index), rows, rows), condition, generators, sampling.temperature,
                                          control, on_row)
                images, masks = self._decode(codes, targets, [seeds[i] for i in index], sampling)
            for j in range(len(index)):
                yield Sample(image=images[j], schema=self.schema, mask=masks[j], pixel_size_um=self.pixel_size_um,
                             provenance=Provenance(origin="synthetic", extra={"downscale": self.downscale}))

    def _control(self, targets: torch.Tensor, strength: float):
        """The logit adjustment of the fraction control for one batch of grids (module doc)."""
        cells = self.grid * self.grid
        composition = self.composition.to(self.device)
        drawn = torch.zeros(len(targets), composition.shape[1], device=self.device)
        goal_total = targets.to(self.device) * cells

        def adjust(logits: torch.Tensor, i: int, j: int, codes: torch.Tensor) -> torch.Tensor:
            done = i * self.grid + j
            if done:
                previous = codes.view(len(codes), -1)[:, done - 1]
                drawn.add_(composition[previous])
            goal = (goal_total - drawn).clamp(min=0) / (cells - done)
            goal = goal / goal.sum(dim=1, keepdim=True).clamp(min=1e-12)
            tilted = composition_tilt(logits.double(), composition.double(), goal.double()).to(logits.dtype)
            return logits + strength * (tilted - logits)

        return adjust

    def _decode(self, codes: torch.Tensor, targets: torch.Tensor, seeds: list[int], sampling: VQVAEPixelCNNSampling):
        """Images ``(B, H, W)`` in [0, 1] and class maps for code grids, cleaned up as paper 002 does."""
        images, mask_part = split_dual(self.vqvae.decode_indices(codes.to(self.device)), self.vqvae.config)
        if sampling.fraction_control > 0:
            scores = self._class_scores(mask_part)
            # seeded jitter far below the scores' resolution breaks exact ties (flat regions) at random
            jitter = seeded_noise(seeds, tuple(scores.shape[1:]), stream=TIE_NOISE).to(scores) * 1e-3
            masks = snap_to_fractions(scores + jitter, targets.to(self.device), sampling.fraction_control,
                                      exact=True).cpu().numpy()
        else:
            masks = self._hard_masks(mask_part)
        if sampling.min_region_px:
            masks = np.stack([remove_small_regions(m, self.schema, sampling.min_region_px) for m in masks])
        return images.cpu().numpy(), masks

    def _class_scores(self, mask_part: torch.Tensor) -> torch.Tensor:
        """Per-phase scores ``(B, n, H, W)`` in [-1, 1] of a decoded mask: the phase channels, or for a grey
        code the closeness of each pixel to each phase's grey level."""
        if self.vqvae.config.mask_encoding == "onehot":
            return mask_part * 2 - 1
        n = self.schema.n_classes
        levels = torch.arange(n, device=mask_part.device, dtype=mask_part.dtype) / (n - 1)
        return 1 - 2 * (n - 1) * (mask_part[:, None] - levels[None, :, None, None]).abs()

    def _hard_masks(self, mask_part: torch.Tensor) -> np.ndarray:
        """Class maps of decoded masks: argmax of the phase channels, or paper 002's k-means snap of a grey code."""
        if self.vqvae.config.mask_encoding == "onehot":
            return mask_part.argmax(dim=1).cpu().numpy()
        return np.stack([kmeans_snap(m, self.schema) for m in mask_part.cpu().numpy()]).astype(np.int64)

    # ------------------------------------------------------------ model folder

    def _folder_config(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "schema": self.schema.to_dict(),
            "resolution": self.resolution,
            "vqvae": self.vqvae.config.to_dict(),
            "prior": self.prior.config.to_dict(),
            "composition": self.composition.tolist(),
            "variance": self.variance,
            "pixel_size_um": self.pixel_size_um,
            "condition": self.condition_spec.to_dict(),
            "training": asdict(self.training),
        }

    def _folder_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"vqvae": self.vqvae.state_dict(), "prior": self.prior.state_dict()}

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> "VQVAEPixelCNN":
        schema = PhaseSchema.from_dict(config["schema"])
        model = cls.__new__(cls)
        Generator.__init__(model, schema, config["preset"], device)
        model._build(VQVAEConfig.from_dict(config["vqvae"]), PriorConfig.from_dict(config["prior"]),
                     int(config["resolution"]), seed=0)
        model.vqvae.load_state_dict(load_weights(folder, "vqvae"))
        model.prior.load_state_dict(load_weights(folder, "prior"))
        model.composition = torch.tensor(config["composition"], dtype=torch.float32)
        model.variance = float(config["variance"])
        model.pixel_size_um = config.get("pixel_size_um")
        model.training = TrainingRecord(**config.get("training", {}))
        return model

    def _model_card(self, config: dict[str, Any]) -> str:
        vq, prior, t = self.vqvae.config, self.prior.config, self.training
        stage_steps = t.settings.get("stage_steps", {})
        loss = "n/a" if t.final_loss is None else f"{t.final_loss:.4f}"
        lines = [
            f"# VQ-VAE + PixelCNN dual-image generator ({self.preset} preset)", "",
            "Draws a grid of codebook indices with a PixelCNN prior and decodes it with a VQ-VAE into a grey",
            "micrograph and its phase mask together (paper 002).", "",
            f"- phase schema: {self.schema.name} ({', '.join(self.schema.names)})",
            f"- tiles: {self.resolution} px, code grid {self.grid} x {self.grid}; VQ-VAE encoder widths "
            f"{list(vq.hidden_channels)}, {vq.res_blocks} residual blocks, codebook K = {vq.n_embeddings}, "
            f"D = {vq.embedding_dim}, mask coded {vq.mask_encoding}",
            f"- prior: {prior.kind} PixelCNN, {prior.channels} channels, {prior.layers} "
            f"{'gated layers' if prior.kind == 'gated' else 'residual blocks'}, "
            + ("conditioned on the phase fractions" if prior.condition_dim else "unconditional (paper 002)"),
            f"- pixel size of generated tiles: {self.pixel_size_um or 'unknown'} um",
            f"- training: {stage_steps.get('vqvae', t.steps)} VQ-VAE and {stage_steps.get('prior', 'n/a')} PixelCNN "
            f"steps on {len(t.sample_names)} micrographs (data fingerprint {t.data_fingerprint or 'n/a'}); "
            f"final VQ-VAE loss {loss}",
        ]
        return "\n".join(lines) + "\n"
