"""Issue 20 "bring your own alloy": a lab's own folder (overlay RGBA masks named <stem>_mask.tif, a 16-bit
image, names with spaces, an extra split) goes from files to a curated training set with the CLI only."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import OWN_SOURCES, OWN_SPLITS, own_material_folder

from napari_microsynth.cli import EXIT_BAD_INPUT, main
from napari_microsynth.core.curation import fraction_errors, smallest_phase_pixels
from napari_microsynth.core.io import read_mask
from napari_microsynth.core.store import DatasetStore

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
CPU = ["--device", "cpu", "--threads", "1"]
PHASES = ["matrix", "carbide network", "particles"]


def name_the_phases(schema_file) -> None:
    """What the user does with the draft: names the schema and its phases."""
    data = json.loads(schema_file.read_text())
    data["name"] = "alloy-b"
    for phase, name in zip(data["phases"], PHASES):
        phase["name"] = name
    schema_file.write_text(json.dumps(data, indent=2))


def test_own_alloy_from_files_to_training_set_with_the_cli_only(tmp_path, capsys, caplog):
    folder = tmp_path / "alloy B"
    truth = own_material_folder(folder)

    def run(*argv) -> int:
        return main(["-q", *map(str, argv)])

    # without a schema the error says how to get one
    assert run("describe", folder) == EXIT_BAD_INPUT
    assert f"'microsynth describe {folder} --propose-schema'" in capsys.readouterr().err

    # propose a schema: overlays on the grey micrograph, two painted colours, <stem>_mask names, 16-bit colours
    with caplog.at_level(logging.WARNING):
        assert run("describe", folder, "--propose-schema") == 0
    assert not [r for r in caplog.records if r.name == "tifffile"]  # -q: the ImageJ mask's complaint is silenced
    out = capsys.readouterr().out
    assert "16-bit masks: 1" in out and "painted colours over the grey micrograph" in out
    assert "masks.background" in out and "6 with masks" in out  # fields explained; the folder summarised
    draft = json.loads((folder / "schema.json").read_text())
    assert draft["masks"] == {"encoding": "overlay", "background": 0, "tolerance": 0, "pattern": "{stem}_mask"}
    assert [p["color"] for p in draft["phases"][1:]] == [[255, 0, 0], [0, 0, 255]]
    assert set(draft["help"]) >= {"phases", "masks.encoding", "masks.pattern"}
    name_the_phases(folder / "schema.json")

    # describe with the named schema: every mask read, fractions as the painted classes give them
    assert run("describe", folder) == 0
    out = capsys.readouterr().out
    labels = np.concatenate([t.ravel() for t in truth.values()])
    share = np.mean(labels == 1)
    assert f"  1  {'carbide network':<24s} {share:7.2%}" in out and "problems: none" in out
    assert "splits: different_test (1), test (1), train (3), val (1)" in out

    # import: every split kept, the overlays (also the 16-bit one) decoded to the painted classes
    store = tmp_path / "alloy.zarr"
    assert run("import", folder, store) == 0
    assert "split different_test: 1 samples" in capsys.readouterr().out
    imported = DatasetStore.open(store)
    assert {k: [imported.names[i] for i in v] for k, v in imported.splits.items()} == {
        split: [f"alloy B {n:02d}" for n in numbers] for split, numbers in OWN_SPLITS.items()}
    for i, name in enumerate(imported.names):
        np.testing.assert_array_equal(imported.mask(i), truth[name], err_msg=name)
    source = tifffile.imread(ROOT / "tests" / "data" / "uhcs" / "images" / f"{OWN_SOURCES[1]}.tif")[:256, :320]
    np.testing.assert_allclose(imported[imported.names.index("alloy B 02")].image, source / 255, atol=1e-6)  # 16 bits

    # evaluate at a quick setting: baseline and PLM trained, scored on the test split
    evaluation = tmp_path / "evaluation"
    assert run("evaluate", store, "--preset", "tiny", "--tile", "64", "--steps", "3", "--batch-size", "2",
               *CPU, "--out", evaluation) == 0
    assert "PLM RE+SA+FA" in capsys.readouterr().out
    assert (evaluation / "alpha_sweep-test.md").is_file()
    model = evaluation / "seed0" / "baseline" / "model"

    # segment the 16-bit micrograph with the trained model
    phase_map = tmp_path / "map.png"
    assert run("segment", folder / "images" / "alloy B 02.tif", phase_map, "--model", model, *CPU) == 0
    assert "segments into alloy-b phases: matrix, carbide network, particles" in capsys.readouterr().out
    segmented = read_mask(phase_map, imported.schema)
    assert segmented.shape == (256, 320) and segmented.max() <= 2

    # generate: a quick generator of this schema, two runs into one store (the second on fresh seeds)
    generator = tmp_path / "generator"
    assert run("train-generator", "two-stage-gan", store, "--preset", "tiny", "--steps", "2", "--translator-steps",
               "2", "--batch-size", "2", "--translator-batch-size", "2", *CPU, "--out", generator) == 0
    pairs = tmp_path / "pairs.zarr"
    generate = ["generate", generator / "model", pairs, "-n", "4", "--steps", "2", *CPU]
    assert run(*generate, "--fractions", "50,45,5", "--seed", "0") == 0
    assert "note: fractions 50,45,5 sum to 100, not 1: rescaled to matrix 0.5" in capsys.readouterr().out
    assert run(*generate, "--fractions", "50,49.5,0.5", "--seed", "1") == 0
    assert "note: seeds 1..4 are already used" in capsys.readouterr().out
    generated = DatasetStore.open(pairs)
    assert [generated.provenance(i).seed for i in range(8)] == list(range(8)) and len(set(generated.names)) == 8

    # export before curating says why no pair can be used
    export = ["export", store, "--synthetic", pairs, "--ratio", "0.05", "--tile", "64"]
    assert run(*export, "--out", tmp_path / "refused") == EXIT_BAD_INPUT
    assert "but only 0 are available (accepted ones; " in capsys.readouterr().err

    # curate by rule: the pairs with a tiny particle phase rejected, those on target accepted
    assert run("curate", pairs, "--reject-smaller-than", "20", "--accept-within", "2") == 0
    out = capsys.readouterr().out
    smallest, errors = smallest_phase_pixels(generated), fraction_errors(generated)
    rejected = [i for i in range(8) if 0 < smallest[i] < 20]
    accepted = [i for i in range(8) if i not in rejected and errors[i] <= 0.02]
    assert rejected and accepted, (smallest, errors)
    curated = DatasetStore.open(pairs).statuses()
    assert [i for i, s in enumerate(curated) if s == "rejected"] == rejected
    assert [i for i, s in enumerate(curated) if s == "accepted"] == accepted
    assert f"rejected {len(rejected)} pairs with a phase under 20 px" in out

    # export: 60 real 64 px tiles of the training split + the first 3 accepted pairs
    assert run(*export, "--out", tmp_path / "set") == 0
    assert "train  60 real, 3 synthetic" in capsys.readouterr().out
    training_set = DatasetStore.open(tmp_path / "set" / "dataset.zarr")
    synthetic = [training_set.provenance(i).seed for i in training_set.splits["train"]
                 if training_set.provenance(i).is_synthetic]
    assert synthetic == [generated.provenance(i).seed for i in accepted[:3]]
    assert (tmp_path / "set" / "README.md").is_file()


def test_a_folder_where_no_micrograph_has_a_mask_fails_describe_and_import(tmp_path, capsys, caplog):
    folder = tmp_path / "alloy B"
    own_material_folder(folder)
    with caplog.at_level(logging.WARNING):
        assert main(["describe", str(folder), "--propose-schema"]) == 0  # without -q the readers may speak
    assert [r for r in caplog.records if r.name == "tifffile"]
    for mask in (folder / "masks").iterdir():
        mask.rename(mask.with_name(mask.name.replace("_mask", "_phases")))
    capsys.readouterr()
    assert main(["-q", "describe", str(folder)]) == 1  # a problem, not a pass
    assert "no micrograph has a mask in masks/" in capsys.readouterr().out
    assert main(["-q", "import", str(folder), str(tmp_path / "x.zarr")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "masks without a micrograph in images/: alloy B 01_phases" in err and "\"pattern\"" in err
    schema = json.loads((folder / "schema.json").read_text())
    schema["masks"]["pattern"] = "{stem}_phases"  # the schema names the masks
    (folder / "schema.json").write_text(json.dumps(schema))
    assert main(["-q", "import", str(folder), str(tmp_path / "x.zarr")]) == 0
    assert len(DatasetStore.open(tmp_path / "x.zarr")) == 6
