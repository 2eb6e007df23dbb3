"""Fixed 2-D sine-cosine position embeddings, computed for any patch grid (no learned table, no fixed size).

Computed in float32 on the target device (no host copy, works under torch.compile and on MPS).
"""

from __future__ import annotations

import torch


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """pos [M] float -> [M, dim]: first half sin, second half cos, frequencies 1 / 10000^(i / (dim/2))."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / (10000.0**omega)
    out = pos.to(torch.float32)[:, None] * omega[None, :]  # [M, dim/2]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(
    grid_h: int,
    grid_w: int,
    dim: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Position embedding of a grid_h x grid_w grid, row-major -> [grid_h * grid_w, dim].

    The first dim/2 channels encode the column (x), the last dim/2 the row (y), as in MAE.
    """
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, device=device, dtype=torch.float32),
        torch.arange(grid_w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    emb = torch.cat([sincos_1d(xs.reshape(-1), dim // 2), sincos_1d(ys.reshape(-1), dim // 2)], dim=1)
    return emb.to(dtype)
