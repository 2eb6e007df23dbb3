"""Infrared object detection (paper section 5.3): Faster / Mask / Cascade R-CNN on the InfMAE pyramid.

    images (list of [3, h, w], 0-1) -> PadTransform (normalize with the model's mean/std, pad to 32)
      -> InfMAEBackbone F1..F4 (strides 4..32) -> torchvision FeaturePyramidNetwork (+ max-pool P6)
      -> RPN (anchors 8-192 px, small infrared targets) -> MultiScaleRoIAlign -> TwoMLPHead -> boxes, labels
      [-> 14x14 RoIs -> MaskRCNNHeads -> masks, when the data has instance masks]
      [head="cascade": CascadeRoIHeads, three box stages at IoU 0.5 / 0.6 / 0.7 on torchvision's RoIHeads]

All torchvision's pieces except `PyramidFPN` (the backbone's maps into the FPN), `PadTransform` (its
transform without resizing) and the cascade's stage loop, which torchvision does not have. Sizing and scale
jitter happen in the dataset (`detect_data.DetectionDataset`), so boxes come back in the input's pixels;
`evaluate` maps them to the original image before COCO evaluation.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..data import MEAN, STD, load_gray
from ..metrics.detection import DetectionMetrics
from . import detect_data
from .base import DataLayoutError, DownstreamTask

ANCHOR_SIZES = ((8, 12), (16, 24), (32, 48), (64, 96), (128, 192))  # P2..P6; HIT-UAV persons ~10 px
COLORS = ((255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 220, 0), (255, 0, 255), (0, 255, 255))


def preprocessing(backbone: nn.Module) -> tuple[list[float], list[float]]:
    """The model's (mean, std) per channel: from the backbone's config when it has them, else InfMAE's gray
    0.425 / 0.200, replicated to 3 channels."""
    from ..model import PRESETS

    config = dict(getattr(backbone, "config", {}) or {})
    sources = [config, config.get("preprocessing") or {}, config.get("pretrained_cfg") or {},
               PRESETS.get(config.get("preset", ""), {})]
    mean, std = next(((s["mean"], s["std"]) for s in sources if "mean" in s and "std" in s), (MEAN, STD))

    def three(v: Any) -> list[float]:
        v = [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)]
        return v * 3 if len(v) == 1 else v

    return three(mean), three(std)


class PadTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without its resize: normalize, batch, pad to a multiple of 32."""

    def __init__(self, image_mean: list[float], image_std: list[float]) -> None:
        super().__init__(min_size=1, max_size=1, image_mean=image_mean, image_std=image_std, size_divisible=32)

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target


class PyramidFPN(nn.Module):
    """InfMAEBackbone + torchvision's FPN: [B, 3, H, W] -> {"0": P2 (H/4), .., "3": P5 (H/32), "pool": P6}."""

    def __init__(self, body: nn.Module, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.out_channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f.contiguous()) for i, f in enumerate(self.body(x))))


