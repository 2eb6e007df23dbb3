"""Object-detection data: three annotation layouts read into one form, with boxes validated.

    coco  `annotations/{train,val,test}.json` beside `train/ val/ test/` image folders; standard COCO and
          HIT-UAV's variant (key `annotation`, field `filename`, category ids from 0)
    voc   Pascal VOC XML, one file per image: SIRST (`images/`, `masks/*.xml`, `idx_*/{split}.txt`), M3FD
          (`Ir/`, `Annotation/`, `meta/{split}.txt` when present), VOC (`JPEGImages/`, `Annotations/`,
          `ImageSets/Main/{split}.txt`); without split files a fixed 80/10/10 split by file-name hash
    yolo  `images/{split}/` + `labels/{split}/*.txt` (or `{split}/images/` + `{split}/labels/`), normalized
          `class cx cy w h` rows; class names from `data.yaml`/`dataset.yaml` `names` or `classes.txt`

Every layout becomes a `DetSplit`: samples with xyxy float boxes in the image's pixels and labels 1..K
(torchvision keeps 0 for the background), classes in a fixed order (COCO category ids sorted, VOC names
sorted, YOLO class index order). Ignore classes (DontCare, ...), COCO `iscrowd` and VOC `difficult` objects
become ignore regions: never trained on, neither rewarded nor penalised in evaluation. Boxes are clipped to
the image; degenerate (under 1 px, non-finite) and outside boxes are dropped; counts in `DetSplit.stats`.
Images without boxes are kept as negatives.

Instance masks, where they exist, come from COCO polygons / RLE that are more than the box (HIT-UAV's are
just its corners) or from a pixel mask beside a VOC XML (SIRST's `*_pixels0.png`: each box's mask is the
mask's pixels inside it). SIRST's XML has one box per image, which for images with several targets encloses
all of them; such a box is replaced by one box per 8-connected target of the pixel mask inside it.
"""

from __future__ import annotations

import hashlib
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data import IMAGE_EXTENSIONS, load_gray
from .base import DataLayoutError

IGNORE_NAMES = frozenset({"dontcare", "dont care", "ignore", "ignored", "ignored regions", "ignored_regions"})
SPLITS = ("train", "val", "test", "trainval")
LAYOUTS_HELP = (
    "COCO JSON (annotations/{train,val,test}.json beside train/ val/ test/), "
    "Pascal VOC XML (Annotations/, Annotation/ or masks/*.xml beside JPEGImages/, Ir/ or images/), "
    "YOLO txt (images/{split}/ + labels/{split}/*.txt)"
)
_VOC_ANN_DIRS = ("Annotations", "Annotation", "annotations", "masks", "xml")
_VOC_IMG_DIRS = ("JPEGImages", "Ir", "ir", "IR", "infrared", "images", "Images")
_VOC_SPLIT_FILES = ("ImageSets/Main/{s}.txt", "meta/{s}.txt", "idx_*/{s}.txt", "index/{s}.txt", "{s}.txt")


@dataclass
class DetSample:
    """One image: `boxes` [N, 4] float32 xyxy pixels, `labels` [N] int64 in 1..K, `ignore` [M, 4] regions."""

    image: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    image_id: int
    segm: list[Any] | None = None  # COCO segmentation (polygons / RLE) of each box, when the data has masks
    mask_file: Path | None = None  # a pixel mask of the image's targets (SIRST's *_pixels0.png)


