"""Issue 19 item 1: resuming from a checkpoint folder never unpickles code planted there."""
from __future__ import annotations

import pytest
import torch

from napari_microsynth.cli import EXIT_BAD_INPUT, main
from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.engines.segmentation import SegmentationConfig, latest_checkpoint, train_segmenter
from napari_microsynth.models.checkpoint import TRAINING_STATE

pytestmark = pytest.mark.usefixtures("one_thread")
#: files accelerate's load_state reads (custom_checkpoint_0.pkl with weights_only=False)
ACCELERATE_FILES = ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin",
                    "pytorch_model.bin")


class PlantedCode:
    """Unpickling this object creates ``marker``: what a malicious checkpoint file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant(folder, names, marker) -> None:
    for name in names:
        torch.save({"state": PlantedCode(marker)}, folder / name)


def train_generator(data, out, steps: int) -> int:
    return main(["-q", "train-generator", "pf-diffseg", str(data), "--preset", "tiny", "--steps", str(steps),
                 "--batch-size", "2", "--checkpoint-every", "1", "--device", "cpu", "--threads", "1",
                 "--out", str(out)])


def test_train_generator_resume_ignores_planted_pickles_and_refuses_a_poisoned_state(shared_data, tmp_path, capsys):
    marker = tmp_path / "code_ran"
    assert train_generator(shared_data / "uhcs", tmp_path / "out", steps=2) == 0
    work = tmp_path / "out" / "work"
    plant(work / "checkpoint-2", ACCELERATE_FILES, marker)
    assert train_generator(shared_data / "uhcs", tmp_path / "out", steps=3) == 0
    assert not marker.exists()

    plant(work / "checkpoint-3", [TRAINING_STATE], marker)
    capsys.readouterr()
    assert train_generator(shared_data / "uhcs", tmp_path / "out", steps=4) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "refusing to load it" in err and "checkpoint-3" in err
    assert not marker.exists()


def test_segmenter_resume_ignores_planted_pickles_and_refuses_a_poisoned_state(shared_data, tmp_path):
    samples = load_dataset(shared_data / "uhcs", split="train")[:2]
    config = SegmentationConfig(preset="tiny", tile_size=64, batch_size=2, steps=2, checkpoint_every=1,
                                device="cpu")
    marker = tmp_path / "code_ran"
    train_segmenter(samples, config, tmp_path / "work")
    plant(latest_checkpoint(tmp_path / "work"), ACCELERATE_FILES, marker)
    config.steps = 3
    assert train_segmenter(samples, config, tmp_path / "work").resumed_from == 2
    assert not marker.exists()

    plant(latest_checkpoint(tmp_path / "work"), [TRAINING_STATE], marker)
    config.steps = 4
    with pytest.raises(ValueError, match="refusing to load it"):
        train_segmenter(samples, config, tmp_path / "work")
    assert not marker.exists()
