"""Loading the real dataset folders (MetalDAM, UHCS, Fast-FineCut iron) and generic folders."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from napari_microsynth.cli import main
from napari_microsynth.core.datasets import (
    available_splits,
    describe_dataset,
    detect_layout,
    load_dataset,
    metaldam_inconsistent_rows,
    metaldam_metadata_counts,
    read_metaldam_metadata,
    read_split,
)
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.schema import PhaseSchema


@pytest.fixture(scope="session")
def metaldam(shared_data):
    return {s.name: s for s in load_dataset(shared_data / "metaldam")}


@pytest.fixture(scope="session")
def uhcs(shared_data):
    return {s.name: s for s in load_dataset(shared_data / "uhcs")}


@pytest.mark.parametrize("folder, layout", [
    pytest.param("metaldam", "metaldam", marks=pytest.mark.real_data("metaldam")),
    ("uhcs", "uhcs"),
    ("fastfinecut_iron", "grains"),
])
def test_layouts_are_recognised(shared_data, folder, layout):
    assert detect_layout(shared_data / folder) == layout


# ---------------------------------------------------------------------------------------------- MetalDAM


@pytest.mark.real_data("metaldam")
def test_metaldam_mask_counts_equal_the_official_metadata(shared_data, metaldam):
    folder = shared_data / "metaldam"
    official = metaldam_metadata_counts(folder)
    inconsistent = metaldam_inconsistent_rows(folder)
    assert set(inconsistent) == {"micrograph27"}
    assert "328220" in inconsistent["micrograph27"]
    consistent = sorted(set(official) - set(inconsistent))
    assert len(consistent) == 41
    for name in consistent:
        counts = np.bincount(metaldam[name].mask.ravel(), minlength=5)
        np.testing.assert_array_equal(counts, official[name], err_msg=name)
    # the inconsistent row cannot describe the (self-consistent) mask
    mask27 = metaldam["micrograph27"].mask
    assert np.bincount(mask27.ravel(), minlength=5).sum() == mask27.size != official["micrograph27"].sum()
    # micrograph8 only has a wrong 'total' column; its counts match the mask (checked above)
    assert read_metaldam_metadata(folder)["micrograph8"].problems == ["total column is 719872, not 895x1280 = 1145600"]


@pytest.mark.real_data("metaldam")
def test_metaldam_images_are_paired_with_their_masks(shared_data, metaldam):
    records = read_metaldam_metadata(shared_data / "metaldam")
    assert len(metaldam) == 42
    shapes = {}
    for name, sample in metaldam.items():
        r = records[name]
        assert sample.image.shape == sample.mask.shape == (r.height, r.width), name
        shapes[sample.shape] = shapes.get(sample.shape, 0) + 1
        assert sample.image.dtype == np.float32 and 0 <= sample.image.min() and sample.image.max() <= 1
    assert shapes == {(703, 1024): 34, (702, 1024): 2, (895, 1280): 6}
    assert metaldam["micrograph15"].shape == metaldam["micrograph19"].shape == (702, 1024)
    # the image is the top-left part of the JPEG (image[:mask.shape[0], :mask.shape[1]])
    jpeg = np.asarray(Image.open(shared_data / "metaldam" / "images" / "micrograph19.jpg"))
    np.testing.assert_allclose(metaldam["micrograph19"].image, jpeg[:702, :, 0] / 255.0, atol=1e-6)


@pytest.mark.real_data("metaldam")
def test_metaldam_provenance_and_metadata(shared_data, metaldam):
    sample = metaldam["micrograph4"]
    assert sample.provenance.origin == "real"
    assert sample.provenance.source == str(shared_data / "metaldam" / "images" / "micrograph4.jpg")
    assert sample.provenance.extra["magnification"] == 10000
    assert sample.provenance.extra["micron_bar"] == 5.0
    assert sample.provenance.extra["cropbar"] == 65
    assert sample.pixel_size_um is None  # the metadata give no scale-bar length in pixels
    assert sample.schema == PhaseSchema.bundled("metaldam")


@pytest.mark.real_data("metaldam")
def test_metaldam_splits(shared_data, metaldam):
    folder = shared_data / "metaldam"
    parts = {name: read_split(folder, name) for name in ("train", "val", "test")}
    assert [len(v) for v in parts.values()] == [24, 10, 8]
    assert sorted(sum(parts.values(), [])) == sorted(metaldam)
    folds = [read_split(folder, f"cv{k}") for k in range(6)]
    assert all(len(f) == 7 for f in folds)
    assert sorted(sum(folds, [])) == sorted(metaldam)
    assert folds[2][:2] == ["micrograph0", "micrograph1"]
    val = load_dataset(folder, split="val")
    assert [s.name for s in val] == parts["val"]
    with pytest.raises(ValueError, match="no split 'holdout'; available: test, train, val, cv0"):
        read_split(folder, "holdout")


# ---------------------------------------------------------------------------------------------- UHCS


def test_uhcs_fractions_match_the_npy_labels(shared_data, uhcs):
    assert sorted(uhcs) == sorted(p.stem for p in (shared_data / "uhcs" / "masks").glob("*.npy"))
    for name, sample in uhcs.items():
        labels = np.load(shared_data / "uhcs" / "masks" / f"{name}.npy")
        np.testing.assert_allclose(sample.fractions, np.bincount(labels.ravel(), minlength=4) / labels.size)
        assert sample.shape == (484, 645)


def test_uhcs_pixel_size_and_processing_conditions(uhcs):
    s6 = uhcs["uhcs0006"]  # 970 C, 90 min, air cooled, 20 um bar = 124 px
    assert s6.pixel_size_um == pytest.approx(20 / 124)
    assert s6.properties == {"anneal_temperature_c": 970.0, "anneal_time_h": 1.5}
    assert s6.provenance.extra["cool_method"] == "AR"
    assert uhcs["uhcs0075"].properties["anneal_time_h"] == 3.0
    assert uhcs["uhcs0596"].pixel_size_um == pytest.approx(5 / 129)
    temperatures = {s.properties["anneal_temperature_c"] for s in uhcs.values() if s.properties}
    assert temperatures <= {800.0, 900.0, 970.0, 1000.0}


@pytest.mark.real_data("uhcs")
def test_uhcs_splits(shared_data, uhcs):
    folder = shared_data / "uhcs"
    parts = [read_split(folder, name) for name in ("train", "val", "test")]
    assert [len(p) for p in parts] == [16, 4, 4]
    assert sorted(sum(parts, [])) == sorted(uhcs)
    folds = [read_split(folder, f"cv{k}") for k in range(6)]
    assert sorted(sum(folds, [])) == sorted(uhcs)
    assert read_split(folder, "cv1")[0] == "uhcs1061"
    assert available_splits(folder)[:3] == ["train", "val", "test"]
    assert [s.name for s in load_dataset(folder, split="test")] == ["uhcs0295", "uhcs1289", "uhcs0006", "uhcs1648"]


# ---------------------------------------------------------------------------------------------- iron grains


def test_iron_grain_maps_load_as_boundaries_and_instances(shared_data):
    samples = load_dataset(shared_data / "fastfinecut_iron")
    assert [s.name for s in samples][:2] == ["001", "002"]  # serial sections in order
    for sample in samples:
        assert sample.schema.name == "grains" and sample.shape == (800, 800)
        assert 160 <= sample.instances.max() <= 200
        assert 0.04 < sample.fractions[1] < 0.09  # boundary share
        # boundary pixels are exactly those with a 4-neighbour in another grain
        inst = sample.instances
        assert np.all(sample.mask[:, :-1][inst[:, :-1] != inst[:, 1:]] == 1)
        assert len(sample.provenance.extra["instance_colors"]) == sample.instances.max()


# ---------------------------------------------------------------------------------------------- generic


def _generic_folder(shared_data, tmp_path, names=("uhcs0006", "uhcs0007")):
    folder = tmp_path / "my_data"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    schema = PhaseSchema.bundled("uhcs")
    schema.save(folder / "schema.json")
    for name in names:
        shutil.copy(shared_data / "uhcs" / "images" / f"{name}.tif", folder / "images" / f"s_{name}.tif")
        labels = np.load(shared_data / "uhcs" / "masks" / f"{name}.npy")
        Image.fromarray(schema.colors[labels]).save(folder / "masks" / f"s_{name}.png")  # colour masks
    return folder


def test_generic_folder_with_schema_json_and_colour_masks(shared_data, tmp_path):
    folder = _generic_folder(shared_data, tmp_path)
    shutil.copy(shared_data / "uhcs" / "images" / "uhcs0075.tif", folder / "images" / "unlabelled.tif")
    (folder / "splits").mkdir()
    (folder / "splits" / "train.txt").write_text("s_uhcs0007.tif\n")
    assert detect_layout(folder) == "generic"
    samples = {s.name: s for s in load_dataset(folder)}
    assert sorted(samples) == ["s_uhcs0006", "s_uhcs0007", "unlabelled"]
    np.testing.assert_array_equal(samples["s_uhcs0006"].mask, np.load(shared_data / "uhcs" / "masks" / "uhcs0006.npy"))
    assert samples["unlabelled"].mask is None
    assert [s.name for s in load_dataset(folder, split="train")] == ["s_uhcs0007"]


def test_generic_folder_errors_say_what_is_wrong(shared_data, tmp_path):
    folder = _generic_folder(shared_data, tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "masks" / "lost.png")
    with pytest.raises(ValueError, match="masks without a micrograph in images/: lost"):
        load_dataset(folder)
    (folder / "masks" / "lost.png").unlink()
    Image.fromarray(np.zeros((100, 645), np.uint8)).resize((300, 200)).save(folder / "masks" / "s_uhcs0007.png")
    with pytest.raises(ValueError, match="mask s_uhcs0007.png is 200x300 but image s_uhcs0007.tif is 484x645"):
        load_dataset(folder)
    (folder / "schema.json").unlink()
    with pytest.raises(ValueError, match="needs a phase schema"):
        load_dataset(folder)


def test_progress_is_reported_and_cancel_stops(shared_data):
    calls = []
    load_dataset(shared_data / "uhcs", split="val", progress=lambda d, t, m: calls.append((d, t)))
    n = len(read_split(shared_data / "uhcs", "val"))
    assert calls == [(i, n) for i in range(1, n + 1)]
    with pytest.raises(Cancelled):
        load_dataset(shared_data / "uhcs", should_stop=lambda: True)


# ---------------------------------------------------------------------------------------------- describe


@pytest.mark.real_data("metaldam")
def test_describe_metaldam_lists_sizes_classes_and_metadata_problems(shared_data):
    summary = describe_dataset(shared_data / "metaldam")
    assert (summary.layout, summary.n_samples, summary.n_labelled) == ("metaldam", 42, 42)
    assert summary.image_sizes == {"1024x703": 34, "1280x895": 6, "1024x702": 2}  # width x height
    assert summary.class_names[2] == "martensite/austenite"
    assert summary.class_fractions[1] == pytest.approx(0.5549, abs=1e-3)  # austenite
    assert summary.splits["train"] == 24 and summary.splits["cv5"] == 7
    assert len(summary.problems) == 2
    assert any(p.startswith("micrograph27: metadata class counts sum to 328220") for p in summary.problems)
    assert any(p.startswith("micrograph8: metadata total column") for p in summary.problems)
    assert "problems (2):" in summary.as_text()


@pytest.mark.real_data("uhcs")
def test_describe_uhcs_notes_the_micrograph_without_conditions(shared_data, uhcs):
    assert uhcs["uhcs1528"].properties == {}  # no anneal conditions recorded
    assert "cool_method" not in uhcs["uhcs1528"].provenance.extra
    assert sum(1 for s in uhcs.values() if s.properties) == 23
    summary = describe_dataset(shared_data / "uhcs")
    assert summary.problems == ["uhcs1528: no processing conditions in uhcs-metadata.csv"]
    assert summary.class_fractions[0] == pytest.approx(0.7438, abs=1e-4)
    assert summary.to_dict()["n_samples"] == 24


def test_describe_lists_a_micrograph_without_a_mask_as_a_problem(shared_data, tmp_path, capsys):
    folder = tmp_path / "uhcs"
    (folder / "masks").mkdir(parents=True)
    shutil.copytree(shared_data / "uhcs" / "images", folder / "images")
    stems = sorted(p.stem for p in (folder / "images").glob("*.tif"))
    for stem in stems[1:]:
        shutil.copy(shared_data / "uhcs" / "masks" / f"{stem}.npy", folder / "masks")
    summary = describe_dataset(folder, schema=PhaseSchema.bundled("uhcs"))
    assert f"{stems[0]}: micrograph without a mask in masks/ (unlabelled)" in summary.problems
    assert main(["-q", "describe", "--strict", "--schema", "uhcs", str(folder)]) == 1
    assert "problems: none" not in capsys.readouterr().out
