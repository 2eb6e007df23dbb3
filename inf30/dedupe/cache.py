"""Per-image scene features (and hashes computed at dedupe) cached under ``DIR/dedupe/cache/``: computed
once per image through a distributor, resumable, mergeable across shards."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from inf30.atomic import atomic_path, link_or_copy_atomic
from inf30.dedupe.options import DedupeOptions
from inf30.hashing import compute_hashes
from inf30.scene import EMPTY, LocalFeatures, SceneParams, extract_features

DEDUPE_DIR = "dedupe"
CACHE_DIR = "cache"
CHUNK = 512  # images per cache chunk


def read_gray(path: Path) -> np.ndarray | None:
    """The image at ``path`` as (H, W) uint8 grey, or None where OpenCV cannot read it."""
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
    gray = read_gray(Path(path))
    if gray is None or gray.size == 0:
        return ident, EMPTY, {}, False
    hashes = compute_hashes(gray, kinds) if kinds else {}
    return ident, extract_features(gray, params), hashes, True


class FeatureCache:
    """Per-image scene features (and hashes computed at dedupe) under ``DIR/dedupe/cache/<feature key>/``.

    Each chunk of up to :data:`CHUNK` images is four files written atomically: ``<name>.desc.npy`` (sum N,
    32) uint8, ``<name>.xy.npy`` (sum N, 2) float16, ``<name>.thumb.npy`` (sum h*w,) uint8 (the thumbnails,
    flattened), and last ``<name>.meta.npz`` (ids, offsets, thumbnail offsets, shapes and scales, hashes,
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
                thumbs = np.load(self.dir / f"{name}.thumb.npy", mmap_mode="r")
                ids, offs, ok = meta["ids"], meta["offsets"], meta["readable"]
                t_offs, t_hw, t_scale = meta["thumb_offsets"], meta["thumb_hw"], meta["thumb_scale"]
            except (OSError, ValueError, KeyError):
                continue  # a damaged chunk is recomputed
            hash_cols = {k[5:]: meta[k] for k in meta.files if k.startswith("hash_")}
            for n, ident in enumerate(ids.tolist()):
                if ident in self.feats or ident in self.unreadable:
                    continue
                if not ok[n]:
                    self.unreadable.add(ident)
                    continue
                a, b = int(offs[n]), int(offs[n + 1])
                if b > a:
                    (th, tw), ta = t_hw[n], int(t_offs[n])
                    thumb = np.asarray(thumbs[ta : ta + th * tw]).reshape(th, tw)
                    self.feats[ident] = LocalFeatures(xy[a:b], desc[a:b], thumb, float(t_scale[n]))
                else:
                    self.feats[ident] = EMPTY
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
        t_hw = np.array([x[1].thumb.shape for x in items], np.int64).reshape(-1, 2)
        t_offs = np.concatenate([[0], np.cumsum(t_hw[:, 0] * t_hw[:, 1])]).astype(np.int64)
        thumbs = np.concatenate([np.asarray(x[1].thumb, np.uint8).ravel() for x in items])
        kinds = sorted({k for x in items for k in x[2]})
        extra = {f"hash_{k}": np.array([x[2].get(k, "") for x in items]) for k in kinds}
        for suffix, arr in (("desc", desc), ("xy", xy), ("thumb", thumbs)):
            with atomic_path(self.dir / f"{name}.{suffix}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
        with atomic_path(self.dir / f"{name}.meta.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f, ids=np.array(ids), offsets=offsets, readable=np.array([x[3] for x in items]),
                    thumb_offsets=t_offs, thumb_hw=t_hw,
                    thumb_scale=np.array([x[1].thumb_scale for x in items], np.float64), **extra
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
            files = [meta.parent / f"{name}.{s}" for s in ("desc.npy", "xy.npy", "thumb.npy", "meta.npz")]
            if not all(f.exists() for f in files):
                continue
            (dst_root / key).mkdir(parents=True, exist_ok=True)
            for f in files:  # meta last: it marks the chunk complete
                link_or_copy_atomic(f, dst_root / key / f.name)
