"""Dedupe speed and scale.

1. Hashing: our ``compute_hashes`` (pHash) vs imagededup's PHash on the same real files in the same run,
   end to end from the file (decode + hash) and hash-only from already decoded arrays (the build's case: it
   hashes in its single decode pass). Prints images/s and the ratio, and the mean bit difference to
   imagehash's pHash.
2. Scene features (ORB on the working copy) in images/s on one core, on the 640x512 HIT-UAV frames.
3. Neighbour search at 10 K, 100 K and 1 M synthetic items: stage 2 range search over 64-bit hashes (faiss
   binary index) and stage 3 k-NN candidates over 256-d bag-of-words descriptors (faiss), with planted
   near-duplicates whose recovery is printed, wall time and peak memory.

4. Local-descriptor votes (the stage 3 candidates that find crops) at 10 K and 100 K synthetic images of
   ``vote_keypoints`` (128) random 256-bit descriptors each, with planted crops sharing 40 % of their
   descriptors (each with up to 20 flipped bits): search time per image, index size, planted pairs found.
5. Stage 3 on real images (``--stage3``): a curation mix (HIT-UAV frames and SIRST images, each with a
   synthetic variant and a 20-60 % curation crop, as in ``dedupe_quality.py``) through the dedupe's own
   ``find_edges`` with one process: candidate pairs per image, pairs verified lazily per image, photometric
   tests, second-hand pairs and crop searches per image, ms per pair, the projection of stage 3 verification
   at 1 M images in core-hours and its bound for a collection without duplicates (where the crop search
   never runs: no lone image has a grouped candidate), and the crop search's own worst case; for the given
   options (``--neighbors --votes --window --hops --lone-pairs --lone-crops``) and, in the same run, issue 17's
   third-step candidates (20, 10, 8).

    .venv/bin/python benchmarks/dedupe_scale.py [--sizes 10000,100000,1000000] [--skip-search]
    .venv/bin/python benchmarks/dedupe_scale.py --skip-hashing --skip-search --vote-sizes 10000,100000 --stage3 0.2
    .venv/bin/python benchmarks/dedupe_scale.py --skip-hashing --skip-search --stage3 0.25 [--window 4]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import cv2
import imagehash
import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inf30.dedupe import (  # noqa: E402
    DedupeOptions,
    DedupeSummary,
    candidate_pairs,
    find_edges,
    hex_to_codes,
    near_copy_pairs,
    vote_pairs,
)
from inf30.hashing import compute_hashes  # noqa: E402
from inf30.scene import LocalFeatures, SceneParams, extract_features  # noqa: E402


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def bench_hashing(data: Path, repeats: int = 2) -> None:
    from imagededup.methods import PHash

    files = sorted((data / "hit-uav" / "val").glob("*.jpg")) + sorted((data / "sirst" / "images").glob("*.png"))
    ph = PHash(verbose=False)
    cv2.setNumThreads(1)

    def ours_file() -> None:
        for f in files:
            compute_hashes(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))

    def theirs_file() -> None:
        for f in files:
            ph.encode_image(image_file=str(f))

    arrays = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]

    def ours_array() -> None:
        for a in arrays:
            compute_hashes(a)

    def theirs_array() -> None:
        for a in arrays:
            ph.encode_image(image_array=a)

    res = {}
    for name, fn in (("ours_file", ours_file), ("imagededup_file", theirs_file),
                     ("ours_array", ours_array), ("imagededup_array", theirs_array)):
        best = min(_timed(fn) for _ in range(repeats))
        res[name] = len(files) / best
    print(f"hashing {len(files)} real files (HIT-UAV val 640x512 JPEG + SIRST PNG), one process, best of {repeats}:")
    print(f"  file -> pHash : ours {res['ours_file']:7.0f} img/s, imagededup PHash {res['imagededup_file']:7.0f} img/s, "
          f"ratio {res['ours_file'] / res['imagededup_file']:.1f}x")
    print(f"  array -> pHash: ours {res['ours_array']:7.0f} img/s, imagededup PHash {res['imagededup_array']:7.0f} img/s, "
          f"ratio {res['ours_array'] / res['imagededup_array']:.1f}x")
    diff = [bin(int(compute_hashes(a)["phash"], 16) ^ int(str(imagehash.phash(Image.fromarray(a))), 16)).count("1")
            for a in arrays]
    print(f"  our pHash vs imagehash.phash: mean {np.mean(diff):.2f} bits differ of 64 (max {max(diff)})")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_features(data: Path) -> None:
    cv2.setNumThreads(1)
    files = sorted((data / "hit-uav" / "val").glob("*.jpg"))[:200]
    arrays = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    p = SceneParams()
    t_feat = _timed(lambda: [extract_features(a, p) for a in arrays])
    t_all = _timed(lambda: [extract_features(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), p) for f in files])
    print(f"scene features on {len(files)} HIT-UAV 640x512 frames, one process: {len(files) / t_feat:.0f} img/s "
          f"(from decoded arrays), {len(files) / t_all:.0f} img/s including JPEG decode")


def synthetic(n: int, rng: np.random.Generator, dim: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n hash codes (n, 8) uint8 and n descriptors (n, dim) float32 (L2-normalized, clustered like BoW
    histograms); items [0, n/100) have a planted near-duplicate at index i + n/2. Returns codes, desc, planted
    pairs (P, 2)."""
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    centres = np.abs(rng.standard_normal((1000, dim), dtype=np.float32))
    desc = centres[rng.integers(0, 1000, n)]
    for s in range(0, n, 65536):  # float32 in chunks: keep the benchmark's own memory small
        desc[s : s + 65536] += 0.8 * np.abs(rng.standard_normal((min(65536, n - s), dim), dtype=np.float32))
    p = n // 100
    src = np.arange(p)
    dst = src + n // 2
    flip = np.packbits((rng.random((p, 64)) < 0.05), axis=1)
    codes[dst] = codes[src] ^ flip
    desc[dst] = desc[src] + 0.15 * np.abs(rng.standard_normal((p, dim), dtype=np.float32))
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    return codes, desc, np.stack([src, dst], 1)


