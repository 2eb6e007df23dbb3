"""``infmae export``: the pre-trained encoder alone (no decoder, no masking, no optimizer) for downstream use.

Output folder::

    OUT/model.safetensors   the encoder's weights, keys ``encoder.*`` as in the pre-training model
    OUT/config.json         the model config (as ``infmae.checkpoint.save_model`` writes it) plus an
                            ``export`` entry: format, pyramid strides/channels, normalization, source checkpoint

``InfMAEBackbone.from_pretrained(OUT)`` (or :func:`load_encoder`) builds the feature-pyramid backbone
(F1..F4 at strides 4, 8, 16, 32) from it; only the F4 convolution is new (trained downstream).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

FORMAT = "infmae-encoder"


def export_encoder(ckpt: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint (folder or ``model.safetensors``) and write its encoder to ``out`` atomically.

    Returns ``{"path": out, "params": number of encoder parameters, "keys": number of tensors}``.
    """
    from safetensors.torch import save_file

    from infmae.checkpoint import load_model

    ckpt, out = Path(ckpt), Path(out)
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    model = load_model(ckpt)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k.startswith("encoder.")}
    folder = ckpt if ckpt.is_dir() else ckpt.parent
    train_cfg: dict[str, Any] = {}
    if (folder / "train_config.json").is_file():
        train_cfg = json.loads((folder / "train_config.json").read_text())
    step = None
    if (folder / "trainer.json").is_file():
        step = json.loads((folder / "trainer.json").read_text()).get("step")
    config = {
        "format": FORMAT,
        "version": 1,
        "model": model.config,
        "patch_size": model.patch_size,
        "pyramid": {"strides": [4, 8, 16, 32], "channels": _pyramid_channels(model.config)},
        "normalization": {"mean": [0.425] * 3, "std": [0.2] * 3, "gray_to_3_channels": True},
        "pretrained": {"checkpoint": str(ckpt), "step": step,
                       "input_size": train_cfg.get("train", {}).get("input_size"),
                       "data": train_cfg.get("data_description")},
    }
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    if out.exists():
        if not (out / "config.json").is_file() or json.loads((out / "config.json").read_text()).get("format") != FORMAT:
            shutil.rmtree(tmp)
            raise FileExistsError(f"{out} exists and is not an exported encoder; choose another --out")
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"path": str(out), "params": sum(v.numel() for v in state.values()), "keys": len(state)}


def _pyramid_channels(cfg: dict[str, Any]) -> list[int]:
    dims = list(cfg.get("embed_dims", []))
    if len(dims) == 3:
        return [dims[0], dims[1], dims[2], dims[2]]
    return [dims[-1]] * 4 if dims else []


def load_encoder(path: str | os.PathLike, strict: bool = True) -> torch.nn.Module:
    """An exported encoder folder -> :class:`infmae.backbone.InfMAEBackbone` with the weights loaded.

    ``backbone(imgs [B, 3, H, W])`` -> (F1, F2, F3, F4) at strides 4, 8, 16, 32.
    """
    from infmae.backbone import InfMAEBackbone

    return InfMAEBackbone.from_pretrained(path, strict=strict)
