"""Per-image cost of each step `inf30 build` must do, against the alternatives for that step, in one run.

    .venv/bin/python benchmarks/build_steps.py [--data ../shared/data] [--repeat 5]

On the 524 HIT-UAV frames (640x512 gray JPEG), each step alone, on data already in memory, in interleaved
rounds (median of rounds, ms per image):

- decode: OpenCV `imdecode` (the build's decoder for gray JPEG), Pillow, and `simplejpeg` when installed
  (`pip install simplejpeg`; not a dependency);
- content id: sha256 of the pixels (the build's), and for scale sha1 and blake2b;
- entropy histogram: `cv2.calcHist` (the build's), Pillow's `Image.histogram`, `torch.bincount`, `np.bincount`;
- pHash: the build's (`inf30.hashing.phash`);
- store: write the bytes to a temporary name and rename (the build's), `O_TMPFILE` + `linkat`, and a plain
  `O_EXCL` create (not atomic: the least any store can cost), each into a fresh sharded folder beside the
  build outputs (`tempfile`'s folder).

It supports the ceiling printed by `benchmarks/build_throughput.py`: every step already uses the fastest
of the alternatives measured here (or one within noise of it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inf30.atomic import write_small_atomic  # noqa: E402
from inf30.decode import pixel_id  # noqa: E402
from inf30.entropy import histogram256  # noqa: E402
from inf30.hashing import phash  # noqa: E402

try:
    import simplejpeg
except ImportError:  # optional peer
    simplejpeg = None


def _store_tmpfile(path: str, data: bytes, dirs: dict[str, int]) -> None:
    parent, name = os.path.split(path)
    dfd = dirs.get(parent)
    if dfd is None:
        os.makedirs(parent, exist_ok=True)
        dfd = dirs[parent] = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open(parent, os.O_TMPFILE | os.O_WRONLY, 0o666)
    try:
        os.write(fd, data)
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd)  # linkat(AT_SYMLINK_FOLLOW) via the dir fd
    finally:
        os.close(fd)


def _store_excl(path: str, data: bytes, made: set[str]) -> None:
    parent = os.path.dirname(path)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.write(fd, data)
    os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("INFMAE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    hit = Path(args.data) / "hit-uav"
    files = sorted((hit / "train").glob("*.jpg")) + sorted((hit / "val").glob("*.jpg"))
    datas = [f.read_bytes() for f in files]
    grays = [cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_GRAYSCALE) for d in datas]
    ids = [pixel_id(g) for g in grays]
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    outs: list[str] = []

    def fresh() -> str:
        outs.append(tempfile.mkdtemp(prefix="inf30-steps-"))
        return outs[-1]

    def over_files(fn: Callable[[bytes], object]) -> Callable[[], None]:
        return lambda: [fn(d) for d in datas] and None

    def over_grays(fn: Callable[[np.ndarray], object]) -> Callable[[], None]:
        return lambda: [fn(g) for g in grays] and None

    def store(kind: str) -> Callable[[], None]:
        def run() -> None:
            out, dirs, made = fresh(), {}, set()
            for d, i in zip(datas, ids, strict=True):
                target = os.path.join(out, "images", i[:2], i + ".jpg")
                if kind == "rename":
                    if not os.path.exists(target):
                        write_small_atomic(target, d)
                elif kind == "tmpfile":
                    _store_tmpfile(target, d, dirs)
                else:
                    _store_excl(target, d, made)
            for fd in dirs.values():
                os.close(fd)

        return run

    steps: dict[str, dict[str, Callable[[], None]]] = {
        "decode": {
            "cv2.imdecode (build)": over_files(
                lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
            ),
            "Pillow": over_files(lambda d: np.asarray(Image.open(io.BytesIO(d)))),
        },
        "content id": {
            "sha256 (build)": over_grays(pixel_id),
            "sha1": over_grays(lambda g: hashlib.sha1(g.data).hexdigest()),
            "blake2b": over_grays(lambda g: hashlib.blake2b(g.data).hexdigest()),
        },
        "entropy histogram": {
            "cv2.calcHist (build)": over_grays(histogram256),
            "Pillow histogram": over_grays(
                lambda g: Image.frombuffer("L", (g.shape[1], g.shape[0]), g, "raw", "L", 0, 1).histogram()
            ),
            "torch.bincount": over_grays(lambda g: torch.bincount(torch.from_numpy(g).view(-1), minlength=256)),
            "np.bincount": over_grays(lambda g: np.bincount(g.ravel(), minlength=256)),
        },
        "pHash": {"inf30 phash (build)": over_grays(phash)},
        "store": {
            "tmp + rename (build)": store("rename"),
            "O_TMPFILE + linkat": store("tmpfile"),
            "O_EXCL create (not atomic)": store("excl"),
        },
    }
    if simplejpeg is not None:
        steps["decode"]["simplejpeg"] = over_files(lambda d: simplejpeg.decode_jpeg(d, colorspace="GRAY"))
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for step, alts in steps.items():
            for name, fn in alts.items():
                t = time.perf_counter()
                fn()
                times.setdefault((step, name), []).append((time.perf_counter() - t) / len(datas) * 1e3)
    for out in outs:
        shutil.rmtree(out, ignore_errors=True)
    print(f"HIT-UAV frames: {len(datas)}, median of {args.repeat} interleaved rounds, ms per image")
    for step, alts in steps.items():
        base = float(np.median(times[(step, next(iter(alts)))]))
        print(f"{step}:")
        for name in alts:
            ms = float(np.median(times[(step, name)]))
            print(f"  {name:30s} {ms:7.3f} ms  ({ms / base:5.2f}x the build's)")
    if simplejpeg is None:
        print("(simplejpeg not installed: `pip install simplejpeg` adds it to the decode rows)")


if __name__ == "__main__":
    main()
