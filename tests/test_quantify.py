"""Batch quantification of a folder of micrographs (``microsynth quantify``)."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from napari_microsynth.cli import main
from napari_microsynth.core.point_count import student_t95
from napari_microsynth.engines.quantify import ROWS_FILE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def folder(shared_data, tmp_path):
    """Three UHCS micrographs (one cropped, its name with a space) and an unreadable file, in a plain folder."""
    source = shared_data / "uhcs" / "images"
    folder = tmp_path / "batch"
    folder.mkdir()
    names = sorted(p.name for p in source.iterdir())[:3]  # present in the fixtures too
    for name in names[:2]:
        shutil.copy(source / name, folder / name)
    grey = np.asarray(Image.open(source / names[2]))
    Image.fromarray(grey[:300, :400]).save(folder / "small field.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_quantify_writes_fractions_summary_and_plot(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-q", "quantify", str(folder), "--out", str(out), "--threads", "2"]) == 0
    printed = capsys.readouterr()
    assert "skipped broken.jpg" in printed.err and "Phase fractions of 3 micrographs" in printed.out
    with open(out / "fractions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["micrograph"] for r in rows] == ["small field.png", *sorted(p.name for p in folder.glob("uhcs*"))]
    phases = [k for k in rows[0] if k.endswith(" %")]
    assert len(phases) == 4
    for row in rows:
        assert sum(float(row[p]) for p in phases) == pytest.approx(100.0, abs=0.01)
    with open(out / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    values = np.array([[float(r[p]) for r in rows] for p in phases])
    for line, per_phase in zip(summary, values):  # mean and t-based CI over the three micrographs
        assert float(line["mean %"]) == pytest.approx(per_phase.mean(), abs=1e-3)
        half = student_t95(2) * per_phase.std(ddof=1) / np.sqrt(3)
        assert float(line["95% CI ±"]) == pytest.approx(half, abs=2e-3)
    assert (out / "fractions.png").stat().st_size > 10_000


def test_quantify_resumes_and_refuses_other_settings(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-q", "quantify", str(folder), "--out", str(out), "--threads", "2"]) == 0
    lines = (out / ROWS_FILE).read_text().splitlines()
    (out / ROWS_FILE).write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # killed while writing row 3
    first = json.loads(lines[0])
    assert main(["-q", "quantify", str(folder), "--out", str(out), "--threads", "2"]) == 0
    again = (out / ROWS_FILE).read_text().splitlines()
    assert len(again) == 4 and json.loads(again[0]) == first and json.loads(again[2]) == json.loads(lines[2])
    capsys.readouterr()
    argv = ["-q", "quantify", str(folder), "--out", str(out), "--ratio", "0.5,0.2,0.2,0.1", "--trust", "1"]
    assert main(argv) == 2
    assert "other settings" in capsys.readouterr().err


def test_a_large_tiff_is_quantified_block_by_block_with_the_same_fractions(shared_data, tmp_path, monkeypatch):
    """With the large-micrograph threshold lowered below a UHCS micrograph, quantify takes the block path
    (a phase map store on disk) and reports the fractions of the whole-image path."""
    from napari_microsynth.core import large_image
    from napari_microsynth.engines.quantify import quantify
    from napari_microsynth.models.segmenter import Segmenter
    from napari_microsynth.resources import resources_dir

    model = Segmenter.load(resources_dir() / "models" / "plm-uhcs-demo")
    micrograph = sorted((shared_data / "uhcs" / "images").iterdir())[0]
    whole = quantify(model, [micrograph], tmp_path / "whole").rows[0]
    monkeypatch.setattr(large_image, "LARGE_PIXELS", 1000)
    blocks = quantify(model, [micrograph], tmp_path / "blocks").rows[0]
    assert (tmp_path / "blocks" / "phase_maps" / f"{micrograph.stem}.zarr").is_dir()
    assert not (tmp_path / "whole" / "phase_maps").exists()
    phases = [k for k in whole if k.endswith(" %")]
    assert (blocks["width"], blocks["height"]) == (whole["width"], whole["height"])
    np.testing.assert_allclose([blocks[k] for k in phases], [whole[k] for k in phases], atol=0.1)
