"""two-stage-gan: fraction-controlled mask diffusion + SPADE translator; training, sampling, files, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microsynth.core.fractions import mask_fractions
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.generators import get_generator, load_generator
from napari_microsynth.generators.two_stage_gan import TwoStageGAN
from napari_microsynth.models.diffusion import snap_to_fractions
from napari_microsynth.core.tiles import RandomPairTiles

UHCS = PhaseSchema.bundled("uhcs")
FAST = dict(sampler="ddim", steps=4, batch_size=4)
pytestmark = pytest.mark.usefixtures("one_thread")


def fast_config(**overrides) -> TwoStageGAN.TrainConfig:
    settings = dict(steps=20, batch_size=8, learning_rate=1e-3, lr_schedule="constant", lr_warmup_steps=0,
                    translator_steps=150, translator_batch_size=8, translator_lr=1e-3, downscale=4)
    return TwoStageGAN.TrainConfig(**{**settings, **overrides})


def phase_means(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean brightness of each UHCS phase over a batch (NaN where a phase is absent)."""
    return np.array([images[masks == c].mean() if np.any(masks == c) else np.nan for c in range(UHCS.n_classes)])


@pytest.fixture(scope="module")
def real_tiles(uhcs_samples):
    tiles = RandomPairTiles(uhcs_samples, 32, downscale=4, augment=False)
    return tiles.draw(np.random.default_rng(5), 16)


@pytest.fixture(scope="module")
def trained(uhcs_samples, real_tiles):
    """A tiny model after a short training, and what its untrained translator painted for the real tiles' masks."""
    gen = TwoStageGAN(UHCS, "tiny", device="cpu")
    seen = []
    _, masks = real_tiles
    untrained = gen.paint(torch.from_numpy(masks), list(range(len(masks))))
    report = gen.train(uhcs_samples, fast_config(), progress=lambda d, t, m: seen.append((d, t, m)))
    return gen, report, seen, untrained


def test_registered_and_both_stages_train(trained):
    gen, report, seen, _ = trained
    assert get_generator("two-stage-gan") is TwoStageGAN
    assert set(report["stages"]) == {"mask", "translator"}
    mask_losses = np.array(report["stages"]["mask"]["losses"])
    assert mask_losses[-6:].mean() < 0.8 * mask_losses[:6].mean()
    assert seen[-1][:2] == (170, 170) and "translator" in seen[-1][2]


def test_translator_learns_the_brightness_of_each_phase(trained, real_tiles):
    """A user sees cementite bright and ferrite dark in the painted micrograph, as in the real one."""
    gen, _, _, untrained = trained
    images, masks = real_tiles
    painted = gen.paint(torch.from_numpy(masks), list(range(len(masks))))
    real, fake, before = phase_means(images, masks), phase_means(painted, masks), phase_means(untrained, masks)
    present = ~np.isnan(real)
    error, error_before = np.abs(real - fake)[present], np.abs(real - before)[present]
    assert error.mean() < 0.5 * error_before.mean() and error.max() < 0.15
    # the network's own brightness order of ferrite (0) vs cementite network (1) matches the real one
    assert (fake[1] > fake[0]) == (real[1] > real[0])


def test_painted_texture_varies_with_the_seed_and_is_not_flat(trained, real_tiles):
    gen, *_ = trained
    _, masks = real_tiles
    mask = torch.from_numpy(masks[:1]).repeat(2, 1, 1)
    a, b = gen.paint(mask, [1, 2])
    assert np.abs(a - b).mean() > 1e-3
    ferrite = masks[0] == 0
    assert a[ferrite].std() > 0.01  # not a flat fill per phase


def test_fraction_control_meets_the_targets_and_off_does_not(trained):
    gen, *_ = trained
    targets = np.array([[0.5, 0.2, 0.2, 0.1], [0.8, 0.05, 0.1, 0.05], [0.3, 0.4, 0.2, 0.1]])
    on = list(gen.sample(targets, seed=3, **FAST))
    off = list(gen.sample(targets, seed=3, fraction_control=0.0, **FAST))
    err_on = np.abs(np.stack([mask_fractions(p.mask, UHCS) for p in on]) - targets)
    err_off = np.abs(np.stack([mask_fractions(p.mask, UHCS) for p in off]) - targets)
    assert err_on.max() < 0.02
    assert err_off.mean() > 2 * err_on.mean()
    assert on[0].provenance.extra["sampling"]["fraction_control"] == 1.0
    assert on[0].image.shape == on[0].mask.shape == (32, 32)


