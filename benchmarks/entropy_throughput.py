"""`inf30 entropy` on a folder vs plain decoding of the same files, in one run; prints the ratios.

Ours: :func:`inf30.entropy.collect` (read, decode like the build, entropy) and the `inf30 entropy` command
end to end. ``collect`` runs one task per file through :class:`inf30.distribute.Distributor`'s local
backend: fork-server worker processes that preload ``inf30.entropy`` and ``inf30.decode``, ordered results,
a failed file retried once, inline (no processes) for one worker or fewer than 32 files. Peer: plain
decoding of the same files with the build's decoder (:func:`inf30.decode.decode_to_gray`) in a bare
``multiprocessing`` pool of the same size (the platform's default start method, the same chunk size, no
retries, no ordering), so the ratio is what entropy and the Distributor add over decoding. Also the cost
of :func:`entropy8` alone on the decoded images (what entropy adds to a build's single decode pass).

    .venv/bin/python benchmarks/entropy_throughput.py [FOLDER...] [--workers N] [--repeat 3]

Default folders: the real data in ../shared/data (SIRST images, HIT-UAV train and val).
For the build-time share, benchmarks/build_throughput.py can call :func:`entropy_seconds_on_dataset`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inf30.decode import decode_to_gray  # noqa: E402
from inf30.entropy import collect, entropy8  # noqa: E402
from inf30.files import image_files  # noqa: E402


def _decode_only(path: str) -> int:
    """Peer worker: read and decode one file (the build's decoder); returns the pixel count."""
    try:
        return int(decode_to_gray(Path(path).read_bytes()).gray.size)
    except Exception:  # noqa: BLE001 - corrupt files count as work done, like in ours
        return 0


def plain_decode(files: Sequence[str], workers: int) -> int:
    """Decode every file in a plain ``multiprocessing`` pool of ``workers`` processes, with the chunk size
    :func:`inf30.entropy.run_tasks` gives its Distributor (inline for one worker); the number of pixels."""
    if workers == 1:
        return sum(_decode_only(f) for f in files)
    chunk = max(1, min(64, len(files) // (workers * 8)))
    with mp.get_context().Pool(workers) as pool:
        return sum(pool.imap(_decode_only, files, chunksize=chunk))


def entropy_seconds(grays: Sequence[np.ndarray], repeat: int = 3) -> float:
    """Best-of-``repeat`` seconds for :func:`entropy8` over already decoded images (one process)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for g in grays:
            entropy8(g)
        best = min(best, time.perf_counter() - t)
    return best


def entropy_seconds_on_dataset(dataset_dir: str | os.PathLike, repeat: int = 3) -> dict[str, float]:
    """For build_throughput.py: seconds :func:`entropy8` takes over a built dataset's kept images
    (decoded once, untimed), in one process. Divide by the build's CPU seconds for the share."""
    from PIL import Image

    from inf30.manifest import kept, read_manifest

    root = Path(dataset_dir)
    grays = []
    for p in kept(read_manifest(root))["path"].dropna():
        with Image.open(root / p) as im:
            grays.append(np.asarray(im.convert("L")))
    secs = entropy_seconds(grays, repeat=repeat)
    return {
        "images": float(len(grays)),
        "entropy_seconds": secs,
        "ms_per_image": 1e3 * secs / max(1, len(grays)),
    }


def build_share(folders: Sequence[str], repeat: int = 3) -> dict[str, float]:
    """Build ``folders`` once (one worker, no dedupe) and put :func:`entropy8`'s seconds on the kept images
    against the build's wall and CPU seconds (an estimate of entropy's share of build time)."""
    import resource
    import tempfile

    from inf30.build import BuildOptions, build
    from inf30.sources import load_sources

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        ru0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        build(
            load_sources(list(folders), out_dir=out),
            out,
            BuildOptions(workers=1, dedupe=False, progress=False),
        )
        wall = time.perf_counter() - t
        ru1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(ru0, ru1, strict=True))
        ent = entropy_seconds_on_dataset(out, repeat=repeat)
    return {"build_wall_s": wall, "build_cpu_s": cpu, **ent}


def _timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(os.environ.get("INFMAE_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument(
        "folders", nargs="*", default=[str(data / "sirst" / "images"), str(data / "hit-uav" / "train"),
                                       str(data / "hit-uav" / "val")],
    )  # fmt: skip
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--build-share", action="store_true", help="Also estimate entropy's share of build time.")
    args = ap.parse_args(argv)

    files = [f for d in args.folders for f in image_files(d)[0]]
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"{len(files)} files ({mb:.1f} MB) in {len(args.folders)} folders; workers {args.workers}; "
          f"median of {args.repeat} runs; load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    plain_decode(files[:50], 1)  # warm the page cache and imports
    rows = []
    for w in sorted({1, args.workers}):
        # interleave ours and the peer so that load from other processes hits both alike
        peer, ours = [], []
        for _ in range(args.repeat):
            peer.append(_timed(lambda w=w: plain_decode(files, w), 1))
            ours.append(_timed(lambda w=w: collect(args.folders, workers=w, progress=False), 1))
        rows.append((w, statistics.median(peer), statistics.median(ours)))
    grays = [decode_to_gray(Path(f).read_bytes()).gray for f in files]
    ent = entropy_seconds(grays, repeat=args.repeat)
    exe = Path(sys.executable).with_name("inf30")
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-c", "import cli; cli.inf30_app()"]
    cmd = [*launcher, "entropy", *args.folders, "--json", "-q", "--workers", str(args.workers)]
    cli = _timed(lambda: subprocess.run(cmd, cwd=REPO, capture_output=True, check=True), args.repeat)
    print(
        f"\n{'workers':>7} {'plain decode s':>15} {'inf30 entropy s':>16} {'img/s ours':>11} {'ratio ours/peer':>16}"
    )
    for w, peer_s, ours_s in rows:
        print(f"{w:>7} {peer_s:>15.3f} {ours_s:>16.3f} {len(files) / ours_s:>11.0f} {ours_s / peer_s:>16.3f}")
    peer_w = rows[-1][1]
    print(f"\nentropy8 alone on the {len(grays)} decoded images: {ent:.3f} s "
          f"({1e3 * ent / len(grays):.3f} ms/image) = {100 * ent / rows[0][1]:.1f}% of single-process decoding")  # fmt: skip
    print(f"`inf30 entropy` command end to end (with interpreter start-up and imports): {cli:.3f} s = "
          f"{cli / peer_w:.2f}x plain decoding with {args.workers} workers")  # fmt: skip

    if args.build_share:
        b = build_share(args.folders, repeat=args.repeat)
        print(
            f"build of the same folders (1 worker, no dedupe): {b['build_wall_s']:.2f} s wall, "
            f"{b['build_cpu_s']:.2f} s CPU; entropy8 on its {b['images']:.0f} kept images {b['entropy_seconds']:.3f} s "
            f"= {100 * b['entropy_seconds'] / b['build_wall_s']:.1f}% of build wall time, "
            f"{100 * b['entropy_seconds'] / b['build_cpu_s']:.1f}% of build CPU time"
        )


if __name__ == "__main__":
    main()
