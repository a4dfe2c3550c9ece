"""Writing generated pairs into a dataset store, resumably and without repeating a seed.

A generate run is named by what decides its pairs: the generator and its weights, the conditions (one per
pair), the sampling options and the requested seed. Every pair it stores records the run in
``provenance.extra["run"]`` (its id and first seed). Running the same command again skips the pairs
already stored, so a killed or cancelled run continues where it stopped with the seeds it would have used
(pair ``i`` depends only on its condition and seed, so the result equals an uninterrupted run). A
different run whose seeds are already taken in the store moves on to seeds after the store's highest.

>>> run = GenerateRun.plan(generator, store, [0.6, 0.2, 0.15, 0.05], n=16, seed=0)   # doctest: +SKIP
>>> run.note, run.done                                                             # doctest: +SKIP
(None, 8)
>>> run.write(store)                                                               # 8 more pairs  # doctest: +SKIP
8
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from ..core.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from ..core.sample import Sample
from ..core.store import DatasetStore
from ..generators.base import Generator


@dataclass
class GenerateRun:
    """One generate run into a store: ``n`` pairs with seeds ``first_seed ..``, ``done`` of them stored."""

    generator: Generator
    conditions: Any
    n: int
    run_id: str
    first_seed: int
    done: int
    options: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # why the seeds differ from the requested ones

    @classmethod
    def plan(cls, generator: Generator, store: DatasetStore, conditions: Any, n: int | None = None,
             seed: int = 0, **options: Any) -> "GenerateRun":
        """Where a run of ``generator.sample(conditions, n, seed, **options)`` into ``store`` stands.

        Bad conditions raise here, before anything is written; ``n`` must come to at least 1 pair.
        """
        expanded = generator.condition_spec.expand(conditions, n)
        if not expanded:
            raise ValueError("nothing to generate: the number of pairs must be at least 1")
        identity = {"generator": generator.name, "version": generator.version, "model": generator.model_checksum,
                    "conditions": expanded, "options": options, "seed": int(seed)}
        run_id = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        provenances = [store.provenance(i) for i in range(len(store))]
        ours = [p for p in provenances if p.extra.get("run", {}).get("id") == run_id]
        if ours:
            return cls(generator, conditions, len(expanded), run_id, ours[0].extra["run"]["first_seed"],
                       len(ours), options)
        n, first, note = len(expanded), int(seed), None
        used = {p.seed for p in provenances if p.seed is not None}
        if used & set(range(first, first + n)):
            first = max(used) + 1
            note = (f"seeds {seed}..{seed + n - 1} are already used in {store.path}; "
                    f"this run uses seeds {first}..{first + n - 1}")
        return cls(generator, conditions, n, run_id, first, 0, options, note)

    def write(self, store: DatasetStore, split: str = "synthetic", progress: ProgressFn = no_progress,
              should_stop: StopFn = never_stop, on_pair: Callable[[int, Sample], None] | None = None) -> int:
        """Generate and append the pairs not yet stored; returns how many were written.

        ``on_pair(index, pair)`` is called with each pair's store index once it is stored (a UI's preview).
        Raises :class:`Cancelled` (pairs stored so far stay; running the same command again continues).
        """
        if self.done >= self.n:
            return 0
        many = (np.ndim(self.conditions) == 2 if self.generator.condition_spec.kind == "fractions"
                else self.conditions is not None and not isinstance(self.conditions, dict))
        rest = self.conditions[self.done:] if many else self.conditions
        pairs = self.generator.sample(rest, n=self.n - self.done, seed=self.first_seed + self.done,
                                      progress=progress, should_stop=should_stop, **self.options)
        run = {"id": self.run_id, "first_seed": self.first_seed}
        written = 0
        try:
            for pair in pairs:
                provenance = replace(pair.provenance, extra={**pair.provenance.extra, "run": run})
                pair = replace(pair, provenance=provenance)
                index = store.append(pair, split=split)
                written += 1
                if on_pair is not None:
                    on_pair(index, pair)
        except Cancelled as exc:
            stored = self.done + written
            raise Cancelled(f"{exc}; {stored} of {self.n} pairs stored, the same command continues") from None
        return written
