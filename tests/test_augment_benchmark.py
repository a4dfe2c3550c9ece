"""The augmentation benchmark end to end at test scale: real only vs real + synthetic, resumable."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from napari_microsynth.cli import main
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore
from napari_microsynth.engines.augment_benchmark import (
    AugmentBenchmarkConfig,
    Setting,
    _scores,
    agreement_scores,
    conclusion,
    judged_classes,
    paper_class_set,
    run_augment_benchmark,
)
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
def test_benchmark_compares_real_only_with_real_plus_synthetic_and_chooses_on_validation(read_uhcs, generator, tmp_path):
    train = read_uhcs(2, pixel_size_um=0.5)
    val, test = read_uhcs(4, pixel_size_um=0.5)[2:3], read_uhcs(4, pixel_size_um=0.5)[3:]
    result = run_augment_benchmark(train, test, tmp_path, config(), generator=generator, real_val=val)

    table = result["table"]
    assert [row["setting"] for row in table] == ["real only", "1:0.5"]
    real_tiles = table[0]["real_tiles"]
    assert real_tiles == sum((s.shape[0] // 64) * (s.shape[1] // 64) for s in train)  # 64 real px tiles
    assert table[1]["synthetic_pairs"] == round(0.5 * real_tiles)
    # real-batch budget: synthetic tiles come on top, so each real tile is seen as often as with real only
    assert table[1]["real_visits"] == table[0]["real_visits"] == pytest.approx(4 * 4 / real_tiles)
    for row in table:
        for key in ("val miou_set", "test miou_set", "test dice_set", "test miou_all", "test iou ferrite matrix"):
            assert 0.0 <= row[key] <= 1.0
    assert result["chosen"] is max(table, key=lambda r: r["val miou_set"])
    pool = DatasetStore.open(tmp_path / "synthetic.zarr")
    assert len(pool) == table[1]["synthetic_pairs"]
    assert {pool.provenance(i).origin for i in range(len(pool))} == {"synthetic"}
    report = result["report"].read_text()
    assert "real only" in report and "1:0.5" in report and "hardware: CPU" in report
    assert "Chosen on validation" in report and "(chosen on val)" in report and "never on test" in report
    assert "equal real-tile visits" in report and "synthetic loss weight 1" in report
    assert "±" not in report  # one seed: no spread to show
    assert (tmp_path / "miou_vs_synthetic_volume.png").stat().st_size > 0
    assert (tmp_path / "pool_targets.png").stat().st_size > 0 and "pool_targets.png" in report
    assert (tmp_path / "summary.csv").read_text().count("\n") == 3


def test_each_budget_says_how_often_real_tiles_are_seen():
    """Equal real visits (real-batch, fixed-epochs) vs the earlier fixed step budget, where synthetic pairs
    displace real tiles (issue 11: 6.2 visits real only, 3.1 at 1:1)."""
    base = config(ratios=(0, 1))
    seg = base.segmentation
    for budget in ("real-batch", "fixed-epochs", "fixed-steps"):
        cfg = replace(base, budget=budget, synthetic_weight=0.5)
        real_only = cfg.trained_config(Setting(0.0), 100, 0)
        mixed = cfg.trained_config(Setting(1.0), 100, 100)
        assert real_only == seg and mixed.synthetic_weight == 0.5
        visits = cfg.real_visits(mixed, 100, 100) / cfg.real_visits(real_only, 100, 0)
        assert visits == pytest.approx(0.5 if budget == "fixed-steps" else 1.0)
    assert replace(base, budget="fixed-epochs").trained_config(Setting(1.0), 100, 100).steps == 2 * seg.steps
    with pytest.raises(ValueError, match="budget"):
        replace(base, budget="epochs")


def test_the_paper_scores_metaldam_without_precipitate_and_the_headline_mean_follows_the_class_set():
    metaldam = PhaseSchema.bundled("metaldam")
    assert "precipitate" in metaldam.names and "precipitate" not in paper_class_set(metaldam)
    assert paper_class_set(UHCS) == tuple(UHCS.names)
    report = {"per_class_iou": {"a": 0.8, "b": 0.4, "c": 0.0}, "dice": {"a": 0.9, "b": 0.5, "c": 0.0},
              "miou": 0.4, "mean_dice": 0.4667, "accuracy": 0.9, "mciou": 0.4, "boundary_f1": 0.5}
    scores = _scores(report, ("a", "b"))
    assert scores["miou_set"] == pytest.approx(0.6) and scores["dice_set"] == pytest.approx(0.7)
    assert scores["miou_all"] == 0.4 and scores["iou c"] == 0.0


@pytest.mark.usefixtures("one_thread")
def test_the_agreement_rule_trains_only_on_pairs_the_real_only_model_agrees_with(read_uhcs, generator, tmp_path):
    train, test = read_uhcs(1, pixel_size_um=0.5), read_uhcs(2, pixel_size_um=0.5)[1:]
    cfg = config(ratios=(0, 0.25, 0.5), agreement=0.2, agreement_ratios=(0.25,))
    result = run_augment_benchmark(train, test, tmp_path, cfg, generator=generator)
    confusions = np.array(json.loads((tmp_path / "agreement.json").read_text())["confusions"])
    scores = agreement_scores(confusions, None)
    pool = DatasetStore.open(tmp_path / "synthetic.zarr")
    assert len(scores) == len(pool) and all(0.0 <= v <= 1.0 for v in scores)
    kept = sum(v >= 0.2 for v in scores)
    report = result["report"].read_text()
    assert f"reach mIoU 0.2: {kept} of {len(pool)} pool pairs" in report
    needed = round(0.25 * result["table"][0]["real_tiles"])
    curated = [r for r in result["table"] if r["agreement"] == 0.2]
    if kept >= needed:
        assert [r["setting"] for r in curated] == ["1:0.25, agreement >= 0.2"]
    else:
        assert not curated and "Not trained: 1:0.25, agreement >= 0.2" in report
    with pytest.raises(ValueError, match="include ratio 0"):
        config(ratios=(1,), agreement=0.5)
    with pytest.raises(FileExistsError, match=f"drawn as {len(pool)} pairs"):  # the targets depend on the pool size
        run_augment_benchmark(train, test, tmp_path, replace(cfg, ratios=(0, 1), agreement_ratios=()),
                              generator=generator)


def test_agreement_on_judged_classes_ignores_a_phase_the_judge_cannot_see():
    """A judge blind to martensite/austenite calls it matrix: over all classes such a pair disagrees, over the
    classes the judge segments (on validation) it agrees, so the rule no longer rejects MA-rich pairs."""
    from napari_microsynth.core.metrics import confusion_matrix

    metaldam = PhaseSchema.bundled("metaldam")
    judge_scores = {"val iou matrix": 0.68, "val iou austenite": 0.82, "val iou martensite/austenite": 0.10,
                    "val iou precipitate": 0.0, "val iou defect": 0.63}
    judged = judged_classes(judge_scores, metaldam, 0.35)
    assert [metaldam.names[i] for i in judged] == ["matrix", "austenite", "defect"]
    ma, matrix, austenite = (metaldam.names.index(n) for n in ("martensite/austenite", "matrix", "austenite"))
    mask = np.full((20, 20), matrix)
    mask[:, 10:] = austenite
    mask[:8, :8] = ma  # an MA island the judge paints as matrix
    seen = np.where(mask == ma, matrix, mask)
    cm = confusion_matrix(mask, seen, metaldam.n_classes)[None]
    [over_all], [over_judged] = agreement_scores(cm, None), agreement_scores(cm, judged)
    assert over_all < 0.6 and over_judged == pytest.approx(1.0)
    # a pair whose matrix the judge sees as austenite still disagrees on the judged classes
    wrong = np.where(mask == matrix, austenite, mask)
    assert agreement_scores(confusion_matrix(mask, wrong, metaldam.n_classes)[None], judged)[0] < 0.5


@pytest.mark.usefixtures("one_thread")
def test_the_judged_classes_rule_extends_a_finished_folder_and_says_which_classes_count(read_uhcs, generator,
                                                                                      tmp_path):
    train, val, test = (read_uhcs(3, pixel_size_um=0.5)[i:i + 1] for i in range(3))
    cfg = config(ratios=(0, 0.25), agreement=0.2)
    run_augment_benchmark(train, test, tmp_path, cfg, generator=generator, real_val=val)
    result = run_augment_benchmark(train, test, tmp_path, replace(cfg, agreement_classes="judged"),
                                   generator=generator, real_val=val)
    judge = json.loads((tmp_path / "runs" / "ratio0_seed0" / "metrics.json").read_text())
    judged = judged_classes(judge, UHCS, 0.2)
    confusions = np.array(json.loads((tmp_path / "agreement.json").read_text())["confusions"])
    kept = sum(v >= 0.2 for v in agreement_scores(confusions, judged))
    report = result["report"].read_text()
    names = ", ".join(UHCS.names[i] for i in judged) or "none"
    assert f"over the classes that model segments at IoU >= 0.2 on the validation micrographs ({names})" in report
    assert f": {kept} of {len(confusions)} pool pairs" in report
    labels = [r["setting"] for r in result["table"]]
    assert labels[:2] == ["real only", "1:0.25"]
    assert ("1:0.25, agreement >= 0.2 on judged classes" in labels) == (kept >= result["table"][1]["synthetic_pairs"])
    with pytest.raises(ValueError, match="found on validation micrographs"):
        run_augment_benchmark(train, test, tmp_path, replace(cfg, agreement_classes="judged"), generator=generator)


def test_a_setting_that_loses_against_real_only_is_called_a_loss():
    """Issue 20 item 11: a -17.4 point result was reported as the "best" ratio."""
    rows = [{"setting": "real only", "test miou_set": 0.50, "test miou_set sd": 0.01},
            {"setting": "1:1", "test miou_set": 0.326, "test miou_set sd": 0.01},
            {"setting": "1:2", "test miou_set": 0.53, "test miou_set sd": 0.01}]
    assert conclusion(rows, rows[1]) == [
        "Chosen on validation: 1:1; on test it scores mIoU -17.4 points against real only (spreads apart: a loss).",
        "Settings whose test mIoU spread lies above real only's: 1:2; below: 1:1."]
    assert conclusion(rows, None)[0].startswith("No validation split")


@pytest.mark.usefixtures("one_thread")
def test_an_interrupted_benchmark_resumes_without_retraining(read_uhcs, generator, tmp_path):
    train, test = read_uhcs(1, pixel_size_um=0.5), read_uhcs(2, pixel_size_um=0.5)[1:]
    first = run_augment_benchmark(train, test, tmp_path, config(ratios=(0,)), generator=generator)
    metrics = tmp_path / "runs" / "ratio0_seed0" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    again = run_augment_benchmark(train, test, tmp_path, config(ratios=(0,)), generator=generator)
    assert metrics.stat().st_mtime_ns == stamp
    assert again["table"] == first["table"]
    with pytest.raises(FileExistsError, match="other settings.*segmentation differ"):
        run_augment_benchmark(train, test, tmp_path, config(ratios=(0,), segmentation=replace(SEGMENTER, steps=5)),
                              generator=generator)
    more = run_augment_benchmark(train, test, tmp_path, config(ratios=(0,), seeds=(0, 3)), generator=generator)
    assert metrics.stat().st_mtime_ns == stamp and more["table"][0]["seeds"] == 2  # seed 0 reused, seed 3 added


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
                 "--train-split", "validate4A", "--val-split", "none", "--test-split", "test4A", "--ratios", "0", "0.1",
                 "--seeds", "0", "--preset", "tiny", "--tile", "32", "--steps", "2", "--batch-size", "2",
                 "--sampling-steps", "2", "--device", "cpu", "--threads", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Augmentation benchmark" in printed and "1:0.1" in printed
    runs = json.loads((out / "runs" / "ratio0.1_seed0" / "metrics.json").read_text())
    assert runs["synthetic_pairs"] > 0


@pytest.mark.usefixtures("one_thread")
def test_a_super_resolution_model_doubles_the_pool_as_in_the_papers_pipeline(read_uhcs, generator, tmp_path):
    from napari_microsynth.generators.super_resolution import SuperResolution

    sr = SuperResolution(UHCS, "tiny", device="cpu")
    sr.train(read_uhcs(2, pixel_size_um=0.5), sr.TrainConfig(steps=2, batch_size=4, lr_schedule="constant",
                                                             lr_warmup_steps=0))
    sr.save(tmp_path / "sr")
    train, test = read_uhcs(1, pixel_size_um=0.5), read_uhcs(2, pixel_size_um=0.5)[1:]
    second = UHCS.names[int(np.argsort(train[0].fractions)[-2])]  # the fixture's second most common phase
    level = round(min(0.9, 1.5 * float(np.sort(train[0].fractions)[-2])), 3)
    cfg = config(ratios=(0, 0.25), upscale_steps=2, levels={second: level})
    result = run_augment_benchmark(train, test, tmp_path / "bench", cfg, generator=generator, upscaler=sr)
    pool = DatasetStore.open(tmp_path / "bench" / "synthetic.zarr")
    pair = pool[0]
    assert pair.image.shape == (64, 64)  # the generator's 32 px pair (2x downscaled) doubled to the real scale
    assert pair.provenance.extra["super_resolution"] == sr.model_checksum
    report = result["report"].read_text()
    assert "doubled by super-resolution model" in report and f"boost levels: {second} {level:g}" in report


def test_pool_progress_counts_stored_pairs_not_sampler_steps(generator, read_uhcs, tmp_path):
    """A run showed "generating pair 1087/1040": the sampler's step count was reported as pairs."""
    from napari_microsynth.engines.augment_benchmark import generate_pool

    seen: list[tuple[int, int]] = []
    generate_pool(generator, read_uhcs(1, pixel_size_um=0.5), 3, tmp_path / "pool.zarr", 64,
                  sampling={"sampler": "dpm++", "steps": 4, "batch_size": 2},
                  progress=lambda k, n, msg: seen.append((k, n)))
    assert max(k for k, _ in seen) == 3 and {n for _, n in seen} == {3}
    assert seen[-1] == (3, 3)
