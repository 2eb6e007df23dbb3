"""Stage 3 candidate pairs: whole-image descriptor neighbours (bag of visual words, faiss), local-descriptor
votes and source-order neighbours."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd

from inf30.dedupe.hashes import binary_index
from inf30.dedupe.options import DedupeOptions
from inf30.scene import LocalFeatures, Vocabulary

VOTE_FLAT_LIMIT = 20_000  # exact binary index of local descriptors for the votes up to this many, IVF beyond
FLOAT_FLAT_LIMIT = 20_000  # exact (flat) float index for stage 3 candidates up to this many images, IVF beyond


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


def _stack(feats: list[LocalFeatures], keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``keypoints`` strongest descriptors of each usable image, stacked (D, 32) uint8, and the image
    index (D,) of each."""
    counts = np.array([min(len(f.desc), keypoints) if f.usable else 0 for f in feats], np.int64)
    if not counts.any():
        return np.zeros((0, 32), np.uint8), np.zeros(0, np.int64)
    desc = np.concatenate([np.asarray(f.desc[:c]) for f, c in zip(feats, counts, strict=True) if c])
    return np.ascontiguousarray(desc), np.repeat(np.arange(len(feats)), counts)


def vote_pairs(
    feats: list[LocalFeatures],
    top: int,
    keypoints: int = 128,
    k: int = 4,
    max_distance: int = 64,
    batch: int = 1 << 18,
    index_keypoints: int = 0,
) -> pd.DataFrame:
    """Stage 3 candidates by local-descriptor votes (finds an image's crops and its source frame, which a
    whole-image descriptor ranks too low): the ``keypoints`` strongest ORB descriptors of every image go into
    one faiss binary index (exact up to :data:`VOTE_FLAT_LIMIT` descriptors, IVF beyond); each of them votes for the
    images owning its ``k`` nearest descriptors within ``max_distance`` bits (one vote per descriptor and
    image), and each image is paired with the ``top`` images with most votes (at least 2).
    ``index_keypoints`` > ``keypoints``: the index holds that many descriptors per image (the queries stay
    ``keypoints``): a crop's strongest descriptors then find more of its frame's, which the frame's own
    strongest ones, spread over the whole frame, miss. Returns unique pairs i < j with columns i, j, votes
    (the larger count of the two directions) and rank (0 = the best match; the better of the two directions)."""
    empty = pd.DataFrame({"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64), "votes": np.zeros(0, np.int32)})
    desc, owner = _stack(feats, keypoints)  # the queries
    if top < 1 or len(np.unique(owner)) < 2:
        return empty.assign(rank=np.zeros(0, np.int32))
    n = len(feats)
    base, base_owner = _stack(feats, index_keypoints) if index_keypoints > keypoints else (desc, owner)
    index = binary_index(base, nprobe=8, flat_limit=VOTE_FLAT_LIMIT)
    kk = min(k + 1, len(base))
    keys = []
    for start in range(0, len(desc), batch):
        dist, nn = index.search(desc[start : start + batch], kk)
        me = owner[start : start + batch]
        other = np.where(nn >= 0, base_owner[np.maximum(nn, 0)], -1)
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
        return empty.assign(rank=np.zeros(0, np.int32))
    out = (pd.DataFrame({"i": np.minimum(a[sel], b[sel]), "j": np.maximum(a[sel], b[sel]),
                         "votes": votes[sel].astype(np.int32), "rank": rank[sel].astype(np.int32)})
           .groupby(["i", "j"], as_index=False, sort=True).agg(votes=("votes", "max"), rank=("rank", "min")))
    return out.astype({"i": np.int64, "j": np.int64, "votes": np.int32, "rank": np.int32})


def _pair_frame(a: np.ndarray, b: np.ndarray, n: int, exclude: np.ndarray | None = None) -> pd.DataFrame:
    """Unique unordered pairs of the index arrays a, b (M,) among n images as a frame of i < j, sorted;
    ``exclude``: pair keys (i * n + j) to leave out."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    key = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    if exclude is not None:
        key = key[~np.isin(key, exclude)]
    return pd.DataFrame({"i": key // n, "j": key % n})


def pair_similarity(desc: np.ndarray, i, j) -> np.ndarray:
    """Cosine similarity (M,) of the L2-normalized descriptors (N, D) of the pairs (i[k], j[k]) (M each)."""
    return np.einsum("nd,nd->n", desc[np.asarray(i)], desc[np.asarray(j)])


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


def scene_candidates(
    feats: list[LocalFeatures],
    opts: DedupeOptions,
    train_ids: list[str] | None = None,
    order_keys: list[str] | None = None,
    descriptors: list | None = None,
    reserve: list | None = None,
) -> pd.DataFrame:
    """Stage 3 candidate pairs of N images from three sources: whole-image descriptor neighbours
    (``neighbors``), local-descriptor votes (``votes``: crops and their source frames) and source-order
    neighbours (``window``). Returns unique pairs i < j with columns i, j, similarity (whole-image cosine,
    the verification order) and source (the first of ``index``, ``votes``, ``window`` that found it).
    ``descriptors`` (a list) receives the whole-image descriptors (N, vocab); ``reserve`` (a list) the pairs
    (columns i < j) where one image is among the other's ``opts.expand`` best vote matches (or ``votes``, if
    more), for :func:`~inf30.dedupe.edges.expansion_pairs`."""
    usable = np.array([f.usable for f in feats])
    desc = global_descriptors(feats, opts, train_ids)
    if descriptors is not None:
        descriptors.append(desc)
    parts = [candidate_pairs(desc, usable, opts.neighbors, opts.min_similarity).assign(source="index")]
    if opts.votes or opts.expand:
        vp = vote_pairs(feats, max(opts.votes, opts.expand), opts.vote_keypoints,
                        index_keypoints=opts.vote_index_keypoints)
        parts.append(vp[vp["rank"].to_numpy() < opts.votes][["i", "j"]].assign(source="votes"))
        if reserve is not None:
            reserve.append(vp[["i", "j"]])
    if order_keys is not None and opts.window:
        parts.append(window_pairs(order_keys, usable, opts.window).assign(source="window"))
    cand = (
        pd.concat(parts, ignore_index=True)
        .drop_duplicates(["i", "j"], keep="first")
        .sort_values(["i", "j"], kind="stable")
        .reset_index(drop=True)
    )
    cand["similarity"] = pair_similarity(desc, cand["i"], cand["j"]).astype(np.float32)
    return cand


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
