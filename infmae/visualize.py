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

from infmae.data import center_view, denormalize, load_gray, to_tensor

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
    loss, pred, mask = model(imgs)
    pred = pred.float()
    if getattr(model, "norm_pix_loss", False) or model.config.get("norm_pix_loss"):
        target = model.patchify(imgs.float())  # predictions are per-patch normalized: undo with target stats
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    p2c = pred.shape[-1]
    rec = model.unpatchify(pred, h, w)
    m = model.unpatchify(mask.float().unsqueeze(-1).expand(-1, -1, p2c), h, w)[:, :1]
    orig = denormalize(imgs)
    rec01 = denormalize(rec)
    tint = torch.tensor(MASK_TINT, device=imgs.device).view(1, 3, 1, 1)
    visible = orig * (1 - m) + tint * m
    pasted = orig * (1 - m) + rec01 * m
    return {"original": orig, "visible": visible, "reconstruction": rec01, "pasted": pasted, "mask": m,
            "loss": loss.detach().float()}


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
    """Reconstruct normalized ``imgs`` [B, 3, H, W] and write the 4-column PNG atomically; return its path."""
    from inf30.atomic import atomic_path

    parts = reconstruct(model, imgs)
    if title is not None:
        title = f"{title}  loss {parts['loss'].item():.4f}"
    img = grid_image(parts, title)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
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
    (the checkpoint's training size by default), and write the reconstruction PNG to ``out``."""
    from infmae.checkpoint import load_model

    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    if not images:
        raise ValueError("give at least one IMAGE")
    size = input_size or _input_size_of(ckpt) or 224
    if size % 16:
        raise ValueError(f"--input-size must be a multiple of 16, got {size}")
    tensors = []
    for p in images:
        try:
            tensors.append(to_tensor(center_view(load_gray(p), size)))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read image {p}: {exc}") from None
    model = load_model(ckpt).to(device).eval()
    return save_reconstruction(model, torch.stack(tensors).to(device), out, title=f"{ckpt}")
