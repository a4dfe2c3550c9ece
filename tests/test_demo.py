"""The README's main job on the bundled sample data."""
from __future__ import annotations

import pytest

from napari_microsynth.core.store import DatasetStore
from napari_microsynth.engines.demo import run_demo


def test_demo_segments_stores_and_exports(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(out)
    assert "uhcs1648" in summary and "mIoU" in summary
    for name in ("fractions.csv", "tile_fraction_histograms.png", "phases_no_ratio.png", "phases_true_ratio.png"):
        assert (out / name).is_file(), name
    store = DatasetStore.open(out / "sample.zarr")
    origins = [store.provenance(i).origin for i in range(len(store))]
    assert origins.count("predicted") == 1 and origins.count("real") == 3
    assert (out / "export" / "samples.csv").is_file()
    with pytest.raises(FileExistsError):
        run_demo(out)
    run_demo(out, overwrite=True)


def test_demo_refuses_to_delete_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a demo output"):
        run_demo(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
