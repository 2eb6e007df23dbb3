"""Scene-level near-duplicates: ORB local features, a bag-of-visual-words global descriptor for candidate
search, and geometric verification (ratio-test matches + RANSAC similarity transform) of candidate pairs.

Why these choices (numbers in docs/dedupe.md): global perceptual hashes do not separate overlapping video
frames or crops from unrelated images on real infrared data; local features with geometric verification do.
ORB is used (not SIFT) because it runs at well over 100 images/s per core on 640x512 frames when computed on a
working copy whose long side is :attr:`SceneParams.side` pixels; the image is histogram-equalized first so
that gain/AGC/brightness changes do not move the keypoints. The global descriptor is a Hellinger-normalized
histogram of visual words (k-means centres of ORB descriptors): it keeps most of its mass under crops, shifts,
zooms and small rotations, which a global thumbnail or hash does not, and it is a short dense float vector
that faiss indexes at any scale. Pairs with too few ORB inliers get a second, photometric test: a similarity
from their few matches must align the two cached thumbnails' gradient directions (which gain changes do not
move); it links crops of low-texture skies that ORB alone cannot (issue 17).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

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
    photo_corr: float = option(0.75, "Stage 3: a pair that fails min-inliers is still the same scene when a similarity "
                                     "with at least photo-inliers inliers aligns the two thumbnails' gradient fields "
                                     "to this agreement (0 = off; for low-texture and re-gained crops).")
    photo_inliers: int = option(8, "Stage 3: inliers a similarity needs before the thumbnails are compared under it.")
    strong_inliers: int = option(60, "Stage 3: an ORB link with fewer inliers is weak, like a photometric one: it joins "
                                     "a lone image to a group but never joins two groups (0 = every ORB link is strong).")
    crop_corr: float = option(0.80, "Stage 3: a lone image (in no group after every other test) joins the group of a "
                                    "grouped candidate or its anchor when its thumbnail, searched over that image's at 0.4 "
                                    "to 1 of its size, matches a region's gradient field to this zero-mean correlation "
                                    "(a crop of a low-texture frame; 0 = off; a weak link).")

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
            (0.0 <= self.photo_corr <= 1.0, f"photo corr must be in 0..1 (0 = off), got {self.photo_corr}"),
            (0.0 <= self.crop_corr <= 1.0, f"crop corr must be in 0..1 (0 = off), got {self.crop_corr}"),
            (self.photo_inliers >= 3, f"photo inliers must be at least 3, got {self.photo_inliers}"),
            (self.strong_inliers >= 0, f"strong inliers must be 0 or more, got {self.strong_inliers}"),
        )
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def feature_key(self) -> str:
        """Short hash of the parameters that change the cached features (not the verification ones)."""
        keys = {k: v for k, v in asdict(self).items() if k in ("side", "nfeatures", "fast_threshold")}
        keys["thumb"] = THUMB_SIDE  # caches without thumbnails (before issue 17) are recomputed
        if self.clahe:  # absent at its default: caches written before the option existed stay valid
            keys["clahe"] = self.clahe
        return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]


THUMB_SIDE = 128  # long side (px) of the thumbnail kept with the features for the photometric check
NO_THUMB = np.zeros((0, 0), np.uint8)


@dataclass
class LocalFeatures:
    """ORB features of one image: ``xy`` (N, 2) float32 keypoint positions in working-copy pixels,
    ``desc`` (N, 32) uint8 binary descriptors (256 bits). N is 0 for images too small or flat. ``thumb``
    (h, w) uint8: the gray working copy (not equalized) shrunk to a long side of at most :data:`THUMB_SIDE`,
    ``thumb_scale`` its pixels per working-copy pixel (0 and an empty thumb: none)."""

    xy: np.ndarray
    desc: np.ndarray
    thumb: np.ndarray = field(default_factory=lambda: NO_THUMB)
    thumb_scale: float = 0.0

    @property
    def usable(self) -> bool:
        return len(self.xy) > 0


EMPTY = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))


def _shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """(H, W) uint8 -> contiguous copy whose long side is at most ``side`` px (area interpolation)."""
    h, w = gray.shape[:2]
    scale = side / max(h, w)
    if scale < 1.0:
        gray = cv2.resize(
            gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return np.ascontiguousarray(gray)


def _equalize(gray: np.ndarray, clahe: float = 0.0) -> np.ndarray:
    """Global histogram equalization of (H, W) uint8, or CLAHE (8 x 8 tiles) with clip limit ``clahe`` > 0."""
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
        raw = _shrink(np.asarray(gray, dtype=np.uint8), p.side)
        img = _equalize(raw, p.clahe)
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
    thumb = _shrink(raw, THUMB_SIDE)
    return LocalFeatures(np.ascontiguousarray(xy), np.ascontiguousarray(desc[order], dtype=np.uint8),
                         thumb, thumb.shape[1] / raw.shape[1])


class PairCheck(NamedTuple):
    """Result of :func:`verify_pair`: ``inliers`` of the best similarity found, ``corr`` the thumbnails'
    gradient-field agreement under it (nan where not computed) and the decision ``same`` (one scene)."""

    inliers: int
    corr: float
    same: bool


NO_MATCH = PairCheck(0, float("nan"), False)
PHOTO_RATIO = 0.9  # ratio test of the matches the photometric check draws its hypotheses from
PHOTO_MIN_OVERLAP = 200  # thumbnail pixels the two images must share under a hypothesis
PHOTO_HYPOTHESES = 3  # distinct similarity hypotheses per matching direction (most inliers first)
PHOTO_REVERSE_KEYPOINTS = 128  # b -> a matching: b's strongest descriptors only (as good, half the time)
PHOTO_MAX_ROTATION = 6.0  # degrees: re-cuts and re-saves keep the frame's orientation (rotated pairs need test 1)


def _knn2(query: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two nearest rows of ``base`` (M, 32) uint8 for each row of ``query`` (N, 32): Hamming distances
    and indices (N, 2), exact (faiss binary flat index; 4x faster than OpenCV's BFMatcher.knnMatch on 500 x
    500 ORB descriptors, with the same distances); index -1 where base has fewer than two rows."""
    index = faiss.IndexBinaryFlat(query.shape[1] * 8)
    index.add(np.ascontiguousarray(base, dtype=np.uint8))
    return index.search(np.ascontiguousarray(query, dtype=np.uint8), 2)


