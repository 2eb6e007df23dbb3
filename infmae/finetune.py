"""Fine-tuning on downstream tasks (paper section 5): `infmae finetune TASK --data DIR --init INIT --out RUN_DIR`.

Shaped like facebookresearch/mae `main_finetune.py`: :func:`finetune` validates the options, locks the run
folder and launches the workers; :func:`finetune_worker` builds the task's data and model around an
`InfMAEBackbone` loaded from INIT and hands the loop to :class:`infmae.engine.Engine` (AdamW with layer-wise
lr decay, warm-up + cosine / poly, DDP, precision, atomic checkpoints with mid-epoch resume). Everything
task-specific (layouts, head, loss, metrics, drawing) comes from `infmae.tasks.get_task(TASK)(options)`.

INIT: ``scratch`` (a random `--preset` backbone), a run folder or checkpoint of `infmae pretrain`, an
`infmae export` / `convert` folder, a weights file, or a Hub id (through `InfMAEBackbone.from_pretrained`).

Run directory::

    RUN_DIR/
      checkpoint-latest/  checkpoint-best/  checkpoint-EPOCH/   as in pre-training (infmae.checkpoint)
      metrics.jsonl, tb/        training steps, epochs and evaluations (kind "eval")
      results.json              metrics per split of the best checkpoint, config, init and its sha256
      results.md                the same as a markdown table row (`infmae compare` prints several)
      predictions/              the task's drawings (image | ground truth | prediction) of a fixed sample
"""

from __future__ import annotations

import contextlib
import json
import random
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inf30.errors import UsageError
from infmae.checkpoint import (
    LATEST,
    TRAIN_CONFIG_FILE,
    WEIGHTS_NAME,
    newest_complete,
    read_training_checkpoint,
    resume_candidates,
    sha256_file,
)
from infmae.data import EpochBatchSampler
from infmae.distributed import barrier, cleanup
from infmae.engine import (
    Engine,
    TrainError,
    make_optimizer,
    note,
    run_locked,
    setup,
    wrap_model,
)
from infmae.options import (  # noqa: F401 - HUB_ID re-exported
    EVAL_SPLITS,
    HUB_ID,
    CompareOptions,
    EvaluateOptions,
    FinetuneConfig,
    PredictOptions,
    init_kind,
    task_class,
)

BEST = "checkpoint-best"
RESULTS = "results.json"
# settings that must not change when a run is resumed
RESUME_KEYS = ("task", "init", "preset", "task_options", "input_size", "batch", "lr", "seed", "weight_decay",
               "layer_decay", "drop_path", "warmup_epochs", "min_lr", "schedule", "epochs")


# ----------------------------------------------------------------------------------------------- INIT
def _weights_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    if (path / WEIGHTS_NAME).is_file():
        return path / WEIGHTS_NAME
    torch_files = sorted(q for q in path.iterdir() if q.suffix in (".pt", ".pth", ".bin", ".ckpt"))
    return torch_files[-1] if torch_files else None


