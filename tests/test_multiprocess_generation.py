"""Issue 12, scale out: `accelerate launch --num_processes 2` generation writes every seed once into one store.

Two CPU processes talking through gloo: accelerate's ``--cpu`` flag alone starts one process on one machine
(several need mpirun), so the test starts torch's launcher through ``--multi_gpu`` with the GPUs hidden and
``ACCELERATE_USE_CPU`` set, which is how accelerate runs several CPU processes.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.generators import get_generator

SRC = Path(__file__).resolve().parents[1] / "src"
N = 5  # odd, so the last round leaves the second process without a block

GENERATE = textwrap.dedent(
    """
    import os
    import sys

    import torch

    from napari_microsynth.core.store import DatasetStore
    from napari_microsynth.engines.generation import GenerateRun, open_output_store
    from napari_microsynth.generators import load_generator

    model, out, n, die_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if die_at >= 0:
        original = DatasetStore.append

        def dying_append(self, *args, **kwargs):
            if len(self) == die_at:
                os._exit(9)  # killed like `kill -9`, after the earlier pairs were committed
            return original(self, *args, **kwargs)

        DatasetStore.append = dying_append
    torch.set_num_threads(1)
    generator = load_generator(model, device="cpu")
    store = open_output_store(out, generator.schema, "multi-process test")
    run = GenerateRun.plan(generator, store, [0.6, 0.2, 0.1, 0.1], n=n, seed=0, steps=2, batch_size=2)
    reported = []
    written = run.write(store, progress=lambda done, total, message: reported.append(done))
    print(f"process {os.environ.get('RANK', '0')}: wrote {written}, progress {reported}")
    if torch.distributed.is_initialized():  # leave the group before exiting, as the CLI does
        torch.distributed.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launcher() -> list[str]:
    found = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    head = [found, "launch"] if found else [sys.executable, "-m", "accelerate.commands.launch"]
    return [*head, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(_free_port())]


def _run(tmp_path: Path, command: list[str], model: Path, out: Path, die_at: int = -1) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "ACCELERATE_USE_CPU": "true"}
    return subprocess.run([*command, str(tmp_path / "generate.py"), str(model), str(out), str(N), str(die_at)],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An untrained tiny PF-DiffSeg model folder (this tests the plumbing, not the pairs)."""
    folder = tmp_path_factory.mktemp("model") / "pf-diffseg-tiny"
    get_generator("pf-diffseg")(PhaseSchema.bundled("uhcs"), "tiny", device="cpu").save(folder)
    return folder


def test_two_processes_write_every_seed_once_into_one_store_and_resume_a_killed_run(tmp_path, model):
    (tmp_path / "generate.py").write_text(GENERATE)
    single, shared = tmp_path / "single.zarr", tmp_path / "shared.zarr"
    result = _run(tmp_path, [sys.executable], model, single)
    assert result.returncode == 0, result.stderr

    killed = _run(tmp_path, [sys.executable], model, shared, die_at=2)  # a single process killed after 2 pairs
    assert killed.returncode == 9 and len(DatasetStore.open(shared)) == 2
    result = _run(tmp_path, _launcher(), model, shared)  # the same run, resumed on two processes
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 0: wrote 3, progress [3, 4, 5]" in result.stdout  # progress from the main process only
    assert "process 1: wrote 3, progress []" in result.stdout

    reference, store = DatasetStore.open(single), DatasetStore.open(shared)
    assert [store.provenance(i).seed for i in range(len(store))] == list(range(N))
    assert store.names == reference.names and store.statuses() == reference.statuses()
    assert len({store.provenance(i).extra["run"]["id"] for i in range(N)}) == 1
    for a, b in zip(store, reference):
        np.testing.assert_allclose(a.image, b.image, atol=1e-3)  # other batches: float noise only
        assert np.mean(a.mask != b.mask) < 1e-3


def test_two_processes_start_a_new_store(tmp_path, model):
    (tmp_path / "generate.py").write_text(GENERATE)
    result = _run(tmp_path, _launcher(), model, tmp_path / "fresh.zarr")
    assert result.returncode == 0, result.stderr[-3000:]
    store = DatasetStore.open(tmp_path / "fresh.zarr")
    assert [store.provenance(i).seed for i in range(len(store))] == list(range(N))
