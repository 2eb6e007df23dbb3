"""Groups from the verified graph: the visiting order of images and the anchor each dropped image joins."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assign_anchors(
    rank: np.ndarray, edges: pd.DataFrame, hops: int = 0
) -> dict[int, tuple[int, int, str, int]]:
    """Groups from the verified graph (stage 2 and stage 3 edges).

    rank: (N,) int, the visiting position of each image (0 first). edges: columns i, j, stage (2 or 3),
    evidence (str) and optionally weak (bool: a stage 3 link from the photometric test; absent = none).
    Images are visited by rank; one not yet in a group is an anchor and takes every image not yet in a group
    that is connected to it through at most ``hops`` strong edges (0 = any number), walking breadth first
    (neighbours in rank order; a pair linked by both stages counts as stage 2, the stronger evidence), and
    then every image not yet in a group that a weak edge joins to one of those (within ``hops`` too). A weak
    link is a leaf: the anchor never walks on from the image it reached, so one wrong weak link costs one
    image, never a merge of two groups. Each taken image records the edge that reached it. Returns {dropped
    index: (anchor index, stage, evidence, parent index)}; the parent is the anchor itself for a direct link.
    Depends only on the edges and the ranks.
    """
    if edges.empty:
        return {}
    e = edges.sort_values(["stage"], kind="stable").drop_duplicates(["i", "j"], keep="first")
    weak_col = e["weak"].fillna(False).astype(bool) if "weak" in e.columns else pd.Series(False, index=e.index)
    adj: dict[int, list[tuple[int, int, int, str, bool]]] = {}
    for i, j, st, ev, wk in zip(e["i"], e["j"], e["stage"], e["evidence"], weak_col, strict=True):
        i, j, wk = int(i), int(j), bool(wk)
        adj.setdefault(i, []).append((int(rank[j]), j, int(st), str(ev), wk))
        adj.setdefault(j, []).append((int(rank[i]), i, int(st), str(ev), wk))
    for nbrs in adj.values():
        nbrs.sort()
    dropped: dict[int, tuple[int, int, str, int]] = {}
    seen: set[int] = set()
    for a in sorted(adj, key=lambda x: rank[x]):
        if a in seen:
            continue
        seen.add(a)
        queue, depth = [a], {a: 0}
        for node in queue:  # breadth first over strong edges; the list grows while it is walked
            if hops and depth[node] >= hops:
                continue
            for _, b, st, ev, wk in adj[node]:
                if not wk and b not in seen:
                    seen.add(b)
                    depth[b] = depth[node] + 1
                    dropped[b] = (a, st, ev, node)
                    queue.append(b)
        for node in queue:  # then the weak leaves of the images taken
            if hops and depth[node] >= hops:
                continue
            for _, b, st, ev, wk in adj[node]:
                if wk and b not in seen:
                    seen.add(b)
                    dropped[b] = (a, st, ev, node)
    return dropped


def anchor_rank(df: pd.DataFrame, order: tuple[str, ...]) -> np.ndarray:
    """Visiting position (N,) of each row: keys of ``order`` descending (size = width*height, entropy),
    ties broken by id ascending. Independent of the row order."""
    keys = []
    for k in order:
        if k == "size":
            keys.append(
                -(df["width"].fillna(0).astype(np.int64) * df["height"].fillna(0).astype(np.int64)).to_numpy()
            )
        elif k == "entropy":
            keys.append(-df["entropy"].fillna(-1.0).astype(np.float64).to_numpy())
    ids = df["id"].astype(str).to_numpy()
    perm = np.lexsort([ids] + keys[::-1])
    rank = np.empty(len(df), np.int64)
    rank[perm] = np.arange(len(df))
    return rank
