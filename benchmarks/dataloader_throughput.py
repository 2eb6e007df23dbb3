"""Data pipeline throughput (img/s per DataLoader worker) on real infrared frames, beside the model's img/s.

The pre-training loop must never wait for data: the loader's img/s (with the workers the trainer would use)
has to exceed what the model consumes. This script measures both on this machine, in the same run:

- loader: ``infmae.data.make_loader`` (decode, random resized crop, flip, gray->3ch, normalize, collate) over
  the SIRST images and HIT-UAV frames in ../shared/data, for 0, 1, 2, ... workers;
- model: full training steps (forward, backward, AdamW) of ``infmae_tiny`` / ``infmae_base`` on the CPU
  (or the GPU when there is one) at the same input size.

Usage: python benchmarks/dataloader_throughput.py [--size 224] [--batch 32] [--workers 0,1,2] [--models infmae_tiny,infmae_base]
The load average is printed: figures measured while other work shared the machine are lower than idle ones.

Packed path, in the same run on the same frames: ``infmae.pack.pack`` builds a pack of them
(build img/s, bytes per image), then one process with one thread measures, alternating rounds with the
decode path so that both see the same machine load:

- decode: ``make_loader(..., workers=0)`` (decode + bicubic crop + normalize + collate in this process);
- gather: ``PackedImages.gather`` (the packed loader's only CPU work per step: a memory copy into a canvas);
- gather+augment on the CPU: ``PackedImages.batch`` (what a CPU-only run does; on a GPU the augmentation
  runs there);

and prints per-core img/s, the gather/decode ratio and the projection for a 16-core node (16 x per core).
``--no-packed`` skips it, ``--packed-only`` skips the rest.

``--pipeline-steps N`` instead runs the real thing: ``infmae.train.pretrain`` (the code behind
``infmae pretrain``) on the same frames for N optimizer steps with ``--pipeline-preset``, ``--batch``,
``--workers``, ``--precision`` and optionally ``--compile``, then reports from its metrics.jsonl the
steady-state img/s (first 20 % of the log dropped: warm-up, compilation), the loader stall (fraction of
wall time spent waiting for a batch) and, on a GPU, the MFU (training FLOPs per image counted by
torch.utils.flop_counter x img/s / the GPU's peak dense bf16 FLOP/s). This is what benchmarks/gpu_pretrain.sh
runs on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from infmae.data import make_loader, open_source  # noqa: E402


def real_frames(data_dir: Path, tmp: Path, min_count: int = 0) -> Path:
    """A folder of symlinks to every SIRST image and HIT-UAV val frame (nothing copied), each linked
    several times when ``min_count`` asks for more (so short benchmark epochs do not restart the loader)."""
    files = sorted((data_dir / "sirst" / "images").iterdir()) + sorted((data_dir / "hit-uav" / "val").iterdir())
    repeat = max(1, -(-min_count // len(files)))
    for r in range(repeat):
        for f in files:
            (tmp / f"{r}-{f.parent.parent.name}-{f.name}").symlink_to(f)
    return tmp


def loader_throughput(src, size: int, batch: int, workers: int, seconds: float) -> dict:
    """img/s of the loader alone (after the first batch, which includes worker start-up)."""
    li = make_loader(src, size, batch, seed=0, workers=workers)
    n, t0, epoch = 0, None, 0
    while True:
        li.sampler.set_epoch(epoch)
        for x in li.loader:
            if t0 is None:
                t0 = time.perf_counter()
                continue
            n += x.shape[0]
            if time.perf_counter() - t0 > seconds:
                dt = time.perf_counter() - t0
                return {"workers": workers, "img_per_s": n / dt, "img_per_s_per_worker": n / dt / max(1, workers)}
        epoch += 1


def _rate(fn, batch: int, seconds: float) -> float:
    """img/s of calling ``fn()`` (one batch) repeatedly for ``seconds`` after one warm-up call."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - t0)


