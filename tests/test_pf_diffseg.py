"""PF-DiffSeg (paper 000): the denoiser, mask encoding, training tiles, training/resume, save/load, sampling."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.sample import Sample
from napari_microsynth.core.schema import Phase, PhaseSchema
from napari_microsynth.core.tiles import RandomPairTiles
from napari_microsynth.models.diffusion_training import (
    DenoiserBatch,
    DiffusionTrainConfig,
    latest_checkpoint,
    train_denoiser,
)
from napari_microsynth.generators import get_generator, load_generator
from napari_microsynth.generators.pf_diffseg import PFDiffSeg, pf_diffseg_config
from napari_microsynth.models.diffusion import (
    DenoiserConfig,
    build_denoiser,
    decode_image,
    decode_mask,
    encode_image,
    encode_mask,
    reverse_diffusion,
)
from napari_microsynth.models.folder import folder_checksum

UHCS = PhaseSchema.bundled("uhcs")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def uhcs_samples(read_uhcs) -> list[Sample]:
    return read_uhcs(4)


def fast_config(**overrides) -> PFDiffSeg.TrainConfig:
    settings = dict(steps=40, batch_size=8, learning_rate=1e-3, lr_schedule="constant", lr_warmup_steps=0)
    return PFDiffSeg.TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(uhcs_samples):
    gen = PFDiffSeg(UHCS, "tiny", device="cpu")
    report = gen.train(uhcs_samples, fast_config())
    return gen, report


# ---------------------------------------------------------------- network


def test_denoiser_maps_image_plus_mask_tensor_to_same_shape():
    config = pf_diffseg_config(UHCS.n_classes, "tiny")
    net = build_denoiser(config)
    x = torch.randn(2, 1 + UHCS.n_classes, 32, 32)
    out = net(x, torch.tensor([5, 900]), condition=torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25] * 4]))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="condition must have shape"):
        net(x, torch.tensor([5, 900]), condition=torch.ones(2, 3))


def test_paper_preset_follows_table_a2():
    config = pf_diffseg_config(4, "paper")  # MetalDAM without precipitate: 4 classes as in paper 000
    assert config.block_out_channels == (128, 128, 256, 256, 512, 512)
    assert config.layers_per_block == 2
    assert (config.target_channels, config.condition_dim, config.resolution) == (5, 4, 128)
    assert config.beta_schedule == "squaredcos_cap_v2"


def test_fraction_vector_reaches_every_resnet_block_and_cross_attention_only_at_deepest_level():
    from diffusers.models.resnet import ResnetBlock2D

    config = pf_diffseg_config(UHCS.n_classes, "tiny")
    net = build_denoiser(config).eval()
    assert isinstance(net.unet.class_embedding, torch.nn.Linear)  # one linear layer, as in paper 000

    tembs: dict[str, list[torch.Tensor]] = {}
    cross_sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in net.unet.named_modules():
        if isinstance(module, ResnetBlock2D):
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: tembs.setdefault(name, []).append(args[1].clone())
            ))
        if getattr(module, "is_cross_attention", False):
            hooks.append(module.register_forward_pre_hook(
                lambda m, args, kwargs, name=name: cross_sizes.__setitem__(name, tuple(args[0].shape)),
                with_kwargs=True,
            ))
    x, t = torch.randn(1, 5, 32, 32), torch.tensor([300])
    with torch.no_grad():
        net(x, t, condition=torch.tensor([[0.9, 0.05, 0.05, 0.0]]))
        net(x, t, condition=torch.tensor([[0.1, 0.1, 0.1, 0.7]]))
    for h in hooks:
        h.remove()

    resnets = [n for n, m in net.unet.named_modules() if isinstance(m, ResnetBlock2D)]
    assert len(resnets) == len(tembs) >= 2 * len(config.block_out_channels)
    for name in resnets:
        first, second = tembs[name]
        assert not torch.allclose(first, second), f"the fraction vector does not reach {name}"

    deepest = (32 // 2 ** (len(config.block_out_channels) - 1)) ** 2  # tokens of the deepest feature map
    assert cross_sizes, "no cross-attention found"
    assert {size[1] for size in cross_sizes.values()} == {deepest}
    last_down = f"down_blocks.{len(config.block_out_channels) - 1}."
    assert {name.split(".attentions")[0] + "." for name in cross_sizes} == {last_down, "mid_block.", "up_blocks.0."}


def test_mask_encoding_roundtrip_is_exact_for_every_class(uhcs_samples):
    mask = torch.from_numpy(uhcs_samples[0].mask[:64, :64].astype(np.int64))
    mask[0, :4] = torch.arange(4)  # make sure every class occurs
    encoded = encode_mask(mask[None], UHCS.n_classes)
    assert encoded.shape == (1, 4, 64, 64)
    assert set(encoded.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(decode_mask(encoded)[0], mask)

    image = torch.from_numpy(uhcs_samples[0].image[:64, :64])[None]
    coded = encode_image(image)
    assert coded.min() >= -1 and coded.max() <= 1
    assert torch.allclose(decode_image(coded), image, atol=1e-6)


def test_ignored_pixels_encode_as_no_class_and_unknown_ids_are_refused():
    schema = PhaseSchema("two", (Phase(0, "a", (0, 0, 0)), Phase(1, "b", (255, 255, 255))), ignore_id=255)
    mask = torch.tensor([[[0, 1, 255]]])
    encoded = encode_mask(mask, schema.n_classes, schema.ignore_id)
    assert encoded[0, :, 0, 2].tolist() == [-1.0, -1.0]
    with pytest.raises(ValueError, match=r"\[7\]"):
        encode_mask(torch.tensor([[[0, 7]]]), 2, 255)


def test_same_denoiser_and_loop_serve_mask_only_and_mask_conditioned_image_stages(uhcs_samples):
    """The two-stage baseline reuses these parts: an unconditional mask diffusion and an image diffusion
    that sees the clean mask as context channels."""
    common = dict(resolution=32, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                  attention_heads=2)
    mask_stage = build_denoiser(DenoiserConfig(target_channels=4, **common))
    image_stage = build_denoiser(DenoiserConfig(target_channels=1, context_channels=4, **common))
    tiles = RandomPairTiles(uhcs_samples, tile=32, downscale=2)

    def image_batch(rng, n):
        images, masks = tiles.draw(rng, n)
        return DenoiserBatch(encode_image(torch.from_numpy(images)), context=encode_mask(torch.from_numpy(masks), 4))

    result = train_denoiser(image_stage, image_batch, DiffusionTrainConfig(steps=3, batch_size=2), "cpu")
    assert result.steps == 3 and len(result.losses) == 3
    masks = reverse_diffusion(mask_stage, torch.randn(1, 4, 32, 32), sampler="dpm++", steps=3)
    image = reverse_diffusion(image_stage, torch.randn(1, 1, 32, 32), context=masks, sampler="ddim", steps=3)
    assert image.shape == (1, 1, 32, 32) and image.abs().max() <= 1
    with pytest.raises(ValueError, match="needs a context"):
        image_stage(torch.randn(1, 1, 32, 32), torch.tensor([1]))


# ---------------------------------------------------------------- training tiles


def test_random_tiles_are_downscaled_augmented_crops_with_exact_class_ids(uhcs_samples):
    tiles = RandomPairTiles(uhcs_samples, tile=32, downscale=2)
    images, masks = tiles.draw(np.random.default_rng(0), 16)
    assert images.shape == masks.shape == (16, 32, 32)
    assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
    assert set(np.unique(masks)) <= set(range(UHCS.n_classes))
    again = tiles.draw(np.random.default_rng(0), 16)
    np.testing.assert_array_equal(again[0], images)

    # without augmentation and downscale 1 a tile is an exact crop of one micrograph
    plain = RandomPairTiles(uhcs_samples[:1], tile=32, downscale=1, augment=False)
    image, mask = plain.draw(np.random.default_rng(3), 1)
    big = uhcs_samples[0]
    hits = [
        (y, x)
        for y, x in zip(*np.nonzero(big.image[:-31, :-31] == image[0, 0, 0]))
        if np.array_equal(big.image[y : y + 32, x : x + 32], image[0])
    ]
    assert hits and np.array_equal(big.mask[hits[0][0] : hits[0][0] + 32, hits[0][1] : hits[0][1] + 32], mask[0])


def test_random_tiles_refuse_unusable_samples(uhcs_samples):
    small = uhcs_samples[0].crop((0, 0, 40, 40))
    with pytest.raises(ValueError, match="smaller than the 64 px crop"):
        RandomPairTiles([small], tile=32, downscale=2)
    with pytest.raises(ValueError, match="need masks"):
        RandomPairTiles([Sample(uhcs_samples[0].image, UHCS, name="bare")], tile=32)


# ---------------------------------------------------------------- training


def test_training_lowers_the_loss_clearly(trained):
    gen, report = trained
    losses = np.array(report["losses"])
    assert report["steps"] == len(losses) == 40
    assert losses[-10:].mean() < 0.7 * losses[:10].mean()
    assert gen.training.steps == 40 and gen.training.final_loss == pytest.approx(report["final_loss"])


def test_interrupted_training_resumes_exactly_where_it_stopped(uhcs_samples, tmp_path):
    config = fast_config(steps=6, batch_size=2, lr_schedule="cosine", lr_warmup_steps=2)
    straight = PFDiffSeg(UHCS, "tiny", device="cpu")
    reference = straight.train(uhcs_samples, config)

    calls = []
    stopped = PFDiffSeg(UHCS, "tiny", device="cpu")
    with pytest.raises(Cancelled, match="step 3 of 6"):
        stopped.train(
            uhcs_samples,
            fast_config(steps=6, batch_size=2, lr_schedule="cosine", lr_warmup_steps=2,
                        checkpoint_dir=str(tmp_path), checkpoint_every=2),
            should_stop=lambda: calls.append(1) or len(calls) > 3,
        )
    assert latest_checkpoint(tmp_path).name == "checkpoint-3"

    resumed = PFDiffSeg(UHCS, "tiny", device="cpu")  # as after restarting the program
    report = resumed.train(
        uhcs_samples,
        fast_config(steps=6, batch_size=2, lr_schedule="cosine", lr_warmup_steps=2,
                    checkpoint_dir=str(tmp_path), checkpoint_every=2),
    )
    assert report["resumed_from"] == 3 and report["steps"] == 6
    assert report["losses"] == reference["losses"]
    for a, b in zip(straight.denoiser.state_dict().values(), resumed.denoiser.state_dict().values()):
        assert torch.equal(a, b)

    other = PFDiffSeg.from_configs(UHCS, [pf_diffseg_config(UHCS.n_classes, "tiny", layers_per_block=2)], device="cpu")
    with pytest.raises(ValueError, match="different configuration.*layers_per_block"):
        other.train(uhcs_samples, fast_config(steps=8, checkpoint_dir=str(tmp_path)))


# ---------------------------------------------------------------- sampling


def test_sample_streams_pairs_with_provenance(trained):
    gen, _ = trained
    seen = []
    stream = gen.sample(
        [0.6, 0.2, 0.15, 0.05], n=3, seed=7, progress=lambda done, total, msg: seen.append((done, total)),
        sampler="dpm++", steps=5, batch_size=1,
    )
    first = next(stream)
    assert max(done for done, _ in seen) == 5 and seen[-1][1] == 15  # only the first pair was computed
    pairs = [first, *stream]
    assert len(pairs) == 3
    for seed, pair in zip((7, 8, 9), pairs):
        assert pair.image.shape == pair.mask.shape == (32, 32)
        assert pair.image.dtype == np.float32 and 0 <= pair.image.min() and pair.image.max() <= 1
        UHCS.validate_mask(pair.mask)
        p = pair.provenance
        assert (p.origin, p.generator, p.seed) == ("synthetic", "pf-diffseg", seed)
        assert p.condition == {"fractions": pytest.approx([0.6, 0.2, 0.15, 0.05])}
        assert p.extra["sampling"] == {"sampler": "dpm++", "steps": 5, "guidance_scale": 1.0, "batch_size": 1,
                                       "min_region_px": 0, "fraction_control": 1.0, "control_temperature": 4.0}
        assert pair.fractions.shape == (4,) and pair.fractions.sum() == pytest.approx(1)
    assert not np.array_equal(pairs[0].image, pairs[1].image)


def test_sampling_with_guidance_and_the_paper_sampler(trained):
    gen, _ = trained
    rows = [[0.9, 0.05, 0.05, 0.0], [0.3, 0.3, 0.3, 0.1]]
    pairs = list(gen.sample(rows, seed=1, sampler="ddim", steps=8, guidance_scale=2.0))
    assert [p.provenance.condition["fractions"] for p in pairs] == [pytest.approx(r) for r in rows]
    assert all(p.provenance.extra["sampling"]["guidance_scale"] == 2.0 for p in pairs)
    with pytest.raises(ValueError, match="sampler must be one of ddim, dpm"):
        gen.sample(rows, sampler="euler")
    with pytest.raises(ValueError, match="non-negative"):
        gen.sample([0.5, 0.6, -0.1, 0.0])


def test_mask_clean_up_after_sampling_leaves_no_small_region(trained):
    """Paper 002's clean-up as a sampling option: same noise, speckles filled from their neighbours."""
    from scipy import ndimage

    gen, _ = trained
    rows = [[0.4, 0.3, 0.2, 0.1]] * 2
    raw = list(gen.sample(rows, seed=3, sampler="dpm++", steps=4))
    clean = list(gen.sample(rows, seed=3, sampler="dpm++", steps=4, min_region_px=6))
    for before, after in zip(raw, clean):
        np.testing.assert_array_equal(before.image, after.image)
        assert after.provenance.extra["sampling"]["min_region_px"] == 6
        sizes = [size for c in range(4)
                 for size in np.bincount(ndimage.label(after.mask == c, np.ones((3, 3)))[0].ravel())[1:]]
        assert min(sizes) >= 6
        assert np.count_nonzero(before.mask != after.mask) > 0
    with pytest.raises(ValueError, match="min_region_px"):
        gen.sample(rows, min_region_px=-1)


