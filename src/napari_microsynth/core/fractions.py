"""Phase fractions: per-class area shares of a mask, and editing a fraction vector under a sum-to-one rule.

>>> import numpy as np
>>> class_counts(np.array([[0, 0], [1, 2]]), n_classes=3)
array([2, 1, 1])
>>> set_fraction([0.5, 0.3, 0.2], index=0, value=0.8)
array([0.8 , 0.12, 0.08])
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .schema import PhaseSchema


def class_counts(mask: np.ndarray, n_classes: int, ignore_id: int | None = None) -> np.ndarray:
    """Number of pixels of each class ``0..n_classes-1`` in ``mask``; pixels equal to ``ignore_id`` are skipped.

    Raises ``ValueError`` when the mask holds any other value outside ``0..n_classes-1``.
    """
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer class ids, got dtype {mask.dtype}")
    values = mask.ravel()
    if ignore_id is not None:
        values = values[values != ignore_id]
    if values.size and (values.min() < 0 or values.max() >= n_classes):
        bad = np.unique(values[(values < 0) | (values >= n_classes)])
        raise ValueError(
            f"mask holds class ids {bad.tolist()} outside 0..{n_classes - 1}"
            + (f" (ignore id {ignore_id})" if ignore_id is not None else "")
        )
    return np.bincount(values.astype(np.int64), minlength=n_classes).astype(np.int64)


def mask_fractions(mask: np.ndarray, schema: PhaseSchema) -> np.ndarray:
    """Area fraction of each phase of ``schema`` in ``mask`` (ignore id skipped), summing to 1."""
    counts = class_counts(mask, schema.n_classes, schema.ignore_id)
    total = counts.sum()
    if total == 0:
        raise ValueError(f"mask has no labelled pixels (all {np.size(mask)} pixels are the ignore id)")
    return counts / float(total)


def fractions_from_counts(counts: np.ndarray) -> np.ndarray:
    """Per-class shares of pixel counts ``(..., C)``; a row with no counted pixel gives NaN.

    >>> fractions_from_counts(np.array([[2, 2], [0, 0]]))
    array([[0.5, 0.5],
           [nan, nan]])
    """
    counts = np.asarray(counts)
    total = counts.sum(axis=-1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1.0), np.nan)


def normalize_fractions(v) -> np.ndarray:
    """Rescale non-negative values so the last axis sums to 1.

    Works on one vector ``(C,)`` or a stack ``(N, C)``. Raises ``ValueError`` for negative or non-finite
    values and for a vector with no positive entry (or one too large to add up).
    """
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 0 or v.shape[-1] == 0:
        raise ValueError(f"expected a fraction vector (C,) or stack (N, C), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"fractions must be finite numbers, got {v.tolist()}")
    if np.any(v < 0):
        raise ValueError(f"fractions cannot be negative, got {v.tolist()}")
    with np.errstate(over="ignore"):
        total = v.sum(axis=-1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("cannot normalise fractions that are all zero: at least one must be positive")
    if not np.all(np.isfinite(total)):
        raise ValueError(f"fractions too large to add up: {v.tolist()}")
    return v / total


def parse_fractions(text: str, names: Sequence[str]) -> tuple[np.ndarray, str | None]:
    """Fractions typed by a user, one per phase of ``names``, as a vector summing to 1, and a note saying
    how they were rescaled when they did not sum to 1 (None when they did, within 0.001).

    >>> parse_fractions("60,40", ["ferrite", "pearlite"])
    (array([0.6, 0.4]), 'fractions 60,40 sum to 100, not 1: rescaled to ferrite 0.6, pearlite 0.4')
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(names):
        raise ValueError(f"expected one value per phase ({len(names)}: {', '.join(names)}), "
                         f"got {len(parts)}: {text!r}")
    try:
        values = np.array([float(p) for p in parts])
    except ValueError:
        raise ValueError(f"fractions must be comma-separated numbers, got {text!r}") from None
    negative = [f"{name} {value:g}" for name, value in zip(names, values) if value < 0]
    if negative:
        raise ValueError(f"fractions cannot be negative: {', '.join(negative)}")
    fractions = normalize_fractions(values)
    total = float(values.sum())
    if abs(total - 1.0) <= 1e-3:
        return fractions, None
    shares = ", ".join(f"{name} {f:.4g}" for name, f in zip(names, fractions))
    return fractions, f"fractions {text} sum to {total:g}, not 1: rescaled to {shares}"


def _locked_indices(locked, n: int) -> np.ndarray:
    """Indices from a collection of ints or a boolean array of length ``n``."""
    if locked is None:
        return np.zeros(0, dtype=np.int64)
    arr = np.asarray(list(locked) if not isinstance(locked, np.ndarray) else locked)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"boolean locked mask must have length {n}, got shape {arr.shape}")
        return np.flatnonzero(arr)
    arr = arr.astype(np.int64).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"locked indices must lie in 0..{n - 1}, got {arr.tolist()}")
    return np.unique(arr)


def set_fraction(v, index: int, value: float, locked: Iterable[int] | np.ndarray | None = None) -> np.ndarray:
    """Slider rule: phase ``index`` takes ``value``; the other unlocked phases share what is left.

    ``value`` is clipped to ``[0, 1 - sum(locked others)]``. The unlocked others are rescaled in
    proportion to their current values; if they are all zero they share the remainder equally. When
    every other phase is locked, ``value`` is forced to what the locked phases leave. ``locked`` holds
    indices (or a boolean mask); ``index`` itself being locked is ignored. The input is normalised
    first; the result is non-negative and sums to 1.
    """
    v = normalize_fractions(v)
    if v.ndim != 1:
        raise ValueError(f"set_fraction edits one vector (C,), got shape {v.shape}")
    n = v.size
    if not 0 <= index < n:
        raise ValueError(f"phase index {index} outside 0..{n - 1}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"fraction value must be a finite number, got {value}")
    lock = np.zeros(n, dtype=bool)
    lock[_locked_indices(locked, n)] = True
    lock[index] = False
    free = ~lock
    free[index] = False
    available = max(0.0, 1.0 - v[lock].sum())
    out = v.copy()
    if not free.any():
        out[index] = available
        return out
    out[index] = min(max(value, 0.0), available)
    rest = available - out[index]
    free_sum = v[free].sum()
    if free_sum > 0:
        out[free] = v[free] * (rest / free_sum)
    else:
        out[free] = rest / free.sum()
    return out