@dataclass
class BoxStats:
    """What validation did to a split's annotations (written to the run log by the task)."""

    images: int = 0
    boxes: int = 0
    clipped: int = 0
    dropped_degenerate: int = 0
    dropped_outside: int = 0
    ignored: int = 0
    negatives: int = 0
    missing_images: int = 0
    bad_rows: int = 0
    unknown_class: int = 0
    split_by_mask: int = 0  # VOC boxes around several pixel-mask targets, replaced by one box per target

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class DetSplit:
    layout: str
    split: str
    root: Path
    classes: list[str]
    samples: list[DetSample]
    stats: BoxStats = field(default_factory=BoxStats)
    category_ids: list[int] = field(default_factory=list)  # the source's id of each class (COCO ids, YOLO index)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.classes) + 1))

    @property
    def has_masks(self) -> bool:
        """Instance masks exist (COCO polygons / RLE that are not just the box, or pixel mask files)."""
        return any(s.segm is not None or s.mask_file is not None for s in self.samples)


# ------------------------------------------------------------------------------------------- validation
def validate_boxes(boxes: Any, width: int, height: int, stats: BoxStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """xyxy boxes [N, 4] -> (clipped boxes [K, 4] float32, keep mask [N]). A box narrower or lower than 1 px
    (or non-finite) is degenerate; one with under 1 px left inside the image is outside; both are dropped."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(b).all(axis=1)
    b = np.where(np.isfinite(b), b, 0.0)
    degenerate = ~finite | (b[:, 2] - b[:, 0] < 1.0) | (b[:, 3] - b[:, 1] < 1.0)
    c = b.copy()
    c[:, 0::2] = c[:, 0::2].clip(0, width)
    c[:, 1::2] = c[:, 1::2].clip(0, height)
    outside = ~degenerate & ((c[:, 2] - c[:, 0] < 1.0) | (c[:, 3] - c[:, 1] < 1.0))
    keep = ~degenerate & ~outside
    if stats is not None:
        stats.dropped_degenerate += int(degenerate.sum())
        stats.dropped_outside += int(outside.sum())
        stats.clipped += int((keep & (c != b).any(axis=1)).sum())
        stats.boxes += int(keep.sum())
    return c[keep].astype(np.float32), keep


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except OSError as e:
        raise DataLayoutError(f"{path}: cannot read image ({e})") from None


def _make_sample(path: Path, boxes: list, labels: list, ignore: list, image_id: int, stats: BoxStats,
                 size: tuple[int, int] | None = None, segm: list | None = None,
                 mask_file: Path | None = None) -> DetSample:
    w, h = size or _image_size(path)
    kept, keep = validate_boxes(boxes, w, h, stats)
    ign, _ = validate_boxes(ignore, w, h)
    stats.images += 1
    stats.ignored += len(ignore)
    stats.negatives += int(len(kept) == 0)
    segm = [g for g, k in zip(segm, keep, strict=True) if k] if segm is not None else None
    return DetSample(path, w, h, kept, np.asarray(labels, dtype=np.int64).reshape(-1)[keep], ign, image_id,
                     segm, mask_file)


def _is_mask(segm: Any, bbox: list[float]) -> bool:
    """A COCO segmentation that is more than the box itself (HIT-UAV's are 4-corner box polygons)."""
    if isinstance(segm, dict):
        return True
    if not isinstance(segm, list) or not segm:
        return False
    if len(segm) > 1 or len(segm[0]) != 8:
        return True
    x, y, w, h = bbox
    return not (set(segm[0][0::2]) <= {x, x + w} and set(segm[0][1::2]) <= {y, y + h})


def instance_masks(sample: DetSample) -> np.ndarray:
    """uint8 [N, H, W] masks of the sample's boxes at the image's size: decoded COCO segmentations, or the
    pixel mask inside each box (the box itself where the mask has nothing there)."""
    from pycocotools import mask as mask_utils

    h, w = sample.height, sample.width
    out = np.zeros((len(sample.boxes), h, w), dtype=np.uint8)
    pixels = None
    if sample.mask_file is not None and sample.segm is None:
        with Image.open(sample.mask_file) as m:
            pixels = np.asarray(m.convert("L").resize((w, h), Image.NEAREST)) > 0
    for k, box in enumerate(sample.boxes):
        x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
        x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
        seg = sample.segm[k] if sample.segm is not None else None
        if seg:
            rles = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) or isinstance(seg.get("counts"), list) \
                else seg
            out[k] = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles)
        elif pixels is not None:
            out[k, y0:y1, x0:x1] = pixels[y0:y1, x0:x1]
        if not out[k].any():
            out[k, y0:y1, x0:x1] = 1
    return out


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


