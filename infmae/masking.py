"""Token masking for masked image modelling: InfMAE's information-aware masking and MAE's random masking.

All functions are batched and vectorized (no Python loop over images or tokens) and deterministic under a
`torch.Generator`.

Information-aware masking (paper section 4.2.1): every 16x16 patch gets a score, the N patches are sorted
ascending by it (stable sort, so ties keep patch order), and the sorted positions 0, S, 2S, ... are visible,
all others masked. The visible count is therefore ``ceil(N / S)`` exactly: 49 of 196 at 224x224 with S=4,
and for example 53 of 210 (a 14x15 grid) where S does not divide N. With ``jitter`` a uniformly random
member of each group of S consecutive sorted tokens is visible instead of the first (the last group may be
shorter: N mod S members), so the same crop is not masked identically every epoch; the count is unchanged.

Scores:
- ``gray``: the mean normalized intensity of the patch over its pixels and channels, the paper's "gray
  value map" (no parameters).
- ``reference``: a fixed random linear function of the patch, which is what the published code computes
  (an untrained 16x16 stride-16 convolution averaged over its output channels). Kept for ablation.

Random masking (MAE / ConvMAE baselines) keeps ``int(N * (1 - ratio))`` uniformly random patches.

A gray batch [B, 1, H, W] is masked exactly as its replication to the masker's `in_chans` equal channels:
the gray score averages the channels of an `expand`ed view (bitwise the same mean, no copy), the reference
stem sums its kernel over the channels.

Visible ids are returned in ascending patch order (row-major); the order of the visible tokens does not
change the model's mathematics and ascending order makes every gather memory-friendly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

MASKING_KINDS = ("gray", "reference", "random")


@dataclass
class MaskInfo:
    """The result of masking a batch on a grid_h x grid_w patch grid (N = grid_h * grid_w, Nv visible)."""

    ids_keep: torch.Tensor  # [B, Nv] int64, visible patch indices, ascending
    mask: torch.Tensor  # [B, N] float, 1 = masked, 0 = visible
    ids_restore: torch.Tensor  # [B, N] int64: cat(visible, masked)[ids_restore] is in patch order
    grid: tuple[int, int]  # (grid_h, grid_w)

    @property
    def num_visible(self) -> int:
        return self.ids_keep.shape[1]

    def keep_map(self, scale: int) -> torch.Tensor:
        """Visible map upsampled by `scale`: [B, grid_h*scale, grid_w*scale, 1], 1 = visible (channels-last)."""
        b = self.mask.shape[0]
        gh, gw = self.grid
        keep = (1.0 - self.mask).view(b, gh, 1, gw, 1, 1)
        return keep.expand(b, gh, scale, gw, scale, 1).reshape(b, gh * scale, gw * scale, 1)

    @property
    def keep1(self) -> torch.Tensor:
        """Stage-1 mask block (H/4): [B, H/4, W/4, 1], 1 = visible."""
        return self.keep_map(4)

    @property
    def keep2(self) -> torch.Tensor:
        """Stage-2 mask block (H/8): [B, H/8, W/8, 1], 1 = visible."""
        return self.keep_map(2)


def _from_keep(ids_keep: torch.Tensor, n: int, grid: tuple[int, int], dtype: torch.dtype) -> MaskInfo:
    """Build the mask and restore order from visible ids [B, Nv] (any order)."""
    b = ids_keep.shape[0]
    mask = torch.ones(b, n, device=ids_keep.device, dtype=dtype)
    mask.scatter_(1, ids_keep, 0.0)
    ids_shuffle = torch.argsort(mask, dim=1, stable=True)  # [B, N]: visible ascending, then masked ascending
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return MaskInfo(ids_shuffle[:, : ids_keep.shape[1]], mask, ids_restore, grid)


def num_visible_information_aware(n: int, stride: int) -> int:
    """Visible count of information-aware masking: sorted positions 0, S, 2S, ... < N, i.e. ceil(N / S)."""
    return math.ceil(n / stride)


def information_aware_masking(
    scores: torch.Tensor,
    grid: tuple[int, int],
    stride: int = 4,
    jitter: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> MaskInfo:
    """scores [B, N] -> MaskInfo with ceil(N / stride) visible patches per image.

    Sorted ascending (stable); sorted positions 0, S, 2S, ... are visible, or with `jitter` one uniformly
    random member of each group of S sorted tokens.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    b, n = scores.shape
    nv = num_visible_information_aware(n, stride)
    order = torch.argsort(scores, dim=1, stable=True)  # [B, N] patch ids, ascending score
    pos = torch.arange(nv, device=scores.device) * stride  # [Nv] first member of each group
    pos = pos.unsqueeze(0).expand(b, nv)
    if jitter:
        group = torch.clamp(n - pos, max=stride)  # members per group: S, except maybe the last
        u = torch.rand(b, nv, device=scores.device, generator=generator)
        pos = pos + torch.minimum((u * group).long(), group - 1)
    ids_keep = order.gather(1, pos)
    return _from_keep(ids_keep, n, grid, dtype)


