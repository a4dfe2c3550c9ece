"""Helpers shared by several test modules (import them as ``from helpers import ...``; pytest puts
``tests/`` on the import path)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from napari_microsynth.core.options import option
from napari_microsynth.core.progress import check_stop, never_stop, no_progress
from napari_microsynth.core.sample import Provenance, Sample
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.core.tiles import reduced_tiles, tile_samples
from napari_microsynth.generators.base import ConditionSpec, Generator, TrainingRecord, tile_pixel_size
from napari_microsynth.models.folder import load_weights

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


# ---------------------------------------------------------------- a generator family without a network

#: tile size of each preset of the fake family
FAKE_PRESETS = {"tiny": 10, "small": 32}


@dataclass
class FakeTrainConfig:
    """Training options of :class:`FakeGenerator`."""

    downscale: int = option(1, "real crops of tile x downscale px are reduced to the tile size", low=1)
    steps: int = option(1, "training steps to report", low=1)


@dataclass
class FakeSampling:
    """Sampling options of :class:`FakeGenerator` (``guidance_scale`` and ``fraction_control`` are only recorded)."""

    mode: str = option("exact", "exact: a mask holding the asked fractions under a noise image; replay: the "
                                "training tile numbered seed modulo the tile count; noise: random mask and image",
                       choices=("exact", "replay", "noise"))
    guidance_scale: float = option(1.0, "recorded, no effect", low=0)
    fraction_control: float = option(1.0, "recorded, no effect", low=0, high=1)


class FakeGenerator(Generator):
    """A generator family that passes the contract without a network, for tests of what uses generators.

    Training memorises the reduced tiles of the samples (:func:`reduced_tiles`); sampling makes, by
    ``mode``, masks holding exactly the asked fractions (filled row by row), the memorised tiles in turn,
    or noise. Its model folder holds the tiles as weights.
    """

    name = "test-fake"
    version = "0"
    presets = tuple(FAKE_PRESETS)
    TrainConfig = FakeTrainConfig
    SamplingConfig = FakeSampling

    def __init__(self, schema: PhaseSchema, preset: str = "small", device: str = "auto", seed: int = 0):
        super().__init__(schema, preset, "cpu" if device == "auto" else device, seed)
        self.tiles: list[Sample] = []
        self._downscale = 1

    @property
    def condition_spec(self) -> ConditionSpec:
        return ConditionSpec.fractions(self.schema)

    @property
    def resolution(self) -> int:
        return FAKE_PRESETS[self.preset]

    @property
    def downscale(self) -> int:
        return self._downscale

    def train(self, samples, config=None, progress=no_progress, should_stop=never_stop) -> dict[str, Any]:
        config = self.TrainConfig() if config is None else config
        check_stop(should_stop)
        self.tiles = reduced_tiles(samples, self.resolution, config.downscale)
        self._downscale = config.downscale
        self.pixel_size_um = tile_pixel_size(samples, config.downscale)
        self.training = TrainingRecord.of_run(samples, config, config.steps, 0.0)
        progress(config.steps, config.steps, f"{len(self.tiles)} tiles memorised")
        return {"steps": config.steps, "final_loss": 0.0}

    def _folder_config(self) -> dict[str, Any]:
        return {"preset": self.preset, "schema": self.schema.to_dict(), "downscale": self._downscale,
                "pixel_size_um": self.pixel_size_um, "training": asdict(self.training)}

    def _folder_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        r = self.resolution
        images = np.stack([t.image for t in self.tiles]) if self.tiles else np.zeros((0, r, r), np.float32)
        masks = np.stack([t.mask for t in self.tiles]) if self.tiles else np.zeros((0, r, r))
        return {"tiles": {"images": torch.from_numpy(images.astype(np.float32)),
                          "masks": torch.from_numpy(masks.astype(np.float32))}}

    def _model_card(self, config: dict[str, Any]) -> str:
        return "# Fake generator (tests)\n"

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> "FakeGenerator":
        gen = cls(PhaseSchema.from_dict(config["schema"]), config["preset"], device)
        weights = load_weights(folder, "tiles")
        gen.tiles = [Sample(image, gen.schema, mask.astype(np.int64)) for image, mask in
                     zip(weights["images"].numpy(), weights["masks"].numpy())]
        gen._downscale, gen.pixel_size_um = config["downscale"], config["pixel_size_um"]
        gen.training = TrainingRecord(**config["training"])
        return gen

    def _generate(self, conditions, seeds, progress, should_stop, sampling: FakeSampling) -> Iterator[Sample]:
        r = self.resolution
        for i, (condition, seed) in enumerate(zip(conditions, seeds)):
            check_stop(should_stop)
            rng = np.random.default_rng(seed)
            if sampling.mode == "replay":
                tile = self.tiles[seed % len(self.tiles)]
                image, mask = tile.image, tile.mask
            elif sampling.mode == "exact":
                edges = np.round(np.cumsum(condition["fractions"]) * r * r)
                image = rng.random((r, r), dtype=np.float32)
                mask = np.searchsorted(edges, np.arange(r * r), side="right").reshape(r, r)
            else:
                image, mask = rng.random((r, r), dtype=np.float32), rng.integers(0, self.schema.n_classes, (r, r))
            progress(i + 1, len(conditions), f"fake pair {i + 1}")
            yield Sample(image, self.schema, mask, pixel_size_um=self.pixel_size_um,
                         provenance=Provenance(origin="synthetic", extra={"downscale": self.downscale}))


# ---------------------------------------------------------------- a folder of another alloy, as a lab keeps it

#: the UHCS classes painted into the overlays: 1 red, 2 and 3 (merged) blue; 0 is left unpainted
OWN_PAINT = {1: (255, 0, 0), 2: (0, 0, 255), 3: (0, 0, 255)}
OWN_SOURCES = ("uhcs0007", "uhcs0599", "uhcs0477", "uhcs0124", "uhcs1648", "uhcs0006")
OWN_SPLITS = {"train": (1, 2, 3), "val": (4,), "test": (5,), "different_test": (6,)}


def own_material_folder(folder: Path) -> dict[str, np.ndarray]:
    """A three-phase "alloy B" folder built from the bundled UHCS micrographs as issue 20 met it: names with
    spaces, grey RGB TIFFs and one 16-bit grey TIFF (sample 2), masks hand-painted as pure colours over the
    grey micrograph and saved as RGBA TIFFs named ``<stem>_mask.tif`` (sample 3's in 16 bits, sample 4's with
    ImageJ metadata tifffile complains about), split lists with an extra ``different_test``; no schema.json.
    Returns the true class map (0 unpainted, 1 red, 2 blue) of every sample by name."""
    import tifffile
    from PIL import Image

    source = Path(__file__).resolve().parent / "data" / "uhcs"
    for sub in ("images", "masks", "splits"):
        (folder / sub).mkdir(parents=True)
    truth = {}
    for number, name in enumerate(OWN_SOURCES, start=1):
        grey = tifffile.imread(source / "images" / f"{name}.tif")[:256, :320]
        labels = np.load(source / "masks" / f"{name}.npy")[:256, :320]
        stem = f"alloy B {number:02d}"
        truth[stem] = np.minimum(labels, 2).astype(np.uint8)
        if number == 2:
            tifffile.imwrite(folder / "images" / f"{stem}.tif", grey.astype(np.uint16) * 257)
        else:
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / "images" / f"{stem}.tif")
        rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
        for label, colour in OWN_PAINT.items():
            rgba[labels == label, :3] = colour
        mask = folder / "masks" / f"{stem}_mask.tif"
        if number == 3:
            tifffile.imwrite(mask, rgba.astype(np.uint16) * 257, photometric="rgb")
        elif number == 4:
            tifffile.imwrite(mask, rgba, photometric="rgb", metadata=None,
                             description="ImageJ=1.54f\nimages=3\nchannels=3\nslices=7\n")
        else:
            tifffile.imwrite(mask, rgba, photometric="rgb")
    for split, numbers in OWN_SPLITS.items():
        (folder / "splits" / f"{split}.txt").write_text("".join(f"alloy B {n:02d}.tif\n" for n in numbers))
    return truth


# ---------------------------------------------------------------- processing conditions of the UHCS fixtures


def with_processing_conditions(samples: list[Sample]) -> list[Sample]:
    """UHCS samples with the anneal temperature and time (``properties``) and the cooling method
    (``provenance.extra["cool_method"]``) that uhcs-metadata.csv of the bundled fixtures records for them, the
    way ``load_dataset`` gives them; nothing else changes (a pixel size stays as it was)."""
    from napari_microsynth.core.datasets import load_dataset

    recorded = {s.name: s for s in load_dataset(Path(__file__).resolve().parent / "data" / "uhcs")}
    out = []
    for s in samples:
        r = recorded[s.name]
        extra = {**s.provenance.extra, **{k: r.provenance.extra[k] for k in ("cool_method",) if k in r.provenance.extra}}
        out.append(replace(s, properties=dict(r.properties), provenance=replace(s.provenance, extra=extra)))
    return out
