"""Fractions and opening of a big dataset store: the stored class counts against re-reading every sample.

Builds a synthetic store of ``--samples`` small pairs (random 32x32 masks, four phases) in a temporary
folder and times, in one run:

- old path, what ``microsynth fractions`` did before issue 19: open with the full data check (every mask
  read), then read every image and mask and compute its fractions;
- new path, what it does now: the quick structural open and the stored class counts
  (``core.datasets.split_fractions``);
- opening alone, quick (default) against full (``describe --full``).

It checks that both paths give the same fractions and prints the times and their ratios.

    python bench/bench_store_scale.py --samples 3000
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_microsynth.core.datasets import split_fractions
from napari_microsynth.core.sample import Sample
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore


def build(path: Path, n: int, size: int) -> None:
    schema = PhaseSchema.bundled("uhcs")
    rng = np.random.default_rng(0)
    with DatasetStore.create(path, schema) as store:
        for i in range(n):
            mask = rng.integers(0, schema.n_classes, (size, size)).astype(np.uint8)
            image = rng.random((size, size), dtype=np.float32)
            store.append(Sample(image, schema, mask, name=f"pair {i}"), split="train")


def old_path(path: Path) -> tuple[list[str], np.ndarray]:
    store = DatasetStore.open(path, check_data=True)
    samples = [store[i] for i in range(len(store))]
    return [s.name for s in samples], np.stack([s.fractions for s in samples])


def new_path(path: Path) -> tuple[list[str], np.ndarray]:
    names, fractions, _ = split_fractions(path)
    return names, fractions


def timed(work) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--size", type=int, default=32, help="side of each sample in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.zarr"
        seconds, _ = timed(lambda: build(path, args.samples, args.size))
        print(f"built a store of {args.samples} {args.size}x{args.size} samples in {seconds:.1f} s")
        t_old, (names_old, old) = timed(lambda: old_path(path))
        t_new, (names_new, new) = timed(lambda: new_path(path))
        assert names_old == names_new and np.allclose(old, new), "the two paths disagree"
        t_full, _ = timed(lambda: DatasetStore.open(path, check_data=True))
        t_quick, _ = timed(lambda: DatasetStore.open(path))
    print(f"fractions: old path (full open + read every sample) {t_old:.2f} s, new path (quick open + stored "
          f"counts) {t_new:.3f} s, ratio {t_old / t_new:.1f}x")
    print(f"open: full data check {t_full:.2f} s, quick structural check {t_quick:.3f} s, ratio {t_full / t_quick:.1f}x")


if __name__ == "__main__":
    main()