# ------------------------------------------------------------------------------------------------- coco
def _coco_json(root: Path, split: str) -> Path | None:
    for name in (f"{split}.json", f"instances_{split}.json"):
        if (root / "annotations" / name).is_file():
            return root / "annotations" / name
    return None


def read_coco(root: Path, split: str) -> DetSplit:
    """COCO JSON, incl. HIT-UAV's variant (`annotation`, `filename`, ids from 0; DontCare ignored)."""
    path = _coco_json(root, split)
    if path is None:
        have = sorted(p.stem for p in (root / "annotations").glob("*.json"))
        raise DataLayoutError(f"{root}: no annotations/{split}.json (found: {', '.join(have) or 'none'})")
    try:
        data = json.loads(path.read_text())
        images = data["images"]
        anns = data.get("annotations", data.get("annotation"))
        cats = data["categories"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataLayoutError(f"{path}: not a COCO annotation file ({type(e).__name__}: {e})") from None
    if anns is None:
        raise DataLayoutError(f"{path}: no 'annotations' (or 'annotation') list")
    cat_names = {int(c["id"]): str(c["name"]) for c in cats}
    ignore_ids = {i for i, n in cat_names.items() if n.strip().lower() in IGNORE_NAMES}
    kept_ids = sorted(i for i in cat_names if i not in ignore_ids)
    label_of = {cid: k + 1 for k, cid in enumerate(kept_ids)}
    per_image: dict[int, list[dict]] = {}
    for a in anns:
        per_image.setdefault(int(a["image_id"]), []).append(a)
    stats = BoxStats()
    folders = [root / split, root / "images" / split, root / "images", root]
    samples = []
    has_masks = False
    for im in images:
        name = im.get("file_name", im.get("filename"))
        file = next((f / name for f in folders if name and (f / name).is_file()), None)
        if file is None:
            stats.missing_images += 1
            continue
        boxes, labels, ignore, segm = [], [], [], []
        for a in per_image.get(int(im["id"]), []):
            x, y, w, h = (float(v) for v in a["bbox"])
            cid = int(a["category_id"])
            if cid in ignore_ids or a.get("iscrowd", 0) or a.get("ignore", 0):
                ignore.append([x, y, x + w, y + h])
            elif cid in label_of:
                boxes.append([x, y, x + w, y + h])
                labels.append(label_of[cid])
                segm.append(a.get("segmentation"))
                has_masks = has_masks or _is_mask(a.get("segmentation"), a["bbox"])
            else:
                stats.unknown_class += 1
        samples.append(_make_sample(file, boxes, labels, ignore, int(im["id"]), stats, segm=segm))
    if not samples:
        raise DataLayoutError(f"{path}: none of its {len(images)} images found under {root / split}")
    for smp in samples:  # box-shaped polygons (HIT-UAV) are no masks
        smp.segm = smp.segm if has_masks else None
    return DetSplit("coco", split, root, [cat_names[i] for i in kept_ids], samples, stats, kept_ids)


# -------------------------------------------------------------------------------------------------- voc
def _voc_dirs(root: Path) -> tuple[Path, Path] | None:
    ann = next((root / d for d in _VOC_ANN_DIRS if any((root / d).glob("*.xml"))), None)
    img = next((root / d for d in _VOC_IMG_DIRS if (root / d).is_dir()), None)
    return (ann, img) if ann is not None and img is not None else None


def _voc_split_file(root: Path, split: str) -> Path | None:
    for pattern in _VOC_SPLIT_FILES:
        hits = sorted(root.glob(pattern.format(s=split)))
        if hits:
            return hits[0]
    return None


def _hash_split(stem: str) -> str:
    """The fixed 80/10/10 split used when a VOC folder has no split files (by the file name's sha1)."""
    v = int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) % 10
    return "train" if v < 8 else ("val" if v == 8 else "test")


