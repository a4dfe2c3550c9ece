"""Warnings before a model is applied to micrographs unlike its training data (issue 16, item 2)."""
from __future__ import annotations

from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.core.domain_check import dataset_schema_of, domain_warnings, training_statistics
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.engines.inference import micrograph_warnings
from napari_microsynth.resources import resources_dir

UHCS = PhaseSchema.bundled("uhcs")


def test_steel_micrographs_pass_and_iron_is_flagged(shared_data):
    train = load_dataset(shared_data / "uhcs", split="train")
    stats = training_statistics([s.image for s in train], [s.pixel_size_um for s in train])
    held_out = load_dataset(shared_data / "uhcs", split="test")
    assert held_out and all(domain_warnings(s.image, stats, s.pixel_size_um, s.schema, UHCS) == [] for s in held_out)
    iron = load_dataset(shared_data / "fastfinecut_iron")[0]
    warnings = domain_warnings(iron.image, stats, None, iron.schema, UHCS)
    assert any("grains dataset" in w for w in warnings) and any("mean grey level" in w for w in warnings)


def test_pixel_size_far_outside_the_trained_range_is_flagged(shared_data):
    steel = load_dataset(shared_data / "uhcs")[:3]
    stats = training_statistics([s.image for s in steel], [0.1, 0.2, 0.2])
    assert domain_warnings(steel[0].image, stats, 0.15) == []
    (warning,) = domain_warnings(steel[0].image, stats, 1.5)
    assert "pixel size 1.5 um is outside the trained 0.1-0.2 um" in warning


def test_the_bundled_model_knows_its_training_micrographs(shared_data):
    folder = resources_dir() / "models" / "plm-uhcs-demo"
    iron_path = sorted((shared_data / "fastfinecut_iron" / "images").iterdir())[0]
    assert dataset_schema_of(iron_path).name == "grains"
    iron = load_dataset(shared_data / "fastfinecut_iron")[0]
    assert len(micrograph_warnings(folder, UHCS, iron.image, None, dataset_schema_of(iron_path))) == 2
    steel = load_dataset(shared_data / "uhcs")[0]
    assert micrograph_warnings(folder, UHCS, steel.image, steel.pixel_size_um, steel.schema) == []
