"""Training of the domain feature encoders (:mod:`.feature_encoder`) on random tiles of annotated
micrographs, through the one trainer (:mod:`.trainer`).

>>> extractor = train_domain_extractor(samples, FeatureTrainConfig(steps=500))   # doctest: +SKIP
>>> extractor.image_features(images).shape                                      # doctest: +SKIP
(32, 128)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from ..core.sample import Sample
from ..core.schema import PhaseSchema
from ..core.tiles import RandomPairTiles
from .device import resolve_device
from .feature_encoder import INPUTS, FeatureEncoder, FeatureEncoderConfig, encoder_input
from .feature_extractors import DomainFeatureExtractor
from .trainer import LoopSettings, Recipe, Run, train

#: batches used to recompute the batch-norm statistics after training
BATCH_NORM_BATCHES = 10


@dataclass
class FeatureTrainConfig:
    """Training of the domain feature encoders on random tiles (both encoders see the same tiles).

    tile / downscale: tiles of ``tile * downscale`` px reduced by ``downscale``; use the size and scale of
        the synthetic tiles to be compared (e.g. 64 and 2 for PF-DiffSeg's "small" preset).
    source_weight: weight of the which-micrograph loss against the phase-fraction loss.
    """

    steps: int = 600
    batch_size: int = 16
    tile: int = 64
    downscale: int = 2
    learning_rate: float = 1e-3
    widths: tuple[int, ...] = (16, 32, 64, 128)
    feature_dim: int = 128
    source_weight: float = 1.0
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.tile < 8:
            raise ValueError(f"need steps >= 1, batch_size >= 2, tile >= 8; got {self.steps}, {self.batch_size}, {self.tile}")


def _encoders(schema: PhaseSchema, n_sources: int, config: FeatureTrainConfig) -> dict[str, FeatureEncoder]:
    """The image and mask encoders, each seeded on its own."""
    encoders = {}
    for k, kind in enumerate(INPUTS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + k)
            encoders[kind] = FeatureEncoder(FeatureEncoderConfig(
                kind, schema.n_classes, n_sources, config.widths, config.feature_dim
            ))
    return encoders


def _encoder_recipe(tiles: RandomPairTiles, encoders: dict[str, FeatureEncoder], config: FeatureTrainConfig) -> Recipe:
    """Loss per encoder: cross-entropy of the predicted phase fractions against the tile's fractions, plus
    ``source_weight`` x cross-entropy of the source-micrograph prediction; one optimiser for both."""
    schema = tiles.schema
    params = [p for e in encoders.values() for p in e.parameters()]

    def step(run: Run, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, float]:
        images, masks, sources = batch
        fractions = encoder_input("mask", torch.from_numpy(masks), schema).mean(dim=(2, 3))
        fractions = (fractions / fractions.sum(dim=1, keepdim=True).clamp_min(1e-8)).to(run.device)
        losses = {}
        for kind, arrays in (("image", images), ("mask", masks)):
            x = encoder_input(kind, torch.from_numpy(np.ascontiguousarray(arrays)), schema).to(run.device)
            _, fraction_logits, source_logits = run.modules[kind](x)
            losses[kind] = F.cross_entropy(fraction_logits, fractions)
            if source_logits is not None:
                target = torch.from_numpy(sources).to(run.device)
                losses[kind] = losses[kind] + config.source_weight * F.cross_entropy(source_logits, target)
        total = losses["image"] + losses["mask"]
        run.update("encoders", total)
        return {"loss": float(total.detach()), **{kind: float(v.detach()) for kind, v in losses.items()}}

    return Recipe(dict(encoders), {"encoders": torch.optim.AdamW(params, lr=config.learning_rate)},
                  lambda rng: tiles.draw(rng, config.batch_size, with_sources=True), step)


@torch.no_grad()
def _recalibrate_batch_norm(tiles: RandomPairTiles, encoders: dict[str, FeatureEncoder], config: FeatureTrainConfig,
                            device: torch.device) -> None:
    """Batch-norm statistics of the final weights (running averages lag behind in a short training)."""
    for encoder in encoders.values():
        encoder.train()
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the batches below
    for i in range(BATCH_NORM_BATCHES):
        images, masks = tiles.draw(np.random.default_rng([config.seed, config.steps + i]), config.batch_size)
        for kind, arrays in (("image", images), ("mask", masks)):
            encoders[kind](encoder_input(kind, torch.from_numpy(np.ascontiguousarray(arrays)), tiles.schema).to(device))
    for encoder in encoders.values():
        encoder.eval()


def train_domain_extractor(
    samples: list[Sample],
    config: FeatureTrainConfig | None = None,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> DomainFeatureExtractor:
    """Train the image and mask encoders on random tiles of annotated micrographs.

    Raises :class:`~napari_microsynth.core.progress.Cancelled` when ``should_stop()`` turns true.
    """
    config = FeatureTrainConfig() if config is None else config
    if not samples:
        raise ValueError("no training samples given")
    tiles = RandomPairTiles(samples, config.tile, config.downscale, config.augment)
    encoders = _encoders(tiles.schema, len(samples), config)
    torch_device = resolve_device(device)
    done = train(_encoder_recipe(tiles, encoders, config), LoopSettings(config.steps, config.seed, torch_device),
                 progress, should_stop)
    _recalibrate_batch_norm(tiles, encoders, config, torch_device)
    training = {
        **asdict(config),
        "widths": list(config.widths),
        "sample_names": [s.name for s in samples],
        "losses": {kind: [h[kind] for h in done.history][-50:] for kind in INPUTS},
        "final_loss": {kind: float(np.mean([h[kind] for h in done.history][-50:])) for kind in INPUTS},
    }
    return DomainFeatureExtractor(tiles.schema, encoders["image"], encoders["mask"], training, device=device)