def _parse_voc(path: Path) -> list[tuple[str, list[float], bool]]:
    """(name, [xmin-1, ymin-1, xmax, ymax], difficult) per object (VOC's 1-based inclusive pixels)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataLayoutError(f"{path}: not a Pascal VOC XML file ({e})") from None
    out = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        name = (obj.findtext("name") or "").strip()
        if bb is None or not name:
            continue
        try:
            xyxy = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            xyxy = [math.nan] * 4  # counted as degenerate
        xyxy[0] -= 1.0
        xyxy[1] -= 1.0
        out.append((name, xyxy, (obj.findtext("difficult") or "0").strip() == "1"))
    return out


def _split_by_mask(mask_file: Path, boxes: list, labels: list, stats: BoxStats) -> tuple[list, list]:
    """SIRST's XML box of an image with several targets encloses them all (Misc_105: two 3x5 px targets in
    one 159x22 box); with the pixel mask, such a box becomes one box per 8-connected target inside it."""
    from skimage.measure import label, regionprops

    with Image.open(mask_file) as m:
        pixels = np.asarray(m.convert("L")) > 0
    regions = regionprops(label(pixels, connectivity=2))
    out_b, out_l = [], []
    for box, lab in zip(boxes, labels, strict=True):
        x0, y0, x1, y1 = box
        inside = [r.bbox for r in regions
                  if x0 - 1 <= r.centroid[1] <= x1 + 1 and y0 - 1 <= r.centroid[0] <= y1 + 1]
        if len(inside) > 1:
            stats.split_by_mask += 1
            out_b += [[c0, r0, c1, r1] for r0, c0, r1, c1 in inside]
            out_l += [lab] * len(inside)
        else:
            out_b.append(box)
            out_l.append(lab)
    return out_b, out_l


def read_voc(root: Path, split: str) -> DetSplit:
    """Pascal VOC XML folders: SIRST, M3FD, VOC (see the module docstring)."""
    dirs = _voc_dirs(root)
    if dirs is None:
        raise DataLayoutError(f"{root}: not a Pascal VOC layout; expected {LAYOUTS_HELP}")
    ann_dir, img_dir = dirs
    parsed = {p.stem: _parse_voc(p) for p in sorted(ann_dir.glob("*.xml"))}
    classes = sorted({n for objs in parsed.values() for n, _, _ in objs if n.lower() not in IGNORE_NAMES})
    label_of = {n: k + 1 for k, n in enumerate(classes)}
    split_file = _voc_split_file(root, split)
    if split_file is not None:
        stems = [s.strip() for s in split_file.read_text().split() if s.strip()]
    elif any(_voc_split_file(root, s) for s in SPLITS):
        raise DataLayoutError(f"{root}: no split file for {split!r} (looked for {', '.join(_VOC_SPLIT_FILES)})")
    else:
        names = sorted({p.stem for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS})
        stems = [s for s in names if _hash_split(s) == split or (split == "trainval" and _hash_split(s) != "test")]
    stats = BoxStats()
    samples = []
    for i, stem in enumerate(stems):
        file = _find_image(img_dir, stem)
        if file is None:
            stats.missing_images += 1
            continue
        boxes, labels, ignore = [], [], []
        for name, xyxy, difficult in parsed.get(stem, []):
            if difficult or name.lower() in IGNORE_NAMES:
                ignore.append(xyxy)
            else:
                boxes.append(xyxy)
                labels.append(label_of[name])
        mask = next((m for m in (ann_dir / f"{stem}_pixels0.png", ann_dir / f"{stem}.png") if m.is_file()), None)
        if mask is not None and boxes:
            boxes, labels = _split_by_mask(mask, boxes, labels, stats)
        samples.append(_make_sample(file, boxes, labels, ignore, i, stats, mask_file=mask))
    if not samples:
        raise DataLayoutError(f"{root}: split {split!r} has no images in {img_dir}")
    return DetSplit("voc", split, root, classes, samples, stats)


# ------------------------------------------------------------------------------------------------- yolo
def _yolo_dirs(root: Path, split: str) -> tuple[Path, Path] | None:
    for s in (split, "valid") if split == "val" else (split,):
        for img, lab in ((root / "images" / s, root / "labels" / s), (root / s / "images", root / s / "labels")):
            if img.is_dir() and lab.is_dir():
                return img, lab
    return None


def _yolo_names(root: Path) -> list[str] | None:
    import yaml

    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        if (root / name).is_file():
            try:
                names = (yaml.safe_load((root / name).read_text()) or {}).get("names")
            except yaml.YAMLError as e:
                raise DataLayoutError(f"{root / name}: not valid YAML ({e})".replace("\n", " ")) from None
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names, key=int)]
            if isinstance(names, list):
                return [str(n) for n in names]
    for name in ("classes.txt", "obj.names"):
        if (root / name).is_file():
            return [line.strip() for line in (root / name).read_text().splitlines() if line.strip()]
    return None


def read_yolo(root: Path, split: str) -> DetSplit:
    """YOLO txt: one `class cx cy w h` row per box (normalized 0-1; polygon rows use their bounding box)."""
    dirs = _yolo_dirs(root, split)
    if dirs is None:
        raise DataLayoutError(f"{root}: no images/{split}/ + labels/{split}/ (or {split}/images + {split}/labels)")
    img_dir, lab_dir = dirs
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    stats = BoxStats()
    rows_of: dict[Path, list[list[float]]] = {}
    max_cls = -1
    for f in files:
        rows = []
        lab = lab_dir / f"{f.stem}.txt"
        for line in lab.read_text().splitlines() if lab.is_file() else []:
            parts = line.split()
            try:
                vals = [float(v) for v in parts]
            except ValueError:
                vals = []
            if len(vals) < 5 or len(vals) % 2 == 0 or vals[0] != int(vals[0]) or vals[0] < 0:
                stats.bad_rows += bool(parts)
                continue
            rows.append(vals)
            max_cls = max(max_cls, int(vals[0]))
        rows_of[f] = rows
    names = _yolo_names(root) or [f"class{i}" for i in range(max_cls + 1)]
    ignore_cls = {i for i, n in enumerate(names) if n.lower() in IGNORE_NAMES}
    kept = [i for i in range(len(names)) if i not in ignore_cls]
    label_of = {c: k + 1 for k, c in enumerate(kept)}
    samples = []
    for i, f in enumerate(files):
        w, h = _image_size(f)
        boxes, labels, ignore = [], [], []
        for vals in rows_of[f]:
            c = int(vals[0])
            if len(vals) == 5:
                cx, cy, bw, bh = vals[1:]
                xyxy = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            else:
                xs, ys = np.asarray(vals[1::2]) * w, np.asarray(vals[2::2]) * h
                xyxy = [xs.min(), ys.min(), xs.max(), ys.max()]
            if c in ignore_cls:
                ignore.append(xyxy)
            elif c in label_of:
                boxes.append(xyxy)
                labels.append(label_of[c])
            else:
                stats.unknown_class += 1
        samples.append(_make_sample(f, boxes, labels, ignore, i, stats, size=(w, h)))
    if not samples:
        raise DataLayoutError(f"{img_dir}: no images")
    return DetSplit("yolo", split, root, [names[c] for c in kept], samples, stats, kept)


# ------------------------------------------------------------------------------------------------ entry
READERS = {"coco": read_coco, "voc": read_voc, "yolo": read_yolo}


def detect_layout(root: Path) -> str:
    """"coco", "voc" or "yolo"; DataLayoutError naming the layouts otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"{root}: not a folder; expected {LAYOUTS_HELP}")
    if any((root / "annotations").glob("*.json")):
        return "coco"
    if any(_yolo_dirs(root, s) for s in ("train", "val", "test")):
        return "yolo"
    if _voc_dirs(root) is not None:
        return "voc"
    raise DataLayoutError(f"{root}: no detection layout found; expected {LAYOUTS_HELP}")


