"""The CycleGAN translator of paper 003 (partial: networks, losses, training through the one trainer) on
real iron micrographs (domain X) and simulated grain structures (domain Y)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microsynth.core.io import read_micrograph
from napari_microsynth.core.microstructure import GrainGrowthSettings
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.models.cyclegan import (
    CycleGANConfig,
    CycleGANTrainConfig,
    build_cyclegan,
    parameter_count,
    train_cyclegan,
    translate,
)
from napari_microsynth.models.phase_field import simulate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def domains(shared_data):
    """X: two real iron micrographs; Y: the eq. 3 images of two small simulated structures."""
    real = [read_micrograph(shared_data / "fastfinecut_iron" / "images" / f"00{i}.tif", info_band=None)[0]
            for i in (1, 2)]
    settings = GrainGrowthSettings(grains=10, size=64, steps=30, snapshot_every=0)
    simulated = [simulate(settings, seed, device="cpu").phi for seed in (0, 1)]
    return real, simulated


def test_networks_are_the_cyclegan_papers():
    paper = {name: parameter_count(m) for name, m in build_cyclegan(CycleGANConfig.preset("paper", 3)).items()}
    # the reference code prints 11.378 M (ResNet-9 generator) and 2.765 M (70x70 PatchGAN) for RGB
    assert paper == {"G": 11_378_179, "F": 11_378_179, "D_X": 2_764_737, "D_Y": 2_764_737}
    tiny = build_cyclegan(CycleGANConfig.preset("tiny"))
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        y = tiny["F"](x)
    assert y.shape == x.shape and float(y.abs().max()) <= 1.0
    assert build_cyclegan(CycleGANConfig.preset("paper"))["D_Y"](torch.zeros(1, 1, 256, 256)).shape == (1, 1, 30, 30)
    with pytest.raises(ValueError, match="multiples of 4"):
        tiny["G"](torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match="unknown CycleGAN preset"):
        CycleGANConfig.preset("huge")


def test_training_on_iron_and_simulations_learns_the_cycle(domains):
    real, simulated = domains
    modules = build_cyclegan(CycleGANConfig.preset("tiny"), seed=0)
    config = CycleGANTrainConfig(steps=60, batch_size=2, crop=32, seed=0)
    result = train_cyclegan(modules, real, simulated, config)
    history = result.history
    assert len(history) == 60 and all(np.isfinite(h["loss"]) for h in history)
    cycle = [h["cycle"] for h in history]
    assert np.mean(cycle[-10:]) < 0.7 * np.mean(cycle[:10])
    # F makes a micrograph-like image of a whole simulated structure, any size, in [0, 1]
    [made] = translate(modules["F"], [simulated[0][:62, :63]])
    assert made.shape == (62, 63) and 0.0 <= made.min() and made.max() <= 1.0


def test_an_interrupted_training_resumes_to_the_same_weights(domains, tmp_path):
    real, simulated = domains
    config = CycleGANTrainConfig(steps=8, batch_size=1, crop=16, checkpoint_dir=str(tmp_path / "ckpt"),
                                 checkpoint_every=4, seed=3)
    whole = build_cyclegan(CycleGANConfig.preset("tiny"), seed=1)
    train_cyclegan(whole, real, simulated, CycleGANTrainConfig(steps=8, batch_size=1, crop=16, seed=3))
    modules = build_cyclegan(CycleGANConfig.preset("tiny"), seed=1)
    calls = []
    with pytest.raises(Cancelled):
        train_cyclegan(modules, real, simulated, config, progress=lambda *a: calls.append(a),
                       should_stop=lambda: len(calls) >= 5)
    resumed = build_cyclegan(CycleGANConfig.preset("tiny"), seed=1)
    result = train_cyclegan(resumed, real, simulated, config)
    assert result.resumed_from is not None and 0 < result.resumed_from < 8
    for name in ("G", "F", "D_X", "D_Y"):
        for a, b in zip(whole[name].state_dict().values(), resumed[name].state_dict().values()):
            torch.testing.assert_close(a, b)
