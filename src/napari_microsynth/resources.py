"""Locate the files shipped in the repository's top-level ``resources/`` folder.

In a built wheel the folder is packaged as ``napari_microsynth/resources``; in a source checkout or
an editable install it is ``<repo>/resources``. Both resolve through :func:`resources_dir`.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """Directory holding schemas, sample data and bundled models."""
    for candidate in (_PACKAGE_DIR / "resources", _PACKAGE_DIR.parents[1] / "resources"):
        if (candidate / "schemas").is_dir():
            return candidate
    raise FileNotFoundError(
        "napari-microsynth resources not found next to the package or in the source tree; "
        "reinstall the package"
    )


def resource_path(*parts: str) -> Path:
    """Path of one shipped resource, e.g. ``resource_path("schemas", "uhcs.json")``."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"shipped resource missing: {path}")
    return path
