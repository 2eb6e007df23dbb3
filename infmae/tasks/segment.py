"""Semantic segmentation of infrared images (paper section 5.2, Table 1): FCN or UperNet on `InfMAEBackbone`.

Layouts (found by `SegmentTask.detect_layout`):

    msrs     MSRS: SPLIT/ir/NAME.png with SPLIT/Segmentation_labels/NAME.png (or SPLIT/Label/), SPLIT in
             train / val / test; 9 classes (MFNet's): unlabelled, car, person, bike, curve, car_stop,
             guardrail, color_cone, bump
    generic  images/ + labels/ (label value = class index, 255 = ignore) + a class-name file (classes.txt,
             one name per line, line i = class i); splits are images/SPLIT/ + labels/SPLIT/ folders, or
             SPLIT.txt files of names next to images/

Labels equal to 255 are ignored in the loss and the metrics. Training items are random-scale / crop / flip
crops of `input_size` (padding labelled 255); evaluation runs whole images, by sliding `input_size`
windows when an image is larger. Metrics: `infmae.metrics.SegMetrics` (mIoU, mAcc, aAcc, per class IoU).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from inf30.atomic import write_text_atomic

from ..heads import DenseModel, FCNHead, UperHead
from ..metrics import SegMetrics
from .base import DataLayoutError, DownstreamTask
from .dense import (
    DenseDataset,
    augment_pair,
    blend,
    check_same_size,
    find_image,
    list_images,
    panels,
    read_gray,
    read_labels,
    save_png,
    sliding_window,
    to_input,
)

IGNORE = 255
MSRS_CLASSES = ("unlabelled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump")
MSRS_LABEL_DIRS = ("Segmentation_labels", "Label", "label", "labels")
CLASS_FILES = ("classes.txt", "class_names.txt")
HEADS = ("fcn", "upernet")
LAYOUTS = ("msrs (SPLIT/ir/*.png + SPLIT/Segmentation_labels/*.png)",
           "generic (images/ + labels/ + classes.txt; split folders images/SPLIT/ or SPLIT.txt name lists)")


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    label: Path


def _msrs_label_dir(split_dir: Path) -> Path | None:
    return next((split_dir / d for d in MSRS_LABEL_DIRS if (split_dir / d).is_dir()), None)


def _msrs_splits(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir()
                  if p.is_dir() and (p / "ir").is_dir() and _msrs_label_dir(p) is not None)


def _class_file(data_dir: Path) -> Path | None:
    return next((data_dir / f for f in CLASS_FILES if (data_dir / f).is_file()), None)


def _generic_splits(data_dir: Path) -> dict[str, tuple[Path, Path, list[str] | None]]:
    """{split: (image folder, label folder, names or None = every image)}."""
    images, labels = data_dir / "images", data_dir / "labels"
    out: dict[str, tuple[Path, Path, list[str] | None]] = {}
    for sub in sorted(p for p in images.iterdir() if p.is_dir()):
        if (labels / sub.name).is_dir():
            out[sub.name] = (sub, labels / sub.name, None)
    for txt in sorted(data_dir.glob("*.txt")):
        if txt.name not in CLASS_FILES and txt.stem not in out:
            out[txt.stem] = (images, labels, list(dict.fromkeys(txt.read_text().split())))
    return out


class SegDataset(DenseDataset):
    """Items: (image [1, S, S] float in [0, 1], labels [S, S] int64 with 255 = ignore). train=True: augmented
    crops of `input_size`; train=False: whole images."""

    def __init__(self, samples: Sequence[Sample], num_classes: int, train: bool, input_size: int,
                 scale: tuple[float, float] = (0.5, 2.0)) -> None:
        self.samples, self.num_classes, self.train = list(samples), num_classes, train
        self.input_size, self.scale = input_size, scale

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 gray [H, W], int64 labels [H, W]) of sample i; DataLayoutError naming a bad label file."""
        s = self.samples[i]
        gray, lab = read_gray(s.image), read_labels(s.label)
        if gray.shape != lab.shape:
            raise DataLayoutError(f"{s.label}: label size {lab.shape[::-1]} does not match its image {gray.shape[::-1]}")
        bad = (lab != IGNORE) & ((lab < 0) | (lab >= self.num_classes))
        if bad.any():
            raise DataLayoutError(f"{s.label}: label value {int(lab[bad][0])} is not a class "
                                  f"(0..{self.num_classes - 1}) nor {IGNORE} (ignore)")
        return gray, lab

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gray, lab = self.load(i)
        if self.train:
            gray, lab = augment_pair(gray, lab, self.input_size, self.scale, fill_label=IGNORE)
        return to_input(gray), torch.from_numpy(lab.astype(np.int64))


