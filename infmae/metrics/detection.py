"""COCO detection metrics through pycocotools (the reference implementation, not a re-written AP).

`DetectionMetrics.update(preds, targets)` takes lists of torchvision-style dicts in the same pixel frame:
preds {"boxes" [N, 4] xyxy, "scores" [N], "labels" [N]}, targets {"boxes" [M, 4] xyxy, "labels" [M]} plus an
optional "ignore" [K, 4] of regions (DontCare, crowds) that count as COCO `iscrowd` boxes of every class: a
detection inside one is neither a true nor a false positive. With instance masks on both sides (preds
"masks" [N, (1,) H, W] probabilities or 0/1, targets "masks" [M, H, W]; binarized at 0.5) the masks are
evaluated too (COCO "segm"). `compute()` returns

    map  AP@[.5:.95]   map50  AP@.5   map75  AP@.75   map_small / map_medium / map_large   mar_100
    ap50/<class>, ap/<class>   per class (NaN for a class without ground truth, COCO's -1)
    mask_map, mask_map50, mask_map75, mask_map_small, ...   the same for masks, when given

with COCO's definitions: 101-point interpolated precision, at most 100 detections per image, areas in
pixels^2 (small < 32^2 < medium < 96^2 < large).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _np(x: Any, shape: tuple[int, ...] | None = (-1,)) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    x = np.asarray(x)
    return x if shape is None else x.reshape(shape)


class DetectionMetrics:
    """Accumulates images, then evaluates them with pycocotools' COCOeval (bbox)."""

    def __init__(self, class_names: Sequence[str] | dict[int, str] | None = None) -> None:
        """`class_names[k - 1]` (or `class_names[k]` for a dict) names label k; default "class<k>"."""
        if class_names is None:
            self.class_names: dict[int, str] | None = None
        elif isinstance(class_names, dict):
            self.class_names = {int(k): str(v) for k, v in class_names.items()}
        else:
            self.class_names = {k + 1: str(n) for k, n in enumerate(class_names)}
        self.reset()

    def reset(self) -> None:
        self._images: list[dict[str, Any]] = []

    def update(self, preds: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]) -> None:
        """One entry per image; boxes xyxy in pixels."""
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        for p, t in zip(preds, targets, strict=True):
            im = {
                "dt_boxes": _np(p["boxes"], (-1, 4)).astype(np.float64),
                "dt_scores": _np(p["scores"]).astype(np.float64),
                "dt_labels": _np(p["labels"]).astype(np.int64),
                "gt_boxes": _np(t["boxes"], (-1, 4)).astype(np.float64),
                "gt_labels": _np(t["labels"]).astype(np.int64),
                "ignore": _np(t.get("ignore", np.zeros((0, 4))), (-1, 4)).astype(np.float64),
            }
            if p.get("masks") is not None and t.get("masks") is not None:
                gt = _np(t["masks"], None)
                h, w = gt.shape[-2:]
                im["size"] = (int(h), int(w))
                im["gt_rles"] = _rles(gt.reshape(-1, h, w))
                im["dt_rles"] = _rles(_np(p["masks"], (-1, h, w)))
            self._images.append(im)

    def _categories(self) -> dict[int, str]:
        names = dict(self.class_names or {})
        for im in self._images:
            for k in np.concatenate([im["gt_labels"], im["dt_labels"]]).tolist():
                names.setdefault(int(k), f"class{int(k)}")
        return dict(sorted(names.items()))

    def compute(self) -> dict[str, Any]:
        cats = self._categories()
        out: dict[str, Any] = {"images": len(self._images),
                               "gt_boxes": int(sum(len(im["gt_labels"]) for im in self._images)),
                               "detections": int(sum(len(im["dt_labels"]) for im in self._images))}
        out.update(self._evaluate(cats, "bbox", ""))
        if self._images and all("gt_rles" in im for im in self._images):
            out.update(self._evaluate(cats, "segm", "mask_"))
        return out

    def _evaluate(self, cats: dict[int, str], iou_type: str, prefix: str) -> dict[str, Any]:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        segm = iou_type == "segm"
        images, anns, dets = [], [], []
        for i, im in enumerate(self._images):
            images.append({"id": i, "height": im["size"][0], "width": im["size"][1]} if segm else {"id": i})
            for k, (box, label) in enumerate(zip(im["gt_boxes"], im["gt_labels"], strict=True)):
                anns.append(_ann(box, int(label), i, 0, len(anns) + 1, im["gt_rles"][k] if segm else None))
            for box in im["ignore"]:  # an ignore region is a crowd box of every class
                rle = _box_rle(box, im["size"]) if segm else None
                for c in cats:
                    anns.append(_ann(box, c, i, 1, len(anns) + 1, rle))
            for k, (box, score, label) in enumerate(zip(im["dt_boxes"], im["dt_scores"], im["dt_labels"], strict=True)):
                x0, y0, x1, y1 = box.tolist()
                det = {"image_id": i, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                       "score": float(score)}
                if segm:
                    det["segmentation"] = im["dt_rles"][k]
                    det["area"] = float(mask_utils.area(im["dt_rles"][k]))
                dets.append(det)
        keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
        out: dict[str, Any] = {}
        if not dets or not cats:
            out.update({prefix + k: 0.0 for k in keys + ("mar_100",)})
            for c, name in cats.items():
                has_gt = any((im["gt_labels"] == c).any() for im in self._images)
                out[f"{prefix}ap50/{name}"] = out[f"{prefix}ap/{name}"] = 0.0 if has_gt else math.nan
            return out
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = {"images": images, "annotations": anns,
                          "categories": [{"id": c, "name": n} for c, n in cats.items()]}
            gt.createIndex()
            dt = COCO()
            dt.dataset = {"images": images, "annotations": [dict(d, id=k + 1, iscrowd=0, **(
                {} if segm else {"area": d["bbox"][2] * d["bbox"][3]})) for k, d in enumerate(dets)],
                "categories": gt.dataset["categories"]}
            dt.createIndex()
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [math.nan if s < 0 else float(s) for s in ev.stats]
        out.update({prefix + k: v for k, v in zip(keys, stats[:6], strict=True)})
        out[prefix + "mar_100"] = stats[8]
        prec = ev.eval["precision"]  # [T iou thresholds, R recall points, K classes, A areas, M max dets]
        for k, c in enumerate(ev.params.catIds):
            name = cats[c]
            for key, p in ((f"{prefix}ap50/{name}", prec[0, :, k, 0, -1]), (f"{prefix}ap/{name}", prec[:, :, k, 0, -1])):
                p = p[p > -1]
                out[key] = float(p.mean()) if p.size else math.nan
        return out


def _rles(masks: np.ndarray) -> list[dict[str, Any]]:
    from pycocotools import mask as mask_utils

    binary = np.asfortranarray((masks > 0.5).transpose(1, 2, 0).astype(np.uint8))
    return mask_utils.encode(binary) if len(masks) else []


def _box_rle(box: np.ndarray, size: tuple[int, int]) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    x0, y0, x1, y1 = box.tolist()
    return mask_utils.frPyObjects([[x0, y0, x1, y0, x1, y1, x0, y1]], size[0], size[1])[0]


def _ann(box: np.ndarray, label: int, image_id: int, crowd: int, ann_id: int,
         rle: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ground-truth annotation; with `rle` a mask one (its area is the mask's, as COCO's segm uses)."""
    x0, y0, x1, y1 = box.tolist()
    w, h = x1 - x0, y1 - y0
    ann = {"id": ann_id, "image_id": image_id, "category_id": label, "bbox": [x0, y0, w, h], "area": w * h,
           "iscrowd": crowd}
    if rle is not None:
        from pycocotools import mask as mask_utils

        ann["segmentation"] = rle
        ann["area"] = float(mask_utils.area(rle))
    return ann
