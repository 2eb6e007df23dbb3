"""Images/s of `inf30 build` against plain decoding of the same files, in one run.

    .venv/bin/python benchmarks/build_throughput.py [--data ../shared/data] [--repeat 3]

Prints: decode-only (Pillow, plain decoding as a user writes it; and OpenCV, the build's decoder for gray
JPEG), the required per-image work alone (the ceiling of any build doing that work), build with 1 worker and
with all workers, their ratios (goal: 1 worker >= 60 % of decode-only), and the share of build time that
entropy and perceptual hashing take (each step timed on its own).
"""

from __future__ import annotations

import argparse
import hashlib
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
from inf30.atomic import write_small_atomic  # noqa: E402
from inf30.build import BuildOptions, build  # noqa: E402
from inf30.decode import decode_to_gray, pixel_id  # noqa: E402
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


# Build outputs are deleted only at the end: on a file system mounted with ``discard`` (this machine's
# ext4), deleting a finished build's files slows the next build's file creation several-fold for a while.
_OUTPUTS: list[Path] = []


def build_rate(src: Path, workers: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="inf30-bench-"))
    _OUTPUTS.append(out)
    specs = load_sources([str(src)])
    t = time.perf_counter()
    s = build(specs, out, BuildOptions(workers=workers, dedupe=False, progress=False))
    return s.items / (time.perf_counter() - t)


def required_work_rate(files: list[Path]) -> float:
    """Images/s of only the per-image work a build must do, inline, with the build's own functions: read,
    sha256 of the bytes, decode, sha256 pixel id, entropy, pHash and the atomic store of the bytes into a
    fresh content-addressed folder beside the builds' (no planning, rows, parts, manifest or progress).
    This is the ceiling of any implementation of the build that does the same work."""
    out = Path(tempfile.mkdtemp(prefix="inf30-floor-"))
    _OUTPUTS.append(out)
    t = time.perf_counter()
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        hashlib.sha256(data).hexdigest()
        gray = decode_to_gray(data).gray
        ident = pixel_id(gray)
        build_mod.entropy8(gray)
        build_mod.compute_hashes(gray, ("phash",))
        target = os.path.join(out, "images", ident[:2], ident + ".jpg")
        if not os.path.exists(target):
            write_small_atomic(target, data)
    return len(files) / (time.perf_counter() - t)


def step_ms(fn, grays: list[np.ndarray]) -> float:
    """Milliseconds per image of one per-image build step, on already decoded images."""
    t = time.perf_counter()
    for g in grays:
        fn(g)
    return (time.perf_counter() - t) / len(grays) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("INFMAE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--repeat", type=int, default=5, help="rounds; each round measures everything once")
    args = ap.parse_args()
    hit = Path(args.data) / "hit-uav"
    files = sorted((hit / "train").glob("*.jpg")) + sorted((hit / "val").glob("*.jpg"))
    src = Path(tempfile.mkdtemp(prefix="inf30-src-"))
    for f in files:
        (src / f"{f.parent.name}_{f.name}").symlink_to(f.resolve())
    print(f"HIT-UAV frames: {len(files)} JPEG 640x512, cores: {os.cpu_count()}")
    # Rounds interleave the measurements, so that a slow spell of this shared machine hits all of them;
    # each figure is the best of its rounds, and the ratio is also given as the median of per-round ratios.
    rounds = []
    for _ in range(args.repeat):
        rounds.append(
            dict(
                pil=decode_only_pil(files),
                ocv=decode_only_cv2(files),
                work=required_work_rate(files),
                b1=build_rate(src, 1),
                ball=build_rate(src, 0),
            )
        )
    grays = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    ent_ms = min(step_ms(build_mod.entropy8, grays) for _ in range(3))
    hash_ms = min(step_ms(lambda g: build_mod.compute_hashes(g, ("phash",)), grays) for _ in range(3))
    shutil.rmtree(src)
    for out in _OUTPUTS:
        shutil.rmtree(out, ignore_errors=True)
    for r in rounds:
        print("  round: " + ", ".join(f"{k} {v:.0f}" for k, v in r.items()) + " img/s")
    best = {k: max(r[k] for r in rounds) for k in rounds[0]}
    med = lambda k, base: float(np.median([r[k] / r[base] for r in rounds]))  # noqa: E731
    pil, ocv, work, b1, ball = best["pil"], best["ocv"], best["work"], best["b1"], best["ball"]
    print(f"decode only, Pillow (plain decoding):      {pil:8.1f} img/s")
    print(f"decode only, OpenCV imread gray:           {ocv:8.1f} img/s")
    print(
        f"required per-image work alone (ceiling):   {work:8.1f} img/s  = {work / pil:.2f}x Pillow decode "
        f"(median {med('work', 'pil'):.2f}x), {work / ocv:.2f}x OpenCV decode (median {med('work', 'ocv'):.2f}x)"
    )
    print(
        f"inf30 build, 1 worker:                     {b1:8.1f} img/s  = {b1 / pil:.2f}x Pillow decode "
        f"(median of rounds {med('b1', 'pil'):.2f}x), {b1 / ocv:.2f}x OpenCV decode (median {med('b1', 'ocv'):.2f}x)"
        f", {b1 / work:.2f}x the ceiling (median {med('b1', 'work'):.2f}x)"
    )
    print(
        f"inf30 build, all workers ({os.cpu_count()}):            {ball:8.1f} img/s  = {ball / pil:.2f}x Pillow decode"
        f", {ball / ocv:.2f}x OpenCV decode"
    )
    build_ms = 1000 / b1
    for name, ms in (("entropy", ent_ms), ("pHash", hash_ms)):
        print(
            f"{name:8s} {ms:.3f} ms/img = {100 * ms / build_ms:4.1f} % of 1-worker build time "
            f"(adds {100 * ms / (build_ms - ms):4.1f} % to the build without it)"
        )


if __name__ == "__main__":
    main()
