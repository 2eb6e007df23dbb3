"""Detection transfer on HIT-UAV, and the detection fine-tuning step's throughput.

`transfer` (default): the budgeted comparison of the small-target experiment, for detection. Three starting
points for infmae_tiny, each pre-trained (or not) with the same budget (steps x batch; optionally capped in
minutes) on the HIT-UAV train/ images only:

    scratch   no pre-training (InfMAEBackbone initialised as the model does)
    iam       `infmae.train.pretrain` with information-aware masking (masking="gray")
    random    the same budget with random masking (masking="random")

then fine-tuned with `infmae.finetune` (DetectTask: Faster R-CNN + FPN, AdamW 1e-4, wd 0.1, cosine,
layer decay) on HIT-UAV train/ for the same number of steps, evaluated on val/ (COCO AP50 and mAP), three
seeds; prints a markdown table (mean +- std over seeds) and the ratio of each to scratch.

    python benchmarks/detect_transfer.py transfer --pretrain-steps 300 --finetune-steps 400 \\
        --input-size 256 --fpn-channels 64 --box-head-dim 256 --val-images 64       # CPU (hours on 2 cores)
    python benchmarks/detect_transfer.py transfer --pretrain-steps 2000 --finetune-steps 3000 --device cuda \\
        --batch 8 --workers 8                            # GPU: full-size detector, all 290 val images
    python benchmarks/detect_transfer.py transfer --pretrain-steps 4 --finetune-steps 4 --seeds 0 \\
        --val-images 8 --input-size 256 --fpn-channels 64 --box-head-dim 256   # smoke run (about 3 minutes)

`throughput`: one fine-tuning step (forward, backward, AdamW) of our detector at 640x512 (HIT-UAV's native
size) against torchvision's Faster R-CNN ResNet-50 FPN (weights=None, the same transform sizes) in one run,
timed round-robin; img/s, the ratio, and peak memory (CUDA: max allocated; CPU: peak resident memory of a
process that runs only that model's steps).

    python benchmarks/detect_transfer.py throughput --preset infmae_tiny --batch 2 --steps 3
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infmae.backbone import InfMAEBackbone  # noqa: E402
from infmae.tasks import get_task  # noqa: E402
from infmae.tasks.detect import PadTransform  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "hit-uav"
STARTS = ("scratch", "iam", "random")


# ------------------------------------------------------------------------------------------- throughput
def peak_rss_gib() -> float:
    """This process's peak resident memory: VmHWM (reset by exec, unlike ru_maxrss, which a child started
    by this script would inherit), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _peer(num_classes: int, mean: list[float], std: list[float]) -> torch.nn.Module:
    """torchvision's Faster R-CNN ResNet-50 FPN, untrained, with our no-resize transform (same input sizes)."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    model.transform = PadTransform(mean, std)
    return model


def throughput(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    task = get_task("detect")({"fpn_channels": args.fpn_channels})
    ds = task.dataset(Path(args.data), "train", False, 512)  # 640x512 stays 640x512
    batch = task.collate([ds[i] for i in range(args.batch)])
    assert tuple(batch[0][0].shape[-2:]) == (512, 640), batch[0][0].shape
    ours = task.build_model(InfMAEBackbone(args.preset)).to(device)
    models = {f"{args.preset} Faster R-CNN FPN": ours}
    if args.only == "peer":
        models = {}
    if not args.no_peer and args.only != "ours":
        peer = _peer(len(task.options["classes"]), ours.transform.image_mean, ours.transform.image_std)
        models["torchvision fasterrcnn_resnet50_fpn"] = peer.to(device)
    opts = {}
    for name, m in models.items():
        groups = m.param_groups(0.1, 0.75) if hasattr(m, "param_groups") else [{"params": list(m.parameters())}]
        opts[name] = torch.optim.AdamW(groups, lr=1e-4, weight_decay=0.1)
    times: dict[str, list[float]] = {n: [] for n in models}
    peaks: dict[str, float] = {}
    for step in range(args.steps + 1):  # step 0 is the warm-up
        for name, m in models.items():
            m.train()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            loss, _ = task.loss(m, batch, device)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30
            else:
                peaks[name] = peak_rss_gib()
            if step:
                times[name].append(time.perf_counter() - t0)
    out = {}
    for name in models:
        med = statistics.median(times[name])
        out[name] = {"img_per_s": args.batch / med, "step_s": med, "peak_gib": peaks[name],
                     "params_m": sum(p.numel() for p in models[name].parameters()) / 1e6}
    names = list(models)
    if args.only:  # the memory probe of one model, run in its own process by the parent
        print(json.dumps({"peak_gib": next(iter(out.values()))["peak_gib"]}))
        return out
    if device.type == "cpu":  # ru_maxrss is per process: measure each model's peak alone
        for name, which in zip(names, ("ours", "peer"), strict=False):
            cmd = [sys.executable, __file__, "throughput", "--only", which, "--steps", "1", "--batch", str(args.batch),
                   "--preset", args.preset, "--fpn-channels", str(args.fpn_channels), "--data", str(args.data)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[name]["peak_gib"] = json.loads(res.stdout.strip().splitlines()[-1])["peak_gib"]
    print(f"fine-tuning step at 640x512, batch {args.batch}, {args.steps} timed steps, {device} "
          f"({torch.get_num_threads()} threads)")
    print("| model | params (M) | img/s | step (s) | peak memory (GiB) | img/s vs peer |")
    print("|---|---|---|---|---|---|")
    for name in names:
        r = out[name]
        ratio = r["img_per_s"] / out[names[-1]]["img_per_s"]
        mem = "peak RSS " if device.type == "cpu" else ""
        print(f"| {name} | {r['params_m']:.1f} | {r['img_per_s']:.2f} | {r['step_s']:.2f} | {mem}{r['peak_gib']:.2f} "
              f"| {ratio:.2f} |")
    return out


# --------------------------------------------------------------------------------------------- transfer
def pretrain_start(start: str, seed: int, out: Path, args: argparse.Namespace) -> str:
    """The INIT for `infmae.finetune`: "scratch", or a pre-training run dir: --pretrain-steps steps of
    --pretrain-batch (the same compute for both maskings; the cosine schedule spans them), at most
    --pretrain-minutes of wall time."""
    if start == "scratch":
        return "scratch"
    from infmae.train import PretrainConfig, pretrain

    masking = {"iam": "gray", "random": "random"}[start]
    n_images = sum(1 for p in (Path(args.data) / "train").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    epochs = max(1, math.ceil(args.pretrain_steps / max(1, n_images // args.pretrain_batch)))
    cfg = PretrainConfig(
        data=str(Path(args.data) / "train"), out=str(out), preset=args.preset, epochs=epochs,
        warmup_epochs=min(1.0, epochs / 10), batch=args.pretrain_batch, lr=args.pretrain_lr,
        input_size=args.pretrain_size, seed=seed, max_steps=args.pretrain_steps, max_minutes=args.pretrain_minutes,
        model_overrides={"masking": masking}, device=args.device, workers=args.workers,
        progress=False, tensorboard=False, vis_every=0, save_every=0,
    )
    pretrain(cfg)
    return str(out)


def eval_folder(args: argparse.Namespace, work: Path) -> Path:
    """The data folder fine-tuned on: HIT-UAV itself, or (with --val-images N) a HIT-UAV-style folder with
    the same train/ and N val/ images spread evenly over the 290 (links to the files, annotations subset)."""
    src = Path(args.data)
    if not args.val_images:
        return src
    dst = work / "data"
    if (dst / "annotations" / "val.json").is_file():
        return dst
    (dst / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        raw = json.loads((src / "annotations" / f"{split}.json").read_text())
        images = raw["images"]
        if split == "val":
            n = len(images)
            images = [images[int(k * n / args.val_images)] for k in range(min(args.val_images, n))]
        ids = {im["id"] for im in images}
        (dst / split).mkdir(exist_ok=True)
        for im in images:
            link = dst / split / im["filename"]
            if not link.exists():
                link.symlink_to((src / split / im["filename"]).resolve())
        sub = dict(raw, images=images, annotation=[a for a in raw["annotation"] if a["image_id"] in ids])
        (dst / "annotations" / f"{split}.json").write_text(json.dumps(sub))
    return dst


def finetune_run(init: str, seed: int, data: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Fine-tune DetectTask from `init` on train/ through `infmae.finetune` for --finetune-steps steps (the
    cosine schedule spans exactly those steps); the val/ metrics of results.json."""
    from infmae.finetune import FinetuneConfig, finetune

    n_train = len(json.loads((data / "annotations" / "train.json").read_text())["images"])
    epochs = max(1, math.ceil(args.finetune_steps * args.batch / n_train))
    cfg = FinetuneConfig(
        task="detect", data=str(data), init=init, out=str(out), preset=args.preset, epochs=epochs,
        max_steps=args.finetune_steps, batch=args.batch, input_size=args.input_size, seed=seed, device=args.device,
        workers=args.workers, progress=False, tensorboard=False, warmup_epochs=min(1.0, epochs / 10),
        eval_every=epochs, vis_count=0, task_options={"fpn_channels": args.fpn_channels, "box_head_dim": args.box_head_dim},
    )
    result = finetune(cfg)
    metrics = json.loads(Path(result["results"]).read_text())["val"]
    return {k: float(metrics[k]) for k in ("map50", "map")}


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def transfer(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    work = Path(args.work or tempfile.mkdtemp(prefix="detect-transfer-"))
    data = eval_folder(args, work)
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in args.starts}
    for seed in args.seeds:
        for start in args.starts:
            t0 = time.perf_counter()
            init = pretrain_start(start, seed, work / f"pre-{start}-{seed}", args)
            r = finetune_run(init, seed, data, work / f"ft-{start}-{seed}", args)
            rows[start].append(r)
            print(f"seed {seed} {start:8s} AP50 {r['map50']:.4f} mAP {r['map']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    n_val = len(json.loads((data / "annotations" / "val.json").read_text())["images"])
    print(f"\n{args.preset}, pre-training {args.pretrain_steps} steps x {args.pretrain_batch} on HIT-UAV train/, fine-tuning "
          f"{args.finetune_steps} steps (batch {args.batch}, input {args.input_size}, FPN {args.fpn_channels}), "
          f"{n_val} val/ images; seeds {args.seeds}")
    print("| start | AP50 | mAP | AP50 / scratch |")
    print("|---|---|---|---|")
    base = statistics.mean(r["map50"] for r in rows["scratch"]) if rows.get("scratch") else None
    for start, rs in rows.items():
        a50 = [r["map50"] for r in rs]
        am = [r["map"] for r in rs]
        ratio = f"{statistics.mean(a50) / base:.2f}" if base else "-"
        print(f"| {start} | {statistics.mean(a50):.4f} +- {_sd(a50):.4f} | {statistics.mean(am):.4f} +- {_sd(am):.4f} "
              f"| {ratio} |")
    (work / "detect_transfer.json").write_text(json.dumps(rows, indent=1))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", default="transfer", choices=("transfer", "throughput"))
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--preset", default="infmae_tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="throughput: timed steps after one warm-up")
    p.add_argument("--no-peer", action="store_true", help="throughput: skip torchvision's ResNet-50 model")
    p.add_argument("--only", choices=("ours", "peer"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--fpn-channels", type=int, default=256)
    p.add_argument("--box-head-dim", type=int, default=1024)
    p.add_argument("--input-size", type=int, default=512, help="fine-tuning shorter side (HIT-UAV: 512 = native)")
    p.add_argument("--starts", nargs="+", default=list(STARTS), choices=STARTS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-steps", type=int, default=300, help="pre-training steps (the equal budget)")
    p.add_argument("--pretrain-minutes", type=float, default=None, help="also stop pre-training after this long")
    p.add_argument("--pretrain-lr", type=float, default=1e-3, help="peak lr (warm-up, then cosine)")
    p.add_argument("--pretrain-batch", type=int, default=16)
    p.add_argument("--pretrain-size", type=int, default=224)
    p.add_argument("--finetune-steps", type=int, default=400)
    p.add_argument("--finetune-epochs", type=int, default=12)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--val-images", type=int, default=0, help="evaluate on N val/ images spread evenly (0: all 290)")
    p.add_argument("--work", default=None, help="folder for the runs (default: a new temporary folder)")
    args = p.parse_args()
    if args.mode == "throughput":
        throughput(args)
    else:
        transfer(args)


if __name__ == "__main__":
    main()
