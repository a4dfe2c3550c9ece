"""Dataset store: round trips, validation messages, crash safety, curation and export (real UHCS data)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_microsynth.core.fractions import mask_fractions
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.sample import Provenance, Sample
from napari_microsynth.core.schema import Phase, PhaseSchema
from napari_microsynth.cli import EXIT_BAD_INPUT, main
from napari_microsynth.core.folder_export import export_folder
from napari_microsynth.core.store import (
    DatasetStore,
    IncompleteWriteWarning,
    StoreError,
    StoreLockedError,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def load_uhcs(shared_data: Path, name: str) -> Sample:
    folder = shared_data / "uhcs"
    image = tifffile.imread(folder / "images" / f"{name}.tif").astype(np.float32) / np.float32(255)
    mask = np.load(folder / "masks" / f"{name}.npy")
    return Sample(image, PhaseSchema.bundled("uhcs"), mask, name=name, pixel_size_um=20 / 103,
                  provenance=Provenance(origin="real", source=f"uhcs/images/{name}.tif"))


@pytest.fixture(scope="module")
def uhcs(shared_data):
    return [load_uhcs(shared_data, n) for n in ("uhcs1648", "uhcs0006")]


def synthetic_tile(real: Sample, seed: int) -> Sample:
    """A stand-in for a generator output: a 256x256 crop with synthetic provenance and properties."""
    tile = real.crop((0, 0, 256, 256), name=f"synthetic {seed}")
    tile.provenance = Provenance(
        origin="synthetic", generator="joint-ddpm", generator_version="1", model_checksum="abc123",
        condition={"fractions": [0.7, 0.1, 0.15, 0.05]}, seed=seed, extra={"steps": 50},
    )
    tile.properties = {"anneal_temperature": 800.0 + seed, "anneal_time_h": 24.0}
    tile.pixel_size_um = None
    tile.instances = (tile.mask == 2).astype(np.int32) * 7
    return tile


def test_roundtrip_keeps_every_field(tmp_path, uhcs):
    tiles = [synthetic_tile(uhcs[0], s) for s in (1, 2)]
    store = DatasetStore.create(tmp_path / "d.zarr", PhaseSchema.bundled("uhcs"), description="test set")
    assert store.append(uhcs[0], split="train") == 0
    assert store.append(uhcs[1], split="test") == 1
    assert store.extend(tiles, split="train") == [2, 3]

    reopened = DatasetStore.open(tmp_path / "d.zarr")
    assert len(reopened) == 4
    assert reopened.schema == PhaseSchema.bundled("uhcs")
    assert reopened.description == "test set"
    assert reopened.names == ["uhcs1648", "uhcs0006", "synthetic 1", "synthetic 2"]
    assert reopened.splits == {"train": [0, 2, 3], "test": [1]}
    for original, stored in zip(uhcs + tiles, reopened):
        assert stored.image.dtype == np.float32
        assert np.array_equal(stored.image, original.image)  # float32 is stored exactly
        assert np.array_equal(stored.mask, original.mask)
        assert stored.shape == original.shape
        assert stored.provenance == original.provenance
        assert stored.properties == original.properties
        assert stored.pixel_size_um == original.pixel_size_um
        assert stored.name == original.name
    assert np.array_equal(reopened[3].instances, tiles[1].instances)
    assert reopened[0].instances is None
    expected = np.stack([mask_fractions(s.mask, s.schema) for s in uhcs + tiles])
    np.testing.assert_allclose(reopened.fractions(), expected)
    assert reopened[-1].name == "synthetic 2"
    text = reopened.describe()
    assert "samples      4" in text and "real 2, synthetic 2" in text and "train 3, test 1" in text
    assert f"ferrite matrix {np.mean(expected[:, 0]):.1%}" in text


def test_quantised_images_are_exact_for_8bit_sources_and_within_half_a_step(tmp_path, uhcs):
    schema = PhaseSchema.bundled("uhcs")
    u8 = DatasetStore.create(tmp_path / "u8.zarr", schema, image_dtype="uint8")
    u8.append(uhcs[0])
    assert np.array_equal(DatasetStore.open(tmp_path / "u8.zarr")[0].image, uhcs[0].image)

    smooth = uhcs[0].crop((0, 0, 128, 128))
    smooth.image = np.clip(smooth.image * 0.37 + 0.1, 0, 1).astype(np.float32)
    u16 = DatasetStore.create(tmp_path / "u16.zarr", schema, image_dtype="uint16")
    u16.append(smooth)
    back = DatasetStore.open(tmp_path / "u16.zarr")[0].image
    assert np.abs(back - smooth.image).max() <= 0.5 / 65535 + 1e-7
    assert not np.array_equal(back, smooth.image)  # it really is quantised


def test_create_refuses_existing_paths(tmp_path, uhcs):
    schema = PhaseSchema.bundled("uhcs")
    store = DatasetStore.create(tmp_path / "d.zarr", schema)
    store.append(uhcs[0])
    with pytest.raises(FileExistsError, match="replace it with --overwrite"):
        DatasetStore.create(tmp_path / "d.zarr", schema)
    assert len(DatasetStore.create(tmp_path / "d.zarr", schema, overwrite=True)) == 0
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a napari-microsynth store"):
        DatasetStore.create(tmp_path / "photos", schema, overwrite=True)
    assert (tmp_path / "photos" / "holiday.jpg").exists()


def test_append_rejects_bad_samples(tmp_path, uhcs):
    store = DatasetStore.create(tmp_path / "d.zarr", PhaseSchema.bundled("uhcs"))
    with pytest.raises(ValueError, match="schema 'metaldam'"):
        store.append(Sample(uhcs[0].image, PhaseSchema.bundled("metaldam"), np.zeros(uhcs[0].shape, np.uint8)))
    with pytest.raises(ValueError, match="no mask"):
        store.append(Sample(uhcs[0].image, uhcs[0].schema))
    bad_mask = uhcs[0].mask.copy()
    bad_mask[0, 0] = 9
    with pytest.raises(ValueError, match=r"\[9\]"):
        store.append(Sample(uhcs[0].image, uhcs[0].schema, bad_mask))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        store.append(Sample(uhcs[0].image * 2, uhcs[0].schema, uhcs[0].mask))
    assert len(store) == 0
    store.append(uhcs[0])
    with pytest.raises(PermissionError, match="mode='a'"):
        DatasetStore.open(tmp_path / "d.zarr").append(uhcs[1])


def _store_with_two(tmp_path, uhcs) -> Path:
    path = tmp_path / "d.zarr"
    store = DatasetStore.create(path, PhaseSchema.bundled("uhcs"))
    store.extend(uhcs)
    return path


def _set_root_attr(path: Path, key: str, value) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    if value is None:
        del meta["attributes"][key]
    else:
        meta["attributes"][key] = value
    (path / "zarr.json").write_text(json.dumps(meta))


def test_open_explains_a_deleted_mask(tmp_path, uhcs):
    path = _store_with_two(tmp_path, uhcs)
    shutil.rmtree(path / "samples" / "000001" / "mask")
    with pytest.raises(StoreError, match=r"sample 1 \(samples/000001\) has no mask array"):
        DatasetStore.open(path)


def test_open_explains_a_schema_that_does_not_fit_the_masks(tmp_path, uhcs):
    path = _store_with_two(tmp_path, uhcs)
    two_phases = PhaseSchema("two", (Phase(0, "a", (0, 0, 0)), Phase(1, "b", (255, 255, 255))))
    _set_root_attr(path, "schema", two_phases.to_dict())
    with pytest.raises(StoreError, match="4 class counts but the schema 'two' has 2 classes"):
        DatasetStore.open(path)  # the quick structural check sees the counts
    with pytest.raises(StoreError) as info:
        DatasetStore.open(path, check_data=True)  # the full check reads the masks
    message = str(info.value)
    assert "sample 0" in message and "sample 1" in message
    assert "[2, 3]" in message and "'two'" in message


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("schema", None, "no phase schema"),
        ("napari_microsynth", {"format": "napari-microsynth-dataset", "version": 99, "image_dtype": "float32"},
         "version 99 is not supported"),
        ("napari_microsynth", None, "not a napari-microsynth dataset store"),
    ],
)
def test_open_explains_bad_root_metadata(tmp_path, uhcs, key, value, expected):
    path = _store_with_two(tmp_path, uhcs)
    _set_root_attr(path, key, value)
    with pytest.raises(StoreError, match=expected):
        DatasetStore.open(path)


def test_open_refuses_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        DatasetStore.open(tmp_path / "missing.zarr")
    with pytest.raises(StoreError, match="not a dataset store \\(no zarr.json\\)"):
        DatasetStore.open(tmp_path)


def test_a_deleted_image_chunk_is_an_error_never_black_pixels(tmp_path, uhcs, capsys):
    """Issue 19 item 5: zarr reads a missing chunk as its fill value (0), so a deleted image chunk once
    exported as black pixels."""
    path = _store_with_two(tmp_path, uhcs)
    store = DatasetStore.open(path)  # opened before the damage: the read itself refuses
    (path / "samples" / "000001" / "image" / "c" / "0" / "0").unlink()
    with pytest.raises(StoreError, match=r"sample 1 \(samples/000001/image\): 1 chunk file\(s\) of image are missing"):
        store.image(1)
    with pytest.raises(StoreError, match=r"sample 1 \(samples/000001\): 1 chunk file\(s\) of image are missing \(c/0/0\)"):
        DatasetStore.open(path)
    assert main(["-q", "export-folders", str(path), "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    assert "chunk file(s) of image are missing" in capsys.readouterr().err
    assert not (tmp_path / "out" / "samples.csv").exists()


def test_an_all_zero_mask_keeps_its_chunks(tmp_path, uhcs):
    """zarr skips chunks that hold only the fill value unless told otherwise; the store writes them all,
    so that a missing chunk always means damage."""
    tile = uhcs[0].crop((0, 0, 64, 64))
    tile.mask[...] = 0
    tile.image[...] = 0
    with DatasetStore.create(tmp_path / "z.zarr", tile.schema) as store:
        store.append(tile)
    reopened = DatasetStore.open(tmp_path / "z.zarr", check_data=True)
    assert not reopened.mask(0).any() and not reopened.image(0).any()


def test_a_corrupt_chunk_passes_the_quick_check_and_fails_the_full_one_and_the_read(tmp_path, uhcs, capsys):
    path = _store_with_two(tmp_path, uhcs)
    (path / "samples" / "000000" / "mask" / "c" / "0" / "0").write_bytes(b"garbage")
    store = DatasetStore.open(path)
    with pytest.raises(StoreError, match=r"samples/000000/mask\): a chunk cannot be decoded \(Zstd"):
        store[0]
    with pytest.raises(StoreError, match=r"sample 0 \(samples/000000\).*a chunk cannot be decoded"):
        DatasetStore.open(path, check_data=True)
    assert main(["-q", "describe", str(path)]) == 0
    capsys.readouterr()
    assert main(["-q", "describe", "--full", str(path)]) == EXIT_BAD_INPUT
    assert "a chunk cannot be decoded" in capsys.readouterr().err


def test_damaged_metadata_files_are_named(tmp_path, uhcs, capsys):
    """A corrupt root zarr.json was reported as "not a dataset folder", a garbage array zarr.json as a bare
    JSON error without a file name."""
    path = _store_with_two(tmp_path, uhcs)
    (path / "samples" / "000001" / "mask" / "zarr.json").write_text("{garbage")
    with pytest.raises(StoreError, match=r"sample 1 .*samples/000001/mask/zarr.json is damaged \(not readable JSON"):
        DatasetStore.open(path)
    (path / "zarr.json").write_text("{garbage")
    assert main(["-q", "describe", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{path / 'zarr.json'} is damaged (not readable JSON" in err and "dataset folder" not in err


def test_a_failed_first_write_leaves_no_store_behind(tmp_path, uhcs):
    """Issue 19 item 10: a failed import or generate left an empty store that blocked the re-run."""
    from napari_microsynth.core.store import removed_if_left_empty

    bad = uhcs[0].crop((0, 0, 32, 32))
    bad.image[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"), removed_if_left_empty(tmp_path / "new.zarr"):
        DatasetStore.create(tmp_path / "new.zarr", bad.schema).append(bad)
    assert not (tmp_path / "new.zarr").exists()
    kept = _store_with_two(tmp_path, uhcs)  # an existing store is never removed, even when a write fails
    with pytest.raises(ValueError, match="NaN"), removed_if_left_empty(kept):
        DatasetStore.open(kept, mode="a").append(bad)
    assert len(DatasetStore.open(kept)) == 2


def test_an_unfinished_store_is_reported_and_refused_by_readers(tmp_path, uhcs, capsys):
    from napari_microsynth.core.datasets import load_split

    path = _store_with_two(tmp_path, uhcs)
    with DatasetStore.open(path, mode="a") as store:
        store.set_unfinished("export of 9 samples, interrupted")
    assert main(["-q", "describe", str(path)]) == 1
    assert "UNFINISHED   export of 9 samples, interrupted" in capsys.readouterr().out
    with pytest.raises(ValueError, match="is unfinished \\(export of 9 samples, interrupted\\)"):
        load_split(path, None)
    with DatasetStore.open(path, mode="a") as store:
        store.set_unfinished(None)
    assert len(load_split(path, None)) == 2


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from zarr.storage import LocalStore
    from napari_microsynth.core.store import DatasetStore

    store = DatasetStore.open(sys.argv[1], mode="a")
    sample = store[0]
    sample.name = "fourth"
    writes_allowed = int(sys.argv[2])
    original_set = LocalStore.set
    done = []

    async def dying_set(self, key, value):
        if len(done) == writes_allowed:
            os._exit(17)  # dies like a killed process: no cleanup, no flushing
        done.append(key)
        await original_set(self, key, value)

    LocalStore.set = dying_set
    store.append(sample, split="train")
    os._exit(0)
    """
)


