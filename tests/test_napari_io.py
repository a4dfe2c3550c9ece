"""napari reader / writer / sample data as pure functions on layer-data tuples (no viewer needed)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.core.sample import Provenance
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.napari_io import (
    get_reader,
    make_sample_data,
    read_store,
    store_layers,
    write_store,
)


@pytest.fixture(scope="module")
def uhcs_four(shared_data):
    """The first four UHCS training micrographs (all 645 x 484)."""
    return load_dataset(shared_data / "uhcs", split="train")[:4]


def _store(path, samples):
    store = DatasetStore.create(path, PhaseSchema.bundled("uhcs"))
    store.extend(samples, split="test")
    return store


def test_reader_claims_only_dataset_stores_and_large_grey_tiffs(tmp_path, shared_data, uhcs_four):
    """An ordinary TIFF is left to napari's own reader (no reader choice to make); the large-micrograph
    widget tests open an 8000 x 8000 one through this reader."""
    _store(tmp_path / "d.zarr", uhcs_four[:1])
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    assert get_reader(str(tmp_path / "plain.zarr")) is None
    assert get_reader(str(shared_data / "uhcs" / "images" / "uhcs0006.tif")) is None
    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(tmp_path / "d.zarr")) is read_store
    assert get_reader([str(tmp_path / "d.zarr"), str(tmp_path / "plain.zarr")]) is None


def test_reader_stacks_equal_sizes_and_keeps_schema_and_provenance(tmp_path, uhcs_four):
    tiles = [s.crop((0, 0, 256, 256), name=f"{s.name} tile") for s in uhcs_four[:2]]
    _store(tmp_path / "mixed.zarr", uhcs_four + tiles)
    layers = get_reader(str(tmp_path / "mixed.zarr"))(str(tmp_path / "mixed.zarr"))
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("mixed 484x645 image", "image"), ("mixed 484x645 mask", "labels"),
        ("mixed 256x256 image", "image"), ("mixed 256x256 mask", "labels"),
    ]
    (images, image_kw, _), (masks, mask_kw, _) = layers[:2]
    assert images.shape == (4, 484, 645) and masks.shape == (4, 484, 645)
    for k, sample in enumerate(uhcs_four):
        assert np.array_equal(images[k], sample.image) and np.array_equal(masks[k], sample.mask)
    info = mask_kw["metadata"]["microsynth"]
    assert PhaseSchema.from_dict(info["schema"]) == PhaseSchema.bundled("uhcs")
    assert [e["name"] for e in info["samples"]] == [s.name for s in uhcs_four]
    assert Provenance.from_dict(info["samples"][0]["provenance"]) == uhcs_four[0].provenance
    assert info["samples"][0]["properties"] == uhcs_four[0].properties
    assert image_kw["contrast_limits"] == (0.0, 1.0)
    colors = mask_kw["colormap"]
    for phase in PhaseSchema.bundled("uhcs").phases:
        assert np.allclose(np.array(colors[phase.id][:3]) * 255, phase.color)
    assert layers[2][0].shape == (2, 256, 256)


def test_reader_stops_loading_at_its_memory_budget(tmp_path, uhcs_four):
    tiles = [s.crop((0, 0, 100, 100), name=f"t{k}") for k, s in enumerate(uhcs_four[:3])]
    store = _store(tmp_path / "d.zarr", tiles)
    with pytest.warns(UserWarning, match="first 2 of 3 samples"):
        layers = store_layers(store, max_bytes=2 * 100 * 100 * 5)
    assert layers[0][0].shape == (2, 100, 100)
    assert [e["name"] for e in layers[1][1]["metadata"]["microsynth"]["samples"]] == ["t0", "t1"]


def test_sample_data_is_the_bundled_uhcs_four_micrograph(shared_data):
    (image, image_kw, image_type), (mask, mask_kw, mask_type) = make_sample_data()
    assert (image_type, mask_type) == ("image", "labels")
    assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
    original = tifffile.imread(shared_data / "uhcs" / "images" / "uhcs1648.tif")
    assert np.array_equal(np.round(image * 255).astype(np.uint8), original)
    assert np.array_equal(mask, np.load(shared_data / "uhcs" / "masks" / "uhcs1648.npy"))
    assert "uhcs1648.tif" in (shared_data / "uhcs" / "splits" / "test4A.txt").read_text()
    assert set(np.unique(mask)) == {0, 1, 2, 3}  # every UHCS phase is present
    assert np.allclose(np.array(mask_kw["colormap"][3][:3]) * 255, PhaseSchema.bundled("uhcs").colors[3])
    entry = mask_kw["metadata"]["microsynth"]["samples"][0]
    assert entry["properties"] == {"anneal_temperature_c": 800.0, "anneal_time_h": 24.0}
    assert entry["pixel_size_um"] == pytest.approx(20 / 103)


def test_sample_data_written_to_a_new_store_keeps_everything(tmp_path):
    layers = make_sample_data()
    assert write_store(str(tmp_path / "new.zarr"), layers) == [str(tmp_path / "new.zarr")]
    store = DatasetStore.open(tmp_path / "new.zarr")
    assert store.schema == PhaseSchema.bundled("uhcs") and store.names == ["uhcs1648"]
    sample = store[0]
    assert np.array_equal(sample.image, layers[0][0]) and np.array_equal(sample.mask, layers[1][0])
    assert sample.provenance.origin == "real" and sample.provenance.extra["micrograph_id"] == 1648
    assert sample.pixel_size_um == pytest.approx(20 / 103)


def test_writing_edited_labels_back_records_a_correction_not_a_duplicate(tmp_path, uhcs_four):
    path = tmp_path / "d.zarr"
    _store(path, uhcs_four)
    layers = read_store(str(path))
    masks = layers[1][0]
    masks[2, 100:110, 200:230] = 3  # paint 300 pixels of plane 2 as Widmanstaetten
    changed = int(np.count_nonzero(masks[2] != uhcs_four[2].mask))
    write_store(str(path), layers[::-1])  # order does not matter: layers pair by name

    store = DatasetStore.open(path)
    assert len(store) == 4
    assert np.array_equal(store[2].mask, masks[2])
    assert store.provenance(2).origin == "corrected" and store.provenance(2).changed_pixels == changed
    assert store.mask_versions(2) == ["mask", "mask_v1"]
    assert store.mask_versions(0) == ["mask"]  # untouched planes are not rewritten

    copy = tmp_path / "copy.zarr"
    write_store(str(copy), read_store(str(path)))  # into another store: appended with provenance
    copied = DatasetStore.open(copy)
    assert copied.names == store.names and copied.splits == {"test": [0, 1, 2, 3]}
    assert copied.provenance(2) == store.provenance(2)


def test_edits_saved_to_another_store_are_marked_corrected(tmp_path, uhcs_four):
    _store(tmp_path / "src.zarr", uhcs_four[:1])
    layers = read_store(str(tmp_path / "src.zarr"))
    layers[1][0][:5, :5] = 2
    changed = int(np.count_nonzero(layers[1][0] != uhcs_four[0].mask))
    write_store(str(tmp_path / "dst.zarr"), layers)
    provenance = DatasetStore.open(tmp_path / "dst.zarr").provenance(0)
    assert provenance.origin == "corrected" and provenance.changed_pixels == changed
    assert provenance.extra["original_origin"] == "real"


def test_plain_layers_get_an_inferred_schema(tmp_path, shared_data):
    raw = tifffile.imread(shared_data / "uhcs" / "images" / "uhcs0006.tif")
    labels = np.load(shared_data / "uhcs" / "masks" / "uhcs0006.npy").astype(np.int32)
    plain_layers = [(raw, {"name": "uhcs0006"}, "image"), (labels, {"name": "Labels"}, "labels")]
    write_store(str(tmp_path / "p.zarr"), plain_layers)
    store = DatasetStore.open(tmp_path / "p.zarr")
    assert store.schema.names == ("class 0", "class 1", "class 2", "class 3")
    assert np.array_equal(store[0].image, raw.astype(np.float32) / np.float32(255))
    assert np.array_equal(store[0].mask, labels)
    assert store[0].name == "uhcs0006" and store.provenance(0).source == "uhcs0006"

    with pytest.raises(ValueError, match="schema 'uhcs'"):
        write_store(str(tmp_path / "p.zarr"), make_sample_data())
    assert len(DatasetStore.open(tmp_path / "p.zarr")) == 1


def test_writer_explains_unusable_layers(tmp_path, shared_data):
    image, labels = make_sample_data()
    with pytest.raises(ValueError, match="1 image and 0 labels"):
        write_store(str(tmp_path / "a.zarr"), [image])
    with pytest.raises(ValueError, match="differ in shape"):
        write_store(str(tmp_path / "a.zarr"), [image, (labels[0][:100], labels[1], "labels")])
    with pytest.raises(ValueError, match=r"expected floats in \[0, 1\]"):
        write_store(str(tmp_path / "a.zarr"), [(image[0] * 255, image[1], "image"), labels])
    assert not (tmp_path / "a.zarr").exists()  # nothing is written when the input is refused


def test_sample_data_is_in_micrometres_and_the_status_bar_names_the_phase():
    from napari.layers import Image, Labels

    (image, image_kw, _), (mask, mask_kw, _) = make_sample_data()
    layers = Image(image, **image_kw), Labels(mask, **mask_kw)
    for layer in layers:
        np.testing.assert_allclose(layer.scale, (20 / 103, 20 / 103))  # 20 um scale bar = 103 px
        assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    y, x = np.argwhere(mask == 3)[0]
    assert layers[1].get_status((y, x))["coordinates"].endswith("3; phase: widmanstaetten")


def test_store_stacks_are_in_micrometres_only_when_their_planes_share_a_pixel_size(tmp_path, uhcs_four):
    assert uhcs_four[0].pixel_size_um == uhcs_four[1].pixel_size_um != uhcs_four[2].pixel_size_um
    same = read_store(str(_store(tmp_path / "same.zarr", uhcs_four[:2]).path))
    px = uhcs_four[0].pixel_size_um
    assert same[0][1]["scale"] == same[1][1]["scale"] == (1.0, px, px)
    assert same[1][1]["units"] == ("pixel", "um", "um")
    mixed = read_store(str(_store(tmp_path / "mixed.zarr", uhcs_four).path))
    assert mixed[1][1]["scale"] == (1.0, 1.0, 1.0) and mixed[1][1]["units"] == ("pixel",) * 3
