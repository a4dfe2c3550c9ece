"""The `microsynth` command on the real data: what a user typing it would see."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_microsynth.cli import EXIT_BAD_INPUT, main
from napari_microsynth.core.store import DatasetStore


def test_import_fractions_tile_export_on_uhcs(shared_data, tmp_path, capsys):
    store = tmp_path / "uhcs.zarr"
    assert main(["-q", "import", str(shared_data / "uhcs"), str(store)]) == 0
    opened = DatasetStore.open(store)
    assert len(opened) == 24
    assert {name: len(ix) for name, ix in opened.splits.items()} == {"train": 16, "val": 4, "test": 4}
    capsys.readouterr()

    hist = tmp_path / "hist.png"
    table = tmp_path / "fractions.csv"
    assert main(["-q", "fractions", str(store), "--split", "test", "--csv", str(table), "--histogram", str(hist)]) == 0
    printed = capsys.readouterr().out
    assert "uhcs1648" in printed and "mean" in printed
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 4
    row = next(r for r in rows if r["name"] == "uhcs1648")
    truth = np.bincount(np.load(shared_data / "uhcs" / "masks" / "uhcs1648.npy").ravel(), minlength=4) / (484 * 645)
    np.testing.assert_allclose([float(row[k]) for k in opened.schema.names], truth, atol=1e-9)
    assert hist.stat().st_size > 1000

    tiles = tmp_path / "tiles.zarr"
    assert main(["-q", "tile", str(store), str(tiles), "--size", "256"]) == 0
    assert len(DatasetStore.open(tiles)) == 24 * 2  # 645x484 holds two 256x256 tiles

    out = tmp_path / "export"
    assert main(["-q", "export-folders", str(store), "--out", str(out)]) == 0
    assert len(list((out / "images").iterdir())) == 24
    assert (out / "samples.csv").is_file()


def test_export_builds_a_training_set_from_the_uhcs_folder_and_a_synthetic_store(shared_data, tmp_path, capsys):
    from napari_microsynth.core.datasets import load_dataset
    from test_training_set import make_synthetic_pairs, write_synthetic_store

    sources = load_dataset(shared_data / "uhcs", split="val")[:2]
    pairs = make_synthetic_pairs(sources, 0.1941747572815534, 256)  # the median train pixel size
    write_synthetic_store(tmp_path / "pairs.zarr", pairs)
    argv = ["-q", "export", str(shared_data / "uhcs"), "--synthetic", str(tmp_path / "pairs.zarr"), "--ratio", "0.125",
            "--tile", "256", "--val-split", "none", "--out", str(tmp_path / "set")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "train  32 real, 3 synthetic, 1 corrected" in printed and "test   4 real" in printed
    store = DatasetStore.open(tmp_path / "set" / "dataset.zarr")
    assert {name: len(ix) for name, ix in store.splits.items()} == {"train": 36, "test": 4}
    assert "**1:0.125**" in (tmp_path / "set" / "README.md").read_text()

    assert main(argv) == EXIT_BAD_INPUT  # a finished export is not replaced without --overwrite
    assert "already holds a finished export" in capsys.readouterr().err
    more = ["-q", "export", str(shared_data / "uhcs"), "--synthetic", str(tmp_path / "pairs.zarr"), "--ratio", "1",
            "--out", str(tmp_path / "more")]
    assert main(more) == EXIT_BAD_INPUT
    assert "needs 32 synthetic pairs, but only 4 are available" in capsys.readouterr().err
    assert main(["-q", "export", str(shared_data / "uhcs"), "--ratio", "2", "--out", str(tmp_path / "x")]) == EXIT_BAD_INPUT
    assert "--synthetic" in capsys.readouterr().err


def test_describe_metaldam_reports_the_inconsistent_metadata_row(shared_data, capsys):
    assert main(["-q", "describe", str(shared_data / "metaldam")]) == 0
    out = capsys.readouterr().out
    assert "42 micrographs" in out and "micrograph27" in out
    assert main(["-q", "describe", "--strict", str(shared_data / "metaldam")]) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["describe", "/no/such/folder"], "no/such/folder"),
        (["import", "{uhcs}", "{tmp}/x.zarr", "--schema", "steel"], "steel"),
        (["import", "{uhcs}", "{tmp}/exists"], "already exists"),
        (["segment", "{uhcs}/images/uhcs1648.tif", "{tmp}/o.png", "--ratio", "0.5,0.5"], "one value per phase"),
    ],
)
def test_bad_input_gives_a_one_line_error_and_status_2(shared_data, tmp_path, capsys, argv, message):
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "keep.txt").write_text("user data")
    argv = [a.format(uhcs=shared_data / "uhcs", tmp=tmp_path) for a in argv]
    assert main(["-q", *argv]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert (tmp_path / "exists" / "keep.txt").read_text() == "user data"


def test_segment_with_the_bundled_model_writes_a_phase_map(shared_data, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "phases.png"
    assert main(["-q", "segment", str(shared_data / "uhcs" / "images" / "uhcs1648.tif"), str(out), "--threads", "2"]) == 0
    labels = np.asarray(Image.open(out))
    assert labels.shape == (484, 645)
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and len(np.unique(labels)) >= 3
    assert "achieved" in capsys.readouterr().out
