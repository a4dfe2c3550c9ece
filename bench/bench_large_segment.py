"""Huge micrographs: `microsynth segment` block by block, peak memory and throughput against 1024x768.

Builds mosaics of a real UHCS micrograph (mirror-tiled, 8-bit, written as tiled pyramidal BigTIFFs into a
temporary folder) of 1024x768, 5000x5000 and 20000x20000 pixels and segments each with `microsynth
segment` and the bundled plm-uhcs-demo model in a fresh child process: 1024x768 through the whole-image
path into a PNG, the others (above 4096x4096) lazily read and block by block into a zarr phase map. Each
child times the command (its imports done before) in wall-clock and in CPU seconds of the process (less
sensitive to other jobs on a shared machine) and reports its own peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``). Printed, all measured in this one run: per size the
megapixels, wall and CPU seconds, megapixels/s (and its ratio to the 1024x768 case) and peak RSS; the
seconds per megapixel of every size (equal values: time grows linearly with area); and whether every peak
RSS stays under 2 GB.

    nice -n 5 python bench/bench_large_segment.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = [(768, 1024), (5000, 5000), (20000, 20000)]  # rows, columns
LIMIT_GB = 2.0


def child(image: str, out: str, threads: int) -> None:
    """Run `microsynth segment IMAGE OUT` here and print its times and this process's peak RSS as JSON."""
    import napari_microsynth.engines.large_inference  # noqa: F401  (torch and the engines: imported before timing)
    from napari_microsynth.cli import main

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    start, start_cpu = time.perf_counter(), cpu()
    status = main(["-q", "segment", image, out, "--threads", str(threads)])
    seconds, cpu_seconds = time.perf_counter() - start, cpu() - start_cpu
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"status": status, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_gb": peak_kb / 1024**2}))


def measure(image: Path, out: Path, threads: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", str(image), str(out), "--threads", str(threads)],
                            capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if measured["status"] != 0:
        raise RuntimeError(f"segment failed on {image}: {result.stderr}")
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=SHARED_DATA / "uhcs" / "images" / "uhcs0006.tif",
                        help="the real micrograph the mosaics are made of")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the target machine has 2 cores)")
    parser.add_argument("--child", nargs=2, metavar=("IMAGE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.threads)
        return

    import tifffile

    from napari_microsynth.core.large_image import mirrored_mosaic, write_pyramid_tiff

    tile = tifffile.imread(args.image)
    print(f"mosaics of {args.image.name} ({tile.shape[1]}x{tile.shape[0]}), bundled plm-uhcs-demo, "
          f"{args.threads} CPU threads, each size in a fresh process")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-large-") as folder:
        for height, width in SIZES:
            image = Path(folder) / f"mosaic-{width}x{height}.tif"
            write_pyramid_tiff(image, mirrored_mosaic(tile, (height, width)))
            out = Path(folder) / (f"phases-{width}x{height}" + (".png" if height * width <= 4096**2 else ".zarr"))
            measured = measure(image, out, args.threads)
            megapixels = height * width / 1e6
            rows.append((f"{width}x{height}", megapixels, measured["seconds"], measured["cpu_seconds"],
                         measured["peak_rss_gb"]))
            print(f"  {width:>6}x{height:<6} {megapixels:7.1f} MP  wall {measured['seconds']:8.1f} s "
                  f"({megapixels / measured['seconds']:6.3f} MP/s)  CPU {measured['cpu_seconds']:8.1f} s "
                  f"({megapixels / measured['cpu_seconds']:6.3f} MP/CPU-s)  peak RSS {measured['peak_rss_gb']:.2f} GB  "
                  f"({'whole image -> PNG' if out.suffix == '.png' else 'block by block -> zarr'})", flush=True)
            image.unlink()
    for column, unit in ((2, "wall"), (3, "CPU")):
        reference = rows[0][1] / rows[0][column]
        print(f"{unit} throughput relative to 1024x768: " + ", ".join(
            f"{row[0]} {row[1] / row[column] / reference:.2f}x" for row in rows[1:]))
        print(f"{unit} seconds per megapixel: " + ", ".join(f"{row[0]} {row[column] / row[1]:.2f}" for row in rows))
    peak = max(row[4] for row in rows)
    print(f"largest peak RSS {peak:.2f} GB: {'under' if peak < LIMIT_GB else 'OVER'} {LIMIT_GB:g} GB")


if __name__ == "__main__":
    main()
