"""Issue 19 item 4: `generate` continues a killed run with the seeds it would have used, never repeats a seed."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from napari_microsynth.cli import main
from napari_microsynth.core.store import DatasetStore

SRC = Path(__file__).resolve().parents[1] / "src"
pytestmark = pytest.mark.usefixtures("one_thread")

KILLED_GENERATE = textwrap.dedent(
    """
    import os
    import sys

    from napari_microsynth.cli import main
    from napari_microsynth.core.store import DatasetStore

    original = DatasetStore.append

    def dying_append(self, *args, **kwargs):
        if len(self) == int(sys.argv[1]):
            os._exit(9)  # killed like `kill -9`, after the earlier pairs were committed
        return original(self, *args, **kwargs)

    DatasetStore.append = dying_append
    main(sys.argv[2:])
    """
)


def generate(store: Path, n: int, fractions: str = "0.6,0.2,0.1,0.1") -> list[str]:
    return ["-q", "generate", "pf-diffseg-uhcs-demo", str(store), "-n", str(n), "--steps", "2",
            "--fractions", fractions, "--device", "cpu", "--threads", "1"]


def seeds(store: DatasetStore) -> list[int]:
    return [store.provenance(i).seed for i in range(len(store))]


def test_a_killed_generate_continues_where_it_stopped_and_other_runs_take_fresh_seeds(tmp_path, capsys):
    killed, straight = tmp_path / "killed.zarr", tmp_path / "straight.zarr"
    (tmp_path / "killed.py").write_text(KILLED_GENERATE)
    result = subprocess.run([sys.executable, str(tmp_path / "killed.py"), "3", *generate(killed, 6)],
                            env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 9, result.stderr
    assert len(DatasetStore.open(killed)) == 3

    assert main(generate(killed, 6)) == 0
    assert "wrote 3 synthetic pairs" in capsys.readouterr().out
    assert main(generate(straight, 6)) == 0
    resumed, reference = DatasetStore.open(killed), DatasetStore.open(straight)
    assert seeds(resumed) == seeds(reference) == [0, 1, 2, 3, 4, 5]
    for a, b in zip(resumed, reference):
        np.testing.assert_allclose(a.image, b.image, atol=1e-3)  # in another batch: float noise only
        assert np.mean(a.mask != b.mask) < 1e-3

    capsys.readouterr()
    assert main(generate(killed, 6)) == 0  # finished: the same command adds nothing
    assert "wrote 0 synthetic pairs" in capsys.readouterr().out and len(DatasetStore.open(killed)) == 6

    assert main(generate(killed, 2, fractions="0.4,0.4,0.1,0.1")) == 0  # another run: seeds after the highest
    assert "note: seeds 0..1 are already used" in capsys.readouterr().out
    assert seeds(DatasetStore.open(killed)) == [0, 1, 2, 3, 4, 5, 6, 7]


def test_generate_can_super_resolve_every_pair_before_storing_it(tmp_path, capsys):
    """Paper 000's pipeline: pairs made at the generator's size and doubled by the super-resolution model."""
    from napari_microsynth.core.fractions import mask_fractions
    from napari_microsynth.core.schema import PhaseSchema
    from napari_microsynth.generators.super_resolution import SuperResolution

    sr = SuperResolution(PhaseSchema.bundled("uhcs"), "tiny", device="cpu")
    sr.save(tmp_path / "sr")
    store = tmp_path / "sr.zarr"
    command = [*generate(store, 2), "--upscale", str(tmp_path / "sr"), "--upscale-steps", "2"]
    assert main(command) == 0
    pairs = DatasetStore.open(store)
    assert len(pairs) == 2 and all(pairs.shape(i) == (128, 128) for i in range(2))  # the 64 px demo pairs, doubled
    assert all(pairs.provenance(i).extra["super_resolution"] == sr.model_checksum for i in range(2))
    assert main(generate(tmp_path / "plain.zarr", 2)) == 0  # the same pairs at the generator's size
    for big, small in zip(pairs, DatasetStore.open(tmp_path / "plain.zarr")):
        assert small.shape == (64, 64)  # the upscaled mask keeps the generated pair's fractions
        assert np.abs(mask_fractions(big.mask, big.schema) - mask_fractions(small.mask, small.schema)).max() < 0.01
    capsys.readouterr()
    assert main(command) == 0  # the same command again: the run is complete, nothing is added
    assert "wrote 0 synthetic pairs" in capsys.readouterr().out and len(DatasetStore.open(store)) == 2
    assert main(generate(store, 2)) == 0  # without --upscale it is another run, on fresh seeds
    assert seeds(DatasetStore.open(store)) == [0, 1, 2, 3]
