"""TiM3 (paper 004): property-conditioned two-stage latent diffusion on UHCS's processing conditions, its
categorical cooling method, the convex-hull condition sampler and the property accuracy (eq. 9-11)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_microsynth.cli import main
from napari_microsynth.core.conditions import mixed_property_targets, sample_hull_in_span
from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.engines.generator_evaluation import REAL_BASELINE
from napari_microsynth.engines.property_accuracy import (
    REAL_TRAINING,
    RegressorTrainConfig,
    evaluate_property_generators,
    property_accuracy,
    train_property_regressor,
)
from napari_microsynth.generators import load_generator
from napari_microsynth.generators.base import ConditionSpec, PropertyRange, conditions_from_csv
from napari_microsynth.generators.tim3 import TiM3
from napari_microsynth.models.property_encoder import (
    PropertyCoder,
    PropertyEncoder,
    PropertyEncoderConfig,
    encode_conditions,
    embedding_noise,
)

BUNDLED = Path(__file__).resolve().parent / "data" / "uhcs"
#: one air-cooled and four quenched micrographs of the bundled fixtures (800-1000 C, 5 min to 24 h)
NAMES = ("uhcs0006", "uhcs0007", "uhcs0124", "uhcs0477", "uhcs1648")
QUICK = dict(steps=40, batch_size=8, lr_warmup_steps=0, autoencoder_steps=30, autoencoder_batch_size=4,
             latent_bank=64, downscale=4)
ASKED = {"anneal_temperature_c": 900.0, "anneal_time_h": 2.0, "cool_method": "Q"}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def uhcs():
    by_name = {s.name: s for s in load_dataset(BUNDLED)}
    return [by_name[name] for name in NAMES]


@pytest.fixture(scope="module")
def trained(uhcs):
    generator = TiM3(uhcs[0].schema, "tiny", "cpu", seed=0)
    report = generator.train(uhcs, TiM3.training_config(**QUICK))
    return generator, report


def test_the_conditions_are_the_training_datas_real_ranges_and_cooling_methods(trained):
    generator, _ = trained
    spec = generator.condition_spec
    assert spec.kind == "properties"
    temperature, time, cooling = spec.properties
    assert (temperature.name, temperature.low, temperature.high, temperature.unit) == ("anneal_temperature_c", 800, 1000, "°C")
    assert (time.name, time.low, time.high) == ("anneal_time_h", pytest.approx(5 / 60), 24)
    assert (cooling.name, cooling.categories, cooling.low, cooling.high) == ("cool_method", ("AR", "Q"), 0, 1)
    assert ConditionSpec.from_dict(spec.to_dict()) == spec  # a model folder keeps the categories
    assert generator.coder.continuous[1][3] is True  # anneal time is coded on a log axis (5 min .. 24 h)


def test_pairs_for_asked_conditions_are_micrograph_and_phase_map_tiles(trained):
    generator, _ = trained
    seen = []
    pairs = list(generator.sample(ASKED, n=2, seed=3, steps=4, progress=lambda d, t, m: seen.append(m)))
    assert len(pairs) == 2 and seen and "stage2" in seen[-1]
    for pair in pairs:
        assert pair.image.shape == pair.mask.shape == (32, 32) and pair.image.dtype == np.float32
        assert 0 <= pair.image.min() and pair.image.max() <= 1
        assert set(np.unique(pair.mask)) <= set(range(generator.schema.n_classes))
        asked = {"anneal_temperature_c": 900.0, "anneal_time_h": 2.0, "cool_method": 1.0}  # Q is category 1
        assert pair.provenance.condition == {"properties": asked} and pair.properties == asked
        assert pair.provenance.extra["cool_method"] == "Q"  # the name, as the real micrographs record it
        assert pair.provenance.extra["stages"] == "two" and pair.provenance.extra["property_encoder"] == "probabilistic"
    assert not np.array_equal(pairs[0].image, pairs[1].image)  # another seed, another pair
    by_index = next(generator.sample({**ASKED, "cool_method": 1}, n=1, seed=3, steps=4))
    np.testing.assert_array_equal(by_index.mask, pairs[0].mask)  # a category by name or by index (a batch of 1
    np.testing.assert_allclose(by_index.image, pairs[0].image, atol=1e-5)  # rounds differently from one of 2)


@pytest.mark.parametrize("condition, message", [
    ({**ASKED, "anneal_temperature_c": 1200.0}, r"'anneal_temperature_c' = 1200.0 is outside the trained range \[800"),
    ({**ASKED, "anneal_time_h": 48.0}, "'anneal_time_h' = 48.0 is outside the trained range"),
    ({**ASKED, "cool_method": "FC"}, "unknown category 'FC'; the trained ones are AR, Q"),
    ({**ASKED, "cool_method": 3}, r"not a category index 0..1 \(0 AR, 1 Q\)"),
    ({"anneal_temperature_c": 900.0, "cool_method": "Q"}, r"missing \['anneal_time_h'\]"),
])
def test_conditions_outside_what_the_model_saw_are_refused_before_any_work(trained, condition, message):
    generator, _ = trained
    with pytest.raises(ValueError, match=message):
        generator.sample(condition, n=1)


def test_saved_model_folder_gives_identical_pairs_for_a_seed(trained, tmp_path):
    generator, _ = trained
    folder = generator.save(tmp_path / "tim3")
    again = load_generator(folder)
    assert type(again) is TiM3 and again.condition_spec == generator.condition_spec
    for embedding in ("sample", "mean"):
        a, b = (next(g.sample(ASKED, n=1, seed=7, steps=4, embedding=embedding)) for g in (generator, again))
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.image, b.image)
    drawn = again.plausible_conditions(50, seed=1)  # from the folder alone, no data needed
    assert drawn == generator.plausible_conditions(50, seed=1)
    assert all(again.condition_spec.validate(c) for c in drawn) and {c["cool_method"] for c in drawn} == {0.0, 1.0}
    card = (folder / "README.md").read_text()
    assert "cool_method AR, Q" in card and "anneal_temperature_c 800 to 1000 °C" in card and "phase map mIoU" in card


def test_a_short_training_lowers_every_networks_loss(trained):
    _, report = trained
    assert set(report["stages"]) == {"image_autoencoder", "mask_autoencoder", "stage1", "stage2"}
    for name, stage in report["stages"].items():
        losses = stage["losses"]
        assert np.mean(losses[-5:]) < np.mean(losses[:5]), name
    assert report["left_out"] == [] and 0 <= report["reconstruction"]["mask"]["miou"] <= 1


def test_micrographs_without_conditions_train_only_the_conditionless_networks(uhcs):
    bare = replace(uhcs[1], properties={})  # like uhcs1528, which has no anneal record
    generator = TiM3(uhcs[0].schema, "tiny", "cpu")
    quick = {**QUICK, "steps": 2, "autoencoder_steps": 2, "latent_bank": 16}
    report = generator.train([*uhcs[2:], bare], TiM3.training_config(**quick))
    assert report["left_out"] == [bare.name]
    assert generator.condition_spec.properties[2].categories == ("Q",)  # the AR micrograph was not given
    with pytest.raises(ValueError, match="none of the 1 given records them"):
        TiM3(uhcs[0].schema, "tiny", "cpu").train([bare], TiM3.training_config(**quick))


def test_the_ablations_one_stage_model_with_the_plain_mlp_encoder_in_the_same_latent_space(uhcs, trained, tmp_path):
    folder = trained[0].save(tmp_path / "two-stage")
    generator = TiM3(uhcs[0].schema, "tiny", "cpu")
    quick = {**QUICK, "steps": 3, "latent_bank": 16}
    report = generator.train(uhcs, TiM3.training_config(stages="one", property_encoder="mlp",
                                                        autoencoders_from=str(folder), **quick))
    assert set(report["stages"]) == {"image_autoencoder", "mask_autoencoder", "joint"}
    assert report["stages"]["mask_autoencoder"]["steps"] == 0  # taken over, not trained again
    for a, b in zip(generator.mask_autoencoder.state_dict().values(), trained[0].mask_autoencoder.state_dict().values()):
        assert torch.equal(a, b)
    pair = next(generator.sample(ASKED, n=1, steps=2))
    assert pair.image.shape == pair.mask.shape == (32, 32)
    assert (pair.provenance.extra["stages"], pair.provenance.extra["property_encoder"]) == ("one", "mlp")
    # the plain encoder is deterministic: "sample" and "mean" embeddings give the same pair
    again = next(generator.sample(ASKED, n=1, steps=2, embedding="mean"))
    np.testing.assert_array_equal(pair.image, again.image)


def test_training_and_sampling_stop_when_asked(uhcs, trained):
    with pytest.raises(Cancelled):
        TiM3(uhcs[0].schema, "tiny", "cpu").train(uhcs, TiM3.training_config(**QUICK), should_stop=lambda: True)
    generator, _ = trained
    with pytest.raises(Cancelled):
        next(generator.sample(ASKED, n=1, steps=4, should_stop=lambda: True))


# ---------------------------------------------------------------- the property encoder


def test_probabilistic_encoder_draws_around_its_mixture_mean_and_the_mlp_does_not_draw():
    coder = PropertyCoder.from_ranges([("T", 800.0, 1000.0), ("t", 1 / 12, 24.0)], [("cool", ("AR", "Q"))])
    vectors = torch.from_numpy(coder.vector([{"T": 900.0, "t": 24.0, "cool": 1.0}] * 2))
    assert vectors[0].tolist() == [0.0, 1.0, 0.0, 1.0]  # mid temperature, top of the log time axis, one-hot Q
    torch.manual_seed(0)
    encoder = PropertyEncoder(PropertyEncoderConfig(input_dim=coder.dim, embed_dim=8, components=3))
    a, b = encode_conditions(encoder, vectors, embedding_noise([1, 2], stream=0))
    again = encode_conditions(encoder, vectors, embedding_noise([1, 2], stream=0))
    mean = encoder(vectors, sample=False)
    assert not torch.equal(a, b) and torch.equal(again[0], a)  # a draw per seed, repeatable
    assert torch.allclose((a + b) / 2, mean[0], atol=3.0) and mean.shape == (2, 1, 8)
    mlp = PropertyEncoder(PropertyEncoderConfig(input_dim=coder.dim, kind="mlp", embed_dim=8))
    assert torch.equal(*encode_conditions(mlp, vectors, embedding_noise([1, 2], stream=0)))
    jittered = coder.jitter(np.repeat(vectors.numpy()[:1], 4000, axis=0), np.random.default_rng(0), 0.08)
    assert np.std(jittered[:, 0]) == pytest.approx(0.16, rel=0.05)  # 8 % of the range, which spans 2 on the axis
    assert np.array_equal(jittered[:, 2:], np.repeat(vectors.numpy()[:1, 2:], 4000, axis=0))  # categories exact


def test_a_categorical_property_in_the_contract_and_in_a_conditions_file(tmp_path):
    cooling = PropertyRange.categorical("cool_method", ["AR", "Q"])
    spec = ConditionSpec.of_properties([PropertyRange("T", 800, 1000, "°C"), cooling])
    assert spec.validate({"T": 900, "cool_method": "ar"}) == {"properties": {"T": 900.0, "cool_method": 0.0}}
    assert spec.validate({"T": 900, "cool_method": 0.5}) == {"properties": {"T": 900.0, "cool_method": 1.0}}
    with pytest.raises(ValueError, match="low and high must be 0 and 1"):
        PropertyRange("cool_method", 0, 3, categories=("AR", "Q"))
    path = tmp_path / "conditions.csv"
    path.write_text("T,cool_method\n850,Q\n900,AR\n")
    assert conditions_from_csv(path, spec) == [{"T": 850.0, "cool_method": 1.0}, {"T": 900.0, "cool_method": 0.0}]


# ---------------------------------------------------------------- convex-hull conditions (Algorithm 1)


def test_hull_targets_keep_each_cooling_method_inside_its_own_conditions(uhcs):
    from scipy.spatial import Delaunay

    targets = mixed_property_targets(uhcs, ["anneal_temperature_c", "anneal_time_h"], {"cool_method": ["AR", "Q"]},
                                     2000, seed=0)
    air = [t for t in targets if t["cool_method"] == 0.0]
    quenched = np.array([[t["anneal_temperature_c"], t["anneal_time_h"]] for t in targets if t["cool_method"] == 1.0])
    assert len(air) / len(targets) == pytest.approx(1 / 5, abs=0.03)  # one of the five micrographs is air cooled
    assert all((t["anneal_temperature_c"], t["anneal_time_h"]) == (970.0, 1.5) for t in air)  # AR was seen once
    corners = np.array([[s.properties["anneal_temperature_c"], s.properties["anneal_time_h"]] for s in uhcs[1:]])
    assert np.all(Delaunay(corners).find_simplex(quenched) >= 0)  # inside the quenched micrographs' hull
    assert len(np.unique(quenched, axis=0)) == len(quenched)  # spread over it, not piled on the corners
    # two distinct points span a segment: draws stay on it
    on_line = sample_hull_in_span([[800.0, 3.0], [1000.0, 1.0]], 50, np.random.default_rng(1))
    np.testing.assert_allclose(on_line[:, 1], 3.0 - 2.0 * (on_line[:, 0] - 800.0) / 200.0)


# ---------------------------------------------------------------- property accuracy (eq. 9-11)


def test_property_accuracy_counts_an_image_only_when_every_property_is_within_tolerance():
    targets = [{"T": 1000.0, "t": 10.0, "c": 1.0}] * 4
    predicted = [{"T": 1050.0, "t": 10.5, "c": 1.0},   # 5 % and 5 %: accurate at every gamma
                 {"T": 1150.0, "t": 10.0, "c": 1.0},   # T off by 15 %: accurate at 0.2 and 0.3
                 {"T": 1000.0, "t": 12.5, "c": 1.0},   # t off by 25 %: accurate at 0.3 only
                 {"T": 1000.0, "t": 10.0, "c": 0.0}]   # wrong cooling method: never
    scores = property_accuracy(predicted, targets, categorical=("c",))
    assert (scores["acc_0.1"], scores["acc_0.2"], scores["acc_0.3"]) == (0.25, 0.5, 0.75)
    assert scores["macc"] == pytest.approx(0.5) and scores["per_property"]["c"]["0.1"] == 0.75


def test_evaluation_scores_real_tiles_and_each_generator_with_one_regressor(trained, uhcs, tmp_path):
    from napari_microsynth.models.feature_training import FeatureTrainConfig, train_domain_extractor

    generator, _ = trained
    regressor = train_property_regressor(uhcs, _coder(generator),
                                         RegressorTrainConfig(steps=5, batch_size=4, tile=32, downscale=4,
                                                              widths=(8, 16)))
    predicted = regressor.predict(np.stack([t.image for t in generator.sample(ASKED, n=2, steps=2)]))
    assert set(predicted[0]) == {"anneal_temperature_c", "anneal_time_h", "cool_method"}
    assert predicted[0]["cool_method"] in (0.0, 1.0) and 5 / 60 <= predicted[0]["anneal_time_h"] <= 24 * 1.0001
    extractor = train_domain_extractor(uhcs, FeatureTrainConfig(steps=2, batch_size=4, tile=32, downscale=4,
                                                                widths=(8, 16), feature_dim=16), device="cpu")
    held_out = [s for s in load_dataset(BUNDLED) if s.name in ("uhcs0295", "uhcs1289")]
    result = evaluate_property_generators({"tim3": generator}, uhcs, held_out, n=8, regressor=regressor,
                                          extractor=extractor, steps=2)
    assert [r["compared"] for r in result.rows] == [REAL_BASELINE, REAL_TRAINING, "tim3"]
    real, seen, synthetic = result.rows
    assert real["n"] == 2 * 15 and seen["n"] == 5 * 15 and synthetic["n"] == 8  # 128 px crops of 484 x 645 px
    for row in result.rows:
        assert 0 <= row["acc_0.1"] <= row["acc_0.2"] <= row["acc_0.3"] <= 1 and np.isfinite(row["fd"])
    report = (result.write(tmp_path / "eval") / "report.md").read_text()
    assert "| compared | n | Acc_0.1 (%) | Acc_0.2 (%) | Acc_0.3 (%) | mAcc (%) | FD | KID (x1000) |" in report


def _coder(generator):
    from napari_microsynth.engines.property_accuracy import coder_from_spec

    return coder_from_spec(generator.condition_spec)


# ---------------------------------------------------------------- the command line


def test_train_generator_tim3_and_generate_from_plausible_conditions(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["-q", "train-generator", "tim3", str(BUNDLED), "--preset", "tiny", "--steps", "2",
                 "--batch-size", "2", "--set", "autoencoder_steps=2", "--set", "latent_bank=8", "--downscale", "4",
                 "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    assert "tim3: 2 steps" in capsys.readouterr().out
    model = load_generator(out / "model")
    assert [p.name for p in model.condition_spec.properties] == ["anneal_temperature_c", "anneal_time_h", "cool_method"]
    store_path = tmp_path / "pairs.zarr"
    assert main(["-q", "generate", str(out / "model"), str(store_path), "-n", "3", "--boost-from", str(BUNDLED),
                 "--split", "train", "--steps", "2", "--device", "cpu"]) == 0
    store = DatasetStore.open(store_path)
    assert len(store) == 3
    for i in range(3):
        properties = store.properties(i)
        assert 800 <= properties["anneal_temperature_c"] <= 1000 and properties["cool_method"] == 0.0  # all Q
    # without --csv or --boost-from the model draws between its own training conditions (no data needed)
    assert main(["-q", "generate", str(out / "model"), str(tmp_path / "own.zarr"), "-n", "2", "--seed", "5",
                 "--steps", "2", "--device", "cpu"]) == 0
    own = DatasetStore.open(tmp_path / "own.zarr")
    assert [own.provenance(i).condition["properties"] for i in range(2)] == model.plausible_conditions(2, seed=5)


def test_the_bundled_model_generates_in_the_synthesis_widget_with_named_cooling_methods_and_plausible_conditions(
        make_napari_viewer, qtbot, tmp_path):
    """Issue 15 on a fresh install: the bundled tim3 model in the Synthesis widget; a categorical condition is
    a list of its categories, the numeric ones spin boxes over their real ranges, "Sample plausible
    conditions" sets them to an Algorithm 1 draw, and Generate makes pairs for them."""
    from qtpy.QtWidgets import QComboBox, QDoubleSpinBox

    from napari_microsynth.core.store import DatasetStore
    from napari_microsynth.widgets.synthesis import SynthesisWidget

    widget = SynthesisWidget(make_napari_viewer())
    widget.model_combo.setCurrentText("bundled: tim3-uhcs-demo")
    widget._model_chosen(widget.model_combo.currentIndex())
    widget.device_combo.setCurrentText("cpu")
    generator = widget.generator
    boxes = widget.property_boxes
    cooling = boxes["cool_method"]
    assert isinstance(cooling, QComboBox) and [cooling.itemText(i) for i in range(cooling.count())] == ["AR", "Q"]
    assert isinstance(boxes["anneal_temperature_c"], QDoubleSpinBox)
    assert (boxes["anneal_temperature_c"].minimum(), boxes["anneal_temperature_c"].maximum()) == (800, 1000)

    drawn = []
    for seed in range(6):
        widget.seed_box.setValue(seed)
        widget.plausible_button.click()
        drawn.append(widget.conditions()[0])
    expected = [generator.plausible_conditions(1, seed)[0] for seed in range(6)]
    for got, want in zip(drawn, expected):
        assert got["cool_method"] == ["AR", "Q"][int(want["cool_method"])]
        assert got["anneal_temperature_c"] == pytest.approx(want["anneal_temperature_c"], abs=0.06)
    assert len({d["anneal_temperature_c"] for d in drawn}) > 1

    cooling.setCurrentText("Q")
    widget.use_store(tmp_path / "pairs.zarr")
    widget.pairs_box.setValue(2)
    widget.options_form.set_value("steps", 3)
    widget.generate_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    store = DatasetStore.open(tmp_path / "pairs.zarr")
    assert len(store) == 2
    asked = store.provenance(0).condition["properties"]
    assert asked["cool_method"] == 1.0  # Q, recorded as its index
    assert asked["anneal_temperature_c"] == pytest.approx(drawn[-1]["anneal_temperature_c"])
    assert store.image(0).shape == store.mask(0).shape == (64, 64)
    assert set(np.unique(store.mask(0))) <= set(range(len(generator.schema.names)))
