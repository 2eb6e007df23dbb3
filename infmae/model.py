"""InfMAE (paper section 4) and its baselines MAE and ConvMAE, in one readable file.

Shapes: B batch, H x W input (both divisible by 16), p = 16 patch size, (gh, gw) = (H/16, W/16) patch grid,
N = gh * gw patches, Nv visible patches, C1/C2/C3 the widths of stages 1/2/3, D the decoder width.
Feature maps are kept channels-last ([B, h, w, C]) so every per-position layer is a plain Linear.

InfMAE pre-training (`InfMAE.forward`):
    imgs [B,3,H,W] --masking--> ids_keep [B,Nv], mask [B,N]
    stage 1: 4x4/4 patch embed + LN + GELU, conv blocks          -> F1 [B,H/4,W/4,C1]  (mask block 1)
    stage 2: 2x2/2 patch embed + LN + GELU, conv blocks          -> F2 [B,H/8,W/8,C2]  (mask block 2)
    stage 3: 2x2/2 patch embed + LN + GELU, Linear, + sin-cos pos, gather visible, Transformer blocks
             + fuse1(F1) + fuse2(F2) at the visible patches, LayerNorm                -> [B,Nv,C3]
    decoder: Linear to D, mask tokens restored to their places, + sin-cos pos, Transformer blocks, LN,
             Linear to p*p*3                                                          -> pred [B,N,768]
    loss: MSE on masked patches only (optionally per-patch normalized targets).

Gray input: infrared is gray replicated to 3 equal channels, so every model also takes imgs [B,1,H,W] and
computes exactly what it computes for the replicated [B,3,H,W] (`accepts_gray`): the first patch embedding
(and the `reference` masking stem) sums its kernel over the input channels at run time, the gray masking
score and the loss target see the 3 equal channels through `expand` (no copy). Parameters, checkpoints and
pred (p*p*3) stay 3-channel.

Sparse stages 1 and 2 (``sparse=True``, the default): a conv block's output at a visible position depends
only on visible positions (masked positions are zeroed before the only spatial layer, the 5x5 depthwise
convolution), and the 2x2 / 4x4 patch merges never mix 16x16 patches. So stages 1 and 2 are computed only
inside the visible 16x16 patches, stored as [B, Nv, s, s, C] (s = 4 at stage 1, 2 at stage 2): every
per-position layer runs on Nv/N of the positions, and the depthwise convolution runs on a zero-filled grid.
``sparse=False`` computes the dense masked reference (identical mathematics; tests compare the two).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import read_checkpoint
from .masking import MASKING_KINDS, MaskGenerator, MaskInfo
from .pos_embed import sincos_2d

__all__ = [
    "InfMAE",
    "PRESETS",
    "create_model",
    "infmae_tiny",
    "infmae_small",
    "infmae_base",
    "infmae_large",
    "mae_base",
    "convmae_base",
]

# LayerNorm eps as published (the authors' code and ConvMAE): PyTorch's default 1e-5 in the patch embeddings and
# the convolutional blocks, 1e-6 in the Transformer parts. Checkpoints of ours written before the eps were in the
# config used LN_EPS = 1e-6 everywhere: `upgrade_config` keeps them loading exactly as they were.
LN_EPS = 1e-6
LN_EPS_CONV = 1e-5
LEGACY_LN_EPS = 1e-6

# Preprocessing every preset was pre-trained with (timm's `pretrained_cfg` fields): gray infrared replicated to 3
# channels, scaled to [0, 1], then (x - mean) / std; square views of input_size (C, H, W), 16-pixel patches.
PREPROCESSING: dict[str, Any] = {
    "mean": [0.425, 0.425, 0.425],
    "std": [0.2, 0.2, 0.2],
    "input_size": [3, 224, 224],
    "patch_size": 16,
    "interpolation": "bicubic",
}


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


def _cpu_low_precision(x: torch.Tensor) -> bool:
    """True for a bf16 / fp16 tensor on the CPU (where some kernels are faster in fp32)."""
    return x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16)


def depthwise_conv(x: torch.Tensor, conv: nn.Conv2d, padding: int | None = None) -> torch.Tensor:
    """conv's depthwise convolution on a channels-last-strided NCHW tensor; in fp32 on the CPU, where
    PyTorch's bf16 depthwise backward is about 3x slower than fp32 (and the FLOPs are negligible)."""
    pad = conv.padding if padding is None else padding
    if _cpu_low_precision(x) or (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):
            out = F.conv2d(x.float(), conv.weight.float(), conv.bias.float(), padding=pad, groups=conv.groups)
        return out.to(x.dtype)
    return F.conv2d(x, conv.weight, conv.bias, padding=pad, groups=conv.groups)


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or at rate 0)."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear on the last dimension: [..., C] -> [..., C]."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with scaled_dot_product_attention: [B, L, C] -> [B, L, C]."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, L, C/heads]
        if _cpu_low_precision(q):  # PyTorch's CPU bf16 attention backward is slower than fp32: use fp32
            with torch.autocast("cpu", enabled=False):
                x = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
        else:
            x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm Transformer block (ViT / MAE): [B, L, C] -> [B, L, C]."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, eps: float = LN_EPS
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


