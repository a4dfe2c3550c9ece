"""bench/gpu_run.py: the model it brings back from a GPU machine (float16 transport copy) loads and generates."""
from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

import numpy as np
import pytest

from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.generators import load_generator
from napari_microsynth.generators.two_stage_gan import TwoStageGAN

pytestmark = pytest.mark.usefixtures("one_thread")
GPU_RUN = Path(__file__).resolve().parents[1] / "bench" / "gpu_run.py"


def test_packed_model_is_half_the_size_and_generates_the_same_masks(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_run", GPU_RUN)
    gpu_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_run)
    folder = TwoStageGAN(PhaseSchema.bundled("uhcs"), "tiny", device="cpu").save(tmp_path / "model")
    gpu_run.pack_model(folder, tmp_path / "uhcs-model.tar")
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert (tmp_path / "uhcs-model.tar").stat().st_size < 0.6 * weights + 20_000
    with tarfile.open(tmp_path / "uhcs-model.tar") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    original, unpacked = load_generator(folder, device="cpu"), load_generator(tmp_path / "back" / "model", device="cpu")
    options = dict(sampler="ddim", steps=3, fraction_control=0.0)
    a = next(original.sample([0.7, 0.1, 0.1, 0.1], n=1, seed=2, **options))
    b = next(unpacked.sample([0.7, 0.1, 0.1, 0.1], n=1, seed=2, **options))
    assert np.mean(a.mask == b.mask) > 0.95  # float16 rounding may flip a few pixels
    assert np.abs(a.image - b.image).mean() < 0.02
