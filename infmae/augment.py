"""Batched on-device augmentation of packed uint8 canvases: random resized crop, flip, normalize.

The crop boxes and flips are drawn on the CPU from per-sample seeds with exactly the decode path's rule
(:func:`random_resized_crop_box` then ``rng.random() < 0.5`` from ``random.Random(seed)``), so
a sample's box depends only on its seed and image size, on any device. The resampling is separable
antialiased bicubic (Keys a = -0.5, the filter of Pillow and of ``F.interpolate(..., antialias=True)``):
per sample, a row matrix ``Wy [S, H]`` and a column matrix ``Wx [S, W]`` hold the filter taps of the box
(support widened by the scale factor when downscaling, taps clipped to the box, rows normalized), and
``out = Wy @ img @ Wx^T`` is two batched matmuls over the padded canvas (a GPU's way: a handful of
kernels per batch). A flip reverses the rows of ``Wx``. Cost: about 2 S (H W + W S) FLOP per image (70 MFLOP
for 224 px from 256x320, ~200 MFLOP when a 640x512 frame pads the canvas), against the model's ~43 GFLOP
per image for InfMAE-B. On a CPU the same filter runs per sample on the exact crop
(``F.interpolate(antialias=True)``, ~8x cheaper there). The gray image is resampled once and replicated
to 3 channels last.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

MEAN = 0.425  # mean and std of the normalized gray input (0..1 scale), replicated to 3 channels
STD = 0.200


def random_resized_crop_box(
    width: int, height: int, rng: random.Random, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """Crop box (left, top, right, bottom) with torchvision's RandomResizedCrop rule, drawn from ``rng``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height  # fallback: central crop clamped to the ratio range
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5: Pillow's and torch's antialiased bicubic)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def axis_weights(lo: torch.Tensor, hi: torch.Tensor, out: int, length: int) -> torch.Tensor:
    """Resampling matrices [B, out, length] mapping pixels ``lo..hi`` (floats [B], in pixels) to ``out``
    samples: antialiased bicubic, taps outside ``[lo, hi)`` dropped, each row summing to 1."""
    dev = lo.device
    scale = (hi - lo) / out  # input pixels per output pixel [B]
    support = scale.clamp(min=1.0)  # the filter is stretched when downscaling (antialiasing)
    centers = lo[:, None] + (torch.arange(out, device=dev, dtype=lo.dtype) + 0.5) * scale[:, None]  # [B, out]
    pix = torch.arange(length, device=dev, dtype=lo.dtype)  # pixel k covers [k, k + 1)
    w = cubic((pix + 0.5 - centers[..., None]) / support[:, None, None])  # [B, out, length]
    inside = (pix[None] >= lo[:, None]) & (pix[None] < hi[:, None])  # [B, length]
    w = w * inside[:, None, :]
    return w / w.sum(-1, keepdim=True)


def resized_crop(
    canvas: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None, method: str = "auto"
) -> torch.Tensor:
    """Crop ``boxes`` [B, 4] (left, top, right, bottom, pixels) of ``canvas`` [B, C, H, W] (any dtype) and
    resize each to ``size`` x ``size``, optionally mirrored (``flip`` bool [B]): float32 [B, C, S, S] in the
    canvas' value range (not rounded, not clamped).

    ``method``: ``matmul`` (two batched matmuls over the padded canvas: few kernel launches, for GPUs),
    ``loop`` (``F.interpolate(antialias=True)`` per sample on the exact crop: ~8x cheaper on a CPU core), or
    ``auto`` (loop on the CPU, matmul elsewhere). Both are the same filter; they agree to ~1e-3 levels.
    """
    if method == "auto":
        method = "loop" if canvas.device.type == "cpu" else "matmul"
    if method == "loop":
        return _resized_crop_loop(canvas, boxes, size, flip)
    b, c, h, w = canvas.shape
    boxes = boxes.to(canvas.device, torch.float32)
    wy = axis_weights(boxes[:, 1], boxes[:, 3], size, h)  # [B, S, H]
    wx = axis_weights(boxes[:, 0], boxes[:, 2], size, w)  # [B, S, W]
    if flip is not None:
        wx = torch.where(flip.to(canvas.device)[:, None, None], wx.flip(1), wx)
    img = canvas.reshape(b * c, h, w).float()
    if c > 1:
        wy, wx = wy.repeat_interleave(c, 0), wx.repeat_interleave(c, 0)
    out = torch.bmm(torch.bmm(wy, img), wx.transpose(1, 2))  # [B*C, S, S]
    return out.view(b, c, size, size)


