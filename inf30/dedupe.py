"""Near-duplicate removal: stage 2 near-copies by perceptual hash, stage 3 scene-level
near-duplicates (crops, shifts, video frames, curation crops) by ORB features, grouped along the verified
links with anchors chosen in a deterministic order (paper section 3.1).

Stage 1 (exact duplicates by pixel hash) happens in the build. This module:

- reads ``DIR/manifest.parquet``, resets its own earlier drops (so re-running is idempotent) and works on the
  kept rows;
- decodes each kept image once to compute its scene features (and any perceptual hash the manifest lacks),
  cached under ``DIR/dedupe/cache/`` in chunk files keyed by image id (resumable, mergeable across shards);
- stage 2: faiss binary index, range search under a Hamming threshold on the concatenated hash codes;
- stage 3 candidates: k nearest images by a bag-of-visual-words descriptor (faiss), images with most
  local-descriptor votes (faiss binary index: finds crops and their frames) and neighbours in source order;
  each candidate pair is verified geometrically (:func:`inf30.scene.verify_pair`), lazily when groups are
  whole connected components (pairs already in one group are skipped);
- groups: images visited in order (larger, then higher entropy, then id); an image not yet in a group becomes
  an anchor and takes every image within ``hops`` stage 2 or stage 3 links (0: its connected component);
- writes the manifest atomically (``status``/``reason`` and ``dup_stage``, ``dup_anchor``, ``dup_evidence``),
  ``DIR/dedupe/groups.parquet`` and the contact sheet ``DIR/dedupe/groups.png``.

The result depends only on the set of images, the options and the order rule, never on the worker count or
the manifest's row order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from inf30.atomic import atomic_path, link_or_copy_atomic, write_bytes_atomic
from inf30.distribute import Distributor, check_distributor
from inf30.errors import JobFailed, UsageError
from inf30.hashing import HASHES, compute_hashes
from inf30.lock import lock_folder
from inf30.manifest import MANIFEST_NAME, read_manifest, write_manifest, write_table
from inf30.options import option
from inf30.scene import EMPTY, LocalFeatures, SceneParams, Vocabulary, extract_features, verify_pair

DEDUPE_DIR = "dedupe"
CACHE_DIR = "cache"
CHUNK = 512  # images per cache chunk
OWN_REASONS = ("near_copy:", "near_duplicate:")
ORDER_KEYS = ("size", "entropy")
FLAT_LIMIT = 100_000  # exact (flat) binary index for stage 2 up to this many images, IVF beyond
VOTE_FLAT_LIMIT = 20_000  # exact binary index of local descriptors for the votes up to this many, IVF beyond
FLOAT_FLAT_LIMIT = 20_000  # exact (flat) float index for stage 3 candidates up to this many images, IVF beyond


@dataclass
class DedupeOptions:
    """Options of :func:`dedupe_dataset` (defaults tuned on real infrared data, see docs/dedupe.md); each
    field's help is the CLI's (``inf30 dedupe``). ``scene_params`` holds the ORB feature and verification
    parameters (:class:`inf30.scene.SceneParams`, each one a CLI option of its own too)."""

    hashes: tuple[str, ...] = option(("phash",), "Stage 2 hashes, comma-separated (phash, dhash, whash, ahash); "
                                     "several are concatenated.")
    hash_threshold: int = option(8, "Stage 2: max Hamming distance per 64-bit hash (k hashes: k times it).")
    scene: bool = option(True, "Run stage 3 (scene-level near-duplicates: ORB + RANSAC).")
    scene_params: SceneParams = option(help="ORB feature and verification parameters.", factory=SceneParams)
    neighbors: int = option(20, "Stage 3 candidates per image: its nearest images by whole-image descriptor.")
    votes: int = option(10, "Stage 3 candidates per image: the images whose local descriptors are most often "
                            "nearest to its own (finds its crops and its source frame; 0 = off).")
    vote_keypoints: int = option(128, "Stage 3: descriptors per image (the strongest) that vote and are voted for.")
    window: int = option(8, "Stage 3 candidates per image: the next N images in source order (item key: "
                            "folder, file name, video time; 0 = off).")
    min_similarity: float = option(0.3, "Stage 3: index candidates below this cosine similarity are not verified.")
    hops: int = option(2, "Groups: an anchor takes the images within N verified links (0 = the whole connected "
                          "component, verified lazily; N > 0: every candidate is verified).")
    vocab_size: int = option(256, "Stage 3: visual words of the whole-image descriptor (trained on the dataset).")
    order: tuple[str, ...] = option(("size", "entropy"), "Anchor order keys, each descending, comma-separated "
                                    "(size = pixels, entropy); ties by id.")
    workers: int = option(0, "Processes for features and verification (0 = all cores); never changes the result.")
    distributor: str = option("local", "Where features and verification run: local (processes) or ray (a Ray cluster).")
    ray_address: str | None = option(None, "Ray cluster to join (HEAD:6379, or auto on a cluster node); default: a local Ray for the run. Needs --distributor ray.")
    sheet_groups: int = option(8, "Groups shown in dedupe/groups.png (largest first).")

    def validate(self) -> None:
        for h in self.hashes:
            if h not in HASHES:
                raise UsageError(f"unknown hash {h!r}; choose from {', '.join(HASHES)}")
        if not self.hashes:
            raise UsageError("give at least one hash for stage 2")
        for k in self.order:
            if k not in ORDER_KEYS:
                raise UsageError(f"unknown order key {k!r}; choose from {', '.join(ORDER_KEYS)}")
        if not 0 <= self.hash_threshold <= 64:
            raise UsageError(f"hash threshold must be in 0..64, got {self.hash_threshold}")
        if self.neighbors < 1:
            raise UsageError("neighbors must be at least 1")
        if self.hops < 0:
            raise UsageError(f"hops must be 0 (connected components) or more, got {self.hops}")
        if self.votes < 0:
            raise UsageError("votes must be 0 (off) or more")
        if not 1 <= self.vote_keypoints <= 10_000:
            raise UsageError(f"vote keypoints must be in 1..10000, got {self.vote_keypoints}")
        if self.window < 0:
            raise UsageError("window must be 0 (off) or more")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise UsageError(f"min similarity is a cosine in -1..1, got {self.min_similarity}")
        if not 1 <= self.vocab_size <= 65536:
            raise UsageError(f"vocab size must be in 1..65536, got {self.vocab_size}")
        if self.workers < 0:
            raise UsageError(f"workers must be 0 (all cores) or more, got {self.workers}")
        if self.sheet_groups < 0:
            raise UsageError(f"sheet groups must be 0 or more, got {self.sheet_groups}")
        check_distributor(self.distributor, self.ray_address)
        self.scene_params.validate()

    def distributor_for(self, **kw) -> Distributor:
        """A :class:`~inf30.distribute.Distributor` of this run's backend and workers (its workers come from a
        fork server, so they never inherit faiss/OpenMP threads of this process, which can deadlock a fork)."""
        return Distributor(backend=self.distributor, workers=self.workers, ray_address=self.ray_address,
                           preload=("inf30.dedupe",), **kw)


@dataclass
class DedupeSummary:
    """Counts of one dedupe run."""

    considered: int = 0
    near_copies: int = 0
    near_duplicates: int = 0
    kept: int = 0
    groups: int = 0
    no_scene_features: int = 0
    unreadable: int = 0
    candidate_pairs: int = 0
    checked_pairs: int = 0
    verified_pairs: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        rows = [
            ("images considered (kept before dedupe)", self.considered),
            ("dropped, stage 2 near-copy (hash)", self.near_copies),
            ("dropped, stage 3 near-duplicate (scene)", self.near_duplicates),
            ("kept", self.kept),
            ("groups (anchors with members)", self.groups),
            ("images without scene features (stage 2 only)", self.no_scene_features),
            ("unreadable images (skipped)", self.unreadable),
            ("stage 3 candidate pairs / checked / duplicates",
             f"{self.candidate_pairs} / {self.checked_pairs} / {self.verified_pairs}"),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{w}}  {value}" for name, value in rows)


# ----------------------------------------------------------------------------------------- stage 2
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


# ----------------------------------------------------------------------------------------- stage 3
def float_index(x: np.ndarray) -> faiss.Index:
    """Inner-product faiss index over L2-normalized rows (N, D): flat up to :data:`FLOAT_FLAT_LIMIT`, IVF beyond."""
    n, d = x.shape
    if n <= FLOAT_FLAT_LIMIT:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(min(65536, 4 * np.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        index.cp.seed = 0
        rng = np.random.default_rng(0)
        index.train(x[np.sort(rng.choice(n, min(n, 16 * nlist), replace=False))])
        index.nprobe = 8
    index.add(x)
    return index


def _dedupe_pairs(i: np.ndarray, j: np.ndarray, sim: np.ndarray, n: int) -> pd.DataFrame:
    """Unique unordered pairs (i < j) with their best similarity, as a frame sorted by pair."""
    a, b = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    key = a * n + b
    order = np.lexsort((-sim, key))  # by pair, best similarity first
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    sel = order[first]
    return pd.DataFrame({"i": a[sel], "j": b[sel], "similarity": sim[sel].astype(np.float32)})


def candidate_pairs(
    desc: np.ndarray, usable: np.ndarray, k: int, min_similarity: float, batch: int = 16384
) -> pd.DataFrame:
    """Stage 3 candidates: for each usable row of ``desc`` (N, D) float32, its ``k`` nearest usable rows by
    inner product with similarity >= ``min_similarity``. Returns unique pairs i < j with columns i, j,
    similarity (the pair is a candidate if either is among the other's neighbours)."""
    rows = np.flatnonzero(usable)
    empty = pd.DataFrame(
        {"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64), "similarity": np.zeros(0, np.float32)}
    )
    if len(rows) < 2:
        return empty
    x = np.ascontiguousarray(desc if len(rows) == len(desc) else desc[rows], dtype=np.float32)  # no copy if all usable
    index = float_index(x)
    kk = min(k + 1, len(rows))
    parts = []
    for start in range(0, len(rows), batch):
        sims, nn = index.search(x[start : start + batch], kk)
        q = np.repeat(np.arange(start, start + len(sims)), kk)
        nn, sims = nn.ravel(), sims.ravel()
        keep = (nn >= 0) & (nn != q) & (sims >= min_similarity)
        parts.append((rows[q[keep]], rows[nn[keep]], sims[keep]))
    i, j, sim = (np.concatenate([p[c] for p in parts]) for c in range(3))
    if not len(i):
        return empty
    return _dedupe_pairs(i, j, sim, len(desc))


def vote_pairs(
    feats: list[LocalFeatures],
    top: int,
    keypoints: int = 128,
    k: int = 4,
    max_distance: int = 64,
    batch: int = 1 << 18,
) -> pd.DataFrame:
    """Stage 3 candidates by local-descriptor votes (finds an image's crops and its source frame, which a
    whole-image descriptor ranks too low): the ``keypoints`` strongest ORB descriptors of every image go into
    one faiss binary index (exact up to :data:`VOTE_FLAT_LIMIT` descriptors, IVF beyond); each of them votes for the
    images owning its ``k`` nearest descriptors within ``max_distance`` bits (one vote per descriptor and
    image), and each image is paired with the ``top`` images with most votes (at least 2). Returns unique
    pairs i < j with columns i, j, votes (the larger count of the two directions)."""
    empty = pd.DataFrame({"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64), "votes": np.zeros(0, np.int32)})
    counts = np.array([min(len(f.desc), keypoints) if f.usable else 0 for f in feats], np.int64)
    if top < 1 or (counts > 0).sum() < 2:
        return empty
    n = len(feats)
    desc = np.ascontiguousarray(np.concatenate([np.asarray(f.desc[:c]) for f, c in zip(feats, counts, strict=True) if c]))
    owner = np.repeat(np.arange(n), counts)
    index = binary_index(desc, nprobe=8, flat_limit=VOTE_FLAT_LIMIT)
    kk = min(k + 1, len(desc))
    keys = []
    for start in range(0, len(desc), batch):
        dist, nn = index.search(desc[start : start + batch], kk)
        me = owner[start : start + batch]
        other = np.where(nn >= 0, owner[np.maximum(nn, 0)], -1)
        ok = (nn >= 0) & (dist <= max_distance) & (other != me[:, None])
        q = np.repeat(np.arange(start, start + len(nn)), kk)[ok.ravel()]
        keys.append(np.unique(q * n + other.ravel()[ok.ravel()]))  # one vote per (descriptor, image)
    key = np.concatenate(keys)
    pair, votes = np.unique(owner[key // n] * n + key % n, return_counts=True)  # (query image, other image)
    a, b = pair // n, pair % n
    order = np.lexsort((b, -votes, a))
    a, b, votes = a[order], b[order], votes[order]
    first = np.r_[0, np.flatnonzero(np.diff(a)) + 1]
    rank = np.arange(len(a)) - np.repeat(first, np.diff(np.r_[first, len(a)]))
    sel = (rank < top) & (votes >= 2)
    if not sel.any():
        return empty
    out = _dedupe_pairs(a[sel], b[sel], votes[sel].astype(np.float32), n)
    return out.rename(columns={"similarity": "votes"}).astype({"votes": np.int32})


def _verify_chunk(args: tuple[list[tuple[LocalFeatures, LocalFeatures]], SceneParams]) -> list[int]:
    """Verify a chunk of pairs on one core (OpenCV and faiss single-threaded while it runs)."""
    cv2.setNumThreads(1)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        pairs, params = args
        return [verify_pair(a, b, params) for a, b in pairs]
    finally:
        faiss.omp_set_num_threads(threads)


def verify_candidates(
    feats: list[LocalFeatures],
    pairs: pd.DataFrame,
    params: SceneParams,
    workers: int = 1,
    progress: bool = False,
    dist: Distributor | None = None,
) -> np.ndarray:
    """RANSAC inlier counts (M,) int32 of candidate pairs (columns i, j index ``feats``); same result for
    any worker count. Chunks of pairs run through ``dist`` (an ordered :class:`Distributor`, e.g. one kept
    open across rounds; by default local processes, ``workers`` of them). A chunk whose worker failed on
    every attempt is a :class:`JobFailed`."""
    ij = list(zip(pairs["i"].to_numpy(), pairs["j"].to_numpy(), strict=True))
    n_workers = workers or os.cpu_count() or 1
    size = max(16, min(256, -(-len(ij) // max(1, 4 * n_workers))))  # several chunks per worker, at most 256 pairs
    chunks = [ij[s : s + size] for s in range(0, len(ij), size)]
    tasks = [([(feats[i], feats[j]) for i, j in c], params) for c in chunks]
    dist = dist or Distributor(workers=workers, ordered=True, preload=("inf30.dedupe",))
    out: list[int] = []
    with tqdm(total=len(ij), desc="verify pairs", unit="pair", disable=not progress) as bar:
        for res in dist(_verify_chunk, tasks, weight=lambda t: len(t[0]), bar=bar):
            if not res.ok:
                raise JobFailed(f"verifying {len(tasks[res.index][0])} candidate pairs failed: {res.error}")
            out += res.value
    return np.asarray(out, dtype=np.int32)


# ------------------------------------------------------------------------------------------ anchors
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


LAZY_BATCH = 512  # candidate pairs per round of lazy verification (fixed: the result never depends on workers)


def _pair_frame(a: np.ndarray, b: np.ndarray, n: int, exclude: np.ndarray | None = None) -> pd.DataFrame:
    """Unique unordered pairs of the index arrays a, b (M,) among n images as a frame of i < j, sorted;
    ``exclude``: pair keys (i * n + j) to leave out."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    key = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    if exclude is not None:
        key = key[~np.isin(key, exclude)]
    return pd.DataFrame({"i": key // n, "j": key % n})


def _similarity(desc: np.ndarray, pairs: pd.DataFrame) -> np.ndarray:
    """Cosine similarity (M,) of the L2-normalized descriptors (N, D) of each pair (columns i, j)."""
    return np.einsum("nd,nd->n", desc[pairs["i"].to_numpy()], desc[pairs["j"].to_numpy()])


def window_pairs(order_keys: list[str], usable: np.ndarray, window: int) -> pd.DataFrame:
    """Pairs of usable images at most ``window`` apart in the sorted order of ``order_keys`` (N,): neighbours
    in source order. Returns unique pairs i < j (columns i, j), sorted."""
    rows = np.flatnonzero(usable)
    empty = pd.DataFrame({"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64)})
    if window < 1 or len(rows) < 2:
        return empty
    keys = np.asarray(order_keys, dtype=object)[rows]
    seq = rows[np.argsort(keys, kind="stable")]
    steps = range(1, min(window, len(seq) - 1) + 1)
    return _pair_frame(np.concatenate([seq[:-d] for d in steps]), np.concatenate([seq[d:] for d in steps]), len(usable))


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
) -> pd.DataFrame:
    """Verify the candidate pairs (columns i, j, similarity) that can still change a group.

    Pairs are taken in a fixed order (similarity descending, then i, j) in rounds of :data:`LAZY_BATCH`; a
    pair whose two images are already in one group (``uf``: the stage 2 links and the pairs verified in
    earlier rounds) is skipped, since its verification could not change any drop. The rest of the round is
    verified (in parallel) and the duplicates join their groups. Returns the verified pairs with their
    inlier counts (columns i, j, similarity, inliers). The connected components are those a verification of
    every candidate would give; the result depends on the candidates only, never on the worker count. An
    empty ``uf`` (``UnionFind(0)``) verifies every candidate (for groups limited to a number of hops).
    ``dist``: the ordered :class:`Distributor` the rounds share (default: ``workers`` local processes).
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
                inl = verify_candidates(feats, part, params, workers, dist=dist)
                done.append(part.assign(inliers=inl))
                for a, b, n in zip(ci[sel], cj[sel], inl, strict=True):
                    if lazy and n >= params.min_inliers:
                        uf.union(int(a), int(b))
            bar.update(min(LAZY_BATCH, len(c) - start))
    if not done:
        return c.iloc[:0].assign(inliers=np.zeros(0, np.int32))
    return pd.concat(done, ignore_index=True)


def scene_candidates(
    feats: list[LocalFeatures],
    opts: DedupeOptions,
    train_ids: list[str] | None = None,
    order_keys: list[str] | None = None,
) -> pd.DataFrame:
    """Stage 3 candidate pairs of N images from three sources: whole-image descriptor neighbours
    (``neighbors``), local-descriptor votes (``votes``: crops and their source frames) and source-order
    neighbours (``window``). Returns unique pairs i < j with columns i, j, similarity (whole-image cosine,
    the verification order) and source (the first of ``index``, ``votes``, ``window`` that found it)."""
    usable = np.array([f.usable for f in feats])
    desc = global_descriptors(feats, opts, train_ids)
    parts = [candidate_pairs(desc, usable, opts.neighbors, opts.min_similarity).assign(source="index")]
    if opts.votes:
        parts.append(vote_pairs(feats, opts.votes, opts.vote_keypoints)[["i", "j"]].assign(source="votes"))
    if order_keys is not None and opts.window:
        parts.append(window_pairs(order_keys, usable, opts.window).assign(source="window"))
    cand = (
        pd.concat(parts, ignore_index=True)
        .drop_duplicates(["i", "j"], keep="first")
        .sort_values(["i", "j"], kind="stable")
        .reset_index(drop=True)
    )
    cand["similarity"] = _similarity(desc, cand).astype(np.float32)
    return cand


def find_edges(
    codes: np.ndarray | None,
    code_valid: np.ndarray | None,
    feats: list[LocalFeatures] | None,
    opts: DedupeOptions,
    train_ids: list[str] | None = None,
    progress: bool = False,
    stats: DedupeSummary | None = None,
    order_keys: list[str] | None = None,
    trace: dict | None = None,
) -> pd.DataFrame:
    """Stage 2 and 3 edges between N images.

    codes: (N, 8k) uint8 hash codes with valid mask (N,) (None: skip stage 2). feats: N local features (None:
    skip stage 3). train_ids: N stable keys, the vocabulary is trained on images sampled in their sorted
    order (default: positions). order_keys: N source-order keys (item keys) for the ``window`` candidates
    (None: none). Stage 3 verifies lazily (:func:`verify_lazily`): the edges it returns connect the same
    groups as verifying every candidate would. ``trace`` (a dict) receives the stage 3 ``candidates`` (with
    ``inliers``, -1 where skipped). Returns a DataFrame i, j, stage (2 or 3), evidence (str), hamming,
    inliers, similarity (-1 where not applicable).
    """
    parts = []
    n = len(codes) if codes is not None else len(feats or [])
    uf = UnionFind(n)
    if codes is not None and len(codes) > 1:
        valid = code_valid if code_valid is not None else np.ones(len(codes), bool)
        rows = np.flatnonzero(valid)
        nc = near_copy_pairs(codes[rows], opts.hash_threshold * len(opts.hashes))
        if len(nc):
            parts.append(
                pd.DataFrame(
                    {
                        "i": rows[nc["i"].to_numpy()],
                        "j": rows[nc["j"].to_numpy()],
                        "stage": 2,
                        "evidence": [f"hamming={d}" for d in nc["hamming"]],
                        "hamming": nc["hamming"].to_numpy(),
                        "inliers": -1,
                        "similarity": -1.0,
                    }
                )
            )
            for a, b in zip(parts[0]["i"], parts[0]["j"], strict=True):
                uf.union(int(a), int(b))
    if opts.scene and feats is not None and len(feats) > 1:
        cand = scene_candidates(feats, opts, train_ids, order_keys)
        v = verify_lazily(feats, cand, opts.scene_params, uf if opts.hops == 0 else UnionFind(0), opts.workers,
                          progress, dist=opts.distributor_for(ordered=True))
        if trace is not None:
            key = v["i"].to_numpy(np.int64) * n + v["j"].to_numpy(np.int64)
            inl = pd.Series(v["inliers"].to_numpy(), index=key)
            ckey = cand["i"].to_numpy(np.int64) * n + cand["j"].to_numpy(np.int64)
            trace["candidates"] = cand.assign(inliers=inl.reindex(ckey).fillna(-1).astype(np.int32).to_numpy())
        if stats is not None:
            stats.candidate_pairs = len(cand)
            stats.checked_pairs = len(v)
        v = v[v["inliers"].to_numpy() >= opts.scene_params.min_inliers]
        if stats is not None:
            stats.verified_pairs = len(v)
        parts.append(
            pd.DataFrame(
                {
                    "i": v["i"].to_numpy(),
                    "j": v["j"].to_numpy(),
                    "stage": 3,
                    "evidence": [f"inliers={k},similarity={sim:.3f}" for k, sim in zip(v["inliers"], v["similarity"], strict=True)],
                    "hamming": -1,
                    "inliers": v["inliers"].to_numpy(),
                    "similarity": v["similarity"].to_numpy(),
                }
            )
        )
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=["i", "j", "stage", "evidence", "hamming", "inliers", "similarity"])
    return pd.concat(parts, ignore_index=True)


def global_descriptors(
    feats: list[LocalFeatures], opts: DedupeOptions, train_ids: list[str] | None = None
) -> np.ndarray:
    """Bag-of-words descriptors (N, vocab) float32; the vocabulary is trained on up to ~40 k descriptors of
    up to 1000 images taken evenly in sorted ``train_ids`` order (deterministic for a set of images)."""
    keys = train_ids if train_ids is not None else [f"{i:012d}" for i in range(len(feats))]
    usable = [i for i in np.argsort(np.asarray(keys, dtype=object), kind="stable") if feats[i].usable]
    if not usable:
        return np.zeros((len(feats), 1), np.float32)
    step = max(1, len(usable) // 1000)
    sample = [feats[i].desc for i in usable[::step]]
    per = max(1, 40_000 // len(sample))
    train = np.concatenate([np.asarray(d[:per]) for d in sample])
    vocab = Vocabulary.train(train, k=opts.vocab_size, niter=10)
    out = np.zeros((len(feats), vocab.size), np.float32)
    for s in range(0, len(feats), 4096):
        out[s : s + 4096] = vocab.encode(feats[s : s + 4096])
    return out


# ------------------------------------------------------------------------------------------- cache
def _read_gray(path: Path) -> np.ndarray | None:
    try:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    except cv2.error:
        return None
    return img


def _feature_task(
    args: tuple[str, str, tuple[str, ...], SceneParams],
) -> tuple[str, LocalFeatures, dict[str, str], bool]:
    cv2.setNumThreads(1)
    ident, path, kinds, params = args
    gray = _read_gray(Path(path))
    if gray is None or gray.size == 0:
        return ident, EMPTY, {}, False
    hashes = compute_hashes(gray, kinds) if kinds else {}
    return ident, extract_features(gray, params), hashes, True


class FeatureCache:
    """Per-image scene features (and hashes computed at dedupe) under ``DIR/dedupe/cache/<feature key>/``.

    Each chunk of up to :data:`CHUNK` images is three files written atomically: ``<name>.desc.npy`` (sum N,
    32) uint8, ``<name>.xy.npy`` (sum N, 2) float16, and last ``<name>.meta.npz`` (ids, offsets, hashes,
    readable flags), whose presence marks the chunk complete. Arrays are memory-mapped on load.
    """

    def __init__(self, root: Path, params: SceneParams):
        self.dir = Path(root) / params.feature_key()
        self.feats: dict[str, LocalFeatures] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.unreadable: set[str] = set()
        self._pending: list[tuple[str, LocalFeatures, dict[str, str], bool]] = []

    def load(self) -> None:
        if not self.dir.is_dir():
            return
        for meta_path in sorted(self.dir.glob("*.meta.npz")):
            name = meta_path.name[: -len(".meta.npz")]
            try:
                meta = np.load(meta_path, allow_pickle=False)
                desc = np.load(self.dir / f"{name}.desc.npy", mmap_mode="r")
                xy = np.load(self.dir / f"{name}.xy.npy", mmap_mode="r")
            except (OSError, ValueError):
                continue  # a damaged chunk is recomputed
            ids, offs, ok = meta["ids"], meta["offsets"], meta["readable"]
            hash_cols = {k[5:]: meta[k] for k in meta.files if k.startswith("hash_")}
            for n, ident in enumerate(ids.tolist()):
                if ident in self.feats or ident in self.unreadable:
                    continue
                if not ok[n]:
                    self.unreadable.add(ident)
                    continue
                a, b = int(offs[n]), int(offs[n + 1])
                self.feats[ident] = LocalFeatures(xy[a:b], desc[a:b]) if b > a else EMPTY
                hs = {k: str(v[n]) for k, v in hash_cols.items() if str(v[n])}
                if hs:
                    self.hashes[ident] = hs

    def __contains__(self, ident: str) -> bool:
        return ident in self.feats or ident in self.unreadable

    def add(self, ident: str, feats: LocalFeatures, hashes: dict[str, str], readable: bool) -> None:
        if readable:
            self.feats[ident] = feats
            if hashes:
                self.hashes.setdefault(ident, {}).update(hashes)
        else:
            self.unreadable.add(ident)
        self._pending.append((ident, feats, hashes, readable))
        if len(self._pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        items = self._pending
        self._pending = []
        self.dir.mkdir(parents=True, exist_ok=True)
        ids = [x[0] for x in items]
        name = "chunk-" + hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]
        counts = [len(x[1].desc) for x in items]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        desc = np.concatenate([np.asarray(x[1].desc, np.uint8).reshape(-1, 32) for x in items])
        xy = np.concatenate([np.asarray(x[1].xy, np.float32).reshape(-1, 2) for x in items]).astype(
            np.float16
        )
        kinds = sorted({k for x in items for k in x[2]})
        extra = {f"hash_{k}": np.array([x[2].get(k, "") for x in items]) for k in kinds}
        for suffix, arr in (("desc", desc), ("xy", xy)):
            with atomic_path(self.dir / f"{name}.{suffix}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
        with atomic_path(self.dir / f"{name}.meta.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f, ids=np.array(ids), offsets=offsets, readable=np.array([x[3] for x in items]), **extra
                )


def compute_features(
    dataset_dir: Path,
    rows: pd.DataFrame,
    kinds_missing: dict[str, set[str]],
    opts: DedupeOptions,
    progress: bool,
) -> FeatureCache:
    """Fill the cache for ``rows`` (columns id, path): one decode per uncached image computes its ORB
    features and the hashes listed for it in ``kinds_missing`` ({id: kinds})."""
    cache = FeatureCache(Path(dataset_dir) / DEDUPE_DIR / CACHE_DIR, opts.scene_params)
    cache.load()
    todo = []
    for ident, path in zip(rows["id"], rows["path"], strict=True):
        need_hash = kinds_missing.get(ident, set()) - set(cache.hashes.get(ident, {}))
        if ident in cache and not need_hash:
            continue
        kinds = tuple(sorted(need_hash))
        todo.append((ident, str(Path(dataset_dir) / str(path)), kinds, opts.scene_params))
    if not todo:
        return cache
    dist = opts.distributor_for(chunksize=16, ordered=True, desc="scene features", unit="img", progress=progress)
    try:
        for out in dist(_feature_task, todo):
            # _feature_task never raises; an image whose worker died on every attempt counts as unreadable
            cache.add(*(out.value if out.ok else (todo[out.index][0], EMPTY, {}, False)))
    finally:
        cache.flush()  # keep what was computed (resumable after Ctrl-C)
    return cache


def merge_caches(shard_dirs: list[Path], out_dir: Path) -> None:
    """Union the shards' feature caches (``<shard>/dedupe/cache``) into ``<out_dir>/dedupe/cache`` so the
    merged dedupe only decodes images no shard has features for. Chunks are content-named: a chunk present
    in several shards is copied once. Hard links are used where the file system allows."""
    dst_root = Path(out_dir) / DEDUPE_DIR / CACHE_DIR
    for shard in shard_dirs:
        src_root = Path(shard) / DEDUPE_DIR / CACHE_DIR
        if not src_root.is_dir():
            continue
        for meta in sorted(src_root.glob("*/*.meta.npz")):
            key = meta.parent.name
            name = meta.name[: -len(".meta.npz")]
            files = [meta.parent / f"{name}.{s}" for s in ("desc.npy", "xy.npy", "meta.npz")]
            if not all(f.exists() for f in files):
                continue
            (dst_root / key).mkdir(parents=True, exist_ok=True)
            for f in files:  # meta last: it marks the chunk complete
                link_or_copy_atomic(f, dst_root / key / f.name)


def mark_dropped(df: pd.DataFrame, row: int, stage: int, anchor_id: str, evidence: str) -> None:
    """Mark manifest row ``row`` (an index label of ``df``) as dropped by stage 2 (``near_copy``) or
    stage 3 (``near_duplicate``) of anchor ``anchor_id``, with its evidence, in place."""
    kind = "near_copy" if stage == 2 else "near_duplicate"
    df.loc[row, ["status", "reason", "dup_anchor", "dup_evidence"]] = [
        "dropped",
        f"{kind}:{anchor_id} | {evidence}",
        anchor_id,
        evidence,
    ]
    df.loc[row, "dup_stage"] = stage


# ------------------------------------------------------------------------------------------ outputs
def contact_sheet(
    dataset_dir: Path,
    groups: pd.DataFrame,
    paths: dict[str, str],
    n_groups: int = 8,
    per_row: int = 8,
    thumb: int = 112,
) -> np.ndarray:
    """A contact sheet (H, W) uint8 of the largest groups: one row per group, anchor first (white frame),
    members after it labelled with their stage and evidence. Unreadable images show as grey tiles."""
    label_h = 14
    cell = thumb + label_h
    if groups.empty:
        sheet = np.full((cell, per_row * thumb), 40, np.uint8)
        cv2.putText(sheet, "no near-duplicate groups", (6, cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1)
        return sheet
    sizes = groups.groupby("anchor").size().sort_values(ascending=False, kind="stable")
    order = sorted(sizes.index, key=lambda a: (-sizes[a], a))[:n_groups]
    sheet = np.full((cell * len(order), per_row * thumb), 40, np.uint8)

    def tile(ident: str) -> np.ndarray:
        img = _read_gray(Path(dataset_dir) / paths.get(ident, "")) if ident in paths else None
        t = np.full((thumb, thumb), 90, np.uint8)
        if img is None:
            return t
        s = thumb / max(img.shape)
        small = cv2.resize(
            img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))), interpolation=cv2.INTER_AREA
        )
        t[: small.shape[0], : small.shape[1]] = small
        return t

    for r, anchor in enumerate(order):
        members = groups[groups["anchor"] == anchor].sort_values(["stage", "member"])
        items = [(anchor, f"anchor {anchor[:6]} +{len(members)}")]
        items += [
            (m, ("copy " if st == 2 else "scene ") + ev.split(",")[0].split("=")[-1])
            for m, st, ev in zip(members["member"], members["stage"], members["evidence"], strict=True)
        ]
        for c, (ident, text) in enumerate(items[:per_row]):
            y, x = r * cell, c * thumb
            sheet[y : y + thumb, x : x + thumb] = tile(ident)
            if c == 0:
                cv2.rectangle(sheet, (x, y), (x + thumb - 1, y + thumb - 1), 255, 2)
            cv2.putText(sheet, text, (x + 2, y + thumb + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, 230, 1)
    return sheet


# --------------------------------------------------------------------------------------------- main
def dedupe_dataset(
    dataset_dir: str | os.PathLike, opts: DedupeOptions | None = None, progress: bool = True
) -> DedupeSummary:
    """Run stages 2 and 3 on a built dataset folder and rewrite its manifest (see module docstring).

    Re-running is idempotent: rows this function dropped earlier are reconsidered from scratch.
    """
    t0 = time.perf_counter()
    opts = opts or DedupeOptions()
    opts.validate()
    ddir = Path(dataset_dir)
    if not ddir.is_dir():
        raise UsageError(f"{ddir} is not a folder; give a dataset folder written by `inf30 build SOURCES --out DIR`")
    if not (ddir / MANIFEST_NAME).is_file():
        raise UsageError(f"{ddir} has no {MANIFEST_NAME}; build a dataset into it first: `inf30 build SOURCES --out {ddir}`")
    with lock_folder(ddir):  # re-entrant: the build holds it while it runs this stage
        stats = _dedupe_locked(ddir, opts, progress)
    stats.seconds = time.perf_counter() - t0
    return stats


def _dedupe_locked(ddir: Path, opts: DedupeOptions, progress: bool) -> DedupeSummary:
    """The body of :func:`dedupe_dataset`, run while holding the folder's lock."""
    df = read_manifest(ddir).reset_index(drop=True)
    for col in ("dup_stage", "dup_anchor", "dup_evidence"):
        if col not in df.columns:
            df[col] = None
    own = df["status"].eq("dropped") & df["reason"].fillna("").str.startswith(OWN_REASONS)
    df.loc[own, "status"] = "kept"
    df.loc[own, "reason"] = None
    df["dup_stage"] = pd.array([None] * len(df), dtype="Int8")
    df["dup_anchor"] = None
    df["dup_evidence"] = None

    sel = df.index[df["status"].eq("kept") & df["id"].notna() & df["path"].notna()].to_numpy()
    work = df.loc[sel].drop_duplicates("id")
    work = work.iloc[np.argsort(work["id"].to_numpy(), kind="stable")].reset_index()  # 'index' = manifest row
    stats = DedupeSummary(considered=len(work))
    ids = work["id"].astype(str).tolist()

    missing: dict[str, set[str]] = {}
    for kind in opts.hashes:
        col = work[kind] if kind in work.columns else pd.Series([None] * len(work))
        for ident, h in zip(ids, col, strict=True):
            if not (isinstance(h, str) and len(h) == 16):
                missing.setdefault(ident, set()).add(kind)
    cache = compute_features(ddir, work[["id", "path"]], missing, opts, progress)
    stats.unreadable = sum(1 for i in ids if i in cache.unreadable)

    hash_cols = []
    for kind in opts.hashes:
        col = work[kind].tolist() if kind in work.columns else [None] * len(work)
        hash_cols.append(
            [
                h if isinstance(h, str) and len(h) == 16 else cache.hashes.get(i, {}).get(kind)
                for i, h in zip(ids, col, strict=True)
            ]
        )
    codes, valid = hex_to_codes(hash_cols)
    feats = [cache.feats.get(i, EMPTY) for i in ids]
    stats.no_scene_features = sum(1 for f in feats if not f.usable)
    edges = find_edges(
        codes, valid, feats if opts.scene else None, opts, ids, progress, stats, work["item_key"].astype(str).tolist()
    )

    rank = anchor_rank(work, opts.order)
    dropped = assign_anchors(rank, edges, opts.hops)
    g_rows = []
    for member, (anchor, stage, ev, parent) in sorted(dropped.items(), key=lambda kv: rank[kv[0]]):
        a_id, m_id = ids[anchor], ids[member]
        if parent != anchor:  # reached through another member of the group
            ev = f"{ev},via={ids[parent]}"
        row = int(work.at[member, "index"])
        mark_dropped(df, row, stage, a_id, ev)
        g_rows.append(
            {"anchor": a_id, "member": m_id, "stage": stage, "evidence": ev, "manifest_row": int(row)}
        )
    stats.near_copies = sum(1 for r in g_rows if r["stage"] == 2)
    stats.near_duplicates = sum(1 for r in g_rows if r["stage"] == 3)
    stats.kept = stats.considered - len(g_rows)
    groups = pd.DataFrame(g_rows, columns=["anchor", "member", "stage", "evidence", "manifest_row"])
    groups["stage"] = groups["stage"].astype(np.int8)
    stats.groups = groups["anchor"].nunique()

    out = ddir / DEDUPE_DIR
    out.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa

    write_table(
        out / "groups.parquet",
        pa.Table.from_pandas(groups.drop(columns=["manifest_row"]), preserve_index=False),
    )
    paths = dict(zip(work["id"], work["path"], strict=True))
    sheet = contact_sheet(ddir, groups, paths, opts.sheet_groups)
    write_bytes_atomic(out / "groups.png", cv2.imencode(".png", sheet)[1].tobytes())
    write_manifest(ddir, df)
    return stats
