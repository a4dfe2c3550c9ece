"""Generators of synthetic micrograph + mask pairs, found by name.

Importing this package is cheap: a built-in generator's module (and torch) is imported only when the
generator is asked for. Third-party code registers its own with :func:`register_generator`.

>>> "pf-diffseg" in available_generators()
True
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .base import Generator

# name -> module that registers it on import
_BUILTIN = {
    "pf-diffseg": "napari_microsynth.generators.pf_diffseg",
    "two-stage": "napari_microsynth.generators.two_stage",
    "two-stage-gan": "napari_microsynth.generators.two_stage_gan",
    "vqvae-pixelcnn": "napari_microsynth.generators.vqvae_pixelcnn",
    "tim3": "napari_microsynth.generators.tim3",
    "phasefield-cyclegan": "napari_microsynth.generators.phasefield_cyclegan",
}
_REGISTRY: dict[str, type["Generator"]] = {}

G = TypeVar("G", bound=type)


def register_generator(cls: G) -> G:
    """Class decorator: make a :class:`~napari_microsynth.generators.base.Generator` findable by ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'name' to be registered")
    known = _REGISTRY.get(name)
    if known is not None and known is not cls:
        raise ValueError(f"a generator named {name!r} is already registered ({known.__module__}.{known.__name__})")
    _REGISTRY[name] = cls
    return cls


def available_generators() -> list[str]:
    """Names of all built-in and registered generators."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_generator(name: str) -> type["Generator"]:
    """The generator class registered under ``name``."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no generator {name!r}; available: {', '.join(available_generators())}") from None


def generator_class(folder: str | Path) -> type["Generator"]:
    """The family of a generator's model folder, from the name in its ``config.json`` (no weights read)."""
    from ..models.folder import read_model_config

    name = read_model_config(folder).get("generator")
    if not name:
        raise ValueError(f"{folder} is a model folder but not a generator's (config.json has no 'generator')")
    return get_generator(name)


def load_generator(folder: str | Path, device: str = "cpu") -> "Generator":
    """Load any generator's model folder, dispatching on the name stored in its ``config.json`` (on the
    CPU unless ``device`` says otherwise, as every model folder loads)."""
    return generator_class(folder).load(folder, device=device)


__all__: list[str] = [
    "register_generator", "available_generators", "get_generator", "generator_class", "load_generator",
]
