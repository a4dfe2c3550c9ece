"""Training checkpoint files that are as safe to open as a model folder.

A checkpoint folder holds module weights as ``<name>.safetensors`` and the optimiser, learning-rate
scheduler, EMA and gradient-scaler counters in ``training_state.pt``, which is read back with
``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, any other pickled object
is refused. The trainer adds its own JSON state. accelerate's ``save_state``/``load_state`` are not used:
``load_state`` unpickles registered objects (``custom_checkpoint_*.pkl``) with ``weights_only=False``,
so a file planted in a checkpoint folder could run code. Other files in a checkpoint folder are never read.

>>> write_checkpoint_files(path, {"model": model.state_dict()}, {"optimizer": opt.state_dict()})  # doctest: +SKIP
>>> weights, state = read_checkpoint_files(path, ["model"], device="cpu")                          # doctest: +SKIP
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Iterable

import torch

TRAINING_STATE = "training_state.pt"


def write_checkpoint_files(path: Path, weights: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> None:
    """Write ``weights`` (name -> state dict) as ``<name>.safetensors`` and ``state`` as ``training_state.pt``."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    for name, tensors in weights.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path / f"{name}.safetensors"))
    torch.save(state, path / TRAINING_STATE)


def read_checkpoint_files(
    path: Path, names: Iterable[str], device: torch.device | str
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """The weights ``names`` and the training state written by :func:`write_checkpoint_files`, on ``device``.

    Raises ``ValueError`` naming the file when one is missing, damaged or holds anything but plain data.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = [path / f"{name}.safetensors" for name in names]
    missing = [f.name for f in [*files, path / TRAINING_STATE] if not f.is_file()]
    if missing:
        raise ValueError(
            f"checkpoint {path} lacks {', '.join(missing)} (written by an older version, or damaged); "
            "move it away to train from the last complete checkpoint or from the start"
        )
    try:
        weights = {f.stem: load_file(str(f), device=str(device)) for f in files}
    except (SafetensorError, OSError) as exc:  # truncated or fake files
        raise ValueError(f"cannot read the weights in checkpoint {path}: {exc}") from exc
    try:
        state = torch.load(path / TRAINING_STATE, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path / TRAINING_STATE} holds pickled objects other than tensors and numbers; refusing to load it "
            "(it could run code). Delete that checkpoint folder unless you know where it came from"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:  # truncated or damaged file
        raise ValueError(f"cannot read {path / TRAINING_STATE}: {exc}") from exc
    return weights, state
