"""Curation state of generated pairs: which were accepted or rejected, and saving the accepted ones.

Plain Python (no Qt, no napari), so the synthesis widget, an export step or a script share it:

>>> curation = CurationList()                                                  # doctest: +SKIP
>>> i = curation.add(pair, "synth 001 image", "synth 001 mask")                # doctest: +SKIP
>>> curation.set_status(i, "accepted")                                         # doctest: +SKIP
>>> curation.save_accepted("pairs.zarr", masks={i: edited_mask})               # doctest: +SKIP

A pair whose mask was edited by hand is saved with provenance origin ``"corrected"``, the number of
changed pixels and ``extra["original_origin"]`` (the same convention as ``napari_io.write_store``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from ..core.sample import Sample

CURATION_STATUSES = ("pending", "accepted", "rejected")


@dataclass
class CurationEntry:
    """One generated pair: the Sample as generated, the names of its napari layers, its curation status.

    ``saved_to`` maps the resolved path of each store the pair was saved to onto its index there.
    """

    sample: Sample
    image_layer: str
    labels_layer: str
    status: str = "pending"
    saved_to: dict[str, int] = field(default_factory=dict)

    @property
    def target(self) -> np.ndarray | None:
        """The requested phase fractions (``provenance.condition["fractions"]``), None for other conditions."""
        condition = self.sample.provenance.condition or {}
        fractions = condition.get("fractions")
        return None if fractions is None else np.asarray(fractions, dtype=np.float64)

    def curated(self, mask: np.ndarray | None = None) -> Sample:
        """The pair with ``mask`` (the user's current mask; None = as generated) and matching provenance.

        A mask that differs from the generated one marks the pair ``corrected`` with ``changed_pixels``.
        """
        original = self.sample.mask
        if mask is None:
            return self.sample
        mask = np.asarray(mask)
        if mask.shape != original.shape:
            raise ValueError(
                f"{self.labels_layer!r}: the mask has shape {mask.shape}, the generated pair {original.shape}"
            )
        changed = int(np.count_nonzero(mask != original))
        if not changed:
            return self.sample
        provenance = self.sample.provenance
        extra = {**provenance.extra, "original_origin": provenance.origin}
        return replace(
            self.sample,
            mask=mask.astype(original.dtype, copy=True),
            provenance=replace(provenance, origin="corrected", changed_pixels=changed, extra=extra),
        )


class CurationList:
    """The generated pairs of a session, in the order they arrived, each pending, accepted or rejected."""

    def __init__(self) -> None:
        self.entries: list[CurationEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> CurationEntry:
        return self.entries[index]

    def __iter__(self) -> Iterator[CurationEntry]:
        return iter(self.entries)

    def add(self, sample: Sample, image_layer: str, labels_layer: str) -> int:
        """Record a new pending pair (it must have a mask); returns its index."""
        if sample.mask is None:
            raise ValueError(f"pair {sample.name!r} has no mask; only image + mask pairs can be curated")
        self.entries.append(CurationEntry(sample, image_layer, labels_layer))
        return len(self.entries) - 1

    def set_status(self, index: int, status: str) -> None:
        if status not in CURATION_STATUSES:
            raise ValueError(f"curation status must be one of {CURATION_STATUSES}, got {status!r}")
        self.entries[index].status = status

    def indices(self, status: str) -> list[int]:
        """Indices of the entries with ``status``."""
        return [i for i, entry in enumerate(self.entries) if entry.status == status]

    def counts(self) -> dict[str, int]:
        """Number of entries per status."""
        return {status: len(self.indices(status)) for status in CURATION_STATUSES}

    def save_accepted(
        self, path: str | Path, masks: Mapping[int, np.ndarray] | None = None, description: str = ""
    ) -> list[int]:
        """Append the accepted pairs to the dataset store at ``path`` (created when missing), status "accepted".

        ``masks`` gives the current (possibly hand-corrected) mask of an entry by its index; entries not
        in it are saved as generated. Pairs already saved to this store are skipped, so saving again
        after accepting more adds only the new ones. Returns the store indices of the appended pairs.
        """
        from ..core.store import DatasetStore, is_store

        masks = masks or {}
        path = Path(path)
        key = str(path.resolve())
        todo = [i for i in self.indices("accepted") if key not in self.entries[i].saved_to]
        if not todo:
            raise ValueError(
                "no accepted pairs to save; accept some pairs first" if not self.indices("accepted")
                else f"the accepted pairs are already saved in {path}"
            )
        samples = {i: self.entries[i].curated(masks.get(i)) for i in todo}
        if path.exists() and not is_store(path):
            raise FileExistsError(f"{path} exists and is not a napari-microsynth dataset store")
        store = DatasetStore.open(path, mode="a") if path.exists() else None
        schema = store.schema if store is not None else samples[todo[0]].schema
        foreign = [self.entries[i].image_layer for i in todo if samples[i].schema != schema]
        if foreign:
            raise ValueError(
                f"pairs {foreign} use another phase schema than {schema.name!r} ({', '.join(schema.names)}); "
                "save them to a separate store"
            )
        for i in todo:
            try:
                schema.validate_mask(samples[i].mask)
            except ValueError as exc:
                raise ValueError(f"{self.entries[i].labels_layer!r}: {exc}") from exc
        if store is None:
            store = DatasetStore.create(path, schema, description)
        added = []
        for i in todo:
            index = store.append(samples[i], status="accepted")
            self.entries[i].saved_to[key] = index
            added.append(index)
        return added
