"""Dense prediction heads on `InfMAEBackbone`'s pyramid (F1..F4 at strides 4/8/16/32) and the model around them.

    DenseModel(backbone, head)   gray [B, 1, H, W] in [0, 1] (any H, W) -> logits [B, K, H, W]
        normalizes with the backbone's mean / std (its preprocessing, else `infmae.data.MEAN/STD`), replicates to
        3 channels, pads to a multiple of 32 (with the mean), runs backbone + head, upsamples, crops back.
    FCNHead        two 3x3 convs on F3 (stride 16, the Transformer output) + input skip (mmseg's FCNHead)
    UperHead       UperNet: pyramid pooling on F4 + FPN over F1..F4, fused at stride 4 (paper Table 1)
    IRSTDDecoder   light U-shaped decoder for small targets: FPN over F1..F4 to stride 4, then two x2
                   steps that add full- and half-resolution features of the image itself (targets are 1-10 px)

Heads take `(features, x)` where x is the normalized padded input [B, 3, H, W] and return logits at some
stride; DenseModel resizes them to the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import MEAN, STD
from .model import param_groups

Features = Sequence[torch.Tensor]


class ConvNormAct(nn.Sequential):
    """k x k conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class FCNHead(nn.Module):
    """mmseg's FCNHead (num_convs=2, concat_input=True) on one pyramid level -> logits at its stride."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 256, index: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        cin = in_channels[index]
        self.index = index
        self.convs = nn.Sequential(ConvNormAct(cin, channels), ConvNormAct(channels, channels))
        self.cat = ConvNormAct(cin + channels, channels)
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Features, x: torch.Tensor | None = None) -> torch.Tensor:
        f = feats[self.index]
        y = self.cat(torch.cat([f, self.convs(f)], dim=1))
        return self.cls(self.drop(y))


class PPM(nn.Module):
    """Pyramid pooling: adaptive average pools at `scales`, 1x1 conv + ReLU each, upsampled and concatenated
    (no BatchNorm on the pooled maps: a 1x1 map of batch 1 has no batch statistics)."""

    def __init__(self, cin: int, channels: int, scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(cin, channels, 1), nn.ReLU(True)) for s in scales
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, cin, h, w] -> [B, cin + len(scales) * channels, h, w]."""
        return torch.cat([x] + [_up(stage(x), x) for stage in self.stages], dim=1)


class UperHead(nn.Module):
    """UperNet (Xiao et al. 2018, as in mmseg's UPerHead): PPM on F4, lateral 1x1 + top-down FPN, 3x3 FPN
    convs, all levels upsampled to stride 4, concatenated, fused by a 3x3 conv -> logits at stride 4."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512,
                 scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1) -> None:
        super().__init__()
        *low, top = in_channels
        self.ppm = PPM(top, channels, scales)
        self.bottleneck = ConvNormAct(top + len(scales) * channels, channels)
        self.lateral = nn.ModuleList(ConvNormAct(c, channels, 1) for c in low)
        self.fpn = nn.ModuleList(ConvNormAct(channels, channels) for _ in low)
        self.fuse = ConvNormAct(len(in_channels) * channels, channels)
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Features, x: torch.Tensor | None = None) -> torch.Tensor:
        lat = [conv(f) for conv, f in zip(self.lateral, feats[:-1], strict=True)]
        lat.append(self.bottleneck(self.ppm(feats[-1])))
        for i in range(len(lat) - 1, 0, -1):  # top-down
            lat[i - 1] = lat[i - 1] + _up(lat[i], lat[i - 1])
        outs = [fpn(t) for fpn, t in zip(self.fpn, lat[:-1], strict=True)] + [lat[-1]]
        y = self.fuse(torch.cat([outs[0]] + [_up(o, outs[0]) for o in outs[1:]], dim=1))
        return self.cls(self.drop(y))


class IRSTDDecoder(nn.Module):
    """FPN over F1..F4 to stride 4 (`channels` wide), then x2 -> + image features at stride 2 -> x2 -> + image
    features at stride 1 -> 1x1 conv: logits [B, num_classes, H, W] at full resolution."""

    def __init__(self, in_channels: Sequence[int], num_classes: int = 1, channels: int = 64,
                 prior_logit: float = -4.0) -> None:
        super().__init__()
        c, c2, c1 = channels, channels // 2, channels // 4
        self.lateral = nn.ModuleList(ConvNormAct(cin, c, 1) for cin in in_channels)
        self.smooth = ConvNormAct(c, c)
        self.stem1 = ConvNormAct(3, c1)  # full resolution
        self.stem2 = ConvNormAct(c1, c2, stride=2)  # half resolution
        self.up2 = ConvNormAct(c + c2, c2)
        self.up1 = ConvNormAct(c2 + c1, c1)
        self.cls = nn.Conv2d(c1, num_classes, 1)
        nn.init.constant_(self.cls.bias, prior_logit)  # targets are rare: start near p = sigmoid(prior_logit)

    def forward(self, feats: Features, x: torch.Tensor) -> torch.Tensor:
        lat = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + _up(lat[i], lat[i - 1])
        y = self.smooth(lat[0])  # stride 4
        s1 = self.stem1(x)
        s2 = self.stem2(s1)
        y = self.up2(torch.cat([_up(y, s2), s2], dim=1))
        y = self.up1(torch.cat([_up(y, s1), s1], dim=1))
        return self.cls(y)


def norm_stats(backbone: nn.Module) -> tuple[list[float], list[float]]:
    """(mean, std) per channel for the backbone's input: its `preprocessing` (the weights' own, from the
    checkpoint config) if it has one, else `infmae.data.MEAN` / `STD`."""
    pre: dict[str, Any] = getattr(backbone, "preprocessing", None) or \
        (getattr(backbone, "config", {}) or {}).get("preprocessing") or {}
    mean, std = pre.get("mean", MEAN), pre.get("std", STD)
    as_list = lambda v: [float(t) for t in v] if isinstance(v, list | tuple) else [float(v)] * 3  # noqa: E731
    return as_list(mean), as_list(std)


class DenseModel(nn.Module):
    """Backbone + dense head: gray [B, 1, H, W] in [0, 1] (or [B, 3, H, W]) -> logits [B, K, H, W] (see module)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, multiple: int = 32) -> None:
        super().__init__()
        self.backbone, self.head, self.multiple = backbone, head, multiple
        mean, std = norm_stats(backbone)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        h, w = imgs.shape[-2:]
        x = (imgs.expand(-1, 3, -1, -1) - self.mean) / self.std
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))  # 0 after normalization: the mean gray
        out = self.head(self.backbone(x), x)
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., :h, :w]

    def param_groups(self, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
        """The backbone's groups (layer-wise decayed) + the head's at full lr (lr_scale 1)."""
        groups = self.backbone.param_groups(weight_decay, layer_decay)
        return groups + param_groups(self.head, weight_decay, layer_decay, lambda name: 0, 0)
