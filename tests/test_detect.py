"""The detection task: readers on real HIT-UAV (COCO variant) and SIRST (VOC) files and on generated M3FD / YOLO /
standard-COCO folders built from real images, box validation, augmentation, and a few CPU training steps with
infmae_tiny on 16 HIT-UAV images, then evaluation and predict."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infmae.backbone import InfMAEBackbone
from infmae.tasks import DataLayoutError, get_task
from infmae.tasks.detect import InfMAEFasterRCNN, InfMAEMaskRCNN
from infmae.tasks.detect_data import (
    BoxStats,
    DetectionDataset,
    detect_layout,
    instance_masks,
    read_split,
    validate_boxes,
)

HITUAV_CLASSES = ["Person", "Car", "Bicycle", "OtherVehicle"]


# ---------------------------------------------------------------------------------------------- readers
def test_hituav_coco_variant(hituav_dir: Path):
    raw = json.loads((hituav_dir / "annotations" / "train.json").read_text())
    assert "annotation" in raw and "annotations" not in raw and "filename" in raw["images"][0]  # the variant
    dontcare = {c["id"] for c in raw["categories"] if c["name"] == "DontCare"}
    sp = read_split(hituav_dir, "train")
    assert (sp.layout, sp.classes) == ("coco", HITUAV_CLASSES)
    assert sp.category_ids == [0, 1, 2, 3]
    assert len(sp.samples) == len(raw["images"])
    n_dontcare = sum(a["category_id"] in dontcare for a in raw["annotation"])
    assert n_dontcare > 0 and sp.stats.ignored == n_dontcare
    assert sp.stats.boxes + sp.stats.ignored + sp.stats.dropped_degenerate + sp.stats.dropped_outside == len(raw["annotation"])
    first = raw["annotation"][0]  # category 0 (Person) becomes label 1: torchvision's 0 is the background
    sample = next(s for s in sp.samples if s.image_id == first["image_id"])
    x, y, w, h = first["bbox"]
    row = np.flatnonzero((np.abs(sample.boxes - [x, y, x + w, y + h]) < 1e-4).all(axis=1))
    assert len(row) == 1 and sample.labels[row[0]] == first["category_id"] + 1
    assert all(s.labels.min(initial=1) >= 1 and s.labels.max(initial=1) <= 4 for s in sp.samples)
    assert not sp.has_masks  # its polygons are the boxes' four corners: no instance masks
    with pytest.raises(DataLayoutError, match="no annotations/test.json"):
        read_split(hituav_dir, "test")


def _xml_box(path: Path) -> list[float]:
    obj = ET.parse(path).getroot().find("object/bndbox")
    x0, y0, x1, y1 = (float(obj.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    return [x0 - 1, y0 - 1, x1, y1]  # VOC's 1-based inclusive pixels


def test_sirst_voc_xml(sirst_dir: Path):
    stems = (sirst_dir / "idx_427" / "test.txt").read_text().split()
    sp = read_split(sirst_dir, "test")
    assert (sp.layout, sp.classes, len(sp.samples)) == ("voc", ["Target"], len(stems))
    assert [s.image.stem for s in sp.samples] == stems and sp.has_masks
    single = [s for s in sp.samples if len(s.boxes) == 1]
    assert len(single) > 0.7 * len(stems)
    for s in single[:10]:
        assert s.boxes.tolist() == [_xml_box(sirst_dir / "masks" / f"{s.image.stem}.xml")]
        assert (s.width, s.height) == Image.open(s.image).size
    # several boxes: SIRST's XML box enclosed several targets of the pixel mask; one box per target now
    multi = [s for s in sp.samples if len(s.boxes) > 1]
    assert len(multi) == sp.stats.split_by_mask > 0


def test_sirst_union_box_split_by_the_pixel_mask(sirst_dir: Path):
    """Misc_105 (val): the XML has one 159x22 px box around two tiny targets."""
    sp = read_split(sirst_dir, "val")
    s = next(x for x in sp.samples if x.image.stem == "Misc_105")
    ux0, uy0, ux1, uy1 = _xml_box(sirst_dir / "masks" / "Misc_105.xml")
    assert ux1 - ux0 > 100 and len(s.boxes) == 2
    mask = np.asarray(Image.open(sirst_dir / "masks" / "Misc_105_pixels0.png").convert("L")) > 0
    covered = np.zeros_like(mask)
    for x0, y0, x1, y1 in s.boxes.astype(int):
        # inside the XML box, up to SIRST's off-by-one (its XML mixes 0- and 1-based pixel numbers)
        assert ux0 - 1 <= x0 < x1 <= ux1 + 1 and uy0 - 1 <= y0 < y1 <= uy1 + 1 and (x1 - x0) * (y1 - y0) < 50
        assert mask[y0:y1, x0:x1].any()
        covered[y0:y1, x0:x1] = True
    assert not (mask & ~covered).any()  # every target pixel is in a box
    masks = instance_masks(s)
    assert masks.shape == (2, s.height, s.width) and (masks.sum(axis=(1, 2)) > 0).all()
    assert not (masks[0] & masks[1]).any()


def _write_voc(path: Path, objects: list[tuple[str, tuple[int, int, int, int], int]]) -> None:
    rows = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
    path.write_text(f"<annotation><filename>{path.stem}.png</filename>{rows}</annotation>")


def test_m3fd_layout_validation_and_hash_split(tmp_path: Path, sirst_dir: Path):
    """M3FD_Detection: Ir/NNNNN.png + Annotation/NNNNN.xml, no split files (a fixed hash split)."""
    (tmp_path / "Ir").mkdir()
    (tmp_path / "Vis").mkdir()
    (tmp_path / "Annotation").mkdir()
    sources = sorted((sirst_dir / "images").glob("*.png"))[:50]  # 50 names: each split of the hash split gets some
    for i, src in enumerate(sources):
        Image.open(src).convert("L").save(tmp_path / "Ir" / f"{i:05d}.png")
    w, h = Image.open(tmp_path / "Ir" / "00000.png").size
    _write_voc(tmp_path / "Annotation" / "00000.xml", [
        ("People", (11, 21, 30, 40), 0),            # kept as is
        ("Car", (w - 9, 5, w + 20, 25), 0),         # crosses the right edge: clipped
        ("Car", (50, 50, 45, 70), 0),               # xmax < xmin: degenerate
        ("People", (w + 5, 5, w + 30, 25), 0),      # entirely outside: dropped
        ("Truck", (60, 60, 80, 80), 1),             # difficult: an ignore region
    ])
    for i in range(1, 12):
        if i != 3:  # 00003 has no XML: a negative
            _write_voc(tmp_path / "Annotation" / f"{i:05d}.xml", [("People", (10, 10, 20, 20), 0)])
    assert detect_layout(tmp_path) == "voc"
    splits = {s: read_split(tmp_path, s) for s in ("train", "val", "test")}
    names = [sorted(x.image.name for x in sp.samples) for sp in splits.values()]
    assert all(names) and sorted(sum(names, [])) == [f"{i:05d}.png" for i in range(50)]  # a partition
    stats = BoxStats()
    for sp in splits.values():
        assert sp.classes == ["Car", "People", "Truck"]
        for k, v in sp.stats.as_dict().items():
            setattr(stats, k, getattr(stats, k) + v)
    assert (stats.images, stats.boxes, stats.clipped, stats.dropped_degenerate, stats.dropped_outside,
            stats.ignored, stats.negatives) == (50, 12, 1, 1, 1, 1, 39)
    s0 = next(s for sp in splits.values() for s in sp.samples if s.image.name == "00000.png")
    assert s0.boxes.tolist() == [[10, 20, 30, 40], [w - 10, 4, w, 25]] and s0.labels.tolist() == [2, 1]
    assert s0.ignore.tolist() == [[59, 59, 80, 80]]


def test_yolo_folder_agrees_with_coco_reader(tmp_path: Path, hituav_dir: Path):
    coco = read_split(hituav_dir, "val")
    picked = coco.samples[:4]
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("names: {0: Person, 1: Car, 2: Bicycle, 3: OtherVehicle}\n")
    for i, s in enumerate(picked):
        shutil.copy(s.image, tmp_path / "images" / "val" / s.image.name)
        if i == 3:
            continue  # no label file: a negative
        rows = [f"{lab - 1} {(b[0] + b[2]) / 2 / s.width:.8f} {(b[1] + b[3]) / 2 / s.height:.8f} "
                f"{(b[2] - b[0]) / s.width:.8f} {(b[3] - b[1]) / s.height:.8f}" for b, lab in zip(s.boxes, s.labels, strict=True)]
        (tmp_path / "labels" / "val" / f"{s.image.stem}.txt").write_text("\n".join(rows + ["not a row"]) + "\n")
    assert detect_layout(tmp_path) == "yolo"
    sp = read_split(tmp_path, "val")
    assert sp.classes == HITUAV_CLASSES and sp.stats.bad_rows == 3 and sp.stats.negatives >= 1
    by_name = {s.image.name: s for s in sp.samples}
    for s in picked[:3]:
        got = by_name[s.image.name]
        np.testing.assert_allclose(got.boxes, s.boxes, atol=1e-3)
        assert got.labels.tolist() == s.labels.tolist()
    assert len(by_name[picked[3].image.name].boxes) == 0


def test_standard_coco_with_crowd(tmp_path: Path, hituav_dir: Path):
    src = sorted((hituav_dir / "val").glob("*.jpg"))[:2]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "test").mkdir()
    for p in src:
        shutil.copy(p, tmp_path / "test" / p.name)
    data = {"images": [{"id": 7 + i, "file_name": p.name, "width": 640, "height": 512} for i, p in enumerate(src)],
            "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 12, 20], "iscrowd": 0},
                {"id": 2, "image_id": 7, "category_id": 3, "bbox": [600, 500, 80, 30], "iscrowd": 0},
                {"id": 3, "image_id": 8, "category_id": 3, "bbox": [100, 100, 50, 50], "iscrowd": 1},
                {"id": 4, "image_id": 8, "category_id": 1, "bbox": [200, 200, 40, 40], "iscrowd": 0,
                 "segmentation": [[200, 200, 240, 200, 200, 240]]}]}  # a triangle: a real instance mask
    (tmp_path / "annotations" / "test.json").write_text(json.dumps(data))
    sp = read_split(tmp_path, "test")
    assert sp.classes == ["person", "car"] and sp.category_ids == [1, 3]
    a, b = sp.samples
    assert a.boxes.tolist() == [[10, 10, 22, 30], [600, 500, 640, 512]] and a.labels.tolist() == [1, 2]
    assert sp.stats.clipped == 1 and b.boxes.tolist() == [[200, 200, 240, 240]]
    assert b.ignore.tolist() == [[100, 100, 150, 150]]
    assert sp.has_masks
    tri = instance_masks(b)[0]
    assert abs(int(tri.sum()) - 800) < 60 and tri[205, 205] and not tri[235, 235]  # half the 40x40 box
    assert instance_masks(a)[0][10:30, 10:22].all()  # no segmentation: the box


def test_layout_errors_name_the_layouts(tmp_path: Path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "a.txt").write_text("x")
    with pytest.raises(DataLayoutError, match="COCO JSON.*Pascal VOC.*YOLO") as e:
        get_task("detect").detect_layout(tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(DataLayoutError, match="not a folder"):
        detect_layout(tmp_path / "missing")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text("{broken")
    with pytest.raises(DataLayoutError, match="not a COCO annotation file"):
        read_split(tmp_path, "train")


def test_validate_boxes_counts():
    stats = BoxStats()
    boxes, keep = validate_boxes([[0, 0, 10, 10], [-5, -5, 4, 4], [3, 3, 3.5, 9], [20, 20, 30, 30],
                                  [float("nan"), 0, 1, 1]], width=16, height=16, stats=stats)
    assert keep.tolist() == [True, True, False, False, False]
    assert boxes.tolist() == [[0, 0, 10, 10], [0, 0, 4, 4]]
    assert (stats.boxes, stats.clipped, stats.dropped_degenerate, stats.dropped_outside) == (2, 1, 2, 1)


def test_dataset_resize_and_flip_keep_boxes_on_the_objects(hituav_dir: Path):
    sp = read_split(hituav_dir, "val")
    sample_idx = next(i for i, s in enumerate(sp.samples) if len(s.boxes) >= 3)
    s = sp.samples[sample_idx]
    ev = DetectionDataset(sp, train=False, input_size=256)
    img, t = ev[sample_idx]
    assert img.shape == (3, 256, 320) and torch.equal(img[0], img[2])
    torch.testing.assert_close(t["boxes"], torch.from_numpy(s.boxes) * 0.5)
    tr = DetectionDataset(sp, train=True, input_size=256, scale_range=(1.0, 1.0))
    torch.manual_seed(0)
    flips = 0
    for _ in range(8):
        fimg, ft = tr[sample_idx]
        flipped = not torch.equal(fimg, img)
        flips += flipped
        for b0, b1 in zip(t["boxes"], ft["boxes"], strict=True):
            x0, y0, x1, y1 = (int(round(float(v))) for v in b0)
            u0, v0, u1, v1 = (int(round(float(v))) for v in b1)
            assert torch.equal(fimg[0, v0:v1, u0:u1], img[0, y0:y1, x0:x1].flip(-1) if flipped else img[0, y0:y1, x0:x1])
    assert 0 < flips < 8
    jit = DetectionDataset(sp, train=True, input_size=256)
    sizes = {tuple(jit[sample_idx][0].shape[-2:]) for _ in range(6)}
    assert len(sizes) > 1 and all(192 <= h <= 320 for h, _ in sizes)  # scale jitter 0.75-1.25


# ------------------------------------------------------------------------------------------- end to end
def test_train_evaluate_predict_infmae_tiny_on_16_hituav_images(hituav_dir: Path, tmp_path: Path):
    torch.manual_seed(0)
    task = get_task("detect")({"fpn_channels": 64, "box_head_dim": 256})
    assert task.defaults["lr"] == 1e-4 and task.defaults["weight_decay"] == 0.1
    train = task.dataset(hituav_dir, "train", True, 256)
    val = task.dataset(hituav_dir, "val", False, 256)
    model = task.build_model(InfMAEBackbone("infmae_tiny"))
    assert isinstance(model, InfMAEFasterRCNN) and task.options["masks"] is False
    assert model.transform.image_mean == [0.425] * 3 and model.transform.image_std == [0.2] * 3
    groups = model.param_groups(0.1, 0.75)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    backbone_ids = {id(p) for p in model.backbone.body.parameters()}
    assert all(g["lr_scale"] == 1.0 for g in groups if id(g["params"][0]) not in backbone_ids)
    assert min(g["lr_scale"] for g in groups) < 0.5

    opt = torch.optim.AdamW([{**g, "lr": 1e-4 * g["lr_scale"]} for g in groups], weight_decay=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train, range(16)), batch_size=2, shuffle=True,
                                         collate_fn=task.collate)
    fixed = task.collate([train[0], train[1]])
    model.train()
    first, _ = task.loss(model, fixed, torch.device("cpu"))
    for batch in loader:  # one epoch over the 16 images
        loss, logs = task.loss(model, batch, torch.device("cpu"))
        assert torch.isfinite(loss) and {"loss_classifier", "loss_objectness"} <= set(logs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    after, _ = task.loss(model, fixed, torch.device("cpu"))
    assert float(after.detach()) < float(first.detach())

    result = task.evaluate(model, torch.utils.data.Subset(val, range(4)), torch.device("cpu"))
    assert set(task.table_columns()) <= set(result) and result["images"] == 4
    assert 0.0 <= result["map50"] <= 1.0 and result["gt_boxes"] > 0

    images = [val.split.samples[0].image, val.split.samples[1].image]
    out = task.predict(model, images, tmp_path / "pred", torch.device("cpu"), save_json=True, draw_thresh=0.0)
    assert [p.name for p in out] == [f"{images[0].stem}.det.png", f"{images[1].stem}.det.png", "detections.json"]
    drawn = np.asarray(Image.open(out[0]))
    assert drawn.shape == (512, 640, 3)
    dets = json.loads(out[2].read_text())
    assert dets and {d["category"] for d in dets} <= set(HITUAV_CLASSES)
    assert all(0 <= d["bbox"][0] and d["bbox"][0] + d["bbox"][2] <= 640.01 and d["category_id"] in (0, 1, 2, 3)
               for d in dets)
    # coloured boxes were drawn on the gray image
    assert (drawn[..., 0] != drawn[..., 1]).any()


def _hituav_style_folder(src: Path, dst: Path, counts: dict[str, tuple[str, int, int]]) -> Path:
    """A HIT-UAV-style folder (its COCO variant) with a few real images per split: split -> (source split,
    offset, count)."""
    (dst / "annotations").mkdir(parents=True)
    for split, (from_split, offset, n) in counts.items():
        raw = json.loads((src / "annotations" / f"{from_split}.json").read_text())
        images = raw["images"][offset:offset + n]
        ids = {im["id"] for im in images}
        (dst / split).mkdir()
        for im in images:
            shutil.copy(src / from_split / im["filename"], dst / split / im["filename"])
        sub = dict(raw, images=images, annotation=[a for a in raw["annotation"] if a["image_id"] in ids])
        (dst / "annotations" / f"{split}.json").write_text(json.dumps(sub))
    return dst


def test_finetune_engine_then_evaluate_test_split(hituav_dir: Path, tmp_path: Path):
    """`infmae.finetune` (the engine behind `infmae finetune detect`) on a HIT-UAV-style folder, then
    `evaluate_run(..., split="test")` (behind `infmae evaluate RUN --data DIR --split test`) and predict."""
    from infmae.finetune import FinetuneConfig, evaluate_run, finetune, predict_run

    data = _hituav_style_folder(hituav_dir, tmp_path / "data",
                                {"train": ("train", 0, 8), "val": ("val", 0, 2), "test": ("val", 100, 2)})
    run = tmp_path / "run"
    options = {"fpn_channels": 64, "box_head_dim": 256}
    result = finetune(FinetuneConfig(
        task="detect", data=str(data), out=str(run), preset="infmae_tiny", max_steps=2, epochs=1, batch=2,
        input_size=256, workers=0, device="cpu", progress=False, tensorboard=False, vis_count=1,
        task_options=dict(options)))
    assert result["step"] == 2
    saved = json.loads((run / "results.json").read_text())
    assert saved["layout"] == "coco" and saved["columns"] == [f"ap50/{c}" for c in HITUAV_CLASSES] + ["map", "map50"]
    assert saved["config"]["task_options"]["classes"] == HITUAV_CLASSES  # found in the data, kept for evaluate
    assert saved["test"]["images"] == 2 and saved["test"]["data"]["boxes"] > 0
    again = evaluate_run(run, data, split="test", device="cpu")
    assert again["map"] == pytest.approx(saved["test"]["map"], nan_ok=True)
    assert again["detections"] == saved["test"]["detections"]
    image = next((data / "test").iterdir())
    paths = predict_run(run, [image], tmp_path / "pred", device="cpu", save_json=True)
    assert [p.name for p in paths] == [f"{image.stem}.det.png", "detections.json"]
    assert list((run / "predictions").glob("*.det.png"))


def _train_steps(task, model, train, steps: int = 3) -> tuple[list[float], dict]:
    """``steps`` AdamW steps (layer decay 0.75) on the first two training samples: the losses and the last
    step's logged terms."""
    opt = torch.optim.AdamW(model.param_groups(0.1, 0.75), lr=1e-4)
    batch = task.collate([train[0], train[1]])
    model.train()
    losses = []
    for _ in range(steps):
        loss, logs = task.loss(model, batch, torch.device("cpu"))
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses, logs