def packed_comparison(frames: Path, tmp: Path, size: int, batch: int, seconds: float, rounds: int,
                      short_side: int) -> dict:
    """Pack the frames, then decode vs gather vs gather+augment per core, rounds interleaved (same load)."""
    from infmae.data import PackedImages
    from infmae.pack import pack

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    summary = pack(frames, tmp / "pack", short_side=short_side, progress=False)
    build_s = time.perf_counter() - t0
    packed = PackedImages(tmp / "pack")
    src = open_source(frames, packs=False)
    li = make_loader(src, size, batch, seed=0, workers=0)
    it = iter(li.loader)
    g = torch.Generator().manual_seed(0)

    def decode() -> None:
        nonlocal it
        try:
            next(it)
        except StopIteration:
            it = iter(li.loader)
            next(it)

    def idx() -> list[int]:
        return torch.randint(0, len(packed), (batch,), generator=g).tolist()

    rates: dict[str, list[float]] = {"decode": [], "gather": [], "gather_augment_cpu": []}
    for _ in range(rounds):
        rates["decode"].append(_rate(decode, batch, seconds))
        rates["gather"].append(_rate(lambda: packed.gather(idx()), batch, seconds))
        rates["gather_augment_cpu"].append(_rate(lambda: packed.batch(idx(), size, g), batch, seconds))
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    r = {"images": summary.images, "short_side": short_side, "pack_bytes_per_image": summary.bytes / summary.images,
         "pack_build_img_per_s": summary.images / build_s, "rounds": rates, "median_img_per_s_per_core": med,
         "gather_vs_decode": med["gather"] / med["decode"],
         "node16_img_per_s": {k: 16 * v for k, v in med.items()}}
    print(f"\npacked vs decode, {size}px, batch {batch}, 1 process x 1 thread, {rounds} interleaved rounds of "
          f"{seconds:g} s (medians):")
    print(f"  pack build: {summary.images} images in {build_s:.1f} s ({r['pack_build_img_per_s']:.0f} img/s, 1 core), "
          f"{r['pack_bytes_per_image'] / 1024:.1f} KiB/image at short side {short_side}")
    print(f"{'path':>22} {'img/s/core':>11} {'16-core node':>13}")
    for k, v in med.items():
        print(f"{k:>22} {v:>11.0f} {16 * v:>13.0f}")
    print(f"  gather is {r['gather_vs_decode']:.0f}x cheaper per image than decode (host side, per core)")
    return r


def model_throughput(preset: str, size: int, batch: int, steps: int, device: torch.device) -> dict:
    """img/s of full training steps (bf16 autocast on GPU, fp32 on CPU)."""
    from infmae.model import create_model

    model = create_model(preset).to(device)
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4, betas=(0.9, 0.95))
    x = torch.randn(batch, 3, size, size, device=device)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with ctx:
            loss, _, _ = model(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"model": preset, "batch": batch, "img_per_s": steps * batch / dt, "s_per_step": dt / steps}


def flops_per_image(preset: str, size: int, device: torch.device, precision: str) -> float:
    """FLOPs of one training step (forward + backward) per image, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from infmae.model import create_model

    model = create_model(preset).to(device)
    x = torch.randn(2, 3, size, size, device=device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else torch.autocast(
        device.type, enabled=False)
    counter = FlopCounterMode(display=False)
    with counter:
        with ctx:
            loss, _, _ = model(x)
        loss.backward()
    return counter.get_total_flops() / 2


def peak_bf16(device: torch.device) -> float | None:
    """The GPU's peak dense bf16 FLOP/s (table in benchmarks/model_throughput.py), None on CPU or unknown."""
    if device.type != "cuda":
        return None
    try:
        from benchmarks.model_throughput import peak_flops
    except ImportError:
        return None
    return peak_flops(device)[1]


def pack_parallel(frames: Path, out: Path, short_side: int, jobs: int) -> dict:
    """``infmae pack`` of ``frames`` as ``jobs`` parallel ``--shard K/N`` processes; build img/s and size."""
    from concurrent.futures import ProcessPoolExecutor

    from infmae.pack import pack

    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs) as ex:
        done = list(ex.map(_pack_shard, [(frames, out, short_side, f"{k}/{jobs}") for k in range(jobs)]))
    dt = time.perf_counter() - t0
    summary = pack(frames, out, short_side=short_side, images_per_shard=256, progress=False)  # all there: no-op
    assert summary.complete and sum(done) == summary.images
    r = {"images": summary.images, "jobs": jobs, "seconds": dt, "img_per_s": summary.images / dt,
         "bytes_per_image": summary.bytes / summary.images}
    print(f"pack: {summary.images} images in {dt:.1f} s with {jobs} --shard jobs ({r['img_per_s']:.0f} img/s), "
          f"{r['bytes_per_image'] / 1024:.1f} KiB/image")
    return r


def _pack_shard(a: tuple) -> int:
    from infmae.pack import pack

    frames, out, short_side, shard = a
    return pack(frames, out, short_side=short_side, shard=shard, images_per_shard=256, progress=False).built_now


