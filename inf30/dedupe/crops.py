"""Crop search: the last test of stage 3, for the images no link puts in a group (lone images).

A curated crop of a low-texture frame (a flat sky with one target, a cloud edge, a horizon) is re-gained,
resized and saved as JPEG; its ORB keypoints then sit on noise and block edges, so neither the ORB test nor the
photometric test (which needs a few right ORB matches for its hypothesis) links it to its frame. The crop
search needs no keypoints: it slides the lone image's thumbnail over the thumbnails of its candidates that are
in a group and of their groups' anchors, at 14 sizes from 0.4 to 1 of the anchor's long side (crops of about 20 % of the frame
and up), and scores each placement by the zero-mean correlation of the two normalized gradient fields
(:func:`gradient_field`, OpenCV's ``TM_CCOEFF_NORMED`` over the 2 channels). Gradient directions survive
any monotonic gain change; the zero mean removes a sky's smooth brightness ramp, which every sky shares. A
lone image whose best placement scores at least ``crop_corr`` joins that image's group as a leaf (a weak
link). Coarse to fine: every second size at half resolution, then the best size and the sizes within a
step of it at full thumbnail resolution in a window of +-:data:`FINE_WINDOW` px, only where the coarse
score reaches :data:`COARSE_EXIT`. Measured in docs/benchmarks.md (issue 17, fifth step): the same scores as the
full-resolution search at a fraction of its cost.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd

from inf30.dedupe.verify import run_pair_chunks
from inf30.distribute import Distributor
from inf30.scene import LocalFeatures, normalized_gradients, smoothed_gradients

SCALES = np.exp(np.linspace(np.log(0.4), np.log(1.0), 14))  # template long side / anchor long side
COARSE = 0.5  # resolution of the first pass, relative to the thumbnails
COARSE_STEP = 2  # the first pass tries every COARSE_STEP-th size; the second its neighbours within that step
FINE_WINDOW = 4  # px (thumbnail) around the coarse position searched at full resolution
MIN_TEMPLATE = 8  # px: smaller templates are not tried
COARSE_EXIT = 0.5  # a pair whose best coarse placement scores lower is not refined (no pair that reaches 0.8 did)
FLAT_GRADIENT = 0.01  # gray levels per px: an image whose gradients all stay below this has no field
MIN_FIELD_STD = 0.05  # a field more uniform than this is not searched (real thumbnails: 0.08 to 0.5, median 0.38)
CHUNK = 64  # pairs per task (sorted by lone image: its template fields are computed once per task)


class CropMatch(NamedTuple):
    """Best placement of a small image inside a large one: ``score`` (zero-mean gradient-field correlation,
    -1 where nothing was tried), ``scale`` (the small image's long side / the large one's) and the top-left
    corner ``x``, ``y`` in the large thumbnail's pixels."""

    score: float
    scale: float
    x: int
    y: int


NO_CROP = CropMatch(-1.0, 0.0, 0, 0)


def gradient_field(img: np.ndarray) -> np.ndarray:
    """(h, w) image -> (h, w, 2) float32 field: Sobel gradients of the image smoothed by a Gaussian of sigma
    1 px, each divided by (its magnitude + the median magnitude of the image), so that strong edges and
    texture weigh alike and flat regions little; zeros for a flat image (which :func:`locate_crop` never
    matches: OpenCV would score a zero template 1 everywhere)."""
    gx, gy = smoothed_gradients(img)
    mag = np.hypot(gx, gy)
    if float(mag.max()) < FLAT_GRADIENT:  # a flat image: no field (its rounding noise would score at random)
        return np.zeros((*mag.shape, 2), np.float32)
    return cv2.merge(list(normalized_gradients(gx, gy, mag)))


