"""Inception v3 pool features (the 2048-d features used by FID) from a local weights file.

torchvision's Inception v3 with weights from a file the user gives; nothing is downloaded. Grey images are
repeated to RGB and masks drawn in the schema's colours. torchvision's ImageNet weights are not the
TensorFlow weights of the reference FID code, so scores are comparable with each other but not with
published FIDs (paper 000, Table 2, reports FID/IS/precision/recall with Inception features).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.schema import PhaseSchema
from .device import resolve_device
from .feature_extractors import batched_features, stacked

#: ImageNet normalisation used with torchvision's Inception v3 weights (``transform_input=True``)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_SIZE = 299


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
        self.model_checksum = digest.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.model_checksum, "weights_file": self.weights_file, "feature_dim": 2048}

    def _rgb_features(self, rgb: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(rgb.to(self.device), size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                          align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        return self.model((x - mean) / std)

    def image_features(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` grey images in [0, 1] -> ``(N, 2048)`` (grey repeated to RGB)."""
        images = stacked(images, "images").astype(np.float32)
        return batched_features(lambda x: self._rgb_features(x.unsqueeze(1).repeat(1, 3, 1, 1)), images, self.batch_size)

    def mask_features(self, masks: np.ndarray, schema: PhaseSchema) -> np.ndarray:
        """``(N, H, W)`` class maps drawn in the schema's colours (ignored pixels black) -> ``(N, 2048)``."""
        masks = stacked(masks, "masks").astype(np.int64)
        colors = np.asarray(schema.colors, np.float32).reshape(-1, 3) / 255.0
        labelled = (masks >= 0) & (masks < schema.n_classes)
        rgb = np.zeros(masks.shape + (3,), np.float32)
        rgb[labelled] = colors[masks[labelled]]
        return batched_features(lambda x: self._rgb_features(x.permute(0, 3, 1, 2)), rgb, self.batch_size)


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
