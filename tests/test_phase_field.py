"""The phase-field grain-growth simulator (paper 003, eq. 1-3): its initial tessellation, its physics
(energy descent, motion by curvature, stability bound), the coloured order parameters against one per
grain, and the outputs a user gets (grain map, instances, 2 px boundaries, time series)."""
from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from napari_microsynth.core.io import instance_boundaries, read_instance_map
from napari_microsynth.core.microstructure import (
    GrainGrowthSettings,
    adjacency_pairs,
    distance_two_colouring,
    hexagonal_spacing,
    periodic_components,
    regularised_seeds,
    voronoi_labels,
)
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.engines.grain_growth import (
    load_structure,
    simulate_structures,
    structure_path,
    structure_seed,
)
from napari_microsynth.models.phase_field import (
    GrainGrowth,
    euler_step,
    free_energy,
    simulate,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _area_cv(labels: np.ndarray) -> float:
    areas = np.bincount(labels.ravel())[1:]
    return float(areas.std() / areas.mean())


def _disc(size: int, radius: float) -> np.ndarray:
    """A round grain 1 of ``radius`` px in the middle of grain 2."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    return np.where((rows - size / 2) ** 2 + (cols - size / 2) ** 2 < radius**2, 1, 2).astype(np.int32)


# ---------------------------------------------------------------- settings and the initial tessellation


def test_settings_refuse_an_unstable_time_step_and_overfull_images():
    assert GrainGrowthSettings().max_stable_dt() == pytest.approx(2 / 13)
    with pytest.raises(ValueError, match="stability bound 0.1538"):
        GrainGrowthSettings(dt=0.2)
    with pytest.raises(ValueError, match="fewer than 16 px per grain"):
        GrainGrowthSettings(grains=100, size=32)
    with pytest.raises(ValueError, match="regularity"):
        GrainGrowthSettings(regularity=0.9)
    assert GrainGrowthSettings(steps=120, snapshot_every=50).snapshot_steps() == [0, 50, 100, 120]
    assert GrainGrowthSettings(steps=120, snapshot_every=0).snapshot_steps() == [120]


def test_regularity_narrows_the_grain_size_spread():
    """Zhu, Thorpe & Windle's regularity: seeds keep alpha x the hexagonal spacing apart, and the cell
    areas spread less the more regular the seeds (Poisson Voronoi: CV about 0.53)."""
    cvs = {}
    for alpha in (0.0, 0.7):
        cv = []
        for seed in range(3):
            points = regularised_seeds(60, 192, 192, alpha, np.random.default_rng(seed))
            d = np.abs(points[:, None] - points[None])
            d = np.sqrt((np.minimum(d, 192 - d) ** 2).sum(-1))[~np.eye(60, dtype=bool)]
            assert d.min() >= alpha * hexagonal_spacing(60, 192, 192)
            labels = voronoi_labels(points, 192, 192)
            assert sorted(np.unique(labels)) == list(range(1, 61))
            cv.append(_area_cv(labels))
        cvs[alpha] = np.mean(cv)
    assert 0.4 < cvs[0.0] < 0.65
    assert cvs[0.7] < 0.25


def test_voronoi_is_periodic_and_the_colouring_keeps_a_grain_between_equal_colours():
    labels = voronoi_labels(regularised_seeds(40, 128, 128, 0.5, np.random.default_rng(4)), 128, 128)
    # every cell is one region on the torus (cells crossing an edge continue on the other side)
    assert periodic_components(labels).max() == 40
    pairs = adjacency_pairs(labels)
    colours = distance_two_colouring(40, pairs)
    assert colours.max() + 1 < 20  # far fewer order parameters than grains
    neighbours = {i: set() for i in range(1, 41)}
    for a, b in pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    for i in range(1, 41):
        near = set(neighbours[i]).union(*(neighbours[j] for j in neighbours[i])) - {i}
        assert all(colours[j - 1] != colours[i - 1] for j in near)


# ---------------------------------------------------------------- physics


def test_energy_falls_at_every_step_and_order_parameters_stay_bounded():
    settings = GrainGrowthSettings(grains=8, size=48, steps=0, snapshot_every=0)
    sim = GrainGrowth(settings, seed=1, device="cpu")
    energies = [free_energy(sim.eta)]
    for _ in range(60):
        sim.advance(1)
        energies.append(free_energy(sim.eta))
    assert np.all(np.diff(energies) < 0)
    assert float(sim.eta.min()) > -1e-3 and float(sim.eta.max()) < 1.0 + 1e-3


def test_time_steps_beyond_the_bound_break_the_energy_descent():
    """The bound the settings enforce (0.154) has a margin: 0.22 already makes the energy rise and 0.25
    overflows, so explicit Euler really is limited here."""
    settings = GrainGrowthSettings(grains=2, size=48, steps=0, snapshot_every=0, order_parameters="per-grain")
    for dt, broken in ((0.1, False), (0.22, True)):
        sim = GrainGrowth(settings, seed=0, device="cpu", initial=_disc(48, 14))
        energies = [free_energy(sim.eta)]
        for _ in range(40):
            euler_step(sim.eta, dt, 1.0, 1.0)
            energies.append(free_energy(sim.eta))
        rises = not np.all(np.diff(energies) <= 0) or not np.isfinite(energies[-1])
        assert rises == broken, dt


def test_a_round_grain_shrinks_at_the_allen_cahn_rate():
    """Motion by curvature, v = L kappa / R, makes a round grain lose area at dA/dt = -2 pi L kappa."""
    settings = GrainGrowthSettings(grains=2, size=64, steps=0, snapshot_every=0, order_parameters="per-grain")
    sim = GrainGrowth(settings, seed=0, device="cpu", initial=_disc(64, 20))
    times, areas = [], []
    for _ in range(8):
        sim.advance(50)
        times.append(sim.step_count * settings.dt)
        areas.append(int((sim.track() == 1).sum()))
    rate = np.polyfit(times, areas, 1)[0]
    assert rate == pytest.approx(-2 * np.pi, rel=0.08)


def test_coloured_order_parameters_give_the_same_structure_as_one_per_grain():
    common = {"grains": 30, "size": 96, "steps": 200, "snapshot_every": 100, "regularity": 0.3}
    coloured = simulate(GrainGrowthSettings(**common), seed=5, device="cpu")
    per_grain = simulate(GrainGrowthSettings(**common, order_parameters="per-grain"), seed=5, device="cpu")
    assert coloured.info["fields_initial"] < 18 and per_grain.info["fields_initial"] == 30
    assert np.mean(coloured.grains == per_grain.grains) > 0.999
    assert np.abs(coloured.phi - per_grain.phi).max() < 1e-3  # eq. 3 images agree too
    assert coloured.info["coalescences"] == 0


def test_grains_of_one_order_parameter_brought_together_are_kept_apart():
    """Stripes A | X | B | C on the torus with A and B forced onto one order parameter: the thin grain X
    vanishes, so A and B meet. The simulator moves B to a free order parameter first and A and B stay
    two grains; without the move they would merge into one (counted as a coalescence)."""
    columns = np.arange(48)
    stripes = np.select([columns < 20, columns < 23, columns < 43], [1, 2, 3], 4)
    initial = np.broadcast_to(stripes, (48, 48)).astype(np.int32)
    settings = GrainGrowthSettings(grains=4, size=48, steps=300, snapshot_every=100)
    results = {}
    for separate in (True, False):
        sim = GrainGrowth(settings, seed=0, device="cpu", initial=initial)
        a, b = sim.field_of[1], sim.field_of[3]
        sim.eta[a] += sim.eta[b]
        sim.eta[b] = 0
        sim.field_of[3] = a
        if not separate:
            sim._separate_same_field_grains = lambda *args: None
        results[separate] = sim.run()
    kept = results[True]
    assert kept.info["remaps"] >= 1 and kept.info["coalescences"] == 0
    assert 2 not in kept.grains and {1, 3} <= set(np.unique(kept.grains))
    assert results[False].info["coalescences"] >= 1 and 3 not in results[False].grains


# ---------------------------------------------------------------- what a user gets


@pytest.fixture(scope="module")
def grown():
    settings = GrainGrowthSettings(grains=40, size=96, steps=600, snapshot_every=200, regularity=0.0)
    return simulate(settings, seed=2, device="cpu")


def test_outputs_are_a_grain_map_instances_and_boundaries_drawn_like_the_real_masks(grown, shared_data):
    assert grown.grains.shape == grown.instances.shape == grown.boundary.shape == grown.phi.shape == (96, 96)
    # instances: connected pieces of the grain map (a grain cut by the image edge gives several)
    assert grown.instances.max() >= len(np.unique(grown.grains))
    for k in range(1, grown.instances.max() + 1):
        assert len(np.unique(grown.grains[grown.instances == k])) == 1
    # boundaries are marked on both sides (2 px), as in the Fast-FineCut iron grain maps
    real = read_instance_map(shared_data / "fastfinecut_iron" / "masks" / "001.tif")
    assert np.array_equal(real.boundary, instance_boundaries(real.labels))
    assert np.array_equal(grown.boundary, instance_boundaries(grown.instances))
    # eq. 3: phi is 1 inside grains and drops along the boundaries
    assert grown.phi[~grown.boundary].mean() > 0.9 and grown.phi[grown.boundary].mean() < 0.7


def test_the_time_series_coarsens_and_keeps_grain_numbers(grown):
    assert grown.snapshot_steps.tolist() == [0, 200, 400, 600]
    assert grown.snapshots.shape == (4, 96, 96) and grown.snapshot_phi.dtype == np.uint8
    assert np.array_equal(grown.snapshots[0], grown.initial)
    assert np.array_equal(grown.snapshots[-1], grown.grains)
    counts = [len(np.unique(s)) for s in grown.snapshots]
    assert counts[0] == 40 and all(a >= b for a, b in pairwise(counts)) and counts[-1] < 40
    # a surviving grain keeps its number: it overlaps itself from one snapshot to the next
    for before, after in pairwise(grown.snapshots):
        for g in np.unique(after):
            overlap = np.sum((before == g) & (after == g))
            assert overlap >= 0.5 * np.sum(after == g)
    assert grown.info["coalescences"] == 0 and grown.info["grains_final"] == counts[-1]


def test_a_run_reports_progress_and_stops_when_asked():
    settings = GrainGrowthSettings(grains=6, size=32, steps=100, snapshot_every=50)
    seen = []
    simulate(settings, seed=0, device="cpu", progress=lambda done, total, msg: seen.append((done, total)))
    assert seen[0] == (0, 100) and seen[-1] == (100, 100) and len(seen) == 11
    calls = []
    with pytest.raises(Cancelled):
        simulate(settings, seed=0, device="cpu", progress=lambda *a: calls.append(a), should_stop=lambda: bool(calls))
    assert len(calls) == 1


def test_a_seed_gives_the_same_structure():
    settings = GrainGrowthSettings(grains=10, size=48, steps=30, snapshot_every=0)
    a, b = simulate(settings, seed=7, device="cpu"), simulate(settings, seed=7, device="cpu")
    c = simulate(settings, seed=8, device="cpu")
    assert np.array_equal(a.grains, b.grains) and not np.array_equal(a.grains, c.grains)
    assert torch.device("cpu") == GrainGrowth(settings, seed=7, device="auto").device or torch.cuda.is_available()


# ---------------------------------------------------------------- many structures, the command, napari

SMALL = GrainGrowthSettings(grains=8, size=32, steps=20, snapshot_every=10)


def test_an_interrupted_run_continues_and_never_rewrites_a_finished_structure(tmp_path):
    out = tmp_path / "sim"
    messages = []

    def progress(done, total, message):
        messages.append(message)

    with pytest.raises(Cancelled, match="1 of 3 structures are finished"):
        simulate_structures(out, SMALL, 3, seed=4, device="cpu", progress=progress,
                            should_stop=lambda: any("structure 2/3" in m for m in messages))
    assert sorted(p.name for p in out.iterdir()) == ["simulation.json", "structure_00000.npz"]
    first = structure_path(out, 0)
    before = (first.stat().st_ino, first.stat().st_mtime_ns, first.read_bytes())
    run = simulate_structures(out, SMALL, 3, seed=4, device="cpu")
    assert run.skipped == 1 and [p.name for p in run.written] == ["structure_00001.npz", "structure_00002.npz"]
    assert (first.stat().st_ino, first.stat().st_mtime_ns, first.read_bytes()) == before
    # a structure does not depend on where a run stopped: the same as in an uninterrupted run
    simulate_structures(tmp_path / "whole", SMALL, 2, seed=4, device="cpu")
    resumed, whole = load_structure(structure_path(out, 1)), load_structure(structure_path(tmp_path / "whole", 1))
    assert np.array_equal(resumed.snapshots, whole.snapshots) and resumed.seed == structure_seed(4, 1)
    # a left-over partial file from a crash is cleaned up; a finished folder is not simulated again
    (out / "structure_00003.npz.partial").write_bytes(b"crashed")
    assert simulate_structures(out, SMALL, 3, seed=4, device="cpu").written == []
    assert not list(out.glob("*.partial"))
    with pytest.raises(ValueError, match="other settings .*grains 8"):
        simulate_structures(out, GrainGrowthSettings(grains=9, size=32, steps=20), 3, seed=4, device="cpu")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a simulation folder"):
        simulate_structures(tmp_path / "other", SMALL, 1, device="cpu")


def test_simulate_command_writes_structures_a_user_can_open(tmp_path, capsys):
    from napari_microsynth.cli import EXIT_BAD_INPUT, main

    out = tmp_path / "sim"
    argv = ["-q", "simulate", str(out), "--structures", "2", "--grains", "8", "--size", "32", "--steps", "20",
            "--snapshot-every", "10", "--seed", "3", "--device", "cpu"]
    assert main(argv) == 0
    assert "wrote 2 structures" in capsys.readouterr().out
    structure = load_structure(out / "structure_00001.npz")
    assert structure.snapshots.shape == (3, 32, 32) and structure.snapshot_steps.tolist() == [0, 10, 20]
    assert structure.settings.grains == 8 and structure.info["coalescences"] == 0
    assert np.array_equal(structure.boundary, instance_boundaries(structure.instances))
    assert main(argv) == 0 and "wrote 0 structures to" in capsys.readouterr().out
    assert main(["simulate", str(tmp_path / "x"), "--dt", "0.5"]) == EXIT_BAD_INPUT
    assert "stability bound" in capsys.readouterr().err


def test_the_reader_opens_a_structure_as_a_time_series_and_claims_no_other_npz(tmp_path):
    from napari_microsynth.napari_io import get_reader, read_grain_growth

    simulate_structures(tmp_path, SMALL, 1, seed=1, device="cpu")
    path = str(tmp_path / "structure_00000.npz")
    np.savez(tmp_path / "plain.npz", grains=np.zeros((4, 4)))
    assert get_reader(str(tmp_path / "plain.npz")) is None and get_reader(str(tmp_path)) is None
    assert get_reader(path) is read_grain_growth
    (phi, _, phi_type), (grains, grains_kw, grains_type), (edges, _, _) = read_grain_growth(path)
    assert (phi_type, grains_type) == ("image", "labels")
    assert phi.shape == grains.shape == edges.shape == (3, 32, 32)
    assert grains_kw["scale"] == (10.0, 1.0, 1.0) and grains_kw["axis_labels"][0] == "step"
    assert np.array_equal(grains[-1], load_structure(path).grains)


def test_the_time_series_can_be_scrubbed_in_napari(make_napari_viewer, tmp_path):
    simulate_structures(tmp_path, SMALL, 1, seed=1, device="cpu")
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "structure_00000.npz"), plugin="napari-microsynth")
    grains = next(layer for layer in layers if layer.name.endswith("grains"))
    structure = load_structure(tmp_path / "structure_00000.npz")
    assert viewer.dims.ndim == 3 and viewer.dims.nsteps[0] == 3
    for k, step in enumerate(structure.snapshot_steps.tolist()):
        viewer.dims.set_point(0, step)  # the slider is in simulation steps
        assert np.array_equal(np.asarray(grains._slice.image.raw), structure.snapshots[k])