def _photo_hypotheses(a: LocalFeatures, b: LocalFeatures, dist: np.ndarray, nn: np.ndarray,
                      p: SceneParams) -> list[tuple[np.ndarray, int]]:
    """Similarity hypotheses a -> b (working-copy pixels) from the ratio-:data:`PHOTO_RATIO` matches of a's
    descriptors in b's (``dist``, ``nn`` from :func:`_knn2`), with at least ``photo_inliers`` inliers and at
    most :data:`PHOTO_MAX_ROTATION` degrees of rotation, most inliers first."""
    loose = np.flatnonzero((nn[:, 1] >= 0) & (dist[:, 0] < PHOTO_RATIO * dist[:, 1]))
    loose = loose[np.argsort(dist[loose, 0], kind="stable")]  # a fixed order: closest descriptors first
    if len(loose) < p.photo_inliers:
        return []
    return [(m, n) for m, n in similarity_hypotheses(a.xy[loose], b.xy[nn[loose, 0]], p.ransac_px, p.max_scale,
                                                     min_count=p.photo_inliers)
            if n >= p.photo_inliers and abs(np.degrees(np.arctan2(m[1, 0], m[0, 0]))) <= PHOTO_MAX_ROTATION]


def verify_pair(a: LocalFeatures, b: LocalFeatures, params: SceneParams | None = None) -> PairCheck:
    """Geometric verification of two images, in two tests.

    1. Ratio-test matches of their ORB descriptors, then a RANSAC similarity transform (rotation, uniform
       scale, translation): the same scene when it has ``min_inliers`` inliers forming ``min_inlier_ratio``
       of the matches, at a plausible scale.
    2. Otherwise (``photo_corr`` > 0, both with thumbnails): similarities of at least ``photo_inliers``
       inliers and at most :data:`PHOTO_MAX_ROTATION` degrees of rotation, from a scale-bounded RANSAC of
       looser matches in both directions (a -> b first, then b's :data:`PHOTO_REVERSE_KEYPOINTS` strongest
       descriptors -> a, up to :data:`PHOTO_HYPOTHESES` each),
       each overlay the two thumbnails, and the same scene is a gradient-field agreement
       (:func:`thumb_correlation`) of at least ``photo_corr`` over the overlap. This catches crops of
       low-texture skies and strongly re-gained crops, whose few ORB matches are right but too few: gradient
       directions do not change under any monotonic gain change; an unrelated pair rarely aligns, as its
       hypotheses come from chance matches.

    Returns a :class:`PairCheck`; :data:`NO_MATCH` when either image has no features. Deterministic (fixed
    RANSAC seeds).
    """
    p = params or SceneParams()
    if len(a.desc) < 2 or len(b.desc) < 2:
        return NO_MATCH
    dist, nn = _knn2(a.desc, b.desc)  # the two nearest descriptors of b for each of a, then Lowe's ratio test
    best = 0
    good = np.flatnonzero((nn[:, 1] >= 0) & (dist[:, 0] < p.ratio * dist[:, 1]))
    if len(good) >= max(3, p.min_inliers // 2):
        src = np.asarray(a.xy[good], dtype=np.float32)
        dst = np.asarray(b.xy[nn[good, 0]], dtype=np.float32)
        cv2.setRNGSeed(0)
        model, mask = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=p.ransac_px, maxIters=2000, confidence=0.995
        )
        if model is not None and mask is not None:
            scale = float(np.hypot(model[0, 0], model[1, 0]))
            inliers = int(mask.sum())
            if 1.0 / p.max_scale <= scale <= p.max_scale and inliers >= p.min_inlier_ratio * len(good):
                if inliers >= p.min_inliers:
                    return PairCheck(inliers, float("nan"), True)
                best = inliers
    if not p.photo_corr or not a.thumb.size or not b.thumb.size:
        return PairCheck(best, float("nan"), False)
    corr, n_best = float("nan"), best
    for direction in (0, 1):
        if direction == 0:
            hyps = _photo_hypotheses(a, b, dist, nn, p)
        else:  # b -> a: other matches pass the ratio test; the models are inverted to map a -> b
            head = LocalFeatures(b.xy[:PHOTO_REVERSE_KEYPOINTS], b.desc[:PHOTO_REVERSE_KEYPOINTS])
            hyps = [(cv2.invertAffineTransform(m), n)
                    for m, n in _photo_hypotheses(head, a, *_knn2(head.desc, a.desc), p)]
        for model, n in hyps:
            c = thumb_correlation(a, b, model)
            if c == c and not c <= corr:  # a number, above the best so far (or the first)
                corr, n_best = c, n
                if c >= p.photo_corr:
                    return PairCheck(n, c, True)
    return PairCheck(n_best, corr, False)


