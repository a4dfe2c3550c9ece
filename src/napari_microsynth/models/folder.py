"""Model folder: ``config.json`` + ``<name>.safetensors`` weights + ``README.md`` model card.

The same shape as diffusers' ``save_pretrained``. ``config.json`` holds everything needed to rebuild the
modules (kind, architecture arguments, phase schema, training-data fingerprint, code version); weights are
read in float32 and a loaded model sits on the CPU unless a device is asked for. torch is imported
when weights are read or written, so classes built on :class:`ModelFolderMixin` import cheaply.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .. import __version__

if TYPE_CHECKING:
    import torch

C = TypeVar("C")
T = TypeVar("T")

CONFIG_NAME = "config.json"
CARD_NAME = "README.md"


def save_model_folder(
    folder: str | Path,
    config: dict[str, Any],
    weights: dict[str, dict[str, torch.Tensor]],
    card: str,
) -> Path:
    """Write ``config`` (plus code version), one safetensors file per entry of ``weights`` and the card.

    The files are written to temporary names first and renamed, so an interrupted save never leaves a
    folder whose config and weights disagree.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config.setdefault("code_version", __version__)
    config["weights"] = sorted(weights)
    for name, state in weights.items():
        tmp = folder / f".{name}.safetensors.tmp"
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(tmp))
        tmp.replace(folder / f"{name}.safetensors")
    tmp = folder / f".{CONFIG_NAME}.tmp"
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / CONFIG_NAME)
    (folder / CARD_NAME).write_text(card)
    return folder


def read_model_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model folder, with a clear error when the folder is not one."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder: {CONFIG_NAME} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def load_weights(folder: str | Path, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """One named state dict of a model folder, in float32 on ``device``; damaged files (truncated, not
    safetensors, NaN or infinite values) raise a ValueError naming the file."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"model folder {folder} has no weights {path.name}")
    try:
        weights = {k: v.float() for k, v in load_file(str(path), device=str(device)).items()}
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc}); restore or retrain the model") from exc
    damaged = [k for k, v in weights.items() if not bool(torch.isfinite(v).all())]
    if damaged:
        more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
        raise ValueError(f"{path}: weights {', '.join(damaged[:3])}{more} hold NaN or infinite values; "
                         "the model folder is damaged (restore or retrain it)")
    return weights


def folder_checksum(folder: str | Path) -> str:
    """SHA-256 over the weights files of a model folder (recorded in synthetic samples' provenance)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def on_main_process(work: Callable[[], T]) -> T:
    """``work()`` (which writes files) done by the main process only; in a distributed run (``accelerate
    launch``) the other processes wait for it and get its result, or raise its error."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return work()
    outcome: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            outcome = [(True, work())]
        except Exception as exc:  # every process raises it, none is left waiting
            outcome = [(False, exc)]
    dist.broadcast_object_list(outcome, src=0)
    done, value = outcome[0]
    if not done:
        raise value
    return value


def folder_kind(config: dict[str, Any]) -> str:
    """What a model folder holds, in words: its generator or extractor name, else its kind."""
    for key in ("generator", "extractor", "kind"):
        if config.get(key):
            return str(config[key])
    return "unknown"


def config_from_dict(config_class: type[C], data: dict[str, Any], label: str) -> C:
    """A frozen config dataclass from its ``config.json`` entry, with a clear error for unknown fields
    (``label`` names the model in the message)."""
    unknown = set(data) - {f.name for f in dataclasses.fields(config_class)}
    if unknown:
        raise ValueError(f"unknown {label} config fields: {sorted(unknown)}")
    return config_class(**data)


class ModelFolderMixin(abc.ABC):
    """Saving to and loading from a model folder, with one identity check, for every kind of model.

    A class says what its folders are with :meth:`folder_identity` (entries of ``config.json`` that must
    match on load, e.g. ``{"kind": "segmenter"}`` or a generator's name and format version) and
    implements :meth:`_folder_config` (everything needed to rebuild it), :meth:`_folder_weights` (state
    dicts by weights-file name), :meth:`_model_card` and :meth:`_from_folder`. Like diffusers'
    ``ConfigMixin``, the configuration is captured in one place and written next to the weights.
    """

    #: SHA-256 prefix of the saved weights; empty until the model is saved or loaded
    model_checksum: str = ""

    @classmethod
    @abc.abstractmethod
    def folder_identity(cls) -> dict[str, Any]:
        """The ``config.json`` entries that say a folder holds this kind of model (checked on load)."""

    @abc.abstractmethod
    def _folder_config(self) -> dict[str, Any]:
        """Everything besides the identity needed to rebuild the model (architecture, schema, training)."""

    @abc.abstractmethod
    def _folder_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """The state dicts to save, by weights-file name."""

    @abc.abstractmethod
    def _model_card(self, config: dict[str, Any]) -> str:
        """The folder's README.md, written from the saved ``config``."""

    @classmethod
    @abc.abstractmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any], device: str) -> Any:
        """A model rebuilt from a checked ``config.json``, its weights loaded from ``folder``."""

    def save(self, folder: str | Path) -> Path:
        """Write the model folder (config.json, weights, README.md) and set :attr:`model_checksum`.

        In a distributed run only the main process writes; every process gets the folder's checksum.
        """
        folder = Path(folder)

        def write() -> str:
            config = {**self.folder_identity(), **self._folder_config()}
            config.setdefault("code_version", __version__)
            return folder_checksum(save_model_folder(folder, config, self._folder_weights(), self._model_card(config)))

        self.model_checksum = on_main_process(write)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> Any:
        """Rebuild a model from a folder written by :meth:`save`, weights in float32 and on ``device``.

        Every model loads on the CPU unless asked (as diffusers' ``from_pretrained``): a folder loads the
        same, and gives the same outputs, on any machine; callers that run heavy work pass the user's
        device choice ("auto" picks CUDA, then MPS, then CPU).
        """
        folder = Path(folder)
        config = read_model_config(folder)
        cls.check_folder(folder, config)
        model = cls._from_folder(folder, config, device)
        model.model_checksum = folder_checksum(folder)
        return model

    @classmethod
    def check_folder(cls, folder: str | Path, config: dict[str, Any]) -> None:
        """A ValueError saying what ``folder`` holds when its ``config.json`` is not this kind of model."""
        identity = cls.folder_identity()
        wanted = folder_kind(identity)
        names = [k for k in identity if not k.endswith("version")]
        if any(config.get(k) != identity[k] for k in names):
            raise ValueError(f"{folder} holds a {folder_kind(config)} model, not a {wanted} model")
        for key in identity.keys() - set(names):
            if config.get(key) != identity[key]:
                raise ValueError(f"{folder} was written in format version {config.get(key)} of {wanted}; "
                                 f"this code reads version {identity[key]}")
