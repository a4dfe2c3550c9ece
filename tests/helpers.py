"""Helpers shared by several test modules (import them as ``from helpers import ...``; pytest puts
``tests/`` on the import path)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_microsynth.core.sample import Provenance, Sample
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.core.tiles import tile_samples

CHECKSUM = "0123456789abcdef"


def make_synthetic_pairs(sources: list[Sample], real_pixel_size_um: float, tile: int) -> list[Sample]:
    """Real ``tile`` tiles of ``sources`` shrunk 2x (image by 2x2 means, mask by taking every 2nd pixel)."""
    pairs = []
    for source in sources:
        for piece in tile_samples(source, tile):
            h, w = piece.shape
            image = piece.image.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            mask = piece.mask[::2, ::2].copy()
            seed = 100 + len(pairs)
            fractions = np.bincount(mask.ravel(), minlength=piece.schema.n_classes) / mask.size
            pairs.append(Sample(
                image, piece.schema, mask, name=f"fake-{seed}", pixel_size_um=2 * real_pixel_size_um,
                provenance=Provenance(origin="synthetic", generator="fake-diffusion", generator_version="0.1",
                                      model_checksum=CHECKSUM, condition={"fractions": fractions.tolist()}, seed=seed),
            ))
    return pairs


def write_synthetic_store(path: Path, pairs: list[Sample]) -> tuple[DatasetStore, dict[str, list[str]]]:
    """Accepted pairs in order, with rejected / pending / flagged pairs, a real sample and a corrected
    real prediction mixed in (all of which the export must leave out); pair 2 gets a corrected mask."""
    store = DatasetStore.create(path, pairs[0].schema, description="synthetic pairs")
    left_out = {"rejected": [], "pending": [], "flagged": [], "real": [], "corrected prediction": []}
    decoy = pairs[0]
    for i, pair in enumerate(pairs):
        store.append(pair, split="synthetic", status="accepted")
        if i in (1, 5):
            store.append(replace(decoy, name=f"rejected-{i}"), status="rejected")
            left_out["rejected"].append(f"rejected-{i}")
        if i == 3:
            store.append(replace(decoy, name="pending-3"), status="pending")
            store.append(replace(decoy, name="flagged-3"), status="flagged")
            store.append(replace(decoy, name="real-3", provenance=Provenance(origin="real")), status="accepted")
            store.append(replace(decoy, name="prediction-3", provenance=Provenance(origin="corrected", changed_pixels=9)),
                         status="accepted")
            left_out["pending"].append("pending-3")
            left_out["flagged"].append("flagged-3")
            left_out["real"].append("real-3")
            left_out["corrected prediction"].append("prediction-3")
    corrected = store.mask(store.names.index(pairs[2].name)).copy()
    corrected[:8, :] = 3
    store.replace_mask(store.names.index(pairs[2].name), corrected)
    return store, left_out
