"""Reconstruction figures: original | visible patches | reconstruction | reconstruction pasted over the visible.

Used every few epochs by the trainer (fixed images) and by ``infmae visualize CKPT IMAGE... --out PNG``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from infmae.data import MEAN, STD, center_view, load_gray

COLUMNS = ("original", "visible", "reconstruction", "recon + visible")
MASK_TINT = (0.16, 0.22, 0.42)  # masked patches in the "visible" column (RGB, 0..1)


@torch.no_grad()
def reconstruct(model: torch.nn.Module, imgs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run the masked autoencoder on normalized ``imgs`` [B, 3, H, W].

    Returns [B, 3, H, W] tensors in [0, 1]: ``original``, ``visible`` (masked patches tinted),
    ``reconstruction`` (every patch predicted), ``pasted`` (prediction on masked patches, original on
    visible ones); plus ``mask`` [B, 1, H, W] (1 = masked) and ``loss`` [].
    """
    h, w = imgs.shape[-2:]
    mean, std = _mean_std(model, imgs)
    loss, pred, mask = model(imgs)
    pred = pred.float()
    if getattr(model, "norm_pix_loss", False) or model.config.get("norm_pix_loss"):
        target = model.patchify(imgs.float())  # predictions are per-patch normalized: undo with target stats
        t_mean, t_var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)  # not the pixel mean above
        pred = pred * (t_var + 1e-6) ** 0.5 + t_mean
    p2c = pred.shape[-1]
    rec = model.unpatchify(pred, h, w)
    m = model.unpatchify(mask.float().unsqueeze(-1).expand(-1, -1, p2c), h, w)[:, :1]
    orig = (imgs.float() * std + mean).clamp(0.0, 1.0)
    rec01 = (rec.float() * std + mean).clamp(0.0, 1.0)
    tint = torch.tensor(MASK_TINT, device=imgs.device).view(1, 3, 1, 1)
    visible = orig * (1 - m) + tint * m
    pasted = orig * (1 - m) + rec01 * m
    return {"original": orig, "visible": visible, "reconstruction": rec01, "pasted": pasted, "mask": m,
            "loss": loss.detach().float()}


def _mean_std(model: torch.nn.Module, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's preprocessing mean / std as [1, C, 1, 1] tensors (the data module's constants if unset)."""
    pre = (getattr(model, "config", None) or {}).get("preprocessing") or {}
    c = imgs.shape[1]
    mean = torch.tensor(pre.get("mean", [MEAN] * c), dtype=torch.float32, device=imgs.device).view(1, -1, 1, 1)
    std = torch.tensor(pre.get("std", [STD] * c), dtype=torch.float32, device=imgs.device).view(1, -1, 1, 1)
    return mean, std


def normalize_gray(gray: Image.Image, pre: dict) -> torch.Tensor:
    """8-bit gray PIL image -> [3, H, W] normalized with the model's preprocessing mean / std (per channel)."""
    x = np.asarray(gray, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(pre.get("mean", [MEAN] * 3), dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre.get("std", [STD] * 3), dtype=np.float32).reshape(-1, 1, 1)
    return torch.from_numpy(np.ascontiguousarray((x[None] - mean) / std))


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format that `path`'s extension names (PNG for .png, JPEG for .jpg, ...); ValueError if none."""
    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"--out {path}: unknown image extension {ext or '(none)'!r}; use .png, .jpg, .webp, ...")
    return fmt


def grid_image(parts: dict[str, torch.Tensor], title: str | None = None, min_cell: int = 128) -> Image.Image:
    """Assemble the four columns (rows = images) into one RGB image, cells upscaled to >= ``min_cell``."""
    cols = [parts["original"], parts["visible"], parts["reconstruction"], parts["pasted"]]
    b, _, h, w = cols[0].shape
    scale = max(1, -(-min_cell // min(h, w)))
    ch, cw, gap, head = h * scale, w * scale, 4, 18 + (16 if title else 0)
    canvas = Image.new("RGB", (4 * cw + 5 * gap, head + b * (ch + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((gap, 2), title, fill=(0, 0, 0))
    for j, name in enumerate(COLUMNS):
        draw.text((gap + j * (cw + gap), head - 16), name, fill=(0, 0, 0))
    for i in range(b):
        for j, col in enumerate(cols):
            arr = (col[i].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            tile = Image.fromarray(arr, mode="RGB").resize((cw, ch), Image.Resampling.NEAREST)
            canvas.paste(tile, (gap + j * (cw + gap), head + i * (ch + gap)))
    return canvas


def save_reconstruction(
    model: torch.nn.Module, imgs: torch.Tensor, path: str | os.PathLike, title: str | None = None
) -> Path:
    """Reconstruct normalized ``imgs`` [B, 3, H, W] and write the 4-column figure atomically in the format of
    the path's extension (PNG for .png); return its path."""
    from inf30.atomic import atomic_path

    parts = reconstruct(model, imgs)
    if title is not None:
        title = f"{title}  loss {parts['loss'].item():.4f}"
    img = grid_image(parts, title)
    path = Path(path)
    fmt = image_format(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def _input_size_of(ckpt: Path) -> int | None:
    folder = ckpt if ckpt.is_dir() else ckpt.parent
    cfg = folder / "train_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text())["train"]["input_size"])
    return None


def visualize_images(
    ckpt: str | os.PathLike, images: Sequence[str | os.PathLike], out: str | os.PathLike,
    input_size: int | None = None, device: str = "cpu",
) -> Path:
    """``infmae visualize``: load a checkpoint, take a centered square view of each image at the input size
    (the checkpoint's training size, else the model's preprocessing input size), normalized with the model's
    preprocessing mean / std, and write the reconstruction figure to ``out`` (format of its extension)."""
    from infmae.model import load_model

    if input_size is not None and (input_size < 16 or input_size % 16):
        raise ValueError(f"--input-size must be a positive multiple of 16 (e.g. 224), got {input_size}")
    dev = check_device(device)
    image_format(out)
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    if not images:
        raise ValueError("give at least one IMAGE")
    grays = []
    for p in images:
        try:
            grays.append(load_gray(p))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read image {p}: {exc}") from None
    model = load_model(ckpt).eval()
    pre = model.config.get("preprocessing") or {}
    size = input_size or _input_size_of(ckpt) or int((pre.get("input_size") or [3, 224, 224])[-1])
    if size % 16:
        raise ValueError(f"input size {size} (from the checkpoint) is not a multiple of 16; give --input-size")
    tensors = [normalize_gray(center_view(g, size), pre) for g in grays]
    model = model.to(dev)
    return save_reconstruction(model, torch.stack(tensors).to(dev), out, title=f"{ckpt}")


def check_device(device: str) -> torch.device:
    """A torch device that exists here, or a one-line ValueError (`bogus`, `cuda` without CUDA, `cuda:7` of 1)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"--device {device}: only cpu, cuda and mps are supported")
    return dev
