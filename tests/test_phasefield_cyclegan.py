"""Paper 003's generator family (phase-field structure + CycleGAN translator) and its segmentation
experiment, at test size: pairs of the asked size whose mask is the boundary map of the simulated grains,
conditions outside the trained ranges refused, a saved model that makes the same pairs, the commands that
train, generate and run the experiment."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from napari_microsynth.cli import main
from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.core.io import instance_boundaries
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.generators import get_generator, load_generator
from napari_microsynth.generators.phasefield_cyclegan import untextured_image

pytestmark = pytest.mark.usefixtures("one_thread")
BUNDLED_IRON = Path(__file__).resolve().parent / "data" / "fastfinecut_iron"
CONDITION = {"grains": 8, "growth_steps": 20, "regularity": 0.5}


@pytest.fixture(scope="module")
def iron(shared_data):
    """Two real iron micrographs with their grain maps."""
    return load_dataset(shared_data / "fastfinecut_iron")[:2]


@pytest.fixture(scope="module")
def trained(iron):
    """A tiny generator after a few CycleGAN steps on the iron micrographs, with its own grain-count range."""
    cls = get_generator("phasefield-cyclegan")
    generator = cls(iron[0].schema, "tiny", "cpu", 0)
    report = generator.train(iron, cls.training_config(steps=4, structures=3, downscale=4, grains_low=7,
                                                       grains_high=11))
    return generator, report


def test_pairs_are_micrographs_whose_mask_is_the_boundary_map_of_the_simulated_grains(trained):
    generator, report = trained
    assert report["steps"] == 4 and np.isfinite(report["final_loss"])
    pairs = list(generator.sample(CONDITION, n=2, seed=7))
    assert [p.provenance.seed for p in pairs] == [7, 8]
    grain, boundary = generator.schema.names.index("grain"), generator.schema.names.index("boundary")
    for pair in pairs:
        assert pair.image.shape == pair.mask.shape == pair.instances.shape == (32, 32)
        assert pair.image.dtype == np.float32 and 0 <= pair.image.min() and pair.image.max() <= 1
        # the mask marks exactly the pixels with a 4-neighbour in another simulated grain
        np.testing.assert_array_equal(pair.mask, np.where(instance_boundaries(pair.instances), boundary, grain))
        assert 0.05 < np.mean(pair.mask == boundary) < 0.6 and pair.instances.max() >= 8
        simulation = pair.provenance.extra["simulation"]
        assert (simulation["grains"], simulation["steps"], simulation["seed"]) == (8, 20, pair.provenance.seed)
        assert pair.provenance.condition == {"properties": {"grains": 8.0, "growth_steps": 20.0, "regularity": 0.5}}
        assert pair.properties["grains"] == 8.0 and pair.provenance.extra["downscale"] == 4
        # the untextured simulation rides along for a preview: bright grains, dark boundaries; the pair's image
        # is its translation
        plain = untextured_image(pair)
        assert plain.shape == pair.image.shape
        assert plain[pair.mask == grain].mean() > plain[pair.mask == boundary].mean() + 0.2
        assert not np.allclose(plain, pair.image, atol=0.05)
    assert not np.array_equal(pairs[0].mask, pairs[1].mask)  # another seed, another structure
    assert untextured_image(next(generator.sample(CONDITION, seed=7, untextured=False))) is None


def test_conditions_outside_the_trained_ranges_are_refused_clearly(trained):
    generator, _ = trained
    spec = {p.name: (p.low, p.high) for p in generator.condition_spec.properties}
    assert spec == {"grains": (7.0, 11.0), "growth_steps": (10.0, 30.0), "regularity": (0.3, 0.6)}
    with pytest.raises(ValueError, match=r"'grains' = 40.0 is outside the trained range \[7.0, 11.0\]"):
        generator.sample({**CONDITION, "grains": 40})
    with pytest.raises(ValueError, match=r"'regularity' = 0.9 is outside"):
        generator.sample({**CONDITION, "regularity": 0.9})
    with pytest.raises(ValueError, match="missing \\['growth_steps'\\]"):
        generator.sample({"grains": 8, "regularity": 0.5})
    with pytest.raises(ValueError, match="dict"):
        generator.sample([0.9, 0.1])  # phase fractions are not what it takes
    # no condition: each pair's parameters drawn inside the ranges from its seed
    drawn = [p.provenance.condition["properties"] for p in generator.sample(None, n=3, seed=0)]
    assert all(7 <= d["grains"] <= 11 and 10 <= d["growth_steps"] <= 30 and 0.3 <= d["regularity"] <= 0.6
               for d in drawn) and len({d["regularity"] for d in drawn}) == 3
    assert generator.plausible_conditions(3, seed=0) == drawn
    with pytest.raises(Cancelled):
        next(generator.sample(CONDITION, n=2, should_stop=lambda: True))


def test_a_saved_model_gives_identical_pairs_for_a_seed(trained, tmp_path):
    generator, _ = trained
    folder = generator.save(tmp_path / "model")
    assert {p.name for p in folder.iterdir()} == {"config.json", "translator.safetensors", "README.md"}
    card = (folder / "README.md").read_text()
    assert "grains 7-11" in card and "4 CycleGAN steps" in card and "3 simulated structures" in card
    again = load_generator(folder)
    assert again.condition_spec == generator.condition_spec and again.downscale == 4
    a, b = (next(g.sample(CONDITION, seed=3)) for g in (generator, again))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert b.provenance.model_checksum == generator.model_checksum != ""


def test_train_generate_and_the_experiment_through_the_cli(tmp_path, capsys):
    out = tmp_path / "bench"
    # without a translator: the train halves become a dataset folder for training one
    assert main(["-q", "sim2real-benchmark", str(BUNDLED_IRON), "--out", str(out)]) == 0
    region = out / "train_region"
    assert "train-generator phasefield-cyclegan" in capsys.readouterr().out
    assert sorted(p.name for p in (region / "images").iterdir()) == ["001_train.tif", "002_train.tif"]
    halves = load_dataset(region)
    assert [s.shape for s in halves] == [(800, 400)] * 2 and halves[0].instances.max() > 50

    assert main(["-q", "train-generator", "phasefield-cyclegan", str(region), "--train-split", "train", "--preset",
                 "tiny", "--steps", "3", "--structures", "3", "--downscale", "4", "--device", "cpu",
                 "--out", str(tmp_path / "translator")]) == 0
    model = tmp_path / "translator" / "model"
    conditions = tmp_path / "conditions.csv"
    conditions.write_text("grains,growth_steps,regularity\n6,10,0.3\n10,30,0.6\n")
    assert main(["-q", "generate", str(model), str(tmp_path / "pairs.zarr"), "--csv", str(conditions),
                 "--device", "cpu"]) == 0
    store = DatasetStore.open(tmp_path / "pairs.zarr")
    assert len(store) == 2 and store[1].provenance.condition["properties"]["grains"] == 10.0
    assert store[0].instances is not None and store.schema.names == ("grain", "boundary")
    # no conditions given: each pair's parameters drawn inside the trained ranges
    assert main(["-q", "generate", str(model), str(tmp_path / "drawn.zarr"), "-n", "2", "--device", "cpu"]) == 0
    drawn = DatasetStore.open(tmp_path / "drawn.zarr")
    assert [6 <= drawn[i].provenance.condition["properties"]["grains"] <= 10 for i in range(len(drawn))] == [True] * 2
    capsys.readouterr()

    argv = ["-q", "sim2real-benchmark", str(BUNDLED_IRON), "--translator", str(model), "--out", str(out),
            "--seeds", "0", "1", "--pairs", "3", "--steps", "2", "--tile", "32", "--batch-size", "2",
            "--real-images", "1", "--device", "cpu"]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    for label in ("baseline 1", "baseline 2", "translated by the CycleGAN"):
        row = next(line for line in report.splitlines() if label in line)
        assert row.count("±") == 7, row
    assert "the right half of every micrograph (2 regions" in report and "3 structures" in report
    # the split grains' marker depth is chosen on the train half of the micrograph baseline 1 does not train on
    assert "chosen on the validation regions: the train halves of 002 train" in report
    with (out / "runs.csv").open() as handle:
        runs = list(csv.DictReader(handle))
    assert sorted((r["set"], r["seed"]) for r in runs) == sorted(
        (s, k) for s in ("real", "untextured", "translated") for k in ("0", "1"))
    assert all(0 <= float(r["boundary_iou"]) <= 1 and 0 <= float(r["boundary_f1"]) <= 1 for r in runs)
    assert (out / "examples.png").stat().st_size > 0
    # run again: finished runs and the synthetic pool are reused, the table is the same
    assert main(argv) == 0
    assert (out / "report.md").read_text().split("\n\n")[1] == report.split("\n\n")[1]
    # ... but runs with other settings are not mixed into the table
    capsys.readouterr()
    assert main([*argv[:argv.index("--steps")], "--steps", "3", *argv[argv.index("--steps") + 2:]]) == 2
    assert "holds runs made with other settings (steps)" in capsys.readouterr().err
