"""Train a generator at a useful size on a GPU, evaluate it and time generation, within a wall budget.

Run through ``bench/gpu_run.sh`` (which sets up the packages the GPU machine lacks). Steps, each logged:

1. a short probe measures training steps per second of the family's two stages;
2. for each dataset, ``--family`` (``two-stage-gan``, the default, or ``vqvae-pixelcnn``) is trained with
   step counts that fill its share of the budget (first stage 60 %: mask stage / VQ-VAE; second 40 %:
   translator / PixelCNN), saved, and evaluated with ``microsynth evaluate-generator`` on the
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
from napari_microsynth.generators import get_generator

SPLITS = {"uhcs": ("train16A", "test4A"), "metaldam": ("train", "test")}
SHARES = {"train": 0.75, "evaluate": 0.15, "timing": 0.10}  # of the whole budget
FIRST_SHARE = 0.6  # of a dataset's training time, for the first stage (mask stage / VQ-VAE)


def log(out: Path, message: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    with (out / "log.txt").open("a") as handle:
        handle.write(line + "\n")


#: per family: the progress-message prefix of each of its two training stages, the step setting of each,
#: and training settings of a GPU run (batch sizes, learning rate, warm-up) beside the steps
FAMILIES = {
    "two-stage-gan": dict(stages=("mask", "translator"), steps=("steps", "translator_steps"),
                          settings=lambda args, first: dict(batch_size=args.batch_size, learning_rate=args.lr,
                                                            lr_warmup_steps=min(500, first // 10),
                                                            translator_batch_size=args.batch_size)),
    "vqvae-pixelcnn": dict(stages=("VQ-VAE", "PixelCNN"), steps=("steps", "prior_steps"),
                           settings=lambda args, first: dict(batch_size=args.batch_size,
                                                             prior_batch_size=args.batch_size)),
}


def training_rates(samples, args) -> tuple[float, float]:
    """Training steps per second of the family's two stages (timed after the first steps)."""
    family = FAMILIES[args.family]
    stamps: dict[str, list[float]] = {stage: [] for stage in family["stages"]}

    def progress(done: int, total: int, message: str) -> None:
        stamps[family["stages"][0] if message.startswith(family["stages"][0]) else family["stages"][1]].append(
            time.perf_counter())

    cls = get_generator(args.family)
    probe = {name: args.probe_steps for name in family["steps"]}
    gen = cls(samples[0].schema, args.preset, device=args.device)
    gen.train(samples, cls.training_config(**probe, **family["settings"](args, args.probe_steps)), progress)
    rates = []
    for stage in family["stages"]:
        t = stamps[stage][2:]  # skip start-up and the first (warm-up) steps
        rates.append((len(t) - 1) / max(t[-1] - t[0], 1e-6))
    return rates[0], rates[1]


def train_one(name: str, data: Path, args, seconds: float, out: Path) -> Path:
    train_split, _ = SPLITS[name]
    samples = [s for s in load_split(data, train_split) if s.mask is not None]
    family = FAMILIES[args.family]
    first_rate, second_rate = training_rates(samples, args)
    first = max(1, int(first_rate * seconds * FIRST_SHARE))
    second = max(1, int(second_rate * seconds * (1 - FIRST_SHARE)))
    log(out, f"{name}: {args.family} {first_rate:.2f} {family['stages'][0]} steps/s, {second_rate:.2f} "
             f"{family['stages'][1]} steps/s -> {first} + {second} steps in {seconds:.0f} s")
    cls = get_generator(args.family)
    gen = cls(samples[0].schema, args.preset, device=args.device)
    config = cls.training_config(**dict(zip(family["steps"], (first, second))), **family["settings"](args, first),
                                 checkpoint_dir=str(out / "work" / name), checkpoint_every=max(first, second))
    start = time.perf_counter()
    summary = gen.train(samples, config)
    log(out, f"{name}: trained in {time.perf_counter() - start:.0f} s, first-stage loss {summary['final_loss']:.4f}")
    return gen.save(out / "work" / name / "model")


def evaluate(name: str, model: Path, data: Path, args, out: Path) -> Path:
    _, test_split = SPLITS[name]
    folder = out / "work" / f"eval-{name}"
    command = [sys.executable, "-m", "napari_microsynth.cli", "-q", "evaluate-generator", str(model), str(data),
               "--split", test_split, "-n", str(args.eval_n), "--timing-n", "0", "--device", args.device,
               "--out", str(folder), *(["--sampler", "dpm++"] if args.family == "two-stage-gan" else [])]
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
    parser.add_argument("--family", default="two-stage-gan", choices=sorted(FAMILIES), help="generator family")
    parser.add_argument("--preset", default="small", help="the family's preset: tiny, small, large")
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