def similarity_hypotheses(
    src: np.ndarray, dst: np.ndarray, px: float, max_scale: float, n_samples: int = 256, top: int = PHOTO_HYPOTHESES,
    min_count: int = 3,
) -> list[tuple[np.ndarray, int]]:
    """RANSAC of a similarity dst ~ s R src + t from point matches (M, 2), best first, with the scale bounded
    to [1/max_scale, max_scale] inside the sampling (OpenCV's estimator would return a degenerate best model).
    ``n_samples`` random pairs of matches are the minimal samples.
    Returns up to ``top`` distinct models (2, 3) float64 refit on their inliers (reprojection error < ``px``),
    most inliers first, with their inlier counts; samples with fewer than ``min_count`` inliers are not
    considered. Deterministic (seed 0)."""
    m = len(src)
    if m < 2:
        return []
    s = src[:, 0].astype(np.float64) + 1j * src[:, 1]
    d = dst[:, 0].astype(np.float64) + 1j * dst[:, 1]
    rng = np.random.default_rng(0)
    i1, i2 = rng.integers(0, m, n_samples), rng.integers(0, m, n_samples)
    ok = np.abs(s[i1] - s[i2]) > 2 * px  # two distinct points, far enough apart to fix a scale
    i1, i2 = i1[ok], i2[ok]
    z = (d[i2] - d[i1]) / (s[i2] - s[i1])  # z = s * exp(i theta): the similarity as a complex number
    ok = (np.abs(z) >= 1.0 / max_scale) & (np.abs(z) <= max_scale)
    z, t = z[ok], (d[i1] - z * s[i1])[ok]
    if not len(z):
        return []
    zr32, zi32 = z.real.astype(np.float32)[:, None], z.imag.astype(np.float32)[:, None]
    sx, sy = src[:, 0].astype(np.float32), src[:, 1].astype(np.float32)
    rx = zr32 * sx - zi32 * sy + (t.real.astype(np.float32)[:, None] - dst[:, 0].astype(np.float32))
    ry = zi32 * sx + zr32 * sy + (t.imag.astype(np.float32)[:, None] - dst[:, 1].astype(np.float32))
    inl = rx * rx + ry * ry < np.float32(px * px)  # (H, M) reprojection error below px
    count = inl.sum(1)
    if count.max() < min_count:
        return []
    out: list[tuple[np.ndarray, int]] = []
    taken: list[complex] = []
    for h in np.argsort(-count, kind="stable"):
        if len(out) >= top or count[h] < max(3, min_count):
            break
        if any(abs(z[h] - zz) < 0.05 * abs(zz) and abs(t[h] - tt) < 2 * px for zz, tt in taken):
            continue  # the same model as one already taken
        taken.append((z[h], t[h]))
        ss, dd = s[inl[h]], d[inl[h]]  # least-squares similarity on the inliers
        sm, dm = ss.mean(), dd.mean()
        zr = np.vdot(ss - sm, dd - dm) / max(float(np.vdot(ss - sm, ss - sm).real), 1e-9)
        tr = dm - zr * sm
        r = zr * s + tr - d
        n = int((r.real**2 + r.imag**2 < px * px).sum())
        if not (1.0 / max_scale <= abs(zr) <= max_scale) or n < count[h]:
            zr, tr, n = z[h], t[h], int(count[h])
        out.append((np.array([[zr.real, -zr.imag, tr.real], [zr.imag, zr.real, tr.imag]]), n))
    return out


