"""What the plugin's widgets read from napari layers: phase schemas of labels layers, annotated samples."""
from __future__ import annotations

import numpy as np

from ..core.sample import Provenance, Sample
from ..core.schema import Phase, PhaseSchema


def layer_schema(layer) -> PhaseSchema:
    """The phase schema of a phase-map labels layer: its dataset metadata, else its phase-name features
    (as the Phase ratios widget writes them), else classes 0..max label."""
    from ..napari_io import META_KEY, infer_schema

    meta = layer.metadata.get(META_KEY) or {}
    if "schema" in meta:
        return PhaseSchema.from_dict(meta["schema"])
    features = layer.features
    if {"index", "phase"} <= set(features.columns) and len(features):
        ids = np.asarray(features["index"], dtype=np.int64)
        colours = np.rint(255 * np.asarray(layer.colormap.map(ids))[:, :3]).astype(int)
        phases = tuple(Phase(int(i), str(name), tuple(int(c) for c in colour))
                       for i, name, colour in zip(ids, features["phase"], colours))
        return PhaseSchema(name=layer.name, phases=phases, description="from the phase map's features")
    return infer_schema([np.asarray(layer.data)], name=layer.name)


def layer_sample(image_layer, labels_layer) -> Sample:
    """An annotated :class:`Sample` from an image layer and its hand-made labels layer (same size; the
    schema from :func:`layer_schema`)."""
    from .phase_ratio import as_unit_grey

    image = as_unit_grey(np.asarray(image_layer.data))
    mask = np.asarray(labels_layer.data)
    if mask.shape != image.shape:
        raise ValueError(f"{labels_layer.name!r} ({mask.shape[1]}x{mask.shape[0]} px) does not match the image "
                         f"{image_layer.name!r} ({image.shape[1]}x{image.shape[0]} px)")
    return Sample(image, layer_schema(labels_layer), mask=mask.astype(np.int32), name=image_layer.name,
                  provenance=Provenance(origin="real", source=labels_layer.name))


def set_combo_items(combo, names) -> None:
    """Replace a combo box's items with ``names``, keeping the current choice when it is still there."""
    current = combo.currentText()
    combo.clear()
    combo.addItems(list(names))
    if current in names:
        combo.setCurrentText(current)


def layer_names(viewer, kind: str) -> list[str]:
    """Names of the viewer's layers of one kind ("image", "labels", ...)."""
    return [layer.name for layer in viewer.layers if layer._type_string == kind]