class _ParamGroups:
    def param_groups(self, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
        """The backbone's layer-decayed groups (InfMAEBackbone.param_groups), then FPN + RPN + RoI heads at
        full lr (lr_scale 1.0) with decay on weights only."""
        groups = self.backbone.body.param_groups(weight_decay, layer_decay)
        seen = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        extra = {"lr_scale": 1.0} if layer_decay is not None else {}
        for decay in (True, False):
            params = [p for p in rest if (p.ndim >= 2) == decay]
            if params:
                groups.append({"params": params, "weight_decay": weight_decay if decay else 0.0, **extra})
        return groups


def _parts(body: nn.Module, num_classes: int, fpn_channels: int, box_head_dim: int,
           anchor_sizes: Sequence[Sequence[int]], score_thresh: float, detections_per_img: int) -> dict[str, Any]:
    mean, std = preprocessing(body)
    anchors = AnchorGenerator(tuple(tuple(s) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    return dict(
        backbone=PyramidFPN(body, fpn_channels), rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
        box_predictor=FastRCNNPredictor(box_head_dim, num_classes + 1), image_mean=mean, image_std=std,
        box_score_thresh=score_thresh, box_detections_per_img=detections_per_img,
    )


class InfMAEFasterRCNN(_ParamGroups, FasterRCNN):
    """torchvision's FasterRCNN on `PyramidFPN`; `forward(images, targets=None)` as torchvision's."""

    def __init__(self, body: nn.Module, num_classes: int, fpn_channels: int = 256, box_head_dim: int = 1024,
                 anchor_sizes: Sequence[Sequence[int]] = ANCHOR_SIZES, score_thresh: float = 0.01,
                 detections_per_img: int = 100) -> None:
        """`num_classes` without the background; `body` an InfMAEBackbone."""
        kw = _parts(body, num_classes, fpn_channels, box_head_dim, anchor_sizes, score_thresh, detections_per_img)
        FasterRCNN.__init__(self, **kw)
        self.transform = PadTransform(kw["image_mean"], kw["image_std"])


class InfMAEMaskRCNN(_ParamGroups, MaskRCNN):
    """torchvision's MaskRCNN on `PyramidFPN` (4 x `mask_dim` conv mask head on 14x14 RoIs)."""

    def __init__(self, body: nn.Module, num_classes: int, fpn_channels: int = 256, box_head_dim: int = 1024,
                 anchor_sizes: Sequence[Sequence[int]] = ANCHOR_SIZES, score_thresh: float = 0.01,
                 detections_per_img: int = 100, mask_dim: int = 256) -> None:
        kw = _parts(body, num_classes, fpn_channels, box_head_dim, anchor_sizes, score_thresh, detections_per_img)
        MaskRCNN.__init__(self, **kw, mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
                          mask_head=MaskRCNNHeads(fpn_channels, (mask_dim,) * 4, 1),
                          mask_predictor=MaskRCNNPredictor(mask_dim, mask_dim, num_classes + 1))
        self.transform = PadTransform(kw["image_mean"], kw["image_std"])


class CascadePredictor(nn.Module):
    """Class scores [N, C] and one class-agnostic box delta [N, 4] (torchvision's predictor is per class)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class CascadeRoIHeads(RoIHeads):
    """Cascade R-CNN (Cai & Vasconcelos, CVPR 2018) on torchvision's RoIHeads: box stages trained at rising IoU
    (0.5, 0.6, 0.7) with tighter box-coder weights, each refining the previous stage's boxes; at inference the
    class scores are averaged over the stages and the last stage's boxes kept. Boxes only (no mask head)."""

    def __init__(self, box_roi_pool: nn.Module, heads: Sequence[nn.Module], predictors: Sequence[nn.Module],
                 ious: Sequence[float] = (0.5, 0.6, 0.7),
                 weights: Sequence[Sequence[float]] = ((10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)),
                 stage_loss: Sequence[float] = (1.0, 0.5, 0.25), score_thresh: float = 0.01,
                 nms_thresh: float = 0.5, detections_per_img: int = 100) -> None:
        super().__init__(box_roi_pool, heads[0], predictors[0], ious[0], ious[0], 512, 0.25, tuple(weights[0]),
                         score_thresh, nms_thresh, detections_per_img)
        del self.box_head, self.box_predictor  # the stages' own, below (no shared tensors in the state dict)
        self.heads, self.predictors = nn.ModuleList(heads), nn.ModuleList(predictors)
        self.matchers = [det_utils.Matcher(t, t, allow_low_quality_matches=False) for t in ious]
        self.coders = [det_utils.BoxCoder(tuple(float(v) for v in w)) for w in weights]
        self.stage_loss = tuple(stage_loss)

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]], targets: list[dict[str, torch.Tensor]] | None = None,
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """torchvision's RoIHeads contract: (detections, {}) in eval mode, ([], stage losses) in training."""
        losses: dict[str, torch.Tensor] = {}
        probs = []
        for t, (head, predictor) in enumerate(zip(self.heads, self.predictors, strict=True)):
            self.proposal_matcher, self.box_coder = self.matchers[t], self.coders[t]
            if self.training:
                proposals, _, labels, reg_targets = self.select_training_samples(proposals, targets)
            logits, deltas = predictor(head(self.box_roi_pool(features, proposals, image_shapes)))
            if self.training:
                labels_all, reg_all = torch.cat(labels), torch.cat(reg_targets)
                pos = torch.where(labels_all > 0)[0]
                box_loss = nn.functional.smooth_l1_loss(deltas[pos], reg_all[pos], beta=1 / 9, reduction="sum")
                losses[f"loss_classifier_{t}"] = self.stage_loss[t] * nn.functional.cross_entropy(logits, labels_all)
                losses[f"loss_box_reg_{t}"] = self.stage_loss[t] * box_loss / max(1, labels_all.numel())
            else:
                probs.append(nn.functional.softmax(logits, -1))
            boxes = self.box_coder.decode(deltas, proposals).reshape(-1, 4).detach()
            proposals = [box_ops.clip_boxes_to_image(b, shape)
                         for b, shape in zip(boxes.split([len(p) for p in proposals]), image_shapes, strict=True)]
        if self.training:
            return [], losses
        mean = torch.stack(probs).mean(0)  # zero deltas on the final boxes: torchvision's per-class NMS and top-k
        zeros = torch.zeros(len(mean), 4 * mean.shape[1], device=mean.device, dtype=mean.dtype)
        boxes, scores, labels = self.postprocess_detections(mean.log(), zeros, proposals, image_shapes)
        return [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels, strict=True)], {}