Spatial = Callable[[torch.Tensor, nn.Conv2d], torch.Tensor]


class ConvBlock(nn.Module):
    """ConvMAE's convolutional block on a channels-last map [..., C] -> [..., C]:

    x += conv1x1(dwconv5x5(mask * conv1x1(LN(x))));  x += conv1x1(GELU(conv1x1(LN(x))))

    The 1x1 convolutions are Linear layers on the channel dimension. `spatial(y, dwconv)` applies the mask
    and the depthwise convolution for the current layout (dense grid or sparse visible patches).
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, eps: float = LN_EPS_CONV) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.conv1 = nn.Linear(dim, dim)
        self.dwconv = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv2 = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, spatial: Spatial) -> torch.Tensor:
        x = x + self.drop_path(self.conv2(spatial(self.conv1(self.norm1(x)), self.dwconv)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def space_to_depth(x: torch.Tensor, k: int) -> torch.Tensor:
    """[..., h, w, C] -> [..., h/k, w/k, k*k*C] (order kh, kw, C): the receptive fields of a k x k, stride-k conv."""
    *lead, h, w, c = x.shape
    nd = len(lead)
    x = x.reshape(*lead, h // k, k, w // k, k, c).transpose(nd + 1, nd + 2)
    return x.reshape(*lead, h // k, w // k, k * k * c)


def gray_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`linear` (in_features K*C, inputs ordered (..., channel)) on x [..., K*C], or on a gray x [..., K]
    standing for C equal channels: then the kernel is summed over its channels at run time, which gives the
    same output without the C-fold copy (and the same gradient on every channel of the kernel)."""
    k = x.shape[-1]
    if k == linear.in_features:
        return linear(x)
    c = linear.in_features // k
    if c * k != linear.in_features:
        raise ValueError(f"input width {k} fits neither {linear.in_features} nor one channel of it")
    return F.linear(x, linear.weight.view(linear.out_features, k, c).sum(-1), linear.bias)


class PatchMerge(nn.Module):
    """A k x k, stride-k convolution (as a Linear on space-to-depth), optionally + LayerNorm + GELU.

    [..., h, w, Cin] -> [..., h/k, w/k, Cout]; works on a dense map and on sparse [B, Nv, s, s, Cin] alike,
    and on a gray [..., h, w, 1] standing for Cin equal channels (see `gray_linear`).
    """

    def __init__(self, k: int, cin: int, cout: int, norm_act: bool = True, eps: float = LN_EPS_CONV) -> None:
        super().__init__()
        self.k = k
        self.proj = nn.Linear(k * k * cin, cout)
        self.norm = nn.LayerNorm(cout, eps=eps) if norm_act else nn.Identity()
        self.act = nn.GELU() if norm_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(gray_linear(self.proj, space_to_depth(x, self.k))))


