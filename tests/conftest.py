"""Shared fixtures: the real micrograph data, UHCS training pairs, torch on one thread.

The real dataset folders are read from ``$MICROSYNTH_DATA`` (default ``../shared/data`` next to the
repository); where that folder is absent, from the small MIT fixtures in ``tests/data``. A test that needs
a dataset the fixtures do not hold carries ``@pytest.mark.real_data("metaldam")`` and is skipped without it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from napari_microsynth.core.io import read_mask, read_micrograph
from napari_microsynth.core.sample import Sample
from napari_microsynth.core.schema import PhaseSchema

REAL_DATA = Path(os.environ.get("MICROSYNTH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
BUNDLED_DATA = Path(__file__).resolve().parent / "data"
NOT_BUNDLED = {
    "metaldam": "MetalDAM has no licence, so it is not bundled",
    "uhcs": "the test checks all 24 UHCS micrographs; tests/data holds 10",
}
UHCS_TRAIN_NAMES = ("uhcs0007", "uhcs0599", "uhcs0477", "uhcs0124")  # first four of the 16/4/4 training split


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data(name): needs the dataset folder <name> of $MICROSYNTH_DATA")


def pytest_runtest_setup(item):
    for marker in item.iter_markers("real_data"):
        name = marker.args[0]
        if not (REAL_DATA / name).is_dir():
            pytest.skip(f"needs {REAL_DATA / name} (set MICROSYNTH_DATA): {NOT_BUNDLED[name]}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder, or the bundled fixtures (a few UHCS and iron pairs) where it is absent."""
    return REAL_DATA if REAL_DATA.is_dir() else BUNDLED_DATA


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
