"""Groups from the verified graph: the visiting order of images and the anchor each dropped image joins."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assign_anchors(
    rank: np.ndarray, edges: pd.DataFrame, hops: int = 0
) -> dict[int, tuple[int, int, str, int]]:
    """Groups from the verified graph (stage 2 and stage 3 edges), in two passes.

    rank: (N,) int, the visiting position of each image (0 first). edges: columns i, j, stage (2 or 3),
    evidence (str) and optionally weak (bool: a stage 3 link that may only make a leaf, see
    :func:`~inf30.dedupe.strong_links`; absent = none).

    1. Strong links: images are visited by rank; one not yet in a group is an anchor and takes every image
       not yet in a group that is connected to it through at most ``hops`` strong edges (0 = any number),
       walking breadth first (neighbours in rank order; a pair linked by both stages counts as stage 2,
       the stronger evidence).
    2. Weak links: images left alone by pass 1 (anchors without members) are visited by rank; each joins, as
       a leaf, the group of its best weakly linked neighbour (the one whose anchor comes first, then by
       rank) that is no leaf itself, lies less than ``hops`` links from its anchor, and is in a group or
       comes earlier (two lone images: the later one joins the earlier, as anchors go). A weak link
       therefore never joins two groups: one wrong link costs one image, and the frame a crop was cut from
       keeps its own group (its strong neighbours included) whatever the sizes.

    Each taken image records the edge that reached it. Returns {dropped index: (anchor index, stage,
    evidence, parent index)}; the parent is the anchor itself for a direct link. Depends only on the edges
    and the ranks.
    """
    if edges.empty:
        return {}
    e = edges.sort_values(["stage"], kind="stable").drop_duplicates(["i", "j"], keep="first")
    weak_col = e["weak"].fillna(False).astype(bool) if "weak" in e.columns else pd.Series(False, index=e.index)
    strong: dict[int, list[tuple[int, int, int, str]]] = {}
    weak: dict[int, list[tuple[int, int, int, str]]] = {}
    for i, j, st, ev, wk in zip(e["i"], e["j"], e["stage"], e["evidence"], weak_col, strict=True):
        i, j = int(i), int(j)
        adj = weak if wk else strong
        adj.setdefault(i, []).append((int(rank[j]), j, int(st), str(ev)))
        adj.setdefault(j, []).append((int(rank[i]), i, int(st), str(ev)))
    dropped: dict[int, tuple[int, int, str, int]] = {}
    group = {}  # image -> its anchor (pass 1)
    depth = {}  # image -> strong links from its anchor
    for a in sorted(set(strong) | set(weak), key=lambda x: rank[x]):
        if a in group:
            continue
        group[a], depth[a] = a, 0
        queue = [a]
        for node in queue:  # breadth first; the list grows while it is walked
            if hops and depth[node] >= hops:
                continue
            for _, b, st, ev in sorted(strong.get(node, ())):
                if b not in group:
                    group[b], depth[b] = a, depth[node] + 1
                    dropped[b] = (a, st, ev, node)
                    queue.append(b)
    has_members = {anchor for anchor, *_ in dropped.values()}
    leaves: set[int] = set()
    for y in sorted(weak, key=lambda x: rank[x]):
        if y in dropped or y in has_members:
            continue  # in a group of two or more already
        options = [(rank[group[x]], rank_x, x, st, ev) for rank_x, x, st, ev in weak[y]
                   if x not in leaves and (not hops or depth[x] < hops)
                   and (rank_x < rank[y] or x in dropped or x in has_members)]  # a lone x after y waits for y
        if options:
            _, _, x, st, ev = min(options)
            dropped[y] = (group[x], st, ev, x)
            has_members.add(group[x])
            leaves.add(y)
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
