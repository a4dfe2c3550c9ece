"""Training checkpoint files that are as safe to open as a model folder.

A checkpoint folder holds module weights as ``<name>.safetensors`` and the optimiser, learning-rate
scheduler, EMA and gradient-scaler counters in ``training_state.pt``, which is read back with
``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, any other pickled object
is refused. ``trainer_state.json``, written last by :func:`commit_checkpoint`, marks a checkpoint complete and
records the step, the history and what the training was (checked by :func:`read_trainer_state` before a
resume). accelerate's ``save_state``/``load_state`` are not used:
``load_state`` unpickles registered objects (``custom_checkpoint_*.pkl``) with ``weights_only=False``,
so a file planted in a checkpoint folder could run code. Other files in a checkpoint folder are never read.

>>> write_checkpoint_files(path, {"model": model.state_dict()}, {"optimizer": opt.state_dict()})  # doctest: +SKIP
>>> weights, state = read_checkpoint_files(path, ["model"], device="cpu")                          # doctest: +SKIP
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any, Iterable

import torch

TRAINING_STATE = "training_state.pt"
TRAINER_STATE = "trainer_state.json"
#: version of the checkpoint layout; checkpoints of other versions are refused on resume
CHECKPOINT_FORMAT = 2


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


def checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (``checkpoint-<step>`` folders with a trainer state) in ``folder``, oldest first."""
    found = []
    for path in Path(folder).glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / TRAINER_STATE).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint folder under ``folder``, or None."""
    found = checkpoints(folder)
    return found[-1][1] if found else None


def commit_checkpoint(path: Path, state: dict[str, Any], keep: int) -> None:
    """Complete the checkpoint folder ``path`` by writing its trainer ``state`` (JSON) last, then delete all
    but the newest ``keep`` complete checkpoints beside it."""
    tmp = path / f".{TRAINER_STATE}.tmp"
    tmp.write_text(json.dumps({"format_version": CHECKPOINT_FORMAT, **state}))
    tmp.replace(path / TRAINER_STATE)
    for _, old in checkpoints(path.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def read_trainer_state(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The trainer state of checkpoint ``path``; ``ValueError`` when an older version wrote it or it was
    written for a training other than ``identity`` (the differing entries are named)."""
    state = json.loads((path / TRAINER_STATE).read_text())
    if state.get("format_version") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint {path} was written by an older version of napari-microsynth and cannot be resumed; "
            "move it away (or use another checkpoint folder) to train from the start"
        )
    saved, current = _flat(state.get("identity", {})), _flat(json.loads(json.dumps(identity)))
    changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ValueError(
            f"checkpoint {path} was written for a different configuration ({details}); "
            "use another checkpoint folder, or do not resume"
        )
    return state


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
