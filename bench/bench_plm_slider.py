"""Phase-ratio slider latency: a cached slider update with the ratio correction against a full re-inference.

On a 1024x768 MetalDAM micrograph (information band cropped, then padded back to 768 rows by
reflection) with the bundled demo model (or a randomly initialised network of ``--preset``), it times,
in one run and on the same device:

- full: ``predict_image`` at trust 1 (every window through the whole network, the ratio head, the
  correction, the softmax), and
- slider: what the "Phase ratios" widget does per slider move at trust 1 (``--trust``):
  ``PhaseRatioSession.labels`` (ratio head on the cached features + the correction's bias solve on
  a pixel subsample + argmax), the phase fractions for the achieved column, and the napari labels
  layer's data refresh (without a canvas: the GPU upload at the next draw is not timed),

checks that both give the same phase map and that its fractions are those asked for, and prints
the times, their ratio and whether a slider update stays under 50 ms (the target on a 2-core CPU).

    python bench/bench_plm_slider.py --threads 2 --repeats 15
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from napari_microsynth.core.fractions import mask_fractions, set_fraction
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
        return Segmenter.load(model_folder)
    torch.manual_seed(0)
    return Segmenter.build(PhaseSchema.bundled("metaldam"), preset=preset, plm="RE+SA+FA")


def time_ms(fn, repeats: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def bench(device: str, image: np.ndarray, model: Segmenter, repeats: int, trust: float) -> None:
    from napari.layers import Labels

    model = model.eval().to(device)
    start = np.full(model.n_classes, 1.0 / model.n_classes)
    ratios = slider_ratios(start, repeats)

    predict_image(model, image[:256, :256], ratios[0], trust)  # warm-up (allocator, kernels)
    full_ms = time_ms(lambda: predict_image(model, image, ratios[-1], trust), 3)
    full_labels, _ = predict_image(model, image, ratios[-1], trust)

    t0 = time.perf_counter()
    session = PhaseRatioSession(model, image)
    features_ms = 1000 * (time.perf_counter() - t0)
    layer = Labels(session.labels(ratios[0], trust))

    def slider_update(ratio) -> np.ndarray:
        labels = session.labels(ratio, trust)
        layer.data = labels
        return mask_fractions(labels, model.schema)

    slider_update(ratios[0])  # warm-up
    times = [time_ms(lambda r=r: slider_update(r)) for r in ratios]
    slider_ms = statistics.median(times)
    plain_ms = statistics.median(time_ms(lambda r=r: session.labels(r, 0.0)) for r in ratios)
    head_ms = statistics.median(time_ms(lambda r=r: session.logits(r)) for r in ratios)
    achieved = slider_update(ratios[-1])

    n_params = sum(p.numel() for p in model.parameters())
    print(f"device {device}: model {model.arch}/{model.arch_kwargs['encoder_name']} ({n_params / 1e6:.2f} M parameters, "
          f"window {model.tile_size} px at input scale {model.input_scale}), "
          f"image {image.shape[1]}x{image.shape[0]}, {session.features.shape[0]} cached channels, trust {trust:g}")
    print(f"  full re-inference with the correction (median of 3): {full_ms:9.1f} ms")
    print(f"  session set-up (once)                              : {features_ms:9.1f} ms")
    print(f"  slider update (median of {len(times)}, min {min(times):.1f})        : {slider_ms:9.1f} ms "
          f"({'under' if slider_ms < 50 else 'OVER'} 50 ms)")
    print(f"    of which ratio head {head_ms:.1f} ms; the same update at trust 0 (no correction): {plain_ms:.1f} ms")
    print(f"  speed-up full / slider: {full_ms / slider_ms:9.1f}x")
    print(f"  same phase map as full re-inference: {np.array_equal(session.labels(ratios[-1], trust), full_labels)}")
    print(f"  largest |achieved - asked| fraction: {100 * np.abs(achieved - ratios[-1]).max():.2f} points "
          f"(asked {np.round(100 * ratios[-1], 1).tolist()} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=SHARED_DATA / "metaldam" / "images" / "micrograph0.jpg")
    parser.add_argument("--model", type=Path, default=resources_dir() / "models" / "plm-uhcs-demo",
                        help="model folder to time (default: the bundled demo model)")
    parser.add_argument("--preset", help="time a randomly initialised network of this preset instead of --model")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the target machine has 2 cores)")
    parser.add_argument("--repeats", type=int, default=15, help="slider moves to time")
    parser.add_argument("--trust", type=float, default=1.0, help="trust of the ratio correction (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = load_micrograph(args.image)
    print(f"micrograph {args.image.name}; CPU threads {torch.get_num_threads()}")
    model = build_model(None if args.preset else args.model, args.preset)
    bench("cpu", image, model, args.repeats, args.trust)
    if torch.cuda.is_available():
        bench("cuda", image, model, args.repeats, args.trust)
    else:
        print("no CUDA GPU: GPU timing skipped")


if __name__ == "__main__":
    main()
