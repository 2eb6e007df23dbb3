"""InfMAE pre-training: the paper's recipe (section 5.1, IMPLEMENTATION-NOTES), resumable and distributed.

Recipe: AdamW (betas 0.9, 0.95; fused kernel), weight decay 0.05 on weights only (``model.param_groups``),
lr = blr x effective batch / 256 set every optimizer step on a linear warm-up then a half-cycle cosine,
gradient accumulation, bf16 autocast (fp16 with a grad scaler as an option, fp32), optional ``torch.compile``.
``--batch`` is the *effective* batch of one optimizer step over all processes and accumulation steps
(the paper's 256): every process gets ``batch / (processes x accum)`` images per micro-step.

Run directory::

    RUN_DIR/
      checkpoint-latest/     every --latest-every steps and at the end (plus checkpoint-latest.prev while swapping)
      checkpoint-0040/ ...   every --save-every epochs and after the last epoch
        model.safetensors, config.json   the model (infmae.checkpoint.load_model reads the folder)
        train_state.pt                   optimizer, grad scaler, step, RNG states (tensors and primitives only)
        train_config.json                the full training configuration
        trainer.json                     step, epoch, loss: written last, marks the folder complete
      metrics.jsonl          one JSON line per logged step and per epoch
      tb/                    TensorBoard event files
      vis/epoch-0005.png ... reconstructions of fixed images (original | visible | reconstruction | pasted)

Each checkpoint folder is written under a temporary name, fsynced, then renamed into place; the previous
``checkpoint-latest`` is kept (as ``.prev``) until the new one is complete. Re-running the same command
resumes from the newest complete checkpoint, mid-epoch included: the sampler skips the steps already done
and every sample's augmentation depends only on (seed, epoch, position), so the resumed run is the run that
was interrupted (bitwise on CPU; see docs/pretrain.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from infmae.data import DataError, make_loader, open_source, sample_seed
from infmae.distributed import (
    DistInfo,
    cleanup,
    default_nproc,
    init_distributed,
    inside_launcher,
    launch,
)

LATEST = "checkpoint-latest"
STATE_FILE = "train_state.pt"
DONE_FILE = "trainer.json"
CONFIG_FILE = "train_config.json"
# settings that must not change when a run is resumed (they change what a step computes)
RESUME_KEYS = ("preset", "input_size", "batch", "blr", "lr", "seed", "mask_stride", "norm_pix_loss",
               "model_overrides", "weight_decay", "warmup_epochs", "min_lr")


class TrainError(ValueError):
    """A training failure the user can act on (non-finite loss, incompatible resume); one-line message."""


class NonFiniteLossError(TrainError):
    """The loss became NaN or infinite; no optimizer step was taken and no checkpoint written after it."""


@dataclass
class PretrainConfig:
    """Everything that defines a pre-training run (stored in every checkpoint as ``train_config.json``)."""

    data: str
    out: str
    preset: str = "infmae_base"
    epochs: int = 400
    warmup_epochs: float = 40.0
    batch: int = 256  # effective batch per optimizer step, over all processes and accumulation steps
    blr: float = 1.5e-4
    lr: float | None = None  # absolute lr; default blr * batch / 256
    min_lr: float = 0.0
    weight_decay: float = 0.05
    accum: int = 1
    input_size: int = 224
    mask_stride: int = 4
    norm_pix_loss: bool = False
    model_overrides: dict[str, Any] = field(default_factory=dict)
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32
    compile: bool = False
    workers: int = 8
    threads: int = 0  # torch CPU threads per process (0 = torch's default)
    device: str = "auto"
    nproc: int = 0  # processes per node; 0 = number of GPUs (1 on CPU)
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    seed: int = 0
    save_every: int = 40  # epochs between checkpoint-EPOCH folders
    latest_every: int = 200  # optimizer steps between checkpoint-latest updates
    vis_every: int = 5  # epochs between reconstruction PNGs (0 = only at the end)
    vis_count: int = 4
    log_every: int = 10  # optimizer steps between metrics.jsonl lines
    max_steps: int | None = None  # stop after this many optimizer steps in total (the schedule is unchanged)
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall time
    deterministic: bool = False
    progress: bool = True
    tensorboard: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------------------------- schedule
def base_lr(cfg: PretrainConfig) -> float:
    """Peak learning rate: ``--lr`` when given, else blr x effective batch / 256."""
    return cfg.lr if cfg.lr is not None else cfg.blr * cfg.batch / 256


def lr_at(epoch_f: float, cfg: PretrainConfig) -> float:
    """Learning rate at fractional epoch ``epoch_f``: linear warm-up, then half-cycle cosine to min_lr."""
    peak = base_lr(cfg)
    if epoch_f < cfg.warmup_epochs:
        return peak * epoch_f / cfg.warmup_epochs
    span = max(1e-12, cfg.epochs - cfg.warmup_epochs)
    t = min(1.0, (epoch_f - cfg.warmup_epochs) / span)
    return cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


# ----------------------------------------------------------------------------------------------- checkpoints
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.iterdir()):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def save_weights(model: torch.nn.Module, folder: Path) -> None:
    """``folder/model.safetensors`` + ``folder/config.json`` through ``infmae.checkpoint.save_model``."""
    from infmae.checkpoint import save_model

    save_model(model, folder)


def load_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load ``folder/model.safetensors`` into ``model`` (strict)."""
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    model.load_state_dict(state, strict=True)


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and primitive containers (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[int(x) if i < 2 else float(x)
                  for i, x in enumerate(np_state[2:])]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(
    run_dir: Path, name: str, model: torch.nn.Module, train_state: dict[str, Any], config: dict[str, Any],
    summary: dict[str, Any],
) -> Path:
    """Write ``run_dir/name`` atomically: a temporary folder, fsync, rename (the old one kept until then)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_weights(model, tmp)
    torch.save(train_state, tmp / STATE_FILE)
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
    delay = float(os.environ.get("INFMAE_TEST_CHECKPOINT_DELAY", "0") or 0)
    if delay:  # tests widen the window in which a kill lands mid-write; never set in normal use
        time.sleep(delay)
    (tmp / DONE_FILE).write_text(json.dumps(summary, indent=2))
    _fsync_tree(tmp)
    dst = run_dir / name
    if dst.exists():
        prev = run_dir / f"{name}.prev"
        if prev.exists():
            shutil.rmtree(prev)
        os.replace(dst, prev)
        os.replace(tmp, dst)
        _fsync_dir(run_dir)
        shutil.rmtree(prev)
    else:
        os.replace(tmp, dst)
        stale = run_dir / f"{name}.prev"  # left by a kill between the two renames of an earlier swap
        if stale.exists():
            _fsync_dir(run_dir)
            shutil.rmtree(stale)
    _fsync_dir(run_dir)
    return dst


def is_complete(folder: Path) -> bool:
    """A checkpoint folder with every file present (``trainer.json`` is written last)."""
    return all((folder / f).is_file() for f in ("model.safetensors", STATE_FILE, CONFIG_FILE, DONE_FILE))


def find_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step in ``run_dir`` (latest, .prev, or an epoch folder)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    best: tuple[int, int, Path] | None = None
    for d in run_dir.iterdir():
        if not d.is_dir() or not d.name.startswith("checkpoint-") or not is_complete(d):
            continue
        try:
            step = int(json.loads((d / DONE_FILE).read_text())["step"])
        except (ValueError, KeyError, OSError):
            continue
        rank = 2 if d.name == LATEST else (1 if d.name == LATEST + ".prev" else 0)
        if best is None or (step, rank) > best[:2]:
            best = (step, rank, d)
    return best[2] if best else None


def load_train_state(folder: Path) -> dict[str, Any]:
    """``train_state.pt`` with ``weights_only=True`` (tensors and primitive containers only)."""
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------------- helpers
def make_adamw(params, lr: float, **kw: Any) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95) with PyTorch's fused kernel where the parameters' device has one (CPU and
    CUDA: about 3x faster than the default on the CPU, `benchmarks/model_throughput.py`), else the default.
    The state dict is the same either way, so checkpoints resume across the two."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), **kw)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("bf16", "fp16", "fp32"):
        raise TrainError(f"--precision must be bf16, fp16 or fp32, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise TrainError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return precision


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _check_resume(saved: dict[str, Any], cfg: PretrainConfig, n_images: int, run_dir: Path) -> None:
    old = saved.get("train", {})
    for key in RESUME_KEYS:
        if key in old and old[key] != getattr(cfg, key):
            raise TrainError(
                f"{run_dir} holds a run with {key}={old[key]!r}, this command has {getattr(cfg, key)!r}; "
                "use the same settings to resume or a new --out"
            )
    if saved.get("n_images") not in (None, n_images):
        raise TrainError(
            f"the dataset has {n_images} images but {run_dir} was trained on {saved['n_images']}; "
            "resume with the same data or use a new --out"
        )


class MetricsLog:
    """``metrics.jsonl`` (append, truncated to the resumed step) and TensorBoard, rank 0 only."""

    def __init__(self, run_dir: Path, resume_step: int, tensorboard: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():  # drop lines logged after the checkpoint we resume from
            keep = []
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("step", 0) <= resume_step:
                        keep.append(line)
            from inf30.atomic import write_text_atomic

            write_text_atomic(self.path, "".join(x + "\n" for x in keep))
        self.file = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                self.tb = None

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        if self.tb is not None:
            prefix = "epoch/" if record.get("kind") == "epoch" else "train/"
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(prefix + k, v, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


# ----------------------------------------------------------------------------------------------- the loop
def train_worker(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """One training process (rank from the environment); returns a summary (rank 0's is the run's)."""
    cfg = PretrainConfig.from_dict(cfg_dict)
    try:
        info = init_distributed(cfg.device)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    try:
        return _train(cfg, info)
    finally:
        cleanup()


def _train(cfg: PretrainConfig, info: DistInfo) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from infmae.model import create_model

    run_dir = Path(cfg.out)
    device = info.device
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.accum < 1 or cfg.batch < 1 or cfg.epochs < 1:
        raise TrainError("--batch, --accum and --epochs must be >= 1")

    source = open_source(cfg.data)
    li = make_loader(
        source, cfg.input_size, cfg.batch, info.world, info.rank, cfg.accum, cfg.seed, cfg.workers,
        pin_memory=device.type == "cuda",
    )
    sampler, loader = li.sampler, li.loader
    spe = sampler.steps_per_epoch
    total_steps = cfg.epochs * spe
    stop_at = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps

    torch.manual_seed(cfg.seed)  # identical initialization on every rank
    overrides = {"mask_stride": cfg.mask_stride, "norm_pix_loss": cfg.norm_pix_loss, **cfg.model_overrides}
    model = create_model(cfg.preset, **overrides).to(device)
    groups = model.param_groups(cfg.weight_decay)
    optimizer = make_adamw(groups, lr=base_lr(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    seeded_masking = model.config.get("masking") == "random" or bool(model.config.get("jitter"))

    step = 0
    ckpt = find_checkpoint(run_dir)
    if ckpt is not None:
        saved = json.loads((ckpt / CONFIG_FILE).read_text())
        _check_resume(saved, cfg, len(source), run_dir)
        load_weights(model, ckpt)
        st = load_train_state(ckpt)
        optimizer.load_state_dict(st["optimizer"])
        if "scaler" in st and precision == "fp16":
            scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        step = int(st["step"])
    if info.distributed:  # every rank must resume from the same step (RUN_DIR on a shared filesystem)
        lo = torch.tensor([step], device=device)
        hi = lo.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if lo.item() != hi.item():
            raise TrainError(
                f"ranks found different checkpoints in {run_dir} (steps {lo.item()} to {hi.item()}); "
                "multi-node runs need --out on a filesystem shared by all nodes"
            )
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".tmp-checkpoint-*"):
            shutil.rmtree(stale, ignore_errors=True)
        where = f"resumed from {ckpt} at step {step}" if ckpt is not None else "new run"
        print(
            f"infmae pretrain: {source.describe}; {cfg.preset} at {cfg.input_size}px on {info.world} x {device.type}"
            f" ({precision}); batch {cfg.batch} = {sampler.micro} x {info.world} proc x {cfg.accum} accum;"
            f" lr {base_lr(cfg):.3g}; {spe} steps/epoch, {total_steps} total; {where}",
            file=sys.stderr, flush=True,
        )

    net: torch.nn.Module = model
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        net = torch.compile(net)

    full_config = {
        "train": asdict(cfg),
        "model": model.config,
        "world": info.world,
        "precision": precision,
        "steps_per_epoch": spe,
        "peak_lr": base_lr(cfg),
        "n_images": len(source),
        "data_description": source.describe,
        "torch": torch.__version__,
    }

    def save(name: str, loss: float | None) -> None:
        if not info.is_main:
            return
        state = {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if precision == "fp16" else {},
            "step": step,
            "epoch": step // spe,
            "step_in_epoch": step % spe,
            "rng": rng_state(),
        }
        summary = {"step": step, "epoch": step // spe, "step_in_epoch": step % spe, "loss": loss,
                   "time": time.time()}
        write_checkpoint(run_dir, name, model, state, full_config, summary)

    metrics = MetricsLog(run_dir, step, cfg.tensorboard) if info.is_main else None
    fixed = li.dataset.fixed_views(cfg.vis_count) if info.is_main else None
    last_png: Path | None = None

    def visualize(tag: str) -> Path | None:
        if not info.is_main:
            return None
        from infmae.visualize import save_reconstruction

        model.eval()
        with torch.no_grad(), _autocast(device, precision):
            path = save_reconstruction(model, fixed.to(device), run_dir / "vis" / f"{tag}.png",
                                       title=f"{cfg.preset} step {step}")
        model.train()
        return path

    bar = tqdm(total=stop_at, initial=step, desc="pretrain", unit="step", dynamic_ncols=True,
               disable=not (info.is_main and cfg.progress), file=sys.stderr)
    t_start = time.perf_counter()
    win_t, win_wait, win_steps = time.perf_counter(), 0.0, 0
    epoch_loss, epoch_n = 0.0, 0
    last_loss: float | None = None
    last_saved_step = step
    stopped = "done"
    model.train()
    try:
        while step < stop_at:
            epoch, k = divmod(step, spe)
            sampler.set_epoch(epoch, k)
            it = iter(loader)
            for s in range(k, spe):
                lr = lr_at(step / spe, cfg)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                loss_sum = torch.zeros((), device=device)
                for m in range(cfg.accum):
                    t_wait = time.perf_counter()
                    imgs = next(it)
                    win_wait += time.perf_counter() - t_wait
                    imgs = imgs.to(device, non_blocking=True)
                    sync = info.distributed and m < cfg.accum - 1
                    kwargs = {}
                    if seeded_masking:
                        kwargs["seed"] = sample_seed(cfg.seed, step, info.rank * cfg.accum + m)
                    with (net.no_sync() if sync else contextlib.nullcontext()):  # type: ignore[operator]
                        with _autocast(device, precision):
                            loss, _, _ = net(imgs, **kwargs)
                        scaler.scale(loss / cfg.accum).backward()
                    loss_sum += loss.detach().float()
                # one small all-reduce per step: the mean loss and the stop flag agree on every rank
                flag = 1.0 if cfg.max_minutes and (time.perf_counter() - t_start) > 60 * cfg.max_minutes else 0.0
                packed = torch.stack([loss_sum / cfg.accum, torch.tensor(flag, device=device)])
                if info.distributed:
                    dist.all_reduce(packed)
                    packed[0] /= info.world
                loss_value, stop_flag = packed.tolist()
                if not math.isfinite(loss_value):
                    kept = find_checkpoint(run_dir)
                    raise NonFiniteLossError(
                        f"loss is {loss_value} at step {step + 1} (epoch {epoch}, lr {lr:.3g}); stopped before "
                        f"the optimizer step; last good checkpoint: {kept or 'none'}; lower --blr, add "
                        "--warmup-epochs or use --precision bf16/fp32"
                    )
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                win_steps += 1
                last_loss = loss_value
                epoch_loss += loss_value
                epoch_n += 1
                bar.update(1)
                if info.is_main and (step % cfg.log_every == 0 or step == stop_at):
                    now = time.perf_counter()
                    dt = max(1e-9, now - win_t)
                    ips = win_steps * cfg.batch / dt
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}", refresh=False)
                    metrics.log({"kind": "step", "step": step, "epoch": step / spe, "loss": loss_value, "lr": lr,
                                 "img_per_s": ips, "loader_stall": win_wait / dt, "time": time.time()})
                    win_t, win_wait, win_steps = now, 0.0, 0
                if step % cfg.latest_every == 0:
                    save(LATEST, loss_value)
                    last_saved_step = step
                epoch_done = s == spe - 1
                if epoch_done:
                    ep = epoch + 1
                    if info.is_main:
                        metrics.log({"kind": "epoch", "step": step, "epoch": ep,
                                     "loss": epoch_loss / max(1, epoch_n), "time": time.time()})
                    epoch_loss, epoch_n = 0.0, 0
                    if ep % cfg.save_every == 0 or ep == cfg.epochs:
                        save(f"checkpoint-{ep:04d}", loss_value)
                    if cfg.vis_every and ep % cfg.vis_every == 0:
                        last_png = visualize(f"epoch-{ep:04d}") or last_png
                if stop_flag > 0:
                    stopped = "time limit"
                    break
                if step >= stop_at:
                    break
            if stopped != "done":
                break
        if step > last_saved_step or not (run_dir / LATEST).exists():
            save(LATEST, last_loss)
        final_png = visualize("final")
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    if stopped == "done" and step < total_steps:
        stopped = "max steps"
    return {
        "step": step,
        "total_steps": total_steps,
        "loss": last_loss,
        "stopped": stopped,
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / LATEST),
        "png": str(final_png or last_png or ""),
        "metrics": str(run_dir / "metrics.jsonl"),
        "elapsed_s": time.perf_counter() - t_start,
    }


def _launched_worker(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Entry point of a worker started by :func:`infmae.distributed.launch` (user errors become values)."""
    try:
        return train_worker(cfg_dict)
    except (TrainError, DataError) as exc:
        return {"error": str(exc)}


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pre-train as configured; with several processes per node (``--nproc``, default the GPU count) or
    several nodes, start the workers through torch's elastic launcher and return rank 0's summary."""
    nproc = cfg.nproc or default_nproc(cfg.device)
    if inside_launcher() or (nproc == 1 and cfg.nnodes == 1):
        return train_worker(asdict(cfg))
    results = launch(
        _launched_worker, (asdict(cfg),), nproc, cfg.nnodes, cfg.node_rank, cfg.master_addr, cfg.master_port
    )
    for rank in sorted(results):
        if isinstance(results[rank], dict) and "error" in results[rank]:
            raise TrainError(results[rank]["error"])
    return results[min(results)]
