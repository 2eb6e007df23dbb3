"""Scene-level near-duplicates: ORB local features, a bag-of-visual-words global descriptor for candidate
search, and geometric verification (ratio-test matches + RANSAC similarity transform) of candidate pairs.

Why these choices (numbers in docs/dedupe.md): global perceptual hashes do not separate overlapping video
frames or crops from unrelated images on real infrared data; local features with geometric verification do.
ORB is used (not SIFT) because it runs at well over 100 images/s per core on 640x512 frames when computed on a
working copy whose long side is :attr:`SceneParams.side` pixels; the image is histogram-equalized first so
that gain/AGC/brightness changes do not move the keypoints. The global descriptor is a Hellinger-normalized
histogram of visual words (k-means centres of ORB descriptors): it keeps most of its mass under crops, shifts,
zooms and small rotations, which a global thumbnail or hash does not, and it is a short dense float vector
that faiss indexes at any scale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import cv2
import faiss
import numpy as np

from inf30.errors import UsageError
from inf30.options import option


@dataclass(frozen=True)
class SceneParams:
    """Parameters of the scene features and of the pair verification; each field's help is the CLI's."""

    side: int = option(320, "Stage 3: long side (px) of the working copy ORB runs on (smaller images are not "
                            "upscaled).")
    nfeatures: int = option(500, "Stage 3: at most this many ORB keypoints per image.")
    fast_threshold: int = option(10, "Stage 3: FAST corner threshold on the equalized working copy.")
    min_keypoints: int = option(12, "Stage 3: an image with fewer keypoints has no scene features (stage 2 only).")
    ratio: float = option(0.8, "Stage 3: Lowe ratio test for descriptor matches.")
    ransac_px: float = option(4.0, "Stage 3: RANSAC reprojection threshold in working-copy pixels.")
    min_inliers: int = option(25, "Stage 3: RANSAC inliers to call a pair the same scene ...")
    min_inlier_ratio: float = option(0.35, "Stage 3: ... forming at least this share of the ratio-test matches.")
    max_scale: float = option(3.0, "Stage 3: the fitted similarity may scale by at most this (or its inverse).")
    clahe: float = option(0.0, "Stage 3: CLAHE clip limit (8 x 8 tiles) instead of global equalization "
                               "(0 = global; measured worse, docs/dedupe.md).")

    def validate(self) -> None:
        """:class:`inf30.errors.UsageError` (a ValueError) with a one-line message for a parameter out of range."""
        checks = (
            (self.side >= 32, f"side must be at least 32 px, got {self.side}"),
            (self.nfeatures >= 8, f"nfeatures must be at least 8, got {self.nfeatures}"),
            (1 <= self.fast_threshold <= 255, f"fast threshold must be in 1..255, got {self.fast_threshold}"),
            (self.min_keypoints >= 2, f"min keypoints must be at least 2, got {self.min_keypoints}"),
            (0.0 < self.ratio <= 1.0, f"ratio must be in (0, 1], got {self.ratio}"),
            (self.ransac_px > 0, f"ransac px must be positive, got {self.ransac_px}"),
            (self.min_inliers >= 4, f"min inliers must be at least 4, got {self.min_inliers}"),
            (0.0 <= self.min_inlier_ratio <= 1.0, f"min inlier ratio must be in 0..1, got {self.min_inlier_ratio}"),
            (self.max_scale >= 1.0, f"max scale must be at least 1, got {self.max_scale}"),
            (self.clahe >= 0.0, f"clahe must be 0 (off) or a positive clip limit, got {self.clahe}"),
        )
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def feature_key(self) -> str:
        """Short hash of the parameters that change the cached features (not the verification ones)."""
        keys = {k: v for k, v in asdict(self).items() if k in ("side", "nfeatures", "fast_threshold")}
        if self.clahe:  # absent at its default: caches written before the option existed stay valid
            keys["clahe"] = self.clahe
        return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class LocalFeatures:
    """ORB features of one image: ``xy`` (N, 2) float32 keypoint positions in working-copy pixels,
    ``desc`` (N, 32) uint8 binary descriptors (256 bits). N is 0 for images too small or flat."""

    xy: np.ndarray
    desc: np.ndarray

    @property
    def usable(self) -> bool:
        return len(self.xy) > 0


EMPTY = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))


def working_copy(gray: np.ndarray, side: int, clahe: float = 0.0) -> np.ndarray:
    """8-bit gray (H, W) -> equalized copy whose long side is at most ``side`` px (area interpolation);
    ``clahe`` > 0: adaptive equalization with that clip limit instead of global equalization."""
    gray = np.asarray(gray, dtype=np.uint8)
    h, w = gray.shape[:2]
    scale = side / max(h, w)
    if scale < 1.0:
        gray = cv2.resize(
            gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    gray = np.ascontiguousarray(gray)
    if clahe > 0:
        return cv2.createCLAHE(clipLimit=clahe, tileGridSize=(8, 8)).apply(gray)
    return cv2.equalizeHist(gray)


def extract_features(gray: np.ndarray, params: SceneParams | None = None) -> LocalFeatures:
    """ORB keypoints and descriptors of an 8-bit gray image (H, W). Never raises on tiny, flat or odd
    images: they get :data:`EMPTY` features (fewer than ``min_keypoints`` keypoints)."""
    p = params or SceneParams()
    try:
        gray = np.asarray(gray)
        if gray.ndim != 2 or min(gray.shape) < 16 or int(gray.max()) == int(gray.min()):
            return EMPTY
        img = working_copy(gray, p.side, p.clahe)
        edge = max(4, min(15, min(img.shape) // 4))
        orb = cv2.ORB_create(
            nfeatures=p.nfeatures, fastThreshold=p.fast_threshold, edgeThreshold=edge, patchSize=edge
        )
        kps, desc = orb.detectAndCompute(img, None)
    except cv2.error:
        return EMPTY
    if desc is None or len(kps) < p.min_keypoints:
        return EMPTY
    order = np.argsort([-k.response for k in kps], kind="stable")  # strongest first (candidate search uses a prefix)
    xy = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)[order]
    xy = xy.astype(np.float16).astype(np.float32)  # the cache stores float16: fresh == cached, bit for bit
    return LocalFeatures(np.ascontiguousarray(xy), np.ascontiguousarray(desc[order], dtype=np.uint8))


def verify_pair(a: LocalFeatures, b: LocalFeatures, params: SceneParams | None = None) -> int:
    """Geometric verification of two images: ratio-test matches of their ORB descriptors, then a RANSAC
    similarity transform (rotation, uniform scale, translation). Returns the inlier count (0 when either
    image has no features or the transform is implausible). Deterministic (fixed RANSAC seed)."""
    p = params or SceneParams()
    if len(a.desc) < 2 or len(b.desc) < 2:
        return 0
    # the two nearest descriptors of b for each descriptor of a (exact Hamming search; 4x faster than
    # OpenCV's BFMatcher.knnMatch on 500 x 500 ORB descriptors, with the same distances), then Lowe's ratio test
    index = faiss.IndexBinaryFlat(a.desc.shape[1] * 8)
    index.add(np.ascontiguousarray(b.desc, dtype=np.uint8))
    dist, nn = index.search(np.ascontiguousarray(a.desc, dtype=np.uint8), 2)
    good = np.flatnonzero((nn[:, 1] >= 0) & (dist[:, 0] < p.ratio * dist[:, 1]))
    if len(good) < max(3, p.min_inliers // 2):
        return 0
    src = np.asarray(a.xy[good], dtype=np.float32)
    dst = np.asarray(b.xy[nn[good, 0]], dtype=np.float32)
    cv2.setRNGSeed(0)
    model, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=p.ransac_px, maxIters=2000, confidence=0.995
    )
    if model is None or mask is None:
        return 0
    scale = float(np.hypot(model[0, 0], model[1, 0]))
    if not (1.0 / p.max_scale <= scale <= p.max_scale):
        return 0
    inliers = int(mask.sum())
    if inliers < p.min_inlier_ratio * len(good):
        return 0
    return inliers


def is_scene_duplicate(inliers: int, params: SceneParams | None = None) -> bool:
    """Decision rule on a :func:`verify_pair` result."""
    return inliers >= (params or SceneParams()).min_inliers


# ------------------------------------------------------------------------------------ global descriptor
def unpack_bits(desc: np.ndarray) -> np.ndarray:
    """(N, 32) uint8 ORB descriptors -> (N, 256) float32 of 0/1 bits."""
    return np.unpackbits(np.asarray(desc, dtype=np.uint8), axis=1).astype(np.float32)


class Vocabulary:
    """k visual words (centres in the 256-d bit space of ORB descriptors) and the bag-of-words encoder.

    ``centres`` (k, 256) float32. Trained deterministically (fixed seed, one thread) so the descriptor does
    not depend on the number of workers.
    """

    def __init__(self, centres: np.ndarray):
        self.centres = np.ascontiguousarray(centres, dtype=np.float32)
        self.index = faiss.IndexFlatL2(self.centres.shape[1])
        self.index.add(self.centres)

    @property
    def size(self) -> int:
        return len(self.centres)

    @classmethod
    def train(cls, desc: np.ndarray, k: int = 256, seed: int = 0, niter: int = 20) -> Vocabulary:
        """Train on (N, 32) uint8 descriptors (N should be at least 40 k; fewer -> k shrinks)."""
        x = unpack_bits(desc)
        k = max(1, min(k, len(x) // 40))
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            km = faiss.Kmeans(
                x.shape[1], k, niter=niter, seed=seed, verbose=False, max_points_per_centroid=1000
            )
            km.train(x)
        finally:
            faiss.omp_set_num_threads(threads)
        return cls(km.centroids)

    def encode(self, feats: list[LocalFeatures]) -> np.ndarray:
        """Images' features -> (M, k) float32 L2-normalized square-rooted word histograms (zero rows for
        images without features)."""
        out = np.zeros((len(feats), self.size), np.float32)
        counts = [len(f.desc) for f in feats]
        if sum(counts) == 0:
            return out
        allx = unpack_bits(np.concatenate([f.desc for f in feats if len(f.desc)]))
        _, words = self.index.search(allx, 1)
        owner = np.repeat(np.arange(len(feats)), counts)
        np.add.at(out, (owner, words[:, 0]), 1.0)
        out = np.sqrt(out)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out
