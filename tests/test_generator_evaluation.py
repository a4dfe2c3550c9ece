"""Generator evaluation: distribution metrics, feature extractors, fraction control, timing and the report."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers import FakeGenerator

from napari_microsynth.core.options import option
from napari_microsynth.core.sample import Sample
from napari_microsynth.core.schema import Phase, PhaseSchema
from napari_microsynth.engines.generator_evaluation import (
    REAL_BASELINE,
    AgreementSegmenter,
    SamplingSetting,
    evaluate_distribution,
    evaluate_fraction_control,
    evaluate_generator,
    frechet_distance,
    kernel_distance,
    manifold_precision_recall,
    sampling_settings,
    time_generation,
)
from napari_microsynth.core.conditions import fraction_targets
from napari_microsynth.core.datasets import load_split
from napari_microsynth.core.tiles import reduced_tiles
from napari_microsynth.generators.base import NoSampling
from napari_microsynth.generators.pf_diffseg import PFDiffSeg
from napari_microsynth.generators.two_stage import TwoStage
from napari_microsynth.models.feature_extractors import DomainFeatureExtractor
from napari_microsynth.models.feature_training import FeatureTrainConfig, train_domain_extractor
from napari_microsynth.models.inception import InceptionFeatureExtractor
from napari_microsynth.resources import resources_dir

UHCS = PhaseSchema.bundled("uhcs")
TWO = PhaseSchema("two", (Phase(0, "a", (0, 0, 0)), Phase(1, "b", (255, 255, 255))))
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def extractor(uhcs_samples) -> DomainFeatureExtractor:
    config = FeatureTrainConfig(steps=80, batch_size=8, tile=32, downscale=2, widths=(8, 16, 32), feature_dim=32)
    return train_domain_extractor(uhcs_samples, config, device="cpu")


# ---------------------------------------------------------------- metrics on plain features


def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4))
    b = rng.normal(size=(2000, 4))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert frechet_distance(a, b) < 0.05
    # N(0, I) against N(mu, I): the distance is |mu|^2 = 4 * 1^2
    assert frechet_distance(a, b + 1.0) == pytest.approx(4.0, rel=0.05)
    assert frechet_distance(a, b + 2.0) > frechet_distance(a, b + 1.0)
    # a wider spread counts too: N(0, I) against N(0, 4 I) -> 4 * (1 + 4 - 2 * 2) = 4
    assert frechet_distance(a, 2 * b) == pytest.approx(4.0, rel=0.1)


def test_kid_is_unbiased_near_zero_for_one_distribution():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, same_std = kernel_distance(a, b, n_subsets=20, subset_size=200)
    shifted, _ = kernel_distance(a, b + 0.5, n_subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 10 * abs(same) and shifted > 0.05


def test_precision_recall_of_identical_sets_is_one_and_of_disjoint_sets_zero():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 8))
    assert manifold_precision_recall(a, a, k=3) == (1.0, 1.0)
    assert manifold_precision_recall(a, a + 100.0, k=3) == (0.0, 0.0)
    # synthetic points covering only part of the real set: precise but with low recall
    part = a[a[:, 0] > 1.0]
    precision, recall = manifold_precision_recall(a, part, k=3)
    assert precision == 1.0 and recall < 0.6
    with pytest.raises(ValueError, match="more than 3 points"):
        manifold_precision_recall(a[:3], a, k=3)


# ---------------------------------------------------------------- feature extractors


def test_inception_from_file_rejects_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads weights"):
        InceptionFeatureExtractor(tmp_path / "inception_v3_google.pth", device="cpu")
    junk = tmp_path / "junk.pth"
    torch.save({"conv.weight": torch.zeros(3)}, junk)
    with pytest.raises(ValueError, match="Inception v3 weights"):
        InceptionFeatureExtractor(junk, device="cpu")


def test_inception_loads_a_local_state_dict_and_names_its_checksum(tmp_path):
    from torchvision.models import inception_v3

    path = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    extractor = InceptionFeatureExtractor(path, device="cpu", batch_size=2)
    assert extractor.describe()["name"] == "inception-v3" and len(extractor.model_checksum) == 16
    rng = np.random.default_rng(0)
    features = extractor.image_features(rng.random((2, 32, 32), dtype=np.float32))
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    masks = extractor.mask_features(rng.integers(0, 4, (2, 32, 32)), UHCS)
    assert masks.shape == (2, 2048)


def test_domain_extractor_saves_loads_and_keeps_its_checksum(extractor, uhcs_samples, tmp_path):
    tiles = reduced_tiles(uhcs_samples[:1], 32, 2)[:6]
    images = np.stack([t.image for t in tiles])
    features = extractor.image_features(images)
    assert features.shape == (6, 32)
    unsaved = extractor.model_checksum
    folder = extractor.save(tmp_path / "features")
    assert extractor.model_checksum == unsaved  # the in-memory checksum is the saved folder's
    loaded = DomainFeatureExtractor.load(folder, device="cpu")
    assert loaded.model_checksum == unsaved
    assert loaded.describe()["trained_on"] == [s.name for s in uhcs_samples]  # so it cannot score them unnoticed
    np.testing.assert_allclose(loaded.image_features(images), features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.mask_features(np.stack([t.mask for t in tiles]), UHCS),
                               extractor.mask_features(np.stack([t.mask for t in tiles]), UHCS), rtol=1e-5, atol=1e-6)


def test_reduced_tiles_match_the_generators_training_tiles(uhcs_samples):
    tiles = reduced_tiles(uhcs_samples[:1], 32, 2)
    h, w = uhcs_samples[0].shape
    assert len(tiles) == (h // 64) * (w // 64)
    first = tiles[0]
    assert first.shape == (32, 32) and first.provenance.crop_box == (0, 0, 64, 64)
    np.testing.assert_allclose(first.image, uhcs_samples[0].image[:64, :64].reshape(32, 2, 32, 2).mean(axis=(1, 3)),
                               atol=1e-6)


def test_distribution_scores_separate_real_from_scrambled_tiles(extractor, uhcs_samples):
    tiles = reduced_tiles(uhcs_samples, 32, 2)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(tiles))
    half_a = [tiles[i] for i in order[:100]]
    half_b = [tiles[i] for i in order[100:200]]
    # the same tiles with their pixels shuffled: same grey levels and fractions, no structure
    scrambled = [
        Sample(rng.permutation(t.image.ravel()).reshape(32, 32), UHCS,
               rng.permutation(t.mask.ravel()).reshape(32, 32)) for t in half_b
    ]
    like = evaluate_distribution(half_a, half_b, extractor, kid_subsets=10)
    unlike = evaluate_distribution(half_a, scrambled, extractor, kid_subsets=10)
    assert like.extractor["name"] == "domain-encoder" and like.extractor["checksum"] == extractor.model_checksum
    for modality in ("image", "mask"):
        same, other = getattr(like, modality), getattr(unlike, modality)
        assert other.fd > 2 * same.fd and other.kid > same.kid and other.recall < same.recall, modality
    with pytest.raises(ValueError, match="one size"):
        evaluate_distribution(half_a, reduced_tiles(uhcs_samples[:1], 16, 2), extractor)


# ---------------------------------------------------------------- fraction control


def fixed_masks() -> FakeGenerator:
    """A fake that answers the targets with 10 x 10 masks holding 30, 40, 50 pixels of class "a"."""
    masks = [np.ones(100, int) for _ in range(3)]
    for mask, k in zip(masks, (30, 40, 50)):
        mask[:k] = 0
    gen = FakeGenerator(TWO, "tiny")
    gen.train([Sample(np.zeros((10, 10), np.float32), TWO, m.reshape(10, 10), name=f"m{i}") for i, m in enumerate(masks)])
    return gen


def test_fraction_control_on_a_hand_computed_case():
    targets = [[0.2, 0.8], [0.4, 0.6], [0.6, 0.4]]  # achieved a: 0.3, 0.4, 0.5
    seen = []
    (result,) = evaluate_fraction_control(fixed_masks(), targets, [SamplingSetting("replay", {"mode": "replay"})],
                                          progress=lambda d, t, m: seen.append((d, t)))
    np.testing.assert_allclose(result.achieved[:, 0], [0.3, 0.4, 0.5])
    # MAE = (0.1 + 0 + 0.1) / 3; R^2 = 1 - (0.01 + 0 + 0.01) / (0.04 + 0 + 0.04) = 0.75; the achieved fractions
    # move half as much as asked (slope 0.5) on a perfect line (r^2 = 1)
    np.testing.assert_allclose(result.mae, [0.2 / 3, 0.2 / 3])
    np.testing.assert_allclose(result.r2, [0.75, 0.75])
    np.testing.assert_allclose(result.slope, [0.5, 0.5])
    np.testing.assert_allclose(result.pearson_r2, [1.0, 1.0])
    rows = result.rows()
    assert [r["class"] for r in rows] == ["a", "b", "mean"] and rows[-1]["slope"] == pytest.approx(0.5)
    assert result.setting == "replay" and seen == [(1, 3), (2, 3), (3, 3)]
    # an option the generator does not declare is left out, and the row says so
    (guided,) = evaluate_fraction_control(fixed_masks(), targets, [SamplingSetting("s3", {"steps": 3, "mode": "replay"})])
    assert guided.options == {"mode": "replay"} and guided.setting == "s3"


@dataclass
class GuidanceOnly:
    guidance_scale: float = option(1.0, "classifier-free guidance scale", low=0)


class FakeWithGuidance(FakeGenerator):
    """A family with a guidance scale and no fraction control."""

    SamplingConfig = GuidanceOnly


class FakeWithoutOptions(FakeGenerator):
    SamplingConfig = NoSampling


def test_default_rows_compare_plain_sampling_with_fraction_control():
    controlled = FakeGenerator(TWO, "tiny")
    rows = sampling_settings(controlled)
    assert [(r.name, dict(r.options)) for r in rows] == [
        ("guidance 1, control off", {"guidance_scale": 1.0, "fraction_control": 0.0}),
        ("guidance 3, control off", {"guidance_scale": 3.0, "fraction_control": 0.0}),
        ("control on (defaults)", {}),
    ]
    assert [r.name for r in sampling_settings(controlled, (2.0,), (0.0, 0.5))] == [
        "guidance 2, control off", "control 0.5"]
    assert [r.name for r in sampling_settings(FakeWithGuidance(TWO, "tiny"))] == ["guidance 1", "guidance 3"]
    assert [r.name for r in sampling_settings(FakeWithoutOptions(TWO, "tiny"))] == ["defaults"]


def test_fraction_targets_follow_the_boosted_mixture_of_real_tiles(uhcs_samples):
    targets = fraction_targets(uhcs_samples, 200, seed=0, tile=64)
    assert targets.shape == (200, 4)
    np.testing.assert_allclose(targets.sum(axis=1), 1)
    real = np.stack([t.fractions for t in reduced_tiles(uhcs_samples, 64)])
    rarest = int(np.argmin(real.mean(axis=0)))
    assert targets[:, rarest].mean() > real[:, rarest].mean()  # the rarest phase is oversampled
    np.testing.assert_array_equal(fraction_targets(uhcs_samples, 200, seed=0, tile=64), targets)


# ---------------------------------------------------------------- timing and the whole evaluation


def test_timing_covers_each_generator_and_batch_size():
    one = PFDiffSeg(UHCS, "tiny", device="cpu")
    two = TwoStage(UHCS, "tiny", device="cpu")
    rows = time_generation({"one-stage": one, "two-stage": two}, n=2, batch_sizes=(1, 2), steps=2)
    assert [(r.generator, r.batch_size) for r in rows] == [
        ("one-stage", 1), ("one-stage", 2), ("two-stage", 1), ("two-stage", 2)]
    assert all(r.seconds_per_pair > 0 and r.sampling["steps"] == 2 and r.device == "cpu" for r in rows)


@pytest.fixture(scope="module")
def held_out(shared_data) -> list[Sample]:
    """Two UHCS test micrographs (test4A), never seen by the segmenter or the feature encoder."""
    return load_split(shared_data / "uhcs", "test4A")[:2]


@pytest.fixture(scope="module")
def segmenter() -> AgreementSegmenter:
    """The bundled PLM trained on real UHCS train16A."""
    return AgreementSegmenter.from_folder(resources_dir() / "models" / "plm-uhcs-demo", device="cpu")


def stand_in(held_out: list[Sample]) -> FakeGenerator:
    """32 px pairs at downscale 4: "replay" answers target i with real tile i of ``held_out``, "exact" with a
    mask holding exactly the target fractions, "noise" with noise."""
    gen = FakeGenerator(UHCS, "small")
    gen.train(held_out, FakeGenerator.TrainConfig(downscale=4))
    return gen


def test_evaluation_rows_against_the_real_baseline_and_the_segmenter_ceiling(extractor, held_out, segmenter,
                                                                              tmp_path):
    tiles = reduced_tiles(held_out, 32, 4)
    generator = stand_in(held_out)
    rows = [SamplingSetting(mode, {"mode": mode}) for mode in ("replay", "exact", "noise")]
    progress = []
    result = evaluate_generator(generator, held_out, extractor=extractor, segmenter=segmenter, n=len(tiles),
                                settings=rows, timing_n=0, split_names={"scored": "test4A"},
                                progress=lambda d, t, m: progress.append((d, t)))
    replay, exact, noise = result.fraction_control
    # a generator that hits every target exactly: slope 1, R^2 1
    np.testing.assert_allclose(exact.slope, 1, atol=0.01)
    assert np.all(exact.r2 > 0.999)
    # real tiles through the generated-pair pipeline agree with the segmenter exactly as well as its ceiling
    assert result.agreement.ceiling > 0.3 and replay.agreement_miou == pytest.approx(result.agreement.ceiling)
    assert noise.agreement_miou < result.agreement.ceiling - 0.1
    # real-vs-real scores are far below noise-vs-real ones
    scores = {q.compared: q for q in result.distribution}
    assert list(scores) == [REAL_BASELINE, "replay", "exact", "noise"]
    for modality in ("image", "mask"):
        real, fake = getattr(scores[REAL_BASELINE], modality), getattr(scores["noise"], modality)
        assert fake.fd > 5 * real.fd and fake.kid > real.kid and fake.precision < real.precision, modality
    assert scores[REAL_BASELINE].image.n_synthetic == scores["noise"].image.n_synthetic  # same set sizes
    assert progress[-1][0] == progress[-1][1] and all(a[0] <= b[0] for a, b in zip(progress, progress[1:]))

    folder = result.write(tmp_path / "report")
    markdown = (folder / "report.md").read_text()
    assert f"ceiling {result.agreement.ceiling:.3f}" in markdown and REAL_BASELINE in markdown
    assert "split 'test4A', 2 micrographs" in markdown and "plm-uhcs-demo" in markdown
    with (folder / "settings.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    assert [r["setting"] for r in summary] == ["replay", "exact", "noise"]
    assert float(summary[0]["agreement_miou"]) == pytest.approx(float(summary[0]["agreement_ceiling"]))
    data = json.loads((folder / "evaluation.json").read_text())
    assert data["data"]["scored"]["baseline_half"] and data["agreement"]["segmenter"]["name"] == "plm-uhcs-demo"


def test_the_feature_encoder_never_scores_its_own_training_micrographs(extractor, uhcs_samples, held_out):
    generator = stand_in(held_out)
    with pytest.raises(ValueError, match="trained on"):
        evaluate_generator(generator, uhcs_samples, extractor=extractor, n=4, timing_n=0)
    with pytest.raises(ValueError, match="trained on"):
        evaluate_generator(generator, held_out, encoder_samples=held_out[:1], n=4, timing_n=0)
    with pytest.raises(ValueError, match="encoder_samples"):
        evaluate_generator(generator, held_out, n=4, timing_n=0)


def test_evaluate_generator_writes_a_report_naming_the_extractor(extractor, held_out, tmp_path):
    gen = PFDiffSeg(UHCS, "tiny", device="cpu")  # untrained: the pipeline, not the quality, is tested here
    gen.training.settings["downscale"] = 2
    progress = []
    result = evaluate_generator(
        gen, held_out, extractor=extractor, n=6, settings=sampling_settings(gen, (1.0, 3.0)),
        compare={"two-stage": TwoStage(UHCS, "tiny", device="cpu")}, timing_n=1, timing_batch_sizes=(1, 2),
        progress=lambda d, t, m: progress.append((d, t)), steps=2,
    )
    expected = [r.name for r in sampling_settings(gen)]
    assert [r.setting for r in result.fraction_control] == expected
    assert result.fraction_control[0].targets.shape == (6, 4)
    assert result.distribution[1].image.n_synthetic == 6 and result.distribution[1].mask is not None
    assert result.agreement is None
    assert [t.generator for t in result.timing] == ["pf-diffseg", "pf-diffseg", "two-stage", "two-stage"]
    assert progress[-1][0] == progress[-1][1] and all(a[0] <= b[0] for a, b in zip(progress, progress[1:]))

    folder = result.write(tmp_path / "report")
    markdown = (folder / "report.md").read_text()
    assert f"domain-encoder, checksum {extractor.model_checksum}" in markdown
    with (folder / "fraction_control.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(expected) * (4 + 1) and [r["setting"] for r in rows[::5]] == expected
    assert (folder / "fraction_control.png").stat().st_size > 10_000
    data = json.loads((folder / "evaluation.json").read_text())
    assert data["distribution"]["extractor"]["checksum"] == extractor.model_checksum
    assert data["generator"]["sampling"]["steps"] == 2
    assert (folder / "timing.csv").read_text().count("\n") == 5
