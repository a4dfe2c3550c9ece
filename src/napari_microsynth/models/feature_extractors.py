"""Feature extractors for distribution metrics (Frechet distance, KID, precision/recall) of micrographs and masks.

Two extractors share one small interface (``name``, ``model_checksum``, ``image_features(images)``,
``mask_features(masks, schema)``, ``describe()``), so every score can say which features produced it:

- :class:`DomainFeatureExtractor`: two small CNNs (:mod:`.feature_encoder`) this project trains on real
  annotated tiles (:mod:`.feature_training`), one on grey images and one on one-hot masks. Each learns two
  tasks: the tile's phase-fraction vector and which micrograph the tile was cut from (so the features must
  capture the texture and morphology that tell micrographs apart, not only composition). Saved as a model
  folder.
- :class:`~napari_microsynth.models.inception.InceptionFeatureExtractor`: Inception v3 pool features with
  weights from a file the user gives.

>>> extractor = DomainFeatureExtractor.load("encoders")       # doctest: +SKIP
>>> extractor.image_features(images).shape                   # doctest: +SKIP
(32, 128)
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.schema import PhaseSchema
from .device import resolve_device
from .feature_encoder import FeatureEncoder, FeatureEncoderConfig, encoder_input
from .folder import ModelFolderMixin, load_weights

KIND = "feature-extractor"
FORMAT_VERSION = "1"


def weights_checksum(weights: dict[str, dict[str, torch.Tensor]]) -> str:
    """The checksum :func:`~napari_microsynth.models.folder.folder_checksum` gives once these weights are
    saved, computed without writing files (so an unsaved model can still be named in a report)."""
    from safetensors.torch import save

    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(f"{name}.safetensors".encode())
        digest.update(save({k: v.detach().to("cpu").contiguous() for k, v in weights[name].items()}))
    return digest.hexdigest()[:16]


def batched_features(fn: Callable[[torch.Tensor], torch.Tensor], arrays: np.ndarray, batch_size: int) -> np.ndarray:
    """``fn`` applied to ``arrays`` in batches of ``batch_size``, without gradients, as float64."""
    out = []
    with torch.no_grad():
        for start in range(0, len(arrays), batch_size):
            out.append(fn(torch.from_numpy(np.ascontiguousarray(arrays[start : start + batch_size]))).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def stacked(arrays: np.ndarray | Sequence[np.ndarray], what: str) -> np.ndarray:
    """``arrays`` as one ``(N, H, W)`` array; ValueError naming ``what`` otherwise."""
    arrays = np.asarray(arrays) if not isinstance(arrays, np.ndarray) else arrays
    if arrays.ndim != 3:
        raise ValueError(f"{what} must be stacked as (N, H, W), got shape {arrays.shape}")
    return arrays


class DomainFeatureExtractor(ModelFolderMixin):
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
        self.model_checksum = weights_checksum(self._folder_weights())

    def _folder_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"image_encoder": self.image_encoder.state_dict(), "mask_encoder": self.mask_encoder.state_dict()}

    def describe(self) -> dict[str, Any]:
        """Name, checksum, and the tile size/scale and micrographs the encoders were trained on."""
        return {
            "name": self.name,
            "checksum": self.model_checksum,
            "schema": self.schema.name,
            "feature_dim": self.image_encoder.config.feature_dim,
            "tile": self.training.get("tile"),
            "downscale": self.training.get("downscale"),
            "trained_on": list(self.training.get("sample_names", [])),
        }

    def image_features(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` grey images in [0, 1] -> ``(N, feature_dim)`` float64."""
        images = stacked(images, "images")
        return batched_features(
            lambda x: self.image_encoder.features(encoder_input("image", x, self.schema).to(self.device)),
            images.astype(np.float32), self.batch_size,
        )

    def mask_features(self, masks: np.ndarray, schema: PhaseSchema | None = None) -> np.ndarray:
        """``(N, H, W)`` class maps -> ``(N, feature_dim)`` float64 (from the one-hot masks)."""
        if schema is not None and schema.names != self.schema.names:
            raise ValueError(f"these encoders were trained for schema {self.schema.name!r}, not {schema.name!r}")
        masks = stacked(masks, "masks")
        return batched_features(
            lambda x: self.mask_encoder.features(encoder_input("mask", x, self.schema).to(self.device)),
            masks.astype(np.int64), self.batch_size,
        )

    # ------------------------------------------------------------ model folder

    @classmethod
    def folder_identity(cls) -> dict[str, Any]:
        return {"kind": KIND, "extractor": cls.name, "format_version": FORMAT_VERSION}

    def _folder_config(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "image_encoder": self.image_encoder.config.to_dict(),
            "mask_encoder": self.mask_encoder.config.to_dict(),
            "training": self.training,
        }

    def _model_card(self, config: dict[str, Any]) -> str:
        t = self.training
        return "\n".join([
            "# Domain feature encoders (napari-microsynth)",
            "",
            "Two small CNNs trained on real annotated tiles to predict the tile's phase fractions and its source",
            "micrograph; their pooled features serve Frechet distance, KID and precision/recall of synthetic",
            "images and masks.",
            "",
            f"- phase schema: {self.schema.name} ({', '.join(self.schema.names)})",
            f"- tiles: {t.get('tile')} px at downscale {t.get('downscale')}, "
            f"{t.get('steps')} steps on {len(t.get('sample_names', []))} micrographs",
            f"- final losses: {t.get('final_loss')}",
        ]) + "\n"

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> "DomainFeatureExtractor":
        encoders = []
        for name in ("image_encoder", "mask_encoder"):
            encoder = FeatureEncoder(FeatureEncoderConfig.from_dict(config[name]))
            encoder.load_state_dict(load_weights(folder, name))
            encoders.append(encoder)
        return cls(PhaseSchema.from_dict(config["schema"]), *encoders, config.get("training"), device=device)
