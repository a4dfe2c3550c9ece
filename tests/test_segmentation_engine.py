"""Segmentation training, sliding-window / cached inference and evaluation on real UHCS micrographs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.core.fractions import mask_fractions
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.engines.evaluation import alpha_sweep, evaluate, run_comparison
from napari_microsynth.engines.inference import PhaseRatioSession, micrograph_warnings, predict_image
from napari_microsynth.engines.segmentation import (
    SegmentationConfig,
    data_fingerprint,
    latest_checkpoint,
    train_segmenter,
)
from napari_microsynth.models.folder import folder_checksum, read_model_config
from napari_microsynth.models.segmenter import Segmenter

TILE = 64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def uhcs(shared_data):
    train = load_dataset(shared_data / "uhcs", split="train")[:4]
    test = load_dataset(shared_data / "uhcs", split="test")[:2]
    return train, test


def tiny_config(**changes) -> SegmentationConfig:
    values = dict(preset="tiny", tile_size=TILE, batch_size=4, steps=30, lr=5e-3, checkpoint_every=10,
                  device="cpu", seed=0)
    values.update(changes)
    return SegmentationConfig(**values)


@pytest.fixture(scope="module")
def trained(uhcs, tmp_path_factory):
    """A tiny PLM model trained for 30 steps on four UHCS micrographs."""
    return train_segmenter(uhcs[0], tiny_config(), tmp_path_factory.mktemp("train"))


def test_training_reduces_the_loss(trained):
    losses = np.array([h["loss"] for h in trained.history])
    assert len(losses) == 30
    assert losses[-5:].mean() < 0.8 * losses[:5].mean()
    assert {"dice", "ce", "ratio_mse"} <= set(trained.history[0])
    regulators = trained.model.head.aggregator
    assert (regulators.gamma.item(), regulators.delta.item()) != (0.5, 0.5)


def test_interrupted_training_resumes_where_it_stopped(uhcs, tmp_path):
    config = tiny_config(batch_size=2, steps=6, checkpoint_every=4)
    straight = train_segmenter(uhcs[0][:2], config, tmp_path / "straight")

    done = []
    with pytest.raises(Cancelled, match="stopped at step 3"):
        train_segmenter(uhcs[0][:2], config, tmp_path / "stopped", progress=lambda d, t, m: done.append(d),
                        should_stop=lambda: len(done) >= 3)
    assert latest_checkpoint(tmp_path / "stopped").name == "checkpoint-3"

    done.clear()
    resumed = train_segmenter(uhcs[0][:2], config, tmp_path / "stopped", progress=lambda d, t, m: done.append(d))
    assert resumed.resumed_from == 3 and done == [4, 5, 6]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)

    with pytest.raises(ValueError, match="different config.*lr"):
        train_segmenter(uhcs[0][:2], tiny_config(batch_size=2, steps=6, lr=1e-2), tmp_path / "stopped")


def test_model_folder_round_trip_gives_identical_predictions(trained, uhcs, tmp_path):
    folder = trained.save(tmp_path / "model", metrics={"miou": 0.5, "per_class_iou": {"ferrite matrix": 0.7}})
    config = read_model_config(folder)
    assert config["schema"]["name"] == "uhcs"
    assert config["plm"] == {"ratio_encoder": True, "spatial_awareness": True, "feature_aggregator": True}
    assert config["training"]["data_fingerprint"] == data_fingerprint(uhcs[0])
    assert "| miou | 0.5000 |" in (folder / "README.md").read_text()

    loaded = Segmenter.load(folder)
    assert loaded.model_checksum == trained.model.model_checksum == folder_checksum(folder)
    assert next(loaded.parameters()).device.type == "cpu" and not loaded.training  # CPU, eval mode
    # a loaded model keeps its training record and metrics: saving it again writes the same folder
    again = loaded.save(tmp_path / "again")
    assert read_model_config(again) == config and "| miou | 0.5000 |" in (again / "README.md").read_text()
    image = uhcs[1][0].image[:128, :160]
    ratio = uhcs[1][0].fractions
    for r in (None, ratio):
        labels_a, probs_a = predict_image(trained.model, image, r)
        labels_b, probs_b = predict_image(loaded, image, r)
        np.testing.assert_array_equal(labels_a, labels_b)
        np.testing.assert_allclose(probs_a, probs_b, atol=1e-6)


def test_a_trained_model_folder_flags_micrographs_unlike_its_training_data(trained, uhcs, shared_data, tmp_path):
    folder = trained.save(tmp_path / "model")
    statistics = read_model_config(folder)["training"]["image_statistics"]
    assert statistics["n_images"] == len(uhcs[0])
    schema = trained.model.schema
    iron = load_dataset(shared_data / "fastfinecut_iron")[0]
    warnings = micrograph_warnings(folder, schema, iron.image, iron.pixel_size_um)
    assert any("mean grey level" in w for w in warnings)
    for steel in uhcs[1]:  # held-out UHCS micrographs
        assert micrograph_warnings(folder, schema, steel.image, steel.pixel_size_um, steel.schema) == []


def test_sliding_window_inference_covers_the_whole_micrograph(trained, uhcs):
    image = uhcs[1][0].image
    labels, probs = predict_image(trained.model, image)
    assert labels.shape == image.shape and probs.shape == (4, *image.shape)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, probs.argmax(axis=0))
    small = image[:40, :50]  # smaller than one window: padded, then cropped back
    labels, probs = predict_image(trained.model, small)
    assert labels.shape == (40, 50) and probs.shape == (4, 40, 50)


def test_one_window_inference_is_the_network_output(trained, uhcs):
    model, tile = trained.model, uhcs[1][0].image[:TILE, :TILE]
    ratio = np.array([0.6, 0.2, 0.15, 0.05])
    _, probs = predict_image(model, tile, ratio)
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy(tile)[None, None], torch.tensor(ratio).float()), dim=1)[0]
    np.testing.assert_allclose(probs, direct.numpy(), atol=1e-5)


def test_cached_session_equals_full_inference(trained, uhcs):
    model, sample = trained.model, uhcs[1][1].crop((100, 100, 292, 356))
    progress = []
    session = PhaseRatioSession(model, sample.image, progress=lambda d, t, m: progress.append((d, t)))
    assert progress[-1][0] == progress[-1][1] > 1
    true = sample.fractions
    outputs = {}
    for name, ratio in [("none", None), ("true", true), ("inflated", [0.0, 0.0, 0.0, 1.0]), ("true again", true)]:
        labels, probs = session.predict(ratio)
        full_labels, full_probs = predict_image(model, sample.image, ratio)
        np.testing.assert_allclose(probs, full_probs, atol=1e-5)
        assert (labels != full_labels).mean() < 1e-4
        outputs[name] = probs
    assert np.abs(outputs["true"] - outputs["inflated"]).max() > 1e-3  # the ratio changes the phase map
    np.testing.assert_array_equal(outputs["true"], outputs["true again"])  # the cache is not modified
    estimate = session.estimate_ratio()
    np.testing.assert_allclose(estimate, mask_fractions(session.predict(None)[0], sample.schema))
    with pytest.raises(ValueError, match="one value per phase"):
        session.predict([0.5, 0.5])


def test_session_can_be_cancelled_and_rejects_ratios_for_a_baseline(uhcs):
    torch.manual_seed(0)
    baseline = Segmenter.build(uhcs[0][0].schema, preset="tiny", plm="baseline", tile_size=TILE)
    with pytest.raises(Cancelled):
        PhaseRatioSession(baseline, uhcs[1][0].image, should_stop=lambda: True)
    session = PhaseRatioSession(baseline, uhcs[1][0].image[:100, :100])
    labels, _ = session.predict(None)
    assert labels.shape == (100, 100)
    with pytest.raises(ValueError, match="no ratio encoder"):
        session.predict([0.25, 0.25, 0.25, 0.25])


def test_evaluation_and_alpha_sweep_score_held_out_micrographs(trained, uhcs):
    test = [s.crop((0, 0, 192, 256)) for s in uhcs[1]]
    report = evaluate(trained.model, test)
    assert report["n_samples"] == 2
    assert set(report["per_class_iou"]) == set(test[0].schema.names)
    for key in ("miou", "mean_dice", "accuracy", "mciou"):
        assert 0.0 <= report[key] <= 1.0
    truth = evaluate(trained.model, test, ratios="true")
    rows = alpha_sweep(trained.model, test, alphas=(None, 1.0))
    assert [r["ratio"] for r in rows] == ["no ratio", "alpha=1"]
    # alpha = 1 is the true ratio; no ratio is the zero input of a plain evaluation.
    assert rows[1]["miou"] == pytest.approx(truth["miou"], abs=1e-3)
    assert rows[0]["miou"] == pytest.approx(report["miou"], abs=1e-3)


def test_comparison_writes_table_plot_and_model_folders(uhcs, tmp_path):
    config = tiny_config(batch_size=2, steps=3, checkpoint_every=3)
    test = [s.crop((0, 0, 128, 192)) for s in uhcs[1]]
    result = run_comparison(uhcs[0][:2], test, config, seeds=(0,), out_dir=tmp_path, alphas=(None, 0.5, 1.0))
    assert [(r["model"], r["ratio"]) for r in result.rows] == [
        ("baseline", "no ratio"), ("PLM RE+SA+FA", "no ratio"), ("PLM RE+SA+FA", "alpha=0.5"),
        ("PLM RE+SA+FA", "alpha=1"),
    ]
    table = result.markdown_path.read_text()
    assert "| baseline | no ratio |" in table and "alpha=0.5" in table
    assert result.csv_path.read_text().count("\n") == 5
    assert result.plot_path.stat().st_size > 10_000
    plm_card = json.loads((result.model_folders[1] / "config.json").read_text())
    assert plm_card["metrics"]["miou (test, no ratio)"] == pytest.approx(result.rows[1]["miou"])


def test_training_ratios_follow_the_chosen_recipe(uhcs):
    """Micrograph source: the tile's micrograph's ratio; the paper recipe (and the default): the tile's exact
    ratio; an alpha range: expert guesses of it."""
    from napari_microsynth.core.conditions import expert_guess
    from napari_microsynth.engines.segmentation import training_batch

    samples = uhcs[0][:2]
    exact_micrograph = tiny_config(ratio_source="micrograph", ratio_dropout=0.0)
    _, _, tile_fractions, ratios, _ = training_batch(samples, exact_micrograph, np.random.default_rng(0))
    whole = np.stack([s.fractions for s in samples])
    assert all(np.isclose(whole, r).all(axis=1).any() for r in ratios.numpy())  # each is one micrograph's ratio
    assert not np.allclose(ratios.numpy(), tile_fractions.numpy(), atol=1e-3)

    assert (tiny_config().ratio_source, tiny_config().ratio_alpha, tiny_config().ratio_weight) == ("tile", (1.0, 1.0), 1.0)
    paper = tiny_config(ratio_source="micrograph", ratio_weight=20.0).with_paper_ratio_recipe()
    assert (paper.ratio_source, paper.ratio_alpha, paper.ratio_weight, paper.ratio_dropout) == ("tile", (1.0, 1.0), 1.0, 0.0)
    _, _, tile_fractions, ratios, _ = training_batch(samples, paper, np.random.default_rng(0))
    np.testing.assert_allclose(ratios.numpy(), tile_fractions.numpy(), atol=1e-6)

    guessed = tiny_config(ratio_source="tile", ratio_alpha=(0.5, 0.5), ratio_dropout=0.0)
    _, _, tile_fractions, ratios, _ = training_batch(samples, guessed, np.random.default_rng(0))
    np.testing.assert_allclose(ratios.numpy(), expert_guess(tile_fractions.numpy().astype(float), 0.5), atol=1e-5)

    dropped = tiny_config(ratio_dropout=1.0)
    assert not training_batch(samples, dropped, np.random.default_rng(0))[3].any()  # no ratio: the zero input
    with pytest.raises(ValueError, match="ratio_alpha"):
        tiny_config(ratio_alpha=(0.9, 0.5))
    with pytest.raises(ValueError, match="ratio_source"):
        tiny_config(ratio_source="image")


def test_comparison_variants_and_splits_keep_every_result(uhcs, tmp_path):
    """Ablation variants train side by side; a second test split reuses the networks and keeps the first
    split's files and card metrics."""
    from napari_microsynth.engines.evaluation import Variant

    assert Variant.parse("re+sa:paper").label == "PLM RE+SA (paper recipe)"
    assert Variant.parse("RE+SA+FA:w64").folder_name == "plm-w64"
    for bad in ("baseline:paper", "RE:w0", "RE+XX", "SA:fast"):
        with pytest.raises(ValueError):
            Variant.parse(bad)
    config = tiny_config(batch_size=2, steps=2, checkpoint_every=2)
    first = run_comparison(uhcs[0][:2], uhcs[1][:1], config, out_dir=tmp_path, alphas=(None, 1.0),
                           variants=["baseline", "SA", "RE+SA:paper"], test_split="test")
    assert [r["model"] for r in first.rows] == ["baseline", "PLM SA", "PLM RE+SA (paper recipe)",
                                                "PLM RE+SA (paper recipe)"]
    assert sorted(p.name for p in (tmp_path / "seed0").iterdir()) == ["baseline", "plm-RE+SA-paper", "plm-SA"]
    second = run_comparison(uhcs[0][:2], uhcs[1][1:2], config, out_dir=tmp_path, alphas=(None, 1.0),
                            variants=["baseline", "SA", "RE+SA:paper"], test_split="other split")
    assert second.markdown_path.name == "alpha_sweep-other_split.md" and first.markdown_path.exists()
    assert first.markdown_path.read_text().startswith("Test split: test.")
    assert "Against the baseline" in second.markdown_path.read_text()
    metrics = json.loads((second.model_folders[2] / "config.json").read_text())["metrics"]
    assert {"miou (test, no ratio)", "miou (other split, no ratio)", "miou (other split, alpha=1)"} <= set(metrics)
    base = json.loads((second.model_folders[0] / "config.json").read_text())["metrics"]["miou (other split, no ratio)"]
    assert metrics["baseline miou (other split, no ratio)"] == pytest.approx(base)
    card = (second.model_folders[2] / "README.md").read_text()
    assert "## Against the same network without the PLM (other split)" in card
    assert ("The PLM loses to it with:" in card) == (min(metrics["miou (other split, no ratio)"],
                                                         metrics["miou (other split, alpha=1)"]) < base)
    trained_config = json.loads((second.model_folders[2] / "config.json").read_text())["training"]["config"]
    assert trained_config["ratio_source"] == "tile" and trained_config["ratio_weight"] == 1.0