def load_backbone(init: str, preset: str, drop_path: float = 0.0) -> tuple[nn.Module, dict[str, Any]]:
    """(InfMAEBackbone, init record) for INIT. The record has ``spec``, ``kind``, ``path``, ``sha256`` and the
    ``missing`` / ``unexpected`` keys of the load. A checkpoint that is not an InfMAE multi-scale encoder is
    a one-line TrainError."""
    from infmae.backbone import InfMAEBackbone

    kind = init_kind(init)
    record: dict[str, Any] = {"spec": init, "kind": kind, "path": None, "sha256": None, "missing": [],
                              "unexpected": []}
    if kind == "scratch":
        return InfMAEBackbone(preset, drop_path=drop_path), record
    path: str | Path = init
    if kind == "run":
        found = newest_complete(init)
        if found is None:
            raise TrainError(f"--init {init}: the run folder holds no complete checkpoint")
        path = found
    if kind != "hub":
        weights = _weights_file(Path(path))
        record["path"] = str(path)
        record["sha256"] = sha256_file(weights) if weights else None
    try:
        with warnings.catch_warnings():  # the missing / unexpected keys are reported in the run log instead
            warnings.simplefilter("ignore")
            backbone = InfMAEBackbone.from_pretrained(path, drop_path=drop_path)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        msg = " ".join(str(exc).split())[:240] or exc.__class__.__name__
        if kind == "hub":
            raise TrainError(f"--init {init}: cannot load it from the Hub: {msg}") from None
        raise TrainError(f"--init {init} is not an InfMAE encoder checkpoint this backbone can load: {msg}") from None
    info = getattr(backbone, "load_info", {}) or {}
    missing = [k for k in info.get("missing", []) if not k.startswith("down.")]  # F4 conv: trained downstream
    record["missing"], record["unexpected"] = missing, list(info.get("unexpected", []))
    n_encoder = sum(1 for k in backbone.state_dict() if k.startswith("encoder."))
    if n_encoder and len([k for k in missing if k.startswith("encoder.")]) == n_encoder:
        raise TrainError(f"--init {init} holds none of the encoder's weights ({len(record['unexpected'])} unexpected "
                         "keys); give an `infmae pretrain` checkpoint or an export folder")
    if kind == "hub":
        src = getattr(backbone, "source_path", None) or info.get("path")
        if src and Path(src).is_file():
            record["path"], record["sha256"] = str(src), sha256_file(Path(src))
    return backbone, record


