"""The one trainer (models.trainer): cancel and exact resume, old checkpoints, one accelerator per process,
the moving average."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.tiles import RandomPairTiles
from napari_microsynth.engines.segmentation import SegmentationConfig, train_segmenter
from napari_microsynth.models.checkpoint import TRAINER_STATE, latest_checkpoint
from napari_microsynth.models import trainer
from napari_microsynth.models.trainer import LoopSettings, MovingAverage, Recipe, Run, process_accelerator, train

pytestmark = pytest.mark.usefixtures("one_thread")


def phase_recipe(tiles: RandomPairTiles, width: int = 8) -> Recipe:
    """A two-layer conv net learning the phase map of real UHCS tiles, with EMA and a decaying learning rate."""
    torch.manual_seed(0)
    n = tiles.schema.n_classes
    net = torch.nn.Sequential(torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(width, n, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)

    def step(run: Run, batch) -> dict[str, float]:
        images, masks = (torch.from_numpy(np.ascontiguousarray(a)).to(run.device) for a in batch)
        loss = F.cross_entropy(run.modules["net"](images[:, None]), masks)
        run.update("net", loss)
        return {"loss": float(loss.detach())}

    return Recipe({"net": net}, {"net": optimizer}, lambda rng: tiles.draw(rng, 4), step,
                  identity={"width": width}, schedulers={"lr": torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)},
                  ema=("net",), ema_decay=0.9)


@pytest.fixture(scope="module")
def tiles(uhcs_samples) -> RandomPairTiles:
    return RandomPairTiles(uhcs_samples, 16, downscale=2)


def test_a_cancelled_run_carries_its_result_and_resumes_to_the_uninterrupted_weights(tiles, tmp_path):
    settings = LoopSettings(steps=6, checkpoint_dir=tmp_path, checkpoint_every=4)
    straight = phase_recipe(tiles)
    reference = train(straight, LoopSettings(steps=6))
    assert reference.losses[-1] < reference.losses[0]

    done: list[int] = []
    with pytest.raises(Cancelled, match="stopped at step 3 of 6") as stopped:
        train(phase_recipe(tiles), settings, progress=lambda d, t, m: done.append(d),
              should_stop=lambda: len(done) >= 3)
    assert stopped.value.result.steps == 3 and len(stopped.value.result.losses) == 3
    assert latest_checkpoint(tmp_path).name == "checkpoint-3"

    resumed = phase_recipe(tiles)
    result = train(resumed, settings)
    assert result.resumed_from == 3 and result.losses == reference.losses
    for a, b in zip(straight.modules["net"].state_dict().values(), resumed.modules["net"].state_dict().values()):
        torch.testing.assert_close(a, b)  # the moving averages, put in when training ended

    with pytest.raises(ValueError, match="different configuration.*width: 8 -> 4"):
        train(phase_recipe(tiles, width=4), LoopSettings(steps=8, checkpoint_dir=tmp_path))


def test_checkpoints_of_older_versions_are_refused_with_a_clear_message(tiles, uhcs_samples, tmp_path):
    train(phase_recipe(tiles), LoopSettings(steps=2, checkpoint_dir=tmp_path / "new", checkpoint_every=2))
    state_file = latest_checkpoint(tmp_path / "new") / TRAINER_STATE
    state = json.loads(state_file.read_text())
    del state["format_version"]  # as the loops before the one trainer wrote it
    state_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="older version .* cannot be resumed"):
        train(phase_recipe(tiles), LoopSettings(steps=3, checkpoint_dir=tmp_path / "new"))

    (tmp_path / "work" / "checkpoints" / "step_00000010").mkdir(parents=True)  # an old segmenter checkpoint
    config = SegmentationConfig(preset="tiny", tile_size=64, batch_size=2, steps=2, device="cpu")
    with pytest.raises(ValueError, match="older version .*step_00000010"):
        train_segmenter(uhcs_samples[:1], config, tmp_path / "work")


def test_one_accelerator_per_process_and_another_precision_is_refused(tiles):
    first = process_accelerator(torch.device("cpu"), "no")
    assert process_accelerator(torch.device("cpu"), "no") is first
    with pytest.raises(ValueError, match="one device and precision per process"):
        process_accelerator(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="only available on a CUDA GPU"):
        train(phase_recipe(tiles), LoopSettings(steps=1, mixed_precision="bf16"))


def test_the_moving_average_warms_up_like_diffusers_ema():
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    ours, theirs = MovingAverage(net, 0.99), EMAModel(net.parameters(), decay=0.99)
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ours.update(net)
        theirs.step(net.parameters())
    for a, b in zip(ours.module.parameters(), theirs.shadow_params):
        torch.testing.assert_close(a, b)


def test_progress_says_how_long_the_training_still_takes_after_its_first_steps(tiles, monkeypatch):
    """Issue 20 item 12: once two steps after the set-up step are timed, every message gives the time left."""
    clock = iter(range(60, 6000, 60))  # each step takes a minute
    monkeypatch.setattr(trainer, "monotonic", lambda: next(clock))
    messages: list[str] = []
    train(phase_recipe(tiles), LoopSettings(steps=8), progress=lambda d, t, m: messages.append(m))
    assert all("left" not in m for m in messages[:2])
    assert messages[2].endswith("about 5 min left")  # 2 timed minutes for 2 steps, 5 steps to go
    assert messages[6].endswith("about 60 s left") and "left" not in messages[7]


def test_validation_runs_every_n_steps_in_eval_mode_and_its_scores_are_resumed_with_the_losses(tiles, tmp_path):
    val_images, val_masks = tiles.draw(np.random.default_rng(99), 8)
    seen_modes: list[bool] = []

    def accuracy(run: Run) -> dict[str, float]:
        net = run.unwrap("net")
        seen_modes.append(net.training)
        logits = net(torch.from_numpy(np.ascontiguousarray(val_images))[:, None].to(run.device))
        return {"val_accuracy": float((logits.argmax(1).cpu().numpy() == val_masks).mean())}

    settings = LoopSettings(steps=5, checkpoint_dir=tmp_path, checkpoint_every=2, validate_every=2)
    records: list[dict] = []
    with pytest.raises(Cancelled):
        train(phase_recipe(tiles), settings, on_step=records.append, validate=accuracy,
              should_stop=lambda: len(records) >= 3)
    recipe = phase_recipe(tiles)
    result = train(recipe, settings, on_step=records.append, validate=accuracy)
    scored = [h["step"] for h in result.history if "val_accuracy" in h]
    assert scored == [2, 4, 5]  # every 2nd step and the last, the one before the cancel kept by the checkpoint
    assert [r["step"] for r in records if "val_accuracy" in r] == [2, 4, 5]
    assert seen_modes == [False, False, False] and recipe.modules["net"].training is False  # eval at the end
    assert all(0.0 <= h["val_accuracy"] <= 1.0 for h in result.history if "val_accuracy" in h)