def test_windows_blend_without_seams_on_the_window_grid(uhcs):
    """A network whose output depends on the position in the window (the PLM's coordinate channels, untrained
    so out of its domain everywhere): flat averaging steps where one window's coverage ends, every 32 px;
    the Gaussian-weighted blend does not."""
    from napari_microsynth.core.tiles import WindowAccumulator, sliding_window_boxes
    from napari_microsynth.engines.inference import blended_features

    image = uhcs[1][0].image[:128, :256]
    torch.manual_seed(0)
    model = Segmenter.build(uhcs[1][0].schema, preset="tiny", plm="RE+SA+FA", tile_size=TILE).eval()
    flat = WindowAccumulator(image.shape, model.feature_channels)
    with torch.no_grad():
        for y0, x0, y1, x1 in sliding_window_boxes(image.shape, TILE, 0.5):
            window = torch.from_numpy(image[None, None, y0:y1, x0:x1].copy())
            flat.add((y0, x0, y1, x1), model.image_features(window)[0].numpy())

    def seam_strength(features: np.ndarray) -> float:
        """Mean column-to-column change on the window grid over the median change elsewhere."""
        steps = np.abs(np.diff(features, axis=2)).mean(axis=(0, 1))
        grid = [x - 1 for x in range(TILE // 2, image.shape[1], TILE // 2)]
        return float(steps[grid].mean() / np.median(np.delete(steps, grid)))

    assert seam_strength(flat.result()) > 5
    assert seam_strength(blended_features(model, image)) < 1.3


def test_fine_tuning_starts_from_the_model_and_refuses_another_network():
    from dataclasses import replace

    from napari_microsynth.resources import resources_dir

    demo = resources_dir() / "models" / "plm-uhcs-demo"
    config = SegmentationConfig.continuing(demo, steps=5, device="cpu")
    assert (config.preset, config.tile_size, config.init_from) == ("small", 128, str(demo))
    model = config.build_model(Segmenter.load(demo).schema)
    for name, value in Segmenter.load(demo).state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)
    with pytest.raises(ValueError, match="cannot fine-tune"):
        replace(config, preset="tiny").build_model(model.schema)


def test_synthetic_tiles_come_on_top_of_the_real_batch_and_carry_their_loss_weight(uhcs):
    """With ``synthetic_per_batch`` every batch holds batch_size real tiles (as without synthetic data) plus k
    synthetic ones; ``synthetic_weight`` 0 makes the loss that of the real tiles alone."""
    from dataclasses import replace

    from napari_microsynth.engines.segmentation import segmentation_loss, training_batch

    real = uhcs[0][:2]
    synthetic = [replace(s, name=f"{s.name}-generated", provenance=replace(s.provenance, origin="synthetic"))
                 for s in real]
    shared = tiny_config(batch_size=4, synthetic_per_batch=2, synthetic_weight=0.0)
    images, masks, fractions, ratios, weights = training_batch(real + synthetic, shared, np.random.default_rng(0))
    assert images.shape[0] == 6 and weights.tolist() == [1, 1, 1, 1, 0, 0]

    logits = torch.randn(6, real[0].schema.n_classes, *masks.shape[1:])
    weighted, _ = segmentation_loss(logits, masks, fractions, shared, real[0].schema.ignore_id, True, weights)
    real_only, _ = segmentation_loss(logits[:4], masks[:4], fractions[:4], shared, real[0].schema.ignore_id, True)
    assert float(weighted) == pytest.approx(float(real_only), rel=1e-5)

    uniform = tiny_config(batch_size=4)
    assert training_batch(real + synthetic, uniform, np.random.default_rng(0))[0].shape[0] == 4
    with pytest.raises(ValueError, match="real samples"):
        training_batch(synthetic, shared, np.random.default_rng(0))
    with pytest.raises(ValueError, match="synthetic_weight"):
        tiny_config(synthetic_weight=-1.0)