def test_mask_rcnn_on_sirst_pixel_masks(sirst_dir: Path, tmp_path: Path):
    """SIRST has pixel masks: `masks="auto"` builds Mask R-CNN; its loss, mask metrics and drawn masks."""
    torch.manual_seed(0)
    task = get_task("detect")({"fpn_channels": 64, "box_head_dim": 256, "mask_dim": 32})
    train = task.dataset(sirst_dir, "train", True, 256)
    model = task.build_model(InfMAEBackbone("infmae_tiny"))
    assert isinstance(model, InfMAEMaskRCNN) and task.options["masks"] is True
    for i in range(6):  # resized, jittered and flipped masks stay inside their boxes
        img, t = train[i]
        assert t["masks"].shape[0] == len(t["boxes"]) and t["masks"].shape[-2:] == img.shape[-2:]
        for m, (x0, y0, x1, y1) in zip(t["masks"], t["boxes"].tolist(), strict=True):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert len(xs) and x0 - 1.5 <= xs.min() and xs.max() <= x1 + 0.5 and y0 - 1.5 <= ys.min() and ys.max() <= y1 + 0.5
    losses, logs = _train_steps(task, model, train)
    assert "loss_mask" in logs and losses[-1] < losses[0]
    test = task.dataset(sirst_dir, "test", False, 256)
    result = task.evaluate(model, torch.utils.data.Subset(test, range(2)), torch.device("cpu"))
    assert {"mask_map", "mask_map50", "mask_ap50/Target"} <= set(result) and "mask_map" in task.table_columns()
    out = task.predict(model, [test.split.samples[0].image], tmp_path, torch.device("cpu"), draw_thresh=0.0)
    assert out[0].is_file()


