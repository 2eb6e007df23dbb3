"""Images/s of `inf30 build` against plain decoding of the same files, in one run.

    .venv/bin/python benchmarks/build_throughput.py [--data ../shared/data] [--repeat 3]

Prints: decode-only (Pillow, the build's decoder; and OpenCV), build with 1 worker and with all workers,
their ratios (goal: 1 worker >= 60 % of decode-only), and the share of build time that entropy and
perceptual hashing add (build with those steps switched off, same process).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import inf30.build as build_mod  # noqa: E402
from inf30.build import BuildOptions, build  # noqa: E402
from inf30.sources import load_sources  # noqa: E402


def decode_only_pil(files: list[Path]) -> float:
    t = time.perf_counter()
    for f in files:
        with open(f, "rb") as fh:
            img = Image.open(fh)
            np.asarray(img.convert("L") if img.mode != "L" else img)
    return len(files) / (time.perf_counter() - t)


def decode_only_cv2(files: list[Path]) -> float:
    t = time.perf_counter()
    for f in files:
        cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
    return len(files) / (time.perf_counter() - t)


def build_rate(src: Path, workers: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="inf30-bench-"))
    try:
        specs = load_sources([str(src)])
        t = time.perf_counter()
        s = build(specs, out, BuildOptions(workers=workers, dedupe=False, progress=False))
        return s.items / (time.perf_counter() - t)
    finally:
        shutil.rmtree(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("INFMAE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs for each measurement")
    args = ap.parse_args()
    hit = Path(args.data) / "hit-uav"
    files = sorted((hit / "train").glob("*.jpg")) + sorted((hit / "val").glob("*.jpg"))
    src = Path(tempfile.mkdtemp(prefix="inf30-src-"))
    for f in files:
        (src / f"{f.parent.name}_{f.name}").symlink_to(f.resolve())
    print(f"HIT-UAV frames: {len(files)} JPEG 640x512, cores: {os.cpu_count()}")
    best = lambda fn, *a: max(fn(*a) for _ in range(args.repeat))  # noqa: E731
    pil = best(decode_only_pil, files)
    ocv = best(decode_only_cv2, files)
    b1 = best(build_rate, src, 1)
    ball = best(build_rate, src, 0)
    real_entropy, real_hashes = build_mod.entropy8, build_mod.compute_hashes
    build_mod.entropy8 = lambda g: 0.0
    b1_no_entropy = best(build_rate, src, 1)
    build_mod.compute_hashes = lambda g, kinds: {}
    b1_bare = best(build_rate, src, 1)
    build_mod.entropy8, build_mod.compute_hashes = real_entropy, real_hashes
    shutil.rmtree(src)
    print(f"decode only, Pillow (the build's decoder): {pil:8.1f} img/s")
    print(f"decode only, OpenCV imread gray:          {ocv:8.1f} img/s")
    print(f"inf30 build, 1 worker:                     {b1:8.1f} img/s  = {b1 / pil:.2f}x Pillow decode, {b1 / ocv:.2f}x OpenCV decode")
    print(f"inf30 build, all workers ({os.cpu_count()}):            {ball:8.1f} img/s  = {ball / pil:.2f}x Pillow decode")
    print(f"entropy share of 1-worker build time:      {100 * (1 / b1 - 1 / b1_no_entropy) * b1:6.1f} %")
    print(f"pHash share of 1-worker build time:        {100 * (1 / b1_no_entropy - 1 / b1_bare) * b1:6.1f} %")


if __name__ == "__main__":
    main()
