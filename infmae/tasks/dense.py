"""What the dense tasks (`irstd`, `segment`) share: reading images and label maps, the paired augmentation,
sliding-window inference and the drawing of overlays.

Images are read as 8-bit gray whatever their mode (L, RGB, P, I;16 ...) and given to the model as float
[1, H, W] in [0, 1]; the model (`infmae.heads.DenseModel`) normalizes, pads and crops back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from inf30.atomic import atomic_path

from ..data import IMAGE_EXTENSIONS, MEAN
from .base import DataLayoutError


def read_gray(path: Path) -> np.ndarray:
    """An image file -> uint8 [H, W] (8-bit gray: L as is, colour / palette to luminance, 16-bit scaled)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                lo, hi = float(a.min()), float(a.max())
                return np.round((a - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataLayoutError(f"{path}: cannot read the image ({exc})") from exc


def read_labels(path: Path) -> np.ndarray:
    """A label map file -> its values [H, W] (palette indices for mode P, gray values otherwise)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1", "I", "I;16"):
                im = im.convert("L")
            a = np.asarray(im)
            return (a > 0).astype(np.uint8) * 255 if a.dtype == bool else a.astype(np.int64)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataLayoutError(f"{path}: cannot read the label map ({exc})") from exc


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only; DataLayoutError naming the file when unreadable."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataLayoutError(f"{path}: cannot read the image ({exc})") from exc


def check_same_size(image: Path, label: Path) -> None:
    """DataLayoutError naming `label` when its size differs from `image`'s."""
    wi, hi = image_size(image)
    wl, hl = image_size(label)
    if (wi, hi) != (wl, hl):
        raise DataLayoutError(f"{label}: label size {wl}x{hl} does not match its image {image.name} ({wi}x{hi})")


def find_image(folder: Path, stem: str) -> Path | None:
    """`folder/stem.<image extension>` if one exists (any case of the extension)."""
    for ext in IMAGE_EXTENSIONS:
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def to_input(gray: np.ndarray) -> torch.Tensor:
    """uint8 [H, W] -> float [1, H, W] in [0, 1]."""
    return torch.from_numpy(gray.astype(np.float32) / np.float32(255.0))[None]


def augment_pair(
    gray: np.ndarray, label: np.ndarray, size: int, scale: tuple[float, float], fill_label: int,
    gen: torch.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale (image bilinear, labels nearest), pad to `size` (image with the mean gray, labels with
    `fill_label`), random `size` x `size` crop, random horizontal and vertical flip. uint8 gray [H, W] and
    integer labels [H, W] -> the same, [size, size]. Draws come from torch's RNG (seeded per worker)."""
    r = torch.rand(5, generator=gen).tolist()
    s = scale[0] + (scale[1] - scale[0]) * r[0]
    h, w = gray.shape
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        gray = np.asarray(Image.fromarray(gray).resize((nw, nh), Image.Resampling.BILINEAR))
        label = np.asarray(Image.fromarray(label.astype(np.int32)).resize((nw, nh), Image.Resampling.NEAREST))
    ph, pw = max(0, size - nh), max(0, size - nw)
    if ph or pw:
        gray = np.pad(gray, ((0, ph), (0, pw)), constant_values=round(MEAN * 255))
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=fill_label)
    top = int(r[1] * (gray.shape[0] - size + 1))
    left = int(r[2] * (gray.shape[1] - size + 1))
    gray, label = gray[top : top + size, left : left + size], label[top : top + size, left : left + size]
    if r[3] < 0.5:
        gray, label = gray[:, ::-1], label[:, ::-1]
    if r[4] < 0.5:
        gray, label = gray[::-1], label[::-1]
    return np.ascontiguousarray(gray), np.ascontiguousarray(label)


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window offsets covering [0, length) with windows of `crop` (the last one flush with the end)."""
    if length <= crop:
        return [0]
    n = math.ceil((length - crop) / stride) + 1
    return sorted({min(i * stride, length - crop) for i in range(n)})


@torch.no_grad()
def sliding_window(model: torch.nn.Module, imgs: torch.Tensor, crop: int | None, stride: int | None = None) -> torch.Tensor:
    """Logits [B, K, H, W] of `model` on imgs [B, C, H, W]: whole when it fits in `crop` (or crop is None),
    else the mean of overlapping crop x crop windows (stride default 2/3 of the crop, as mmseg's 'slide')."""
    h, w = imgs.shape[-2:]
    if crop is None or (h <= crop and w <= crop):
        return model(imgs)
    stride = stride or max(1, crop * 2 // 3)
    out: torch.Tensor | None = None
    count = torch.zeros((1, 1, h, w), device=imgs.device)
    for top in window_starts(h, crop, stride):
        for left in window_starts(w, crop, stride):
            logits = model(imgs[..., top : top + crop, left : left + crop]).float()
            if out is None:
                out = torch.zeros((imgs.shape[0], logits.shape[1], h, w), device=imgs.device)
            out[..., top : top + logits.shape[-2], left : left + logits.shape[-1]] += logits
            count[..., top : top + logits.shape[-2], left : left + logits.shape[-1]] += 1
    assert out is not None
    return out / count


def blend(gray: np.ndarray, mask: np.ndarray, color: Sequence[int], alpha: np.ndarray | float = 0.6) -> np.ndarray:
    """uint8 gray [H, W] -> RGB [H, W, 3] with `color` blended in where mask (alpha scalar or [H, W])."""
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    a = (np.broadcast_to(alpha, mask.shape) * mask)[..., None].astype(np.float32)
    rgb = rgb * (1 - a) + np.asarray(color, dtype=np.float32) * a
    return rgb.clip(0, 255).astype(np.uint8)


def panels(parts: Sequence[np.ndarray], gap: int = 4) -> Image.Image:
    """RGB arrays [H, W, 3] of one size side by side with a white gap."""
    h = parts[0].shape[0]
    sep = np.full((h, gap, 3), 255, dtype=np.uint8)
    row = [parts[0]]
    for p in parts[1:]:
        row += [sep, p]
    return Image.fromarray(np.concatenate(row, axis=1))


def save_png(img: Image.Image, path: Path) -> Path:
    """Write a PNG atomically (no fsync: outputs that can be regenerated)."""
    with atomic_path(path, fsync=False) as tmp:
        img.save(tmp, format="PNG")
    return path


class DenseDataset(torch.utils.data.Dataset):
    """What the irstd and segment datasets share: a list of samples with an `image` path each."""

    samples: list

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def image_paths(self) -> list[Path]:
        """The image files, in item order (the engine draws its fixed prediction sample from them)."""
        return [s.image for s in self.samples]
