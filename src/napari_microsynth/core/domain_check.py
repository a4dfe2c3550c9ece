"""Is a micrograph like the ones a model was trained on?

A model applied to another material answers anyway, with confident-looking fractions. Models record the
grey-level statistics and pixel sizes of their training micrographs (:func:`training_statistics`); before
a micrograph is segmented, :func:`domain_warnings` compares it with them and with the phase schema the
micrograph is known to be labelled in:

>>> rng = np.random.default_rng(0)
>>> stats = training_statistics([rng.normal(0.45, 0.15, (64, 64)) for _ in range(4)], [0.19, 0.19, 0.1, 0.1])
>>> bright = np.full((64, 64), 0.94) + rng.normal(0, 0.1, (64, 64))
>>> domain_warnings(bright, stats)[0].startswith("mean grey level 0.94 is far from the 0.45")
True
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .schema import PhaseSchema

#: a micrograph's mean grey level is flagged when it is this many spreads of the training means away
#: (and at least MIN_MEAN_GAP away: a few training micrographs of one material have a small spread)
MEAN_SPREADS, MIN_MEAN_GAP = 4.0, 0.12
#: contrast (grey-level standard deviation) flagged outside this factor of the training contrast
CONTRAST_FACTOR = 2.0
#: pixel size flagged outside this factor of the training range
PIXEL_SIZE_FACTOR = 2.0


def training_statistics(images: Sequence[np.ndarray], pixel_sizes_um: Sequence[float | None] = ()) -> dict[str, Any]:
    """What a model folder records about its training micrographs (grey images in [0, 1])."""
    if not len(images):
        raise ValueError("no training micrographs to describe")
    means = np.array([float(np.mean(image)) for image in images])
    contrasts = np.array([float(np.std(image)) for image in images])
    known = [float(p) for p in pixel_sizes_um if p]
    return {
        "n_images": len(images),
        "mean": float(means.mean()),
        "mean_spread": float(means.std()),
        "contrast": float(contrasts.mean()),
        "pixel_size_um": [min(known), max(known)] if known else None,
    }


def domain_warnings(
    image: np.ndarray,
    statistics: dict[str, Any] | None,
    pixel_size_um: float | None = None,
    image_schema: PhaseSchema | None = None,
    model_schema: PhaseSchema | None = None,
) -> list[str]:
    """Plain sentences on how ``image`` differs from a model's training micrographs (empty: no concern).

    ``statistics`` as :func:`training_statistics` wrote them (None: only the schemas are compared);
    ``image_schema``: the phases the micrograph is labelled in, when known.
    """
    warnings = []
    if image_schema is not None and model_schema is not None and image_schema.names != model_schema.names:
        warnings.append(
            f"this micrograph comes from a {image_schema.name} dataset ({', '.join(image_schema.names)}) but the "
            f"model segments into {model_schema.name} phases ({', '.join(model_schema.names)}): its map will "
            "use the wrong phases"
        )
    if not statistics:
        return warnings
    mean, contrast = float(np.mean(image)), float(np.std(image))
    gap = max(MEAN_SPREADS * statistics["mean_spread"], MIN_MEAN_GAP)
    if abs(mean - statistics["mean"]) > gap:
        warnings.append(
            f"mean grey level {mean:.2f} is far from the {statistics['mean']:.2f} +- {statistics['mean_spread']:.2f} "
            "of the training micrographs: another material, detector or brightness setting?"
        )
    trained = statistics["contrast"]
    if trained > 0 and not trained / CONTRAST_FACTOR <= contrast <= trained * CONTRAST_FACTOR:
        warnings.append(f"contrast (grey-level spread) {contrast:.3f} differs from the training micrographs' "
                        f"{trained:.3f} by more than {CONTRAST_FACTOR:g}x")
    sizes = statistics.get("pixel_size_um")
    if pixel_size_um and sizes:
        low, high = sizes
        if not low / PIXEL_SIZE_FACTOR <= pixel_size_um <= high * PIXEL_SIZE_FACTOR:
            warnings.append(
                f"pixel size {pixel_size_um:.3g} um is outside the trained {low:.3g}-{high:.3g} um: features have "
                "another size in pixels than the model learned (resample the micrograph first)"
            )
    return warnings


def dataset_schema_of(image_path: str | Path) -> PhaseSchema | None:
    """The phase schema of the dataset folder a micrograph file sits in (``<dataset>/images/<file>``), when
    that folder is a recognised dataset; None for a micrograph anywhere else."""
    from .datasets import default_schema

    folder = Path(image_path).resolve().parent
    if folder.name != "images":
        return None
    try:
        return default_schema(folder.parent)
    except ValueError:
        return None