def dense_spatial(keep: torch.Tensor | None) -> Spatial:
    """Dense layout [B, h, w, C]: y * keep (1 = visible; None = no mask), then the depthwise conv."""

    def apply(y: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        if keep is not None:
            y = y * keep
        return depthwise_conv(y.permute(0, 3, 1, 2), conv).permute(0, 2, 3, 1)  # channels-last: no copies

    return apply


def halo_index(ids_keep: torch.Tensor, grid: tuple[int, int], s: int, r: int = 2) -> torch.Tensor:
    """Row ids of the (s+2r) x (s+2r) input tiles that a k = 2r+1 convolution needs for the s x s outputs of
    every visible patch.

    The visible positions are stored as rows of a [B*Nv*s*s, C] tensor (patch-major, then row, column);
    row B*Nv*s*s is an extra zero row, used for masked patches and the zero padding outside the image.
    Returns [B*Nv*(s+2r)^2] int64. All vectorized; no loop over patches.
    """
    b, nv = ids_keep.shape
    gh, gw = grid
    dev = ids_keep.device
    zero_row = b * nv * s * s
    slot = torch.full((b, gh * gw), -1, dtype=torch.long, device=dev)  # visible rank of each patch, or -1
    slot.scatter_(1, ids_keep, torch.arange(nv, device=dev).expand(b, nv))
    slot = slot + (torch.arange(b, device=dev) * nv).unsqueeze(1) * (slot >= 0)  # global visible index
    t = torch.arange(s + 2 * r, device=dev) - r  # tile offsets relative to the patch origin
    py, px = torch.div(ids_keep, gw, rounding_mode="floor"), ids_keep % gw  # [B, Nv]
    yy = (py * s).unsqueeze(-1) + t  # [B, Nv, T] absolute rows at this stage's resolution
    xx = (px * s).unsqueeze(-1) + t  # [B, Nv, T] absolute columns
    yy, xx = yy.unsqueeze(-1), xx.unsqueeze(-2)  # [B, Nv, T, 1], [B, Nv, 1, T]
    inside = (yy >= 0) & (yy < gh * s) & (xx >= 0) & (xx < gw * s)  # [B, Nv, T, T]
    yc, xc = yy.clamp(0, gh * s - 1), xx.clamp(0, gw * s - 1)
    patch = torch.div(yc, s, rounding_mode="floor") * gw + torch.div(xc, s, rounding_mode="floor")
    src_slot = slot.gather(1, patch.reshape(b, -1)).view_as(patch)  # [B, Nv, T, T]
    row = src_slot * (s * s) + (yc % s) * s + (xc % s)
    valid = inside & (src_slot >= 0)
    return torch.where(valid, row, torch.full_like(row, zero_row)).reshape(-1)


def sparse_spatial(ids_keep: torch.Tensor, grid: tuple[int, int]) -> Spatial:
    """Sparse layout [B, Nv, s, s, C] (visible 16x16 patches only): each visible patch's (s+2r)^2 input tile
    (its own positions, its neighbours' visible positions, zeros elsewhere) is gathered and the depthwise
    conv runs without padding on the tiles, giving exactly the s x s outputs of the dense masked conv."""
    cache: dict[tuple[int, int], torch.Tensor] = {}

    def apply(y: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        b, nv, s, _, c = y.shape
        r = conv.kernel_size[0] // 2
        if (s, r) not in cache:  # computed once per stage and forward, shared by the stage's blocks
            cache[s, r] = halo_index(ids_keep, grid, s, r)
        rows = y.reshape(b * nv * s * s, c)
        if _cpu_low_precision(rows):  # cast before the gather: the tiles are (1 + 2r/s)^2 times larger
            rows = rows.float()
        rows = torch.cat([rows, rows.new_zeros(1, c)])  # [B*Nv*s*s + 1, C]
        tiles = rows.index_select(0, cache[s, r]).view(b * nv, s + 2 * r, s + 2 * r, c)
        out = depthwise_conv(tiles.permute(0, 3, 1, 2), conv, padding=0)  # unpadded conv on the tiles
        return out.to(y.dtype).permute(0, 2, 3, 1).reshape(b, nv, s, s, c)

    return apply


def patch_grid(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """imgs [B, C, H, W] -> patches [B, gh, gw, p, p, C] (pixel order row, column, channel)."""
    b, c, h, w = imgs.shape
    return imgs.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x [B, N, C], ids [B, Nv] -> [B, Nv, C]."""
    return x.gather(1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _flat_ids(ids_keep: torch.Tensor, n: int) -> torch.Tensor:
    """[B, Nv] patch ids -> [B*Nv] row ids into a [B*N, ...] tensor."""
    offsets = torch.arange(ids_keep.shape[0], device=ids_keep.device).unsqueeze(1) * n
    return (ids_keep + offsets).reshape(-1)


def _drop_path_rates(total: int, rate: float) -> list[float]:
    return [rate * i / max(total - 1, 1) for i in range(total)]


# ----------------------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------------------


class MultiScaleEncoder(nn.Module):
    """InfMAE's (and ConvMAE's) encoder: two convolutional stages and a Transformer stage, with multi-scale
    fusion of the stage-1 and stage-2 outputs into the stage-3 tokens."""

    def __init__(
        self,
        embed_dims: tuple[int, int, int] = (256, 384, 768),
        depths: tuple[int, int, int] = (2, 2, 11),
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        multiscale: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = LN_EPS,
        norm_eps_conv: float = LN_EPS_CONV,
    ) -> None:
        super().__init__()
        c1, c2, c3 = embed_dims
        dpr = _drop_path_rates(sum(depths), drop_path)
        ec = norm_eps_conv  # patch embeddings and convolutional blocks; norm_eps: Transformer blocks, final norm
        self.embed_dims, self.depths, self.multiscale = tuple(embed_dims), tuple(depths), multiscale
        self.embed1 = PatchMerge(4, in_chans, c1, eps=ec)
        self.stage1 = nn.ModuleList(ConvBlock(c1, mlp_ratio, dpr[i], ec) for i in range(depths[0]))
        self.embed2 = PatchMerge(2, c1, c2, eps=ec)
        self.stage2 = nn.ModuleList(ConvBlock(c2, mlp_ratio, dpr[depths[0] + i], ec) for i in range(depths[1]))
        self.embed3 = PatchMerge(2, c2, c3, eps=ec)
        self.embed3_linear = nn.Linear(c3, c3)
        d0 = depths[0] + depths[1]
        self.blocks = nn.ModuleList(
            Block(c3, num_heads, mlp_ratio, dpr[d0 + i], norm_eps) for i in range(depths[2])
        )
        if multiscale:
            self.fuse1 = PatchMerge(4, c1, c3, norm_act=False)  # F1 -> 16x16-patch tokens
            self.fuse2 = PatchMerge(2, c2, c3, norm_act=False)  # F2 -> 16x16-patch tokens
        self.norm = nn.LayerNorm(c3, eps=norm_eps)

    @property
    def num_prefix(self) -> int:
        return 0

    def _stages(
        self,
        x: torch.Tensor,
        spatial: Callable[[int, torch.Tensor], Spatial],
        tokens: Callable[[torch.Tensor], torch.Tensor],
        positions: Callable[[torch.Tensor], torch.Tensor],
        fuse: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder's stage sequence, written once for every layout (sparse, dense masked, unmasked).

        x: pixels, channels-last: [B, H, W, 3 or 1] (dense) or [B, Nv, 16, 16, 3 or 1] (the visible patches).
        spatial(s, x): the mask + depthwise conv of the stage whose maps hold s x s positions per 16x16
            patch (s = 4 at stage 1, 2 at stage 2), for its input x (its dtype).
        tokens(y): a map at the 16x16-patch stride [..., C3] -> the tokens kept [B, L, C3].
        positions(t): the sin-cos positions added to the stage-3 tokens t [B, L, C3].
        Returns F1, F2 (channels-last, the layout of x) and the normalized tokens [B, L, C3], with the
        multi-scale fusion added first when `fuse` (and the encoder is multiscale).
        """
        x = self.embed1(x)  # [..., 4, 4, C1] per patch
        sp = spatial(4, x)
        for blk in self.stage1:
            x = blk(x, sp)
        f1 = x
        x = self.embed2(x)  # [..., 2, 2, C2] per patch
        sp = spatial(2, x)
        for blk in self.stage2:
            x = blk(x, sp)
        f2 = x
        t = tokens(self.embed3_linear(self.embed3(x)))  # [B, L, C3]
        t = t + positions(t)
        for blk in self.blocks:
            t = blk(t)
        if fuse and self.multiscale:
            t = t + tokens(self.fuse1(f1))
            t = t + tokens(self.fuse2(f2))
        return f1, f2, self.norm(t)

    def forward_masked(self, imgs: torch.Tensor, info: MaskInfo, sparse: bool = True) -> torch.Tensor:
        """imgs [B, 3 or 1, H, W] -> visible tokens [B, Nv, C3] (in the order of info.ids_keep)."""
        b = imgs.shape[0]
        gh, gw = info.grid
        n, ids = gh * gw, info.ids_keep
        c3 = self.embed_dims[2]
        pos = sincos_2d(gh, gw, c3, imgs.device, imgs.dtype)[ids]  # [B, Nv, C3]
        if sparse:  # stages 1-2 only inside the visible 16x16 patches
            patches = patch_grid(imgs, 16).reshape(b * n, 16, 16, imgs.shape[1])
            x = patches.index_select(0, _flat_ids(ids, n)).view(b, -1, 16, 16, imgs.shape[1])  # [B, Nv, 16, 16, C]
            sparse_sp = sparse_spatial(ids, info.grid)  # one halo-index cache for both stages
            _, _, t = self._stages(x, lambda s, y: sparse_sp, lambda y: y.reshape(b, -1, c3), lambda t: pos)
            return t
        # dense masked reference: every position computed, masked ones zeroed before each depthwise conv
        _, _, t = self._stages(
            imgs.permute(0, 2, 3, 1),
            lambda s, y: dense_spatial(info.keep_map(s).to(y.dtype)),
            lambda y: gather_tokens(y.reshape(b, n, c3), ids),
            lambda t: pos,
        )
        return t

    def forward_pyramid(
        self, imgs: torch.Tensor, fuse: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs [B, 3 or 1, H, W] -> unmasked features: F1 [B, H/4, W/4, C1], F2 [B, H/8, W/8, C2],
        F3 [B, H/16, W/16, C3] (channels-last).

        F3 is the normalized stage-3 output, with the multi-scale fusion added first when `fuse` (as in
        pre-training).
        """
        b, _, h, w = imgs.shape
        gh, gw = h // 16, w // 16
        c3 = self.embed_dims[2]
        spatial = dense_spatial(None)
        f1, f2, t = self._stages(
            imgs.permute(0, 2, 3, 1),
            lambda s, y: spatial,
            lambda y: y.reshape(b, gh * gw, c3),
            lambda t: sincos_2d(gh, gw, c3, imgs.device, t.dtype),
            fuse,
        )
        return f1, f2, t.view(b, gh, gw, c3)

    def layer_id(self, name: str) -> int:
        """Depth index of a parameter for layer-wise lr decay: 0 = first patch embed, sum(depths)+1 = last."""
        d1, d2, _ = self.depths
        parts = name.split(".")
        if parts[0] == "embed1":
            return 0
        if parts[0] == "stage1":
            return 1 + int(parts[1])
        if parts[0] == "embed2":
            return d1
        if parts[0] == "stage2":
            return 1 + d1 + int(parts[1])
        if parts[0] in ("embed3", "embed3_linear"):
            return d1 + d2
        if parts[0] == "blocks":
            return 1 + d1 + d2 + int(parts[1])
        return sum(self.depths) + 1


class ViTEncoder(nn.Module):
    """MAE's ViT encoder: 16x16 patch embedding, class token, fixed sin-cos positions, Transformer blocks."""

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        patch_size: int = 16,
        drop_path: float = 0.0,
        norm_eps: float = LN_EPS,
    ) -> None:
        super().__init__()
        self.embed_dim, self.patch_size = embed_dim, patch_size
        self.patch_embed = nn.Linear(patch_size * patch_size * in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        dpr = _drop_path_rates(depth, drop_path)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, dpr[i], norm_eps) for i in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    @property
    def num_prefix(self) -> int:
        return 1

    def forward_masked(self, imgs: torch.Tensor, info: MaskInfo, sparse: bool = True) -> torch.Tensor:
        """imgs [B, 3 or 1, H, W] -> [B, 1 + Nv, C] (class token first)."""
        b = imgs.shape[0]
        gh, gw = info.grid
        n, p = gh * gw, self.patch_size
        patches = patch_grid(imgs, p).reshape(b, n, -1)  # [B, N, p*p*C]
        pos = sincos_2d(gh, gw, self.embed_dim, imgs.device, imgs.dtype)
        if sparse:  # embed only the visible patches
            x = gray_linear(self.patch_embed, gather_tokens(patches, info.ids_keep)) + pos[info.ids_keep]
        else:
            x = gather_tokens(gray_linear(self.patch_embed, patches) + pos, info.ids_keep)
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


# ----------------------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------------------


class Decoder(nn.Module):
    """MAE-style decoder (InfMAE's "infrared decoder" is 2 blocks, 512 wide, 16 heads)."""

    def __init__(
        self,
        embed_dim: int,
        dim: int = 512,
        depth: int = 2,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        patch_dim: int = 768,
        num_prefix: int = 0,
        norm_eps: float = LN_EPS,
    ) -> None:
        super().__init__()
        self.dim, self.num_prefix = dim, num_prefix
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, eps=norm_eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.pred = nn.Linear(dim, patch_dim)

    def forward(self, latent: torch.Tensor, info: MaskInfo) -> torch.Tensor:
        """latent [B, P + Nv, C] (P prefix tokens, then visible tokens in ids_keep order) -> [B, N, patch_dim]."""
        x = self.embed(latent)  # [B, P + Nv, D]
        prefix, vis = x[:, : self.num_prefix], x[:, self.num_prefix :]
        b, nv, d = vis.shape
        n = info.mask.shape[1]
        tokens = torch.cat([vis, self.mask_token.to(vis.dtype).expand(b, n - nv, d)], dim=1)  # [B, N, D]
        tokens = gather_tokens(tokens, info.ids_restore)  # every token back at its patch position
        tokens = tokens + sincos_2d(*info.grid, d, x.device, tokens.dtype)
        x = torch.cat([prefix, tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, self.num_prefix :]


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------


class InfMAE(nn.Module):
    """Masked autoencoder: InfMAE, or (by options) the MAE and ConvMAE baselines.

    `loss, pred, mask = model(imgs, seed=None)`: imgs [B, 3, H, W] (H, W divisible by 16), loss a scalar,
    pred [B, N, 768] pixel predictions per patch, mask [B, N] float (1 = masked). imgs may also be gray
    [B, 1, H, W]: exactly the outputs of its 3-channel replication, without the copy (`accepts_gray`).

    Options (all stored in `model.config`, JSON-serializable):
        encoder: ``multiscale`` (InfMAE / ConvMAE) or ``vit`` (MAE; uses embed_dims[-1], depths[-1]).
        masking: ``gray`` | ``reference`` (information-aware, stride `mask_stride`, `jitter`) or ``random``
            (`mask_ratio`).
        multiscale: fuse stage-1 / stage-2 features into the tokens (multiscale encoder only).
        decoder_dim / decoder_depth / decoder_heads, norm_pix_loss, sparse (compute stages 1-2 only at
        visible patches), drop_path.
        norm_eps (Transformer blocks, final norms) / norm_eps_conv (patch embeddings, convolutional blocks):
            LayerNorm eps, 1e-6 / 1e-5 as published.
        stem_width: with ``reference`` masking, 0 = the averaged fixed projection drawn from `reference_seed`;
            W > 0 = a full W-channel masking stem (the published one, loaded by `infmae.convert`).
        preprocessing: mean, std, input_size, patch_size, interpolation (timm's `pretrained_cfg`).
    """

    patch_size = 16
    accepts_gray = True  # takes [B, 1, H, W] as its 3-channel replication (loaders read this)

    def __init__(
        self,
        *,
        preset: str = "custom",
        encoder: str = "multiscale",
        embed_dims: tuple[int, ...] | list[int] = (256, 384, 768),
        depths: tuple[int, ...] | list[int] = (2, 2, 11),
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        multiscale: bool = True,
        decoder_dim: int = 512,
        decoder_depth: int = 2,
        decoder_heads: int = 16,
        masking: str = "gray",
        mask_stride: int = 4,
        mask_ratio: float = 0.75,
        jitter: bool = False,
        reference_seed: int = 0,
        norm_pix_loss: bool = False,
        sparse: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = LN_EPS,
        norm_eps_conv: float = LN_EPS_CONV,
        stem_width: int = 0,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if masking not in MASKING_KINDS:
            raise ValueError(f"unknown masking {masking!r}; expected one of {MASKING_KINDS}")
        embed_dims, depths = [int(d) for d in embed_dims], [int(d) for d in depths]
        self.config: dict[str, Any] = {
            "preset": preset,
            "encoder": encoder,
            "embed_dims": embed_dims,
            "depths": depths,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
            "in_chans": in_chans,
            "multiscale": multiscale,
            "decoder_dim": decoder_dim,
            "decoder_depth": decoder_depth,
            "decoder_heads": decoder_heads,
            "masking": masking,
            "mask_stride": mask_stride,
            "mask_ratio": mask_ratio,
            "jitter": jitter,
            "reference_seed": reference_seed,
            "norm_pix_loss": norm_pix_loss,
            "sparse": sparse,
            "drop_path": drop_path,
            "norm_eps": norm_eps,
            "norm_eps_conv": norm_eps_conv,
            "stem_width": stem_width,
            "preprocessing": json.loads(json.dumps(preprocessing or PREPROCESSING)),
        }
        p = self.patch_size
        self.in_chans, self.norm_pix_loss, self.sparse = in_chans, norm_pix_loss, sparse
        self.masker = MaskGenerator(
            masking, mask_stride, mask_ratio, jitter, p, in_chans, reference_seed, stem_width=stem_width
        )
        self.encoder: MultiScaleEncoder | ViTEncoder
        if encoder == "multiscale":
            if len(embed_dims) != 3 or len(depths) != 3:
                raise ValueError("the multiscale encoder needs 3 embed_dims and 3 depths")
            self.encoder = MultiScaleEncoder(
                tuple(embed_dims), tuple(depths), num_heads, mlp_ratio, in_chans, multiscale, drop_path,
                norm_eps, norm_eps_conv,
            )
        elif encoder == "vit":
            self.encoder = ViTEncoder(
                embed_dims[-1], depths[-1], num_heads, mlp_ratio, in_chans, p, drop_path, norm_eps
            )
        else:
            raise ValueError(f"unknown encoder {encoder!r}; expected 'multiscale' or 'vit'")
        self.decoder = Decoder(
            embed_dims[-1], decoder_dim, decoder_depth, decoder_heads, mlp_ratio, p * p * in_chans,
            self.encoder.num_prefix, norm_eps,
        )
        self.apply(_init_weights)
        for name, param in self.named_parameters():
            if name.endswith(("mask_token", "cls_token")):
                nn.init.normal_(param, std=0.02)

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """The preprocessing the weights expect (mean, std, input_size [C, H, W], patch_size, interpolation)."""
        return self.config["preprocessing"]

    # -- Hub ----------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        strict: bool = True,
        map_location: str | torch.device = "cpu",
    ) -> InfMAE:
        """A checkpoint folder / file of ours, or a Hub repo id ("org/name", at `revision`, cached in
        `cache_dir`; offline with `local_files_only` or HF_HUB_OFFLINE=1 when the cache holds it)."""
        from .hub import resolve

        path = resolve(name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                       local_files_only=local_files_only)  # fmt: skip
        cfg_file = (path if path.is_dir() else path.parent) / "config.json"
        if cfg_file.is_file() and '"infmae-encoder"' in cfg_file.read_text():
            raise ValueError(f"{name_or_path} is an exported encoder (no decoder): load it with "
                             "InfMAEBackbone.from_pretrained")  # fmt: skip
        model = load_model(path, map_location=map_location, strict=strict)
        if not isinstance(model, cls):
            raise TypeError(f"{name_or_path} is not a full {cls.__name__} checkpoint")
        return model

    def push_to_hub(
        self, repo_id: str, *, private: bool = False, token: str | None = None, revision: str | None = None,
        commit_message: str = "Upload InfMAE",
    ) -> str:
        """Upload model.safetensors + config.json + a model card to the Hub model repo `repo_id`; returns its URL."""
        from .hub import push_model

        return push_model(self, repo_id, private=private, token=token, revision=revision,
                          commit_message=commit_message)  # fmt: skip

    # -- patches ------------------------------------------------------------------------------------------

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs [B, C, H, W] -> [B, N, p*p*C] (pixel order row, column, channel; patches row-major)."""
        b = imgs.shape[0]
        return patch_grid(imgs, self.patch_size).reshape(b, -1, self.patch_size**2 * imgs.shape[1])

    def unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x [B, N, p*p*C] -> imgs [B, C, H, W]. (h, w) is either the patch grid (h*w == N) or the image
        size in pixels."""
        b, n, d = x.shape
        p = self.patch_size
        if h * w != n:
            h, w = h // p, w // p
        if h * w != n:
            raise ValueError(f"{n} patches do not fit a {h}x{w} grid")
        c = d // (p * p)
        return x.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * p, w * p)

    # -- forward ------------------------------------------------------------------------------------------

    def make_mask(self, imgs: torch.Tensor, seed: int | None = None) -> MaskInfo:
        """Mask a batch; with `seed` the random parts (random masking, jitter) are reproducible."""
        gen = None
        if seed is not None:
            gen = torch.Generator(device=imgs.device)
            gen.manual_seed(int(seed))
        return self.masker(imgs, generator=gen)

    def check_input(self, imgs: torch.Tensor) -> None:
        """imgs must be [B, in_chans or 1, H, W]."""
        if imgs.ndim != 4 or imgs.shape[1] not in (1, self.in_chans):
            raise ValueError(f"expected images [B, {self.in_chans} or 1, H, W], got {tuple(imgs.shape)}")

    def forward_encoder(self, imgs: torch.Tensor, info: MaskInfo) -> torch.Tensor:
        """imgs [B, 3 or 1, H, W] -> latent [B, P + Nv, C] (P = 1 class token for the ViT encoder, else 0)."""
        return self.encoder.forward_masked(imgs, info, sparse=self.sparse)

    def forward_decoder(self, latent: torch.Tensor, info: MaskInfo) -> torch.Tensor:
        """latent [B, P + Nv, C] -> pred [B, N, p*p*3]."""
        return self.decoder(latent, info)

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the masked patches only (fp32): imgs [B, 3 or 1, H, W], pred [B, N, p*p*3],
        mask [B, N]. A gray input's target is its 3 equal channels (broadcast, not copied)."""
        c = self.in_chans
        target = self.patchify(imgs).float()  # [B, N, p*p*C'] with C' = 3 or 1
        if imgs.shape[1] != c:  # gray: [B, N, p*p, 1] broadcast against pred's [B, N, p*p, C]
            target = target.unsqueeze(-1)
            pred = pred.view(*pred.shape[:2], -1, c)
        if self.norm_pix_loss:  # statistics over the p*p*C values of the (replicated) patch
            mean = target.mean(dim=(-2, -1) if target.ndim == 4 else -1, keepdim=True)
            if target.ndim == 4:  # unbiased variance of p*p*C values, each of the p*p repeated C times
                n = target.shape[-2] * c
                var = (target - mean).pow(2).sum(dim=(-2, -1), keepdim=True) * c / (n - 1)
            else:
                var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = (pred.float() - target).pow(2).flatten(2).mean(dim=-1)  # [B, N]
        mask = mask.float()
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(
        self, imgs: torch.Tensor, seed: int | None = None, mask_info: MaskInfo | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs [B, 3 or 1, H, W] -> (loss [], pred [B, N, p*p*3], mask [B, N]); `mask_info` overrides masking."""
        self.check_input(imgs)
        info = mask_info if mask_info is not None else self.make_mask(imgs, seed)
        latent = self.forward_encoder(imgs, info)
        pred = self.forward_decoder(latent, info)
        loss = self.forward_loss(imgs, pred, info.mask)
        return loss, pred, info.mask

    # -- optimisation -------------------------------------------------------------------------------------

    def param_groups(self, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
        """AdamW groups: decay on weight matrices / conv kernels only; none on biases, norms, tokens. With
        `layer_decay` (multiscale encoder) a per-group `lr_scale` of layer_decay ** (depth - layer) over the
        encoder's layers (`MultiScaleEncoder.layer_id`), the decoder at 1.0."""
        if layer_decay is None:
            return param_groups(self, weight_decay)
        if not isinstance(self.encoder, MultiScaleEncoder):
            raise ValueError("layer_decay needs the multiscale encoder (the ViT encoder has no layer ids)")
        n = sum(self.encoder.depths) + 1

        def layer_id(name: str) -> int:
            return self.encoder.layer_id(name[len("encoder.") :]) if name.startswith("encoder.") else n

        return param_groups(self, weight_decay, layer_decay, layer_id, n)


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2 or name.endswith(("mask_token", "cls_token", "pos_embed"))


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float | None = None,
    layer_id: Callable[[str], int] | None = None,
    num_layers: int = 0,
) -> list[dict[str, Any]]:
    """Parameter groups for AdamW (weight decay on weights only); with `layer_decay` each group also gets
    `lr_scale = layer_decay ** (num_layers - layer_id(name))` (the trainer multiplies its lr by it)."""
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        nd = _no_decay(name, param)
        lid = layer_id(name) if (layer_decay is not None and layer_id is not None) else 0
        key = (lid, nd)
        if key not in groups:
            group: dict[str, Any] = {"params": [], "weight_decay": 0.0 if nd else weight_decay}
            if layer_decay is not None:
                group["lr_scale"] = layer_decay ** (num_layers - lid)
            groups[key] = group
        groups[key]["params"].append(param)
    return [groups[k] for k in sorted(groups)]


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {  # every preset: published LayerNorm eps and PREPROCESSING (InfMAE defaults)
    # tests and the CPU demo
    "infmae_tiny": dict(
        embed_dims=(32, 48, 96), depths=(1, 1, 2), num_heads=3, decoder_dim=64, decoder_depth=2, decoder_heads=4
    ),
    "infmae_small": dict(
        embed_dims=(128, 192, 384), depths=(2, 2, 11), num_heads=6, decoder_dim=256, decoder_depth=2,
        decoder_heads=8,
    ),
    # the paper's model: about 96.1 M parameters
    "infmae_base": dict(
        embed_dims=(256, 384, 768), depths=(2, 2, 11), num_heads=12, decoder_dim=512, decoder_depth=2,
        decoder_heads=16,
    ),
    "infmae_large": dict(
        embed_dims=(384, 768, 1024), depths=(2, 2, 23), num_heads=16, decoder_dim=512, decoder_depth=2,
        decoder_heads=16,
    ),
    # baselines of the paper's tables
    "mae_base": dict(
        encoder="vit", embed_dims=(768,), depths=(12,), num_heads=12, decoder_dim=512, decoder_depth=8,
        decoder_heads=16, masking="random", mask_ratio=0.75,
    ),
    "convmae_base": dict(
        embed_dims=(256, 384, 768), depths=(2, 2, 11), num_heads=12, decoder_dim=512, decoder_depth=8,
        decoder_heads=16, masking="random", mask_ratio=0.75,
    ),
}


def create_model(preset: str, **overrides: Any) -> InfMAE:
    """Build a preset with options overridden, e.g. `create_model("infmae_base", masking="random")`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    kwargs = {**PRESETS[preset], **overrides}
    kwargs.pop("preset", None)
    return InfMAE(preset=preset, **kwargs)


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored model config with the options that older versions did not record set as those versions used
    them: configs without LayerNorm eps keys were written when every LayerNorm used LEGACY_LN_EPS (1e-6)."""
    cfg = dict(config)
    for key in ("norm_eps", "norm_eps_conv"):
        cfg.setdefault(key, LEGACY_LN_EPS)
    return cfg


def model_from_config(config: dict[str, Any]) -> InfMAE:
    """Rebuild a model from its stored `model.config` (unknown presets fall back to the stored options);
    configs written by older versions rebuild exactly the model they described (see `upgrade_config`)."""
    cfg = upgrade_config(config)
    preset = cfg.pop("preset", "custom")
    if preset in PRESETS:
        return create_model(preset, **cfg)
    return InfMAE(preset=preset, **cfg)


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", strict: bool = False
) -> InfMAE:
    """Rebuild the model from a checkpoint's config (``infmae.checkpoint.read_checkpoint``) and load its weights.

    Missing and unexpected keys are warned about and stored in `model.load_info`; with `strict` they raise.
    """
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


def infmae_tiny(**overrides: Any) -> InfMAE:
    """32/48/96 wide, 1/1/2 deep, decoder 2 x 64: for tests and the CPU demo."""
    return create_model("infmae_tiny", **overrides)


def infmae_small(**overrides: Any) -> InfMAE:
    """128/192/384 wide, 2/2/11 deep, 6 heads, decoder 2 x 256."""
    return create_model("infmae_small", **overrides)


def infmae_base(**overrides: Any) -> InfMAE:
    """The paper's InfMAE: 256/384/768 wide, 2/2/11 deep, 12 heads, decoder 2 x 512 (16 heads); 96.1 M params."""
    return create_model("infmae_base", **overrides)


def infmae_large(**overrides: Any) -> InfMAE:
    """384/768/1024 wide, 2/2/23 deep, 16 heads, decoder 2 x 512."""
    return create_model("infmae_large", **overrides)


def mae_base(**overrides: Any) -> InfMAE:
    """MAE baseline: ViT-B/16 with a class token, random 75 % masking, decoder 8 x 512."""
    return create_model("mae_base", **overrides)


def convmae_base(**overrides: Any) -> InfMAE:
    """ConvMAE baseline: InfMAE's multi-scale encoder with random 75 % masking, decoder 8 x 512."""
    return create_model("convmae_base", **overrides)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

