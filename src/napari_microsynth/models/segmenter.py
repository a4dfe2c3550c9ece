"""Segmentation networks: any segmentation-models-pytorch architecture, with or without the PLM.

One grey input channel, one output class per phase of the schema, encoder weights never downloaded.
The network is split as ``encoder -> decoder -> head``; the head is smp's segmentation convolution
(baseline) or the Phase Learning Module (paper 001). For decoders with a coarser output (FPN, DeepLab,
...) the architecture's own bilinear upsampling is applied to the PLM's phase features, before the
per-pixel ratio-dependent part, so that part always works at input resolution.

>>> from napari_microsynth.core.schema import PhaseSchema
>>> model = Segmenter.build(PhaseSchema.bundled("uhcs"), arch="Unet", preset="tiny", tile_size=64)
>>> model(torch.zeros(1, 1, 64, 64), ratio=torch.tensor([0.7, 0.1, 0.1, 0.1])).shape
torch.Size([1, 4, 64, 64])
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.schema import PhaseSchema
from .device import resolve_device
from .folder import ModelFolderMixin, load_weights
from .plm import PhaseLearningModule, PLMFlags

MODEL_KIND = "segmenter"
WEIGHTS_NAME = "segmenter"

#: Architectures whose decoder follows ``encoder_depth`` (full-resolution output at any depth), so a
#: preset's depth and decoder widths apply; the others keep their own defaults.
DEPTH_FOLLOWING = ("Unet", "UnetPlusPlus", "MAnet", "Linknet")

#: Fixed input scaling of the [0, 1] grey image.
INPUT_MEAN = 0.5
INPUT_STD = 0.25


@dataclass(frozen=True)
class Preset:
    """Encoder and decoder sizes; ``decoder_channels`` applies to architectures that take it."""

    encoder: str
    encoder_depth: int
    decoder_channels: tuple[int, ...]
    description: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tu-mobilenetv3_small_050", 4, (32, 16, 16, 8),
                   "about 0.3 M parameters; trains a few steps on a CPU in seconds (tests)"),
    "small": Preset("tu-mobilenetv3_small_100", 5, (96, 48, 24, 16, 16),
                    "about 1.6 M parameters; the bundled demo size, trainable on a CPU"),
    "base": Preset("resnet34", 5, (256, 128, 64, 32, 16),
                   "about 24 M parameters; smp's default U-Net size, for a GPU"),
}


def architectures() -> list[str]:
    """Names of the smp architectures a :class:`Segmenter` can be built from."""
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.base import SegmentationModel

    return sorted(
        name for name in dir(smp)
        if inspect.isclass(getattr(smp, name)) and issubclass(getattr(smp, name), SegmentationModel)
        and getattr(smp, name) is not SegmentationModel and "forward" not in vars(getattr(smp, name))
    )


def _smp_class(arch: str):
    import segmentation_models_pytorch as smp

    known = architectures()
    match = {a.lower(): a for a in known}.get(str(arch).lower())
    if match is None:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(known)}")
    return match, getattr(smp, match)


def resolve_architecture(arch: str, preset: str = "small", encoder: str | None = None) -> dict[str, Any]:
    """:class:`Segmenter` arguments (architecture name as smp spells it, encoder and, for
    :data:`DEPTH_FOLLOWING` architectures, depth and decoder widths) for ``arch`` at ``preset`` size;
    ``encoder`` overrides the preset's encoder."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    arch, cls = _smp_class(arch)
    size = PRESETS[preset]
    kwargs: dict[str, Any] = {"arch": arch, "encoder_name": encoder or size.encoder}
    params = inspect.signature(cls).parameters
    if arch in DEPTH_FOLLOWING:
        kwargs["encoder_depth"] = size.encoder_depth
        if "decoder_channels" in params:
            kwargs["decoder_channels"] = list(size.decoder_channels)
    return kwargs


