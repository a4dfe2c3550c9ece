"""Issue 11: `microsynth generate --boost-from DATA --boost-level PHASE=LEVEL` draws targets holding that
level of the phase, prints the per-phase mean target fraction and writes the target histogram beside the store."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_microsynth.cli import EXIT_BAD_INPUT, main
from napari_microsynth.core.conditions import (
    fraction_targets,
    target_sampler,
    tile_fractions,
)
from napari_microsynth.core.datasets import load_split
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore

pytestmark = pytest.mark.usefixtures("one_thread")
UHCS = PhaseSchema.bundled("uhcs")


def generate(store, data, *extra) -> list[str]:
    return ["-q", "generate", "pf-diffseg-uhcs-demo", str(store), "-n", "3", "--steps", "2", "--device", "cpu",
            "--threads", "1", "--boost-from", str(data), *extra]


def stored_targets(path) -> np.ndarray:
    store = DatasetStore.open(path)
    return np.array([store.provenance(i).condition["fractions"] for i in range(len(store))])


def test_generate_with_a_boost_level_prints_the_targets_and_writes_their_histogram(shared_data, tmp_path, capsys):
    data = shared_data / "uhcs"
    assert main(generate(tmp_path / "pairs.zarr", data, "--boost-level", "widmanstaetten=12%")) == 0
    out = capsys.readouterr().out
    real = tile_fractions(load_split(data))
    sampler = target_sampler(real, UHCS, levels={"widmanstaetten": 0.12})

    # the pairs were asked for the levelled targets, whose mixture holds 12 % Widmanstaetten laths
    np.testing.assert_allclose(stored_targets(tmp_path / "pairs.zarr"),
                               sampler.sample(3, np.random.default_rng(0)), atol=1e-6)
    assert sampler.expected_mean()[UHCS.index_of("widmanstaetten")] == pytest.approx(0.12)
    row = next(line for line in out.splitlines() if line.startswith("widmanstaetten "))
    assert row.split()[-4:] == ["12.00", "%", "12.0", "%"]  # the mixture's mean and the level
    assert f"targets from {len(real)} real tiles of uhcs: data " in out
    assert "widmanstaetten" in out.splitlines()[0] and "(level 12 %" in out.splitlines()[0]

    picture = tmp_path / "pairs_targets.png"
    assert f"target histogram: {picture}" in out
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width > 2 * image.height  # one panel per phase, side by side

    # without a level: the paper's targets, as before
    assert main(generate(tmp_path / "paper.zarr", data)) == 0
    paper = stored_targets(tmp_path / "paper.zarr")
    np.testing.assert_allclose(paper, fraction_targets(load_split(data), 3, seed=0), atol=1e-6)
    assert not np.allclose(paper, stored_targets(tmp_path / "pairs.zarr"))
    assert (tmp_path / "paper_targets.png").is_file()


def test_a_boost_share_gives_a_mode_more_of_the_targets(shared_data, tmp_path, capsys):
    assert main(generate(tmp_path / "pairs.zarr", shared_data / "uhcs", "--boost-share", "spheroidite=40%")) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("data 40.0 %, widmanstaetten 20.0 %, spheroidite 40.0 %")


@pytest.mark.parametrize("extra, message", [
    (("--boost-level", "spheroidite=0.2"),
     ("--boost-level set how targets drawn from data are boosted: give the data with --boost-from DATA")),
    (("--boost-share", "spheroidite=0.2", "--boost-level", "spheroidite=0.2"), "--boost-level and --boost-share"),
])
def test_boost_flags_without_boost_from_are_refused(tmp_path, capsys, extra, message):
    argv = ["-q", "generate", "pf-diffseg-uhcs-demo", str(tmp_path / "p.zarr"), "--fractions", "0.7,0.1,0.1,0.1",
            "--device", "cpu", *extra]
    assert main(argv) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("level, message", [
    ("bainite=0.1", ("no phase 'bainite'; the uhcs phases are ferrite matrix, cementite network, spheroidite, "
                     "widmanstaetten")),
    ("widmanstaetten=12", "did you mean widmanstaetten=12%?"),
    ("widmanstaetten", "a boost level is PHASE=VALUE"),
    ("widmanstaetten=60%", "cannot reach a widmanstaetten level of 60 % of the targets"),
])
def test_bad_boost_levels_end_in_one_error_line_and_write_nothing(shared_data, tmp_path, capsys, level, message):
    assert main(generate(tmp_path / "p.zarr", shared_data / "uhcs", "--boost-level", level)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not list(tmp_path.iterdir())