def test_a_write_killed_midway_leaves_earlier_samples_intact(tmp_path, uhcs):
    tiles = [uhcs[i % 2].crop((0, 0, 200 + i, 300), name=f"t{i}") for i in range(3)]
    path = tmp_path / "d.zarr"
    store = DatasetStore.create(path, PhaseSchema.bundled("uhcs"))
    store.extend(tiles, split="train")
    store.close()  # the killed writers below need the store's write lock
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # Appending a sample this small makes 6 file writes: sample group, image array + its one chunk, mask
    # array + its one chunk, then the root metadata (the commit). Die before the 1st, 4th and 6th.
    for writes_allowed in (0, 3, 5):
        result = subprocess.run([sys.executable, str(script), str(path), str(writes_allowed)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 17, result.stderr
        if writes_allowed:
            with pytest.warns(IncompleteWriteWarning, match="000003"):
                reopened = DatasetStore.open(path)
        else:
            reopened = DatasetStore.open(path)
        assert len(reopened) == 3
        assert reopened.splits == {"train": [0, 1, 2]}
        for original, stored in zip(tiles, reopened):
            assert np.array_equal(stored.image, original.image)
            assert np.array_equal(stored.mask, original.mask)
    assert reopened.incomplete == ["000003"]

    with pytest.warns(IncompleteWriteWarning):
        store = DatasetStore.open(path, mode="a")
    store.append(uhcs[0], split="test")
    store.close()
    reopened = DatasetStore.open(path)  # no warning: the leftover was replaced
    assert reopened.incomplete == []
    assert reopened.names == ["t0", "t1", "t2", "uhcs1648"]
    assert np.array_equal(reopened[3].mask, uhcs[0].mask)

    completed = subprocess.run([sys.executable, str(script), str(path), "1000"], env=env, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert DatasetStore.open(path).names[-1] == "fourth"


HOLD_SCRIPT = textwrap.dedent(
    """
    import sys
    from napari_microsynth.core.store import DatasetStore

    store = DatasetStore.open(sys.argv[1], mode="a")
    print("writing", flush=True)
    sys.stdin.read()  # holds the store open for writing until killed
    """
)


def test_one_writer_at_a_time_and_a_killed_writer_leaves_no_stale_lock(tmp_path, uhcs, capsys):
    path = tmp_path / "d.zarr"
    tile = uhcs[0].crop((0, 0, 64, 64), name="t")
    with DatasetStore.create(path, PhaseSchema.bundled("uhcs")) as store:
        store.append(tile)
        with DatasetStore.open(path, mode="a") as same_process:  # handles of one process share the lock
            same_process.append(tile)
    (tmp_path / "hold.py").write_text(HOLD_SCRIPT)
    writer = subprocess.Popen([sys.executable, str(tmp_path / "hold.py"), str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        assert writer.stdout.readline() == "writing\n"
        with pytest.raises(StoreLockedError, match=f"store {path} is being written by process {writer.pid}"):
            DatasetStore.open(path, mode="a")
        with pytest.raises(StoreLockedError):
            DatasetStore.create(path, PhaseSchema.bundled("uhcs"), overwrite=True)
        assert main(["-q", "generate", "pf-diffseg-uhcs-demo", str(path), "-n", "2", "--steps", "2",
                     "--fractions", "0.7,0.1,0.1,0.1", "--device", "cpu", "--threads", "1"]) == EXIT_BAD_INPUT
        assert f"is being written by process {writer.pid}" in capsys.readouterr().err
        assert len(DatasetStore.open(path)) == 2  # reading is allowed
    finally:
        writer.kill()
        writer.wait()
    with DatasetStore.open(path, mode="a") as store:  # the killed writer's lock went with it
        store.append(tile)
    assert len(DatasetStore.open(path)) == 3


def test_extend_reports_progress_and_stops_when_asked(tmp_path, uhcs):
    store = DatasetStore.create(tmp_path / "d.zarr", PhaseSchema.bundled("uhcs"))
    tiles = [uhcs[0].crop((0, 64 * i, 64, 64 * i + 64), name=f"t{i}") for i in range(5)]
    calls = []
    with pytest.raises(Cancelled):
        store.extend(tiles, progress=lambda d, t, m: calls.append((d, t)), should_stop=lambda: len(calls) >= 2)
    assert calls == [(1, 5), (2, 5)]
    assert DatasetStore.open(tmp_path / "d.zarr").names == ["t0", "t1"]


def test_corrections_add_a_mask_version_and_keep_the_original(tmp_path, uhcs):
    path = tmp_path / "d.zarr"
    store = DatasetStore.create(path, PhaseSchema.bundled("uhcs"))
    store.append(synthetic_tile(uhcs[0], 3))
    original = store[0].mask.copy()
    corrected = original.copy()
    corrected[:20, :10] = 3  # 200 pixels painted as Widmanstaetten
    changed = int(np.count_nonzero(corrected != original))
    store.replace_mask(0, corrected)
    store.set_status(0, "accepted")

    reopened = DatasetStore.open(path)
    assert np.array_equal(reopened[0].mask, corrected)
    assert np.array_equal(reopened.mask(0, version="mask"), original)
    assert reopened.mask_versions(0) == ["mask", "mask_v1"]
    provenance = reopened.provenance(0)
    assert provenance.origin == "corrected" and provenance.changed_pixels == changed
    assert provenance.extra["original_origin"] == "synthetic" and provenance.seed == 3
    np.testing.assert_allclose(reopened.fractions()[0], mask_fractions(corrected, reopened.schema))
    assert reopened.status(0) == "accepted"

    with pytest.raises(ValueError, match="status must be one of"):
        DatasetStore.open(path, mode="a").set_status(0, "great")


def test_splits_can_be_redefined(tmp_path, uhcs):
    store = DatasetStore.create(tmp_path / "d.zarr", PhaseSchema.bundled("uhcs"))
    store.extend(uhcs, split="train")
    store.set_split("val", [1, 1])
    store.set_split("train", [0])
    assert DatasetStore.open(tmp_path / "d.zarr").splits == {"train": [0], "val": [1]}
    with pytest.raises(IndexError, match="out of range"):
        store.set_split("test", [5])


def _export_store(tmp_path, uhcs) -> DatasetStore:
    store = DatasetStore.create(tmp_path / "d.zarr", PhaseSchema.bundled("uhcs"))
    store.append(uhcs[0], split="train", status="accepted")
    store.append(synthetic_tile(uhcs[1], 5), split="train")
    store.append(synthetic_tile(uhcs[0], 6), status="rejected")
    return store


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_exported_csv_never_holds_a_spreadsheet_formula(tmp_path, uhcs):
    store = DatasetStore.create(tmp_path / "d.zarr", PhaseSchema.bundled("uhcs"))
    names = ['=HYPERLINK("http://evil.example","click")', "+1+1", "@SUM(A1)", "-2+3", "plain"]
    for name in names:
        store.append(uhcs[0].crop((0, 0, 32, 32), name=name))
    rows = _read_csv(export_folder(store, tmp_path / "export") / "samples.csv")
    assert [r["name"] for r in rows] == ["'" + n for n in names[:4]] + ["plain"]
    assert all(float(r["fraction_ferrite matrix"]) >= 0 for r in rows)


def test_export_writes_images_masks_and_a_csv(tmp_path, uhcs):
    store = _export_store(tmp_path, uhcs)
    out = export_folder(store, tmp_path / "export")
    rows = _read_csv(out / "samples.csv")
    assert [r["name"] for r in rows] == ["uhcs1648", "synthetic 5"]  # the rejected sample is left out
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000_uhcs1648.png", "000001_synthetic_5.png"]
    assert rows[1]["origin"] == "synthetic" and rows[1]["split"] == "train" and rows[0]["status"] == "accepted"
    assert float(rows[1]["property_anneal_temperature"]) == 805.0 and rows[0]["property_anneal_temperature"] == ""
    assert json.loads(rows[1]["provenance"])["condition"] == {"fractions": [0.7, 0.1, 0.15, 0.05]}
    fractions = [float(rows[0][f"fraction_{p}"]) for p in store.schema.names]
    np.testing.assert_allclose(fractions, mask_fractions(uhcs[0].mask, store.schema), atol=1e-6)

    mask_png = Image.open(out / rows[0]["mask"])
    assert mask_png.mode == "P"
    assert np.array_equal(np.array(mask_png), uhcs[0].mask)
    assert np.array(mask_png.getpalette()[:12]).reshape(4, 3).tolist() == store.schema.colors.tolist()
    image_png = np.array(Image.open(out / rows[0]["image"]))
    assert np.array_equal(image_png, np.round(uhcs[0].image * 255).astype(np.uint8))
    assert PhaseSchema.load(out / "schema.json") == store.schema
    assert (out / "splits" / "train.txt").read_text().split() == ["000000_uhcs1648.png", "000001_synthetic_5.png"]

    tiff_out = export_folder(store, tmp_path / "tiff", image_format="tiff", include_rejected=True)
    tiff_rows = _read_csv(tiff_out / "samples.csv")
    assert len(tiff_rows) == 3
    assert np.array_equal(tifffile.imread(tiff_out / tiff_rows[1]["image"]), store[1].image)


def test_an_interrupted_export_reruns_without_duplicates(tmp_path, uhcs):
    store = _export_store(tmp_path, uhcs)
    out = tmp_path / "export"
    with pytest.raises(Cancelled):
        export_folder(store, out, should_stop=iter([False, True]).__next__)
    assert not (out / "samples.csv").exists()  # unfinished: no CSV
    assert len(list((out / "images").iterdir())) == 1

    export_folder(store, out)  # the re-run needs no overwrite and completes it
    assert len(_read_csv(out / "samples.csv")) == 2
    assert len(list((out / "images").iterdir())) == 2 and len(list((out / "masks").iterdir())) == 2

    with pytest.raises(FileExistsError, match="replace it with --overwrite"):
        export_folder(store, out)
    writable = DatasetStore.open(store.path, mode="a")
    writable.set_status(1, "rejected")
    export_folder(writable, out, overwrite=True)
    assert [r["name"] for r in _read_csv(out / "samples.csv")] == ["uhcs1648"]
    assert [p.name for p in (out / "images").iterdir()] == ["000000_uhcs1648.png"]  # stale file removed

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.docx").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="thesis.docx"):
        export_folder(store, tmp_path / "notes", overwrite=True)


def test_every_csv_writer_neutralises_formulas_in_names_and_column_names(tmp_path):
    """Issue 19 item 12: every CSV goes through write_csv, so phase names (column names) and sample or
    model names a spreadsheet would run as formulas are written as text."""
    from napari_microsynth.core.folder_export import write_csv
    from napari_microsynth.engines.reports import write_fraction_csv

    schema = PhaseSchema("evil", (Phase(0, "=HYPERLINK(\"x\")", (0, 0, 0)), Phase(1, "b", (255, 255, 255))))
    write_fraction_csv(tmp_path / "f.csv", ["@SUM(A1)"], np.array([[0.25, 0.75]]), schema)
    assert (tmp_path / "f.csv").read_text().splitlines() == ["name,\"'=HYPERLINK(\"\"x\"\")\",b", "'@SUM(A1),0.25,0.75"]
    csv_path = write_csv(tmp_path / "runs.csv", [{"model": "+cmd|' /C calc'!A0", "ratio": "none", "miou": -0.5}])
    assert _read_csv(csv_path) == [{"model": "'+cmd|' /C calc'!A0", "ratio": "none", "miou": "-0.5"}]


def test_a_killed_training_set_export_is_reported_unfinished_until_it_is_rerun(tmp_path, uhcs, capsys):
    """Issue 19 item 11: a partly written export passed ``describe`` with exit 0."""
    from napari_microsynth.core.datasets import load_split
    from napari_microsynth.engines.training_set import export_training_set

    def killed(done, total, message):
        if done == 2:
            raise KeyboardInterrupt  # as abrupt as a kill: no code of the export runs after it

    with pytest.raises(KeyboardInterrupt):
        export_training_set(tmp_path / "set", [uhcs[0]], [uhcs[1]], ratio=0, tile=256, progress=killed)
    assert main(["-q", "describe", str(tmp_path / "set")]) == 1
    out = capsys.readouterr().out
    assert "samples      2 (training set" in out
    assert "UNFINISHED   training-set export of 3 samples" in out and "again finishes it" in out
    with pytest.raises(ValueError, match="is unfinished"):
        load_split(tmp_path / "set" / "dataset.zarr", "train")
    export_training_set(tmp_path / "set", [uhcs[0]], [uhcs[1]], ratio=0, tile=256)
    assert main(["-q", "describe", str(tmp_path / "set" / "dataset.zarr")]) == 0
    assert "UNFINISHED" not in capsys.readouterr().out
    assert len(load_split(tmp_path / "set" / "dataset.zarr", "train")) == 2


def test_fractions_of_a_store_come_from_the_stored_counts(tmp_path, uhcs, capsys):
    """Issue 19 item 13: ``fractions`` reads no image or mask of a store (here every chunk is garbage)."""
    path = _store_with_two(tmp_path, uhcs)
    for chunk in path.glob("samples/*/*/c/*/*"):
        chunk.write_bytes(b"garbage")
    assert main(["-q", "fractions", str(path), "--csv", str(tmp_path / "f.csv")]) == 0
    rows = _read_csv(tmp_path / "f.csv")
    assert [r["name"] for r in rows] == ["uhcs1648", "uhcs0006"]
    expected = mask_fractions(uhcs[1].mask, uhcs[1].schema)
    assert np.allclose([float(rows[1][n]) for n in uhcs[1].schema.names], expected, atol=1e-6)