def random_masking(
    batch: int,
    grid: tuple[int, int],
    ratio: float = 0.75,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> MaskInfo:
    """MAE's uniform random masking: int(N * (1 - ratio)) visible patches per image."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    n = grid[0] * grid[1]
    nv = max(1, int(n * (1 - ratio)))
    noise = torch.rand(batch, n, device=device, generator=generator)
    ids_keep = torch.argsort(noise, dim=1)[:, :nv]
    return _from_keep(ids_keep, n, grid, dtype)


def patch_means(imgs: torch.Tensor, patch_size: int = 16) -> torch.Tensor:
    """imgs [B, C, H, W] -> the mean over each patch's pixels and channels, [B, N] (the gray value map)."""
    b = imgs.shape[0]
    g = nn.functional.avg_pool2d(imgs.float().mean(1, keepdim=True), patch_size)  # [B, 1, H/p, W/p]
    return g.reshape(b, -1)


class MaskGenerator(nn.Module):
    """Masks a batch of images: `MaskGenerator(kind)(imgs, generator) -> MaskInfo`.

    kind: ``gray`` | ``reference`` (information-aware, stride `stride`, optional `jitter`) or ``random``
    (ratio `ratio`). The ``reference`` projection is a fixed buffer drawn from `reference_seed` (saved in
    checkpoints, never trained), so every parameter of the model still receives a gradient; with
    `stem_width` W > 0 it is instead a full W-channel stem (weight [W, C, p, p], bias [W]) whose outputs are
    averaged, filled from the published checkpoint by `infmae.convert`.
    """

    def __init__(
        self,
        kind: str = "gray",
        stride: int = 4,
        ratio: float = 0.75,
        jitter: bool = False,
        patch_size: int = 16,
        in_chans: int = 3,
        reference_seed: int = 0,
        reference_width: int = 768,
        stem_width: int = 0,
    ) -> None:
        super().__init__()
        if kind not in MASKING_KINDS:
            raise ValueError(f"unknown masking kind {kind!r}; expected one of {MASKING_KINDS}")
        self.kind, self.stride, self.ratio, self.jitter, self.patch_size = kind, stride, ratio, jitter, patch_size
        self.in_chans = in_chans
        if kind == "reference" and stem_width > 0:
            # The published code's masking stem itself (loaded from a converted checkpoint): a Conv2d(in_chans,
            # W, p, stride=p) whose W outputs are averaged, computed in the same order as the authors' code so
            # that the converted model masks exactly as theirs does.
            self.register_buffer("reference_weight", torch.zeros(stem_width, in_chans, patch_size, patch_size))
            self.register_buffer("reference_bias", torch.zeros(stem_width))
        elif kind == "reference":
            # An untrained Conv2d(in_chans, width, p, stride=p) with PyTorch's default init, averaged over its
            # output channels: a single fixed linear function of the patch (weight [C, p, p], bias scalar).
            g = torch.Generator().manual_seed(reference_seed)
            fan_in = in_chans * patch_size * patch_size
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(reference_width, in_chans, patch_size, patch_size, generator=g) * 2 - 1) * bound
            bias = (torch.rand(reference_width, generator=g) * 2 - 1) * bound
            self.register_buffer("reference_weight", w.mean(0, keepdim=True))  # [1, C, p, p]
            self.register_buffer("reference_bias", bias.mean().reshape(1))  # [1]

    def scores(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs [B, C, H, W] (or gray [B, 1, H, W] standing for C equal channels) -> per-patch score [B, N]."""
        c = self.reference_weight.shape[1] if self.kind == "reference" else self.in_chans
        if self.kind == "gray":  # the mean over an expanded view is bitwise the mean over C equal channels
            return patch_means(imgs.expand(-1, c, -1, -1) if imgs.shape[1] == 1 else imgs, self.patch_size)
        w = self.reference_weight.to(torch.float32)
        if imgs.shape[1] == 1 and c > 1:  # gray: the kernel summed over its (equal) input channels
            w = w.sum(1, keepdim=True)
        s = nn.functional.conv2d(imgs.float(), w, self.reference_bias.float(), stride=self.patch_size)
        if w.shape[0] > 1:  # the full stem: [B, W, gh, gw] -> [B, N, W] -> mean over W, as the published code
            return s.flatten(2).transpose(1, 2).mean(-1)
        return s.reshape(imgs.shape[0], -1)

    @torch.no_grad()
    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> MaskInfo:
        """imgs [B, C or 1, H, W] (H, W divisible by the patch size) -> MaskInfo."""
        b, _, h, w = imgs.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
        grid = (h // p, w // p)
        dtype = imgs.dtype if imgs.is_floating_point() else torch.float32
        if self.kind == "random":
            return random_masking(b, grid, self.ratio, generator, imgs.device, dtype)
        return information_aware_masking(self.scores(imgs), grid, self.stride, self.jitter, generator, dtype)

    def extra_repr(self) -> str:
        if self.kind == "random":
            return f"kind=random, ratio={self.ratio}"
        return f"kind={self.kind}, stride={self.stride}, jitter={self.jitter}"