def _resized_crop_loop(
    canvas: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None
) -> torch.Tensor:
    out = []
    for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        crop = canvas[k : k + 1, :, y0:y1, x0:x1].float()
        y = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        out.append(y.flip(-1) if flip is not None and bool(flip[k]) else y)
    return torch.cat(out) if out else canvas.new_zeros((0, canvas.shape[1], size, size), dtype=torch.float32)


def draw_boxes(sizes: torch.Tensor | Sequence, seeds: torch.Tensor | Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample crop boxes [B, 4] and flips [B] drawn on the CPU from ``random.Random(seed)`` for images of
    ``sizes`` [B, 2] (height, width): the decode path's exact random stream (box, then the flip coin)."""
    boxes, flips = [], []
    for (h, w), seed in zip(torch.as_tensor(sizes).tolist(), torch.as_tensor(seeds).tolist(), strict=True):
        rng = random.Random(int(seed))
        boxes.append(random_resized_crop_box(int(w), int(h), rng))
        flips.append(rng.random() < 0.5)
    return torch.tensor(boxes, dtype=torch.float32), torch.tensor(flips, dtype=torch.bool)


def center_boxes(sizes: torch.Tensor | Sequence) -> torch.Tensor:
    """Central square boxes [B, 4] (side = the shorter side), as :func:`infmae.data.center_view`."""
    out = []
    for h, w in torch.as_tensor(sizes).tolist():
        side = min(h, w)
        left, top = (w - side) // 2, (h - side) // 2
        out.append((left, top, left + side, top + side))
    return torch.tensor(out, dtype=torch.float32)


def normalize(x: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Gray [B, 1, S, S] in 0..255 -> normalized float [B, channels, S, S] ((x/255 - 0.425) / 0.2), replicated
    to ``channels`` only here, after all per-pixel work."""
    y = (x.clamp(0, 255) * (1.0 / 255.0) - MEAN) * (1.0 / STD)
    return y.expand(-1, channels, -1, -1).contiguous() if channels != y.shape[1] else y


def augment_batch(
    canvas: torch.Tensor, sizes: torch.Tensor, seeds: torch.Tensor, size: int, device: torch.device | str = "cpu",
    channels: int = 3,
) -> torch.Tensor:
    """Packed uint8 canvas [B, 1, H, W] + true sizes [B, 2] + sample seeds [B] -> the model's input
    [B, channels, size, size] on ``device``: random resized crop (scale 0.2-1, ratio 3/4-4/3), flip (p 0.5),
    normalization. Boxes come from the seeds on the CPU; the pixels are resampled on ``device``."""
    device = torch.device(device)
    boxes, flips = draw_boxes(sizes, seeds)
    x = canvas.to(device, non_blocking=True)
    return normalize(resized_crop(x, boxes, size, flips), channels)


def center_batch(canvas: torch.Tensor, sizes: torch.Tensor, size: int, channels: int = 3) -> torch.Tensor:
    """Deterministic central square views [B, channels, size, size] (visualization), normalized."""
    return normalize(resized_crop(canvas, center_boxes(sizes), size), channels)


def flops_per_image(size: int, height: int, width: int) -> float:
    """Multiply-adds x 2 of :func:`resized_crop` for one image (the two matmuls)."""
    return 2.0 * size * (height * width + width * size)
