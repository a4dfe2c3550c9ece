"""Two-stage baseline (mask diffusion, then mask-conditioned image diffusion): training, sampling, files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.sample import Sample
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.generators import get_generator, load_generator
from napari_microsynth.generators.pf_diffseg import PRESETS
from napari_microsynth.generators.two_stage import TwoStage, two_stage_configs
from napari_microsynth.models.diffusion_training import latest_checkpoint
from napari_microsynth.models.folder import folder_checksum

UHCS = PhaseSchema.bundled("uhcs")
FAST = dict(sampler="ddim", steps=4, batch_size=1)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def uhcs_samples(read_uhcs) -> list[Sample]:
    return read_uhcs(3, pixel_size_um=0.25)


def fast_config(**overrides) -> TwoStage.TrainConfig:
    settings = dict(steps=20, batch_size=8, learning_rate=1e-3, lr_schedule="constant", lr_warmup_steps=0)
    return TwoStage.TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(uhcs_samples):
    gen = TwoStage(UHCS, "tiny", device="cpu")
    seen = []
    report = gen.train(uhcs_samples, fast_config(), progress=lambda done, total, msg: seen.append((done, total, msg)))
    return gen, report, seen


def test_registered_with_the_paper_widths_and_table_a2_loss():
    assert get_generator("two-stage") is TwoStage
    mask, image = two_stage_configs(4, "paper")
    for config in (mask, image):
        assert config.block_out_channels == PRESETS["paper"]["block_out_channels"] == (128, 128, 256, 256, 512, 512)
    assert (mask.target_channels, mask.condition_dim, mask.context_channels) == (4, 4, 0)
    assert (image.target_channels, image.condition_dim, image.context_channels) == (1, 0, 4)
    assert TwoStage.TrainConfig().l1_weight == 0.0  # SegGuidedDiff: plain MSE (paper 000, Table A2)


def test_training_runs_both_stages_and_lowers_each_loss(trained):
    gen, report, seen = trained
    assert report["steps"] == 20 and set(report["stages"]) == {"mask", "image"}
    for stage in ("mask", "image"):
        losses = np.array(report["stages"][stage]["losses"])
        assert len(losses) == 20
        assert losses[-6:].mean() < 0.8 * losses[:6].mean(), stage
    # one progress bar over both stages
    assert seen[-1][:2] == (40, 40) and "image stage" in seen[-1][2]
    assert any(done == 20 and "mask stage" in msg for done, _, msg in seen)
    assert gen.pixel_size_um == pytest.approx(0.5)  # 0.25 um tiles reduced 2x
    assert gen.training.settings["stage_steps"] == {"mask": 20, "image": 20}


def test_pairs_are_valid_streamed_and_carry_provenance(trained):
    gen, _, _ = trained
    seen = []
    stream = gen.sample([0.6, 0.2, 0.15, 0.05], n=3, seed=4, progress=lambda d, t, m: seen.append((d, t, m)), **FAST)
    first = next(stream)
    assert max(d for d, _, _ in seen) == 8 and seen[-1][1] == 24  # mask + image steps of the first pair only
    assert any("mask step" in m for _, _, m in seen) and any("image step" in m for _, _, m in seen)
    pairs = [first, *stream]
    for seed, pair in zip((4, 5, 6), pairs):
        assert pair.image.shape == pair.mask.shape == (32, 32)
        assert pair.image.dtype == np.float32 and 0 <= pair.image.min() and pair.image.max() <= 1
        UHCS.validate_mask(pair.mask)
        p = pair.provenance
        assert (p.origin, p.generator, p.generator_version, p.seed) == ("synthetic", "two-stage", "1", seed)
        assert p.condition == {"fractions": pytest.approx([0.6, 0.2, 0.15, 0.05])}
        assert p.extra["sampling"] == {"sampler": "ddim", "steps": 4, "guidance_scale": 1.0, "batch_size": 1,
                                       "min_region_px": 0, "fraction_control": 1.0, "control_temperature": 4.0}
        assert pair.pixel_size_um == pytest.approx(0.5)
    assert not np.array_equal(pairs[0].mask, pairs[1].mask)


def test_the_image_stage_draws_the_image_for_the_returned_mask(trained):
    gen, _, _ = trained
    pair = next(gen.sample([0.5, 0.3, 0.1, 0.1], n=1, seed=9, **FAST))
    # regenerating stage 2 from the pair's own mask and seed gives back the pair's image
    again = next(gen.images_for_masks([pair.mask], seed=9, sampler="ddim", steps=4))
    np.testing.assert_allclose(again.image, pair.image, atol=1e-5)
    assert again.provenance.extra["stage"] == "image" and np.array_equal(again.mask, pair.mask)
    # the same noise with another mask gives another image
    other = np.zeros_like(pair.mask)
    other[:, 16:] = 1
    changed = next(gen.images_for_masks([other], seed=9, sampler="ddim", steps=4))
    assert np.abs(changed.image - pair.image).mean() > 0.01
    with pytest.raises(ValueError, match="32 x 32"):
        gen.images_for_masks([np.zeros((16, 16), int)])


def test_guidance_and_cancellation(trained):
    gen, _, _ = trained
    plain = next(gen.sample([0.3, 0.3, 0.3, 0.1], n=1, seed=2, **FAST))
    guided = next(gen.sample([0.3, 0.3, 0.3, 0.1], n=1, seed=2, guidance_scale=3.0, **FAST))
    assert guided.provenance.extra["sampling"]["guidance_scale"] == 3.0
    assert not np.array_equal(plain.mask, guided.mask)
    checks = []
    with pytest.raises(Cancelled):
        list(gen.sample([0.5, 0.2, 0.2, 0.1], n=2, seed=0, should_stop=lambda: checks.append(1) or len(checks) > 3,
                        **FAST))
    with pytest.raises(ValueError, match="guidance_scale"):
        gen.sample([0.5, 0.2, 0.2, 0.1], guidance_scale=-1)


def test_save_load_one_folder_two_weight_files_identical_samples(trained, tmp_path):
    gen, _, _ = trained
    folder = gen.save(tmp_path / "two")
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["image_denoiser.safetensors",
                                                                     "mask_denoiser.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["generator"] == "two-stage" and config["training"]["sample_names"] == ["uhcs0007", "uhcs0599", "uhcs0477"]
    loaded = load_generator(folder, device="cpu")
    assert isinstance(loaded, TwoStage) and loaded.pixel_size_um == pytest.approx(0.5)
    before = list(gen.sample([0.5, 0.3, 0.1, 0.1], n=2, seed=3, **FAST))
    after = list(loaded.sample([0.5, 0.3, 0.1, 0.1], n=2, seed=3, **FAST))
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
    assert after[0].provenance.model_checksum == folder_checksum(folder) == gen.model_checksum != ""


def test_stopped_training_resumes_per_stage(uhcs_samples, tmp_path):
    config = fast_config(steps=3, batch_size=2, checkpoint_dir=str(tmp_path), checkpoint_every=1)
    calls = []
    gen = TwoStage(UHCS, "tiny", device="cpu")
    with pytest.raises(Cancelled, match="step 1 of 3"):
        # the mask stage finishes (3 steps + the final check), the image stage is stopped after 1 step
        gen.train(uhcs_samples, config, should_stop=lambda: calls.append(1) or len(calls) > 4)
    assert latest_checkpoint(tmp_path / "mask").name == "checkpoint-3"
    assert latest_checkpoint(tmp_path / "image").name == "checkpoint-1"
    report = TwoStage(UHCS, "tiny", device="cpu").train(uhcs_samples, config)
    assert report["stages"]["mask"]["resumed_from"] == 3 and report["stages"]["image"]["resumed_from"] == 1
    assert report["stages"]["image"]["steps"] == 3
