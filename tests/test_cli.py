"""The `microsynth` command on the real data: what a user typing it would see."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_microsynth.cli import COMMANDS, EXIT_BAD_INPUT, main
from napari_microsynth.core.datasets import available_splits, load_dataset, read_split
from napari_microsynth.core.io import read_mask
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore

UHCS = PhaseSchema.bundled("uhcs")


def test_import_fractions_tile_export_on_uhcs(shared_data, tmp_path, capsys):
    folder, store = shared_data / "uhcs", tmp_path / "uhcs.zarr"
    n = len(list((folder / "images").glob("*.tif")))  # 24, or 10 in the bundled fixtures
    splits = {name: len(read_split(folder, name)) for name in available_splits(folder)}  # incl. the CV folds
    assert main(["-q", "import", str(folder), str(store)]) == 0
    opened = DatasetStore.open(store)
    assert len(opened) == n
    assert {name: len(ix) for name, ix in opened.splits.items()} == splits
    capsys.readouterr()

    hist = tmp_path / "hist.png"
    table = tmp_path / "fractions.csv"
    assert main(["-q", "fractions", str(store), "--split", "test", "--csv", str(table), "--histogram", str(hist)]) == 0
    printed = capsys.readouterr().out
    assert "uhcs1648" in printed and "mean" in printed and "name (area %)" in printed
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0]) == ["name", *opened.schema.names]  # the columns the table shows
    assert len(rows) == splits["test"]
    row = next(r for r in rows if r["name"] == "uhcs1648")
    truth = np.bincount(np.load(shared_data / "uhcs" / "masks" / "uhcs1648.npy").ravel(), minlength=4) / (484 * 645)
    np.testing.assert_allclose([float(row[k]) for k in opened.schema.names], truth, atol=1e-9)
    assert hist.stat().st_size > 1000

    tiles = tmp_path / "tiles.zarr"
    assert main(["-q", "tile", str(store), str(tiles), "--size", "256"]) == 0
    assert len(DatasetStore.open(tiles)) == n * 2  # 645x484 holds two 256x256 tiles
    assert {name: len(ix) for name, ix in DatasetStore.open(tiles).splits.items()} == {  # every split kept
        name: 2 * count for name, count in splits.items()}

    out = tmp_path / "export"
    assert main(["-q", "export-folders", str(store), "--out", str(out)]) == 0
    assert len(list((out / "images").iterdir())) == n
    assert (out / "samples.csv").is_file()


def test_export_builds_a_training_set_from_the_uhcs_folder_and_a_synthetic_store(shared_data, tmp_path, capsys):
    from helpers import make_synthetic_pairs, write_synthetic_store

    folder = shared_data / "uhcs"
    sources = load_dataset(folder, split="train")[:2]  # what a generator trained on them would make
    pairs = make_synthetic_pairs(sources, 0.1941747572815534, 256)  # the median train pixel size
    write_synthetic_store(tmp_path / "pairs.zarr", pairs)  # 4 accepted pairs, one of them corrected
    n_real, n_test = 2 * len(read_split(folder, "train")), len(read_split(folder, "test"))  # 32 and 4 on all data
    ratio = 4 / n_real  # 1:0.125 on all data
    argv = ["-q", "export", str(folder), "--synthetic", str(tmp_path / "pairs.zarr"), "--ratio", str(ratio),
            "--tile", "256", "--val-split", "none", "--out", str(tmp_path / "set")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"train  {n_real} real, 3 synthetic, 1 corrected" in printed and f"test   {n_test} real" in printed
    store = DatasetStore.open(tmp_path / "set" / "dataset.zarr")
    assert {name: len(ix) for name, ix in store.splits.items()} == {"train": n_real + 4, "test": n_test}
    assert f"**1:{ratio:g}**" in (tmp_path / "set" / "README.md").read_text()

    assert main(argv) == EXIT_BAD_INPUT  # a finished export is not replaced without --overwrite
    assert "already holds a finished export" in capsys.readouterr().err
    more = ["-q", "export", str(folder), "--synthetic", str(tmp_path / "pairs.zarr"), "--ratio", "1",
            "--out", str(tmp_path / "more")]
    assert main(more) == EXIT_BAD_INPUT
    assert f"needs {n_real} synthetic pairs, but only 4 are available" in capsys.readouterr().err
    assert main(["-q", "export", str(folder), "--ratio", "2", "--out", str(tmp_path / "x")]) == EXIT_BAD_INPUT
    assert "--synthetic" in capsys.readouterr().err


@pytest.mark.real_data("metaldam")
def test_describe_metaldam_reports_the_inconsistent_metadata_row(shared_data, capsys):
    assert main(["-q", "describe", str(shared_data / "metaldam")]) == 0
    out = capsys.readouterr().out
    assert "42 micrographs" in out and "micrograph27" in out
    assert main(["-q", "describe", "--strict", str(shared_data / "metaldam")]) == 1


def test_segment_warns_when_the_micrograph_is_of_another_material(shared_data, tmp_path, capsys):
    """The bundled default model is refused for a dataset of other phases; asked for by name, it runs and
    the micrograph is flagged."""
    iron = sorted((shared_data / "fastfinecut_iron" / "images").iterdir())[0]
    assert main(["-q", "segment", str(iron), str(tmp_path / "phases.png"), "--threads", "2"]) == 2
    error = capsys.readouterr().err
    assert "'grains' dataset" in error and "pass --model" in error and not (tmp_path / "phases.png").exists()
    argv = ["-q", "segment", str(iron), str(tmp_path / "phases.png"), "--threads", "2", "--model", "plm-uhcs-demo"]
    assert main(argv) == 0
    warnings = capsys.readouterr().err
    assert "comes from a grains dataset (grain, boundary)" in warnings and "mean grey level" in warnings
    assert "no --model given" not in warnings


def test_segment_without_a_model_says_loudly_which_one_it_used(shared_data, tmp_path, capsys):
    """A micrograph outside any dataset folder that does not look like UHCS gets the default model and a
    warning naming it."""
    from PIL import Image

    from napari_microsynth.core.io import read_micrograph

    iron = sorted((shared_data / "fastfinecut_iron" / "images").iterdir())[0]  # outside its dataset folder
    image, _ = read_micrograph(iron)
    Image.fromarray((255 * image[:400, :500]).astype(np.uint8)).save(tmp_path / "other alloy.png")
    argv = ["-q", "segment", str(tmp_path / "other alloy.png"), str(tmp_path / "out.png"), "--threads", "2"]
    assert main(argv) == 0
    assert "no --model given, so the bundled plm-uhcs-demo (UHCS steels) segmented" in capsys.readouterr().err


def test_segment_writes_the_phase_map_in_colour_and_an_overlay_with_a_legend(shared_data, tmp_path, capsys):
    """The PNG shows the phases in their colours (not class ids 0..3 as near-black greys); the cropped SEM
    info band and the output size are printed."""
    from PIL import Image

    grey = tifffile.imread(shared_data / "uhcs" / "images" / "uhcs1648.tif")
    band = np.full((40, grey.shape[1]), 255, np.uint8)
    band[0], band[12:25, 30:200:7] = 0, 0  # frame line and "text" of an information band
    Image.fromarray(np.vstack([grey, band])).save(tmp_path / "sem.png")
    out, overlay = tmp_path / "phases.png", tmp_path / "overlay.png"
    argv = ["-q", "segment", str(tmp_path / "sem.png"), str(out), "--overlay", str(overlay), "--threads", "2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "info band: bottom 40 rows cropped, segmenting 484 of 524 rows" in printed
    assert "segments into uhcs phases: ferrite matrix, cementite network" in printed
    assert "warning" not in captured.err  # a UHCS micrograph for the UHCS model
    assert "phase map 645x484 px" in printed and "achieved" in printed

    picture = Image.open(out)
    assert picture.mode == "P" and picture.size == (645, 484)
    labels = read_mask(out, UHCS)  # the pixel values are still the class ids
    assert len(np.unique(labels)) >= 3
    np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), UHCS.colors[labels])

    tinted = np.asarray(Image.open(overlay))
    assert tinted.shape[1] == 645 and tinted.shape[0] > 484  # micrograph on top, legend below
    legend = tinted[484:].reshape(-1, 3)
    assert all((legend == colour).all(axis=1).any() for colour in UHCS.colors)


def test_quiet_is_accepted_after_the_command_too(shared_data, capsys):
    folder = str(shared_data / "uhcs")
    assert main(["describe", folder]) == 0
    assert "reading" in capsys.readouterr().err  # the progress bar
    for argv in (["-q", "describe", folder], ["describe", folder, "-q"], ["describe", "--quiet", folder]):
        assert main(argv) == 0
        assert capsys.readouterr().err == "", argv


def test_describe_gives_image_sizes_as_width_x_height(shared_data, capsys):
    assert main(["-q", "describe", str(shared_data / "uhcs")]) == 0
    out = capsys.readouterr().out
    n = len(list((shared_data / "uhcs" / "images").glob("*.tif")))
    assert f"image sizes: 645x484 px ({n})" in out  # as the demo and image viewers give it


def test_help_texts_print_plain_percent_signs(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "%%" not in capsys.readouterr().out, command
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    assert "50 % overlap" in capsys.readouterr().out
