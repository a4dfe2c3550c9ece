"""Feature extractors for distribution metrics (Frechet distance, KID, precision/recall) of micrographs and masks.

Two extractors share one small interface (``name``, ``checksum``, ``image_features(images)``,
``mask_features(masks, schema)``, ``describe()``), so every score can say which features produced it:

- :class:`DomainFeatureExtractor`: two small CNNs this project trains on real annotated tiles, one on grey
  images and one on one-hot masks. Each learns two tasks: the tile's phase-fraction vector and which
  micrograph the tile was cut from (so the features must capture the texture and morphology that tell
  micrographs apart, not only composition). The default training takes a few minutes on a CPU; saved as
  a model folder.
- :class:`InceptionFeatureExtractor`: torchvision's Inception v3 with weights from a file the user gives
  (the 2048-d pool features used by FID). Nothing is downloaded. Grey images are repeated to RGB and
  masks drawn in the schema's colours. torchvision's ImageNet weights are not the TensorFlow weights of
  the reference FID code, so scores are comparable with each other but not with published FIDs (paper
  000, Table 2, reports FID/IS/precision/recall with Inception features).

>>> extractor = train_domain_extractor(samples, FeatureTrainConfig(steps=500))   # doctest: +SKIP
>>> extractor.image_features(images).shape                                      # doctest: +SKIP
(32, 128)
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from ..core.sample import Sample
from ..core.schema import PhaseSchema
from .device import resolve_device
from .diffusion_training import RandomPairTiles
from .folder import config_from_dict, folder_checksum, load_weights, read_model_config, save_model_folder

KIND = "feature-extractor"
FORMAT_VERSION = "1"
INPUTS = ("image", "mask")
#: ImageNet normalisation used with torchvision's Inception v3 weights (``transform_input=True``)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_SIZE = 299
#: batches used to recompute the batch-norm statistics after training
BATCH_NORM_BATCHES = 10


@dataclass(frozen=True)
class FeatureEncoderConfig:
    """A small CNN: ``widths`` conv stages (each halves the size after the first; batch norm, SiLU), the
    mean and standard deviation of every stage's maps (texture statistics at every scale, so fine texture
    counts as well as coarse morphology), a linear layer to ``feature_dim`` features, and heads for phase fractions and source
    micrograph. Batch norm (not group norm, which would normalise away each tile's own contrast) keeps the
    features of one tile independent of the others once in eval mode.

    input: "image" (1 grey channel in [-1, 1]) or "mask" (one 0/1 channel per class).
    """

    input: str
    n_classes: int
    n_sources: int
    widths: tuple[int, ...] = (16, 32, 64, 128)
    feature_dim: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if self.n_classes < 2 or self.n_sources < 0 or self.feature_dim < 1 or not self.widths:
            raise ValueError("need n_classes >= 2, n_sources >= 0, feature_dim >= 1 and at least one stage")

    @property
    def in_channels(self) -> int:
        return 1 if self.input == "image" else self.n_classes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureEncoderConfig":
        return config_from_dict(cls, data, "feature encoder")


class FeatureEncoder(nn.Module):
    """``features(x)`` ``(B, feature_dim)``; ``forward(x)`` also returns fraction and source logits."""

    def __init__(self, config: FeatureEncoderConfig):
        super().__init__()
        self.config = config
        stages: list[nn.Module] = []
        channels = config.in_channels
        for i, width in enumerate(config.widths):
            stages.append(nn.Sequential(
                nn.Conv2d(channels, width, 3, stride=1 if i == 0 else 2, padding=1),
                nn.BatchNorm2d(width),
                nn.SiLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.SiLU(),
            ))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.project = nn.Linear(2 * sum(config.widths), config.feature_dim)
        self.fraction_head = nn.Linear(config.feature_dim, config.n_classes)
        self.source_head = nn.Linear(config.feature_dim, config.n_sources) if config.n_sources > 1 else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
        return self.project(torch.cat(pooled, dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        feats = self.features(x)
        sources = None if self.source_head is None else self.source_head(F.silu(feats))
        return feats, self.fraction_head(F.silu(feats)), sources


def encoder_input(kind: str, arrays: torch.Tensor, schema: PhaseSchema) -> torch.Tensor:
    """Images ``(B, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` in [-1, 1]; masks -> one-hot ``(B, C, H, W)``
    (ignored pixels are zero in every channel)."""
    if kind == "image":
        return (arrays.float() * 2.0 - 1.0).unsqueeze(1)
    masks = arrays.long()
    labelled = (masks >= 0) & (masks < schema.n_classes)
    one_hot = torch.zeros(masks.shape[0], schema.n_classes, *masks.shape[1:], device=masks.device)
    one_hot.scatter_(1, torch.where(labelled, masks, 0).unsqueeze(1), labelled.unsqueeze(1).float())
    return one_hot


def weights_checksum(weights: dict[str, dict[str, torch.Tensor]]) -> str:
    """The checksum :func:`~napari_microsynth.models.folder.folder_checksum` gives once these weights are
    saved, computed without writing files (so an unsaved model can still be named in a report)."""
    from safetensors.torch import save

    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(f"{name}.safetensors".encode())
        digest.update(save({k: v.detach().to("cpu").contiguous() for k, v in weights[name].items()}))
    return digest.hexdigest()[:16]


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], arrays: np.ndarray, batch_size: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(arrays), batch_size):
            out.append(fn(torch.from_numpy(np.ascontiguousarray(arrays[start : start + batch_size]))).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


# ---------------------------------------------------------------- domain encoder


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


class DomainFeatureExtractor:
    """Image and mask features from the two encoders this project trains (see the module docstring)."""

    name = "domain-encoder"

    def __init__(
        self,
        schema: PhaseSchema,
        image_encoder: FeatureEncoder,
        mask_encoder: FeatureEncoder,
        training: dict[str, Any] | None = None,
        device: str = "auto",
        batch_size: int = 64,
    ):
        self.schema = schema
        self.device = resolve_device(device)
        self.image_encoder = image_encoder.to(self.device).eval()
        self.mask_encoder = mask_encoder.to(self.device).eval()
        self.training = dict(training or {})
        self.batch_size = batch_size
        self.checksum = weights_checksum(self._weights())

    def _weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"image_encoder": self.image_encoder.state_dict(), "mask_encoder": self.mask_encoder.state_dict()}

    def describe(self) -> dict[str, Any]:
        """Name, checksum, and the tile size/scale and micrographs the encoders were trained on."""
        return {
            "name": self.name,
            "checksum": self.checksum,
            "schema": self.schema.name,
            "feature_dim": self.image_encoder.config.feature_dim,
            "tile": self.training.get("tile"),
            "downscale": self.training.get("downscale"),
            "trained_on": list(self.training.get("sample_names", [])),
        }

    def image_features(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` grey images in [0, 1] -> ``(N, feature_dim)`` float64."""
        images = _stack(images, "images")
        return _batched(
            lambda x: self.image_encoder.features(encoder_input("image", x, self.schema).to(self.device)),
            images.astype(np.float32), self.batch_size,
        )

    def mask_features(self, masks: np.ndarray, schema: PhaseSchema | None = None) -> np.ndarray:
        """``(N, H, W)`` class maps -> ``(N, feature_dim)`` float64 (from the one-hot masks)."""
        if schema is not None and schema.names != self.schema.names:
            raise ValueError(f"these encoders were trained for schema {self.schema.name!r}, not {schema.name!r}")
        masks = _stack(masks, "masks")
        return _batched(
            lambda x: self.mask_encoder.features(encoder_input("mask", x, self.schema).to(self.device)),
            masks.astype(np.int64), self.batch_size,
        )

    def save(self, folder: str | Path) -> Path:
        """Model folder: config.json, image_encoder/mask_encoder.safetensors, README.md."""
        config = {
            "kind": KIND,
            "extractor": self.name,
            "format_version": FORMAT_VERSION,
            "schema": self.schema.to_dict(),
            "image_encoder": self.image_encoder.config.to_dict(),
            "mask_encoder": self.mask_encoder.config.to_dict(),
            "training": self.training,
        }
        card = "\n".join([
            "# Domain feature encoders (napari-microsynth)",
            "",
            "Two small CNNs trained on real annotated tiles to predict the tile's phase fractions and its source",
            "micrograph; their pooled features serve Frechet distance, KID and precision/recall of synthetic",
            "images and masks.",
            "",
            f"- phase schema: {self.schema.name} ({', '.join(self.schema.names)})",
            f"- tiles: {self.training.get('tile')} px at downscale {self.training.get('downscale')}, "
            f"{self.training.get('steps')} steps on {len(self.training.get('sample_names', []))} micrographs",
            f"- final losses: {self.training.get('final_loss')}",
        ]) + "\n"
        folder = save_model_folder(folder, config, self._weights(), card)
        self.checksum = folder_checksum(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> "DomainFeatureExtractor":
        config = read_model_config(folder)
        if config.get("kind") != KIND or config.get("extractor") != cls.name:
            raise ValueError(f"{folder} is not a {cls.name} model folder (kind {config.get('kind')!r})")
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{folder} was written in format version {config.get('format_version')}; this code reads {FORMAT_VERSION}"
            )
        encoders = []
        for name in ("image_encoder", "mask_encoder"):
            encoder = FeatureEncoder(FeatureEncoderConfig.from_dict(config[name]))
            encoder.load_state_dict(load_weights(folder, name))
            encoders.append(encoder)
        extractor = cls(PhaseSchema.from_dict(config["schema"]), *encoders, config.get("training"), device=device)
        extractor.checksum = folder_checksum(folder)
        return extractor


def _stack(arrays: np.ndarray | Sequence[np.ndarray], what: str) -> np.ndarray:
    arrays = np.asarray(arrays) if not isinstance(arrays, np.ndarray) else arrays
    if arrays.ndim != 3:
        raise ValueError(f"{what} must be stacked as (N, H, W), got shape {arrays.shape}")
    return arrays


def train_domain_extractor(
    samples: list[Sample],
    config: FeatureTrainConfig | None = None,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> DomainFeatureExtractor:
    """Train the image and mask encoders on random tiles of annotated micrographs.

    Loss per encoder: cross-entropy of the predicted phase fractions against the tile's fractions, plus
    ``source_weight`` x cross-entropy of the source-micrograph prediction. Raises ``Cancelled`` when
    ``should_stop()`` turns true.
    """
    config = FeatureTrainConfig() if config is None else config
    if not samples:
        raise ValueError("no training samples given")
    schema = samples[0].schema
    tiles = RandomPairTiles(samples, config.tile, config.downscale, config.augment)
    torch_device = resolve_device(device)
    encoders = {}
    for k, kind in enumerate(INPUTS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + k)
            encoders[kind] = FeatureEncoder(FeatureEncoderConfig(
                kind, schema.n_classes, len(samples), config.widths, config.feature_dim
            )).to(torch_device).train()
    params = [p for e in encoders.values() for p in e.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    losses: dict[str, list[float]] = {kind: [] for kind in INPUTS}
    for step in range(config.steps):
        if should_stop():
            raise Cancelled(f"feature encoder training stopped at step {step} of {config.steps}")
        rng = np.random.default_rng([config.seed, step])
        images, masks, sources = tiles.draw(rng, config.batch_size, with_sources=True)
        fractions = encoder_input("mask", torch.from_numpy(masks), schema).mean(dim=(2, 3))
        fractions = fractions / fractions.sum(dim=1, keepdim=True).clamp_min(1e-8)
        target_sources = torch.from_numpy(sources).to(torch_device)
        total = 0.0
        for kind, arrays in (("image", images), ("mask", masks)):
            x = encoder_input(kind, torch.from_numpy(np.ascontiguousarray(arrays)), schema).to(torch_device)
            _, fraction_logits, source_logits = encoders[kind](x)
            loss = F.cross_entropy(fraction_logits, fractions.to(torch_device))
            if source_logits is not None:
                loss = loss + config.source_weight * F.cross_entropy(source_logits, target_sources)
            losses[kind].append(float(loss.detach()))
            total = total + loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        progress(step + 1, config.steps, f"feature encoders step {step + 1}/{config.steps}  loss {total.item():.3f}")
    # batch-norm statistics of the final weights (running averages lag behind in a short training)
    with torch.no_grad():
        for encoder in encoders.values():
            for module in encoder.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.reset_running_stats()
                    module.momentum = None  # cumulative average over the batches below
        for i in range(BATCH_NORM_BATCHES):
            images, masks = tiles.draw(np.random.default_rng([config.seed, config.steps + i]), config.batch_size)
            for kind, arrays in (("image", images), ("mask", masks)):
                encoders[kind](encoder_input(kind, torch.from_numpy(np.ascontiguousarray(arrays)), schema).to(torch_device))
    training = {
        **asdict(config),
        "widths": list(config.widths),
        "sample_names": [s.name for s in samples],
        "losses": {kind: values[-50:] for kind, values in losses.items()},
        "final_loss": {kind: float(np.mean(values[-50:])) for kind, values in losses.items()},
    }
    return DomainFeatureExtractor(schema, encoders["image"], encoders["mask"], training, device=device)


# ---------------------------------------------------------------- Inception v3 from a local file


class InceptionFeatureExtractor:
    """Inception v3 pool features (2048-d) with weights read from a local file (never downloaded).

    ``weights_file``: a torchvision ``inception_v3`` state dict saved with ``torch.save`` (e.g. the
    ``inception_v3_google-*.pth`` file torchvision itself downloads) or a ``.safetensors`` file. With or
    without the auxiliary classifier's weights.
    """

    name = "inception-v3"

    def __init__(self, weights_file: str | Path, device: str = "auto", batch_size: int = 16):
        path = Path(weights_file)
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception v3 weights file not found: {path}. napari-microsynth never downloads weights; "
                "give the path of a torchvision inception_v3 state dict (.pth or .safetensors) you have locally"
            )
        state = _read_state_dict(path)
        from torchvision.models import inception_v3

        aux = any(k.startswith("AuxLogits.") for k in state)
        n_out = int(state["fc.weight"].shape[0]) if "fc.weight" in state else 1000
        model = inception_v3(weights=None, aux_logits=aux, init_weights=False, transform_input=True, num_classes=n_out)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{path} does not hold torchvision Inception v3 weights: {exc}") from exc
        model.fc = nn.Identity()
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.weights_file = str(path)
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        self.checksum = digest.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "weights_file": self.weights_file, "feature_dim": 2048}

    def _rgb_features(self, rgb: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(rgb.to(self.device), size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                          align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        return self.model((x - mean) / std)

    def image_features(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` grey images in [0, 1] -> ``(N, 2048)`` (grey repeated to RGB)."""
        images = _stack(images, "images").astype(np.float32)
        return _batched(lambda x: self._rgb_features(x.unsqueeze(1).repeat(1, 3, 1, 1)), images, self.batch_size)

    def mask_features(self, masks: np.ndarray, schema: PhaseSchema) -> np.ndarray:
        """``(N, H, W)`` class maps drawn in the schema's colours (ignored pixels black) -> ``(N, 2048)``."""
        masks = _stack(masks, "masks").astype(np.int64)
        colors = np.asarray(schema.colors, np.float32).reshape(-1, 3) / 255.0
        labelled = (masks >= 0) & (masks < schema.n_classes)
        rgb = np.zeros(masks.shape + (3,), np.float32)
        rgb[labelled] = colors[masks[labelled]]
        return _batched(lambda x: self._rgb_features(x.permute(0, 3, 1, 2)), rgb, self.batch_size)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files: say which file and why
        raise ValueError(f"cannot read {path} as a PyTorch state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    return state
