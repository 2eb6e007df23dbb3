"""Model checkpoints: safetensors weights + a JSON config, so a model is rebuilt without unpickling anything.

    DIR/model.safetensors   the state dict (the config is also stored in the safetensors metadata)
    DIR/config.json         `model.config`: the preset name and every option

`save_model(model, DIR)` writes both atomically (temporary file + rename); `read_checkpoint(DIR | file)`
gives the state dict and the config back (``infmae.model.load_model`` rebuilds the model from them, so this
module never imports the model). Torch files (.pt / .pth, e.g. a trainer's full checkpoint with {"model": state_dict,
"config": ...}) are read only with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from inf30.atomic import atomic_path, write_text_atomic

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in chunks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save_model(model: nn.Module, directory: str | Path) -> Path:
    """Write DIR/model.safetensors and DIR/config.json atomically; returns DIR."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError("model has no `config` dict; cannot write a rebuildable checkpoint")
    cfg_text = json.dumps(config, indent=2, sort_keys=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(d / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"config": cfg_text})
    write_text_atomic(d / CONFIG_NAME, cfg_text + "\n")
    return d


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:200]


def _unwrap_torch_state(obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    config = None
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        config = obj["config"]
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("torch checkpoint holds no state dict of tensors")
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}
    return state, config


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict on CPU, config or None) from a checkpoint directory, a .safetensors file or a torch file."""
    p = Path(path)
    if p.is_dir():
        weights = p / WEIGHTS_NAME
        if not weights.is_file():
            torch_files = sorted(q for q in p.iterdir() if q.suffix in TORCH_SUFFIXES)
            if not torch_files:
                raise FileNotFoundError(f"{p}: neither {WEIGHTS_NAME} nor a torch checkpoint")
            weights = torch_files[-1]
        p = weights
    if not p.is_file():
        raise FileNotFoundError(p)
    config: dict[str, Any] | None = None
    if p.suffix == ".safetensors":
        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
                meta = f.metadata() or {}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own (Rust) error types
            raise ValueError(f"{p}: not a readable safetensors file (truncated or corrupt: {_first_line(exc)})") from None
        if "config" in meta:
            config = json.loads(meta["config"])
    elif p.suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)  # never unpickles arbitrary objects
        except Exception as exc:  # noqa: BLE001 - truncated zip, garbage bytes, refused globals, ...
            raise ValueError(f"{p}: not a loadable PyTorch checkpoint (truncated, corrupt or refused by the safe "
                             f"loader: {_first_line(exc)})") from None  # fmt: skip
        state, config = _unwrap_torch_state(obj)
    else:
        raise ValueError(f"{p}: unknown checkpoint format (expected .safetensors or {TORCH_SUFFIXES})")
    side = p.parent / CONFIG_NAME
    if side.is_file():  # the config file next to the weights wins over embedded metadata
        try:
            config = json.loads(side.read_text())
        except ValueError as exc:
            raise ValueError(f"{side}: not valid JSON ({exc})") from None
    if isinstance(config, dict) and "preset" not in config and isinstance(config.get("model"), dict):
        config = config["model"]  # an exported encoder's config.json nests the model config (infmae.export)
    return state, config


# ==========================================================================================================
# Training checkpoints (the engine's; `infmae.engine`, `infmae.train`, `infmae.finetune`)
# ==========================================================================================================
#
#   RUN_DIR/checkpoint-NAME/
#     model.safetensors, config.json   the model (save_model above; read_checkpoint reads it)
#     train_state.pt                   optimizer, grad scaler, step, running sums, RNG states (tensors and
#                                      primitive containers only: torch.load(weights_only=True))
#     train_config.json                the full run configuration
#     trainer.json                     step, epoch, loss: written last, marks the folder complete
#
# A checkpoint is written under `.tmp-checkpoint-NAME-PID`, fsynced and renamed into place; the previous one is
# kept (as `checkpoint-NAME.prev`) until the new one is complete. `resume_candidates` lists the complete
# checkpoints newest first; `load_resume` takes the newest one that actually reads (a truncated file falls
# back to the next, and says so).

LATEST = "checkpoint-latest"
STATE_FILE = "train_state.pt"
DONE_FILE = "trainer.json"
TRAIN_CONFIG_FILE = "train_config.json"


class CheckpointError(ValueError):
    """A training checkpoint that cannot be read or written; the message is one line."""


def before_commit(tmp_folder: Path) -> None:
    """Called after a checkpoint's weights and state are written, before its completion marker and rename.

    A no-op; tests replace it (e.g. to pause so that a kill lands mid-write)."""


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


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and primitive containers (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  *[int(x) if i < 2 else float(x) for i, x in enumerate(np_state[2:])]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only on a machine with as many GPUs)."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class _RecordingWriter:
    """A file object for torch.save that keeps the OSError of a failed write (torch reports it only as a
    RuntimeError about stream positions)."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, b: bytes) -> int:
        try:
            return self.f.write(b)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        w = _RecordingWriter(f)
        try:
            torch.save(obj, w)
        except RuntimeError:
            if w.error is not None:
                raise w.error from None
            raise