class SegmentTask(DownstreamTask):
    """`infmae finetune segment --head fcn|upernet`. Options: "head" (upernet), "channels" head width
    (default 512 upernet / 256 fcn, a quarter of that for backbones narrower than 384), "scale" [lo, hi] of the
    random scale (0.5, 2.0); "classes" and "num_classes" are filled in from the data by `dataset()`."""

    name: ClassVar[str] = "segment"
    option_keys = ("head", "channels", "scale", "classes", "num_classes", "input_size")
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-4, "weight_decay": 0.05, "input_size": 512, "epochs": 100,
                                          "schedule": "poly", "batch": 8}
    primary_metric: ClassVar[str] = "miou"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.options.setdefault("head", "upernet")
        if self.options["head"] not in HEADS:
            raise ValueError(f"unknown segmentation head {self.options['head']!r}; expected one of {list(HEADS)}")

    # -------------------------------------------------------------------------------------------- data
    @classmethod
    def detect_layout(cls, data_dir: Path) -> str:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataLayoutError(f"{data_dir}: not a folder; segment reads {'; '.join(LAYOUTS)}")
        if _msrs_splits(data_dir):
            return "msrs"
        if (data_dir / "images").is_dir() and (data_dir / "labels").is_dir():
            if _class_file(data_dir) is None:
                raise DataLayoutError(f"{data_dir}: images/ and labels/ but no class-name file ({' or '.join(CLASS_FILES)})")
            return "generic"
        raise DataLayoutError(f"{data_dir}: no segmentation layout found; segment reads {'; '.join(LAYOUTS)}")

    @classmethod
    def classes(cls, data_dir: Path) -> list[str]:
        """The class names, index = label value."""
        if cls.detect_layout(data_dir) == "msrs":
            return list(MSRS_CLASSES)
        names = [ln.strip() for ln in _class_file(Path(data_dir)).read_text().splitlines() if ln.strip()]  # type: ignore[union-attr]
        if not names:
            raise DataLayoutError(f"{_class_file(Path(data_dir))}: no class names")
        return names

    @classmethod
    def splits(cls, data_dir: Path) -> list[str]:
        data_dir = Path(data_dir)
        if cls.detect_layout(data_dir) == "msrs":
            return _msrs_splits(data_dir)
        splits = sorted(_generic_splits(data_dir))
        if not splits:
            raise DataLayoutError(f"{data_dir}: generic layout without splits: add images/SPLIT/ + labels/SPLIT/ "
                                  "folders or SPLIT.txt name lists")
        return splits

    @classmethod
    def samples(cls, data_dir: Path, split: str) -> list[Sample]:
        """The split's (name, image, label) triples: every label present and of its image's size."""
        data_dir = Path(data_dir)
        if split not in cls.splits(data_dir):
            raise DataLayoutError(f"{data_dir}: no split {split!r} (has {', '.join(cls.splits(data_dir))})")
        if cls.detect_layout(data_dir) == "msrs":
            img_dir, lab_dir, names = data_dir / split / "ir", _msrs_label_dir(data_dir / split), None
        else:
            img_dir, lab_dir, names = _generic_splits(data_dir)[split]
        assert lab_dir is not None
        if names is None:
            pairs = [(p.stem, p) for p in list_images(img_dir)]
        else:
            pairs = []
            for n in names:
                if (p := find_image(img_dir, n)) is None:
                    raise DataLayoutError(f"{data_dir / (split + '.txt')}: image {n!r} not found in {img_dir}")
                pairs.append((n, p))
        out = []
        for name, image in pairs:
            lab = find_image(lab_dir, name)
            if lab is None:
                raise DataLayoutError(f"{image}: no label map {name}.png in {lab_dir}")
            check_same_size(image, lab)
            out.append(Sample(name, image, lab))
        if not out:
            raise DataLayoutError(f"{img_dir}: split {split!r} has no images")
        return out

    def dataset(self, data_dir: Path, split: str, train: bool, input_size: int) -> SegDataset:
        classes = self.classes(data_dir)
        if "classes" in self.options and list(self.options["classes"]) != classes:
            raise DataLayoutError(f"{data_dir}: classes {classes} differ from the model's {self.options['classes']}")
        self.options["classes"], self.options["num_classes"] = classes, len(classes)
        scale = tuple(self.options.get("scale", (0.5, 2.0)))
        return SegDataset(self.samples(data_dir, split), len(classes), train, input_size, scale)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------- model
    def build_model(self, backbone: nn.Module) -> DenseModel:
        k = self.options.get("num_classes")
        if not k:
            raise ValueError("segment: the number of classes is unknown; call dataset() first or set options "
                             "num_classes")
        wide = backbone.out_channels[-1] >= 384
        if self.options["head"] == "fcn":
            head: nn.Module = FCNHead(backbone.out_channels, k, int(self.options.get("channels", 256 if wide else 64)))
        else:
            head = UperHead(backbone.out_channels, k, int(self.options.get("channels", 512 if wide else 128)))
        return DenseModel(backbone, head)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        imgs, labels = (t.to(device, non_blocking=True) for t in batch)
        logits = model(imgs).float()
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE)
        return loss, {"ce": float(loss.detach())}

    # -------------------------------------------------------------------------------------- evaluation
    def logits(self, model: nn.Module, img: torch.Tensor, device: torch.device, crop: int | None) -> torch.Tensor:
        """Class logits [K, H, W] of one image [1, H, W] (sliding `crop` windows when larger)."""
        return sliding_window(model, img[None].to(device), crop)[0]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: torch.utils.data.Dataset, device: torch.device) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        metric = SegMetrics(int(self.options["num_classes"]), IGNORE)
        crop = getattr(dataset, "input_size", None)
        for i in range(len(dataset)):  # type: ignore[arg-type]
            img, lab = dataset[i]
            pred = self.logits(model, img, device, crop).argmax(0).cpu().numpy()
            metric.update(pred, lab.numpy())
        model.train(was_training)
        out: dict[str, Any] = {**metric.compute(), "images": len(dataset)}  # type: ignore[arg-type]
        if "classes" in self.options:
            out["iou_by_class"] = dict(zip(self.options["classes"], out["iou_per_class"], strict=True))
        return out

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Sequence[Path], out_dir: Path, device: torch.device,
                **kwargs: Any) -> list[Path]:
        """Per image: NAME_labels.png (palette PNG, value = class), NAME_overlay.png (image | ground truth when a
        label map is found next to it in a known layout | prediction); with save_json=True NAME.json (pixel
        share per class). kwargs: input_size (sliding-window crop; default the task's input size)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        was_training = model.training
        model.eval()
        crop = int(kwargs.get("input_size") or self.options.get("input_size") or self.defaults["input_size"])
        k = int(self.options["num_classes"])
        palette = make_palette(k)
        written: list[Path] = []
        for path in map(Path, images):
            gray = read_gray(path)
            pred = self.logits(model, to_input(gray), device, crop).argmax(0).cpu().numpy().astype(np.uint8)
            lab_img = Image.fromarray(pred)
            lab_img.putpalette(palette.ravel().tolist())  # L -> P: values kept, colours attached
            parts = [blend(gray, np.zeros(gray.shape, bool), (0, 0, 0))]
            gt = _ground_truth(path, gray.shape)
            if gt is not None:
                parts.append(colorize(gray, gt, palette))
            parts.append(colorize(gray, pred, palette))
            written.append(save_png(lab_img, out_dir / f"{path.stem}_labels.png"))
            written.append(save_png(panels(parts), out_dir / f"{path.stem}_overlay.png"))
            if kwargs.get("save_json"):
                names = self.options.get("classes") or [str(i) for i in range(k)]
                share = np.bincount(pred.ravel(), minlength=k) / pred.size
                p = out_dir / f"{path.stem}.json"
                write_text_atomic(p, json.dumps({"image": str(path), "pixel_share": dict(zip(names, share.tolist(), strict=True))}, indent=1))
                written.append(p)
        model.train(was_training)
        return written

    def table_columns(self) -> list[str]:
        return ["miou", "macc", "aacc"]


def make_palette(k: int) -> np.ndarray:
    """[256, 3] uint8 colours: class 0 black, then well-separated hues; 255 (ignore) white."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    base = [(0, 0, 0), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 192), (128, 128, 0), (64, 64, 128),
            (192, 128, 128), (192, 64, 0)]  # MSRS' visualisation colours for its 9 classes
    rng = np.random.default_rng(0)
    for i in range(k):
        pal[i] = base[i] if i < len(base) else rng.integers(40, 256, 3)
    pal[IGNORE] = 255
    return pal


def colorize(gray: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 gray [H, W] with the class colours of labels [H, W] blended in (class 0 / ignore left as is)."""
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    lab = labels.astype(np.int64).clip(0, 255)
    a = ((lab > 0) & (lab != IGNORE))[..., None] * alpha
    return (rgb * (1 - a) + palette[lab].astype(np.float32) * a).clip(0, 255).astype(np.uint8)


def _ground_truth(image: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The label map of an image inside a known layout (msrs SPLIT/ir/ or generic images/[SPLIT/]), if any."""
    parent = image.parent
    cands = [parent.parent / d for d in MSRS_LABEL_DIRS] if parent.name == "ir" else []
    if parent.name == "images":
        cands.append(parent.parent / "labels")
    elif parent.parent.name == "images":
        cands.append(parent.parent.parent / "labels" / parent.name)
    for folder in cands:
        if folder.is_dir() and (p := find_image(folder, image.stem)) is not None:
            lab = read_labels(p)
            return lab if lab.shape == shape else None
    return None