def found(pairs, planted: np.ndarray, n: int) -> float:
    """Share of planted pairs (P, 2) present in a pairs DataFrame (columns i < j)."""
    keys = pairs["i"].to_numpy(np.int64) * n + pairs["j"].to_numpy(np.int64)
    return float(np.isin(planted[:, 0].astype(np.int64) * n + planted[:, 1], keys).mean())


def bench_search(sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    print("\nneighbour search on synthetic items (2-core machine, shared):")
    print(f"{'N':>9} {'stage':>6} {'search s':>9} {'planted found':>13} {'peak GB':>8}")
    for n in sizes:
        t = time.perf_counter()
        codes, desc, planted = synthetic(n, rng)
        t_gen = time.perf_counter() - t
        t = time.perf_counter()
        nc = near_copy_pairs(codes, 8)
        t2 = time.perf_counter() - t
        r2 = found(nc, planted, n)
        print(f"{n:>9} {'2':>6} {t2:>9.1f} {r2:>13.3f} {peak_gb():>8.2f}   (64-bit hashes, range search <= 8 bits)",
              flush=True)
        t = time.perf_counter()
        cp = candidate_pairs(desc, np.ones(n, bool), 40, 0.0)
        t3 = time.perf_counter() - t
        r3 = found(cp, planted, n)
        print(f"{n:>9} {'3':>6} {t3:>9.1f} {r3:>13.3f} {peak_gb():>8.2f}   (256-d descriptors, 40-NN; "
              f"data generation {t_gen:.0f} s not counted)", flush=True)
        del codes, desc, nc, cp


def bench_votes(sizes: list[int], keypoints: int = 128) -> None:
    """Vote candidates on synthetic descriptors: items [0, n/100) have a planted crop at i + n/2 that shares
    40 % of its descriptors (each with up to 20 of 256 bits flipped)."""
    rng = np.random.default_rng(1)
    print(f"\nlocal-descriptor votes on synthetic images ({keypoints} descriptors each; 2-core machine, shared):")
    print(f"{'N':>9} {'search s':>9} {'ms/image':>9} {'index MB':>9} {'planted found':>13} {'pairs/image':>11}")
    for n in sizes:
        desc = rng.integers(0, 256, (n, keypoints, 32), dtype=np.uint8)
        p = n // 100
        share = int(0.4 * keypoints)
        flips = np.packbits(rng.random((p, share, 256)) < 20 / 256, axis=-1)
        desc[n // 2 : n // 2 + p, :share] = desc[:p, :share] ^ flips
        xy = np.zeros((keypoints, 2), np.float32)
        feats = [LocalFeatures(xy, desc[k]) for k in range(n)]
        t = time.perf_counter()
        pairs = vote_pairs(feats, top=10, keypoints=keypoints)
        dt = time.perf_counter() - t
        planted = np.stack([np.arange(p), np.arange(p) + n // 2], 1)
        # index size: the codes, their int64 ids in the inverted lists
        size_mb = n * keypoints * (32 + 8) / 1e6
        print(f"{n:>9} {dt:>9.1f} {1000 * dt / n:>9.2f} {size_mb:>9.0f} {found(pairs, planted, n):>13.3f} "
              f"{len(pairs) / n:>11.1f}", flush=True)
        del desc, feats, pairs
    print("index size at 1 M images: 1e6 x 128 x (32 B code + 8 B id) = 5.1 GB")


def bench_stage3(data: Path, fraction: float, opts: DedupeOptions) -> None:
    """Stage 3 on a real curation mix with one process: pairs and ms per pair, and the 1 M projection, for
    ``opts`` and, in the same run, for the candidates of issue 17's third step (20 index neighbours, 10 votes)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from dataclasses import replace

    from dedupe_quality import anchor_ranks, build_collection

    from inf30.dedupe import scene_candidates, search_crops, verify_candidates

    images, labels = build_collection(data, 0, fraction, True)
    n = len(images)
    cv2.setNumThreads(1)
    t = time.perf_counter()
    feats = [extract_features(im) for im in images]
    t_feat = time.perf_counter() - t
    codes, valid = hex_to_codes([[compute_hashes(im)["phash"] for im in images]])
    order_keys = [("variants/" if lab["aug"] != "orig" else "originals/") + lab["name"] for lab in labels]
    names = [lab["name"] for lab in labels]
    rank = anchor_ranks(images, names, opts.order)  # as dedupe_dataset: the photometric test only where it matters
    t = time.perf_counter()
    cand = scene_candidates(feats, opts, names, order_keys)
    t_cand = time.perf_counter() - t
    # verification alone, timed on a sample of the candidates (one process)
    sample = cand.iloc[:: max(1, len(cand) // 3000)]
    orb_params = replace(opts.scene_params, photo_corr=0.0)
    failing = sample[~verify_candidates(feats, sample, orb_params)["same"].to_numpy()]
    ms_orb, ms_fail_orb, ms_fail_full = [], [], []
    for _ in range(2):  # interleaved, best of 2: the ORB test, and on the pairs failing it with and without test 2
        for out, pairs, params in ((ms_orb, sample, orb_params), (ms_fail_orb, failing, orb_params),
                                   (ms_fail_full, failing, opts.scene_params)):
            t = time.perf_counter()
            verify_candidates(feats, pairs, params)
            out.append(1000 * (time.perf_counter() - t) / len(pairs))
    ms_orb, ms_full = min(ms_orb), min(ms_fail_full)
    ms_photo = ms_full - min(ms_fail_orb)  # the photometric test alone, on a pair failing the ORB test
    crop_sample = pd.DataFrame({"y": sample["i"].to_numpy()[:1000], "z": sample["j"].to_numpy()[:1000]})
    ms_crop = []
    for _ in range(2):
        t = time.perf_counter()
        search_crops(feats, crop_sample, workers=1)
        ms_crop.append(1000 * (time.perf_counter() - t) / len(crop_sample))
    ms_crop = min(ms_crop)

    print(f"\nstage 3 on {n} real images (curation mix, fraction {fraction}), one process, shared machine:")
    print(f"  features {1000 * t_feat / n:.1f} ms/image; candidates (vocabulary, index, votes, window) "
          f"{1000 * t_cand / n:.1f} ms/image")
    print(f"  ORB test {ms_orb:.2f} ms per pair; the photometric test adds {ms_photo:.2f} ms to a pair failing the "
          f"ORB test (both: {ms_full:.2f} ms); the crop search {ms_crop:.2f} ms per pair")
    hours = 1e6 / 3.6e6  # 1 M images, ms -> hours
    print("  projection at 1 M images: the same pairs per image and share of duplicates; the bound: a collection "
          "without duplicates\n  (no pair skipped, every pair fails the ORB test with an image alone: every "
          "candidate gets both tests)")
    print(f"  {'candidates':<44} {'pairs/img':>9} {'verified':>8} {'test 2':>7} {'round 2':>7} {'lone':>5} "
          f"{'crops':>5} {'ms/img':>7} {'core-h 1M':>9} {'bound':>6}")
    ref = replace(opts, neighbors=20, votes=10, window=8)
    for name, o in ((f"--neighbors {opts.neighbors} --votes {opts.votes} --window {opts.window} --hops {opts.hops}",
                     opts), ("issue 17 third step (20, 10, 8)", ref)):
        st = DedupeSummary()
        t = time.perf_counter()
        find_edges(codes, valid, feats, o, names, stats=st, order_keys=order_keys, rank=rank)
        t_edges = time.perf_counter() - t
        # every checked pair: the ORB test; the photometric test where asked; round 2 runs the ORB test again;
        # the second-hand pairs of lone images (counted apart) get both tests
        ms = (st.checked_pairs * ms_orb + st.photo_pairs * ms_photo + st.photo_retests * ms_orb
              + st.lone_checked * ms_full + st.crop_searched * ms_crop) / n
        bound = (st.candidate_pairs - st.expanded_pairs + st.lone_checked) / n * ms_full  # no links: no expansion
        print(f"  {name:<44} {st.candidate_pairs / n:9.1f} {st.checked_pairs / n:8.1f} {st.photo_pairs / n:7.1f} "
              f"{st.photo_retests / n:7.1f} {st.lone_checked / n:5.2f} {st.crop_searched / n:5.2f} {ms:7.1f} {hours * ms:9.2f} {hours * bound:6.2f}   "
              f"(find_edges {t_edges:.1f} s)")
    worst = min(opts.lone_crops, 4 * len(cand) / n)  # every image alone, each candidate (and its anchor) in a group
    print(f"  crop search worst case (every image alone, each candidate in a group of its own): {worst:.1f} pairs "
          f"per image, {hours * worst * ms_crop:.2f} core-hours at 1 M images (--lone-crops caps it)")
    print(f"  candidates (vocabulary, index, votes) {hours * 1000 * t_cand / n:.2f} core-hours at this size "
          f"(the votes' search grows with N, see above)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--hash-only", action="store_true")
    ap.add_argument("--skip-hashing", action="store_true")
    ap.add_argument("--vote-sizes", default="", help="sizes for the local-descriptor vote benchmark (e.g. 10000,100000)")
    ap.add_argument("--stage3", type=float, default=0.0, help="run stage 3 on this share of the real curation mix")
    d = DedupeOptions()
    ap.add_argument("--neighbors", type=int, default=d.neighbors, help="stage 3 run: index candidates per image")
    ap.add_argument("--votes", type=int, default=d.votes, help="stage 3 run: vote candidates per image")
    ap.add_argument("--window", type=int, default=d.window, help="stage 3 run: source-order candidates per image")
    ap.add_argument("--hops", type=int, default=d.hops, help="stage 3 run: group reach (0 = components)")
    ap.add_argument("--lone-pairs", type=int, default=d.lone_pairs, help="stage 3 run: second-hand pairs per lone image")
    ap.add_argument("--lone-crops", type=int, default=d.lone_crops, help="stage 3 run: anchors crop-searched per lone image")
    ap.add_argument("--expand", type=int, default=d.expand, help="stage 3 run: query expansion's vote matches (0 = off)")
    ap.add_argument("--vote-index-keypoints", type=int, default=d.vote_index_keypoints,
                    help="stage 3 run: descriptors per image in the vote index")
    args = ap.parse_args()
    if not args.skip_hashing:
        bench_hashing(args.data)
    if args.hash_only:
        return
    if not args.skip_hashing:
        bench_features(args.data)
    if not args.skip_search:
        bench_search([int(s) for s in args.sizes.split(",")])
    if args.vote_sizes:
        bench_votes([int(s) for s in args.vote_sizes.split(",")])
    if args.stage3:
        d = DedupeOptions(workers=1)
        bench_stage3(args.data, args.stage3, DedupeOptions(workers=1, neighbors=args.neighbors, votes=args.votes,
                                                            window=args.window, hops=args.hops,
                                                            lone_pairs=args.lone_pairs, lone_crops=args.lone_crops,
                                                            expand=args.expand,
                                                            vote_index_keypoints=args.vote_index_keypoints,
                                                            scene_params=d.scene_params))


if __name__ == "__main__":
    main()
