"""Infrared small-target detection metrics (paper Table 3), with the field's definitions (ACM / BasicIRSTD).

Per image, `update(prob_map [H, W] in [0, 1], gt_mask [H, W] bool)`; `compute()` over the set:

    iou   TP / (TP + FP + FN), pixels accumulated over the whole set (prediction = prob > 0.5)
    niou  mean over images of the per-image IoU (an image with an empty union scores 0, as in ACM's code)
    pd    detected targets / ground-truth targets. Targets and predictions are 8-connected components; a
          target is detected when a predicted component not yet matched has its centroid closer than 3 px
          to the target's centroid (targets in label order, first such component wins); each predicted
          component matches at most one target. Matching is by component identity: BasicIRSTD removes
          matched components by *area value*, so an unmatched blob with the same area as a matched one
          vanishes from its false alarms; this does not.
    fa    pixels of unmatched predicted components / all pixels
    f1    pixel-level F1 = 2 TP / (2 TP + FP + FN), accumulated over the set
    auc   pixel ROC AUC over thresholds: scores are binned into `bins` equal bins of [0, 1] per class (bounded
          memory: 2 x bins counters), the ROC runs through every bin edge, area by trapezoids. Exact when
          no bin holds scores of both classes at different values; otherwise off by at most the fraction of
          positive-negative pairs sharing a bin.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label, regionprops


class IRSTDMetrics:
    """Accumulates IoU, nIoU, P_d, F_a, F1 and AUC over a set of images (see the module docstring)."""

    def __init__(self, threshold: float = 0.5, distance: float = 3.0, bins: int = 10_000) -> None:
        self.threshold, self.distance, self.bins = threshold, distance, bins
        self.reset()

    def reset(self) -> None:
        self.tp = self.fp = self.fn = 0
        self.image_ious: list[float] = []
        self.targets = self.detected = 0
        self.false_pixels = self.pixels = 0
        self.pos_hist = np.zeros(self.bins, dtype=np.int64)
        self.neg_hist = np.zeros(self.bins, dtype=np.int64)

    def update(self, prob_map: np.ndarray, gt_mask: np.ndarray) -> None:
        """One image: prob_map [H, W] float in [0, 1], gt_mask [H, W] bool (same shape)."""
        prob = np.asarray(prob_map, dtype=np.float64)
        gt = np.asarray(gt_mask).astype(bool)
        if prob.ndim != 2 or prob.shape != gt.shape:
            raise ValueError(f"prob_map {prob.shape} and gt_mask {gt.shape} must be the same 2-D shape")
        if prob.size and (np.isnan(prob).any() or prob.min() < 0.0 or prob.max() > 1.0):
            raise ValueError("prob_map must hold probabilities in [0, 1]")
        pred = prob > self.threshold
        tp = int(np.count_nonzero(pred & gt))
        fp = int(np.count_nonzero(pred & ~gt))
        fn = int(np.count_nonzero(~pred & gt))
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        union = tp + fp + fn
        self.image_ious.append(tp / union if union else 0.0)

        detected, false_pixels, targets = match_targets(pred, gt, self.distance)
        self.targets += targets
        self.detected += detected
        self.false_pixels += false_pixels
        self.pixels += gt.size

        idx = np.minimum((prob * self.bins).astype(np.int64), self.bins - 1)
        self.pos_hist += np.bincount(idx[gt], minlength=self.bins)
        self.neg_hist += np.bincount(idx[~gt], minlength=self.bins)

    def compute(self) -> dict[str, float]:
        """{"iou", "niou", "pd", "fa", "f1", "auc"} as floats (0 where undefined: no pixels / targets)."""
        union = self.tp + self.fp + self.fn
        return {
            "iou": self.tp / union if union else 0.0,
            "niou": float(np.mean(self.image_ious)) if self.image_ious else 0.0,
            "pd": self.detected / self.targets if self.targets else 0.0,
            "fa": self.false_pixels / self.pixels if self.pixels else 0.0,
            "f1": 2 * self.tp / (2 * self.tp + self.fp + self.fn) if union else 0.0,
            "auc": histogram_auc(self.pos_hist, self.neg_hist),
        }


def match_targets(pred: np.ndarray, gt: np.ndarray, distance: float = 3.0) -> tuple[int, int, int]:
    """(detected targets, pixels of unmatched predicted components, targets) of one image; 8-connectivity,
    centroid distance < `distance`, one predicted component per target, matched by component identity."""
    targets = regionprops(label(gt, connectivity=2))
    comps = regionprops(label(pred, connectivity=2))
    matched = np.zeros(len(comps), dtype=bool)
    centroids = np.array([c.centroid for c in comps]).reshape(-1, 2)
    detected = 0
    for t in targets:
        d = np.linalg.norm(centroids - np.asarray(t.centroid), axis=1)
        free = np.flatnonzero(~matched & (d < distance))
        if free.size:
            matched[free[0]] = True
            detected += 1
    false_pixels = int(sum(c.area for c, m in zip(comps, matched, strict=True) if not m))
    return detected, false_pixels, len(targets)


def histogram_auc(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float:
    """ROC AUC from per-class score histograms (bin i = scores in [i/n, (i+1)/n)); 0 when a class is empty."""
    p, n = pos_hist.sum(), neg_hist.sum()
    if p == 0 or n == 0:
        return 0.0
    # thresholds from high to low: TPR / FPR after admitting each bin (prefix (0, 0))
    tpr = np.concatenate([[0.0], np.cumsum(pos_hist[::-1]) / p])
    fpr = np.concatenate([[0.0], np.cumsum(neg_hist[::-1]) / n])
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))
