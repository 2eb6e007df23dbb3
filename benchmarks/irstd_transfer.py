"""Infrared small-target transfer on SIRST (paper Table 3 / Table 4's direction), and the irstd
fine-tuning step's throughput.

`transfer` (default): four starting points for one preset (infmae_tiny on CPU), each pre-trained (or not)
for the same budget (--pretrain-steps optimizer steps, one warm-up epoch then cosine) on the HIT-UAV train/ + val/ frames and the SIRST *train* split (never SIRST val / test):

    scratch    no pre-training
    iam        `infmae.train.pretrain` with information-aware masking (the preset's default, masking="gray")
    random     the same budget with random masking (masking="random")
    nofusion   information-aware masking, encoder without the multi-scale fusion (multiscale=False)

then fine-tuned with `infmae.finetune` (IRSTDTask: AdamW 1e-3, wd 0.05, cosine, layer decay 0.75) on the
SIRST train split for the same number of steps, and evaluated on the SIRST test split (IoU, nIoU, P_d, F_a,
F1, AUC; SIRST's Misc_111, whose mask does not match its image, is left out with a recorded reason). Each
start is fine-tuned with every seed; pre-training runs once per start (seed 0) unless --pretrain-per-seed.
Prints and writes (OUT/table.md, OUT/results.json) a markdown table: mean +- std over seeds, and each
start's IoU relative to scratch. Re-running resumes: finished runs are read back, not re-run.

    python benchmarks/irstd_transfer.py transfer                         # about 20 min on 2 free CPU cores
    python benchmarks/irstd_transfer.py transfer --pretrain-steps 1000 --finetune-steps 600   # ~90 min
    python benchmarks/irstd_transfer.py transfer --pretrain-steps 5 --finetune-steps 3 --seeds 0 \\
        --starts scratch iam --out /tmp/irstd-smoke                      # smoke run (a minute or two)
    python benchmarks/irstd_transfer.py transfer --preset infmae_base --device cuda --pretrain-steps 3000 \\
        --pretrain-size 224 --pretrain-batch 128 --pretrain-lr 6e-4 --finetune-steps 2000 --finetune-size 256 \\
        --batch 16 --workers 8                                          # a GPU machine (benchmarks/gpu_pretrain.sh)

`throughput`: one fine-tuning step (forward, backward, AdamW) of our irstd model (backbone + IRSTDDecoder)
at 256x256 against torchvision's FCN-ResNet50 (weights=None, 1 output class) in one run, timed round-robin;
img/s, the ratio, and peak memory (CUDA: max allocated during a step; CPU: growth of the resident set over
two steps of the model alone, in a fresh process: weights, activations, gradients and AdamW state).

    python benchmarks/irstd_transfer.py throughput --presets infmae_tiny infmae_base --batch 4 --steps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infmae.backbone import InfMAEBackbone  # noqa: E402
from infmae.tasks import get_task  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
STARTS = ("scratch", "iam", "random", "nofusion")
OVERRIDES: dict[str, dict[str, Any]] = {"iam": {}, "random": {"masking": "random"}, "nofusion": {"multiscale": False}}
METRICS = ("iou", "niou", "pd", "fa", "f1", "auc")


# ------------------------------------------------------------------------------------------- transfer
def pretrain_images(data: Path, out: Path) -> Path:
    """A folder of links to the pre-training frames: HIT-UAV train/ + val/, SIRST train split only."""
    folder = out / "pretrain-images"
    for sub in ("hit-uav-train", "hit-uav-val", "sirst-train"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        for p in sorted((data / "hit-uav" / split).iterdir()):
            link = folder / f"hit-uav-{split}" / p.name
            if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not link.exists():
                link.symlink_to(p.resolve())
    test = set((data / "sirst" / "idx_427" / "test.txt").read_text().split())
    val = set((data / "sirst" / "idx_427" / "val.txt").read_text().split())
    for name in (data / "sirst" / "idx_427" / "train.txt").read_text().split():
        assert name not in test and name not in val, name
        link = folder / "sirst-train" / f"{name}.png"
        if not link.exists():
            link.symlink_to((data / "sirst" / "images" / f"{name}.png").resolve())
    return folder


def run_pretrain(args: argparse.Namespace, start: str, seed: int, images: Path) -> Path:
    from infmae.train import PretrainConfig, pretrain

    run = Path(args.out) / f"pretrain-{start}-s{seed}"
    if (run / "done.json").is_file():
        return run
    steps_per_epoch = max(1, sum(1 for p in images.rglob("*") if p.is_file()) // args.pretrain_batch)
    epochs = max(1, round(args.pretrain_steps / steps_per_epoch))  # whole epochs: the schedule runs to its end
    cfg = PretrainConfig(
        data=str(images), out=str(run), preset=args.preset, epochs=epochs, warmup_epochs=min(1.0, epochs / 10),
        batch=args.pretrain_batch, lr=args.pretrain_lr,
        input_size=args.pretrain_size, max_minutes=args.pretrain_minutes,
        model_overrides=dict(OVERRIDES[start]), workers=args.workers, seed=seed, device=args.device,
        save_every=0, latest_every=50, vis_every=0, progress=False, tensorboard=False, threads=args.threads,
    )
    t0 = time.time()
    summary = pretrain(cfg)
    (run / "done.json").write_text(json.dumps({"seconds": time.time() - t0, "summary": summary}, default=str))
    return run


def run_finetune(args: argparse.Namespace, start: str, seed: int, init: str) -> dict[str, Any]:
    from infmae.finetune import FinetuneConfig, finetune

    run = Path(args.out) / f"finetune-{start}-s{seed}"
    results = run / "results.json"
    if not results.is_file():
        steps_per_epoch = max(1, args.n_train // args.batch)
        epochs = max(1, round(args.finetune_steps / steps_per_epoch))  # whole epochs, as for pre-training
        cfg = FinetuneConfig(
            data=str(Path(args.data) / "sirst"), out=str(run), task="irstd", init=init, preset=args.preset,
            epochs=epochs, batch=args.batch, input_size=args.finetune_size,
            lr=args.lr, warmup_epochs=min(1.0, epochs / 10), layer_decay=0.75, workers=args.workers, seed=seed,
            device=args.device, eval_every=epochs, vis_count=2, save_every=0, latest_every=100, progress=False,
            tensorboard=False, threads=args.threads,
        )
        finetune(cfg)
    return json.loads(results.read_text())


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 4) -> str:
    if not values:
        return "-"
    m = statistics.fmean(values) * scale
    s = (statistics.stdev(values) if len(values) > 1 else 0.0) * scale
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def table(rows: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: mean ± std over seeds per start; F_a in units of 1e-6 as the papers print it."""
    head = ["start", "seeds", "IoU", "nIoU", "P_d", "F_a (1e-6)", "F1", "AUC", "IoU / scratch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    base = [r["iou"] for r in rows.get("scratch", [])]
    for start, runs in rows.items():
        ratio = (f"{statistics.fmean([r['iou'] for r in runs]) / statistics.fmean(base):.2f}"
                 if base and statistics.fmean(base) > 0 and runs else "-")
        cells = [_mean_std([r[k] for r in runs], *((1e6, 1) if k == "fa" else ())) for k in METRICS]
        lines.append("| " + " | ".join([start, str(len(runs)), *cells, ratio]) + " |")
    return "\n".join(lines)


def transfer(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    args.n_train = len(set((data / "sirst" / "idx_427" / "train.txt").read_text().split()))
    images = pretrain_images(data, out)
    t0 = time.time()
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in args.starts}
    record: dict[str, Any] = {"args": {k: v for k, v in vars(args).items()}, "runs": []}
    for seed in args.seeds:
        for start in args.starts:
            init = "scratch"
            if start != "scratch":
                init = str(run_pretrain(args, start, seed if args.pretrain_per_seed else 0, images))
            res = run_finetune(args, start, seed, init)
            test = res.get("test") or {}
            rows[start].append({k: float(test.get(k, float("nan"))) for k in METRICS})
            record["runs"].append({"start": start, "seed": seed, "init": init, "test": test, "val": res.get("val")})
            print(f"[{time.time() - t0:7.0f}s] {start} seed {seed}: "
                  + " ".join(f"{k} {test.get(k, float('nan')):.4f}" for k in METRICS), flush=True)
    md = table(rows)
    record["table"] = md
    record["seconds"] = time.time() - t0
    (out / "table.md").write_text(md + "\n")
    (out / "results.json").write_text(json.dumps(record, indent=1, default=str))
    print(md)
    return record


# ----------------------------------------------------------------------------------------- throughput
def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: torch.device) -> float:
    """MiB allocated at most on the GPU since the reset."""
    return torch.cuda.max_memory_allocated() / 2**20


