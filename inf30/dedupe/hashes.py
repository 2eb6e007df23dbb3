"""Stage 2: near-copies by perceptual hash (hex hashes -> binary codes, a faiss binary index, Hamming range
search)."""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np
import pandas as pd

FLAT_LIMIT = 100_000  # exact (flat) binary index for stage 2 up to this many images, IVF beyond


def hex_to_codes(hex_columns: list[Iterable[str | None]]) -> tuple[np.ndarray, np.ndarray]:
    """k columns of 16-hex-char hashes (N each) -> codes (N, 8k) uint8 and a valid mask (N,) bool (False where
    any hash is missing or malformed)."""
    cols = [list(c) for c in hex_columns]
    n = len(cols[0]) if cols else 0
    codes = np.zeros((n, 8 * len(cols)), np.uint8)
    valid = np.ones(n, bool)
    for k, col in enumerate(cols):
        for i, h in enumerate(col):
            try:
                b = bytes.fromhex(h) if isinstance(h, str) else b""
            except ValueError:
                b = b""
            if len(b) != 8:
                valid[i] = False
                continue
            codes[i, 8 * k : 8 * k + 8] = np.frombuffer(b, np.uint8)
    return codes, valid


def binary_index(codes: np.ndarray, nprobe: int = 32, flat_limit: int = FLAT_LIMIT) -> faiss.IndexBinary:
    """A faiss binary index over codes (N, B) uint8: exact up to ``flat_limit`` codes, IVF beyond (searching
    ``nprobe`` lists)."""
    d = codes.shape[1] * 8
    n = len(codes)
    if n <= flat_limit:
        index = faiss.IndexBinaryFlat(d)
    else:
        nlist = int(min(65536, 4 * np.sqrt(n)))
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(d), d, nlist)
        rng = np.random.default_rng(0)
        index.train(codes[np.sort(rng.choice(n, min(n, 16 * nlist), replace=False))])
        index.nprobe = nprobe
    index.add(codes)
    return index


def near_copy_pairs(codes: np.ndarray, threshold: int, batch: int = 65536) -> pd.DataFrame:
    """All pairs (i < j) of rows of ``codes`` (N, B) uint8 within Hamming distance ``threshold`` (bits).

    Returns a DataFrame with columns i, j (int64) and hamming (int32). Range search in a faiss binary index:
    exact flat search at small scale, IVF (approximate, sub-quadratic) past :data:`FLAT_LIMIT`.
    """
    n = len(codes)
    if n < 2:
        return pd.DataFrame(
            {"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64), "hamming": np.zeros(0, np.int32)}
        )
    index = binary_index(np.ascontiguousarray(codes))
    out_i, out_j, out_d = [], [], []
    for start in range(0, n, batch):
        q = codes[start : start + batch]
        lims, dist, ids = index.range_search(np.ascontiguousarray(q), threshold + 1)
        rows = np.repeat(np.arange(len(q)) + start, np.diff(lims).astype(np.int64))
        keep = (ids > rows) & (dist <= threshold)
        out_i.append(rows[keep])
        out_j.append(ids[keep])
        out_d.append(dist[keep])
    return pd.DataFrame(
        {
            "i": np.concatenate(out_i).astype(np.int64),
            "j": np.concatenate(out_j).astype(np.int64),
            "hamming": np.concatenate(out_d).astype(np.int32),
        }
    )
