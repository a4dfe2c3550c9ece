"""The augmentation benchmark end to end at test scale: real only vs real + synthetic, resumable."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from napari_microsynth.cli import main
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.engines.augment_benchmark import AugmentBenchmarkConfig, conclusion, run_augment_benchmark
from napari_microsynth.engines.segmentation import SegmentationConfig
from napari_microsynth.generators.pf_diffseg import PFDiffSeg

UHCS = PhaseSchema.bundled("uhcs")
SEGMENTER = SegmentationConfig(arch="Unet", preset="tiny", plm="baseline", tile_size=32, input_scale=0.5,
                               scale_range=(1.0, 1.0), steps=4, batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def generator(read_uhcs, one_thread):
    """A tiny PF-DiffSeg (32 px pairs of 2x downscaled micrographs = 64 real px) after a few steps."""
    gen = PFDiffSeg(UHCS, "tiny", device="cpu")
    gen.train(read_uhcs(3, pixel_size_um=0.5), PFDiffSeg.TrainConfig(steps=3, batch_size=4, lr_schedule="constant", lr_warmup_steps=0))
    return gen


def config(**changes) -> AugmentBenchmarkConfig:
    base = AugmentBenchmarkConfig(ratios=(0, 0.5), seeds=(0,), segmentation=SEGMENTER,
                                  sampling={"sampler": "dpm++", "steps": 2, "batch_size": 8})
    return replace(base, **changes)


@pytest.mark.usefixtures("one_thread")
def test_benchmark_compares_real_only_with_real_plus_synthetic(read_uhcs, generator, tmp_path):
    train = read_uhcs(2, pixel_size_um=0.5)
    test = read_uhcs(4, pixel_size_um=0.5)[2:]
    result = run_augment_benchmark(train, test, tmp_path, config(), generator=generator)

    table = result["table"]
    assert [row["ratio"] for row in table] == [0.0, 0.5]
    real_tiles = table[0]["real_tiles"]
    assert real_tiles == sum((s.shape[0] // 64) * (s.shape[1] // 64) for s in train)  # 64 real px tiles
    assert table[1]["synthetic_pairs"] == round(0.5 * real_tiles)
    assert all(0.0 <= row["miou"] <= 1.0 for row in table)
    pool = DatasetStore.open(tmp_path / "synthetic.zarr")
    assert len(pool) == table[1]["synthetic_pairs"]
    assert {pool.provenance(i).origin for i in range(len(pool))} == {"synthetic"}
    report = result["report"].read_text()
    assert "real only" in report and "1:0.5" in report and "hardware: CPU" in report
    assert "±" not in report  # one seed: no spread to show
    gain = table[1]["miou"] - table[0]["miou"]
    assert ("Best real+synthetic ratio" in report) == (gain > 0)
    assert (tmp_path / "miou_vs_synthetic_volume.png").stat().st_size > 0
    assert (tmp_path / "summary.csv").read_text().count("\n") == 3


def test_a_ratio_that_loses_against_real_only_is_not_called_best():
    """Issue 20 item 11: a -17.4 point result was reported as the "best" ratio."""
    assert conclusion({"miou": 0.50}, {"miou": 0.326, "ratio": 1.0}) == (
        "No real+synthetic ratio beat real only; the closest, 1:1, scored mIoU -17.4 points against it.")
    assert conclusion({"miou": 0.50}, {"miou": 0.53, "ratio": 2.0}).startswith("Best real+synthetic ratio 1:2: mIoU +3.0")


@pytest.mark.usefixtures("one_thread")
def test_an_interrupted_benchmark_resumes_without_retraining(read_uhcs, generator, tmp_path):
    train, test = read_uhcs(1, pixel_size_um=0.5), read_uhcs(2, pixel_size_um=0.5)[1:]
    first = run_augment_benchmark(train, test, tmp_path, config(ratios=(0,)), generator=generator)
    metrics = tmp_path / "runs" / "ratio0_seed0" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    again = run_augment_benchmark(train, test, tmp_path, config(ratios=(0,)), generator=generator)
    assert metrics.stat().st_mtime_ns == stamp
    assert again["table"] == first["table"]
    with pytest.raises(FileExistsError, match="other settings"):
        run_augment_benchmark(train, test, tmp_path, config(ratios=(0,), seeds=(3,)), generator=generator)


@pytest.mark.usefixtures("one_thread")
def test_curated_store_contributes_only_its_accepted_pairs(read_uhcs, generator, tmp_path):
    train, test = read_uhcs(1, pixel_size_um=0.5), read_uhcs(2, pixel_size_um=0.5)[1:]
    store = DatasetStore.create(tmp_path / "curated.zarr", UHCS)
    for k, pair in enumerate(generator.sample(n=6, conditions=np.tile([0.5, 0.3, 0.1, 0.1], (6, 1)),
                                              sampler="dpm++", steps=2)):
        store.append(pair, status="accepted" if k % 2 == 0 else "rejected")
    n_real = (train[0].shape[0] // 64) * (train[0].shape[1] // 64)
    with pytest.raises(ValueError, match="holds 3 accepted pairs"):
        run_augment_benchmark(train, test, tmp_path / "a", config(ratios=(0, 1)), synthetic_store=store.path)
    result = run_augment_benchmark(train, test, tmp_path / "b", config(ratios=(0, 3 / n_real)),
                                   synthetic_store=store.path)
    assert result["table"][1]["synthetic_pairs"] == 3


def test_cli_runs_the_benchmark_on_a_dataset_folder(shared_data, generator, tmp_path, capsys):
    model = generator.save(tmp_path / "gen")
    out = tmp_path / "bench"
    code = main(["--quiet", "augment-benchmark", str(shared_data / "uhcs"), "--generator", str(model),
                 "--train-split", "validate4A", "--test-split", "test4A", "--ratios", "0", "0.1",
                 "--seeds", "0", "--preset", "tiny", "--tile", "32", "--steps", "2", "--batch-size", "2",
                 "--sampling-steps", "2", "--device", "cpu", "--threads", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Augmentation benchmark" in printed and "1:0.1" in printed
    runs = json.loads((out / "runs" / "ratio0.1_seed0" / "metrics.json").read_text())
    assert runs["synthetic_pairs"] > 0
