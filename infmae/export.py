"""``infmae export``: the pre-trained encoder alone (no decoder, no masking, no optimizer) for downstream use.

Output folder::

    OUT/model.safetensors   the encoder's weights, keys ``encoder.*`` as in the pre-training model
    OUT/config.json         the model config (as ``infmae.checkpoint.save_model`` writes it) plus an
                            ``export`` entry: format, pyramid strides/channels, normalization, source checkpoint
    OUT/README.md           a model card (kept when the user replaced it with their own)

Re-exporting into the same folder replaces only these files; `--push ORG/NAME` uploads the folder to the Hub.

``InfMAEBackbone.from_pretrained(OUT)`` (or :func:`load_encoder`) builds the feature-pyramid backbone
(F1..F4 at strides 4, 8, 16, 32) from it; only the F4 convolution is new (trained downstream).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "infmae-encoder"


def export_encoder(ckpt: str | os.PathLike, out: str | os.PathLike, push: str | None = None) -> dict[str, Any]:
    """Load a checkpoint (folder or ``model.safetensors``) and write its encoder to ``out`` (locked; each file
    atomic; files of ``out`` that the export does not write, an edited model card included, are kept).
    With ``push`` ("org/name"), upload the folder to that Hub model repo.

    Returns ``{"path": out, "params": number of encoder parameters, "keys": number of tensors, "url": ...}``.
    """
    from infmae.hub import check_push
    from infmae.model import load_model

    ckpt, out = Path(ckpt), Path(out)
    token = check_push(push) if push is not None else None
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    _check_out(out)
    model = load_model(ckpt)
    folder = ckpt if ckpt.is_dir() else ckpt.parent
    train_cfg: dict[str, Any] = {}
    if (folder / "train_config.json").is_file():
        train_cfg = json.loads((folder / "train_config.json").read_text())
    step = None
    if (folder / "trainer.json").is_file():
        step = json.loads((folder / "trainer.json").read_text()).get("step")
    pretrained = {"checkpoint": str(ckpt), "step": step,
                  "input_size": train_cfg.get("train", {}).get("input_size"),
                  "data": train_cfg.get("data_description")}  # fmt: skip
    from inf30.lock import lock_folder

    with lock_folder(out, tool="infmae"):
        info = write_encoder(model, out, pretrained)
        url = None
        if push is not None:
            from infmae.hub import push_folder

            url = push_folder(out, push, token=token, commit_message=f"infmae export {ckpt.name}")
    return {**info, "url": url}


def write_encoder(model: torch.nn.Module, out: Path, pretrained: dict[str, Any]) -> dict[str, Any]:
    """Write ``model``'s encoder to ``out``: model.safetensors, config.json (atomic, each) and the model card
    (unless the user replaced it with their own)."""
    from safetensors.torch import save_file

    from inf30.atomic import atomic_path, write_text_atomic
    from infmae.hub import model_card, write_card

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k.startswith("encoder.")}
    pre = model.config.get("preprocessing") or {}
    config = {
        "format": FORMAT,
        "version": 1,
        "model": model.config,
        "patch_size": model.patch_size,
        "pyramid": {"strides": [4, 8, 16, 32], "channels": _pyramid_channels(model.config)},
        "normalization": {"mean": pre.get("mean", [0.425] * 3), "std": pre.get("std", [0.2] * 3),
                          "gray_to_3_channels": True},
        "pretrained": pretrained,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_text_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    title = f"InfMAE encoder ({model.config.get('preset')})"
    write_card(out, model_card(config, title=title, body="The pre-trained encoder alone (no decoder): "
                               "`InfMAEBackbone.from_pretrained` gives the F1-F4 pyramid.\n"))  # fmt: skip
    return {"path": str(out), "params": sum(v.numel() for v in state.values()), "keys": len(state)}


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that holds a config.json other than an exported encoder's (we would replace it)."""
    cfg = out / "config.json"
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another --out")
    if cfg.is_file():
        try:
            ok = json.loads(cfg.read_text()).get("format") == FORMAT
        except (ValueError, OSError, AttributeError):
            ok = False
        if not ok:
            raise FileExistsError(f"{out} exists and is not an exported encoder; choose another --out")
    elif (out / "model.safetensors").exists():
        raise FileExistsError(f"{out} holds a model.safetensors that is not an exported encoder's; choose another --out")


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