def smoothed_gradients(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel gradients (x, y) float32 of an image (h, w) smoothed by a Gaussian of sigma 1 px."""
    t = cv2.GaussianBlur(np.asarray(img, np.float32), (0, 0), 1.0)
    return cv2.Sobel(t, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(t, cv2.CV_32F, 0, 1, ksize=3)


def normalized_gradients(gx: np.ndarray, gy: np.ndarray, mag: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gradients (any shape, float32) each divided by (its magnitude ``mag``, computed when not given, + the
    median magnitude + 1e-3): strong edges and texture weigh alike, flat regions little (the fields of
    :func:`thumb_correlation` and of the crop search)."""
    mag = np.hypot(gx, gy) if mag is None else mag
    norm = mag + float(np.median(mag)) + 1e-3
    return gx / norm, gy / norm


def thumb_correlation(a: LocalFeatures, b: LocalFeatures, model: np.ndarray) -> float:
    """Agreement of the thumbnails' normalized gradient fields where ``model`` (2, 3), which maps a's
    working-copy pixels to b's, overlays them (a warped onto b; 7 px of border dropped): each gradient g
    becomes g / (|g| + median |g| of its image over the overlap), and the score is the correlation of the two
    vector fields, sum(ua . ub) / sqrt(sum |ua|^2 sum |ub|^2), in [-1, 1]. Gradient directions survive any
    monotonic gain change (AGC, gamma, percentile stretch); flat regions weigh little. nan when the images
    share fewer than :data:`PHOTO_MIN_OVERLAP` thumbnail pixels."""
    m = np.array(model, dtype=np.float64)
    m[:, :2] *= b.thumb_scale / a.thumb_scale  # thumbnail of a -> thumbnail of b
    m[:, 2] *= b.thumb_scale
    h, w = b.thumb.shape
    warped = cv2.warpAffine(np.asarray(a.thumb, np.float32), m, (w, h), flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(np.ones(a.thumb.shape, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
    keep = cv2.erode(cover, np.ones((7, 7), np.uint8)) > 0
    if int(keep.sum()) < PHOTO_MIN_OVERLAP:
        return float("nan")
    fields = []
    for img in (warped, b.thumb):
        fields.append(normalized_gradients(*(g[keep] for g in smoothed_gradients(img))))
    (ax, ay), (bx, by) = fields
    den = float(np.sqrt((np.dot(ax, ax) + np.dot(ay, ay)) * (np.dot(bx, bx) + np.dot(by, by))))
    return float((np.dot(ax, bx) + np.dot(ay, by)) / den) if den > 0 else float("nan")


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
