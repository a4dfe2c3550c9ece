"""Shared fixtures: the real micrograph data in ../shared/data, UHCS training pairs, torch on one thread."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from napari_microsynth.core.io import read_mask, read_micrograph
from napari_microsynth.core.sample import Sample
from napari_microsynth.core.schema import PhaseSchema

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
UHCS_TRAIN_NAMES = ("uhcs0007", "uhcs0599", "uhcs0477", "uhcs0124")  # first four of the 16/4/4 training split


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data folder missing: {SHARED_DATA} (the tests need ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def read_uhcs(shared_data) -> Callable[..., list[Sample]]:
    """``read_uhcs(n, pixel_size_um=None)``: the first ``n`` UHCS training micrographs with their masks."""
    folder = shared_data / "uhcs"
    schema = PhaseSchema.bundled("uhcs")

    def read(n: int, pixel_size_um: float | None = None) -> list[Sample]:
        samples = []
        for name in UHCS_TRAIN_NAMES[:n]:
            image, _ = read_micrograph(folder / "images" / f"{name}.tif", info_band=None)
            mask = read_mask(folder / "masks" / f"{name}.npy", schema)
            samples.append(Sample(image, schema, mask, name=name, pixel_size_um=pixel_size_um))
        return samples

    return read


@pytest.fixture(scope="module")
def uhcs_samples(read_uhcs) -> list[Sample]:
    """Three UHCS training micrographs with their masks, no pixel size."""
    return read_uhcs(3)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread while a module runs (the CPU is shared); use with ``pytest.mark.usefixtures``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
