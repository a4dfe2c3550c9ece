"""Latent autoencoder reconstruction at downsampling f = 4 against paper 004's f = 8, on UHCS tiles, measured
in one run: which factor keeps the phase boundaries.

For each f the micrograph autoencoder and the phase-map autoencoder of TiM3's ``small`` preset (the f = 8
one has one more stride-2 stage of the same width) are trained for the same number of steps on random
crops of the training split and scored on every non-overlapping tile of the validation and test splits:
image MSE / PSNR, phase-map pixel accuracy, mIoU and boundary F1 (boundary pixels found within 1 px).
Prints a table and the f = 8 / f = 4 ratio of each score.

    python bench/bench_latent_autoencoder.py                         # small preset: 64 px tiles of 128 px crops
    python bench/bench_latent_autoencoder.py --steps 2000 --resolution 128 --downscale 2
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from napari_microsynth.core.datasets import load_dataset
from napari_microsynth.core.tiles import RandomPairTiles, reduced_tiles
from napari_microsynth.generators.tim3 import PRESETS, TiM3TrainConfig
from napari_microsynth.models.latent_autoencoder import (
    AutoencoderTraining,
    LatentAutoencoder,
    LatentAutoencoderConfig,
    image_input,
    mask_input,
    reconstruction_scores,
    train_autoencoder,
)
from napari_microsynth.models.trainer import LoopSettings

DATA = Path(os.environ.get("MICROSYNTH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "uhcs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--steps", type=int, default=600, help="steps of each autoencoder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=PRESETS["small"]["resolution"])
    parser.add_argument("--downscale", type=int, default=TiM3TrainConfig().downscale)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = load_dataset(args.data, split="train")
    held_out = load_dataset(args.data, split="val") + load_dataset(args.data, split="test")
    tiles = RandomPairTiles(train, args.resolution, args.downscale)
    scored = reduced_tiles(held_out, args.resolution, args.downscale)
    images = np.stack([t.image for t in scored]).astype(np.float32)
    masks = np.stack([t.mask for t in scored]).astype(np.int64)
    schema = train[0].schema
    base = PRESETS["small"]["autoencoder"]
    print(f"{len(train)} training micrographs, {len(scored)} held-out {args.resolution} px tiles "
          f"(crops of {args.resolution * args.downscale} px), {args.steps} steps of batch {args.batch_size}")
    rows = {}
    for f in (4, 8):
        widths = tuple(base["block_channels"])
        while 2 ** (len(widths) - 1) < f:
            widths += (widths[-1],)
        for kind in ("image", "mask"):
            config = LatentAutoencoderConfig(kind=kind, n_classes=schema.n_classes, **{**base, "block_channels": widths})
            torch.manual_seed(0)
            ae = LatentAutoencoder(config)

            def batch(rng, n, kind=kind):
                im, ma = tiles.draw(rng, n)
                return image_input(im) if kind == "image" else mask_input(ma, schema.n_classes, schema.ignore_id)

            start = time.perf_counter()
            train_autoencoder(ae, batch, AutoencoderTraining(args.steps, args.batch_size),
                              LoopSettings(args.steps, seed=0, device="cpu"))
            seconds = time.perf_counter() - start
            ae.eval()
            first = tiles.draw(np.random.default_rng(1), 256)
            data = image_input(first[0]) if kind == "image" else mask_input(first[1], schema.n_classes, schema.ignore_id)
            ae.set_latent_statistics([data[i:i + 32] for i in range(0, len(data), 32)])
            scores = reconstruction_scores(ae, images, masks, schema.ignore_id)
            rows[(f, kind)] = {**scores, "s_per_step": seconds / args.steps,
                               "latent": f"{args.resolution // f}x{args.resolution // f}x{config.latent_channels}"}
            print(f"f={f} {kind}: {rows[(f, kind)]}", flush=True)
    print("\n| f | latent | image MSE | image PSNR (dB) | mask pixel acc. | mask mIoU | boundary F1 (1 px) "
          "| s/step image, mask |")
    print("|---|---|---|---|---|---|---|---|")
    for f in (4, 8):
        i, m = rows[(f, "image")], rows[(f, "mask")]
        print(f"| {f} | {i['latent']} | {i['mse']:.5f} | {i['psnr']:.2f} | {m['pixel_accuracy']:.3f} | {m['miou']:.3f} "
              f"| {m['boundary_f1']:.3f} | {i['s_per_step']:.2f}, {m['s_per_step']:.2f} |")
    print("\nratio f=8 / f=4: " + ", ".join(
        f"{k} {rows[(8, kind)][k] / rows[(4, kind)][k]:.3f}"
        for kind, k in (("image", "mse"), ("mask", "miou"), ("mask", "boundary_f1"))))


if __name__ == "__main__":
    main()
