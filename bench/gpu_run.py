"""Train the best generator at a useful size on a GPU, evaluate it and time generation, within a wall budget.

Run through ``bench/gpu_run.sh`` (which sets up the packages the GPU machine lacks). Steps, each logged:

1. a short probe measures training steps per second of the mask denoiser and of the translator;
2. for each dataset, ``two-stage-gan`` is trained with step counts that fill its share of the budget
   (mask stage 60 %, translator 40 %), saved, and evaluated with ``microsynth evaluate-generator`` on the
   held-out split (fraction control off / guidance / on, agreement, FD/KID vs real-vs-real);
3. ``bench/bench_generators.py`` times one- vs two-stage vs two-stage-gan generation at batch 1 and batched.

Output folder (at most 8 files, each under 16 MiB, so the device tool brings all of it back)::

    OUT/summary.md          what ran, step counts, rates, the evaluation tables and timings
    OUT/log.txt             the full log
    OUT/<dataset>-model.tar model folder of the first dataset (weights stored as float16 to fit; loads as float32)
    OUT/reports.tar         evaluate-generator folders and the timing output

    python bench/gpu_run.py OUT --budget-minutes 8 --datasets uhcs metaldam --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

from napari_microsynth.core.datasets import load_split
from napari_microsynth.generators.two_stage_gan import TwoStageGAN

SPLITS = {"uhcs": ("train16A", "test4A"), "metaldam": ("train", "test")}
SHARES = {"train": 0.75, "evaluate": 0.15, "timing": 0.10}  # of the whole budget
MASK_SHARE = 0.6  # of a dataset's training time


def log(out: Path, message: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    with (out / "log.txt").open("a") as handle:
        handle.write(line + "\n")


def training_rates(samples, preset: str, batch: int, device: str, probe_steps: int) -> tuple[float, float]:
    """Steps per second of the mask stage and of the translator (timed after the first steps)."""
    stamps: dict[str, list[float]] = {"mask": [], "translator": []}

    def progress(done: int, total: int, message: str) -> None:
        stamps["mask" if message.startswith("mask") else "translator"].append(time.perf_counter())

    gen = TwoStageGAN(samples[0].schema, preset, device=device)
    gen.train(samples, TwoStageGAN.TrainConfig(steps=probe_steps, batch_size=batch, translator_steps=probe_steps,
                                               translator_batch_size=batch), progress)
    rates = []
    for stage in ("mask", "translator"):
        t = stamps[stage][2:]  # skip start-up and the first (warm-up) steps
        rates.append((len(t) - 1) / max(t[-1] - t[0], 1e-6))
    return rates[0], rates[1]


def train_one(name: str, data: Path, args, seconds: float, out: Path) -> Path:
    train_split, _ = SPLITS[name]
    samples = [s for s in load_split(data, train_split) if s.mask is not None]
    mask_rate, translator_rate = training_rates(samples, args.preset, args.batch_size, args.device, args.probe_steps)
    mask_steps = max(1, int(mask_rate * seconds * MASK_SHARE))
    translator_steps = max(1, int(translator_rate * seconds * (1 - MASK_SHARE)))
    log(out, f"{name}: {mask_rate:.2f} mask steps/s, {translator_rate:.2f} translator steps/s -> "
             f"{mask_steps} + {translator_steps} steps in {seconds:.0f} s")
    gen = TwoStageGAN(samples[0].schema, args.preset, device=args.device)
    config = TwoStageGAN.TrainConfig(
        steps=mask_steps, batch_size=args.batch_size, learning_rate=args.lr, lr_warmup_steps=min(500, mask_steps // 10),
        translator_steps=translator_steps, translator_batch_size=args.batch_size,
        checkpoint_dir=str(out / "work" / name), checkpoint_every=max(mask_steps, translator_steps),
    )
    start = time.perf_counter()
    summary = gen.train(samples, config)
    log(out, f"{name}: trained in {time.perf_counter() - start:.0f} s, mask loss {summary['final_loss']:.4f}")
    return gen.save(out / "work" / name / "model")


def evaluate(name: str, model: Path, data: Path, args, out: Path) -> Path:
    _, test_split = SPLITS[name]
    folder = out / "work" / f"eval-{name}"
    command = [sys.executable, "-m", "napari_microsynth.cli", "-q", "evaluate-generator", str(model), str(data),
               "--split", test_split, "-n", str(args.eval_n), "--sampler", "dpm++", "--timing-n", "0",
               "--device", args.device, "--out", str(folder)]
    log(out, "running " + " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    log(out, result.stdout[-4000:] + result.stderr[-2000:])
    return folder


def timing(args, out: Path) -> str:
    command = [sys.executable, str(Path(__file__).with_name("bench_generators.py")), "--preset",
               {"large": "paper"}.get(args.preset, args.preset), "--sampler", "dpm++", "--steps", "20",
               "--devices", "cpu" if args.device == "cpu" else "cuda", "--pairs", str(args.timing_pairs),
               "--batch-size", "16"]
    result = subprocess.run(command, capture_output=True, text=True)
    text = result.stdout + result.stderr[-2000:]
    (out / "work" / "timing.txt").write_text(text)
    log(out, text)
    return text


def pack_model(folder: Path, target: Path) -> None:
    """The model folder as a tar with float16 weights (the transport limit is 16 MiB per file)."""
    from safetensors.torch import load_file, save

    with tarfile.open(target, "w") as tar:
        for path in sorted(folder.iterdir()):
            if path.suffix == ".safetensors":
                weights = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
                payload = save(weights)
                info = tarfile.TarInfo(f"model/{path.name}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.add(path, arcname=f"model/{path.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--budget-minutes", type=float, default=8.0)
    parser.add_argument("--datasets", nargs="+", default=["uhcs", "metaldam"], choices=sorted(SPLITS))
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--preset", default="small", help="two-stage-gan preset: tiny, small, large")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--probe-steps", type=int, default=12)
    parser.add_argument("--eval-n", type=int, default=64)
    parser.add_argument("--timing-pairs", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    out = Path(args.out)
    (out / "work").mkdir(parents=True, exist_ok=True)
    budget = args.budget_minutes * 60
    env = {"torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "args": vars(args)}
    log(out, f"environment {json.dumps(env)}")
    per_dataset = budget * SHARES["train"] / len(args.datasets)
    summary = [f"# GPU run ({env['cuda'] or 'CPU'}, torch {env['torch']})", "", f"settings: `{vars(args)}`", ""]
    for k, name in enumerate(args.datasets):
        data = Path(args.data_root) / name
        model = train_one(name, data, args, per_dataset, out)
        if k == 0:
            pack_model(model, out / f"{name}-model.tar")
        report = evaluate(name, model, data, args, out) / "report.md"
        summary += [f"## {name}", "", report.read_text() if report.is_file() else "(evaluation failed: see log)", ""]
    summary += ["## Generation time", "", "```", timing(args, out), "```"]
    (out / "summary.md").write_text("\n".join(summary))
    with tarfile.open(out / "reports.tar", "w") as tar:
        for path in sorted((out / "work").iterdir()):
            if path.name.startswith("eval-") or path.name == "timing.txt":
                tar.add(path, arcname=path.name)
    log(out, f"done; files in {out}")


if __name__ == "__main__":
    main()
