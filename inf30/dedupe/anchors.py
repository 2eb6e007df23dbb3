"""Groups from the verified graph: the visiting order of images and the anchor each dropped image joins."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assign_anchors(
    rank: np.ndarray, edges: pd.DataFrame, hops: int = 0
) -> dict[int, tuple[int, int, str, int]]:
    """Groups from the verified graph (stage 2 and stage 3 edges).

    rank: (N,) int, the visiting position of each image (0 first). edges: columns i, j, stage (2 or 3),
    evidence (str). Images are visited by rank; one not yet in a group is an anchor and takes every image not
    yet in a group that is connected to it through at most ``hops`` edges (0 = any number: the group is the
    connected component), walking breadth first (neighbours in rank order; a pair linked by both stages
    counts as stage 2, the stronger evidence). Each taken image records the edge that reached it. Returns
    {dropped index: (anchor index, stage, evidence, parent index)}; the parent is the anchor itself for a
    direct link. Depends only on the edges and the ranks.
    """
    if edges.empty:
        return {}
    e = edges.sort_values(["stage"], kind="stable").drop_duplicates(["i", "j"], keep="first")
    adj: dict[int, list[tuple[int, int, int, str]]] = {}
    for i, j, st, ev in zip(e["i"], e["j"], e["stage"], e["evidence"], strict=True):
        i, j = int(i), int(j)
        adj.setdefault(i, []).append((int(rank[j]), j, int(st), str(ev)))
        adj.setdefault(j, []).append((int(rank[i]), i, int(st), str(ev)))
    dropped: dict[int, tuple[int, int, str, int]] = {}
    seen: set[int] = set()
    for a in sorted(adj, key=lambda x: rank[x]):
        if a in seen:
            continue
        seen.add(a)
        queue, depth = [a], {a: 0}
        for node in queue:  # breadth first; the list grows while it is walked
            if hops and depth[node] >= hops:
                continue
            for _, b, st, ev in sorted(adj[node]):
                if b not in seen:
                    seen.add(b)
                    depth[b] = depth[node] + 1
                    dropped[b] = (a, st, ev, node)
                    queue.append(b)
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
