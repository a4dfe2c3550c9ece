"""Phase-ratio slider latency: a cached ``PhaseRatioSession.predict`` against a full re-inference.

On a 1024x768 MetalDAM micrograph (information band cropped, then padded back to 768 rows by
reflection) with a randomly initialised PLM model of the bundled demo size (preset "small", 256 px
windows), it times, in one run and on the same device:

- full: ``predict_image`` (every window through the whole network, then the ratio head), and
- slider: ``PhaseRatioSession.predict`` for a sequence of slider moves (ratio head on cached features),

checks that both give the same phase map, and prints both times and their ratio. Runs on the CPU with
``--threads`` threads (the target is a 2-core CPU: under 100 ms per slider move) and also on CUDA when a
GPU is present.

    python bench/bench_plm_slider.py --threads 2 --repeats 7
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from napari_microsynth.core.fractions import set_fraction
from napari_microsynth.core.io import read_micrograph
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.engines.inference import PhaseRatioSession, predict_image
from napari_microsynth.models.segmenter import Segmenter
from napari_microsynth.resources import resources_dir

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = (768, 1024)  # rows, columns


def load_micrograph(path: Path) -> np.ndarray:
    """The micrograph cropped / reflect-padded to exactly 1024x768."""
    image, _ = read_micrograph(path)
    image = image[: SIZE[0], : SIZE[1]]
    pad = ((0, SIZE[0] - image.shape[0]), (0, SIZE[1] - image.shape[1]))
    return np.pad(image, pad, mode="reflect")


def slider_ratios(start: np.ndarray, n: int) -> list[np.ndarray]:
    """Ratios a user produces by dragging the third phase's slider from 0 to 0.5 in ``n`` moves."""
    return [set_fraction(start, 2, value) for value in np.linspace(0.0, 0.5, n)]


def build_model(model_folder: Path | None, preset: str) -> Segmenter:
    """The bundled/trained model folder, or a randomly initialised MetalDAM-schema network of ``preset``."""
    if model_folder is not None:
        return Segmenter.from_pretrained(model_folder)
    torch.manual_seed(0)
    return Segmenter.build(PhaseSchema.bundled("metaldam"), preset=preset, plm="RE+SA+FA")


def bench(device: str, image: np.ndarray, model: Segmenter, repeats: int) -> None:
    model = model.eval().to(device)
    start = np.full(model.n_classes, 1.0 / model.n_classes)
    ratios = slider_ratios(start, repeats)

    predict_image(model, image[:256, :256], ratios[0])  # warm-up (allocator, kernels)
    full_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        full_labels, full_probs = predict_image(model, image, ratios[-1])
        full_times.append(time.perf_counter() - t0)
    full_s = statistics.median(full_times)

    t0 = time.perf_counter()
    session = PhaseRatioSession(model, image)
    features_s = time.perf_counter() - t0
    session.predict(ratios[0])  # warm-up
    times = []
    for ratio in ratios:
        t0 = time.perf_counter()
        labels, probs = session.predict(ratio)
        times.append(time.perf_counter() - t0)
    slider_s = statistics.median(times)

    same = np.array_equal(labels, full_labels)
    max_diff = float(np.abs(probs - full_probs).max())
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device {device}: model {model.arch}/{model.arch_kwargs['encoder_name']} ({n_params / 1e6:.2f} M parameters, "
          f"window {model.tile_size} px at input scale {model.input_scale}), "
          f"image {image.shape[1]}x{image.shape[0]}, {session.features.shape[0]} cached channels")
    print(f"  full re-inference (median of 3): {1000 * full_s:9.1f} ms")
    print(f"  session set-up (once) : {1000 * features_s:9.1f} ms")
    print(f"  slider update (median of {len(times)}, min {1000 * min(times):.1f}): {1000 * slider_s:.1f} ms")
    print(f"  speed-up full / slider: {full_s / slider_s:9.1f}x")
    print(f"  same phase map as full re-inference: {same} (max probability difference {max_diff:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=SHARED_DATA / "metaldam" / "images" / "micrograph0.jpg")
    parser.add_argument("--model", type=Path, default=resources_dir() / "models" / "plm-uhcs-demo",
                        help="model folder to time (default: the bundled demo model)")
    parser.add_argument("--preset", help="time a randomly initialised network of this preset instead of --model")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the target machine has 2 cores)")
    parser.add_argument("--repeats", type=int, default=7, help="slider moves to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = load_micrograph(args.image)
    print(f"micrograph {args.image.name}; CPU threads {torch.get_num_threads()}")
    model = build_model(None if args.preset else args.model, args.preset)
    bench("cpu", image, model, args.repeats)
    if torch.cuda.is_available():
        bench("cuda", image, model, args.repeats)
    else:
        print("no CUDA GPU: GPU timing skipped")


if __name__ == "__main__":
    main()