def read_split(root: Path, split: str) -> DetSplit:
    """The split's samples in whichever layout `root` has."""
    if split not in SPLITS:
        raise DataLayoutError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root)
    return READERS[detect_layout(root)](root, split)


# ---------------------------------------------------------------------------------------------- dataset
def resized_size(width: int, height: int, short: float, max_ratio: float = 5 / 3) -> tuple[int, int]:
    """(w, h) with the shorter side `short` and the longer at most `max_ratio * short`, aspect kept."""
    scale = min(short / min(width, height), short * max_ratio / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class DetectionDataset(torch.utils.data.Dataset):
    """(image [3, h, w] float 0-1 gray replicated, target) pairs in torchvision's format.

    The image is resized so its shorter side is `input_size` (longer side at most 5/3 of it); in training the
    size is jittered by `scale_range` and the image flipped horizontally with p=0.5. Target: `boxes` [N, 4]
    xyxy in the resized image's pixels, `labels` [N], `ignore` [M, 4], `scale` [4] (resized / original, to map
    predictions back), `image_id`, `orig_size` (h, w).
    """

    def __init__(self, split: DetSplit, train: bool, input_size: int,
                 scale_range: tuple[float, float] = (0.75, 1.25), max_ratio: float = 5 / 3, masks: bool = False) -> None:
        self.split, self.train, self.input_size = split, train, input_size
        self.scale_range, self.max_ratio = scale_range, max_ratio
        self.masks = masks and split.has_masks

    def __len__(self) -> int:
        return len(self.split.samples)

    @property
    def image_paths(self) -> list[Path]:
        return [s.image for s in self.split.samples]

    @property
    def stats(self) -> dict[str, int]:
        return self.split.stats.as_dict()

    def size_for(self, width: int, height: int, jitter: float = 1.0) -> tuple[int, int]:
        """The (w, h) an image is resized to."""
        return resized_size(width, height, self.input_size * jitter, self.max_ratio)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.split.samples[i]
        gray = load_gray(s.image)
        w0, h0 = gray.size
        jitter = float(torch.empty(()).uniform_(*self.scale_range)) if self.train else 1.0
        w, h = self.size_for(w0, h0, jitter)
        if (w, h) != (w0, h0):
            gray = gray.resize((w, h), Image.BILINEAR)
        scale = torch.tensor([w / w0, h / h0, w / w0, h / h0], dtype=torch.float32)
        boxes = torch.from_numpy(s.boxes).reshape(-1, 4) * scale
        ignore = torch.from_numpy(s.ignore).reshape(-1, 4) * scale
        img = torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0)
        flipped = self.train and bool(torch.rand(()) < 0.5)
        if flipped:
            img = img.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
            ignore = torch.stack([w - ignore[:, 2], ignore[:, 1], w - ignore[:, 0], ignore[:, 3]], dim=1)
        target = {"boxes": boxes, "labels": torch.from_numpy(s.labels).long(), "ignore": ignore, "scale": scale,
                  "image_id": torch.tensor(s.image_id), "orig_size": torch.tensor([h0, w0])}
        if self.masks:
            m = torch.from_numpy(instance_masks(s))
            if not self.train:
                target["masks_orig"] = m
            m = torch.nn.functional.interpolate(m[None].float(), size=(h, w), mode="nearest")[0].to(torch.uint8)
            target["masks"] = m.flip(-1) if flipped else m
        return img.expand(3, -1, -1), target
