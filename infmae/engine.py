"""The training engine pre-training and fine-tuning share (facebookresearch/mae `main_*.py` + `engine_*.py`).

    setup(cfg)            process group (elastic launch / torchrun), device, threads, determinism, precision
    make_optimizer(...)   AdamW (betas 0.9, 0.95; fused) over the model's param groups, with ConvMAE's
                          layer-wise lr decay through each group's `lr_scale`
    lr_at(...)            linear warm-up, then half-cycle cosine or poly to min_lr (set every optimizer step)
    wrap_model(...)       DDP (gradient layout matched first, no stride-mismatch copies) and torch.compile
    Engine                train_one_epoch(), fit() with epoch-end hooks, atomic checkpoints with mid-epoch
                          resume (running sums included), metrics.jsonl + TensorBoard, a progress bar
    run_locked(...)       validate the options, lock the run folder, run here or in --nproc launched workers

`RunConfig` holds every option both trainers take and checks them all in one place (`validate()`), before
any work or any folder is created. Checkpoint files and RNG state: the "training checkpoints" section of
`infmae.checkpoint`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from inf30.errors import JobFailed, OutputError, UsageError
from infmae.checkpoint import (
    LATEST,
    CheckpointError,
    load_resume,
    newest_complete,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from infmae.distributed import DistInfo, default_nproc, env_world, init_distributed, inside_launcher, launch
from infmae.options import (  # noqa: F401 - re-exported: the options lived here before infmae.options
    PRECISIONS,
    SCHEDULES,
    RunConfig,
    check,
    check_device,
)

POLY_POWER = 0.9  # mmsegmentation's poly schedule


class TrainError(JobFailed, ValueError):
    """A training failure the user can act on (non-finite loss, incompatible resume); one-line message."""


class NonFiniteLossError(TrainError):
    """The loss became NaN or infinite; no optimizer step was taken and no checkpoint written after it."""


# ----------------------------------------------------------------------------------------------- setup
def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a GPU that has it, else fp32; fp16 only on a GPU."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("bf16", "fp16", "fp32"):
        raise UsageError(f"--precision must be bf16, fp16 or fp32, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def setup(cfg: RunConfig) -> tuple[DistInfo, str]:
    """Join the process group (when launched with several), pick the device, threads and determinism;
    returns (DistInfo, resolved precision)."""
    try:
        info = init_distributed(cfg.device)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    device = info.device
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return info, resolve_precision(cfg.precision, device)


def lr_at(epoch_f: float, cfg: RunConfig, peak: float | None = None) -> float:
    """Learning rate at fractional epoch ``epoch_f``: linear warm-up, then half-cycle cosine (or poly with
    power 0.9) from the peak to ``cfg.min_lr`` at ``cfg.epochs``."""
    peak = cfg.peak_lr() if peak is None else peak
    if epoch_f < cfg.warmup_epochs:
        return peak * epoch_f / cfg.warmup_epochs
    span = max(1e-12, cfg.epochs - cfg.warmup_epochs)
    t = min(1.0, (epoch_f - cfg.warmup_epochs) / span)
    if cfg.schedule == "poly":
        return cfg.min_lr + (peak - cfg.min_lr) * (1.0 - t) ** POLY_POWER
    return cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def make_adamw(params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95) with PyTorch's fused kernel where the parameters' device has one (CPU and
    CUDA: about 3x faster than the default on the CPU, `benchmarks/model_throughput.py`), else the default.
    The state dict is the same either way, so checkpoints resume across the two."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), **kw)


def convmae_layer_id(name: str, depth: int) -> int:
    """Layer of an `InfMAEBackbone` parameter for layer-wise lr decay, as ConvMAE / InfMAE fine-tune: the patch
    embeddings and both convolutional stages are layer 0, Transformer block i is i + 1, and the rest (fusion,
    final norm, the F4 convolution) is ``depth + 1``, at the head's full lr."""
    parts = name.split(".")
    if parts[0] == "encoder" and len(parts) > 1:
        if parts[1] in ("embed1", "stage1", "embed2", "stage2", "embed3", "embed3_linear"):
            return 0
        if parts[1] == "blocks":
            return int(parts[2]) + 1
    return depth + 1


