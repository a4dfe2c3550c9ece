"""2x super-resolution of image + mask pairs (paper 000, sec. 2.2.3): training pairs, upscaling, files."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_microsynth.core.sample import Provenance, Sample
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.generators.pf_diffseg import PFDiffSeg
from napari_microsynth.generators.super_resolution import (
    SuperResolution,
    low_resolution_context,
    super_resolution_config,
)
from napari_microsynth.models.diffusion import decode_mask
from napari_microsynth.core.tiles import downscale_pair
from napari_microsynth.models.folder import folder_checksum

UHCS = PhaseSchema.bundled("uhcs")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def uhcs_samples(read_uhcs) -> list[Sample]:
    return read_uhcs(3, pixel_size_um=0.25)


@pytest.fixture(scope="module")
def trained(uhcs_samples):
    sr = SuperResolution(UHCS, "tiny", device="cpu")
    config = sr.TrainConfig(steps=20, batch_size=8, learning_rate=1e-3, lr_schedule="constant", lr_warmup_steps=0)
    report = sr.train(uhcs_samples, config)
    return sr, report


@pytest.fixture(scope="module")
def low_res_pairs(uhcs_samples) -> list[Sample]:
    """16 px pairs as a generator trained on 2x-reduced tiles would make them, with synthetic provenance."""
    pairs = []
    for i, (y, x) in enumerate([(0, 0), (100, 200), (300, 40)]):
        tile = uhcs_samples[i].crop((y, x, y + 32, x + 32))
        image, mask = downscale_pair(tile.image, tile.mask, 2, UHCS)
        provenance = Provenance(origin="synthetic", generator="pf-diffseg", seed=40 + i,
                                condition={"fractions": [0.25] * 4}, extra={"sampling": {"steps": 5}})
        pairs.append(Sample(image, UHCS, mask, name=f"pair{i}", pixel_size_um=0.5, provenance=provenance))
    return pairs


def test_paper_preset_follows_table_a3():
    config = super_resolution_config(3, "paper")  # paper 000: one image + three mask channels
    assert config.resolution == 256 and config.block_out_channels == (128, 128, 256, 256, 512, 512)
    # 4 generated channels and 4 condition channels: 8 in, 4 out (Table A3)
    assert (config.target_channels, config.context_channels, config.condition_dim) == (4, 4, 0)
    assert SuperResolution.TrainConfig().l1_weight == 0.0  # MSE


def test_condition_is_the_upsampled_low_resolution_pair(low_res_pairs):
    pair = low_res_pairs[0]
    context = low_resolution_context(torch.from_numpy(pair.image[None]), torch.from_numpy(pair.mask[None]), UHCS)
    assert context.shape == (1, 5, 32, 32) and context.abs().max() <= 1
    # the image channel is the enlarged image, the mask channels the enlarged mask
    block_means = ((context[0, 0] + 1) / 2).reshape(16, 2, 16, 2).mean(dim=(1, 3)).numpy()
    assert np.abs(block_means - pair.image).mean() < 0.02
    nearest = np.kron(pair.mask, np.ones((2, 2), int))
    assert (decode_mask(context[:, 1:])[0].numpy() == nearest).mean() > 0.9


def test_training_lowers_the_loss(trained):
    _, report = trained
    losses = np.array(report["losses"])
    assert len(losses) == 20 and losses[-6:].mean() < 0.8 * losses[:6].mean()


def test_upscaled_pairs_double_in_size_with_valid_classes_and_kept_provenance(trained, low_res_pairs, tmp_path):
    sr, _ = trained
    sr.save(tmp_path / "sr")
    big = sr.upscale(low_res_pairs[0], steps=4)
    assert big.image.shape == big.mask.shape == (32, 32)
    assert big.image.dtype == np.float32 and 0 <= big.image.min() and big.image.max() <= 1
    UHCS.validate_mask(big.mask)
    assert big.pixel_size_um == pytest.approx(0.25)
    p, q = big.provenance, low_res_pairs[0].provenance
    assert (p.origin, p.generator, p.seed, p.condition) == (q.origin, q.generator, q.seed, q.condition)
    assert p.extra["sampling"] == {"steps": 5}
    assert p.extra["super_resolution"] == folder_checksum(tmp_path / "sr") == sr.model_checksum
    assert p.extra["super_resolution_sampling"] == {"seed": 40, "sampler": "ddim", "steps": 4}
    assert big.name == "pair0"


def test_upscaling_is_reproducible_and_follows_the_input(trained, low_res_pairs):
    sr, _ = trained
    one = sr.upscale(low_res_pairs[0], steps=4)
    again = sr.upscale(low_res_pairs[0], steps=4)
    np.testing.assert_array_equal(one.image, again.image)
    np.testing.assert_array_equal(one.mask, again.mask)
    # same seed, another low-resolution pair: another result
    swapped = replace(low_res_pairs[1], provenance=low_res_pairs[0].provenance)
    other = sr.upscale(swapped, steps=4)
    assert np.abs(other.image - one.image).mean() > 0.01


def test_upscale_many_streams_in_batches_like_one_by_one(trained, low_res_pairs):
    sr, _ = trained
    seen = []
    stream = sr.upscale_many(iter(low_res_pairs), batch_size=2, steps=3, progress=lambda d, t, m: seen.append(m))
    first = next(stream)
    assert len(seen) == 3 and "pair0, pair1" in seen[0]  # only the first batch was computed
    batched = [first, *stream]
    assert [b.provenance.extra["super_resolution_sampling"]["seed"] for b in batched] == [40, 41, 42]
    single = sr.upscale(low_res_pairs[2], steps=3)
    np.testing.assert_allclose(batched[2].image, single.image, atol=1e-4)


def test_bad_inputs_are_refused(trained, low_res_pairs, tmp_path):
    sr, _ = trained
    with pytest.raises(ValueError, match="has no mask"):
        sr.upscale(Sample(low_res_pairs[0].image, UHCS, name="bare"))
    metaldam = PhaseSchema.bundled("metaldam")
    with pytest.raises(ValueError, match="schema"):
        sr.upscale(Sample(np.zeros((16, 16), np.float32), metaldam, np.zeros((16, 16), int)))
    with pytest.raises(ValueError, match="multiples of 4"):
        sr.upscale(Sample(np.zeros((15, 15), np.float32), UHCS, np.zeros((15, 15), int)))
    generator_folder = PFDiffSeg(UHCS, "tiny", device="cpu").save(tmp_path / "pf")
    with pytest.raises(ValueError, match="not a super-resolution model"):
        SuperResolution.load(generator_folder)


def test_upscaled_masks_keep_the_low_resolution_phase_fractions(trained, low_res_pairs):
    """Super-resolution must not undo the fraction control of the generator that made the pair."""
    from napari_microsynth.core.fractions import mask_fractions

    sr, _ = trained
    for pair, big in zip(low_res_pairs, sr.upscale_many(low_res_pairs, steps=20)):
        assert np.abs(mask_fractions(big.mask, UHCS) - mask_fractions(pair.mask, UHCS)).max() < 0.05
