"""The ratio correction (per-class logit bias with a trust setting) on the bundled model and sample."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from napari_microsynth.cli import main
from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.core.fractions import mask_fractions, set_fraction
from napari_microsynth.core.metrics import segmentation_report
from napari_microsynth.core.ratio_correction import fit_temperature, solve_posterior_bias
from napari_microsynth.core.sample_data import load_sample
from napari_microsynth.engines.evaluation import run_comparison
from napari_microsynth.engines.inference import PhaseRatioSession, stored_temperature
from napari_microsynth.engines.segmentation import SegmentationConfig
from napari_microsynth.models.segmenter import Segmenter
from napari_microsynth.resources import resource_path

pytestmark = pytest.mark.usefixtures("one_thread")
DEMO = resource_path("models", "plm-uhcs-demo")


@pytest.fixture(scope="module")
def sample():
    return load_sample()


@pytest.fixture(scope="module")
def session(sample):
    return PhaseRatioSession(Segmenter.load(DEMO), sample.image)


def _asked(sample) -> list[np.ndarray]:
    """Ratios a metallurgist might ask for, from the issue's examples to empty and dominant phases."""
    true = sample.fractions
    return [set_fraction(true, 3, 0.30), set_fraction(true, 0, 0.10), set_fraction(true, 0, 0.90),
            set_fraction(true, 2, 0.0), true]


def test_full_trust_gives_every_phase_its_asked_fraction(session, sample):
    for asked in _asked(sample):
        corrected = mask_fractions(session.labels(asked, trust=1.0), sample.schema)
        assert np.abs(corrected - asked).max() < 0.01, (asked, corrected)
    laths = set_fraction(sample.fractions, 3, 0.30)
    assert mask_fractions(session.labels(laths, trust=0.0), sample.schema)[3] < 0.15  # the network alone: ~5 %


def test_trust_zero_is_the_network_alone_and_half_trust_goes_halfway(session, sample):
    asked = set_fraction(sample.fractions, 3, 0.30)
    plain_labels, plain_probs = session.predict(asked)
    labels, probs = session.predict(asked, trust=0.0)
    np.testing.assert_array_equal(labels, plain_labels)
    np.testing.assert_array_equal(probs, plain_probs)
    own = mask_fractions(labels, sample.schema)
    half = mask_fractions(session.labels(asked, trust=0.5), sample.schema)
    np.testing.assert_allclose(half, (own + asked) / 2, atol=0.01)
    with pytest.raises(ValueError, match="trust must be in"):
        session.labels(asked, trust=1.5)


def test_the_true_ratio_at_full_trust_scores_better_than_the_plm_alone(session, sample):
    scores = {trust: segmentation_report(sample.mask, session.labels(sample.fractions, trust), sample.schema)["miou"]
              for trust in (0.0, 1.0)}
    assert scores[1.0] > scores[0.0] + 0.02, scores


def test_posterior_solve_hits_the_mean_and_leaves_a_matching_model_alone(session, sample):
    z = session.logits(sample.fractions)[:, session.solve_pixels].double().numpy()
    target = set_fraction(sample.fractions, 3, 0.30)
    bias = solve_posterior_bias(z, target, temperature=0.7)
    q = torch.softmax(torch.from_numpy((z + bias[:, None]) / 0.7), dim=0).numpy()
    np.testing.assert_allclose(q.mean(axis=1), target, atol=1e-4)
    own = torch.softmax(torch.from_numpy(z), dim=0).numpy().mean(axis=1)
    np.testing.assert_allclose(solve_posterior_bias(z, own), 0.0, atol=1e-3)


def test_temperature_fit_recovers_the_temperature_labels_were_drawn_at(session, sample):
    z = session.logits(sample.fractions)[:, session.solve_pixels].double().numpy()
    probs = torch.softmax(torch.from_numpy(z / 2.5), dim=0).numpy()
    rng = np.random.default_rng(0)
    labels = np.minimum((rng.random(z.shape[1]) > np.cumsum(probs, axis=0)).sum(axis=0), 3)  # drawn from probs
    assert fit_temperature(z, labels) == pytest.approx(2.5, rel=0.1)


def test_a_baseline_is_steered_by_the_correction_only(sample):
    torch.manual_seed(0)
    baseline = Segmenter.build(sample.schema, preset="tiny", plm="baseline", tile_size=64)
    session = PhaseRatioSession(baseline, sample.image[:160, :192])
    asked = np.array([0.4, 0.3, 0.2, 0.1])
    achieved = mask_fractions(session.labels(asked, trust=1.0), sample.schema)
    assert np.abs(achieved - asked).max() < 0.01
    with pytest.raises(ValueError, match="no ratio encoder"):
        session.labels(asked, trust=0.0)


def test_segment_command_with_full_trust_writes_the_asked_fractions(tmp_path, capsys):
    out = tmp_path / "phases.png"
    image = str(resource_path("sample_data", "uhcs1648.tif"))
    assert main(["-q", "segment", image, str(out), "--ratio", "0.55,0.07,0.08,0.30", "--trust", "1",
                 "--threads", "1"]) == 0
    labels = np.asarray(Image.open(out))
    np.testing.assert_allclose(np.bincount(labels.ravel(), minlength=4) / labels.size, [0.55, 0.07, 0.08, 0.30],
                               atol=0.01)
    assert "target  30.0 %" in capsys.readouterr().out
    assert main(["-q", "segment", image, str(out), "--trust", "1"]) == 2
    assert "--trust needs --ratio" in capsys.readouterr().err


def test_comparison_adds_correction_rows_for_baseline_and_plm(shared_data, tmp_path):
    uhcs = shared_data / "uhcs"
    train = load_dataset(uhcs, split="train")[:2]
    val = [s.crop((0, 0, 128, 160)) for s in load_dataset(uhcs, split="val")[:1]]
    test = [s.crop((0, 0, 128, 192)) for s in load_dataset(uhcs, split="test")[:2]]
    config = SegmentationConfig(preset="tiny", tile_size=64, batch_size=2, steps=2, checkpoint_every=2, device="cpu")
    result = run_comparison(train, test, config, out_dir=tmp_path, alphas=(None, 0.9), trusts=(1.0,),
                            val_samples=val)
    assert [(r["model"], r["ratio"]) for r in result.rows] == [
        ("baseline", "no ratio"), ("baseline + correction (trust 1)", "alpha=0.9"),
        ("PLM RE+SA+FA", "no ratio"), ("PLM RE+SA+FA", "alpha=0.9"),
        ("PLM RE+SA+FA + correction (trust 1)", "alpha=0.9"),
    ]
    assert "| baseline + correction (trust 1) | alpha=0.9 |" in result.markdown_path.read_text()
    for folder in result.model_folders:
        temperature = json.loads((folder / "config.json").read_text())["training"]["temperature"]
        assert 0.05 < temperature < 20 and stored_temperature(folder) == temperature
        assert "correction trust 1" in (folder / "README.md").read_text()
    assert stored_temperature(DEMO) == 1.0  # the bundled model has none: posteriors as trained
