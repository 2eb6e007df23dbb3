"""SegMetrics: known answers from hand-built confusion matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infmae.metrics import SegMetrics


def test_perfect() -> None:
    gt = np.array([[0, 1], [2, 2]])
    m = SegMetrics(3)
    m.update(gt, gt)
    r = m.compute()
    assert (r["miou"], r["macc"], r["aacc"]) == (1.0, 1.0, 1.0)
    assert r["iou_per_class"] == [1.0, 1.0, 1.0]


def test_known_answer() -> None:
    gt = np.array([[0, 0, 0, 1], [1, 1, 2, 2]])
    pred = np.array([[0, 0, 1, 1], [1, 2, 2, 0]])
    # confusion [truth, pred]: class 0: 0->0 x2, 0->1 x1; class 1: 1->1 x2, 1->2 x1; class 2: 2->2 x1, 2->0 x1
    m = SegMetrics(3)
    m.update(pred, gt)
    assert m.confusion.tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    r = m.compute()
    iou = [2 / (3 + 3 - 2), 2 / (3 + 3 - 2), 1 / (2 + 2 - 1)]
    assert r["iou_per_class"] == pytest.approx(iou)
    assert r["miou"] == pytest.approx(sum(iou) / 3)
    assert r["macc"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert r["aacc"] == pytest.approx(5 / 8)


def test_ignore_index_and_absent_class() -> None:
    gt = np.array([[0, 255], [1, 255]])
    pred = np.array([[0, 3], [1, 1]])  # ignored pixels do not count, whatever is predicted there
    m = SegMetrics(4)
    m.update(pred, gt)
    r = m.compute()
    assert r["aacc"] == 1.0
    assert r["iou_per_class"][:2] == [1.0, 1.0]
    assert math.isnan(r["iou_per_class"][2]) and math.isnan(r["iou_per_class"][3])
    assert r["miou"] == 1.0 and r["macc"] == 1.0  # absent classes are skipped, not averaged as 0


def test_false_positive_class_lowers_miou() -> None:
    gt = np.zeros((2, 2), dtype=int)
    pred = np.array([[0, 0], [0, 1]])  # class 1 never in truth, predicted once: IoU 0, counts in mIoU
    m = SegMetrics(2)
    m.update(pred, gt)
    r = m.compute()
    assert r["iou_per_class"] == [0.75, 0.0]
    assert r["miou"] == pytest.approx(0.375)
    assert r["macc"] == pytest.approx(0.75)  # class 1 has no truth pixels: not in mAcc


def test_accumulates_over_images_and_resets() -> None:
    m = SegMetrics(2)
    m.update(np.array([[1, 1]]), np.array([[1, 0]]))
    m.update(np.array([[0, 0]]), np.array([[0, 0]]))
    assert m.compute()["aacc"] == pytest.approx(3 / 4)
    m.reset()
    m.update(np.array([[0]]), np.array([[0]]))
    assert m.compute()["aacc"] == 1.0


def test_prediction_outside_classes_is_a_miss() -> None:
    m = SegMetrics(2)
    m.update(np.array([[0, 7]]), np.array([[0, 1]]))
    r = m.compute()
    assert r["iou_per_class"] == [1.0, 0.0] and r["aacc"] == 0.5


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differ"):
        SegMetrics(2).update(np.zeros((2, 2)), np.zeros((2, 3)))
