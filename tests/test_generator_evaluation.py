"""Generator evaluation: distribution metrics, feature extractors, fraction control, timing and the report."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from napari_microsynth.core.sample import Provenance, Sample
from napari_microsynth.core.schema import Phase, PhaseSchema
from napari_microsynth.engines.generator_evaluation import (
    evaluate_distribution,
    evaluate_fraction_control,
    evaluate_generator,
    fraction_targets,
    frechet_distance,
    kernel_distance,
    manifold_precision_recall,
    real_tiles,
    time_generation,
)
from napari_microsynth.generators.base import ConditionSpec, Generator
from napari_microsynth.generators.pf_diffseg import PFDiffSeg
from napari_microsynth.generators.two_stage import TwoStage
from napari_microsynth.models.feature_encoder import (
    DomainFeatureExtractor,
    FeatureTrainConfig,
    InceptionFeatureExtractor,
    train_domain_extractor,
)

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
    assert extractor.describe()["name"] == "inception-v3" and len(extractor.checksum) == 16
    rng = np.random.default_rng(0)
    features = extractor.image_features(rng.random((2, 32, 32), dtype=np.float32))
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    masks = extractor.mask_features(rng.integers(0, 4, (2, 32, 32)), UHCS)
    assert masks.shape == (2, 2048)


def test_domain_extractor_saves_loads_and_keeps_its_checksum(extractor, uhcs_samples, tmp_path):
    tiles = real_tiles(uhcs_samples[:1], 32, 2)[:6]
    images = np.stack([t.image for t in tiles])
    features = extractor.image_features(images)
    assert features.shape == (6, 32)
    unsaved = extractor.checksum
    folder = extractor.save(tmp_path / "features")
    assert extractor.checksum == unsaved  # the in-memory checksum is the saved folder's
    loaded = DomainFeatureExtractor.load(folder, device="cpu")
    assert loaded.checksum == unsaved
    np.testing.assert_allclose(loaded.image_features(images), features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.mask_features(np.stack([t.mask for t in tiles]), UHCS),
                               extractor.mask_features(np.stack([t.mask for t in tiles]), UHCS), rtol=1e-5, atol=1e-6)


def test_real_tiles_match_the_generators_training_tiles(uhcs_samples):
    tiles = real_tiles(uhcs_samples[:1], 32, 2)
    h, w = uhcs_samples[0].shape
    assert len(tiles) == (h // 64) * (w // 64)
    first = tiles[0]
    assert first.shape == (32, 32) and first.provenance.crop_box == (0, 0, 64, 64)
    np.testing.assert_allclose(first.image, uhcs_samples[0].image[:64, :64].reshape(32, 2, 32, 2).mean(axis=(1, 3)),
                               atol=1e-6)


def test_distribution_scores_separate_real_from_scrambled_tiles(extractor, uhcs_samples):
    tiles = real_tiles(uhcs_samples, 32, 2)
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
    assert like.extractor["name"] == "domain-encoder" and like.extractor["checksum"] == extractor.checksum
    for modality in ("image", "mask"):
        same, other = getattr(like, modality), getattr(unlike, modality)
        assert other.fd > 2 * same.fd and other.kid > same.kid and other.recall < same.recall, modality
    with pytest.raises(ValueError, match="one size"):
        evaluate_distribution(half_a, real_tiles(uhcs_samples[:1], 16, 2), extractor)


# ---------------------------------------------------------------- fraction control


class FixedMasks(Generator):
    """Returns 10 x 10 masks with 30, 40, 50 pixels of class "a", whatever was asked."""

    name = "test-fixed"
    version = "0"
    TrainConfig = dict

    @property
    def condition_spec(self) -> ConditionSpec:
        return ConditionSpec.fractions(self.schema)

    def train(self, samples, config=None, progress=None, should_stop=None) -> dict[str, Any]:
        return {}

    def save(self, folder):
        return Path(folder)

    @classmethod
    def load(cls, folder, device="auto"):
        return cls(TWO)

    def _generate(self, conditions, seeds, progress, should_stop) -> Iterator[Sample]:
        for i, _ in enumerate(conditions):
            mask = np.ones(100, int)
            mask[: (30, 40, 50)[i]] = 0
            yield Sample(np.zeros((10, 10), np.float32), self.schema, mask.reshape(10, 10),
                         provenance=Provenance(origin="synthetic"))


def test_fraction_control_on_a_hand_computed_case():
    targets = [[0.2, 0.8], [0.4, 0.6], [0.6, 0.4]]  # achieved a: 0.3, 0.4, 0.5
    seen = []
    (result,) = evaluate_fraction_control(FixedMasks(TWO), targets, guidance_scales=None,
                                          progress=lambda d, t, m: seen.append((d, t)))
    np.testing.assert_allclose(result.achieved[:, 0], [0.3, 0.4, 0.5])
    # MAE = (0.1 + 0 + 0.1) / 3; R^2 = 1 - (0.01 + 0 + 0.01) / (0.04 + 0 + 0.04) = 0.75
    np.testing.assert_allclose(result.mae, [0.2 / 3, 0.2 / 3])
    np.testing.assert_allclose(result.r2, [0.75, 0.75])
    rows = result.rows()
    assert [r["class"] for r in rows] == ["a", "b", "mean"] and rows[-1]["r2"] == pytest.approx(0.75)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValueError, match="no guidance_scale option"):
        evaluate_fraction_control(FixedMasks(TWO), targets, guidance_scales=(1.0, 3.0))


def test_fraction_targets_follow_the_boosted_mixture_of_real_tiles(uhcs_samples):
    targets = fraction_targets(uhcs_samples, 200, seed=0, tile=64)
    assert targets.shape == (200, 4)
    np.testing.assert_allclose(targets.sum(axis=1), 1)
    real = np.stack([t.fractions for t in real_tiles(uhcs_samples, 64)])
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


def test_evaluate_generator_writes_a_report_naming_the_extractor(extractor, uhcs_samples, tmp_path):
    gen = PFDiffSeg(UHCS, "tiny", device="cpu")  # untrained: the pipeline, not the quality, is tested here
    gen.training.settings["downscale"] = 2
    progress = []
    result = evaluate_generator(
        gen, uhcs_samples[:2], extractor=extractor, n=6, guidance_scales=(1.0, 3.0),
        compare={"two-stage": TwoStage(UHCS, "tiny", device="cpu")}, timing_n=1, timing_batch_sizes=(1, 2),
        progress=lambda d, t, m: progress.append((d, t)), steps=2,
    )
    assert [r.guidance_scale for r in result.fraction_control] == [1.0, 3.0]
    assert result.fraction_control[0].targets.shape == (6, 4)
    assert result.distribution.image.n_synthetic == 6 and result.distribution.mask is not None
    assert [t.generator for t in result.timing] == ["pf-diffseg", "pf-diffseg", "two-stage", "two-stage"]
    assert progress[-1][0] == progress[-1][1] and all(a[0] <= b[0] for a, b in zip(progress, progress[1:]))

    folder = result.write(tmp_path / "report")
    markdown = (folder / "report.md").read_text()
    assert f"domain-encoder, checksum {extractor.checksum}" in markdown
    with (folder / "fraction_control.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * (4 + 1) and {r["guidance_scale"] for r in rows} == {"1.0", "3.0"}
    assert (folder / "fraction_control.png").stat().st_size > 10_000
    data = json.loads((folder / "evaluation.json").read_text())
    assert data["distribution"]["extractor"]["checksum"] == extractor.checksum
    assert data["generator"]["sampling"]["steps"] == 2
    assert (folder / "timing.csv").read_text().count("\n") == 5