def _resized(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """float32 copy of ``img`` at (w, h) px (area interpolation when it shrinks)."""
    shrink = w < img.shape[1]
    return cv2.resize(np.asarray(img, np.float32), (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _template_size(small: np.ndarray, large_shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """(w, h) of ``small`` resized so its long side is ``scale`` times the long side of ``large_shape``."""
    k = scale * max(large_shape) / max(small.shape)
    return max(1, round(small.shape[1] * k)), max(1, round(small.shape[0] * k))


class FieldCache:
    """Gradient fields of resized thumbnails, kept by (image key, width, height): a lone image is searched
    over many anchors and an anchor hosts many lone images, so each field is computed once per chunk."""

    def __init__(self) -> None:
        self.fields: dict[tuple, np.ndarray] = {}

    def __call__(self, key: object, img: np.ndarray, w: int, h: int) -> np.ndarray:
        k = (key, w, h)
        if k not in self.fields:
            self.fields[k] = gradient_field(img if (w, h) == (img.shape[1], img.shape[0]) else _resized(img, w, h))
        return self.fields[k]


def locate_crop(small: np.ndarray, large: np.ndarray, cache: FieldCache | None = None,
                keys: tuple[object, object] = ("small", "large")) -> CropMatch:
    """Where ``small`` (h, w) gray thumbnail best matches a region of ``large`` (H, W), at the sizes of
    :data:`SCALES`: a :class:`CropMatch` (:data:`NO_CROP` when no size fits or an image is tiny). A pair
    whose best coarse placement scores below :data:`COARSE_EXIT` is not refined: its score is the coarse one
    (far below any useful threshold). ``cache`` (with ``keys`` naming the two images) shares fields across
    calls."""
    if min(small.shape) < MIN_TEMPLATE or min(large.shape) < 2 * MIN_TEMPLATE:
        return NO_CROP
    field_of = cache or FieldCache()
    ks, kl = keys
    ch, cw = max(1, round(large.shape[0] * COARSE)), max(1, round(large.shape[1] * COARSE))
    field = field_of(kl, large, cw, ch)
    if float(field.std()) < MIN_FIELD_STD:
        return NO_CROP  # a flat or featureless image hosts no crop
    best, best_k, best_xy = -2.0, -1, (0, 0)
    for k in range(0, len(SCALES), COARSE_STEP):
        tw, th = _template_size(small, (ch, cw), SCALES[k])
        if min(tw, th) < MIN_TEMPLATE // 2 or th > ch or tw > cw:
            continue
        tpl = field_of(ks, small, tw, th)
        if float(tpl.std()) < MIN_FIELD_STD:
            continue  # OpenCV scores a constant template 1 everywhere: a flat or pure-ramp image is no crop
        _, v, _, loc = cv2.minMaxLoc(cv2.matchTemplate(field, tpl, cv2.TM_CCOEFF_NORMED))
        if v > best:
            best, best_k, best_xy = v, k, loc
    if best_k < 0:
        return NO_CROP
    if best < COARSE_EXIT:
        return CropMatch(float(best), float(SCALES[best_k]), round(best_xy[0] / COARSE), round(best_xy[1] / COARSE))
    field = field_of(kl, large, large.shape[1], large.shape[0])
    out = NO_CROP
    x0, y0 = round(best_xy[0] / COARSE), round(best_xy[1] / COARSE)
    for k in range(max(0, best_k - COARSE_STEP), min(len(SCALES), best_k + COARSE_STEP + 1)):
        tw, th = _template_size(small, large.shape, SCALES[k])
        if min(tw, th) < MIN_TEMPLATE or th > large.shape[0] or tw > large.shape[1]:
            continue
        xa, ya = max(0, x0 - FINE_WINDOW), max(0, y0 - FINE_WINDOW)
        xb, yb = min(large.shape[1] - tw, x0 + FINE_WINDOW), min(large.shape[0] - th, y0 + FINE_WINDOW)
        if xb < xa or yb < ya:
            continue
        tpl = field_of(ks, small, tw, th)
        if float(tpl.std()) < MIN_FIELD_STD:
            continue
        _, v, _, loc = cv2.minMaxLoc(cv2.matchTemplate(field[ya : yb + th, xa : xb + tw], tpl, cv2.TM_CCOEFF_NORMED))
        if np.isfinite(v) and v > out.score:
            out = CropMatch(float(v), float(SCALES[k]), xa + loc[0], ya + loc[1])
    return out


def _search_chunk(args: tuple[list[tuple[int, int]], dict[int, np.ndarray]]) -> list[CropMatch]:
    """Crop matches of a chunk of (small, large) image pairs (keys of the thumbnails ``thumbs``) on one core,
    each field computed once."""
    cv2.setNumThreads(1)
    pairs, thumbs = args
    cache = FieldCache()
    return [locate_crop(thumbs[y], thumbs[z], cache, (y, z)) for y, z in pairs]


def search_crops(feats: list[LocalFeatures], pairs: pd.DataFrame, dist: Distributor | None = None,
                 workers: int = 1, progress: bool = False) -> pd.DataFrame:
    """:func:`locate_crop` of image ``y``'s thumbnail inside image ``z``'s for each row of ``pairs``
    (columns y, z index ``feats``), in chunks of :data:`CHUNK` pairs through ``dist`` (ordered; default
    ``workers`` local processes). Returns columns score (float32), scale (float32), in the rows' order; the
    same for any worker count."""
    todo = list(zip(pairs["y"].to_numpy().tolist(), pairs["z"].to_numpy().tolist(), strict=True))
    if not todo:
        return pd.DataFrame({"score": np.zeros(0, np.float32), "scale": np.zeros(0, np.float32)})
    chunks = [todo[s : s + CHUNK] for s in range(0, len(todo), CHUNK)]
    tasks = [(c, {k: feats[k].thumb for pair in c for k in pair}) for c in chunks]
    out: list[CropMatch] = run_pair_chunks(_search_chunk, tasks, len(todo), dist, workers, progress, "crop search",
                                           "the crop search")
    return pd.DataFrame({"score": np.array([m.score for m in out], np.float32),
                         "scale": np.array([m.scale for m in out], np.float32)})


def crop_links(pairs: pd.DataFrame, found: pd.DataFrame, rank: np.ndarray, min_score: float) -> pd.DataFrame:
    """Each lone image's best crop match (``pairs`` y, z, similarity and their ``found`` score, scale) with a
    score of at least ``min_score`` (ties: the anchor first in ``rank``), as stage 3 weak links: columns i,
    j (i < j), stage, evidence, hamming, inliers, similarity, weak, like :func:`~inf30.dedupe.find_edges`."""
    d = pd.concat([pairs.reset_index(drop=True), found.reset_index(drop=True)], axis=1)
    d = d[d["score"].to_numpy() >= min_score].assign(zrank=lambda t: rank[t["z"].to_numpy()])
    d = d.sort_values(["y", "score", "zrank"], ascending=[True, False, True], kind="stable").drop_duplicates("y")
    y, z = d["y"].to_numpy(np.int64), d["z"].to_numpy(np.int64)
    return pd.DataFrame({
        "i": np.minimum(y, z), "j": np.maximum(y, z), "stage": 3,
        "evidence": [f"crop search: corr={s:.3f},scale={k:.2f}" for s, k in zip(d["score"], d["scale"], strict=True)],
        "hamming": -1, "inliers": -1, "similarity": d["similarity"].to_numpy(), "weak": True,
    })