def test_snap_moves_thresholds_not_whole_regions():
    """The snap flips the least certain pixels first: pixels the model is sure about keep their class."""
    x = torch.linspace(-1, 1, 1024).reshape(1, 1, 32, 32)
    logits = torch.cat([x, -x], 1)
    snapped = snap_to_fractions(logits, torch.tensor([[0.3, 0.7]]))
    assert abs(snapped.float().mean().item() - 0.7) < 0.01
    assert snapped[0, -1, -1] == 0 and snapped[0, 0, 0] == 1


def test_save_load_gives_the_same_pairs(trained, tmp_path):
    gen, *_ = trained
    folder = gen.save(tmp_path / "model")
    assert {p.name for p in folder.glob("*.safetensors")} == {"mask_denoiser.safetensors", "translator.safetensors"}
    again = load_generator(folder, device="cpu")
    a = next(gen.sample([0.6, 0.2, 0.15, 0.05], n=1, seed=9, **FAST))
    b = next(again.sample([0.6, 0.2, 0.15, 0.05], n=1, seed=9, **FAST))
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.image, b.image, atol=1e-6)
    assert b.provenance.generator == "two-stage-gan" and b.provenance.model_checksum == again.model_checksum


def test_cancelled_translator_training_resumes_to_the_same_weights(uhcs_samples, tmp_path):
    config = fast_config(steps=4, translator_steps=6, checkpoint_dir=str(tmp_path / "work"), checkpoint_every=3)
    straight = TwoStageGAN(UHCS, "tiny", device="cpu")
    straight.train(uhcs_samples, fast_config(steps=4, translator_steps=6))

    calls = {"n": 0}

    def stop_in_translator() -> bool:
        calls["n"] += 1
        return calls["n"] > 4 + 3  # 4 mask steps, then 3 translator steps

    first = TwoStageGAN(UHCS, "tiny", device="cpu")
    with pytest.raises(Cancelled):
        first.train(uhcs_samples, config, should_stop=stop_in_translator)
    resumed = TwoStageGAN(UHCS, "tiny", device="cpu")
    report = resumed.train(uhcs_samples, config)
    assert report["stages"]["translator"]["resumed_from"] == 3
    for key, value in straight.translator.state_dict().items():
        torch.testing.assert_close(resumed.translator.state_dict()[key], value, msg=key)


def test_cli_trains_with_family_settings_and_generates_at_the_asked_fractions(tmp_path, capsys):
    """``--set`` reaches the family's own settings; a typo lists the known ones; ``generate`` keeps the control."""
    from napari_microsynth.cli import main
    from napari_microsynth.core.store import DatasetStore
    from napari_microsynth.core.sample_data import load_sample

    data = DatasetStore.create(tmp_path / "real.zarr", UHCS)
    data.append(load_sample(), split="train")
    out = tmp_path / "run"
    common = ["-q", "train-generator", "two-stage-gan", str(tmp_path / "real.zarr"), "--preset", "tiny",
              "--steps", "3", "--batch-size", "2", "--threads", "1", "--out", str(out)]
    assert main([*common, "--set", "translator_stepz=4"]) == 2
    assert "translator_steps" in capsys.readouterr().err
    assert main([*common, "--set", "translator_steps=4", "--set", "downscale=4"]) == 0
    model = load_generator(out / "model", device="cpu")
    assert model.training.settings["translator_steps"] == 4 and model.downscale == 4

    store = tmp_path / "pairs.zarr"
    assert main(["-q", "generate", str(out / "model"), str(store), "-n", "2", "--fractions", "0.5,0.3,0.1,0.1",
                 "--steps", "3", "--threads", "1"]) == 0
    pairs = DatasetStore.open(store)
    assert pairs.provenance(0).extra["sampling"]["sampler"] == "dpm++"  # the family's default, not the CLI's
    for i in range(len(pairs)):
        achieved = mask_fractions(pairs[i].mask, UHCS)
        assert np.abs(achieved - [0.5, 0.3, 0.1, 0.1]).max() < 0.02


def test_clean_up_happens_before_the_image_is_painted(trained):
    """With paper 002's clean-up the returned image is the one painted for the cleaned mask."""
    gen, *_ = trained
    pair = next(gen.sample([0.6, 0.2, 0.15, 0.05], n=1, seed=4, min_region_px=6, **FAST))
    repainted = gen.paint(torch.from_numpy(pair.mask[None]), [4])[0]
    np.testing.assert_allclose(pair.image, repainted, atol=1e-6)
