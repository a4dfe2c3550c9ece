"""Batch curation rules: accept generated pairs that hit their phase-fraction target, reject pairs with
a phase too small to be useful.

The store-level functions read only the store's metadata (provenance, class counts, statuses), never an
image or mask array, so they run in moments on stores of thousands of samples.

>>> from napari_microsynth.core.schema import PhaseSchema
>>> mask = np.zeros((10, 10), dtype=np.uint8)
>>> mask[:3] = 1                                   # achieved: 70 % ferrite matrix, 30 % cementite network
>>> pair = Sample(np.zeros((10, 10)), PhaseSchema.bundled("uhcs"), mask,
...               provenance=Provenance(origin="synthetic", condition={"fractions": [0.75, 0.25, 0.0, 0.0]}))
>>> round(fraction_error(pair), 3)               # asked for 75 / 25 %: five points off
0.05

>>> store = DatasetStore.open("pairs.zarr", mode="a")                # doctest: +SKIP
>>> accept_within(store, max_error=0.05)                             # doctest: +SKIP
[0, 2, 3]
>>> reject_small_phases(store, min_pixels=50)                        # doctest: +SKIP
[5]
>>> accept_all(store)                                                # doctest: +SKIP
[1, 4]

By default the rules change only samples whose status is ``"pending"``: a sample a user has already
accepted, rejected or flagged keeps that decision (pass ``only_pending=False`` to re-judge them too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from .fractions import mask_fractions
from .sample import Provenance, Sample
from .store import DatasetStore


def target_fractions(provenance: Provenance, n_classes: int, where: str = "sample") -> np.ndarray | None:
    """The requested phase fractions ``provenance.condition["fractions"]`` as float64, None when the
    sample was not generated for a fraction target; raises ``ValueError`` when the target has the
    wrong length or holds non-finite values (``where`` names the sample in the message)."""
    condition = provenance.condition or {}
    fractions = condition.get("fractions")
    if fractions is None:
        return None
    try:
        target = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: condition fractions {fractions!r} are not numbers") from exc
    if target.shape != (n_classes,) or not np.all(np.isfinite(target)):
        raise ValueError(
            f"{where}: condition fractions {fractions!r} must be {n_classes} finite numbers (one per phase)"
        )
    return target


def fraction_error(sample: Sample) -> float | None:
    """Largest absolute difference over phases between the target fractions of a generated sample and
    the fractions of its mask (fraction units, 0..1; 0.05 = five percentage points).

    None when the sample has no fraction target (a real sample, or one generated from properties).
    Raises ``ValueError`` when the sample has no mask or its mask has no labelled pixel.
    """
    if not isinstance(sample, Sample):
        raise ValueError(f"expected a Sample, got {type(sample).__name__}")
    target = target_fractions(sample.provenance, sample.schema.n_classes, where=f"sample {sample.name!r}")
    if target is None:
        return None
    if sample.mask is None:
        raise ValueError(f"sample {sample.name!r} has a fraction target but no mask to compare it with")
    return float(np.max(np.abs(target - mask_fractions(sample.mask, sample.schema))))


def fraction_errors(store: DatasetStore) -> np.ndarray:
    """:func:`fraction_error` of every sample of ``store`` from its metadata only: ``(N,)`` float64,
    NaN where a sample has no fraction target or its mask has no labelled pixel."""
    achieved = store.fractions()
    n_classes = store.schema.n_classes
    errors = np.full(len(store), np.nan)
    for i in range(len(store)):
        target = target_fractions(store.provenance(i), n_classes, where=f"{store.path} sample {i}")
        if target is not None:
            errors[i] = np.max(np.abs(target - achieved[i]))
    return errors


def smallest_phase_pixels(store: DatasetStore) -> np.ndarray:
    """``(N,)`` int64 pixel count of the smallest phase present (count > 0) in each sample's current mask,
    from the stored class counts; 0 for a mask without any labelled pixel."""
    counts = store.class_counts()
    present = np.where(counts > 0, counts, np.iinfo(np.int64).max)
    smallest = present.min(axis=1)
    return np.where(counts.sum(axis=1) > 0, smallest, 0).astype(np.int64)


def _candidates(store: DatasetStore, indices: Iterable[int] | None, only_pending: bool) -> list[int]:
    """Sorted unique indices to judge (all by default), restricted to pending ones when asked."""
    if not isinstance(store, DatasetStore):
        raise ValueError(f"expected a DatasetStore, got {type(store).__name__}")
    if not store.writable:
        raise PermissionError(f"{store.path} was opened read-only; use DatasetStore.open(path, mode='a')")
    if indices is None:
        chosen = list(range(len(store)))
    else:
        chosen = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise ValueError(f"sample indices must be integers, got {i!r}")
            chosen.append(int(i))
        bad = sorted({i for i in chosen if not 0 <= i < len(store)})
        if bad:
            raise ValueError(f"sample indices {bad[:10]} out of range for a store with {len(store)} samples")
        chosen = sorted(set(chosen))
    if only_pending:
        statuses = store.statuses()
        chosen = [i for i in chosen if statuses[i] == "pending"]
    return chosen


def _set(store: DatasetStore, chosen: list[int], hit: np.ndarray, status: str, rule: str) -> list[int]:
    """Give the ``chosen`` samples where ``hit`` is true ``status`` (recording ``rule``); the changed indices."""
    statuses = store.statuses()
    changed = [i for i in chosen if hit[i] and statuses[i] != status]
    for i in changed:
        store.set_status(i, status, rule)
    return changed


def accept_within(
    store: DatasetStore, max_error: float, indices: Iterable[int] | None = None, only_pending: bool = True
) -> list[int]:
    """Set status ``"accepted"`` on samples whose :func:`fraction_errors` is at most ``max_error``
    (fraction units in [0, 1]); returns the indices whose status changed, ascending.

    Samples without a fraction target are never touched. ``indices`` limits the rule to those samples
    (default: all); with ``only_pending`` (default) only ``"pending"`` samples change, so a user's own
    decision is never overridden. Each change is written to the store at once.
    """
    if isinstance(max_error, bool) or not isinstance(max_error, (int, float, np.integer, np.floating)):
        raise ValueError(f"max_error must be a number in [0, 1], got {max_error!r}")
    if not 0.0 <= float(max_error) <= 1.0:
        raise ValueError(f"max_error must be in [0, 1] (fraction units: 0.05 = 5 points), got {max_error!r}")
    chosen = _candidates(store, indices, only_pending)
    errors = fraction_errors(store)
    with np.errstate(invalid="ignore"):
        hit = errors <= float(max_error)  # NaN (no target) is never <= anything
    return _set(store, chosen, hit, "accepted", f"within {100 * float(max_error):g} points of its target fractions")


def reject_small_phases(
    store: DatasetStore, min_pixels: int, indices: Iterable[int] | None = None, only_pending: bool = True
) -> list[int]:
    """Set status ``"rejected"`` on samples in which some present phase covers fewer than ``min_pixels``
    pixels (a phase of 0 pixels is absent, not small); returns the indices whose status changed, ascending.

    ``indices`` and ``only_pending`` work as in :func:`accept_within`. Rejected samples stay in the store
    and are left out of exports.
    """
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, (int, np.integer)) or min_pixels < 0:
        raise ValueError(f"min_pixels must be an integer >= 0, got {min_pixels!r}")
    chosen = _candidates(store, indices, only_pending)
    smallest = smallest_phase_pixels(store)
    hit = (smallest > 0) & (smallest < int(min_pixels))
    return _set(store, chosen, hit, "rejected", f"a phase under {int(min_pixels)} px")


def accept_all(store: DatasetStore, indices: Iterable[int] | None = None, only_pending: bool = True) -> list[int]:
    """Set status ``"accepted"`` on every sample (``indices`` and ``only_pending`` as in :func:`accept_within`:
    by default every pending one); returns the indices whose status changed, ascending."""
    chosen = _candidates(store, indices, only_pending)
    return _set(store, chosen, np.ones(len(store), dtype=bool), "accepted", "accept all")


def set_by_score(store: DatasetStore, scores: dict[int, float], threshold: float, rule: str) -> tuple[list[int], list[int]]:
    """Accept the samples whose score is at least ``threshold`` and reject the others (``scores`` by store
    index, e.g. the agreement of :func:`~napari_microsynth.engines.agreement.accept_agreeing`); ``rule``
    names the score. Returns the accepted and the rejected indices whose status changed."""
    indices = sorted(scores)
    _candidates(store, indices, only_pending=False)  # checks the store and the indices
    hit = np.zeros(len(store), dtype=bool)
    hit[[i for i in indices if scores[i] >= threshold]] = True
    accepted = _set(store, indices, hit, "accepted", f"{rule} >= {threshold:g}")
    rejected = _set(store, indices, ~hit, "rejected", f"{rule} < {threshold:g}")
    return accepted, rejected


__all__ = [
    "accept_all",
    "set_by_score",
    "accept_within",
    "fraction_error",
    "fraction_errors",
    "reject_small_phases",
    "smallest_phase_pixels",
    "target_fractions",
]


def accepted_indices(store: DatasetStore) -> list[int]:
    """Store indices of the accepted synthetic pairs (see :func:`accepted_pairs`), read from metadata only."""
    statuses = store.statuses()
    return [i for i in range(len(store)) if statuses[i] == "accepted" and store.provenance(i).is_synthetic]


def accepted_pairs(store: DatasetStore | str | Path) -> list[Sample]:
    """The accepted synthetic pairs of a store, in store order.

    A pair counts when its status is ``accepted`` and it is synthetic: origin ``synthetic``, or
    ``corrected`` with ``provenance.extra["original_origin"] == "synthetic"`` (a hand-corrected
    generated mask). A corrected *prediction* of a real micrograph (origin ``corrected`` from the
    Phase ratios widget) is a real image and is left out, as are pending, flagged and rejected pairs.
    """
    if not isinstance(store, DatasetStore):
        store = DatasetStore.open(store)
    return [store[i] for i in accepted_indices(store)]
