"""IRSTDMetrics on hand-computed cases, an exact rank AUC, and (when installed) the pyirstdmetrics package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import rankdata

from infmae.metrics import IRSTDMetrics

H = W = 32


def box(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    """A [H, W] bool map with the given (top, left, height, width) boxes set."""
    m = np.zeros((H, W), dtype=bool)
    for t, left, h, w in boxes:
        m[t : t + h, left : left + w] = True
    return m


def run(*pairs: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    metric = IRSTDMetrics()
    for pred, gt in pairs:
        metric.update(pred.astype(np.float32), gt)
    return metric.compute()


def test_perfect() -> None:
    gt = box((10, 10, 3, 3), (20, 4, 1, 1))
    r = run((gt, gt))
    assert r == {"iou": 1.0, "niou": 1.0, "pd": 1.0, "fa": 0.0, "f1": 1.0, "auc": 1.0}


def test_empty_prediction() -> None:
    gt = box((10, 10, 3, 3))
    r = run((np.zeros((H, W)), gt))
    assert (r["iou"], r["niou"], r["pd"], r["fa"], r["f1"]) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert r["auc"] == 0.5  # every pixel has the same score: the ROC is the diagonal


def test_empty_image_and_empty_prediction_follow_acm_convention() -> None:
    # nothing to find, nothing found: no targets (pd undefined -> 0), no false alarm, per-image IoU 0 (ACM's eps)
    r = run((np.zeros((H, W)), np.zeros((H, W), dtype=bool)))
    assert (r["iou"], r["niou"], r["pd"], r["fa"]) == (0.0, 0.0, 0.0, 0.0)


def test_one_pixel_offset() -> None:
    gt = box((10, 10, 3, 3))
    pred = box((10, 11, 3, 3))  # shifted right by one column: TP 6, FP 3, FN 3
    r = run((pred, gt))
    assert r["iou"] == pytest.approx(6 / 12)
    assert r["f1"] == pytest.approx(12 / 18)
    assert r["pd"] == 1.0 and r["fa"] == 0.0  # centroids 1 px apart: detected, no false alarm


def test_two_targets_one_missed() -> None:
    gt = box((5, 5, 2, 2), (20, 20, 2, 2))
    pred = box((5, 5, 2, 2))
    r = run((pred, gt))
    assert r["pd"] == 0.5 and r["fa"] == 0.0
    assert r["iou"] == pytest.approx(4 / 8)


def test_far_prediction_is_a_miss_and_a_false_alarm() -> None:
    gt = box((5, 5, 1, 1))
    pred = box((5, 8, 1, 1))  # centroid 3 px away: not < 3
    r = run((pred, gt))
    assert r["pd"] == 0.0 and r["fa"] == pytest.approx(1 / (H * W))


def test_false_alarm_blob() -> None:
    gt = box((10, 10, 3, 3))
    pred = box((10, 10, 3, 3), (25, 2, 2, 3))  # the target plus a 6-pixel blob elsewhere
    r = run((pred, gt))
    assert r["pd"] == 1.0
    assert r["fa"] == pytest.approx(6 / (H * W))
    assert r["iou"] == pytest.approx(9 / 15)


def test_equal_area_blobs_counted_by_identity() -> None:
    # BasicIRSTD removes matched components by area value: the second 4-pixel blob would vanish from fa
    gt = box((5, 5, 2, 2))
    pred = box((5, 5, 2, 2), (20, 20, 2, 2))
    r = run((pred, gt))
    assert r["pd"] == 1.0
    assert r["fa"] == pytest.approx(4 / (H * W))


def test_a_component_matches_one_target_only() -> None:
    gt = box((10, 10, 1, 1), (10, 13, 1, 1))  # two 1-px targets, not 8-connected
    pred = box((10, 10, 1, 4))  # one component, centroid 1.5 px from both
    r = run((pred, gt))
    assert r["pd"] == 0.5 and r["fa"] == 0.0


def test_eight_connectivity() -> None:
    gt = box((10, 10, 1, 1), (11, 11, 1, 1))  # diagonal neighbours: one target
    metric = IRSTDMetrics()
    metric.update(gt.astype(float), gt)
    assert metric.targets == 1 and metric.compute()["pd"] == 1.0


def test_set_iou_vs_mean_image_iou() -> None:
    gt = box((10, 10, 3, 3))
    r = run((gt, gt), (box((10, 11, 3, 3)), gt))
    assert r["iou"] == pytest.approx(15 / 21)  # (9 + 6) / (9 + 12)
    assert r["niou"] == pytest.approx((1.0 + 0.5) / 2)
    assert r["pd"] == 1.0


def test_auc_hand_computed() -> None:
    gt = np.array([[True, True, False, False]])
    prob = np.array([[0.9, 0.4, 0.1, 0.6]])
    metric = IRSTDMetrics()
    metric.update(prob, gt)
    assert metric.compute()["auc"] == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ordered right


def test_auc_matches_exact_rank_auc() -> None:
    rng = np.random.default_rng(0)
    metric, pos, neg = IRSTDMetrics(), [], []
    for _ in range(3):
        gt = rng.random((40, 50)) < 0.1
        prob = np.clip(rng.normal(0.35 + 0.3 * gt, 0.2), 0, 1)
        metric.update(prob, gt)
        pos.append(prob[gt])
        neg.append(prob[~gt])
    p, n = np.concatenate(pos), np.concatenate(neg)
    ranks = rankdata(np.concatenate([p, n]))
    exact = (ranks[: p.size].sum() - p.size * (p.size + 1) / 2) / (p.size * n.size)
    assert metric.compute()["auc"] == pytest.approx(exact, abs=1e-3)


def test_bad_input() -> None:
    metric = IRSTDMetrics()
    with pytest.raises(ValueError, match="same 2-D shape"):
        metric.update(np.zeros((4, 4)), np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric.update(np.full((4, 4), 2.0), np.zeros((4, 4), dtype=bool))


def _real_cases(sirst_dir: Path, n: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real SIRST masks with imperfect predictions: shifted, partly dropped, with noise blobs."""
    rng = np.random.default_rng(1)
    names = (sirst_dir / "idx_427" / "test.txt").read_text().split()[:n]
    cases = []
    for i, name in enumerate(names):
        gt = np.asarray(Image.open(sirst_dir / "masks" / f"{name}_pixels0.png").convert("L")) > 127
        prob = np.roll(gt, shift=(i % 3) - 1, axis=1).astype(np.float64) * rng.uniform(0.3, 1.0)
        noise = rng.random(gt.shape)
        prob = np.maximum(prob, (noise > 0.9995) * 0.8)  # scattered false alarms
        prob[i % 7 : i % 7 + 3, 40:43] = 0.9 if i % 2 else prob[i % 7 : i % 7 + 3, 40:43]
        cases.append((np.clip(prob, 0, 1), gt))
    return cases


