"""Infrared small-target detection (paper section 5.4, Table 3): a per-pixel target map at full resolution.

Layouts (found by `IRSTDTask.detect_layout`):

    sirst       NUAA-SIRST as released by ACM: images/NAME.png, masks/NAME_pixels0.png,
                idx_427/{train,val,test,trainval}.txt
    irstd-1k    BasicIRSTD's layout: images/NAME.png, masks/NAME.png, img_idx/{train,test}_IRSTD-1K.txt
    nudt-sirst  the same with img_idx/{train,test}_NUDT-SIRST.txt (any other img_idx/{train,test}_X.txt: basicirstd)

Model: `InfMAEBackbone` + `infmae.heads.IRSTDDecoder` (1 logit per pixel). Loss: BCE + soft-IoU. Train items
are random-scale / crop / flip crops of `input_size`; evaluation runs whole images (padded to a multiple of
32 inside the model, cropped back). Metrics: `infmae.metrics.IRSTDMetrics` (IoU, nIoU, P_d, F_a, F1, AUC).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.measure import label, regionprops
from torch import nn

from inf30.atomic import write_text_atomic

from ..heads import DenseModel, IRSTDDecoder
from ..metrics import IRSTDMetrics
from .base import DataLayoutError, DownstreamTask
from .dense import (
    DenseDataset,
    augment_pair,
    blend,
    check_same_size,
    find_image,
    panels,
    read_gray,
    read_labels,
    save_png,
    to_input,
)

LAYOUTS = ("sirst (images/, masks/NAME_pixels0.png, idx_427/{train,val,test}.txt)",
           "irstd-1k / nudt-sirst (images/, masks/, img_idx/{train,test}_NAME.txt as in BasicIRSTD)")
SIRST_SPLITS = ("idx_427", "idx_320")
_WARNED: set[str] = set()


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    mask: Path


def read_mask(path: Path) -> np.ndarray:
    """A target mask file -> bool [H, W] (mode 1 / P: nonzero; 8-bit: > 127)."""
    m = read_labels(path)
    return m > 127 if m.max(initial=0) > 1 else m > 0


def _split_dir(data_dir: Path) -> Path | None:
    for name in SIRST_SPLITS:
        if (data_dir / name).is_dir():
            return data_dir / name
    return None


def _basic_split_files(data_dir: Path) -> dict[str, Path]:
    """BasicIRSTD split files: {"train": img_idx/train_X.txt, "test": ...}."""
    files = {}
    idx = data_dir / "img_idx"
    if idx.is_dir():
        for p in sorted(idx.glob("*_*.txt")):
            split = p.stem.split("_", 1)[0].lower()
            files.setdefault(split, p)
    return files


def mask_path(data_dir: Path, layout: str, name: str) -> Path | None:
    """The mask of image `name` in a layout, or None when there is none."""
    masks = data_dir / "masks"
    if layout != "sirst" and (found := find_image(masks, name)) is not None:
        return found
    p = masks / f"{name}_pixels0.png"  # NUAA-SIRST's naming (also accepted in the BasicIRSTD layout)
    return p if p.is_file() else None


class IRSTDDataset(DenseDataset):
    """Items: (image [1, S, S] float in [0, 1], mask [1, S, S] float 0/1). train=True: augmented crops of
    `input_size`; train=False: whole images (sizes differ: batch 1 or the task's evaluate)."""

    def __init__(self, samples: Sequence[Sample], train: bool, input_size: int,
                 scale: tuple[float, float] = (0.7, 1.4)) -> None:
        self.samples, self.train, self.input_size, self.scale = list(samples), train, input_size, scale
        self.skipped: list[str] = []  # one-line reasons of samples left out

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 gray [H, W], bool mask [H, W]) of sample i, unaugmented."""
        s = self.samples[i]
        gray, mask = read_gray(s.image), read_mask(s.mask)
        if gray.shape != mask.shape:
            raise DataLayoutError(f"{s.mask}: mask size {mask.shape[::-1]} does not match its image {gray.shape[::-1]}")
        return gray, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gray, mask = self.load(i)
        if self.train:
            gray, m = augment_pair(gray, mask.astype(np.uint8), self.input_size, self.scale, fill_label=0)
            mask = m > 0
        return to_input(gray), torch.from_numpy(mask.astype(np.float32))[None]


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft IoU per image, averaged: logits / target [B, 1, H, W]."""
    p = logits.sigmoid()
    inter = (p * target).flatten(1).sum(1)
    union = (p + target - p * target).flatten(1).sum(1)
    return (1 - (inter + smooth) / (union + smooth)).mean()


