"""Semantic segmentation metrics (paper Table 1) from one confusion matrix, as mmsegmentation reports them.

    iou_per_class[c]  TP_c / (TP_c + FP_c + FN_c)   (NaN for a class absent from both prediction and truth)
    miou              mean of iou_per_class over the classes present (NaN skipped)
    macc              mean over classes present in the truth of TP_c / (TP_c + FN_c)
    aacc              all correct pixels / all labelled pixels

Pixels whose truth is `ignore_index` are left out; so are truth values outside [0, num_classes).
"""

from __future__ import annotations

import math

import numpy as np


class SegMetrics:
    """`update(pred_labels, gt_labels)` per image (int arrays [H, W]); `compute()` over the set."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # [truth, prediction]
        self.outside = np.zeros(num_classes, dtype=np.int64)  # per truth class: predictions outside [0, k)

    def reset(self) -> None:
        self.confusion[:] = 0
        self.outside[:] = 0

    def update(self, pred_labels: np.ndarray, gt_labels: np.ndarray) -> None:
        """pred_labels, gt_labels: integer arrays of one shape; a prediction outside the classes counts wrong."""
        pred = np.asarray(pred_labels).astype(np.int64).ravel()
        gt = np.asarray(gt_labels).astype(np.int64).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"pred_labels {np.shape(pred_labels)} and gt_labels {np.shape(gt_labels)} differ")
        k = self.num_classes
        keep = (gt != self.ignore_index) & (gt >= 0) & (gt < k)
        pred, gt = pred[keep], gt[keep]
        valid = (pred >= 0) & (pred < k)
        self.confusion += np.bincount(gt[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
        self.outside += np.bincount(gt[~valid], minlength=k)  # misses of their truth class (FN only)

    def compute(self) -> dict[str, float | list[float]]:
        """{"miou", "macc", "aacc", "iou_per_class"}; fractions in [0, 1], NaN where undefined."""
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        gt_total = cm.sum(axis=1) + self.outside
        pred_total = cm.sum(axis=0)
        union = gt_total + pred_total - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_total > 0, tp / gt_total, np.nan)
        total = gt_total.sum()
        return {
            "miou": _nanmean(iou),
            "macc": _nanmean(acc),
            "aacc": float(tp.sum() / total) if total else math.nan,
            "iou_per_class": [float(v) for v in iou],
        }


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan
