"""Model checkpoints: safetensors weights + a JSON config, so a model is rebuilt without unpickling anything.

    DIR/model.safetensors   the state dict (the config is also stored in the safetensors metadata)
    DIR/config.json         `model.config`: the preset name and every option

`save_model(model, DIR)` writes both atomically (temporary file + rename). `load_model(DIR | file)` rebuilds
the model from the config and loads the weights, reporting missing / unexpected keys as a warning and in
`model.load_info`. Torch files (.pt / .pth, e.g. a trainer's full checkpoint with {"model": state_dict,
"config": ...}) are read only with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _atomic_write(path: Path, write: Any) -> None:
    """Call write(tmp_path) on a temporary file in path's folder, then rename it over path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: nn.Module, directory: str | Path) -> Path:
    """Write DIR/model.safetensors and DIR/config.json atomically; returns DIR."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError("model has no `config` dict; cannot write a rebuildable checkpoint")
    cfg_text = json.dumps(config, indent=2, sort_keys=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _atomic_write(d / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"config": cfg_text}))
    _atomic_write(d / CONFIG_NAME, lambda tmp: Path(tmp).write_text(cfg_text + "\n"))
    return d


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
        with safe_open(str(p), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            meta = f.metadata() or {}
        if "config" in meta:
            config = json.loads(meta["config"])
    elif p.suffix in TORCH_SUFFIXES:
        obj = torch.load(p, map_location="cpu", weights_only=True)  # never unpickles arbitrary objects
        state, config = _unwrap_torch_state(obj)
    else:
        raise ValueError(f"{p}: unknown checkpoint format (expected .safetensors or {TORCH_SUFFIXES})")
    side = p.parent / CONFIG_NAME
    if side.is_file():  # the config file next to the weights wins over embedded metadata
        config = json.loads(side.read_text())
    if isinstance(config, dict) and "preset" not in config and isinstance(config.get("model"), dict):
        config = config["model"]  # an exported encoder's config.json nests the model config (infmae.export)
    return state, config


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", strict: bool = False
) -> nn.Module:
    """Rebuild the model from a checkpoint's config and load its weights.

    Missing and unexpected keys are warned about and stored in `model.load_info`; with `strict` they raise.
    """
    from .model import model_from_config

    state, config = read_checkpoint(path)
    if config is None:
        raise ValueError(f"{path}: no config.json or embedded config; cannot rebuild the model")
    model = model_from_config(config)
    result = model.load_state_dict(state, strict=False)
    info = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
    if info["missing"] or info["unexpected"]:
        msg = (
            f"load_model({path}): {len(info['missing'])} missing keys {info['missing'][:8]}, "
            f"{len(info['unexpected'])} unexpected keys {info['unexpected'][:8]}"
        )
        if strict:
            raise RuntimeError(msg)
        warnings.warn(msg, stacklevel=2)
    model.load_info = info
    return model.to(map_location)