class IRSTDTask(DownstreamTask):
    """`infmae finetune irstd`. Options: "channels" decoder width (64), "scale" [lo, hi] of the random scale
    (0.7, 1.4), "mismatch" "skip" (default) or "error" for a mask whose size differs from its image."""

    name: ClassVar[str] = "irstd"
    option_keys = ("mismatch", "scale", "channels")
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 0.05, "input_size": 256, "epochs": 100,
                                          "schedule": "cosine", "batch": 8}
    primary_metric: ClassVar[str] = "iou"

    # -------------------------------------------------------------------------------------------- data
    @classmethod
    def detect_layout(cls, data_dir: Path) -> str:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataLayoutError(f"{data_dir}: not a folder; irstd reads {'; '.join(LAYOUTS)}")
        if (data_dir / "images").is_dir() and (data_dir / "masks").is_dir():
            if _split_dir(data_dir) is not None:
                return "sirst"
            files = _basic_split_files(data_dir)
            if "train" in files:
                tag = files["train"].stem.split("_", 1)[1].lower()
                return tag if tag in ("irstd-1k", "nudt-sirst") else "basicirstd"
        raise DataLayoutError(f"{data_dir}: no infrared small-target layout found; irstd reads {'; '.join(LAYOUTS)}")

    @classmethod
    def splits(cls, data_dir: Path) -> list[str]:
        """The split names `data_dir` has (e.g. ["test", "train", "trainval", "val"])."""
        layout = cls.detect_layout(data_dir)
        if layout == "sirst":
            return sorted(p.stem for p in _split_dir(Path(data_dir)).glob("*.txt"))  # type: ignore[union-attr]
        return sorted(_basic_split_files(Path(data_dir)))

    @classmethod
    def samples(cls, data_dir: Path, split: str, on_mismatch: str = "error",
                skipped: list[str] | None = None) -> list[Sample]:
        """The split's (name, image, mask) triples, checked: every file present (else DataLayoutError), mask
        size = image size (else DataLayoutError naming the mask, or with on_mismatch="skip" the one-line
        reason is appended to `skipped` and the sample left out)."""
        skipped = [] if skipped is None else skipped
        data_dir = Path(data_dir)
        layout = cls.detect_layout(data_dir)
        if layout == "sirst":
            split_file = _split_dir(data_dir) / f"{split}.txt"  # type: ignore[operator]
        else:
            split_file = _basic_split_files(data_dir).get(split, data_dir / "img_idx" / f"{split}_?.txt")
        if not split_file.is_file():
            raise DataLayoutError(f"{data_dir}: no split {split!r} (has {', '.join(cls.splits(data_dir))})")
        out = []
        for name in dict.fromkeys(split_file.read_text().split()):
            image = find_image(data_dir / "images", name)
            if image is None:
                raise DataLayoutError(f"{split_file}: image {name!r} not found in {data_dir / 'images'}")
            mask = mask_path(data_dir, layout, name)
            if mask is None:
                raise DataLayoutError(f"{split_file}: mask of {name!r} not found in {data_dir / 'masks'}")
            try:
                check_same_size(image, mask)
            except DataLayoutError as exc:
                if on_mismatch != "skip":
                    raise
                skipped.append(str(exc))
                continue
            out.append(Sample(name, image, mask))
        if not out:
            raise DataLayoutError(f"{split_file}: no usable samples")
        return out

    def dataset(self, data_dir: Path, split: str, train: bool, input_size: int) -> IRSTDDataset:
        """The split as an IRSTDDataset; a mask whose size differs from its image is left out with its reason
        in `dataset.skipped` and a warning (real case: SIRST's Misc_111), or with option mismatch="error" a
        DataLayoutError."""
        mode = self.options.get("mismatch", "skip")
        if mode not in ("skip", "error"):
            raise ValueError(f"irstd option mismatch must be 'skip' or 'error', got {mode!r}")
        skipped: list[str] = []
        samples = self.samples(data_dir, split, mode, skipped)
        for reason in skipped:
            if reason not in _WARNED:  # once per process: the engine builds a split's dataset more than once
                _WARNED.add(reason)
                warnings.warn(f"irstd: skipped {reason}", stacklevel=2)
        scale = tuple(self.options.get("scale", (0.7, 1.4)))
        ds = IRSTDDataset(samples, train, input_size, scale)  # type: ignore[arg-type]
        ds.skipped = skipped
        return ds

    # ------------------------------------------------------------------------------------------- model
    def build_model(self, backbone: nn.Module) -> DenseModel:
        head = IRSTDDecoder(backbone.out_channels, 1, int(self.options.get("channels", 64)))
        return DenseModel(backbone, head)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        imgs, masks = (t.to(device, non_blocking=True) for t in batch)
        logits = model(imgs).float()
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        siou = soft_iou_loss(logits, masks)
        return bce + siou, {"bce": float(bce.detach()), "soft_iou": float(siou.detach())}

    # -------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def probability(self, model: nn.Module, img: torch.Tensor, device: torch.device) -> np.ndarray:
        """Target probability [H, W] (float32 in [0, 1]) of one image [1, H, W] (model in eval mode)."""
        logits = model(img[None].to(device))
        return logits[0, 0].float().sigmoid().cpu().numpy()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: torch.utils.data.Dataset, device: torch.device) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        metric = IRSTDMetrics()
        for i in range(len(dataset)):  # type: ignore[arg-type]
            img, mask = dataset[i]
            prob = self.probability(model, img, device)
            metric.update(prob, mask[0].numpy() > 0.5)
        model.train(was_training)
        out: dict[str, Any] = {**metric.compute(), "images": len(dataset)}  # type: ignore[arg-type]
        if getattr(dataset, "skipped", None):
            out["skipped"] = list(dataset.skipped)  # type: ignore[attr-defined]
        return out

    def predict(self, model: nn.Module, images: Sequence[Path], out_dir: Path, device: torch.device,
                **kwargs: Any) -> list[Path]:
        """Per image: NAME_prob.png (8-bit probability), NAME_overlay.png (image | ground truth when a mask is
        found next to it in a known layout | prediction); with save_json=True also NAME.json (the predicted
        targets: centroid, area, bbox, peak probability)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        was_training = model.training
        model.eval()
        written: list[Path] = []
        for path in map(Path, images):
            gray = read_gray(path)
            prob = self.probability(model, to_input(gray), device)
            pred = prob > 0.5
            gt = _ground_truth(path, gray.shape)
            parts = [blend(gray, np.zeros_like(pred), (0, 0, 0))]
            if gt is not None:
                parts.append(blend(gray, gt, (0, 255, 0)))
            parts.append(blend(gray, pred, (255, 0, 0), alpha=0.4 + 0.6 * prob))
            stem = path.stem
            written.append(save_png(Image.fromarray(np.round(prob * 255).astype(np.uint8)), out_dir / f"{stem}_prob.png"))
            written.append(save_png(panels(parts), out_dir / f"{stem}_overlay.png"))
            if kwargs.get("save_json"):
                targets = [{"centroid_yx": [round(float(v), 2) for v in r.centroid], "area": int(r.area),
                            "bbox_xyxy": [int(r.bbox[1]), int(r.bbox[0]), int(r.bbox[3]), int(r.bbox[2])],
                            "score": float(prob[r.coords[:, 0], r.coords[:, 1]].max())}
                           for r in regionprops(label(pred, connectivity=2))]
                json_path = out_dir / f"{stem}.json"
                write_text_atomic(json_path, json.dumps({"image": str(path), "targets": targets}, indent=1))
                written.append(json_path)
        model.train(was_training)
        return written

    def table_columns(self) -> list[str]:
        return ["iou", "niou", "pd", "fa", "f1", "auc"]


def _ground_truth(image: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The mask of an image inside a known layout (DIR/images/NAME.* -> DIR/masks/...), if it matches."""
    if image.parent.name != "images":
        return None
    masks = image.parent.parent / "masks"
    cand = masks / f"{image.stem}_pixels0.png"
    cand = cand if cand.is_file() else find_image(masks, image.stem)
    if cand is None:
        return None
    mask = read_mask(cand)
    return mask if mask.shape == shape else None