def test_should_stop_cancels_mid_sampling(trained):
    gen, _ = trained
    checks = []
    got = []
    with pytest.raises(Cancelled):
        for pair in gen.sample(
            [0.5, 0.2, 0.2, 0.1], n=4, seed=0, sampler="ddim", steps=10, batch_size=1,
            should_stop=lambda: checks.append(1) or len(checks) > 15,
        ):
            got.append(pair)
    assert len(got) == 1  # the second pair was stopped half-way through its 10 steps


def test_save_load_roundtrip_gives_identical_samples(trained, tmp_path):
    gen, _ = trained
    folder = gen.save(tmp_path / "pf")
    config = json.loads((folder / "config.json").read_text())
    assert config["generator"] == "pf-diffseg" and config["schema"]["name"] == "uhcs"
    assert config["training"]["sample_names"] == ["uhcs0007", "uhcs0599", "uhcs0477", "uhcs0124"] and config["training"]["steps"] == 40
    assert len(config["training"]["data_fingerprint"]) == 16
    assert "PF-DiffSeg" in (folder / "README.md").read_text()

    loaded = load_generator(folder, device="cpu")
    assert isinstance(loaded, get_generator("pf-diffseg"))
    options = dict(seed=3, sampler="ddim", steps=6, batch_size=2)
    before = list(gen.sample([0.5, 0.3, 0.1, 0.1], n=2, **options))
    after = list(loaded.sample([0.5, 0.3, 0.1, 0.1], n=2, **options))
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
    assert after[0].provenance.model_checksum == folder_checksum(folder) == gen.model_checksum

    with pytest.raises(ValueError, match="format version"):
        config["generator_version"] = "0"
        (folder / "config.json").write_text(json.dumps(config))
        PFDiffSeg.load(folder, device="cpu")
