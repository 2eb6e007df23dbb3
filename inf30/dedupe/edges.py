"""The verified graph: stage 2 (hash) and stage 3 (scene) edges between N images."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from inf30.dedupe.anchors import group_arrays, resolve_leaf_links
from inf30.dedupe.candidates import pair_similarity, scene_candidates
from inf30.dedupe.crops import crop_links, search_crops
from inf30.dedupe.hashes import copy_agreement, near_copy_pairs
from inf30.dedupe.options import DedupeOptions, DedupeSummary
from inf30.dedupe.verify import UnionFind, strong_links, verify_candidates, verify_lazily
from inf30.scene import LocalFeatures, SceneParams

EXPAND_ROUNDS = 2  # query expansion: rounds (the second starts from the first's links; a third found no more)
EXPAND_CHUNK = 100_000  # query expansion: linked image pairs joined with the candidate lists at a time


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
    rank: np.ndarray | None = None,
) -> pd.DataFrame:
    """Stage 2 and 3 edges between N images.

    A stage 2 near-copy is a link when the two thumbnails agree (:func:`~inf30.dedupe.hashes.copy_agreement`
    at least ``opts.copy_corr``, where stage 3 runs and both have thumbnails); otherwise the pair becomes a
    stage 3 candidate.

    codes: (N, 8k) uint8 hash codes with valid mask (N,) (None: skip stage 2). feats: N local features (None:
    skip stage 3). train_ids: N stable keys, the vocabulary is trained on images sampled in their sorted
    order (default: positions). order_keys: N source-order keys (item keys) for the ``window`` candidates
    (None: none). Stage 3 verifies lazily (:func:`verify_lazily`): the edges it returns connect the same
    groups as verifying every candidate would. ``rank`` (N,), the anchor order of
    :func:`~inf30.dedupe.assign_anchors`: with it, the photometric test (a weak link, used by groups only for
    an image the strong links leave alone) runs only where it can matter: in the verification itself on
    failing pairs with an image that has no strong link yet, then (only with ``hops`` > 0, where an image
    with strong links can still end alone) in a second round on the untested pairs a lone image needs,
    in pass 2's order until its group is decided (:func:`~inf30.dedupe.resolve_leaf_links`). The groups are
    those of running it on every pair (tested), at a fraction of the cost. With ``rank``, the images
    still in no group (after passes 1 and 2 of :func:`~inf30.dedupe.assign_anchors`: pass 3 is the fallback
    for what these tests leave) are also tested against their candidates' groups (:func:`lone_pairs`,
    ``opts.lone_pairs``; weak links), and those still alone get the crop search (:mod:`inf30.dedupe.crops`,
    ``crop_corr``, ``opts.lone_crops``; weak links). Last, query expansion (:func:`expansion_pairs`,
    ``opts.expand``, :data:`EXPAND_ROUNDS` rounds) pairs each linked image with its links' links and
    vote-supported candidates, verified lazily with the ORB test only. ``trace`` (a dict) receives the stage 3 ``candidates`` (with
    ``inliers``, -1 where skipped) and the pairs some stage 3 test looked at, ``tested`` (columns i < j: the
    verified candidates and expansion pairs, the lone images' pairs and the crop search's pairs). Returns a DataFrame i, j, stage
    (2 or 3), evidence (str), hamming, inliers, similarity (-1 where not applicable), weak (a stage 3 link made by the photometric test or with
    fewer than ``strong_inliers`` ORB inliers, which groups take as a leaf only, see
    :func:`inf30.dedupe.assign_anchors`).
    """
    parts = []
    unconfirmed = pd.DataFrame({"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64)})  # stage 2 pairs for stage 3
    n = len(codes) if codes is not None else len(feats or [])
    uf = UnionFind(n)
    if codes is not None and len(codes) > 1:
        valid = code_valid if code_valid is not None else np.ones(len(codes), bool)
        rows = np.flatnonzero(valid)
        nc = near_copy_pairs(codes[rows], opts.hash_threshold * len(opts.hashes))
        a, b = rows[nc["i"].to_numpy()], rows[nc["j"].to_numpy()]
        nc = nc.assign(i=np.minimum(a, b), j=np.maximum(a, b))
        if len(nc) and opts.copy_corr > 0 and opts.scene and feats is not None:  # confirm on the thumbnails
            agree = np.array([copy_agreement(feats[x].thumb, feats[y].thumb)
                              for x, y in zip(nc["i"], nc["j"], strict=True)])
            doubt = agree < opts.copy_corr  # nan (a thumbnail missing) keeps the link
            unconfirmed = nc[doubt][["i", "j"]].reset_index(drop=True)
            nc = nc[~doubt]
            if stats is not None:
                stats.copies_unconfirmed = int(doubt.sum())
        if len(nc):
            parts.append(
                pd.DataFrame(
                    {
                        "i": nc["i"].to_numpy(),
                        "j": nc["j"].to_numpy(),
                        "stage": 2,
                        "evidence": [f"hamming={d}" for d in nc["hamming"]],
                        "hamming": nc["hamming"].to_numpy(),
                        "inliers": -1,
                        "similarity": -1.0,
                        "weak": False,
                    }
                )
            )
            for a, b in zip(parts[0]["i"], parts[0]["j"], strict=True):
                uf.union(int(a), int(b))
    if opts.scene and feats is not None and len(feats) > 1:
        descriptors: list[np.ndarray] = []
        reserve: list[pd.DataFrame] = []
        cand = scene_candidates(feats, opts, train_ids, order_keys, descriptors, reserve)
        if len(unconfirmed):  # hash near-copies the thumbnails did not confirm: verified like any candidate
            known = cand["i"].to_numpy(np.int64) * n + cand["j"].to_numpy(np.int64)
            extra = unconfirmed[~np.isin(unconfirmed["i"].to_numpy(np.int64) * n + unconfirmed["j"].to_numpy(np.int64), known)]
            sim = pair_similarity(descriptors[0], extra["i"], extra["j"]).astype(np.float32)
            cand = (pd.concat([cand, extra.assign(source="hash", similarity=sim)], ignore_index=True)
                    .sort_values(["i", "j"], kind="stable").reset_index(drop=True))
        p = opts.scene_params
        gated = rank is not None and p.photo_corr > 0
        dist = opts.distributor_for(ordered=True)
        linked = None
        if gated:  # the photometric test only where a weak link can still matter (see the docstring)
            linked = np.zeros(n, bool)
            for q in parts:
                linked[q["i"].to_numpy()] = linked[q["j"].to_numpy()] = True
        lazy = uf if opts.hops == 0 else UnionFind(0)
        v = verify_lazily(feats, cand, p, lazy, opts.workers, progress, dist=dist, linked=linked)
        photo = v["photo"].to_numpy() & (~v["same"].to_numpy() | v["corr"].notna().to_numpy())  # it ran
        retested: list[int] = []
        if gated and opts.hops:  # round 2: untested pairs a lone image may need (with components there are none)
            strong = pd.concat([q[["i", "j", "stage", "evidence"]] for q in parts]
                               + [v.loc[strong_links(v, p), ["i", "j"]].assign(stage=3, evidence="")])
            state = np.where(v["same"].to_numpy(), 1, np.where(v["photo"].to_numpy(), 0, -1)).astype(np.int8)
            for col in ("inliers", "corr", "same"):
                v[col] = v[col].to_numpy().copy()

            def photometric(rows: np.ndarray) -> np.ndarray:
                res = verify_candidates(feats, v.iloc[rows][["i", "j"]], p, opts.workers, dist=dist)
                for col in ("inliers", "corr", "same"):
                    v.iloc[rows, v.columns.get_loc(col)] = res[col].to_numpy()
                retested.append(len(rows))
                return res["same"].to_numpy()

            resolve_leaf_links(rank, strong, v["i"].to_numpy(np.int64), v["j"].to_numpy(np.int64), state,
                               photometric, opts.hops)
        if stats is not None:
            stats.photo_pairs = int(photo.sum()) + sum(retested)
            stats.photo_retests = sum(retested)
        v["lone"] = False
        if gated and opts.lone_pairs:  # images still alone: test them against the groups of their candidates
            extra = lone_pairs(cand, v, parts, rank, opts, descriptors[0])
            if len(extra):
                res = verify_candidates(feats, extra, p, opts.workers, dist=dist)
                v = pd.concat([v, pd.concat([extra, res], axis=1).assign(photo=True, lone=True)], ignore_index=True)
            if stats is not None:
                stats.lone_checked = len(extra)
        crops = None
        if rank is not None and p.crop_corr > 0 and opts.lone_crops:  # last: the crop search for the images still alone
            edges = links_so_far(parts, v, p)
            anchor, grouped, _depth = group_arrays(rank, edges, opts.hops, leaf_hosts=False)
            pairs = lone_crop_pairs(cand, edges, anchor, grouped, rank, descriptors[0], opts.lone_crops)
            crops = crop_links(pairs, search_crops(feats, pairs, dist, opts.workers, progress), rank, p.crop_corr)
            if stats is not None:
                stats.crop_searched, stats.crop_linked = len(pairs), len(crops)
        if opts.expand and reserve:  # last: query expansion from every link so far (the ORB test only)
            crop_edges = [] if crops is None else [crops[["i", "j", "stage", "evidence", "weak"]]]
            added = 0
            for _round in range(EXPAND_ROUNDS):
                links = pd.concat([links_so_far(parts, v, p), *crop_edges])
                extra = expansion_pairs(links, cand, reserve[0], n, tested=v)  # v: the lone images' pairs too
                if not len(extra):
                    break
                extra = extra.assign(similarity=pair_similarity(descriptors[0], extra["i"], extra["j"])
                                     .astype(np.float32), source="expand")
                more = verify_lazily(feats, extra, replace(p, photo_corr=0.0), lazy, opts.workers, progress,
                                     dist=dist)
                v = pd.concat([v, more.assign(photo=False, lone=False)], ignore_index=True)
                cand = (pd.concat([cand, extra], ignore_index=True).sort_values(["i", "j"], kind="stable")
                        .reset_index(drop=True))
                added += len(extra)
            if stats is not None:
                stats.expanded_pairs = added
        if trace is not None:
            key = v["i"].to_numpy(np.int64) * n + v["j"].to_numpy(np.int64)
            inl = pd.Series(v["inliers"].to_numpy(), index=key)
            ckey = cand["i"].to_numpy(np.int64) * n + cand["j"].to_numpy(np.int64)
            same = pd.Series(v["same"].to_numpy(), index=key)
            trace["candidates"] = cand.assign(inliers=inl.reindex(ckey).fillna(-1).astype(np.int32).to_numpy(),
                                              same=same.reindex(ckey).fillna(False).astype(bool).to_numpy())
            tested = [v[["i", "j"]]] + ([] if crops is None else [pd.DataFrame(
                {"i": np.minimum(pairs["y"], pairs["z"]), "j": np.maximum(pairs["y"], pairs["z"])})])
            trace["tested"] = pd.concat(tested, ignore_index=True).drop_duplicates().reset_index(drop=True)
        if stats is not None:
            stats.candidate_pairs = len(cand)
            stats.checked_pairs = int((~v["lone"]).sum())  # candidates verified (the lone pairs are counted apart)
        v = v[v["same"].to_numpy()]
        if stats is not None:
            stats.verified_pairs = len(v)
        parts.append(
            pd.DataFrame(
                {
                    "i": v["i"].to_numpy(),
                    "j": v["j"].to_numpy(),
                    "stage": 3,
                    "evidence": [f"inliers={k},similarity={sim:.3f}" + (f",corr={c:.2f}" if c == c else "")
                                 for k, sim, c in zip(v["inliers"], v["similarity"], v["corr"], strict=True)],
                    "hamming": -1,
                    "inliers": v["inliers"].to_numpy(),
                    "similarity": v["similarity"].to_numpy(),
                    # photometric, too few ORB inliers, or a lone image's link to an anchor: group leaves only
                    "weak": ~strong_links(v, opts.scene_params) | v["lone"].to_numpy(),
                }
            )
        )
        if crops is not None:
            parts.append(crops)
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=["i", "j", "stage", "evidence", "hamming", "inliers", "similarity", "weak"])
    return pd.concat(parts, ignore_index=True)


def lone_pairs(cand: pd.DataFrame, v: pd.DataFrame, parts: list[pd.DataFrame], rank: np.ndarray,
               opts: DedupeOptions, desc: np.ndarray) -> pd.DataFrame:
    """Second-hand pairs for the images the verified links leave in no group (lone): each lone image y and,
    through its candidates x that are in a group, x's group anchor and the images strongly linked to x, up
    to ``opts.lone_pairs`` of them per lone image that are not candidates already, the most similar to y
    first (whole-image descriptors ``desc`` (N, D), L2-normalized; ties by rank). A crop whose
    candidate is a re-gained or noisy copy of its frame that it does not match is then tested against the
    frame itself (the copy's strong neighbour). v: the verified candidates (i, j, similarity, inliers,
    corr, same); parts: the stage 2 edges. Returns columns i, j (i < j), similarity, sorted by pair."""
    edges = links_so_far(parts, v, opts.scene_params)
    n = len(rank)
    anchor, grouped, _depth = group_arrays(rank, edges, opts.hops, leaf_hosts=False)
    y, x = _lone_sides(cand, grouped)
    near = pd.DataFrame({"y": y, "x": x}).merge(_group_hops(edges, anchor), on="x")
    near = near[near["z"].to_numpy() != near["y"].to_numpy()]
    a = np.minimum(near["y"].to_numpy(), near["z"].to_numpy())
    b = np.maximum(near["y"].to_numpy(), near["z"].to_numpy())
    near = near.assign(key=a * n + b)
    known = cand["i"].to_numpy(np.int64) * n + cand["j"].to_numpy(np.int64)
    near = near[~np.isin(near["key"].to_numpy(), known)].drop_duplicates(["y", "key"])
    chosen = _most_similar_first(near, rank, desc, opts.lone_pairs).drop_duplicates("key").sort_values("key")
    key = chosen["key"].to_numpy()
    return pd.DataFrame({"i": key // n, "j": key % n, "similarity": chosen["similarity"].to_numpy(np.float32)})


def expansion_pairs(links: pd.DataFrame, cand: pd.DataFrame, reserve: pd.DataFrame, n: int,
                    tested: pd.DataFrame | None = None) -> pd.DataFrame:
    """Query expansion with verified matches (as in Chum et al., "Total recall", ICCV 2007): each image y
    linked to an image x (``links``: the links so far, columns i, j, weak ones included) is paired with x's
    other links, and with x's candidates (``cand``, columns i, j) whose pair with y is in ``reserve``
    (columns i < j: one of the two is among the other's best vote matches). A crop whose candidates reached
    a neighbouring frame of its video, not its own frame, then reaches its own frame through it. Pairs that
    are candidates already, or in ``tested`` (columns i < j), are left out. Returns columns i, j (i < j),
    sorted by pair."""
    li, lj = links["i"].to_numpy(np.int64), links["j"].to_numpy(np.int64)
    ci, cj = cand["i"].to_numpy(np.int64), cand["j"].to_numpy(np.int64)
    known = ci * n + cj
    if tested is not None:
        known = np.r_[known, tested["i"].to_numpy(np.int64) * n + tested["j"].to_numpy(np.int64)]
    known = np.unique(known)
    voted = np.unique(reserve["i"].to_numpy(np.int64) * n + reserve["j"].to_numpy(np.int64))
    yx = pd.DataFrame({"y": np.r_[li, lj], "x": np.r_[lj, li]}).drop_duplicates()

    def keys(hop: pd.DataFrame, allowed: np.ndarray | None) -> np.ndarray:
        out = []
        for s in range(0, len(yx), EXPAND_CHUNK):  # in chunks: a link times a candidate list is many rows
            d = yx.iloc[s : s + EXPAND_CHUNK].merge(hop, on="x")
            y, z = d["y"].to_numpy(np.int64), d["z"].to_numpy(np.int64)
            k = np.unique(np.minimum(y, z)[y != z] * n + np.maximum(y, z)[y != z])
            k = k[~np.isin(k, known)]
            out.append(k if allowed is None else k[np.isin(k, allowed)])
        return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)

    key = np.union1d(keys(yx.rename(columns={"y": "z"}), None),
                     keys(pd.DataFrame({"x": np.r_[ci, cj], "z": np.r_[cj, ci]}), voted))
    return pd.DataFrame({"i": key // n, "j": key % n})


def links_so_far(parts: list[pd.DataFrame], v: pd.DataFrame, params: SceneParams) -> pd.DataFrame:
    """The graph the groups are formed from so far: the stage 2 edges ``parts`` and the verified pairs of
    ``v`` that are the same scene (weak where :func:`strong_links` says so, or a lone image's link, column
    ``lone`` if present). Columns i, j, stage, evidence, weak."""
    links = v[v["same"].to_numpy()]
    weak = ~strong_links(links, params)
    if "lone" in links:
        weak |= links["lone"].to_numpy()
    return pd.concat([q[["i", "j", "stage", "evidence"]].assign(weak=False) for q in parts]
                     + [links[["i", "j"]].assign(stage=3, evidence="", weak=weak)])


def lone_crop_pairs(cand: pd.DataFrame, edges: pd.DataFrame, anchor: np.ndarray, grouped: np.ndarray,
                    rank: np.ndarray, desc: np.ndarray, limit: int) -> pd.DataFrame:
    """The pairs the crop search (:mod:`inf30.dedupe.crops`) tests: each lone image y (not ``grouped``) with
    its candidates x (``cand`` columns i, j) that are in a group, their groups' anchors and the images
    strongly linked to them (``edges``: the links so far, column weak), at most ``limit`` per y, the most
    similar to y first (whole-image descriptors ``desc`` (N, D), L2-normalized; ties by rank). A crop's
    frame is often a candidate; when it is not, a re-gained, rotated or shifted copy of it was the candidate,
    and the frame is that copy's strong neighbour or its group's anchor. Returns columns y, z, similarity,
    sorted by y, then that order."""
    y, x = _lone_sides(cand, grouped)
    d = pd.DataFrame({"y": y, "x": x}).merge(_group_hops(edges, anchor), on="x")
    d = pd.concat([pd.DataFrame({"y": y, "z": x}), d[d["z"].to_numpy() != d["y"].to_numpy()][["y", "z"]]])
    return _most_similar_first(d.drop_duplicates(), rank, desc, limit)[["y", "z", "similarity"]].reset_index(drop=True)


def _group_hops(edges: pd.DataFrame, anchor: np.ndarray) -> pd.DataFrame:
    """Where a lone image's grouped candidate x leads: x's strong neighbours in ``edges`` (column weak) and
    its group's ``anchor`` (N,). Columns x, z."""
    strong = edges[~edges["weak"].to_numpy()]
    si, sj = strong["i"].to_numpy(np.int64), strong["j"].to_numpy(np.int64)
    return pd.DataFrame({"x": np.r_[si, sj, np.arange(len(anchor))], "z": np.r_[sj, si, anchor]})


def _lone_sides(cand: pd.DataFrame, grouped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of every candidate pair (columns i, j) whose one image y is in no group and whose other x
    is: (y, x), int64 arrays."""
    i, j = cand["i"].to_numpy(np.int64), cand["j"].to_numpy(np.int64)
    y, x = np.r_[i, j], np.r_[j, i]
    pick = ~grouped[y] & grouped[x]
    return y[pick], x[pick]


def _most_similar_first(d: pd.DataFrame, rank: np.ndarray, desc: np.ndarray, limit: int) -> pd.DataFrame:
    """Rows of ``d`` (columns y, z) with their whole-image ``similarity`` (float32), at most ``limit`` per y,
    sorted by y, then the most similar z first, ties by z's ``rank``."""
    d = d.assign(similarity=pair_similarity(desc, d["y"], d["z"]).astype(np.float32), zrank=rank[d["z"].to_numpy()])
    d = d.sort_values(["y", "similarity", "zrank"], ascending=[True, False, True], kind="stable")
    return d.groupby("y", sort=True).head(limit)
