"""Grain statistics: per-grain measures and the ASTM E112 grain-size number on tessellations whose answer
is known by hand, and on the real pure-iron grain maps (Fast-FineCut) as instance maps and as boundary
masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from napari_microsynth.core.grains import (
    astm_e112,
    g_from_grains_per_mm2,
    grain_table,
    grains_from_boundary_probability,
    labels_from_boundaries,
    read_grain_map,
    summarise,
)
from napari_microsynth.core.io import instance_boundaries, read_instance_map


def _square_grid(cell: int, cells: int, offset: int) -> np.ndarray:
    """A grid of ``cell`` px square grains, the field shifted by ``offset`` px so its edges cut grains."""
    grid = np.arange(1, (cells + 1) ** 2 + 1).reshape(cells + 1, cells + 1)
    labels = np.repeat(np.repeat(grid, cell, 0), cell, 1)
    return labels[offset:offset + cells * cell, offset:offset + cells * cell]


def _hexagonal(spacing: float, size: int) -> np.ndarray:
    """The Voronoi cells of a hexagonal lattice (regular hexagons of area sqrt(3)/2 spacing^2)."""
    rows = np.arange(-2, size / (spacing * math.sqrt(3) / 2) + 3)
    cols = np.arange(-2, size / spacing + 3)
    points = np.array([(r * spacing * math.sqrt(3) / 2, c * spacing + (r % 2) * spacing / 2)
                       for r in rows for c in cols])
    centres = np.stack(np.mgrid[0:size, 0:size], -1).reshape(-1, 2) + 0.5
    return (cKDTree(points).query(centres)[1].reshape(size, size) + 1).astype(np.int32)


def test_e112_on_square_grains_matches_the_hand_count():
    """20 um squares (pixel 1 um): N_A = 1 / 0.0004 mm^2 = 2500 per mm^2, so G = 3.321928 log10(2500) - 2.954
    = 8.334. With the field edges cutting through grains, the count is 10 x 10 exactly: 81 inside, 36 cut
    by an edge (1/2 each), 4 at the corners (1/4 each); counting the corners as 1/2 would give 101."""
    labels = _square_grid(20, 10, offset=10)
    result = astm_e112(labels, pixel_size_um=1.0)
    assert (result.inside, result.intercepted, result.corners) == (81, 36, 4)
    assert result.equivalent_grains == 100.0
    assert result.grains_per_mm2 == pytest.approx(2500.0)
    assert result.g == pytest.approx(8.334, abs=1e-3)
    assert result.g_mean_area == pytest.approx(-3.3223 * math.log10(0.0004) - 2.955)
    # E112's defining points: G = 1 at 15.50 grains per mm^2, each step of G doubles N_A
    assert g_from_grains_per_mm2(15.50) == pytest.approx(1.0, abs=1e-3)
    assert g_from_grains_per_mm2(31.0) - g_from_grains_per_mm2(15.5) == pytest.approx(1.0)
    # without a pixel size there is no E112 number, only grains per square pixel
    bare = astm_e112(labels)
    assert bare.g is None and bare.grains_per_px == pytest.approx(1 / 400)


def test_hexagonal_grains_measure_as_regular_hexagons():
    spacing = 40.0
    cell_area = math.sqrt(3) / 2 * spacing**2  # 1385.6 px^2
    labels = _hexagonal(spacing, 480)
    table = grain_table(labels, pixel_size_um=0.5)
    whole = ~table["touches_border"]
    assert table["area_px"][whole].mean() == pytest.approx(cell_area, rel=0.01)
    assert table["area_um2"][whole].mean() == pytest.approx(cell_area * 0.25, rel=0.01)
    assert table["equivalent_diameter_px"][whole].mean() == pytest.approx(math.sqrt(4 * cell_area / math.pi), rel=0.01)
    assert np.all(np.abs(table["aspect_ratio"][whole] - 1) < 0.05)
    # a regular hexagon: 4 pi A / P^2 = pi / (2 sqrt 3) = 0.907 (the digitised perimeter reads a few % off)
    assert table["circularity"][whole].mean() == pytest.approx(math.pi / (2 * math.sqrt(3)), rel=0.06)
    # the planimetric count is unbiased over field placements (one placement is off by up to ~3 %)
    n_a = 1 / (cell_area * 0.25e-6)
    larger = _hexagonal(spacing, 640)
    fields = [larger[r:r + 480, c:c + 480] for r, c in ((0, 0), (17, 93), (40, 5), (63, 121), (88, 150), (101, 31),
                                                        (129, 77), (150, 160))]
    counts = [astm_e112(field, pixel_size_um=0.5).grains_per_mm2 for field in fields]
    assert np.mean(counts) == pytest.approx(n_a, rel=0.015)
    assert astm_e112(fields[3], pixel_size_um=0.5).g == pytest.approx(g_from_grains_per_mm2(n_a), abs=0.06)


def test_shape_measures_of_a_disc_a_square_and_a_rectangle():
    rows, cols = np.mgrid[0:100, 0:200]
    labels = np.zeros((100, 200), np.int32)
    labels[(rows - 50) ** 2 + (cols - 50) ** 2 < 30**2] = 1
    labels[30:70, 110:150] = 2
    labels[45:55, 155:195] = 3  # 40 x 10
    table = grain_table(labels)
    circularity = dict(zip(table["label"].tolist(), table["circularity"].tolist()))
    aspect = dict(zip(table["label"].tolist(), table["aspect_ratio"].tolist()))
    assert 0.9 < circularity[1] <= 1.05 and 0.75 < circularity[2] < 0.86 and circularity[3] < circularity[2]
    assert aspect[1] == pytest.approx(1, abs=0.02) and aspect[3] == pytest.approx(4, rel=0.02)
    assert abs(table["orientation_deg"][2]) == pytest.approx(90, abs=1)  # the rectangle lies along the columns
    assert not table["touches_border"].any()


@pytest.fixture(scope="module")
def iron(shared_data):
    return read_instance_map(shared_data / "fastfinecut_iron" / "masks" / "001.tif")


def test_real_iron_grain_map_statistics(iron):
    table = grain_table(iron.labels, pixel_size_um=1.0)
    summary = summarise(table, astm_e112(iron.labels, pixel_size_um=1.0), pixel_size_um=1.0)
    assert summary["grains"] == iron.labels.max() == 189
    assert 120 < summary["whole_grains"] < 189
    assert 1500 < summary["mean_area_px"] < 4500 and summary["std_area_px"] > 0
    assert 1 < summary["mean_aspect_ratio"] < 3 and 0.5 < summary["mean_circularity"] < 1.0
    # 800 x 800 px at 1 um: about 180 grains in 0.64 mm^2 -> N_A near 280 per mm^2, G near 5.2
    assert 200 < summary["e112_grains_per_mm2"] < 330
    assert summary["e112_g"] == pytest.approx(g_from_grains_per_mm2(summary["e112_grains_per_mm2"]))
    assert 4.7 < summary["e112_g"] < 5.4


def test_a_boundary_mask_gives_the_grains_of_its_instance_map(iron, tmp_path):
    """The hand map drawn as a grain/boundary mask (2 px boundaries) and read back: the same grains, with
    the boundary pixels given back to them, and the same E112 number."""
    boundary = instance_boundaries(iron.labels)
    labels = labels_from_boundaries(boundary)
    # 189 colours, 192 connected regions (three colours are painted in two pieces each)
    assert labels.min() >= 1 and 189 <= labels.max() <= 193
    original = astm_e112(iron.labels, pixel_size_um=1.0)
    again = astm_e112(labels, pixel_size_um=1.0)
    assert again.g == pytest.approx(original.g, abs=0.05)
    interiors = labels_from_boundaries(boundary, fill=False)
    assert (interiors == 0).sum() == boundary.sum()
    # files: the colour map, a 0/255 boundary PNG and a .npy label image read to the same grains
    Image.fromarray(np.where(boundary, 255, 0).astype(np.uint8)).save(tmp_path / "boundary.png")
    np.save(tmp_path / "labels.npy", iron.labels)
    assert np.array_equal(read_grain_map(tmp_path / "boundary.png"), labels)
    assert np.array_equal(read_grain_map(tmp_path / "labels.npy"), iron.labels)
    with pytest.raises(FileNotFoundError):
        read_grain_map(tmp_path / "missing.png")


def test_small_specks_of_a_predicted_boundary_mask_can_be_dropped():
    boundary = np.zeros((60, 60), bool)
    boundary[:, 30:32] = True
    boundary[10:13, 10:13] = True
    boundary[11, 11] = False  # a 1 px "grain" inside a speck of boundary
    assert labels_from_boundaries(boundary).max() == 3
    assert labels_from_boundaries(boundary, min_area=5).max() == 2


# ---------------------------------------------------------------- the engine and the command


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from napari_microsynth.core.microstructure import GrainGrowthSettings
    from napari_microsynth.engines.grain_growth import simulate_structures

    out = tmp_path_factory.mktemp("sim")
    simulate_structures(out, GrainGrowthSettings(grains=12, size=48, steps=40, snapshot_every=20), 2, seed=0,
                        device="cpu")
    return out


def test_grain_statistics_of_simulated_and_real_maps_side_by_side(simulated, shared_data, tmp_path):
    import csv

    from napari_microsynth.engines.grain_growth import grain_statistics, load_structure

    masks = shared_data / "fastfinecut_iron" / "masks"
    report = grain_statistics([simulated, masks / "001.tif"], tmp_path / "stats", pixel_size_um=0.5)
    names = {p.name for p in report.files}
    assert names == {"grains.csv", "summary.csv", "size_distribution.png", "timeseries.csv", "growth.png"}
    assert all(p.stat().st_size > 500 for p in report.files)
    grains = list(csv.DictReader((tmp_path / "stats" / "grains.csv").open()))
    sim_maps = [load_structure(p) for p in sorted(simulated.glob("structure_*.npz"))]
    iron = read_instance_map(masks / "001.tif").labels
    assert len(grains) == sum(int(s.instances.max()) for s in sim_maps) + int(iron.max())
    summary = {(r["group"], r["source"]): r for r in csv.DictReader((tmp_path / "stats" / "summary.csv").open())}
    assert float(summary[("001", "001.tif")]["e112_g"]) == pytest.approx(astm_e112(iron, 0.5).g, abs=1e-4)
    pooled = summary[(simulated.name, "(all)")]
    assert int(pooled["maps"]) == 2 and int(pooled["grains"]) == sum(int(s.instances.max()) for s in sim_maps)
    # the time series: every snapshot of every structure, whole (periodic) grains, mean area = field / grains
    series = list(csv.DictReader((tmp_path / "stats" / "timeseries.csv").open()))
    assert [(r["source"], int(r["step"])) for r in series] == [
        (f"structure_0000{i}.npz", step) for i in range(2) for step in (0, 20, 40)]
    for row in series:
        assert float(row["mean_area_px"]) == pytest.approx(48 * 48 / int(row["grains"]))
    text = report.as_text()
    assert "E112 G" in text and "001: 1 maps, 189 grains" in text


def test_grain_stats_command(simulated, shared_data, tmp_path, capsys):
    from napari_microsynth.cli import EXIT_BAD_INPUT, main

    folder = shared_data / "fastfinecut_iron"
    assert main(["-q", "grain-stats", str(folder), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "fastfinecut_iron:" in out and "E112 G: give --pixel-size" in out
    assert not (tmp_path / "a" / "timeseries.csv").exists()
    assert main(["-q", "grain-stats", str(simulated), "--pixel-size", "2", "--out", str(tmp_path / "b")]) == 0
    assert "um^2" in capsys.readouterr().out and (tmp_path / "b" / "growth.png").is_file()
    assert main(["grain-stats", str(tmp_path / "nothing"), "--out", str(tmp_path / "c")]) == EXIT_BAD_INPUT
    assert "no such file or folder" in capsys.readouterr().err


def test_grain_stats_of_a_store_measures_its_boundary_masks_and_leaves_rejected_samples_out(iron, tmp_path):
    """Generated grain pairs live in a dataset store: grain-stats reads their grain/boundary masks there."""
    import csv

    from napari_microsynth.core.sample import Sample
    from napari_microsynth.core.schema import PhaseSchema
    from napari_microsynth.core.store import DatasetStore
    from napari_microsynth.engines.grain_growth import grain_statistics

    schema = PhaseSchema.bundled("grains")
    boundary = instance_boundaries(iron.labels)
    mask = np.where(boundary, schema.names.index("boundary"), schema.names.index("grain"))
    with DatasetStore.create(tmp_path / "pairs.zarr", schema) as store:
        for name, part in (("whole", np.s_[:, :]), ("half", np.s_[:400, :])):
            store.append(Sample(np.zeros(mask[part].shape, np.float32), schema, mask=mask[part], name=name))
        store.append(Sample(np.zeros((64, 64), np.float32), schema, mask=np.zeros((64, 64), np.int64), name="bad"))
        store.set_status(2, "rejected")

    report = grain_statistics([tmp_path / "pairs.zarr"], tmp_path / "stats", pixel_size_um=1.0)
    rows = {r["source"]: r for r in csv.DictReader((tmp_path / "stats" / "summary.csv").open())}
    assert set(rows) == {"(all)", "whole", "half"}  # the rejected sample is not measured
    expected = astm_e112(labels_from_boundaries(boundary), pixel_size_um=1.0)
    assert float(rows["whole"]["e112_g"]) == pytest.approx(expected.g, abs=1e-4)
    assert int(rows["whole"]["grains"]) == labels_from_boundaries(boundary).max()
    assert int(rows["(all)"]["maps"]) == 2 and report.groups[0]["group"] == "pairs.zarr"


def test_split_grains_close_gaps_in_predicted_boundaries_that_merge_grains(iron):
    """A predicted boundary map with gaps (as a U-Net draws them) merges grains into their neighbours when its
    interiors are counted; the watershed split finds the hand map's grain count again (the hand map reduced 2x,
    the sim-to-real experiment's scale)."""
    from napari_microsynth.core.microstructure import connected_instances

    labels = connected_instances(iron.labels[1::2, 1::2])
    boundary = instance_boundaries(labels)
    gappy = boundary.copy()
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(boundary)
    for k in rng.choice(rows.size, 200, replace=False):  # 200 gaps of 3x3 px punched into the boundaries
        gappy[max(rows[k] - 1, 0):rows[k] + 2, max(cols[k] - 1, 0):cols[k] + 2] = False
    probability = np.where(gappy, 0.9, 0.1)
    hand = astm_e112(labels).equivalent_grains
    merged = astm_e112(labels_from_boundaries(gappy, min_area=16)).equivalent_grains
    split = astm_e112(grains_from_boundary_probability(probability, marker_depth=3.0)).equivalent_grains
    assert merged < 0.3 * hand  # the gaps merge most grains
    assert abs(split - hand) < 0.1 * hand
    # a shallower marker splits irregular grains more
    assert grains_from_boundary_probability(probability, 1.0).max() > grains_from_boundary_probability(probability, 3.0).max()
    with pytest.raises(ValueError, match="marker depth must be positive"):
        grains_from_boundary_probability(probability, 0.0)