def test_agrees_with_pyirstdmetrics_on_real_sirst(sirst_dir: Path) -> None:
    """Independent implementation of the published definitions (optional: `pip install pyirstdmetrics`)."""
    irm = pytest.importorskip("py_irstd_metrics", reason="pyirstdmetrics is not installed (optional test extra)")
    ours = IRSTDMetrics()
    pdfa = irm.ProbabilityDetectionAndFalseAlarmRate(num_bins=1, distance_threshold=3)
    cm = irm.CMMetrics(num_bins=1, threshold=0.5, metric_handlers={
        "iou": irm.IoUHandler(with_dynamic=False, with_binary=True, sample_based=False),
        "niou": irm.IoUHandler(with_dynamic=False, with_binary=True, sample_based=True),
        "f1": irm.FmeasureHandler(with_dynamic=False, with_binary=True, sample_based=False, beta=1.0),
    })
    for prob, gt in _real_cases(sirst_dir):
        ours.update(prob, gt)
        pdfa.update(prob, gt)
        cm.update(prob, gt)
    r, ref, ref_cm = ours.compute(), pdfa.get(), cm.get()
    assert r["pd"] == pytest.approx(float(ref["probability_detection"][0]))
    assert r["fa"] == pytest.approx(float(ref["false_alarm"][0]))
    assert 0 < r["pd"] < 1 and r["fa"] > 0  # the cases exercise misses and false alarms
    assert r["iou"] == pytest.approx(float(ref_cm["iou"]["binary"]))
    assert r["niou"] == pytest.approx(float(ref_cm["niou"]["binary"]))
    assert r["f1"] == pytest.approx(float(ref_cm["f1"]["binary"]))
