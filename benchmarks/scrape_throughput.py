"""Scrape throughput: ``inf30.scrape`` against img2dataset on the same URL list and the same server.

A threaded HTTP/1.1 server on 127.0.0.1 (its own process, so it does not share a GIL with either client)
serves the real infrared images of ../shared/data (SIRST PNGs and HIT-UAV JPEGs), repeated under
distinct URL paths to make a list of ``--n`` URLs. Both tools fetch the whole list without resizing or
re-encoding and hash every file (sha256); the script prints files/s, MB/s and the ratio.

    .venv/bin/python benchmarks/scrape_throughput.py --n 2500 --threads 16
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def data_dir() -> Path:
    return Path(os.environ.get("INFMAE_DATA") or REPO.parent / "shared" / "data")


def real_files() -> list[Path]:
    d = data_dir()
    files = sorted((d / "sirst" / "images").glob("*.png")) + sorted((d / "hit-uav").rglob("*.jpg"))
    if not files:
        raise SystemExit(f"no real data under {d}")
    return files


def url_paths(n: int) -> list[tuple[str, Path]]:
    files = real_files()
    return [(f"/img/{i:05d}/{files[i % len(files)].name}", files[i % len(files)]) for i in range(n)]


def serve(n: int, ready, stop) -> None:
    from http_fixtures import LoopbackServer

    cache: dict[Path, bytes] = {}
    with LoopbackServer() as srv:
        for path, f in url_paths(n):
            srv.files[path] = cache.setdefault(f, f.read_bytes())
        ready.put(srv.port)
        stop.wait()


def run_ours(list_path: Path, out: Path, threads: int) -> tuple[float, int, int, float]:
    from inf30.scrape import ScrapeOptions, scrape
    from inf30.sources import SourceSpec

    t0 = time.perf_counter()
    res = scrape([SourceSpec(name="bench", path=str(list_path), kind="urls")], out,
                 ScrapeOptions(concurrency=threads, per_host=threads), progress=False)
    dt = time.perf_counter() - t0
    return dt, res.ok, res.bytes, res.download_s


def run_img2dataset(list_path: Path, out: Path, threads: int, processes: int) -> tuple[float, int, int, float]:
    from img2dataset import download

    t0 = time.perf_counter()
    download(url_list=str(list_path), input_format="txt", output_folder=str(out), output_format="files",
             resize_mode="no", disable_all_reencoding=True, processes_count=processes, thread_count=threads,
             number_sample_per_shard=100_000, timeout=10, retries=0, extract_exif=False, compute_hash="sha256",
             enable_wandb=False, distributor="multiprocessing", disallowed_header_directives=[])
    dt = time.perf_counter() - t0
    files = [p for p in out.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    phase = max(st["end_time"] for st in stats) - min(st["start_time"] for st in stats) if stats else float("nan")
    return dt, len(files), sum(p.stat().st_size for p in files), phase


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2500, help="URLs in the list")
    ap.add_argument("--threads", type=int, default=16, help="download threads, both tools")
    ap.add_argument("--processes", type=int, default=1, help="img2dataset processes (ours: one process)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each tool; the median is reported")
    args = ap.parse_args()

    ctx = mp.get_context("fork")
    ready, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=serve, args=(args.n, ready, stop), daemon=True)
    server.start()
    port = ready.get(timeout=120)
    tmp = Path(tempfile.mkdtemp(prefix="scrape-bench-"))
    try:
        list_path = tmp / "urls.txt"
        paths = url_paths(args.n)
        list_path.write_text("".join(f"http://127.0.0.1:{port}{p}\n" for p, _ in paths))
        total_bytes = sum(f.stat().st_size for _, f in paths)
        print(f"{args.n} URLs, {total_bytes / 1e6:.1f} MB of real infrared images from {data_dir()}; "
              f"{args.threads} threads each, img2dataset processes={args.processes}; {os.cpu_count()} CPUs")
        ours, peer, ours_phase, peer_phase = [], [], [], []
        for r in range(args.repeats):
            for name in ("ours", "img2dataset"):
                out = tmp / f"{name}-{r}"
                if name == "ours":
                    dt, n_ok, nbytes, phase = run_ours(list_path, out, args.threads)
                    ours.append(dt)
                    ours_phase.append(phase)
                else:
                    dt, n_ok, nbytes, phase = run_img2dataset(list_path, out, args.threads, args.processes)
                    peer.append(dt)
                    peer_phase.append(phase)
                extra = f"  (download phase alone: {phase:.2f} s, {n_ok / phase:.1f} files/s)"
                print(f"  run {r} {name:<12} {dt:7.2f} s  {n_ok:6d} files  {n_ok / dt:8.1f} files/s  "
                      f"{nbytes / 1e6 / dt:7.1f} MB/s{extra}", flush=True)
                if n_ok != args.n or nbytes != total_bytes:
                    print(f"  WARNING: {name} fetched {n_ok} files / {nbytes} bytes, expected {args.n} / {total_bytes}")
        # the same bytes: compare one file of each kind
        for p, f in (paths[0], paths[-1]):
            want = hashlib.sha256(f.read_bytes()).hexdigest()
            got = [hashlib.sha256(q.read_bytes()).hexdigest() for q in (tmp / "ours-0" / "bench").rglob("*")
                   if q.is_file() and hashlib.sha256(q.read_bytes()).hexdigest() == want]
            assert got, f"ours lacks {p}"
        to, tp = statistics.median(ours), statistics.median(peer)
        toh, tph = statistics.median(ours_phase), statistics.median(peer_phase)
        mb = total_bytes / 1e6
        print(f"median  ours {args.n / to:.1f} files/s {mb / to:.1f} MB/s | img2dataset {args.n / tp:.1f} files/s "
              f"{mb / tp:.1f} MB/s | ratio ours/img2dataset {tp / to:.2f}x (wall clock, command to files on disk)")
        print(f"download phase alone (no start-up, no manifest): ours {args.n / toh:.1f} files/s {mb / toh:.1f} MB/s | "
              f"img2dataset {args.n / tph:.1f} files/s {mb / tph:.1f} MB/s | ratio {tph / toh:.2f}x")
    finally:
        stop.set()
        server.join(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
