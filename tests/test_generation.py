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
