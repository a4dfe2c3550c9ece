"""A tiny segmenter training that tests/test_multiprocess_training.py runs under ``accelerate launch`` with
two processes: ``python multiprocess_training.py <data folder> <out folder>``.

Each process trains in ``<out>/work-rank<k>`` and saves its model to ``<out>/model-rank<k>`` (so any file a
process other than the main one wrote would show), and writes ``<out>/rank<k>.json``: a hash of every batch
of images its network saw, its progress calls, its final weights' hash and the loss history.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.engines.segmentation import SegmentationConfig, train_segmenter
from napari_microsynth.models.segmenter import Segmenter


def main(data: Path, out: Path) -> None:
    rank = int(os.environ["RANK"])
    seen: list[str] = []

    def record_batch(module: torch.nn.Module, args: tuple) -> None:
        if isinstance(module, Segmenter):
            seen.append(hashlib.sha1(args[0].detach().cpu().numpy().tobytes()).hexdigest())

    torch.nn.modules.module.register_module_forward_pre_hook(record_batch)
    progress: list[int] = []
    samples = load_dataset(data / "uhcs", split="train")[:2]
    config = SegmentationConfig(preset="tiny", tile_size=64, batch_size=2, steps=4, checkpoint_every=2, device="cpu")
    result = train_segmenter(samples, config, out / f"work-rank{rank}", progress=lambda d, t, m: progress.append(d))
    result.save(out / f"model-rank{rank}")
    weights = hashlib.sha1(b"".join(v.numpy().tobytes() for v in result.model.state_dict().values())).hexdigest()
    report = {"rank": rank, "batches": seen, "progress": progress, "weights": weights, "losses": result.losses}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    if torch.distributed.is_initialized():  # leave the group before exiting, as the CLI does
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