def layer_decay_groups(model: nn.Module, groups: list[dict[str, Any]], layer_decay: float) -> list[dict[str, Any]]:
    """Re-scale the backbone parameters of ``groups`` (the model's own AdamW groups: its weight-decay choices
    are kept) to ``layer_decay ** (depth + 1 - convmae_layer_id)``; parameters outside the `InfMAEBackbone`
    keep their group's ``lr_scale`` (the head: 1.0). Groups are merged by (weight decay, lr scale)."""
    from infmae.backbone import InfMAEBackbone

    backbone = next((m for m in model.modules() if isinstance(m, InfMAEBackbone)), None)
    if backbone is None:
        return groups
    depth = backbone.encoder.depths[-1]
    names = {id(p): n for n, p in backbone.named_parameters()}
    merged: dict[tuple[float, float], dict[str, Any]] = {}
    for g in groups:
        for p in g["params"]:
            scale = g.get("lr_scale", 1.0)
            if id(p) in names:
                scale = layer_decay ** (depth + 1 - convmae_layer_id(names[id(p)], depth))
            key = (g.get("weight_decay", 0.0), scale)
            merged.setdefault(key, {"params": [], "weight_decay": key[0], "lr_scale": scale})["params"].append(p)
    return [merged[k] for k in sorted(merged, key=lambda k: (k[1], k[0]))]


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW over ``model.param_groups(weight_decay[, layer_decay])``: no decay on biases and norms; with
    ``cfg.layer_decay`` the backbone's groups get ConvMAE's layer-wise lr scales (:func:`layer_decay_groups`:
    patch embeddings and conv stages lowest, then the Transformer blocks, the head at 1.0)."""
    if cfg.layer_decay is not None:
        groups = layer_decay_groups(model, model.param_groups(cfg.weight_decay, cfg.layer_decay), cfg.layer_decay)
    else:
        groups = model.param_groups(cfg.weight_decay)
    return make_adamw(groups, lr=cfg.peak_lr())


# ----------------------------------------------------------------------------------------------- DDP
def _grad_strides(conv: nn.Conv2d) -> tuple[int, ...]:
    """The strides of ``conv.weight``'s gradient when its input is a channels-last map (as the encoder feeds
    it), found with a tiny backward on the weight's device (CPU and cuDNN kernels may differ)."""
    w = conv.weight.detach().clone().requires_grad_(True)
    x = torch.ones(1, conv.in_channels, 8, 8, device=w.device, dtype=w.dtype)  # no RNG draw
    x = x.contiguous(memory_format=torch.channels_last)
    nn.functional.conv2d(x, w, None, padding=conv.padding, groups=conv.groups).sum().backward()
    return tuple(w.grad.stride())


def match_grad_layout(model: nn.Module) -> list[str]:
    """Give the depthwise kernels [C, 1, k, k] the strides their gradients get.

    The encoder feeds its depthwise convolutions channels-last maps, so their weight gradients come out
    channels-last ((k*k, 1, k, 1) on the CPU); DDP's buckets follow the parameters' strides, and a mismatch
    costs a copy per step ("Grad strides do not match bucket view strides"). Values are unchanged. Returns
    the names of the parameters that were re-strided."""
    changed = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.weight.shape[1] == 1:
            w = mod.weight
            strides = _grad_strides(mod)
            if strides != w.stride():
                strided = torch.empty_strided(w.shape, strides, dtype=w.dtype, device=w.device)
                strided.copy_(w.detach())
                w.data = strided
                changed.append(f"{name}.weight")
    return changed


def wrap_model(model: nn.Module, info: DistInfo, compile: bool = False, find_unused: bool = False) -> nn.Module:
    """DDP around ``model`` when distributed (gradient layout matched first), then ``torch.compile``."""
    net: nn.Module = model
    if info.distributed:
        match_grad_layout(model)
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=find_unused,
        )
    if compile:
        net = torch.compile(net)
    return net


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


