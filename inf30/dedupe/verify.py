"""Stage 3 verification of candidate pairs (RANSAC inliers, in chunks through a distributor), lazily for
connected components (:class:`UnionFind`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import replace

import cv2
import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from inf30.distribute import Distributor
from inf30.errors import JobFailed
from inf30.scene import LocalFeatures, PairCheck, SceneParams, verify_pair

LAZY_BATCH = 512  # candidate pairs per round of lazy verification (fixed: the result never depends on workers)


def _verify_chunk(args: tuple[list[tuple[LocalFeatures, LocalFeatures, bool]], SceneParams]) -> list[PairCheck]:
    """Verify a chunk of pairs on one core (OpenCV and faiss single-threaded while it runs); a pair's flag
    False leaves out the photometric test."""
    cv2.setNumThreads(1)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        pairs, params = args
        orb_only = replace(params, photo_corr=0.0)
        return [verify_pair(a, b, params if photo else orb_only) for a, b, photo in pairs]
    finally:
        faiss.omp_set_num_threads(threads)


def run_pair_chunks(fn: Callable[[tuple], list], tasks: list[tuple], total: int, dist: Distributor | None, workers: int,
                    progress: bool, desc: str, what: str) -> list:
    """``fn`` over ``tasks`` (each a chunk of pairs, its first item the list of pairs) through ``dist`` (an ordered
    :class:`Distributor`; default ``workers`` local processes), the results concatenated in the tasks' order,
    with a progress bar ``desc`` of ``total`` pairs. A chunk whose worker failed on every attempt is a
    :class:`JobFailed` naming ``what``."""
    dist = dist or Distributor(workers=workers, ordered=True, preload=("inf30.dedupe",))
    out: list = []
    with tqdm(total=total, desc=desc, unit="pair", disable=not progress) as bar:
        for res in dist(fn, tasks, weight=lambda t: len(t[0]), bar=bar):
            if not res.ok:
                raise JobFailed(f"{what}: a chunk of {len(tasks[res.index][0])} pairs failed: {res.error}")
            out += res.value
    return out


def strong_links(res: pd.DataFrame, params: SceneParams) -> np.ndarray:
    """(M,) bool: which checks (columns inliers, corr, same, as :func:`verify_candidates` returns them) are
    strong links, the ones groups walk on through: the ORB test passed (no photometric correlation) with at
    least ``params.strong_inliers`` inliers. Other links of one scene are weak: group leaves."""
    return (res["same"].to_numpy() & res["corr"].isna().to_numpy()
            & (res["inliers"].to_numpy() >= params.strong_inliers))


def verify_candidates(
    feats: list[LocalFeatures],
    pairs: pd.DataFrame,
    params: SceneParams,
    workers: int = 1,
    progress: bool = False,
    dist: Distributor | None = None,
    photo: np.ndarray | None = None,
) -> pd.DataFrame:
    """Verification of candidate pairs (columns i, j index ``feats``): a frame of M rows in their order with
    columns inliers (int32), corr (float32, nan where not computed) and same (bool), the
    :class:`~inf30.scene.PairCheck` of each pair; same result for any worker count. ``photo`` (M,) bool: the
    pairs that get the photometric test if ``params`` has it (default all). Chunks of pairs run
    through ``dist`` (an ordered :class:`Distributor`, e.g. one kept
    open across rounds; by default local processes, ``workers`` of them). A chunk whose worker failed on
    every attempt is a :class:`JobFailed`."""
    flags = np.ones(len(pairs), bool) if photo is None else np.asarray(photo, bool)
    ij = list(zip(pairs["i"].to_numpy(), pairs["j"].to_numpy(), flags, strict=True))
    n_workers = workers or os.cpu_count() or 1
    size = max(16, min(256, -(-len(ij) // max(1, 4 * n_workers))))  # several chunks per worker, at most 256 pairs
    chunks = [ij[s : s + size] for s in range(0, len(ij), size)]
    tasks = [([(feats[i], feats[j], bool(f)) for i, j, f in c], params) for c in chunks]
    out: list[PairCheck] = run_pair_chunks(_verify_chunk, tasks, len(ij), dist, workers, progress, "verify pairs",
                                           "verifying candidate pairs")
    return pd.DataFrame({
        "inliers": np.array([c.inliers for c in out], np.int32),
        "corr": np.array([c.corr for c in out], np.float32),
        "same": np.array([c.same for c in out], bool),
    })


class UnionFind:
    """Disjoint sets over N images (path halving); the components, not the roots, are what callers use."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = int(p[x])
        return int(x)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def verify_lazily(
    feats: list[LocalFeatures],
    cand: pd.DataFrame,
    params: SceneParams,
    uf: UnionFind,
    workers: int = 1,
    progress: bool = False,
    dist: Distributor | None = None,
    linked: np.ndarray | None = None,
) -> pd.DataFrame:
    """Verify the candidate pairs (columns i, j, similarity) that can still change a group.

    Pairs are taken in a fixed order (similarity descending, then i, j) in rounds of :data:`LAZY_BATCH`; a
    pair whose two images are already connected by strong links (``uf``: the stage 2 links and the strong
    links of earlier rounds; weak links are group leaves, they join nothing) is skipped, since its
    verification could not change any drop. The rest of the round is verified (in parallel) and the strong
    links join their components. Returns the verified pairs with their checks (columns i, j, similarity,
    inliers, corr, same). The components are those a verification of every candidate would give; the result depends on the candidates only, never on the worker count. An
    empty ``uf`` (``UnionFind(0)``) verifies every candidate (for groups limited to a number of hops).
    ``dist``: the ordered :class:`Distributor` the rounds share (default: ``workers`` local processes).
    ``linked`` (N,) bool, the images with a strong link so far (stage 2): then the photometric test of
    ``params`` runs only on pairs with an image that has none yet (updated in place as strong links are
    found), the only pairs where a weak link can still matter if no later strong link comes; the column
    ``photo`` says which pairs it was asked for (it runs where the ORB test fails).
    """
    lazy = len(uf.parent) > 0  # an empty UnionFind: verify every candidate
    order = np.lexsort((cand["j"].to_numpy(), cand["i"].to_numpy(), -cand["similarity"].to_numpy()))
    c = cand.iloc[order].reset_index(drop=True)
    ci, cj = c["i"].to_numpy(np.int64), c["j"].to_numpy(np.int64)
    done: list[pd.DataFrame] = []
    dist = dist or Distributor(workers=workers, ordered=True, preload=("inf30.dedupe",))
    session = dist if len(c) > 256 else contextlib.nullcontext()  # one pool (Ray connection) for every round
    with session, tqdm(total=len(c), desc="verify pairs", unit="pair", disable=not progress) as bar:
        for start in range(0, len(c), LAZY_BATCH):
            rows = range(start, min(start + LAZY_BATCH, len(c)))
            sel = [k for k in rows if not lazy or uf.find(ci[k]) != uf.find(cj[k])]
            if sel:
                part = c.iloc[sel]
                photo = np.ones(len(sel), bool) if linked is None else ~(linked[ci[sel]] & linked[cj[sel]])
                res = verify_candidates(feats, part, params, workers, dist=dist, photo=photo)
                done.append(pd.concat([part.reset_index(drop=True), res.assign(photo=photo)], axis=1))
                strong = strong_links(res, params)  # weak links are group leaves: they join nothing
                for a, b, st in zip(ci[sel], cj[sel], strong, strict=True):
                    if st and lazy:
                        uf.union(int(a), int(b))
                    if st and linked is not None:
                        linked[[a, b]] = True
            bar.update(min(LAZY_BATCH, len(c) - start))
    if not done:
        return c.iloc[:0].assign(inliers=np.zeros(0, np.int32), corr=np.zeros(0, np.float32), same=np.zeros(0, bool),
                                 photo=np.zeros(0, bool))
    return pd.concat(done, ignore_index=True)