def pipeline(args: argparse.Namespace, frames: Path, device: torch.device, name: str) -> dict:
    """Run the real pre-training loop for --pipeline-steps steps; img/s, loader stall and MFU from its log."""
    import statistics

    from infmae.train import PretrainConfig, pretrain, resolve_precision

    precision = resolve_precision(args.precision, device)
    with tempfile.TemporaryDirectory() as run:
        cfg = PretrainConfig(
            data=str(frames), out=run, preset=args.pipeline_preset, epochs=10_000, warmup_epochs=1,
            batch=args.batch, input_size=args.size, workers=max(int(w) for w in args.workers.split(",")),
            precision=precision, compile=args.compile, max_steps=args.pipeline_steps, log_every=10,
            latest_every=10**9, save_every=10**9, vis_every=0, tensorboard=False, nproc=1,
        )
        t0 = time.perf_counter()
        pretrain(cfg)
        wall = time.perf_counter() - t0
        lines = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    steady = steps[len(steps) // 5:] or steps
    ips = statistics.median(x["img_per_s"] for x in steady)
    stall = statistics.mean(x["loader_stall"] for x in steady)
    flops = flops_per_image(args.pipeline_preset, args.size, device, precision)
    peak = peak_bf16(device)
    mfu = ips * flops / peak if peak else None
    r = {"preset": args.pipeline_preset, "device": name, "steps": args.pipeline_steps, "batch": args.batch,
         "size": args.size, "workers": cfg.workers, "precision": precision, "compile": args.compile,
         "img_per_s": ips, "loader_stall": stall, "train_gflops_per_img": flops / 1e9, "mfu": mfu,
         "wall_s": wall}
    kind = "packed" if (frames / "pack.json").exists() else "decode"
    r["loader"] = kind
    print(f"pipeline ({kind} loader): {args.pipeline_preset} {args.size}px batch {args.batch} {precision}"
          f"{' compiled' if args.compile else ''} on {name}, {cfg.workers} workers, {args.pipeline_steps} steps")
    print(f"  img/s {ips:.1f} (median of the last 80 % of the log), loader stall {100 * stall:.1f} %, "
          f"{flops / 1e9:.1f} GFLOP/img (fwd+bwd)" + (f", MFU {100 * mfu:.1f} %" if mfu else "")
          + f", wall {wall:.0f} s")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("INFMAE_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--seconds", type=float, default=8.0, help="measuring time per loader setting")
    ap.add_argument("--models", default="infmae_tiny,infmae_base")
    ap.add_argument("--model-batch", type=int, default=8)
    ap.add_argument("--model-steps", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--pipeline-steps", type=int, default=0, help="run the real pre-training loop instead")
    ap.add_argument("--pipeline-preset", default="infmae_base")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-packed", action="store_true", help="skip the packed-vs-decode comparison")
    ap.add_argument("--packed-only", action="store_true", help="only the packed-vs-decode comparison")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the packed comparison")
    ap.add_argument("--short-side", type=int, default=256, help="the pack's short side")
    ap.add_argument("--pipeline-loader", default="both", choices=["packed", "decode", "both"],
                    help="--pipeline-steps: train from a pack of the frames, from the frames, or both")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{os.cpu_count()}"
    results: dict = {"size": args.size, "device": name, "torch_threads": torch.get_num_threads(),
                     "loadavg_start": os.getloadavg(), "loader": [], "model": []}
    print(f"machine: {name}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    if args.pipeline_steps:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "frames").mkdir()
            frames = real_frames(Path(args.data), Path(tmp) / "frames", min_count=50 * args.batch)
            results["pipeline"] = []
            if args.pipeline_loader in ("packed", "both"):
                results["pack"] = pack_parallel(frames, Path(tmp) / "pack", args.short_side,
                                                max(1, min(16, (os.cpu_count() or 2) - 1)))
                results["pipeline"].append(pipeline(args, Path(tmp) / "pack", device, name))
            if args.pipeline_loader in ("decode", "both"):
                results["pipeline"].append(pipeline(args, frames, device, name))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return
    if not args.no_packed:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "frames").mkdir()
            frames = real_frames(Path(args.data), Path(tmp) / "frames")
            results["packed"] = packed_comparison(frames, Path(tmp), args.size, args.batch, args.seconds,
                                                  args.rounds, args.short_side)
        if args.packed_only:
            results["loadavg_end"] = os.getloadavg()
            print(f"load average {os.getloadavg()[0]:.1f} at the end")
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2))
            return
    with tempfile.TemporaryDirectory() as tmp:
        src = open_source(real_frames(Path(args.data), Path(tmp)))
        print(f"data: {src.describe} (SIRST ~320x240 PNG in mixed modes, HIT-UAV 640x512 JPEG)")
        print(f"\nloader, {args.size}px, batch {args.batch}:")
        print(f"{'workers':>8} {'img/s':>9} {'img/s/worker':>13}")
        for w in [int(v) for v in args.workers.split(",")]:
            r = loader_throughput(src, args.size, args.batch, w, args.seconds)
            results["loader"].append(r)
            print(f"{w:>8} {r['img_per_s']:>9.1f} {r['img_per_s_per_worker']:>13.1f}")
    print(f"\nmodel training steps on {name}, {args.size}px:")
    print(f"{'model':>14} {'batch':>6} {'img/s':>9} {'s/step':>8}")
    for preset in args.models.split(","):
        r = model_throughput(preset, args.size, args.model_batch, args.model_steps, device)
        results["model"].append(r)
        print(f"{preset:>14} {args.model_batch:>6} {r['img_per_s']:>9.1f} {r['s_per_step']:>8.2f}")
    best_loader = max(r["img_per_s"] for r in results["loader"])
    print("\nloader img/s / model img/s (>1: the model never waits for data):")
    for r in results["model"]:
        print(f"  {r['model']}: {best_loader / r['img_per_s']:.1f}x with the best worker setting")
    results["loadavg_end"] = os.getloadavg()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