class Segmenter(ModelFolderMixin, nn.Module):
    """Encoder + decoder of an smp architecture and a head (smp conv or PLM); logits ``(B, n, H, W)``.

    ``tile_size`` is the square window the network is trained and run on (the PLM's coordinate maps
    are relative to it, so inference uses the same window). :attr:`training_record` and :attr:`metrics` (as
    measured by the caller, e.g. :func:`engines.evaluation.evaluate`) go into the model folder.
    """

    def __init__(
        self,
        schema: PhaseSchema,
        arch: str = "Unet",
        encoder_name: str = PRESETS["small"].encoder,
        encoder_depth: int | None = None,
        decoder_channels: list[int] | None = None,
        plm: PLMFlags | None = None,
        tile_size: int = 256,
        preset: str | None = None,
        input_scale: float = 1.0,
        plm_width: int | None = None,
    ):
        super().__init__()
        arch, cls = _smp_class(arch)
        kwargs: dict[str, Any] = {"encoder_name": encoder_name}
        if encoder_depth is not None:
            kwargs["encoder_depth"] = int(encoder_depth)
        if decoder_channels is not None:
            kwargs["decoder_channels"] = list(decoder_channels)
        try:
            net = cls(in_channels=1, classes=schema.n_classes, encoder_weights=None, **kwargs)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ValueError(f"cannot build {arch} with {kwargs}: {exc}") from exc
        self.schema = schema
        self.arch = arch
        self.arch_kwargs = kwargs
        self.preset = preset
        self.plm_flags = plm
        self.tile_size = int(tile_size)
        if not 0 < float(input_scale) <= 1:
            raise ValueError(f"input_scale must be in (0, 1], got {input_scale}")
        self.input_scale = float(input_scale)
        #: what the model folder records about the training run and the measured metrics
        self.training_record: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.encoder = net.encoder
        self.decoder = net.decoder
        conv, upsample = net.segmentation_head[0], net.segmentation_head[1]
        self.upsample = upsample
        if plm is None:
            self.head: nn.Module = conv
        else:
            self.head = PhaseLearningModule(conv.in_channels, schema.n_classes, plm, width=plm_width)
        stride = self.output_stride
        if self.tile_size % stride:
            raise ValueError(f"tile size {self.tile_size} must be a multiple of the encoder's output stride {stride}")

    @classmethod
    def build(
        cls,
        schema: PhaseSchema,
        arch: str = "Unet",
        preset: str = "small",
        encoder: str | None = None,
        plm: str | PLMFlags | None = "RE+SA+FA",
        tile_size: int = 256,
        input_scale: float = 1.0,
        plm_width: int | None = None,
    ) -> "Segmenter":
        """A fresh network by architecture name, size preset and PLM setting (an ablation name from
        :data:`~napari_microsynth.models.plm.ABLATIONS`, flags, or None / "baseline" for no PLM);
        ``plm_width`` the PLM's channel width (None: one channel per phase)."""
        kwargs = resolve_architecture(arch, preset, encoder)
        flags = PLMFlags.from_name(plm) if isinstance(plm, str) else plm
        return cls(schema, plm=flags, tile_size=tile_size, preset=preset, input_scale=input_scale,
                   plm_width=plm_width, **kwargs)

    @property
    def output_stride(self) -> int:
        return int(self.encoder.output_stride)

    @property
    def n_classes(self) -> int:
        return self.schema.n_classes

    @property
    def feature_channels(self) -> int:
        """Channels of :meth:`image_features`: the PLM's width, or one class score per phase (baseline)."""
        return self.head.width if isinstance(self.head, PhaseLearningModule) else self.n_classes

    @property
    def uses_ratio(self) -> bool:
        """True when the network takes a phase ratio (PLM with its ratio encoder)."""
        return isinstance(self.head, PhaseLearningModule) and self.head.uses_ratio

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected grey images (B, 1, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.output_stride or w % self.output_stride:
            raise ValueError(
                f"image size {h}x{w} must be a multiple of {self.output_stride} (the encoder's output stride); "
                "pad it or use the sliding-window inference engine"
            )

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """The ratio-independent part for images ``(B, 1, H, W)`` in [0, 1] -> ``(B, c, H, W)`` (c:
        :attr:`feature_channels`): encoder,
        decoder and the PLM's phase features (FE + SA), or the baseline's class scores, brought to input
        resolution by the architecture's upsampling (identity for U-Net-like decoders)."""
        self._check_input(x)
        decoded = self.decoder(self.encoder((x - INPUT_MEAN) / INPUT_STD))
        if isinstance(self.head, PhaseLearningModule):
            return self.upsample(self.head.phase_features(decoded))
        return self.upsample(self.head(decoded))

    def ratio_head(self, features: torch.Tensor, ratio=None) -> torch.Tensor:
        """The ratio-dependent part: :meth:`image_features` output (+ ratio ``(n,)`` or ``(B, n)``, None =
        no ratio) -> logits. Per pixel, so it also runs on blended whole-micrograph features
        ``(1, n, H, W)`` or flattened pixels ``(1, n, P)``; the identity for a baseline network."""
        if isinstance(self.head, PhaseLearningModule):
            return self.head.fuse(features, ratio)
        if ratio is not None:
            raise ValueError("this segmenter has no Phase Learning Module and takes no phase ratio")
        return features

    def forward(self, x: torch.Tensor, ratio=None) -> torch.Tensor:
        return self.ratio_head(self.image_features(x), ratio)

    # ------------------------------------------------------------ model folder

    @classmethod
    def folder_identity(cls) -> dict[str, Any]:
        return {"kind": MODEL_KIND}

    def _folder_config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "arch_kwargs": dict(self.arch_kwargs),
            "preset": self.preset,
            "plm": None if self.plm_flags is None else self.plm_flags.to_dict(),
            "plm_name": "baseline" if self.plm_flags is None else self.plm_flags.name,
            "plm_width": self.head.width if isinstance(self.head, PhaseLearningModule) else None,
            "tile_size": self.tile_size,
            "input_scale": self.input_scale,
            "in_channels": 1,
            "input_scaling": {"mean": INPUT_MEAN, "std": INPUT_STD},
            "schema": self.schema.to_dict(),
            "training": dict(self.training_record),
            "metrics": dict(self.metrics),
        }

    def _folder_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {WEIGHTS_NAME: self.state_dict()}

    def _model_card(self, config: dict[str, Any]) -> str:
        """Markdown model card: what the network is, how it was trained, what it scored."""
        schema = PhaseSchema.from_dict(config["schema"])
        kwargs = config["arch_kwargs"]
        lines = [
            f"# Phase segmenter: {config['arch']} ({kwargs['encoder_name']}), PLM: {config['plm_name']}",
            "",
            f"- Architecture: segmentation-models-pytorch `{config['arch']}` with {json.dumps(kwargs)}",
            f"- Size preset: {config.get('preset') or 'custom'}; window {config['tile_size']} px, 1 grey input channel",
            "- Head: " + ("Phase Learning Module (paper 001) with " + config["plm_name"] if config["plm"] else "plain smp segmentation head"),
            f"- Phase schema `{schema.name}`: " + ", ".join(f"{p.id} {p.name}" for p in schema.phases),
            f"- Code version: {config.get('code_version', 'unknown')}",
        ]
        training = config.get("training") or {}
        if training:
            lines += ["", "## Training", ""]
            lines += [f"- {key}: {_fmt(value) if not isinstance(value, (dict, list)) else json.dumps(value)}"
                      for key, value in sorted(training.items())]
        metrics = config.get("metrics") or {}
        lines += _baseline_comparison_lines(metrics)
        lines += ["", "## Measured metrics", ""]
        if not metrics:
            lines.append("No metrics were measured for this model.")
        else:
            scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
            per_class = {k: v for k, v in metrics.items() if isinstance(v, dict)}
            if scalars:
                lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()]
            if per_class:
                names = list(next(iter(per_class.values())))
                lines += ["", "| phase | " + " | ".join(per_class) + " |", "|---" * (len(per_class) + 1) + "|"]
                lines += [f"| {n} | " + " | ".join(_fmt(per_class[k].get(n, float("nan"))) for k in per_class) + " |"
                          for n in names]
        return "\n".join(lines) + "\n"

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> "Segmenter":
        flags = None if config.get("plm") is None else PLMFlags(**config["plm"])
        model = cls(
            PhaseSchema.from_dict(config["schema"]),
            arch=config["arch"],
            plm=flags,
            tile_size=int(config["tile_size"]),
            input_scale=float(config.get("input_scale", 1.0)),
            preset=config.get("preset"),
            plm_width=config.get("plm_width"),
            **config["arch_kwargs"],
        )
        model.load_state_dict(load_weights(folder, WEIGHTS_NAME))
        model.training_record, model.metrics = dict(config.get("training") or {}), dict(config.get("metrics") or {})
        return model.to(resolve_device(str(device))).eval()


def _baseline_comparison_lines(metrics: dict[str, Any]) -> list[str]:
    """Card lines comparing a PLM's mIoU at each ratio input with the same network without the PLM
    (metrics ``baseline miou (<split>, no ratio)``, recorded by ``microsynth evaluate``), naming where it loses."""
    lines: list[str] = []
    for key, base in metrics.items():
        if not (key.startswith("baseline miou (") and key.endswith(", no ratio)")):
            continue
        split = key[len("baseline miou ("):-len(", no ratio)")]
        rows = [(k[len(f"miou ({split}, "):-1], v) for k, v in metrics.items()
                if k.startswith(f"miou ({split}, ") and "correction" not in k]
        if not rows:
            continue
        losses = [setting for setting, value in rows if value < base]
        lines += ["", f"## Against the same network without the PLM ({split})", "",
                  f"Same data, seed and training without the PLM: mIoU {_fmt(base)}.", "",
                  "| ratio input | mIoU | difference |", "|---|---|---|"]
        lines += [f"| {setting} | {_fmt(value)} | {100 * (value - base):+.1f} points |" for setting, value in rows]
        lines += ["", f"The PLM loses to it with: {', '.join(losses)}." if losses
                  else "The PLM scores at least as well with every ratio input measured."]
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)