def test_cascade_head_trains_and_predicts(hituav_dir: Path):
    """`head="cascade"` (`infmae finetune detect --head cascade`): three box stages at IoU 0.5 / 0.6 / 0.7."""
    torch.manual_seed(0)
    task = get_task("detect")({"fpn_channels": 64, "box_head_dim": 128, "head": "cascade"})
    train = task.dataset(hituav_dir, "train", True, 256)
    model = task.build_model(InfMAEBackbone("infmae_tiny"))
    heads = model.roi_heads
    assert [m.high_threshold for m in heads.matchers] == [0.5, 0.6, 0.7] and len(heads.heads) == 3
    assert not any(k.startswith(("roi_heads.box_head.", "roi_heads.box_predictor.")) for k in model.state_dict())
    totals, logs = _train_steps(task, model, train)
    assert {f"loss_classifier_{t}" for t in range(3)} <= set(logs) and totals[-1] < totals[0]
    assert all(p.grad is not None for p in heads.heads[2].parameters())
    val = task.dataset(hituav_dir, "val", False, 256)
    result = task.evaluate(model, torch.utils.data.Subset(val, range(2)), torch.device("cpu"))
    assert result["detections"] > 0 and 0.0 <= result["map50"] <= 1.0
    with pytest.raises(ValueError, match="unknown head"):
        get_task("detect")({"head": "retinanet"})
