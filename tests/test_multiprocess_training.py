"""Training under ``accelerate launch`` with two CPU processes (gloo): batches are sharded, the weights stay
the same on both processes, and only the main process reports progress and writes files."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "multiprocess_training.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_shard_batches_and_only_the_main_one_writes(shared_data, tmp_path):
    # accelerate's --cpu launches one process unless given an MPI host file; its torchrun launcher
    # (--multi_gpu) starts two, and the trainer's device "cpu" makes them CPU processes talking over gloo
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(SCRIPT), str(shared_data), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    main, other = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1))

    assert len(main["batches"]) == len(other["batches"]) == 4
    assert not set(main["batches"]) & set(other["batches"])  # each process trained on its own share
    assert main["weights"] == other["weights"]
    assert main["losses"] == other["losses"] and len(main["losses"]) == 4  # the mean over both processes
    assert main["progress"] == [1, 2, 3, 4] and other["progress"] == []
    checkpoints = sorted(p.name for p in (tmp_path / "work-rank0" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert (tmp_path / "model-rank0" / "config.json").is_file()
    assert not (tmp_path / "work-rank1" / "checkpoints").exists() and not (tmp_path / "model-rank1").exists()
