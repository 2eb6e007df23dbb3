"""Downstream metrics, one module per task family (paper section 5).

    IRSTDMetrics  infrared small-target detection: IoU, nIoU, P_d, F_a, F1, AUC  (`.irstd`)
    SegMetrics    semantic segmentation: mIoU, mAcc, aAcc from one confusion matrix  (`.seg`)
    DetectionMetrics  object detection: COCO mAP, AP50, AP75, AP_small, AP50 per class (`.detection`)
"""

from __future__ import annotations

from .detection import DetectionMetrics
from .irstd import IRSTDMetrics
from .seg import SegMetrics

__all__ = ["DetectionMetrics", "IRSTDMetrics", "SegMetrics"]
