"""Groups from the verified graph: the visiting order of images and the anchor each dropped image joins."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def assign_anchors(
    rank: np.ndarray, edges: pd.DataFrame, hops: int = 0, leaf_hosts: bool = True
) -> dict[int, tuple[int, int, str, int]]:
    """Groups from the verified graph (stage 2 and stage 3 edges), in three passes.

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
    3. Images still alone: each joins the group of its best weakly linked neighbour (same order) that passes
       1 and 2 put in a group, a leaf included, within ``hops``. Such an image is a verified duplicate of a
       group member; keeping it would keep two images of one scene. Its link still costs only itself: it
       never joins two groups, and no image joins through it. ``leaf_hosts=False`` skips this pass (stage 3
       looks for a direct place for these images first, see :func:`~inf30.dedupe.find_edges`).

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
            group[y], depth[y] = group[x], depth[x] + 1
    if not leaf_hosts:
        return dropped
    hosts = set(dropped) | has_members  # pass 3 joins only through images grouped by passes 1 and 2
    for y in sorted(weak, key=lambda x: rank[x]):
        if y in hosts:
            continue
        options = [(rank[group[x]], rank_x, x, st, ev) for rank_x, x, st, ev in weak[y]
                   if x in hosts and (not hops or depth[x] < hops)]
        if options:
            _, _, x, st, ev = min(options)
            dropped[y] = (group[x], st, ev, x)
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


def group_arrays(rank: np.ndarray, edges: pd.DataFrame, hops: int = 0,
                 leaf_hosts: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The groups of :func:`assign_anchors` (``hops``, ``leaf_hosts``) as arrays over the N images: anchor (N,)
    (an image's own index when it is in no group), grouped (N,) bool (anchors with members included) and
    depth (N,), the links from its anchor along the recorded parents (0 for anchors and images in no group)."""
    n = len(rank)
    taken = assign_anchors(rank, edges, hops, leaf_hosts) if len(edges) else {}
    anchor, grouped, depth = np.arange(n), np.zeros(n, bool), np.zeros(n, np.int64)
    for m, (a, _st, _ev, parent) in taken.items():
        anchor[m] = a
        grouped[[m, a]] = True
        x, depth[m] = parent, 1
        while x in taken:
            x, depth[m] = taken[x][3], depth[m] + 1
    return anchor, grouped, depth


LEAF_STEP = 2  # unknown weak links tested per lone image and round by :func:`resolve_leaf_links`


def resolve_leaf_links(
    rank: np.ndarray,
    strong: pd.DataFrame,
    i: np.ndarray,
    j: np.ndarray,
    state: np.ndarray,
    check: Callable[[np.ndarray], np.ndarray],
    hops: int = 0,
    step: int = LEAF_STEP,
) -> np.ndarray:
    """Test only the weak links that can change pass 2 of :func:`assign_anchors` (its leaves), in rounds.

    rank: (N,) anchor order. strong: the strong edges (columns i, j, stage, evidence), which fix pass 1.
    i, j: (M,) the other pairs; state (M,) int8: 1 a known weak link, 0 no link, -1 unknown (the test is
    still to run). check(rows) -> (len(rows),) bool runs the test on those rows (a batch, in parallel).

    Pass 2 lets an image the strong links leave alone (a lone y) join the group of its weakly linked
    neighbour x with the smallest key (rank of x's anchor, rank of x) among the eligible ones. So for each
    lone y its pairs are tested in key order, ``step`` at a time in rounds over all lone images, until a link
    to an x already in a group of pass 1 (within ``hops``: always eligible) is known: no later key can win.
    Pairs of two images in groups, and pairs to group members at the ``hops`` limit, are never tested. The
    returned state (M,) has 1 or 0 where tested; rows left at -1 were not needed: taken as no link, the
    groups equal those of testing every row (tested). Pass 3 needs no more: an image that no link to a
    settled member decides has had all its rows tested. Depends on the inputs only, not on workers.
    """
    state = np.asarray(state, np.int8).copy()
    anchor, grouped, depth = group_arrays(rank, strong, hops)
    settled = grouped & ((hops == 0) | (depth < hops))  # eligible for every lone image, whatever pass 2 does
    queue: dict[int, list[tuple[int, int, int, int]]] = {}
    for q, (a, b) in enumerate(zip(np.asarray(i, np.int64), np.asarray(j, np.int64), strict=True)):
        for y, x in ((int(a), int(b)), (int(b), int(a))):
            if not grouped[y] and (settled[x] or not grouped[x]):  # members at the hops limit never take y
                queue.setdefault(y, []).append((int(rank[anchor[x]]), int(rank[x]), q, x))
    queue = {y: sorted(o) for y, o in queue.items()}  # the order pass 2 prefers: anchor rank, then rank
    pos = dict.fromkeys(queue, 0)

    def decided(q: int, x: int) -> bool:  # a link to a settled member: no later key can win
        return state[q] == 1 and bool(settled[x])

    while True:
        batch: list[int] = []
        for y in sorted(queue, key=lambda v: rank[v]):
            o, k = queue[y], pos[y]
            while k < len(o) and state[o[k][2]] >= 0 and not decided(o[k][2], o[k][3]):
                k += 1  # known and not deciding
            pos[y] = k
            if k == len(o) or decided(o[k][2], o[k][3]):
                pos[y] = len(o)
                continue
            asked = 0
            while k < len(o) and asked < step and not decided(o[k][2], o[k][3]):
                if state[o[k][2]] < 0:
                    batch.append(o[k][2])
                    asked += 1
                k += 1
        queue = {y: o for y, o in queue.items() if pos[y] < len(o)}
        if not batch:
            return state
        rows = np.unique(np.asarray(batch, np.int64))
        state[rows] = np.asarray(check(rows), bool).astype(np.int8)
