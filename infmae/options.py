"""The options of the ``infmae`` commands, one dataclass per command: each field holds its default and its help
text (``inf30.options.option``), which ``cli.py`` reads to declare the command's options, and ``validate()``
checks them all before any work (``UsageError``, exit 2, one line).

    RunConfig        what every training run takes (``infmae pretrain`` and ``infmae finetune``)
    PretrainConfig   ``infmae pretrain`` (``infmae.train``)
    FinetuneConfig   ``infmae finetune`` (``infmae.finetune``); fields left None take the task's defaults
    VisualizeOptions, ExportOptions, ConvertOptions   ``infmae visualize``, ``export``, ``convert``
    PackOptions      ``infmae pack`` (``infmae.pack``)
    EvaluateOptions, PredictOptions, CompareOptions   ``infmae evaluate``, ``predict``, ``compare``

Torch is imported only inside the checks that need it, so that the CLI starts without it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from inf30.errors import UsageError
from inf30.options import option

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SCHEDULES = ("cosine", "poly")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_THE_TASKS = "(default: the task's)"
SPLITS = ("train", "val", "test")  # the splits a task's data has
EVAL_SPLITS = ("val", "test")  # the splits a fine-tuning run evaluates (results.json)


def check(ok: bool, message: str) -> None:
    """UsageError (exit 2) with ``message`` unless ``ok``."""
    if not ok:
        raise UsageError(message)


def check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or another torch device type); UsageError otherwise."""
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device} asked for, but CUDA is not available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")


def parse_assignments(items: list[str] | tuple[str, ...], flag: str) -> dict[str, Any]:
    """``["depth=4", "masking=random", "scale=[0.5, 2]"]`` -> ``{"depth": 4, "masking": "random", "scale":
    [0.5, 2]}``: each VALUE is read as JSON (numbers, true/false, null, lists), else kept as text. UsageError
    naming ``flag`` for an item that is not KEY=VALUE or a key given twice."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        check(bool(sep) and key.isidentifier(), f"{flag} {item!r}: expected KEY=VALUE (e.g. {flag} depth=4)")
        check(key not in out, f"{flag} {key}: given twice")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def format_assignments(values: dict[str, Any]) -> list[str]:
    """The inverse of :func:`parse_assignments`: ``{"depth": 4}`` -> ``["depth=4"]`` (text values as they are)."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]