# ----------------------------------------------------------------------------------------------- data
class SeededDataset(torch.utils.data.Dataset):
    """`ds[(index, seed)]`: the task's item with the global RNGs (random, numpy, torch) seeded by ``seed``
    and restored afterwards, so a sample's augmentation depends only on (seed, epoch, position)."""

    def __init__(self, ds: torch.utils.data.Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            try:
                return self.ds[int(index)]
            finally:
                random.setstate(py)
                np.random.set_state(npy)


def _split_dataset(task: Any, data: Path, split: str, size: int) -> Any | None:
    """The task's evaluation dataset of ``split``, or None when the data has no such split."""
    from infmae.tasks import DataLayoutError

    try:
        ds = task.dataset(data, split, False, size)
    except (DataLayoutError, FileNotFoundError, KeyError):
        return None
    return ds if len(ds) else None


# ----------------------------------------------------------------------------------------------- the worker
def _model_config(task_name: str, options: dict[str, Any], backbone: nn.Module) -> dict[str, Any]:
    return {"task": task_name, "task_options": options, "backbone": dict(backbone.config)}


def build_task_model(task: Any, backbone: nn.Module, task_name: str) -> nn.Module:
    """``task.build_model(backbone)`` with a ``config`` recording how to rebuild it."""
    model = task.build_model(backbone)
    model.config = _model_config(task_name, task.options, backbone)
    return model


def finetune_worker(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """One fine-tuning process (rank from the environment); returns a summary (rank 0's is the run's)."""
    cfg = FinetuneConfig.from_dict(cfg_dict).resolved()
    info, precision = setup(cfg)
    try:
        return _finetune(cfg, info, precision)
    finally:
        cleanup()


def _check_resume(saved: dict[str, Any], cfg: FinetuneConfig, run_dir: Path) -> None:
    old = saved.get("train", {})
    for key in RESUME_KEYS:
        if key == "task_options":  # the task may add what it found in the data (e.g. class names)
            opts = old.get(key) or {}
            diff = [k for k, v in cfg.task_options.items() if k not in opts or opts[k] != v]
            if diff:
                raise TrainError(f"{run_dir} holds a run with task options {opts!r}, this command has "
                                 f"{cfg.task_options!r}; use the same settings to resume or a new --out")
            continue
        if key in old and old[key] != getattr(cfg, key):
            raise TrainError(f"{run_dir} holds a run with {key}={old[key]!r}, this command has "
                             f"{getattr(cfg, key)!r}; use the same settings to resume or a new --out")


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The run configuration of the newest complete checkpoint whose train_config.json reads (None: new run)."""
    for _step, folder in resume_candidates(run_dir):
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads((folder / TRAIN_CONFIG_FILE).read_text())
            if isinstance(saved, dict) and isinstance(saved.get("model", {}).get("backbone"), dict):
                return saved
    return None


def _finetune(cfg: FinetuneConfig, info: Any, precision: str) -> dict[str, Any]:
    from infmae.backbone import InfMAEBackbone

    run_dir, device, data = Path(cfg.out), info.device, Path(cfg.data)
    task_cls = task_class(cfg.task)
    task = task_cls(cfg.task_options)
    layout = task_cls.detect_layout(data)
    train_ds = task.dataset(data, "train", True, cfg.input_size)
    eval_split = next((s for s in EVAL_SPLITS if _split_dataset(task, data, s, cfg.input_size) is not None), None)
    sampler = EpochBatchSampler(len(train_ds), cfg.batch, info.world, info.rank, cfg.accum, cfg.seed)
    kwargs: dict[str, Any] = {"persistent_workers": True} if cfg.workers > 0 else {}
    loader = torch.utils.data.DataLoader(SeededDataset(train_ds), batch_sampler=sampler, num_workers=cfg.workers,
                                         collate_fn=task.collate, pin_memory=device.type == "cuda", **kwargs)

    torch.manual_seed(cfg.seed)  # identical head initialization on every rank
    saved = _saved_config(run_dir)
    if saved is not None:  # resuming: the architecture comes from the run itself (INIT is not read again)
        _check_resume(saved, cfg, run_dir)
        backbone = InfMAEBackbone(**saved["model"]["backbone"])
        init_record = saved.get("init", {})
    else:
        backbone, init_record = load_backbone(cfg.init, cfg.preset, cfg.drop_path)
    model = build_task_model(task, backbone, cfg.task).to(device)
    optimizer = make_optimizer(model, cfg)
    train_cfg = {**asdict(cfg), "task_options": dict(task.options)}  # with what the task found in the data
    full_config = {
        "train": train_cfg, "model": model.config, "init": init_record, "layout": layout, "world": info.world,
        "precision": precision, "steps_per_epoch": sampler.steps_per_epoch, "peak_lr": cfg.peak_lr(),
        "n_train": len(train_ds), "eval_split": eval_split, "torch": torch.__version__,
    }

    def loss_fn(net: nn.Module, batch: Any, step: int, micro: int):
        return task.loss(net, batch, device)

    eng = Engine(cfg, info, precision, run_dir, model, model, optimizer, sampler, loader, loss_fn,
                 lambda batch, dev: batch, full_config, name=f"finetune {cfg.task}")
    step = eng.resume(lambda saved: _check_resume(saved, cfg, run_dir))
    eng.net = wrap_model(model, info, cfg.compile, find_unused=getattr(task_cls, "find_unused_parameters", True))
    if info.is_main:
        where = f"resumed from {eng.resumed_from} at step {step}" if eng.resumed_from is not None else "new run"
        init_note = f"init {cfg.init}"
        if init_record.get("missing") or init_record.get("unexpected"):
            init_note += (f" ({len(init_record['missing'])} missing keys {init_record['missing'][:4]}, "
                          f"{len(init_record['unexpected'])} unexpected {init_record['unexpected'][:4]})")
        note(f"infmae finetune {cfg.task}: {len(train_ds)} train images ({layout}), eval on {eval_split or 'none'};"
             f" {init_note}; {cfg.input_size}px on {info.world} x {device.type} ({precision}); batch {cfg.batch};"
             f" lr {cfg.peak_lr():.3g}, layer decay {cfg.layer_decay}; {sampler.steps_per_epoch} steps/epoch,"
             f" {eng.total_steps} total; {where}")

    eval_ds = _split_dataset(task, data, eval_split, cfg.input_size) if (eval_split and info.is_main) else None
    better = (lambda a, b: a > b) if getattr(task_cls, "primary_mode", "max") == "max" else (lambda a, b: a < b)

    def on_epoch_end(engine: Engine, ep: int) -> None:  # evaluate, keep best + latest, epoch folders
        if eval_ds is not None and (ep % cfg.eval_every == 0 or ep == cfg.epochs):
            model.eval()
            with torch.no_grad():
                metrics = task.evaluate(model, eval_ds, device)
            model.train()
            value = float(metrics[task_cls.primary_metric])
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            engine.log({"kind": "eval", "split": eval_split, "step": engine.state.step, "epoch": ep, **scalars})
            best = engine.state.extra.get("best")
            if best is None or better(value, best["value"]):
                engine.state.extra["best"] = {"value": value, "epoch": ep, "step": engine.state.step,
                                              "metric": task_cls.primary_metric}
                engine.save(BEST)
        if cfg.save_every and ep % cfg.save_every == 0:
            engine.save(f"checkpoint-{ep:04d}")
        barrier(info)

    try:
        result = eng.fit([on_epoch_end])
    finally:
        eng.close()
    if info.is_main:
        result["results"] = str(write_results(run_dir, data, device))
    barrier(info)
    return result


# ----------------------------------------------------------------------------------------------- results
def load_run_model(run_dir: str | Path, checkpoint: str | None = None,
                   device: str | torch.device = "cpu") -> tuple[Any, nn.Module, dict[str, Any]]:
    """(task, model in eval mode, the run's config) from ``run_dir``'s best checkpoint (else the latest),
    or ``checkpoint`` (a folder name or path)."""
    from infmae.backbone import InfMAEBackbone

    run_dir = Path(run_dir)
    if checkpoint:
        folder = Path(checkpoint) if Path(checkpoint).is_dir() else run_dir / checkpoint
    else:
        folder = next((run_dir / n for n in (BEST, LATEST) if (run_dir / n / TRAIN_CONFIG_FILE).is_file()), None)
        folder = folder or newest_complete(run_dir)
    if folder is None or not folder.is_dir():
        raise UsageError(f"{run_dir} is not a fine-tuning run folder (no checkpoint-best / checkpoint-latest)")
    try:
        ck = read_training_checkpoint(folder)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    config = ck["config"]
    if "task" not in config.get("train", {}):
        raise UsageError(f"{run_dir} is not a fine-tuning run (it has no task; a pre-training run?)")
    train = config["train"]
    task = task_class(train["task"])(train.get("task_options", {}))
    backbone = InfMAEBackbone(**config["model"]["backbone"])
    model = build_task_model(task, backbone, train["task"])
    model.load_state_dict(ck["weights"], strict=True)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    return task, model.to(dev).eval(), {**config, "checkpoint": str(folder), "device": str(dev)}


def evaluate_run(run_dir: str | Path, data: str | Path, split: str = EvaluateOptions.split,
                 checkpoint: str | None = EvaluateOptions.checkpoint,
                 device: str = EvaluateOptions.device) -> dict[str, Any]:
    """The task's metrics of the run's model (best checkpoint by default) on ``split`` of ``data``
    (options: :class:`EvaluateOptions`, checked first)."""
    EvaluateOptions(split=split, checkpoint=checkpoint, device=device).validate()
    if not Path(data).is_dir():
        raise UsageError(f"--data {data}: no such folder")
    task, model, config = load_run_model(run_dir, checkpoint, device)
    ds = _split_dataset(task, Path(data), split, config["train"]["input_size"])
    if ds is None:
        raise UsageError(f"{data} has no {split!r} split for task {config['train']['task']}")
    with torch.no_grad():
        return task.evaluate(model, ds, torch.device(config["device"]))


def predict_run(run_dir: str | Path, images: list[str | Path], out: str | Path,
                checkpoint: str | None = PredictOptions.checkpoint, device: str = PredictOptions.device,
                save_json: bool = PredictOptions.save_json, **kwargs: Any) -> list[Path]:
    """Run the run's model on image files; the task writes maps / overlays under ``out`` (options:
    :class:`PredictOptions`, checked first; kwargs: the task's own, e.g. detect's ``draw_thresh``)."""
    PredictOptions(save_json=save_json, checkpoint=checkpoint, device=device).validate()
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise UsageError(f"no such image: {missing[0]}")
    task, model, config = load_run_model(run_dir, checkpoint, device)
    from inf30.lock import lock_folder

    with lock_folder(out, tool="infmae predict"), torch.no_grad():
        return task.predict(model, [Path(p) for p in images], Path(out), torch.device(config["device"]),
                            save_json=save_json, **kwargs)


def _fmt(v: Any) -> str:
    """A table cell: 4 decimals, 2 from 10 up, 3 significant digits below 1e-3 (F_a is ~1e-6, not 0.0000)."""
    if isinstance(v, float):
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return "-" if v is None else str(v)


def results_row(results: dict[str, Any], columns: list[str], split: str) -> str:
    m = results.get(split) or {}
    init = results.get("init", {}).get("spec", "?")
    return "| " + " | ".join([results.get("run", "?"), results.get("task", "?"), init, split,
                              *[_fmt(m.get(c)) for c in columns]]) + " |"


def table_header(columns: list[str]) -> str:
    head = ["run", "task", "init", "split", *columns]
    return "| " + " | ".join(head) + " |\n|" + "|".join("---" for _ in head) + "|"


def write_results(run_dir: Path, data: Path, device: torch.device) -> Path:
    """Evaluate the best checkpoint (else the latest) on every split the data has; write results.json,
    results.md and the prediction drawings of a fixed sample. Returns results.json's path."""
    from inf30.atomic import write_text_atomic

    task, model, config = load_run_model(run_dir, None, device)
    train = config["train"]
    results: dict[str, Any] = {
        "run": run_dir.name, "task": train["task"], "layout": config.get("layout"), "init": config.get("init", {}),
        "checkpoint": Path(config["checkpoint"]).name, "config": train, "data": str(data),
    }
    best = None
    with contextlib.suppress(Exception):
        best = read_training_checkpoint(Path(config["checkpoint"]))["state"].get("extra", {}).get("best")
    results["best"] = best
    splits = []
    for split in EVAL_SPLITS:
        ds = _split_dataset(task, data, split, train["input_size"])
        if ds is not None:
            with torch.no_grad():
                results[split] = task.evaluate(model, ds, model_device(model))
            splits.append(split)
    columns = task.table_columns()
    results["columns"] = columns
    main_split = "test" if "test" in splits else (splits[0] if splits else "test")
    results["markdown"] = results_row(results, columns, main_split)
    if train.get("vis_count", 0) and splits:
        images = task.sample_images(data, main_split, int(train["vis_count"]))
        if images:
            with torch.no_grad():
                paths = task.predict(model, images, run_dir / "predictions", model_device(model))
            results["predictions"] = [str(Path(p).relative_to(run_dir)) if Path(p).is_relative_to(run_dir)
                                      else str(p) for p in paths]
    path = run_dir / RESULTS
    write_text_atomic(path, json.dumps(results, indent=2, default=_json_default) + "\n")
    write_text_atomic(run_dir / "results.md", table_header(columns) + "\n" + results["markdown"] + "\n")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray) or isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def compare_runs(run_dirs: list[str | Path], split: str | None = CompareOptions.split) -> str:
    """A paper-style markdown table, one row per run (its results.json), columns from the tasks' tables
    (options: :class:`CompareOptions`, checked first)."""
    CompareOptions(split=split).validate()
    rows, columns = [], []
    for r in run_dirs:
        p = Path(r) / RESULTS
        if not p.is_file():
            raise UsageError(f"{r}: no {RESULTS} (not a finished `infmae finetune` run)")
        res = json.loads(p.read_text())
        res["run"] = Path(r).name
        for c in res.get("columns") or []:
            if c not in columns:
                columns.append(c)
        rows.append(res)
    out = [table_header(columns)]
    for res in rows:
        s = split or ("test" if "test" in res else next((x for x in EVAL_SPLITS if x in res), "test"))
        out.append(results_row(res, columns, s))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- entry point
def _launched_worker(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    from inf30.errors import UserError
    from infmae.data import DataError
    from infmae.tasks import DataLayoutError

    try:
        return finetune_worker(cfg_dict)
    except (UserError, DataError, DataLayoutError) as exc:
        return {"error": str(exc), "usage": isinstance(exc, ValueError) and not isinstance(exc, TrainError)}


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune as configured (options validated first, the run folder locked, re-running resumes); returns
    rank 0's summary with the path of results.json."""
    cfg = cfg.resolved()
    return run_locked(cfg, finetune_worker, _launched_worker, "infmae finetune")
