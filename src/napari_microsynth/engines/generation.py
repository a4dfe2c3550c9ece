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

Several processes (``accelerate launch --num_processes N ... microsynth generate ...``): the same code runs in
every process and the pairs land in the one store, each seed once. One writer, not per-rank shard stores:
the store allows one writing process (its lock), and a shard merge would need a second resume state (the
shards) next to the store's. Instead the work goes in rounds: in each round process ``r`` makes the ``r``-th
block of the next seeds (blocks of the generator's sampling batch size), the pairs are gathered to the main
process, and it appends them in seed order. The store therefore always holds a seed-ordered prefix of the
run, exactly as a single process would have written it, so a killed run resumes the same way; only the
main process reports progress, and a cancel is decided by the main process between rounds, so no process
is left waiting in a gather. Non-main processes open the store read-only (:func:`open_output_store`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..core.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from ..core.sample import Sample
from ..core.schema import PhaseSchema
from ..core.store import DatasetStore, is_store
from ..generators.base import Generator


def _processes():
    """accelerate's process state when this program was started on several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    # on CPU (``ACCELERATE_USE_CPU`` or no GPU) the processes talk through gloo
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def open_output_store(path: str | Path, schema: PhaseSchema, description: str = "") -> DatasetStore:
    """The store a generate run writes into, created when missing, open for appending.

    Under ``accelerate launch`` only the main process opens it for writing; the others wait until it
    exists and open it read-only (they hand their pairs to the main process, see the module doc).
    """
    path, state = Path(path), _processes()
    store = None
    if state is None or state.is_main_process:
        store = (DatasetStore.open(path, mode="a") if is_store(path)
                 else DatasetStore.create(path, schema, description=description))
    if state is not None:
        state.wait_for_everyone()
        if store is None:  # (an empty store is falsy: test for None)
            store = DatasetStore.open(path)
    return store


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
    upscaler: Any = None  # a SuperResolution model that doubles every pair before it is stored, or None
    upscale_steps: int | None = None

    @classmethod
    def plan(cls, generator: Generator, store: DatasetStore, conditions: Any, n: int | None = None,
             seed: int = 0, upscaler: Any = None, upscale_steps: int | None = None, **options: Any) -> "GenerateRun":
        """Where a run of ``generator.sample(conditions, n, seed, **options)`` into ``store`` stands.

        ``upscaler``: a :class:`~napari_microsynth.generators.super_resolution.SuperResolution` model that
        doubles each pair (paper 000's pipeline: generate at 128 px, super-resolve to 256 px) with
        ``upscale_steps`` denoising steps (None: its sampler's default). Bad conditions, or an upscaler for
        other phases, raise here, before anything is written; ``n`` must come to at least 1 pair.
        """
        expanded = generator.condition_spec.expand(conditions, n)
        if not expanded:
            raise ValueError("nothing to generate: the number of pairs must be at least 1")
        if upscaler is not None and upscaler.schema.names != generator.schema.names:
            raise ValueError(f"the super-resolution model is for phases {upscaler.schema.names}, the generator "
                             f"makes {generator.schema.names}")
        identity = {"generator": generator.name, "version": generator.version, "model": generator.model_checksum,
                    "conditions": expanded, "options": options, "seed": int(seed),
                    **({} if upscaler is None else {"upscaler": upscaler.model_checksum, "upscale_steps": upscale_steps})}
        run_id = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        provenances = [store.provenance(i) for i in range(len(store))]
        ours = [p for p in provenances if p.extra.get("run", {}).get("id") == run_id]
        if ours:
            return cls(generator, conditions, len(expanded), run_id, ours[0].extra["run"]["first_seed"],
                       len(ours), options, None, upscaler, upscale_steps)
        n, first, note = len(expanded), int(seed), None
        used = {p.seed for p in provenances if p.seed is not None}
        if used & set(range(first, first + n)):
            first = max(used) + 1
            note = (f"seeds {seed}..{seed + n - 1} are already used in {store.path}; "
                    f"this run uses seeds {first}..{first + n - 1}")
        return cls(generator, conditions, n, run_id, first, 0, options, note, upscaler, upscale_steps)

    def _pairs(self, start: int, stop: int, progress: ProgressFn, should_stop: StopFn) -> Iterator[Sample]:
        """Pairs ``start .. stop - 1`` of the run (seeds ``first_seed + start ..``), the run recorded in each."""
        many = (np.ndim(self.conditions) == 2 if self.generator.condition_spec.kind == "fractions"
                else self.conditions is not None and not isinstance(self.conditions, dict))
        conditions = self.conditions[start:stop] if many else self.conditions
        run = {"id": self.run_id, "first_seed": self.first_seed}
        pairs = self.generator.sample(conditions, n=stop - start, seed=self.first_seed + start,
                                      progress=progress, should_stop=should_stop, **self.options)
        if self.upscaler is not None:  # each pair doubled with its own seed, so a resumed run gets the same
            pairs = self.upscaler.upscale_many(pairs, steps=self.upscale_steps, progress=progress,
                                               should_stop=should_stop)
        for pair in pairs:
            yield replace(pair, provenance=replace(pair.provenance, extra={**pair.provenance.extra, "run": run}))

    def write(self, store: DatasetStore, split: str = "synthetic", progress: ProgressFn = no_progress,
              should_stop: StopFn = never_stop, on_pair: Callable[[int, Sample], None] | None = None) -> int:
        """Generate and append the pairs not yet stored; returns how many were written.

        ``on_pair(index, pair)`` is called with each pair's store index once it is stored (a UI's preview).
        Raises :class:`Cancelled` (pairs stored so far stay; running the same command again continues).
        Under ``accelerate launch`` the processes share the work (module doc); each returns the count.
        """
        state = _processes()
        if state is not None:
            return self._write_shared(store, split, progress, should_stop, on_pair, state)
        if self.done >= self.n:
            return 0
        written = 0
        try:
            for pair in self._pairs(self.done, self.n, progress, should_stop):
                index = store.append(pair, split=split)
                written += 1
                if on_pair is not None:
                    on_pair(index, pair)
        except Cancelled as exc:
            stored = self.done + written
            raise Cancelled(f"{exc}; {stored} of {self.n} pairs stored, the same command continues") from None
        return written

    def _block(self) -> int:
        """Pairs one process makes per round: the generator's sampling batch size (1 when it has none)."""
        return max(1, int(getattr(self.generator.sampling_config(**self.options), "batch_size", 1)))

    def _write_shared(self, store: DatasetStore, split: str, progress: ProgressFn, should_stop: StopFn,
                      on_pair: Callable[[int, Sample], None] | None, state) -> int:
        """:meth:`write` on several processes: rounds of one block per process, appended by the main one."""
        from accelerate.utils import broadcast_object_list, gather_object

        self.first_seed, self.done = broadcast_object_list([self.first_seed, self.done])  # the main's plan rules
        main, block = state.is_main_process, self._block()
        written, start = 0, self.done
        while start < self.n:
            if broadcast_object_list([main and bool(should_stop())])[0]:
                stored = self.done + written
                raise Cancelled(f"cancelled; {stored} of {self.n} pairs stored, the same command continues")
            lo = min(self.n, start + state.process_index * block)
            mine = list(self._pairs(lo, min(self.n, lo + block), no_progress, never_stop)) if lo < self.n else []
            for pairs in gather_object([mine]):  # in process order, which is seed order
                for pair in pairs if main else ():
                    index = store.append(pair, split=split)
                    written += 1
                    progress(self.done + written, self.n, f"stored {pair.name}")
                    if on_pair is not None:
                        on_pair(index, pair)
            start += state.num_processes * block
        return broadcast_object_list([written])[0]