class InfMAECascadeRCNN(InfMAEFasterRCNN):
    """`InfMAEFasterRCNN` with `CascadeRoIHeads` (three box stages)."""

    def __init__(self, body: nn.Module, num_classes: int, fpn_channels: int = 256, box_head_dim: int = 1024,
                 anchor_sizes: Sequence[Sequence[int]] = ANCHOR_SIZES, score_thresh: float = 0.01,
                 detections_per_img: int = 100) -> None:
        super().__init__(body, num_classes, fpn_channels, box_head_dim, anchor_sizes, score_thresh, detections_per_img)
        self.roi_heads = CascadeRoIHeads(
            self.roi_heads.box_roi_pool, [TwoMLPHead(fpn_channels * 7 * 7, box_head_dim) for _ in range(3)],
            [CascadePredictor(box_head_dim, num_classes + 1) for _ in range(3)], score_thresh=score_thresh,
            detections_per_img=detections_per_img)


class DetectTask(DownstreamTask):
    """Object detection. Options: `classes` (set from the training data, kept in the run config), `head`
    ("faster_rcnn" or "cascade"), `masks` ("auto": Mask R-CNN when the data has instance masks, else Faster
    R-CNN; or true / false), `fpn_channels`
    (256), `box_head_dim` (1024), `mask_dim` (256), `anchor_sizes`, `score_thresh` (0.01), `input_size`."""

    name = "detect"
    option_keys = ("head", "masks", "fpn_channels", "box_head_dim", "mask_dim", "anchor_sizes", "score_thresh",
                   "classes", "category_ids", "input_size")
    # paper 5.3: AdamW lr 1e-4, weight decay 0.1; a "1x" schedule of 12 epochs; input_size = the shorter side
    defaults = {"lr": 1e-4, "weight_decay": 0.1, "input_size": 512, "epochs": 12, "schedule": "cosine", "batch": 8}
    primary_metric = "map"
    heads = ("faster_rcnn", "cascade")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)  # dataset() adds what it finds in the data (classes, masks, ...) to options
        head = self.options.get("head") or "faster_rcnn"
        if head not in self.heads:
            raise ValueError(f"detect: unknown head {head!r}; expected one of {', '.join(self.heads)}")
        self._reported: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------------------------------ data
    @classmethod
    def detect_layout(cls, data_dir: Path) -> str:
        return detect_data.detect_layout(Path(data_dir))

    def dataset(self, data_dir: Path, split: str, train: bool, input_size: int) -> detect_data.DetectionDataset:
        sp = detect_data.read_split(Path(data_dir), split)
        known = self.options.get("classes")
        if known is None:
            self.options["classes"] = list(sp.classes)
            self.options["category_ids"] = list(sp.category_ids)
        elif list(known) != list(sp.classes):
            raise DataLayoutError(f"{data_dir}: classes {sp.classes} differ from the model's {list(known)}")
        self.options.setdefault("input_size", int(input_size))
        if self.options.get("masks", "auto") == "auto":
            self.options["masks"] = sp.has_masks
        elif self.options["masks"] and not sp.has_masks:
            raise DataLayoutError(f"{data_dir}: masks asked for, but split {split!r} has no instance masks")
        key = (str(data_dir), split)
        if key not in self._reported:  # the box-validation counts, once per split, in the run log (stderr)
            self._reported.add(key)
            st = sp.stats
            print(f"detect data {data_dir} [{sp.layout}, {split}]: {st.images} images ({st.negatives} without boxes, "
                  f"{st.missing_images} missing), {st.boxes} boxes ({st.clipped} clipped; dropped: "
                  f"{st.dropped_degenerate} degenerate, {st.dropped_outside} outside, {st.unknown_class} unknown "
                  f"class, {st.bad_rows} bad rows), {st.ignored} ignore regions"
                  + (f", {st.split_by_mask} boxes split by the pixel mask" if st.split_by_mask else ""),
                  file=sys.stderr, flush=True)
        return detect_data.DetectionDataset(sp, train, input_size, masks=bool(self.options["masks"]))

    def collate(self, items: Sequence[Any]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        images, targets = zip(*items, strict=True) if items else ((), ())
        return list(images), list(targets)

    # ----------------------------------------------------------------------------------------- model
    def build_model(self, backbone: nn.Module) -> InfMAEFasterRCNN:
        classes = self.options.get("classes")
        if not classes:
            raise ValueError("DetectTask: the classes are unknown; build a dataset first or pass options['classes']")
        o = self.options
        args = (backbone, len(classes), int(o.get("fpn_channels", 256)), int(o.get("box_head_dim", 1024)),
                o.get("anchor_sizes", ANCHOR_SIZES), float(o.get("score_thresh", 0.01)))
        if o.get("head") == "cascade":
            if o.get("masks") is True:
                raise ValueError("detect: the cascade head predicts boxes only; pass masks=false with it")
            return InfMAECascadeRCNN(*args)
        if o.get("masks") is True:
            return InfMAEMaskRCNN(*args, mask_dim=int(o.get("mask_dim", 256)))
        return InfMAEFasterRCNN(*args)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        images = [im.to(device, non_blocking=True) for im in images]
        keys = ("boxes", "labels", "masks")
        targets = [{k: t[k].to(device) for k in keys if k in t} for t in targets]
        losses = model(images, targets)
        total = sum(losses.values())
        return total, {k: float(v.detach()) for k, v in losses.items()}

    # ------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: torch.utils.data.Dataset, device: torch.device,
                 batch: int = 2) -> dict[str, Any]:
        model.eval()
        metrics = DetectionMetrics(self.options.get("classes"))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, collate_fn=self.collate)
        for images, targets in loader:
            outs = model([im.to(device) for im in images])
            preds, gts = [], []
            for out, t in zip(outs, targets, strict=True):
                s = t["scale"]
                pred = {"boxes": out["boxes"].cpu() / s, "scores": out["scores"].cpu(), "labels": out["labels"].cpu()}
                gt = {"boxes": t["boxes"] / s, "labels": t["labels"], "ignore": t["ignore"] / s}
                if "masks" in out and "masks_orig" in t:  # [N, 1, h, w] probabilities -> the original size
                    size = tuple(t["masks_orig"].shape[-2:])
                    pred["masks"] = nn.functional.interpolate(out["masks"].cpu(), size=size, mode="bilinear",
                                                              align_corners=False) if len(out["masks"]) else \
                        torch.zeros(0, 1, *size)
                    gt["masks"] = t["masks_orig"]
                preds.append(pred)
                gts.append(gt)
            metrics.update(preds, gts)
        result = metrics.compute()
        stats = getattr(dataset, "stats", None)
        if isinstance(stats, dict):
            result["data"] = stats
        return result

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Sequence[Path], out_dir: Path, device: torch.device,
                **kwargs: Any) -> list[Path]:
        """Draw boxes with class and score (score >= `draw_thresh`, default 0.3) on each image:
        out_dir/<stem>.det.png; `save_json=True` also writes out_dir/detections.json in COCO results format
        (category ids of the source annotations, boxes [x, y, w, h] in the original pixels, `file_name`)."""
        from inf30.atomic import atomic_path, write_text_atomic

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        classes = list(self.options.get("classes") or [])
        cat_ids = list(self.options.get("category_ids") or range(1, len(classes) + 1))
        input_size = int(kwargs.get("input_size") or self.options.get("input_size") or self.defaults["input_size"])
        draw_thresh = float(kwargs.get("draw_thresh", 0.3))
        model.eval()
        written, results = [], []
        for image_id, path in enumerate(map(Path, images)):
            gray = load_gray(path)
            w0, h0 = gray.size
            w, h = detect_data.resized_size(w0, h0, input_size)
            x = torch.from_numpy(np.asarray(gray.resize((w, h), Image.BILINEAR), dtype=np.float32))
            out = model([(x / 255.0).expand(3, -1, -1).to(device)])[0]
            boxes = out["boxes"].cpu() / torch.tensor([w / w0, h / h0, w / w0, h / h0])
            canvas = gray.convert("RGB")
            if "masks" in out and len(out["masks"]):  # tint the drawn detections' masks
                keep = out["scores"].cpu() >= draw_thresh
                probs = nn.functional.interpolate(out["masks"].cpu()[keep], size=(h0, w0), mode="bilinear",
                                                  align_corners=False)[:, 0]
                rgb = np.asarray(canvas, dtype=np.float32)
                for m, label in zip(probs > 0.5, out["labels"].cpu()[keep].tolist(), strict=True):
                    rgb[m.numpy()] = 0.5 * rgb[m.numpy()] + 0.5 * np.asarray(COLORS[(label - 1) % len(COLORS)])
                canvas = Image.fromarray(rgb.astype(np.uint8))
            draw = ImageDraw.Draw(canvas)
            for box, score, label in zip(boxes.tolist(), out["scores"].tolist(), out["labels"].tolist(), strict=True):
                name = classes[label - 1] if 0 < label <= len(classes) else str(label)
                results.append({"image_id": image_id, "file_name": str(path), "score": round(score, 5),
                                "category_id": cat_ids[label - 1] if 0 < label <= len(cat_ids) else label,
                                "category": name, "bbox": [round(box[0], 2), round(box[1], 2),
                                                           round(box[2] - box[0], 2), round(box[3] - box[1], 2)]})
                if score >= draw_thresh:
                    color = COLORS[(label - 1) % len(COLORS)]
                    draw.rectangle(box, outline=color, width=1)
                    draw.text((box[0], max(0.0, box[1] - 11)), f"{name} {score:.2f}", fill=color)
            dest = out_dir / f"{path.stem}.det.png"
            with atomic_path(dest) as tmp:
                canvas.save(tmp, format="PNG")
            written.append(dest)
        if kwargs.get("save_json"):
            dest = out_dir / "detections.json"
            write_text_atomic(dest, json.dumps(results, indent=1))
            written.append(dest)
        return written

    def table_columns(self) -> list[str]:
        masks = ["mask_map", "mask_map50"] if self.options.get("masks") is True else []
        return [f"ap50/{c}" for c in self.options.get("classes") or []] + ["map", "map50"] + masks