PEER = "torchvision fcn_resnet50"


def _build(name: str, device: torch.device) -> torch.nn.Module:
    """`PRESET + IRSTDDecoder` (our irstd model) or the peer, on `device`."""
    if name == PEER:
        from torchvision.models.segmentation import fcn_resnet50

        return fcn_resnet50(weights=None, weights_backbone=None, num_classes=1, aux_loss=False).to(device)
    return get_task("irstd")().build_model(InfMAEBackbone(name.split(" ")[0])).to(device)


def _status_mib(key: str) -> float:
    """VmRSS (resident now) or VmHWM (its high-water mark, reset by exec unlike ru_maxrss) in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def memstep(args: argparse.Namespace) -> None:
    """One CPU training step of one model in a fresh process: prints JSON {"mib": peak RSS - RSS before}."""
    torch.manual_seed(0)
    before = _status_mib("VmRSS")
    m = _build(args.model, torch.device("cpu"))
    imgs = torch.rand(args.batch, 1, args.size, args.size)
    masks = (torch.rand_like(imgs) > 0.995).float()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    for _ in range(2):
        out = m(imgs.expand(-1, 3, -1, -1))["out"] if args.model == PEER else m(imgs)
        torch.nn.functional.binary_cross_entropy_with_logits(out.float(), masks).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    print(json.dumps({"mib": _status_mib("VmHWM") - before}))


def _cpu_step_mib(name: str, args: argparse.Namespace) -> float:
    import subprocess

    cmd = [sys.executable, __file__, "memstep", "--model", name, "--size", str(args.size), "--batch", str(args.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["mib"])


def throughput(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    task = get_task("irstd")()
    size = args.size
    names = [f"{p} + IRSTDDecoder" for p in args.presets] + ([] if args.no_peer else [PEER])
    models = {n: _build(n, device) for n in names}
    imgs = torch.rand(args.batch, 1, size, size, device=device)
    masks = (torch.rand(args.batch, 1, size, size, device=device) > 0.995).float()
    opts = {n: torch.optim.AdamW(m.param_groups(0.05, 0.75) if hasattr(m, "param_groups") else m.parameters(),
                                 lr=1e-3, weight_decay=0.05) for n, m in models.items()}
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else None
    times: dict[str, list[float]] = {n: [] for n in models}
    peaks: dict[str, float] = {}
    for step in range(args.steps + 1):  # step 0 warms up
        for name, m in models.items():
            m.train()
            _peak_reset(device)
            t = time.perf_counter()
            batch = (imgs, masks)
            if name == PEER:
                with amp or _null():
                    logits = m(imgs.expand(-1, 3, -1, -1))["out"].float()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, masks)
            else:
                with amp or _null():
                    loss, _ = task.loss(m, batch, device)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:
                times[name].append(time.perf_counter() - t)
            if device.type == "cuda":
                peaks[name] = max(peaks.get(name, 0.0), _peak(device))
    if device.type != "cuda":  # one fresh process per model: RSS growth over two steps
        peaks = {name: _cpu_step_mib(name, args) for name in models}
    out = {}
    peer_ips = None
    for name, ts in times.items():
        ips = args.batch / statistics.median(ts)
        out[name] = {"img_per_s": ips, "peak_mib": peaks[name],
                     "params_m": sum(p.numel() for p in models[name].parameters()) / 1e6}
        if name == PEER:
            peer_ips = ips
    print(f"irstd fine-tuning step at {size}x{size}, batch {args.batch}, {device} ({args.precision}), "
          f"median of {args.steps} steps")
    print("| model | params (M) | img/s | peak memory (MiB) | vs FCN-R50 |")
    print("|---|---|---|---|---|")
    for name, r in out.items():
        ratio = f"{r['img_per_s'] / peer_ips:.2f}x" if peer_ips else "-"
        print(f"| {name} | {r['params_m']:.1f} | {r['img_per_s']:.2f} | {r['peak_mib']:.0f} | {ratio} |")
    return out


def _null():
    import contextlib

    return contextlib.nullcontext()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    t = sub.add_parser("transfer", help="the four-start transfer comparison (default)")
    t.add_argument("--data", default=str(DATA), help="the shared data folder (sirst/, hit-uav/)")
    t.add_argument("--out", default=str(ROOT / "runs" / "irstd-transfer"))
    t.add_argument("--preset", default="infmae_tiny")
    t.add_argument("--starts", nargs="+", default=list(STARTS), choices=STARTS)
    t.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    t.add_argument("--pretrain-steps", type=int, default=150,
                   help="the budget of each pre-training: optimizer steps, rounded to whole epochs (same for every start)")
    t.add_argument("--pretrain-minutes", type=float, default=None, help="a wall-time guard on each pre-training")
    t.add_argument("--pretrain-lr", type=float, default=1e-3, help="peak lr (warm-up 1 epoch, then cosine)")
    t.add_argument("--pretrain-size", type=int, default=128)
    t.add_argument("--pretrain-batch", type=int, default=32)
    t.add_argument("--pretrain-per-seed", action="store_true", help="pre-train again for every seed")
    t.add_argument("--finetune-steps", type=int, default=100, help="rounded to whole epochs (32 steps at batch 8)")
    t.add_argument("--finetune-size", type=int, default=128)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--workers", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--device", default="cpu")
    p = sub.add_parser("throughput", help="fine-tuning step img/s and peak memory at 256 px vs FCN-ResNet50")
    p.add_argument("--presets", nargs="+", default=["infmae_tiny", "infmae_base"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--no-peer", action="store_true")
    m = sub.add_parser("memstep", help="(internal) one model's CPU step memory in a fresh process")
    m.add_argument("--model", required=True)
    m.add_argument("--size", type=int, default=256)
    m.add_argument("--batch", type=int, default=4)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("transfer", "throughput", "memstep", "-h", "--help"):
        argv = ["transfer", *argv]
    args = ap.parse_args(argv)
    {"transfer": transfer, "throughput": throughput, "memstep": memstep}[args.cmd](args)


if __name__ == "__main__":
    main()
