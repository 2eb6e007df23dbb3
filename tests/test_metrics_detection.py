"""DetectionMetrics on hand-made cases whose COCO answers are known by construction."""

from __future__ import annotations

import math

import pytest
import torch

from infmae.metrics.detection import DetectionMetrics


def _gt() -> list[dict[str, torch.Tensor]]:
    """Three images, two classes; 20x20 boxes (COCO 'small': area 400 < 32^2)."""
    return [
        {"boxes": torch.tensor([[10.0, 10, 30, 30], [50, 50, 70, 70]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[100.0, 40, 120, 60]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[5.0, 80, 25, 100], [60, 5, 80, 25]]), "labels": torch.tensor([2, 2])},
    ]


def _as_preds(targets, shift: float = 0.0, drop_label: int | None = None):
    preds = []
    for t in targets:
        keep = t["labels"] != drop_label if drop_label is not None else torch.ones(len(t["labels"]), dtype=torch.bool)
        boxes = t["boxes"][keep] + torch.tensor([shift, 0.0, shift, 0.0])
        preds.append({"boxes": boxes, "scores": torch.full((len(boxes),), 0.9), "labels": t["labels"][keep]})
    return preds


def _iou_shift(width: float, iou: float) -> float:
    """Horizontal shift of a width-w box that leaves IoU `iou` with the original: (w-s)/(w+s) = iou."""
    return width * (1 - iou) / (1 + iou)


def test_ground_truth_as_predictions_is_perfect():
    m = DetectionMetrics(["Person", "Car"])
    m.update(_as_preds(_gt()), _gt())
    r = m.compute()
    for key in ("map", "map50", "map75", "map_small", "ap50/Person", "ap50/Car", "ap/Person", "ap/Car"):
        assert r[key] == pytest.approx(1.0), key
    assert math.isnan(r["map_large"])  # no large ground truth: COCO's -1, reported as NaN


def test_iou_060_counts_at_50_not_at_75():
    gt = _gt()
    shift = _iou_shift(20.0, 0.6)
    preds = _as_preds(gt, shift=shift)
    b, p = gt[0]["boxes"][0], preds[0]["boxes"][0]
    inter = (b[2] - p[0]) * 20
    assert float(inter / (800 - inter)) == pytest.approx(0.6)
    m = DetectionMetrics(["Person", "Car"])
    m.update(preds, gt)
    r = m.compute()
    assert r["map50"] == pytest.approx(1.0)
    assert r["map75"] == pytest.approx(0.0)


@pytest.mark.parametrize(("iou", "expected"), [(0.58, 0.2), (0.62, 0.3), (0.97, 1.0)])
def test_map_counts_the_iou_thresholds_passed(iou, expected):
    """AP@[.5:.95] averages ten thresholds 0.50, 0.55, ..., 0.95: a perfect ranking at IoU x scores the share <= x."""
    m = DetectionMetrics(["Person", "Car"])
    m.update(_as_preds(_gt(), shift=_iou_shift(20.0, iou)), _gt())
    assert m.compute()["map"] == pytest.approx(expected)


def test_missed_class_lowers_exactly_that_class():
    m_all, m_miss = DetectionMetrics(["Person", "Car"]), DetectionMetrics(["Person", "Car"])
    m_all.update(_as_preds(_gt()), _gt())
    m_miss.update(_as_preds(_gt(), drop_label=2), _gt())
    full, miss = m_all.compute(), m_miss.compute()
    assert miss["ap50/Person"] == pytest.approx(full["ap50/Person"]) == pytest.approx(1.0)
    assert miss["ap50/Car"] == pytest.approx(0.0)
    assert miss["map50"] == pytest.approx(0.5)


def test_false_positive_ranked_above_true_lowers_ap():
    gt = [{"boxes": torch.tensor([[10.0, 10, 30, 30]]), "labels": torch.tensor([1])}]
    pred = [{"boxes": torch.tensor([[10.0, 10, 30, 30], [100, 100, 120, 120]]), "scores": torch.tensor([0.5, 0.9]),
             "labels": torch.tensor([1, 1])}]
    m = DetectionMetrics(["Person"])
    m.update(pred, gt)
    # recall reaches 1 at precision 1/2; COCO's interpolated precision is 0.5 at every recall point
    assert m.compute()["map50"] == pytest.approx(0.5)


def test_detections_in_ignore_regions_are_not_false_positives():
    gt = [{"boxes": torch.tensor([[10.0, 10, 30, 30]]), "labels": torch.tensor([1]),
           "ignore": torch.tensor([[90.0, 90, 140, 140]])}]
    pred = [{"boxes": torch.tensor([[10.0, 10, 30, 30], [100, 100, 120, 120]]), "scores": torch.tensor([0.5, 0.9]),
             "labels": torch.tensor([1, 1])}]
    with_ignore = DetectionMetrics(["Person"])
    with_ignore.update(pred, gt)
    without = DetectionMetrics(["Person"])
    without.update(pred, [{k: v for k, v in gt[0].items() if k != "ignore"}])
    assert with_ignore.compute()["map50"] == pytest.approx(1.0)
    assert without.compute()["map50"] == pytest.approx(0.5)


def test_no_detections_gives_zero_and_class_without_gt_is_nan():
    m = DetectionMetrics(["Person", "Car"])
    m.update([{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}],
             [{"boxes": torch.tensor([[10.0, 10, 30, 30]]), "labels": torch.tensor([1])}])
    r = m.compute()
    assert r["map"] == 0.0 and r["ap50/Person"] == 0.0 and math.isnan(r["ap50/Car"])
    with pytest.raises(ValueError, match="predictions for"):
        m.update([], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])


def _masks_from_boxes(boxes: torch.Tensor, size=(128, 160), inset: int = 0) -> torch.Tensor:
    """A filled ellipse-free test mask per box: the box's pixels, `inset` px trimmed on the right."""
    out = torch.zeros(len(boxes), *size)
    for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        out[k, y0:y1, x0:x1 - inset] = 1.0
    return out


def test_masks_are_evaluated_when_both_sides_have_them():
    gt = _gt()
    for t in gt:
        t["masks"] = _masks_from_boxes(t["boxes"])
    perfect = DetectionMetrics(["Person", "Car"])
    perfect.update([dict(p, masks=t["masks"][:, None] * 0.9) for p, t in zip(_as_preds(gt), gt, strict=True)], gt)
    r = perfect.compute()
    assert r["mask_map"] == pytest.approx(1.0) and r["map"] == pytest.approx(1.0)
    # same boxes, masks missing 8 of 20 columns: mask IoU 0.6 -> mask AP50 1, AP75 0; box AP untouched
    trimmed = DetectionMetrics(["Person", "Car"])
    trimmed.update([dict(p, masks=_masks_from_boxes(t["boxes"], inset=8)) for p, t in zip(_as_preds(gt), gt, strict=True)], gt)
    r = trimmed.compute()
    assert r["map"] == pytest.approx(1.0)
    assert r["mask_map50"] == pytest.approx(1.0) and r["mask_map75"] == pytest.approx(0.0)
    no_masks = DetectionMetrics(["Person", "Car"])
    no_masks.update(_as_preds(gt), gt)
    assert "mask_map" not in no_masks.compute()
