"""Dedupe stages 2 and 3 on real infrared images (SIRST, HIT-UAV), anchors, outputs and bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inf30.dedupe import (
    DedupeOptions,
    assign_anchors,
    dedupe_dataset,
    expansion_pairs,
    find_edges,
    merge_caches,
    near_copy_pairs,
    window_pairs,
)
from inf30.entropy import entropy8
from inf30.hashing import compute_hashes
from inf30.manifest import empty_row, read_manifest, write_manifest
from inf30.scene import SceneParams, extract_features, verify_pair


def gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def make_dataset(root: Path, items: list[tuple[str, np.ndarray]], shuffle_seed: int | None = None) -> Path:
    """A built-dataset folder as the build writes it: images/<id[:2]>/<id>.png + manifest rows."""
    rows = []
    for name, img in items:
        img = np.ascontiguousarray(img, dtype=np.uint8)
        ident = hashlib.sha256(img.tobytes()).hexdigest()
        rel = f"images/{ident[:2]}/{ident}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(root / rel)
        rows.append(
            empty_row(
                item_key=f"test:{name}", id=ident, source="test", origin=name, origin_kind="file", path=rel,
                width=img.shape[1], height=img.shape[0], entropy=entropy8(img),
                phash=compute_hashes(img)["phash"], status="kept",
            )
        )
    df = pd.DataFrame(rows)
    if shuffle_seed is not None:
        df = df.sample(frac=1.0, random_state=shuffle_seed)
    write_manifest(root, df)
    return root


def by_origin(dataset: Path) -> pd.DataFrame:
    return read_manifest(dataset).set_index("origin").sort_index()


def crop(img: np.ndarray, frac: float, dy: float = 0.1, dx: float = 0.15) -> np.ndarray:
    """A crop keeping ``frac`` of the area, offset by (dy, dx) of the free margin."""
    h, w = img.shape
    ch, cw = int(h * frac**0.5), int(w * frac**0.5)
    y, x = int((h - ch) * dy), int((w - cw) * dx)
    return img[y : y + ch, x : x + cw].copy()


@pytest.fixture(scope="module")
def sirst(sirst_dir: Path) -> list[np.ndarray]:
    files = sorted((sirst_dir / "images").glob("*.png"))
    return [gray(f) for f in files[::40][:8]]


def hit_sequence(hituav_dir: Path, prefix: str, n: int) -> list[tuple[str, np.ndarray]]:
    files = sorted((hituav_dir / "train").glob(f"{prefix}_*.jpg"))[:n]
    return [(f.stem, gray(f)) for f in files]


# ------------------------------------------------------------------------------------------- stage 2
def test_near_copy_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (50, 8), dtype=np.uint8)
    flips = rng.integers(0, 2, (50, 64)).astype(bool) & (rng.random((50, 64)) < 0.08)
    codes = np.vstack([base, base ^ np.packbits(flips, axis=1)])
    bits = np.unpackbits(codes, axis=1).astype(int)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    want = {(i, j) for i in range(len(codes)) for j in range(i + 1, len(codes)) if dist[i, j] <= 6}
    got = near_copy_pairs(codes, 6)
    assert set(zip(got["i"], got["j"], strict=True)) == want
    assert all(dist[i, j] == d for i, j, d in zip(got["i"], got["j"], got["hamming"], strict=True))
    assert len(want) > 10


def test_stage2_drops_resized_reencoded_copy(tmp_path: Path, sirst: list[np.ndarray]) -> None:
    img = sirst[1]
    h, w = img.shape
    small = cv2.resize(img, (w * 3 // 4, h * 3 // 4), interpolation=cv2.INTER_AREA)
    _, buf = cv2.imencode(".jpg", np.clip(small.astype(int) + 12, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 60])
    copy = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    ds = make_dataset(tmp_path, [("orig", img), ("copy", copy), ("other", sirst[5])])
    s = dedupe_dataset(ds, DedupeOptions(scene=False, workers=1), progress=False)
    m = by_origin(ds)
    assert m.at["copy", "status"] == "dropped"
    assert m.at["copy", "reason"].startswith(f"near_copy:{m.at['orig', 'id']}")
    assert m.at["copy", "dup_stage"] == 2 and m.at["copy", "dup_evidence"].startswith("hamming=")
    assert m.at["orig", "status"] == "kept" and m.at["other", "status"] == "kept"
    assert (s.near_copies, s.near_duplicates, s.kept) == (1, 0, 2)


# ------------------------------------------------------------------------------------------- stage 3
def test_sirst_crop_is_found_and_unrelated_is_not(sirst: list[np.ndarray]) -> None:
    p = SceneParams()
    found = 0
    for img in sirst[:4]:
        fa = extract_features(img, p)
        fb = extract_features(crop(img, 0.7), p)
        if verify_pair(fa, fb, p) >= p.min_inliers:
            found += 1
        other = extract_features(sirst[-1], p)
        assert verify_pair(fa, other, p) < p.min_inliers
    assert found >= 3


def test_crop_dropped_as_near_duplicate_of_the_larger_original(tmp_path: Path, sirst: list[np.ndarray]) -> None:
    img = sirst[2]
    items = [("orig", img), ("crop", crop(img, 0.65, 0.8, 0.3))] + [(f"o{k}", im) for k, im in enumerate(sirst[3:7])]
    ds = make_dataset(tmp_path, items)
    s = dedupe_dataset(ds, DedupeOptions(workers=1), progress=False)
    m = by_origin(ds)
    assert m.at["crop", "status"] == "dropped", m.at["crop", "reason"]
    assert m.at["crop", "dup_anchor"] == m.at["orig", "id"]
    assert m.at["crop", "reason"].split(" | ")[0] in (f"near_duplicate:{m.at['orig', 'id']}", f"near_copy:{m.at['orig', 'id']}")
    assert (m["status"] == "kept").sum() == len(items) - 1
    assert s.considered == len(items)


def test_two_hituav_sequences_are_not_merged(tmp_path: Path, hituav_dir: Path) -> None:
    a = hit_sequence(hituav_dir, "0_100_30_0", 8)
    b = hit_sequence(hituav_dir, "1_130_50_0", 8)
    ds = make_dataset(tmp_path, a + b)
    dedupe_dataset(ds, DedupeOptions(workers=1), progress=False)
    m = read_manifest(ds)
    seq = {r.id: r.origin.rsplit("_", 1)[0] for r in m.itertuples()}
    dropped = m[m["status"] == "dropped"]
    assert len(dropped) >= 4  # consecutive frames of one sequence do overlap
    for r in dropped.itertuples():
        assert seq[r.dup_anchor] == seq[r.id], f"{r.origin} merged into another sequence"


def test_expansion_pairs_join_images_verified_against_a_common_one() -> None:
    # verified: 0-1 (50 inliers), 0-2 (40), 0-3 (30), 4-5; already a candidate: 1-2; image 6 has no features
    links = pd.DataFrame({"i": [0, 0, 0, 4, 0], "j": [1, 2, 3, 5, 6], "inliers": [50, 40, 30, 60, 90]})
    known = pd.DataFrame({"i": [1], "j": [2]})
    usable = np.array([True] * 6 + [False])
    got = expansion_pairs(links, known, usable, per_image=3)
    assert list(zip(got["i"], got["j"], strict=True)) == [(1, 3), (2, 3)]  # 1-2 known; 6 unusable; 4-5 share no image
    got = expansion_pairs(links, known, usable, per_image=2)  # 0 keeps its two strongest usable links: 1, 2
    assert got.empty
    assert expansion_pairs(links, known, usable, per_image=0).empty
    assert expansion_pairs(links, known, np.zeros(7, bool), per_image=3).empty  # nobody has features


def test_expansion_pairs_in_small_chunks_equal_one_pass(monkeypatch) -> None:
    """The join runs in chunks of whole images (bounded memory at 1 M images): same pairs as one pass."""
    import inf30.dedupe as dd

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 60, 400), rng.integers(0, 60, 400)
    links = pd.DataFrame({"i": np.minimum(a, b), "j": np.maximum(a, b), "inliers": rng.integers(25, 200, 400)})
    links = links[links["i"] < links["j"]]
    known = links.iloc[::3][["i", "j"]]
    usable = rng.random(60) > 0.1
    whole = expansion_pairs(links, known, usable, per_image=6)
    monkeypatch.setattr(dd, "EXPAND_CHUNK", 7)
    pd.testing.assert_frame_equal(expansion_pairs(links, known, usable, per_image=6), whole)
    assert len(whole) > 50


def test_window_pairs_follow_source_order_not_row_order() -> None:
    keys = ["v/f3", "v/f1", "x/a", "v/f2", "v/f4"]  # source order: f1 f2 f3 f4 a (rows 1 3 0 4 2)
    usable = np.array([True, True, True, True, False])  # f4 has no features: skipped, its place closes up
    got = window_pairs(keys, usable, 1)
    assert list(zip(got["i"], got["j"], strict=True)) == [(0, 2), (0, 3), (1, 3)]  # f1-f2, f2-f3, f3-a
    got = window_pairs(keys, usable, 2)
    assert list(zip(got["i"], got["j"], strict=True)) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]
    assert window_pairs(keys, usable, 0).empty


def test_expansion_finds_frames_the_index_ranks_too_low(hituav_dir: Path) -> None:
    """One HIT-UAV sequence, only 1 candidate per image: expansion over verified links finds more frame
    pairs of the sequence; every pair it adds is verified, and more of them than without it."""
    frames = [img for _, img in hit_sequence(hituav_dir, "0_100_30_0", 14)]
    feats = [extract_features(f) for f in frames]
    base = find_edges(None, None, feats, DedupeOptions(neighbors=1, expand=0, workers=1))
    more = find_edges(None, None, feats, DedupeOptions(neighbors=1, expand=10, workers=1))
    assert len(base) > 0
    via = more[more["evidence"].str.endswith("via=expansion")]
    assert len(via) > 0 and len(more) == len(base) + len(via)
    assert (via["inliers"] >= SceneParams().min_inliers).all()
    assert set(zip(base["i"], base["j"], strict=True)) <= set(zip(more["i"], more["j"], strict=True))


# --------------------------------------------------------------------------------- anchors, outputs
def test_assign_anchors_greedy_order() -> None:
    edges = pd.DataFrame({"i": [0, 1, 2], "j": [1, 2, 3], "stage": [3, 3, 2], "evidence": ["a", "b", "c"]})
    rank = np.array([0, 1, 2, 3])
    assert assign_anchors(rank, edges) == {1: (0, 3, "a"), 3: (2, 2, "c")}  # 2 survives: its anchor 1 was dropped
    rank = np.array([3, 0, 1, 2])  # 1 first: drops 0 and 2; 3 is linked only to 2 (dropped) and stays
    assert assign_anchors(rank, edges) == {0: (1, 3, "a"), 2: (1, 3, "b")}


def test_result_independent_of_workers_and_row_order(tmp_path: Path, hituav_dir: Path, sirst: list[np.ndarray]) -> None:
    items = hit_sequence(hituav_dir, "0_60_30_0", 10) + [("s0", sirst[0]), ("s0crop", crop(sirst[0], 0.8))]
    results = []
    for k, (workers, seed) in enumerate(((1, None), (2, 7))):
        ds = make_dataset(tmp_path / f"d{k}", items, shuffle_seed=seed)
        dedupe_dataset(ds, DedupeOptions(workers=workers), progress=False)
        results.append(by_origin(ds)[["status", "reason", "dup_anchor"]])
    pd.testing.assert_frame_equal(results[0], results[1])
    assert (results[0]["status"] == "dropped").sum() >= 3


def test_groups_outputs_and_idempotent_rerun(tmp_path: Path, hituav_dir: Path, sirst: list[np.ndarray]) -> None:
    items = hit_sequence(hituav_dir, "1_60_30_0", 10) + [("s3", sirst[3])]
    ds = make_dataset(tmp_path, items)
    s1 = dedupe_dataset(ds, DedupeOptions(workers=1), progress=False)
    first = by_origin(ds)
    groups = pd.read_parquet(ds / "dedupe" / "groups.parquet")
    assert list(groups.columns) == ["anchor", "member", "stage", "evidence"]
    assert len(groups) == s1.near_copies + s1.near_duplicates > 0
    by_id = read_manifest(ds).set_index("id")
    for g in groups.itertuples():
        assert by_id.at[g.anchor, "status"] == "kept"
        assert by_id.at[g.member, "status"] == "dropped"
        assert by_id.at[g.member, "reason"].startswith(("near_copy:" if g.stage == 2 else "near_duplicate:") + g.anchor)
    sheet = cv2.imread(str(ds / "dedupe" / "groups.png"), cv2.IMREAD_GRAYSCALE)
    assert sheet is not None and sheet.shape[0] >= 112 * min(8, groups["anchor"].nunique())
    assert "near-duplicate (scene)" in s1.table()
    s2 = dedupe_dataset(ds, DedupeOptions(workers=1), progress=False)  # cached features, same result
    pd.testing.assert_frame_equal(first, by_origin(ds))
    assert (s2.near_copies, s2.near_duplicates) == (s1.near_copies, s1.near_duplicates)


# ------------------------------------------------------------------------------------------ bad input
def test_tiny_flat_and_corrupt_images_never_crash(tmp_path: Path, sirst: list[np.ndarray]) -> None:
    flat = np.full((64, 64), 90, np.uint8)
    ramp = np.tile(np.linspace(40, 200, 96).astype(np.uint8), (80, 1))  # too smooth for ORB keypoints
    for img in (flat, ramp, np.zeros((8, 8), np.uint8), np.zeros((1, 300), np.uint8)):
        assert not extract_features(img).usable
    tiny = cv2.resize(sirst[1], (15, 12), interpolation=cv2.INTER_AREA)  # too small for ORB
    assert not extract_features(tiny).usable
    items = [("flat", flat), ("ramp", ramp), ("tiny", tiny),
             ("tiny_bright", np.clip(tiny.astype(int) + 6, 0, 255).astype(np.uint8)),
             ("s1", sirst[1]), ("broken", sirst[2])]
    ds = make_dataset(tmp_path, items)
    m = read_manifest(ds)
    (ds / m.loc[m["origin"] == "broken", "path"].iloc[0]).write_bytes(b"not an image")
    s = dedupe_dataset(ds, DedupeOptions(workers=1), progress=False)
    m = by_origin(ds)
    dropped = set(m.index[m["status"] == "dropped"])
    # stage 2 handles images stage 3 cannot: both tiny copies are near-copies of the full-size original
    assert dropped == {"tiny", "tiny_bright"}
    assert m.loc[["tiny", "tiny_bright"], "dup_stage"].tolist() == [2, 2]
    assert set(m.loc[["tiny", "tiny_bright"], "dup_anchor"]) == {m.at["s1", "id"]}
    assert s.unreadable == 1 and m.at["broken", "status"] == "kept"
    assert s.no_scene_features >= 4


def test_merged_dataset_uses_shard_caches(tmp_path: Path, sirst: list[np.ndarray]) -> None:
    a = [("a_orig", sirst[4]), ("a_other", sirst[6])]
    b = [("b_crop", crop(sirst[4], 0.7, 0.2, 0.9)), ("b_other", sirst[7])]
    shards = [make_dataset(tmp_path / "s0", a), make_dataset(tmp_path / "s1", b)]
    for sd in shards:
        dedupe_dataset(sd, DedupeOptions(workers=1), progress=False)
    merged = tmp_path / "merged"
    merged.mkdir()
    write_manifest(merged, pd.concat([read_manifest(sd) for sd in shards], ignore_index=True))
    # no image files in the merged folder: stage 3 can only find the crop through the shards' cached features
    merge_caches(shards, merged)
    dedupe_dataset(merged, DedupeOptions(hash_threshold=0, workers=1), progress=False)
    m = by_origin(merged)
    assert m.at["b_crop", "status"] == "dropped" and m.at["b_crop", "dup_stage"] == 3
    assert m.at["b_crop", "dup_anchor"] == m.at["a_orig", "id"]


def test_cli_dedupe(tmp_path: Path, sirst: list[np.ndarray]) -> None:
    from typer.testing import CliRunner

    from cli import inf30_app

    ds = make_dataset(tmp_path / "ds", [("orig", sirst[0]), ("crop", crop(sirst[0], 0.8)), ("other", sirst[3])])
    res = CliRunner().invoke(inf30_app, ["dedupe", str(ds), "--workers", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert "kept" in res.output and by_origin(ds).at["crop", "status"] == "dropped"
    res = CliRunner().invoke(inf30_app, ["dedupe", str(tmp_path / "missing"), "-q"])
    assert res.exit_code == 2 and "error: no manifest" in res.output
    res = CliRunner().invoke(inf30_app, ["dedupe", str(ds), "--hashes", "nope", "-q"])
    assert res.exit_code == 2 and "unknown hash" in res.output