# ----------------------------------------------------------------------------------------------- logging
class MetricsLog:
    """``metrics.jsonl`` (append, truncated to the resumed step) and TensorBoard, rank 0 only."""

    def __init__(self, run_dir: Path, resume_step: int, tensorboard: bool) -> None:
        from inf30.atomic import write_text_atomic

        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():  # drop lines logged after the checkpoint we resume from
            keep = []
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    if json.loads(line).get("step", 0) <= resume_step:
                        keep.append(line)
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
        try:
            self.file.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise OutputError.writing(self.run_dir, exc) from None
        if self.tb is not None:
            kind = record.get("kind", "step")
            prefix = {"epoch": "epoch/", "step": "train/"}.get(kind, f"{kind}/")
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch"):
                    self.tb.add_scalar(prefix + k, v, record["step"])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        if self.tb is not None:
            with contextlib.suppress(Exception):
                self.tb.close()


def note(message: str) -> None:
    """A line on stderr (the run log)."""
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- the loop
LossFn = Callable[[nn.Module, Any, int, int], tuple[torch.Tensor, dict[str, float]]]
EpochHook = Callable[["Engine", int], None]


@dataclass
class LoopState:
    """What a checkpoint stores besides the weights and the optimizer: the step, the running sums of the
    epoch in progress (so a mid-epoch resume logs the same epoch mean) and the hooks' own values."""

    step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_n: int = 0
    last_loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    """One run's training loop. The caller builds the model, optimizer and loader and gives:

    - ``loss_fn(net, batch, step, micro) -> (loss, scalars)``: one micro-batch's loss (``batch`` already
      through ``to_input``); ``scalars`` are logged with the step;
    - ``to_input(batch, device)``: the loader batch -> the model's input (``LoaderInfo.to_input`` for
      pre-training, where a packed loader augments on the device);
    - epoch-end hooks ``hook(engine, epochs_done)`` (evaluate, save, visualize), run on every rank.
    """

    def __init__(
        self, cfg: RunConfig, info: DistInfo, precision: str, run_dir: Path, model: nn.Module, net: nn.Module,
        optimizer: torch.optim.Optimizer, sampler: Any, loader: Any, loss_fn: LossFn,
        to_input: Callable[[Any, torch.device], Any], full_config: dict[str, Any], name: str = "train",
    ) -> None:
        self.cfg, self.info, self.precision, self.run_dir = cfg, info, precision, run_dir
        self.model, self.net, self.optimizer = model, net, optimizer
        self.sampler, self.loader, self.loss_fn, self.to_input = sampler, loader, loss_fn, to_input
        self.full_config, self.name = full_config, name
        self.device = info.device
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.spe: int = sampler.steps_per_epoch
        self.total_steps = cfg.epochs * self.spe
        self.stop_at = min(self.total_steps, cfg.max_steps) if cfg.max_steps else self.total_steps
        self.state = LoopState()
        self.hooks: list[EpochHook] = []
        self.metrics: MetricsLog | None = None
        self.resumed_from: Path | None = None
        self.last_saved_step = 0
        self.stopped = "done"
        self._t_start = time.perf_counter()

    # -- checkpoints ---------------------------------------------------------------------------------
    def resume(self, check_config: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Load the newest readable checkpoint of the run folder (weights, optimizer, scaler, RNG, running
        sums); returns the step (0 for a new run). Every rank must resume from the same step."""
        try:
            ck = load_resume(self.run_dir, log=note if self.info.is_main else None)
        except CheckpointError as exc:
            raise TrainError(str(exc)) from None
        step = 0
        if ck is not None:
            if check_config is not None:
                check_config(ck["config"])
            try:
                self.model.load_state_dict(ck["weights"], strict=True)
            except RuntimeError as exc:
                raise TrainError(f"{ck['folder']} does not match this model ({' '.join(str(exc).split())[:200]}); "
                                 "use the same settings to resume or a new --out") from None
            st = ck["state"]
            self.optimizer.load_state_dict(st["optimizer"])
            if st.get("scaler") and self.precision == "fp16":
                self.scaler.load_state_dict(st["scaler"])
            set_rng_state(st["rng"])
            step = int(st["step"])
            run = st.get("running", {})
            self.state = LoopState(step, float(run.get("loss_sum", 0.0)), int(run.get("n", 0)),
                                   st.get("last_loss"), dict(st.get("extra", {})))
            self.resumed_from = ck["folder"]
        if self.info.distributed:  # every rank must resume from the same step (RUN_DIR on a shared filesystem)
            lo = torch.tensor([step], device=self.device)
            hi = lo.clone()
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
            if lo.item() != hi.item():
                raise TrainError(
                    f"ranks found different checkpoints in {self.run_dir} (steps {lo.item()} to {hi.item()}); "
                    "multi-node runs need --out on a filesystem shared by all nodes"
                )
        self.last_saved_step = step
        return step

    def save(self, name: str) -> Path | None:
        """Write ``RUN_DIR/name`` (rank 0 only) with the model, optimizer, scaler, RNG and loop state."""
        if not self.info.is_main:
            return None
        s = self.state
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.precision == "fp16" else {},
            "step": s.step,
            "epoch": s.step // self.spe,
            "step_in_epoch": s.step % self.spe,
            "rng": rng_state(),
            "running": {"loss_sum": s.epoch_loss_sum, "n": s.epoch_n},
            "last_loss": s.last_loss,
            "extra": s.extra,
        }
        summary = {"step": s.step, "epoch": s.step // self.spe, "step_in_epoch": s.step % self.spe,
                   "loss": s.last_loss, "time": time.time()}
        path = write_checkpoint(self.run_dir, name, self.model, state, self.full_config, summary)
        if name == LATEST:
            self.last_saved_step = s.step
        return path

    def log(self, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.log(record)

    # -- training ------------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int, start: int, bar: Any) -> bool:
        """Optimizer steps ``start`` .. end of ``epoch`` (or until the stop step / time limit); True when the
        run must stop."""
        cfg, info, device, s = self.cfg, self.info, self.device, self.state
        self.sampler.set_epoch(epoch, start)
        it = iter(self.loader)
        win_t, win_wait, win_steps = time.perf_counter(), 0.0, 0
        for k in range(start, self.spe):
            lr = lr_at(s.step / self.spe, cfg)
            for g in self.optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            loss_sum = torch.zeros((), device=device)
            scalars: dict[str, float] = {}
            for m in range(cfg.accum):
                t_wait = time.perf_counter()
                batch = self.to_input(next(it), device)
                win_wait += time.perf_counter() - t_wait
                sync = info.distributed and m < cfg.accum - 1
                with self.net.no_sync() if sync else contextlib.nullcontext():  # type: ignore[operator]
                    with autocast(device, self.precision):
                        loss, logs = self.loss_fn(self.net, batch, s.step, m)
                    self.scaler.scale(loss / cfg.accum).backward()
                loss_sum += loss.detach().float()
                for key, v in logs.items():
                    scalars[key] = scalars.get(key, 0.0) + float(v) / cfg.accum
            # one small all-reduce per step: the mean loss and the stop flag agree on every rank
            late = cfg.max_minutes and (time.perf_counter() - self._t_start) > 60 * cfg.max_minutes
            packed = torch.stack([loss_sum / cfg.accum, torch.tensor(1.0 if late else 0.0, device=device)])
            if info.distributed:
                dist.all_reduce(packed)
                packed[0] /= info.world
            loss_value, stop_flag = packed.tolist()
            if not math.isfinite(loss_value):
                kept = newest_complete(self.run_dir)
                raise NonFiniteLossError(
                    f"loss is {loss_value} at step {s.step + 1} (epoch {epoch}, lr {lr:.3g}); stopped before "
                    f"the optimizer step; last good checkpoint: {kept or 'none'}; lower the learning rate, add "
                    "--warmup-epochs or use --precision bf16/fp32"
                )
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            s.step += 1
            s.last_loss = loss_value
            s.epoch_loss_sum += loss_value
            s.epoch_n += 1
            win_steps += 1
            bar.update(1)
            if info.is_main and (s.step % cfg.log_every == 0 or s.step == self.stop_at):
                now = time.perf_counter()
                dt = max(1e-9, now - win_t)
                ips = win_steps * cfg.batch / dt
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}", refresh=False)
                self.log({"kind": "step", "step": s.step, "epoch": s.step / self.spe, "loss": loss_value, "lr": lr,
                          **scalars, "img_per_s": ips, "loader_stall": win_wait / dt, "time": time.time()})
                win_t, win_wait, win_steps = now, 0.0, 0
            if k == self.spe - 1:
                self._end_epoch(epoch + 1)
            if cfg.latest_every and s.step % cfg.latest_every == 0 and s.step > self.last_saved_step:
                self.save(LATEST)
            if stop_flag > 0:
                self.stopped = "time limit"
                return True
            if s.step >= self.stop_at:
                return True
        return False

    def _end_epoch(self, ep: int) -> None:
        s = self.state
        if self.info.is_main:
            self.log({"kind": "epoch", "step": s.step, "epoch": ep, "loss": s.epoch_loss_sum / max(1, s.epoch_n),
                      "time": time.time()})
        s.epoch_loss_sum, s.epoch_n = 0.0, 0
        for hook in self.hooks:
            hook(self, ep)

    def fit(self, hooks: Iterable[EpochHook] = ()) -> dict[str, Any]:
        """Train from the current step to the stop step, calling ``hooks`` at every epoch end; writes
        ``checkpoint-latest`` at the end. Returns a summary."""
        from tqdm.auto import tqdm

        self.hooks = list(hooks)
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.metrics = MetricsLog(self.run_dir, self.state.step, self.cfg.tensorboard)
        bar = tqdm(total=self.stop_at, initial=self.state.step, desc=self.name, unit="step", dynamic_ncols=True,
                   disable=not (self.info.is_main and self.cfg.progress), file=sys.stderr)
        self._t_start = time.perf_counter()
        self.model.train()
        try:
            while self.state.step < self.stop_at:
                epoch, k = divmod(self.state.step, self.spe)
                if self.train_one_epoch(epoch, k, bar):
                    break
            if self.state.step > self.last_saved_step or not (self.run_dir / LATEST).exists():
                self.save(LATEST)
        finally:
            bar.close()
        if self.stopped == "done" and self.state.step < self.total_steps:
            self.stopped = "max steps"
        return {
            "step": self.state.step,
            "total_steps": self.total_steps,
            "loss": self.state.last_loss,
            "stopped": self.stopped,
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.run_dir / LATEST),
            "metrics": str(self.run_dir / "metrics.jsonl"),
            "elapsed_s": time.perf_counter() - self._t_start,
        }

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None


# ----------------------------------------------------------------------------------------------- entry
def _remove_if_only_lock(folder: Path) -> None:
    """Remove `folder` when all it holds is the lock file this run created (nothing else was written)."""
    from inf30.lock import LOCK_NAME

    with contextlib.suppress(OSError):
        if [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()
            folder.rmdir()


def run_locked(cfg: RunConfig, worker: Callable[[dict[str, Any]], dict[str, Any]],
               launched: Callable[[dict[str, Any]], dict[str, Any]], tool: str) -> dict[str, Any]:
    """Validate ``cfg``, lock ``cfg.out`` (the launching process holds it for the whole job), clear temporary
    checkpoints of dead runs, then run ``worker`` in this process or ``launched`` in ``--nproc`` workers."""
    from inf30.lock import lock_folder

    cfg.validate()
    nproc = cfg.nproc or default_nproc(cfg.device)
    in_launcher = inside_launcher()
    rank = env_world()[0] if in_launcher else 0
    main = rank == 0 and cfg.node_rank == 0
    created = main and not Path(cfg.out).exists()
    lock = lock_folder(cfg.out, tool=tool) if main else contextlib.nullcontext()
    try:
        with lock:
            if main:
                for stale in Path(cfg.out).glob(".tmp-checkpoint-*"):  # ours to remove: we hold the lock
                    shutil.rmtree(stale, ignore_errors=True)
            if in_launcher or (nproc == 1 and cfg.nnodes == 1):
                return worker(asdict(cfg))
            results = launch(launched, (asdict(cfg),), nproc, cfg.nnodes, cfg.node_rank, cfg.master_addr,
                             cfg.master_port)
    except BaseException:
        if created:  # a run that failed before writing anything leaves no folder behind (only our lock file)
            _remove_if_only_lock(Path(cfg.out))
        raise
    for r in sorted(results):
        if isinstance(results[r], dict) and "error" in results[r]:
            raise (UsageError if results[r].get("usage") else TrainError)(results[r]["error"])
    return results[min(results)]
