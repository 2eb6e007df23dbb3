"""Stage 3's second test (issue 17): a similarity from a few ORB matches, checked by the agreement of the two
thumbnails' gradient fields, on real SIRST crops whose ORB matches are too few for the first test."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from test_dedupe import curation_crop

from inf30.dedupe.cache import FeatureCache
from inf30.scene import (
    PHOTO_MAX_ROTATION,
    SceneParams,
    extract_features,
    similarity_hypotheses,
    thumb_correlation,
    verify_pair,
)


def test_photometric_test_rescues_low_texture_crops_and_links_no_unrelated_pair(sirst60, hit3) -> None:
    """Curation crops (35 % of the area, 1.5x, percentile stretch + gamma 1.8, JPEG 60) of 60 real SIRST
    images: the ORB test alone (``photo_corr=0``) misses crops that the photometric test links (13 when
    measured), and neither links any crop to an unrelated HIT-UAV frame."""
    p = SceneParams()
    orb_only = replace(p, photo_corr=0.0)
    others = [extract_features(h) for h in hit3]
    rescued, linked = 0, 0
    for img in sirst60:
        fa, fb = extract_features(img), extract_features(curation_crop(img, 0.35, 0.3, 0.6, 1.5, 1.8))
        first, both = verify_pair(fa, fb, orb_only), verify_pair(fa, fb, p)
        assert not first.same or both.same  # the second test only adds links
        assert np.isnan(first.corr)  # it did not run
        if both.same:
            linked += 1
            if not first.same:
                rescued += 1
                assert both.corr >= p.photo_corr and both.inliers >= p.photo_inliers
        for fo in others:
            assert not verify_pair(fo, fb, p).same
            assert not verify_pair(fb, fo, p).same
    assert rescued >= 8, rescued
    assert linked >= 40, linked


def test_photometric_test_needs_the_frame_orientation(sirst60) -> None:
    """With the first test made impossible (min_inliers huge), a gamma-changed copy is linked by the second
    test; the same copy rotated by 10 degrees is not (re-cuts keep their orientation; rotated near-duplicates
    are the first test's job)."""
    p = replace(SceneParams(), min_inliers=100_000)
    img = next(im for im in sirst60 if verify_pair(extract_features(im), extract_features(im), p).same)
    h, w = img.shape
    regained = (255 * (img / 255.0) ** 1.6).astype(np.uint8)
    r = verify_pair(extract_features(img), extract_features(regained), p)
    assert r.same and r.corr >= 0.9, r
    rot = cv2.warpAffine(regained, cv2.getRotationMatrix2D((w / 2, h / 2), 10, 1.0), (w, h),
                         borderMode=cv2.BORDER_REFLECT)
    r = verify_pair(extract_features(img), extract_features(rot), p)
    assert not r.same, r
    assert PHOTO_MAX_ROTATION < 10


def test_similarity_hypotheses_finds_a_model_hidden_among_outliers() -> None:
    """12 matches under a known similarity (scale 1.7, 1 degree, shift) among 40 random ones: the best
    hypothesis is that model (refit on its inliers); a scale beyond ``max_scale`` is never proposed."""
    rng = np.random.default_rng(3)
    z = 1.7 * np.exp(1j * np.radians(1.0))
    t = 40 - 25j
    src_in = rng.uniform(0, 300, (12, 2))
    s = src_in[:, 0] + 1j * src_in[:, 1]
    d = z * s + t
    dst_in = np.c_[d.real, d.imag] + rng.normal(0, 0.3, (12, 2))
    src = np.vstack([src_in, rng.uniform(0, 300, (40, 2))])
    dst = np.vstack([dst_in, rng.uniform(0, 600, (40, 2))])
    perm = rng.permutation(len(src))
    hyps = similarity_hypotheses(src[perm], dst[perm], px=3.0, max_scale=3.0)
    model, n = hyps[0]
    assert n >= 12
    np.testing.assert_allclose(model[:, :2], [[z.real, -z.imag], [z.imag, z.real]], atol=0.01)
    np.testing.assert_allclose(model[:, 2], [t.real, t.imag], atol=1.5)
    for m, _ in similarity_hypotheses(src[perm], dst[perm], px=3.0, max_scale=1.5):
        assert np.hypot(m[0, 0], m[1, 0]) <= 1.5 + 1e-9
    assert similarity_hypotheses(src[:1], dst[:1], 3.0, 3.0) == []


def test_thumb_correlation_is_blind_to_gain_and_needs_overlap(sirst60) -> None:
    """Under the identity a gamma/gain change of a real image still correlates near 1; a model that maps the
    image off the other gives nan (no overlap); an unrelated image correlates weakly."""
    img = sirst60[5]
    a = extract_features(img)
    b = extract_features(np.clip(1.2 * (255 * (img / 255.0) ** 0.6) - 20, 0, 255).astype(np.uint8))
    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert thumb_correlation(a, b, eye) > 0.9
    off = eye.copy()
    off[:, 2] = 10_000
    assert np.isnan(thumb_correlation(a, b, off))
    other = extract_features(sirst60[40])
    ho, wo = other.thumb.shape
    scale = np.array([[wo / a.thumb.shape[1] / other.thumb_scale * a.thumb_scale, 0, 0],
                      [0, ho / a.thumb.shape[0] / other.thumb_scale * a.thumb_scale, 0]])
    assert abs(thumb_correlation(a, other, scale)) < 0.5


def test_cached_thumbnails_equal_fresh_ones_and_old_caches_are_recomputed(tmp_path: Path, sirst60) -> None:
    """Features (with thumbnails) read back from the cache verify exactly as fresh ones; a chunk written
    without thumbnails (before issue 17) is not used."""
    p = SceneParams()
    feats = [extract_features(im, p) for im in sirst60[:6]]
    cache = FeatureCache(tmp_path, p)
    for k, f in enumerate(feats):
        cache.add(f"id{k}", f, {}, True)
    cache.flush()
    back = FeatureCache(tmp_path, p)
    back.load()
    for k, f in enumerate(feats):
        g = back.feats[f"id{k}"]
        np.testing.assert_array_equal(g.thumb, f.thumb)
        assert g.thumb_scale == f.thumb_scale
    for i in range(len(feats)):
        for j in range(len(feats)):
            fresh, cached = verify_pair(feats[i], feats[j], p), verify_pair(back.feats[f"id{i}"], back.feats[f"id{j}"], p)
            assert (fresh.inliers, fresh.same) == (cached.inliers, cached.same)
            assert fresh.corr == cached.corr or (np.isnan(fresh.corr) and np.isnan(cached.corr))
    meta = next(back.dir.glob("*.meta.npz"))  # an old chunk: the same files without the thumbnail keys
    with np.load(meta) as z:
        old = {k: z[k] for k in z.files if not k.startswith("thumb_")}
    with open(meta, "wb") as fh:
        np.savez(fh, **old)
    stale = FeatureCache(tmp_path, p)
    stale.load()
    assert not stale.feats


def test_weak_links_are_leaves_of_groups() -> None:
    """A photometric (weak) link adds a lone image to a group and never joins two groups: a wrong weak link
    between two scenes costs one image, not a merge of both (the HIT-UAV flights over one court,
    benchmarks.md); and a frame keeps its strong group even when its crop (upscaled: larger) comes first."""
    from inf30.dedupe import assign_anchors

    A, B, C, D = 0, 1, 2, 3
    e = pd.DataFrame({"i": [A, B, C], "j": [B, C, D], "stage": 3, "evidence": ["AB", "BC", "CD"],
                      "weak": [False, True, False]})
    rank = np.arange(4)
    assert assign_anchors(rank, e) == {B: (A, 3, "AB", A), D: (C, 3, "CD", C)}  # two groups stay two
    assert set(assign_anchors(rank, e.drop(columns="weak"))) == {B, C, D}  # all strong: the component
    lone = e.iloc[:2]  # A-B strong, B-C weak: C is alone, it joins A's group through B
    assert assign_anchors(rank, lone) == {B: (A, 3, "AB", A), C: (A, 3, "BC", B)}
    assert assign_anchors(rank, lone, hops=1) == {B: (A, 3, "AB", A)}  # B is at the limit: C stays
    # crop c (rank 0, the largest) is weakly linked to frame F, which has a strong variant R: F anchors {F, R}
    c, F, R = 0, 1, 2
    e = pd.DataFrame({"i": [c, F], "j": [F, R], "stage": 3, "evidence": ["cF", "FR"], "weak": [True, False]})
    assert assign_anchors(rank[:3], e) == {R: (F, 3, "FR", F), c: (F, 3, "cF", F)}
    # two lone images: the later one joins the earlier (the larger stays), whatever the edge's direction
    e = pd.DataFrame({"i": [1], "j": [0], "stage": 3, "evidence": ["10"], "weak": [True]})
    assert assign_anchors(rank[:2], e) == {1: (0, 3, "10", 0)}
    # pass 2: y alone joins A via x; pass 3: z, weak to the leaf y only, joins A's group through y (a verified
    # duplicate of a member is dropped)
    x, y, z = 1, 2, 3
    e = pd.DataFrame({"i": [A, x, y], "j": [x, y, z], "stage": 3, "evidence": ["Ax", "xy", "yz"],
                      "weak": [False, True, True]})
    assert assign_anchors(rank, e) == {x: (A, 3, "Ax", A), y: (A, 3, "xy", x), z: (A, 3, "yz", y)}
    assert assign_anchors(rank, e, leaf_hosts=False) == {x: (A, 3, "Ax", A), y: (A, 3, "xy", x)}
    assert assign_anchors(rank, e, hops=2) == {x: (A, 3, "Ax", A), y: (A, 3, "xy", x)}  # y is at the limit
    # pass 3 through a leaf of a group pass 2 made: the upscaled crop c (first) anchors its frame F as a leaf
    # (two lone images); R, weak to F only, joins c's group, not a group of F's own
    c, F, R = 0, 1, 2
    e = pd.DataFrame({"i": [c, F], "j": [F, R], "stage": 3, "evidence": ["cF", "FR"], "weak": [True, True]})
    assert assign_anchors(rank[:3], e) == {F: (c, 3, "cF", c), R: (c, 3, "FR", F)}
    # a weak link never joins two groups, pass 3 included: B-C weak between two strong groups stays unused
    e = pd.DataFrame({"i": [A, 1, 2], "j": [1, 2, 3], "stage": 3, "evidence": ["AB", "BC", "CD"],
                      "weak": [False, True, False]})
    assert assign_anchors(rank[:4], e) == {1: (A, 3, "AB", A), 3: (2, 3, "CD", 2)}


def every_and_gated(feats: list, rank: np.ndarray, opts) -> tuple[dict, dict, object, object, pd.DataFrame]:
    """Stage 3 twice: the photometric test on every failing pair (no anchor order given) and only where it
    can matter (with ``rank``). Returns both groups (member -> anchor), both summaries and the first edges."""
    from inf30.dedupe import DedupeSummary, assign_anchors, find_edges

    every, gated = DedupeSummary(), DedupeSummary()
    e1 = find_edges(None, None, feats, opts, stats=every)
    e2 = find_edges(None, None, feats, opts, stats=gated, rank=rank)
    g1, g2 = ({m: a for m, (a, *_) in assign_anchors(rank, e, opts.hops).items()} for e in (e1, e2))
    return g1, g2, every, gated, e1


def test_photometric_round_only_where_it_can_matter_gives_the_same_groups(sirst60, hit3, monkeypatch) -> None:
    """With the anchor order given, stage 3 runs the photometric test only where a weak link can matter:
    in the verification on pairs with an image without strong links yet, then (hops > 0) in a second round
    on the pairs a lone image needs. Fewer pairs get it, and the groups equal those of testing every pair."""
    import inf30.dedupe.verify as dv
    from inf30.dedupe import DedupeOptions

    monkeypatch.setattr(dv, "LAZY_BATCH", 16)  # rounds small enough for strong links to be known early
    imgs = []
    for k, img in enumerate(sirst60[:16]):
        imgs += [img, curation_crop(img, 0.35, 0.3, 0.6, 1.5, 1.8)] if k % 2 else [img, img[5:, 7:]]
    imgs += hit3
    feats = [extract_features(im) for im in imgs]
    rank = np.argsort(np.argsort([-im.size for im in imgs], kind="stable"))
    for hops in (2, 1, 0):
        g1, g2, every, gated, e1 = every_and_gated(feats, rank, DedupeOptions(workers=1, hops=hops, window=0))
        assert g1 == g2 and len(g1) >= 10, (hops, g1, g2)
        assert 0 < gated.photo_pairs < every.photo_pairs, (hops, gated, every)
        # every failing pair got it, but query expansion's pairs (the ORB test only)
        assert every.photo_pairs >= every.checked_pairs - every.verified_pairs - every.expanded_pairs
        assert every.photo_retests == 0
        assert hops or gated.photo_retests == 0, gated  # components: no second round
        assert e1["weak"].any()  # the photometric test did link something here


def test_second_photometric_round_for_groups_limited_in_hops(hituav_dir: Path, monkeypatch) -> None:
    """A HIT-UAV sequence with a curation crop of each frame, visited crops first: with hops > 0 a frame with
    strong links can still end alone (its neighbours taken by an earlier anchor), so the second round tests
    pairs the first one left; the groups equal those of testing every pair, for hops 1, 2 and 0."""
    from test_dedupe import hit_sequence

    import inf30.dedupe.verify as dv
    from inf30.dedupe import DedupeOptions

    monkeypatch.setattr(dv, "LAZY_BATCH", 16)
    imgs = []
    for _, frame in hit_sequence(hituav_dir, "0_100_30_0", 12):
        imgs += [frame, curation_crop(frame, 0.3, 0.2, 0.5, 1.4, 1.6)]
    feats = [extract_features(im) for im in imgs]
    rank = np.arange(len(imgs))[::-1].copy()  # crops (and later frames) first
    retests = {}
    for hops in (1, 2, 0):  # many candidates per image: pairs between frames the first round leaves untested
        opts = DedupeOptions(workers=1, hops=hops, window=0, neighbors=20, votes=10)
        g1, g2, every, gated, _ = every_and_gated(feats, rank, opts)
        assert g2 == g1 and len(g1) >= 19, hops
        assert gated.photo_pairs <= every.photo_pairs
        retests[hops] = gated.photo_retests
    assert retests[2] > 0 and retests[0] == 0, retests


def test_leaf_links_tested_lazily_give_the_groups_of_testing_every_pair() -> None:
    """resolve_leaf_links tests a lone image's unknown weak links in pass 2's order only until a link to a
    settled group member is known: on 400 random graphs (strong edges, known and unknown weak links, hops
    0, 1 and 2) the groups equal those of testing every pair, it never tests a pair twice or one of two
    grouped images, and it skips a good share of the tests."""
    from inf30.dedupe import assign_anchors, resolve_leaf_links

    def with_weak(strong: pd.DataFrame, i: np.ndarray, j: np.ndarray, link: np.ndarray) -> pd.DataFrame:
        w = pd.DataFrame({"i": i[link], "j": j[link], "stage": 3, "evidence": [f"w{a}-{b}" for a, b in
                          zip(i[link], j[link], strict=True)], "weak": True})
        return pd.concat([strong.assign(weak=False), w], ignore_index=True)

    unknown = tested = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(5, 40))
        rank = rng.permutation(n)
        si, sj = rng.integers(0, n, (2, int(rng.integers(0, n))))
        ok = si != sj
        strong = pd.DataFrame({"i": np.minimum(si, sj)[ok], "j": np.maximum(si, sj)[ok],
                               "stage": rng.choice([2, 3], int(ok.sum())), "evidence": "s"}).drop_duplicates(["i", "j"])
        pi, pj = rng.integers(0, n, (2, int(rng.integers(0, 3 * n))))
        key = np.unique(np.minimum(pi, pj) * n + np.maximum(pi, pj))
        pi, pj = key // n, key % n
        keep = pi != pj
        pi, pj = pi[keep], pj[keep]
        truth = rng.random(len(pi)) < rng.uniform(0.05, 0.6)
        state = np.where(rng.random(len(pi)) < 0.3, truth.astype(np.int8), np.int8(-1))  # some known (ORB)
        for hops in (0, 1, 2):
            calls: list[np.ndarray] = []

            def check(rows: np.ndarray, calls: list = calls, truth: np.ndarray = truth) -> np.ndarray:
                calls.append(rows)
                return truth[rows]

            out = resolve_leaf_links(rank, strong, pi, pj, state, check, hops)
            asked = np.concatenate(calls) if calls else np.zeros(0, np.int64)
            assert len(np.unique(asked)) == len(asked) and np.all(state[asked] == -1)  # each unknown at most once
            assert np.array_equal(out[asked], truth[asked]) and np.array_equal(out[state >= 0], state[state >= 0])
            full = assign_anchors(rank, with_weak(strong, pi, pj, truth), hops)
            assert assign_anchors(rank, with_weak(strong, pi, pj, out == 1), hops) == full, (seed, hops)
            unknown += int((state < 0).sum())
            tested += len(asked)
    assert tested < 0.7 * unknown, (tested, unknown)