def _as_oserror(exc: Exception) -> Exception:
    """An OSError for a writer's error that wraps one (``os error N`` in the message), else ``exc``."""
    import re

    if isinstance(exc, OSError):
        return exc
    m = re.search(r"os error (\d+)", str(exc))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1)))) if m else exc


def write_checkpoint(
    run_dir: Path, name: str, model: nn.Module, train_state: dict[str, Any], config: dict[str, Any],
    summary: dict[str, Any],
) -> Path:
    """Write ``run_dir/name`` atomically (temporary folder, fsync, rename; the old one kept until then).

    An ``OSError`` (full disk, quota, file-size limit) removes the partial folder and raises
    ``inf30.errors.OutputError`` naming the last good checkpoint, which is left intact."""
    from inf30.errors import OutputError

    run_dir = Path(run_dir)
    tmp = run_dir / f".tmp-{name}-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            save_model(model, tmp)
        except Exception as exc:  # safetensors reports a failed write as its own error: "... (os error 27)"
            raise _as_oserror(exc) from None
        _torch_save(train_state, tmp / STATE_FILE)
        (tmp / TRAIN_CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        before_commit(tmp)
        (tmp / DONE_FILE).write_text(json.dumps(summary, indent=2))
        _fsync_tree(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        good = newest_complete(run_dir)
        err = OutputError.writing(run_dir, exc)
        raise OutputError(f"{err}; last good checkpoint: {good or 'none'} (intact)") from None
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
    return all((folder / f).is_file() for f in (WEIGHTS_NAME, STATE_FILE, TRAIN_CONFIG_FILE, DONE_FILE))


def resume_candidates(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of ``run_dir`` as (step, folder), newest first (latest before .prev before epochs)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found: list[tuple[int, int, Path]] = []
    for d in run_dir.iterdir():
        if not d.is_dir() or not d.name.startswith("checkpoint-") or not is_complete(d):
            continue
        try:
            step = int(json.loads((d / DONE_FILE).read_text())["step"])
        except (ValueError, KeyError, TypeError, OSError):
            continue
        rank = 2 if d.name == LATEST else (1 if d.name == LATEST + ".prev" else 0)
        found.append((step, rank, d))
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [(s, d) for s, _, d in found]


def newest_complete(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step in ``run_dir`` (not read, only listed), or None."""
    c = resume_candidates(run_dir)
    return c[0][1] if c else None


def load_train_state(folder: Path) -> dict[str, Any]:
    """``train_state.pt`` with ``weights_only=True`` (tensors and primitive containers only)."""
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def read_training_checkpoint(folder: Path) -> dict[str, Any]:
    """{"weights", "state", "config", "folder"} of a checkpoint folder, every file fully read;
    CheckpointError (one line) for a truncated or garbage file."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        weights = load_file(str(folder / WEIGHTS_NAME))
        state = load_train_state(folder)
        config = json.loads((folder / TRAIN_CONFIG_FILE).read_text())
        if not isinstance(state, dict) or "step" not in state or not isinstance(config, dict):
            raise ValueError("not a training checkpoint")
    except Exception as exc:  # noqa: BLE001 - safetensors, pickle, zip and JSON errors all mean "unreadable"
        msg = " ".join(str(exc).split())[:160] or exc.__class__.__name__
        raise CheckpointError(f"{folder} is unreadable (truncated or not a checkpoint: {msg})") from None
    return {"weights": weights, "state": state, "config": config, "folder": folder}


def load_resume(run_dir: str | os.PathLike, log: Any = None) -> dict[str, Any] | None:
    """The newest readable checkpoint of ``run_dir`` (see :func:`read_training_checkpoint`), or None when
    there is none. Unreadable newer ones are skipped with a message through ``log``; when every complete
    checkpoint is unreadable, CheckpointError (never a silent restart over a user's run)."""
    skipped: list[str] = []
    for _step, folder in resume_candidates(run_dir):
        try:
            ck = read_training_checkpoint(folder)
        except CheckpointError as exc:
            skipped.append(str(exc))
            continue
        if skipped and log is not None:
            log(f"warning: {skipped[-1]}; falling back to {folder} at step {int(ck['state']['step'])}")
        return ck
    if skipped:
        raise CheckpointError(f"{skipped[0]}; no readable checkpoint to resume from: move the run folder away "
                              "to start over")
    return None