# ----------------------------------------------------------------------------------------------- training
@dataclass
class RunConfig:
    """The options every training run takes (``infmae pretrain`` and ``infmae finetune``)."""

    data: str = option(help="Training data.")
    out: str = option(help="Run folder (checkpoints, metrics); re-run to resume.")
    epochs: int = option(100, "Epochs of the schedule.")
    warmup_epochs: float = option(5.0, "Linear warm-up epochs (per-iteration).")
    batch: int = option(8, "Effective batch per optimizer step, over all processes and --accum.")
    lr: float | None = option(None, "Peak learning rate.")
    min_lr: float = option(0.0, "Final learning rate of the schedule.")
    weight_decay: float = option(0.05, "AdamW weight decay (weights only).")
    layer_decay: float | None = option(
        None, "Layer-wise lr decay over the encoder depth: lr x layer_decay ** (depth - layer) (unset or 1 = none).")
    drop_path: float = option(0.0, "Stochastic depth rate of the encoder.")
    schedule: str = option("cosine", "After warm-up: cosine or poly (power 0.9).")
    accum: int = option(1, "Gradient accumulation steps.")
    input_size: int = option(224, "Square crop size, a multiple of 16.")
    precision: str = option("auto", "auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.")
    compile: bool = option(False, "torch.compile the model.")
    workers: int = option(8, "DataLoader worker processes per training process.")
    threads: int = option(0, "Torch CPU threads per process (0 = torch's default).")
    device: str = option("auto", "auto, cuda or cpu.")
    nproc: int = option(0, "Processes per node (0 = number of GPUs, 1 on CPU).")
    nnodes: int = option(1, "Number of nodes.")
    node_rank: int = option(0, "This node's rank (multi-node).")
    master_addr: str = option("127.0.0.1", "Rendezvous host (multi-node).")
    master_port: int | None = option(None, "Rendezvous port (multi-node; free port on one node).")
    seed: int = option(0, "Seed of initialization, sample order and augmentation.")
    save_every: int = option(40, "Epochs between checkpoint-EPOCH folders (0 = only after the last epoch).")
    latest_every: int = option(200, "Optimizer steps between checkpoint-latest updates (0 = only at the end).")
    log_every: int = option(10, "Optimizer steps between metrics lines (>= 1).")
    max_steps: int | None = option(None, "Stop after this many optimizer steps in total (>= 1; the schedule is "
                                         "unchanged).")
    max_minutes: float | None = option(None, "Stop (with a checkpoint) after this many minutes.")
    deterministic: bool = option(False, "Deterministic algorithms (slower on GPU).")
    progress: bool = option(True, "Show a progress bar.")
    tensorboard: bool = option(True, "Write TensorBoard event files (RUN/tb).")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def peak_lr(self) -> float:
        """The schedule's peak learning rate."""
        return float(self.lr if self.lr is not None else 1e-3)

    def validate(self) -> None:
        """Every option checked at once, before any work: UsageError (exit 2) with a one-line message."""
        check(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        check(self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}")
        check(self.batch >= 1, f"--batch must be >= 1, got {self.batch}")
        check(self.accum >= 1, f"--accum must be >= 1, got {self.accum}")
        check(self.lr is None or (math.isfinite(self.lr) and self.lr > 0), f"--lr must be > 0, got {self.lr}")
        check(math.isfinite(self.min_lr) and self.min_lr >= 0, f"--min-lr must be >= 0, got {self.min_lr}")
        check(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
              f"--weight-decay must be >= 0, got {self.weight_decay}")
        check(self.layer_decay is None or 0 < self.layer_decay <= 1,
              f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        check(0 <= self.drop_path < 1, f"--drop-path must be in [0, 1), got {self.drop_path}")
        check(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        check(self.input_size > 0 and self.input_size % 16 == 0,
              f"--input-size must be a positive multiple of 16, got {self.input_size}")
        check(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        check(self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        check(self.threads >= 0, f"--threads must be >= 0, got {self.threads}")
        check(self.nproc >= 0, f"--nproc must be >= 0, got {self.nproc}")
        check(self.nnodes >= 1, f"--nnodes must be >= 1, got {self.nnodes}")
        check(0 <= self.node_rank < self.nnodes, f"--node-rank must be in [0, {self.nnodes}), got {self.node_rank}")
        check(self.master_port is None or 0 < self.master_port < 65536,
              f"--master-port must be in 1..65535, got {self.master_port}")
        check(self.nnodes == 1 or self.master_port is not None, "multi-node runs need --master-addr and --master-port")
        check(self.save_every >= 0, f"--save-every must be >= 0 (0: only after the last epoch), got {self.save_every}")
        check(self.latest_every >= 0, f"--latest-every must be >= 0 (0: only at the end), got {self.latest_every}")
        check(self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}")
        check(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}")
        check(self.max_minutes is None or self.max_minutes > 0, f"--max-minutes must be > 0, got {self.max_minutes}")
        check_device(self.device)
        import torch

        if self.device in ("auto", "cuda") and torch.cuda.is_available():
            check(self.nproc <= torch.cuda.device_count(),
                  f"--nproc {self.nproc} but {torch.cuda.device_count()} visible GPU(s); lower --nproc or use --device cpu")
        check(not (self.precision == "fp16" and self.device == "cpu"),
              "--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
        if self.precision == "fp16" and self.device == "auto":
            check(torch.cuda.is_available(), "--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")


@dataclass
class PretrainConfig(RunConfig):
    """Everything that defines a pre-training run (stored in every checkpoint as ``train_config.json``)."""

    data: str = option(help="Built Inf30 folder, published dataset / datasets path / Hub id, image folder, or a "
                            "pack (`infmae pack`).")
    out: str = option(help="Run folder (checkpoints, metrics, PNGs); re-run to resume.")
    epochs: int = option(400, "Epochs of the cosine schedule.")
    warmup_epochs: float = option(40.0, "Linear warm-up epochs (per-iteration).")
    batch: int = option(256, "Effective batch per optimizer step, over all processes and --accum.")
    lr: float | None = option(None, "Absolute peak learning rate (overrides --blr).")
    preset: str = option("infmae_base", "Model preset (infmae_tiny, infmae_small, infmae_base, ...).")
    blr: float = option(1.5e-4, "Base learning rate; lr = blr x batch / 256.")
    mask_stride: int = option(4, "Information-aware masking stride S (1 - 1/S masked).")
    norm_pix_loss: bool = option(False, "Per-patch normalized targets.")
    model_overrides: dict[str, Any] = option(
        help="A model option of the preset as KEY=VALUE (VALUE read as JSON, else text; e.g. masking=random, "
             "decoder_depth=4); repeatable.", factory=dict)
    vis_every: int = option(5, "Epochs between reconstruction PNGs (0 = only at the end).")
    vis_count: int = option(4, "Images in each reconstruction PNG (>= 1).")
    loader: str = option("auto", "auto (the packed loader for a pack, else decode), packed or decode.")

    def peak_lr(self) -> float:
        """``--lr`` when given, else blr x effective batch / 256."""
        return self.lr if self.lr is not None else self.blr * self.batch / 256

    def validate(self) -> None:
        super().validate()
        from infmae.model import PRESETS

        check(self.preset in PRESETS, f"--preset must be one of {', '.join(sorted(PRESETS))}, got {self.preset!r}")
        check(self.blr > 0, f"--blr must be > 0, got {self.blr}")
        check(self.mask_stride >= 1, f"--mask-stride must be >= 1, got {self.mask_stride}")
        check(self.vis_every >= 0, f"--vis-every must be >= 0 (0: only at the end), got {self.vis_every}")
        check(self.vis_count >= 1, f"--vis-count must be >= 1, got {self.vis_count}")
        check(self.loader in ("auto", "packed", "decode"),
              f"--loader must be auto, packed or decode, got {self.loader!r}")
        check(self.batch % self.accum == 0, f"--batch {self.batch} must be divisible by --accum {self.accum}")
        encoder = {**PRESETS[self.preset], **self.model_overrides}.get("encoder", "multiscale")
        check(self.layer_decay is None or encoder == "multiscale",
              f"--layer-decay needs the multiscale encoder; {self.preset} has the {encoder} encoder")
        self.check_model_overrides()

    def check_model_overrides(self) -> None:
        """Each ``--model-override`` names an option of the model and the preset builds with them (on the meta
        device: no memory, no time)."""
        if not self.model_overrides:
            return
        import inspect

        import torch

        from infmae.model import InfMAE, create_model

        known = [p for p in inspect.signature(InfMAE.__init__).parameters if p not in ("self", "preset")]
        for key in self.model_overrides:
            check(key in known, f"--model-override {key}: not a model option; one of {', '.join(known)}")
        try:
            with torch.device("meta"):
                create_model(self.preset, **self.model_overrides)
        except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
            raise UsageError(f"--model-override: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


@dataclass
class FinetuneConfig(RunConfig):
    """Everything that defines a fine-tuning run (stored in every checkpoint as ``train_config.json``).
    Fields left None take the task's paper defaults (``DownstreamTask.defaults``)."""

    data: str = option(help="The task's data folder (e.g. NUAA-SIRST, MSRS, a COCO folder).")
    out: str = option(help="Run folder (checkpoints, metrics, results.json); re-run to resume.")
    task: str = option("irstd", "Downstream task: irstd, segment or detect.")
    init: str = option("scratch", "scratch, an `infmae pretrain` run folder or checkpoint, an export/convert "
                                  "folder, or a Hub id.")
    preset: str = option("infmae_base", "Backbone preset for --init scratch.")
    task_options: dict[str, Any] = option(
        help="A task option as KEY=VALUE (VALUE read as JSON, else text; e.g. head=fcn, channels=128); "
             "repeatable. The task's `option_keys` lists them.", factory=dict)
    epochs: int | None = option(None, f"Epochs of the schedule. {_THE_TASKS}")  # type: ignore[assignment]
    batch: int | None = option(  # type: ignore[assignment]
        None, f"Effective batch per optimizer step, over all processes. {_THE_TASKS}")
    lr: float | None = option(None, f"Peak learning rate. {_THE_TASKS}")
    input_size: int | None = option(None, f"Training crop size, a multiple of 32. {_THE_TASKS}")  # type: ignore[assignment]
    weight_decay: float | None = option(  # type: ignore[assignment]
        None, f"AdamW weight decay (weights only). {_THE_TASKS}")
    schedule: str | None = option(None, f"cosine or poly (power 0.9). {_THE_TASKS}")  # type: ignore[assignment]
    warmup_epochs: float = option(1.0, "Linear warm-up epochs.")
    layer_decay: float | None = option(0.75, "Layer-wise lr decay over the backbone depth (1 = none).")
    drop_path: float = option(0.0, "Stochastic depth rate of the backbone.")
    workers: int = option(4, "DataLoader worker processes per process.")
    seed: int = option(0, "Seed of the head's initialization, order and augmentation.")
    save_every: int = option(0, "Epochs between checkpoint-EPOCH folders (0 = none).")
    latest_every: int = option(100, "Optimizer steps between checkpoint-latest updates (0 = only at the end).")
    eval_every: int = option(1, "Epochs between evaluations (the last epoch is always evaluated; the best "
                                "checkpoint is kept).")
    vis_count: int = option(4, "Images of the fixed prediction sample drawn at the end (0 = none).")

    def resolved(self) -> FinetuneConfig:
        """A copy with the task's defaults filled in (UsageError for an unknown task)."""
        task_cls = task_class(self.task)
        d = asdict(self)
        for key, value in task_cls.defaults.items():
            if key in d and d[key] is None:
                d[key] = value
        for key, value in {"epochs": 100, "batch": 8, "input_size": 256, "weight_decay": 0.05,
                           "schedule": "cosine", "lr": 1e-3}.items():
            if d[key] is None:
                d[key] = value
        return FinetuneConfig(**d)

    def validate(self) -> None:
        cfg = self.resolved()
        RunConfig.validate(cfg)
        from infmae.model import PRESETS

        check(cfg.preset in PRESETS, f"--preset must be one of {', '.join(sorted(PRESETS))}, got {cfg.preset!r}")
        check(cfg.eval_every >= 1, f"--eval-every must be >= 1, got {cfg.eval_every}")
        check(cfg.vis_count >= 0, f"--vis-count must be >= 0, got {cfg.vis_count}")
        check(cfg.input_size % 32 == 0, f"--input-size must be a multiple of 32 (F4 is 1/32), got {cfg.input_size}")
        self.check_task_options()
        check(Path(cfg.data).is_dir(), f"--data {cfg.data}: no such folder")
        init_kind(cfg.init)  # UsageError for a missing path that is not a Hub id
        from infmae.tasks import DataLayoutError

        try:  # the data's layout is part of the usage: checked before the run folder is made
            task_class(cfg.task).detect_layout(Path(cfg.data))
        except DataLayoutError as exc:
            raise UsageError(str(exc)) from None

    def check_task_options(self) -> None:
        """Each ``--task-option`` is one the task reads (its ``option_keys``, when it declares them), and the
        task accepts the values it checks up front (e.g. an unknown head)."""
        task_cls = task_class(self.task)
        keys = getattr(task_cls, "option_keys", None)
        if keys is not None:
            for key in self.task_options:
                check(key in keys, f"--task-option {key}: {self.task} has no such option; one of {', '.join(keys)}")
        try:
            task_cls(dict(self.task_options))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--task-option: {str(exc).splitlines()[0]}") from None


def task_class(name: str) -> Any:
    """`infmae.tasks.get_task(name)`; UsageError for an unknown name."""
    from infmae.tasks import get_task

    try:
        return get_task(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def init_kind(init: str) -> str:
    """``scratch``, ``run`` (a pre-training run folder), ``checkpoint`` (a folder with model.safetensors or
    a weights file) or ``hub``; UsageError for anything else."""
    if init == "scratch":
        return "scratch"
    from infmae.checkpoint import TORCH_SUFFIXES, WEIGHTS_NAME

    p = Path(init)
    if p.is_dir():
        if (p / WEIGHTS_NAME).is_file() or any(q.suffix in TORCH_SUFFIXES for q in p.iterdir()):
            return "checkpoint"
        if any(d.name.startswith("checkpoint-") for d in p.iterdir()):
            return "run"
        raise UsageError(f"--init {init}: neither a checkpoint folder (model.safetensors) nor a run folder "
                         "(checkpoint-*/)")
    if p.is_file():
        return "checkpoint"
    if HUB_ID.match(init) and not init.startswith((".", "/", "~")):
        return "hub"
    raise UsageError(f"--init {init}: no such file or folder, and not a Hub id (ORG/NAME); use scratch, a run "
                     "folder or checkpoint of `infmae pretrain`, an export folder or a Hub id")


# ---------------------------------------------------------------------------------------- other commands
@dataclass
class VisualizeOptions:
    """``infmae visualize`` (``infmae.visualize.visualize_images``'s keyword arguments)."""

    input_size: int | None = option(None, "View size, a positive multiple of 16 (default: the checkpoint's "
                                          "training size, else its preprocessing input size).")
    device: str = option("cpu", "cpu, cuda or cuda:N.")


@dataclass
class ExportOptions:
    """``infmae export`` (``infmae.export.export_encoder``'s keyword arguments)."""

    push: str | None = option(None, "Also upload the folder to this Hub model repo (ORG/NAME; token from HF_TOKEN "
                                     "or `hf auth login`).")


@dataclass
class ConvertOptions:
    """``infmae convert`` (``infmae.convert.convert_checkpoint``'s keyword arguments)."""

    num_heads: int | None = option(None, "Encoder attention heads (stored nowhere; default: the preset with the "
                                         "same widths).")
    decoder_heads: int | None = option(None, "Decoder attention heads (default: the preset with the same decoder "
                                             "width).")
    allow_unknown: bool = option(False, "Drop keys that are not part of the format instead of failing.")
    push: str | None = option(None, "Also upload the folder to this Hub model repo (ORG/NAME).")


@dataclass
class PackOptions:
    """``infmae pack`` (``infmae.pack.pack``; ``from infmae.pack import PackOptions`` still works)."""

    short_side: int = option(256, "Resize so the shorter side is at most this, in pixels (never upscales; >= 16).")
    shard: str | None = option(None, "Build only the shards s with s % N == K, as K/N (parallel jobs into the "
                                     "same --out).")
    images_per_shard: int = option(2048, "Images per shard file, the unit of resumption (~170 MB at 256x320).")
    workers: int = option(1, "Processes building shards (0 = all cores); never changes the pack.")
    progress: bool = option(True, "Show a progress bar.")

    def validate(self) -> tuple[int, int] | None:
        """UsageError (exit 2, one line) for a bad value; the parsed shard (K, N), or None."""
        check(self.short_side >= 16, f"--short-side must be at least 16, got {self.short_side}")
        check(self.images_per_shard >= 1, f"--images-per-shard must be at least 1, got {self.images_per_shard}")
        check(self.workers >= 0, f"--workers must be 0 (all cores) or more, got {self.workers}")
        from inf30.build import parse_shard

        try:
            return parse_shard(self.shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


_CHECKPOINT = "Checkpoint folder in RUN, or a path (default: checkpoint-best, else checkpoint-latest)."
_DEVICE = "auto (cuda when available, else cpu), cpu, cuda or cuda:N."


@dataclass
class EvaluateOptions:
    """``infmae evaluate`` (``infmae.finetune.evaluate_run``'s keyword arguments)."""

    split: str = option("test", "Split to evaluate: train, val or test.")
    checkpoint: str | None = option(None, _CHECKPOINT)
    device: str = option("auto", _DEVICE)

    def validate(self) -> None:
        check(self.split in SPLITS, f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        check_device(self.device)


@dataclass
class PredictOptions:
    """``infmae predict`` (``infmae.finetune.predict_run``'s keyword arguments)."""

    save_json: bool = option(False, "Also write the raw predictions as JSON (task-specific).")
    checkpoint: str | None = option(None, _CHECKPOINT)
    device: str = option("auto", _DEVICE)

    def validate(self) -> None:
        check_device(self.device)


@dataclass
class CompareOptions:
    """``infmae compare`` (``infmae.finetune.compare_runs``'s keyword arguments)."""

    split: str | None = option(None, "Split to show: val or test (default: test, else val).")

    def validate(self) -> None:
        check(self.split is None or self.split in EVAL_SPLITS,
              f"--split must be one of {', '.join(EVAL_SPLITS)} (the splits results.json holds), got {self.split!r}")