def test_lone_image_is_tested_against_its_candidates_groups(sirst60, hit3, monkeypatch) -> None:
    """A curation crop whose only candidate of its family is a noisy copy of its frame (which it does not
    match; the copy and the frame are near-copies by pHash) ends alone; with ``lone_pairs`` it is also tested
    against the copy's strong neighbour, the frame, and joins that group as a leaf. Real SIRST frames, crops
    and HIT-UAV frames; only the candidate list is fixed (a real search ranks these pairs as it likes)."""
    import inf30.dedupe.edges as de
    from inf30.dedupe import (
        DedupeOptions,
        DedupeSummary,
        assign_anchors,
        find_edges,
        hex_to_codes,
        lone_pairs,
    )
    from inf30.hashing import compute_hashes

    imgs, fam = [], []
    for k in (2, 14, 31, 36):  # frames whose crop matches the frame, not the noisy copy (measured)
        frame = sirst60[k]
        noisy = np.clip(frame + np.random.default_rng(k).normal(0, 8, frame.shape), 0, 255).astype(np.uint8)
        fam.append((len(imgs), len(imgs) + 1, len(imgs) + 2))
        imgs += [frame, noisy, curation_crop(frame, 0.35, 0.3, 0.6, 1.5, 1.8)]
    imgs += hit3
    feats = [extract_features(im) for im in imgs]
    codes, valid = hex_to_codes([[compute_hashes(im)["phash"] for im in imgs]])
    n = len(imgs)
    pairs = [(c, noisy) for _, noisy, c in fam] + [(c, n - 1) for _, _, c in fam] + [(0, 3), (n - 3, n - 2)]
    cand = pd.DataFrame(sorted((min(a, b), max(a, b)) for a, b in pairs), columns=["i", "j"]).assign(similarity=0.5)

    def fixed(feats, opts, train_ids, order_keys, descriptors, reserve=None):  # scene_candidates' contract
        # (no vote matches in reserve: query expansion adds only pairs already in one group)
        descriptors.append(np.full((n, 4), 0.5, np.float32))
        return cand.assign(source="index")

    monkeypatch.setattr(de, "scene_candidates", fixed)
    rank = np.argsort(np.argsort([-im.size for im in imgs], kind="stable"))
    for extra in (0, 3):
        stats = DedupeSummary()
        e = find_edges(codes, valid, feats, DedupeOptions(workers=1, lone_pairs=extra, lone_crops=0), stats=stats,
                       rank=rank)  # the crop search (tested apart) would link these crops too
        groups = {m: a for m, (a, *_) in assign_anchors(rank, e).items()}
        for frame, noisy, c in fam:
            assert {groups.get(frame, frame), groups.get(noisy, noisy)} == {min(frame, noisy, key=lambda x: rank[x])}
            joined = groups.get(c) == groups.get(noisy, noisy)
            assert joined == bool(extra), (extra, frame, groups)
        assert len(set(groups.values())) == len(fam)  # one group per family, nothing across
        assert stats.lone_checked == (len(fam) if extra else 0), stats
    link = e[(e["i"].isin([c for *_, c in fam]) | e["j"].isin([c for *_, c in fam])) & (e["stage"] == 3)]
    assert link["weak"].all()  # a second-hand link is a leaf: it never joins two groups
    # the function itself: at most ``lone_pairs`` per lone image, never a candidate again, none for grouped images
    v = cand.assign(inliers=0, corr=np.float32("nan"), same=False)
    stage2 = e[e["stage"] == 2][["i", "j", "stage", "evidence"]]
    got = lone_pairs(cand, v, [stage2], rank, DedupeOptions(lone_pairs=1), np.full((n, 4), 0.5, np.float32))
    assert sorted(map(tuple, got[["i", "j"]].to_numpy())) == sorted((f, c) for f, _, c in fam)
