"""The segment task: real SIRST masks as a 2-class problem, a small generated multi-class MSRS-layout set
with known answers, layout errors, FCN / UperNet heads, sliding-window inference and prediction files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from infmae.backbone import InfMAEBackbone
from infmae.heads import FCNHead, UperHead
from infmae.tasks import DataLayoutError, get_task
from infmae.tasks.dense import sliding_window, window_starts
from infmae.tasks.irstd import read_mask
from infmae.tasks.segment import MSRS_CLASSES, SegmentTask

CPU = torch.device("cpu")
SIRST_TRAIN = ["Misc_1", "Misc_125", "Misc_104"]  # modes L, P, RGB
SIRST_TEST = ["Misc_70", "Misc_214"]


@pytest.fixture()
def sirst2(sirst_dir: Path, tmp_path: Path) -> Path:
    """Real SIRST images and masks as a generic 2-class layout (labels 0 background, 1 target)."""
    root = tmp_path / "sirst2"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for n in SIRST_TRAIN + SIRST_TEST:
        (root / "images" / f"{n}.png").symlink_to(sirst_dir / "images" / f"{n}.png")
        Image.fromarray(read_mask(sirst_dir / "masks" / f"{n}_pixels0.png").astype(np.uint8)).save(
            root / "labels" / f"{n}.png")
    (root / "classes.txt").write_text("background\ntarget\n")
    (root / "train.txt").write_text("\n".join(SIRST_TRAIN))
    (root / "test.txt").write_text("\n".join(SIRST_TEST))
    return root


def scene(seed: int, h: int = 40, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """A generated infrared-like image and its labels: class k is a rectangle of brightness 30 k, with an
    unlabelled (255) strip at the bottom."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), dtype=np.uint8)
    for k in range(1, 9):
        t, left = rng.integers(0, h - 8), rng.integers(0, w - 10)
        lab[t : t + 6, left : left + 8] = k
    lab[-3:] = 255
    img = np.where(lab == 255, 0, lab.astype(np.int32) * 30).clip(0, 255).astype(np.uint8)
    return img, lab


@pytest.fixture()
def msrs(tmp_path: Path) -> Path:
    """A small MSRS-layout set: {train,test}/ir/*.png and {train,test}/Segmentation_labels/*.png."""
    root = tmp_path / "msrs"
    for split, seeds in (("train", range(4)), ("test", range(10, 12))):
        (root / split / "ir").mkdir(parents=True)
        (root / split / "Segmentation_labels").mkdir()
        (root / split / "vi").mkdir()  # the visible images MSRS also ships: not read
        for s in seeds:
            img, lab = scene(s)
            Image.fromarray(img).convert("RGB").save(root / split / "ir" / f"{s:05d}N.png")
            Image.fromarray(lab).save(root / split / "Segmentation_labels" / f"{s:05d}N.png")
    return root


class Oracle(nn.Module):
    """Logits that give the given label maps, in order (stands in for a trained model)."""

    def __init__(self, labels: list[np.ndarray], k: int) -> None:
        super().__init__()
        self.labels, self.k = list(labels), k

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        lab = torch.from_numpy(self.labels.pop(0).astype(np.int64)).clamp(0, self.k - 1)
        assert lab.shape == imgs.shape[-2:]
        return torch.nn.functional.one_hot(lab, self.k).permute(2, 0, 1)[None].float()


def test_layouts(sirst2: Path, msrs: Path, tmp_path: Path) -> None:
    assert get_task("segment") is SegmentTask
    assert SegmentTask.detect_layout(msrs) == "msrs"
    assert SegmentTask.classes(msrs) == list(MSRS_CLASSES) and len(MSRS_CLASSES) == 9
    assert SegmentTask.splits(msrs) == ["test", "train"]
    assert SegmentTask.detect_layout(sirst2) == "generic"
    assert SegmentTask.classes(sirst2) == ["background", "target"]
    assert SegmentTask.splits(sirst2) == ["test", "train"]
    with pytest.raises(DataLayoutError, match="msrs.*generic") as info:
        SegmentTask.detect_layout(tmp_path / "sirst2" / "labels")
    assert "\n" not in str(info.value)
    (sirst2 / "classes.txt").unlink()
    with pytest.raises(DataLayoutError, match="no class-name file"):
        SegmentTask.detect_layout(sirst2)


def test_bad_labels_name_the_file(msrs: Path) -> None:
    lab_path = msrs / "train" / "Segmentation_labels" / "00001N.png"
    lab = np.asarray(Image.open(lab_path)).copy()
    lab[0, 0] = 12  # not one of the 9 classes, not 255
    Image.fromarray(lab).save(lab_path)
    ds = SegmentTask({"head": "fcn"}).dataset(msrs, "train", train=False, input_size=32)
    with pytest.raises(DataLayoutError, match=r"00001N\.png: label value 12 is not a class"):
        ds[1]
    Image.fromarray(lab[:-1]).save(lab_path)
    with pytest.raises(DataLayoutError, match=r"00001N\.png: label size 56x39 does not match"):
        SegmentTask().dataset(msrs, "train", train=False, input_size=32)
    lab_path.unlink()
    with pytest.raises(DataLayoutError, match="no label map 00001N.png"):
        SegmentTask().dataset(msrs, "train", train=False, input_size=32)


def test_unknown_head() -> None:
    with pytest.raises(ValueError, match="fcn"):
        SegmentTask({"head": "deeplab"})


def test_sirst_two_class_known_answers(sirst2: Path, sirst_dir: Path) -> None:
    task = SegmentTask({"head": "fcn"})
    ds = task.dataset(sirst2, "test", train=False, input_size=512)
    assert task.options["num_classes"] == 2
    gts = [ds[i][1].numpy() for i in range(len(ds))]
    for g, name in zip(gts, SIRST_TEST, strict=True):
        assert np.array_equal(g, read_mask(sirst_dir / "masks" / f"{name}_pixels0.png"))
    assert task.evaluate(Oracle(gts, 2), ds, CPU)["miou"] == 1.0
    # predicting background everywhere: background IoU = share of background pixels, target IoU 0
    r = task.evaluate(Oracle([np.zeros_like(g) for g in gts], 2), ds, CPU)
    bg = sum(int((g == 0).sum()) for g in gts) / sum(g.size for g in gts)
    assert r["iou_per_class"] == pytest.approx([bg, 0.0])
    assert r["miou"] == pytest.approx(bg / 2) and r["aacc"] == pytest.approx(bg) and r["macc"] == 0.5
    assert r["iou_by_class"] == {"background": pytest.approx(bg), "target": 0.0}


def test_msrs_known_answers(msrs: Path) -> None:
    task = SegmentTask()
    ds = task.dataset(msrs, "test", train=False, input_size=512)
    assert task.options["num_classes"] == 9 and len(ds) == 2
    gts = [scene(s)[1] for s in (10, 11)]
    for i, g in enumerate(gts):
        img, lab = ds[i]
        assert np.array_equal(lab.numpy(), g)
        assert img.shape == (1, *g.shape)
    r = task.evaluate(Oracle(gts, 9), ds, CPU)
    assert (r["miou"], r["macc"], r["aacc"]) == (1.0, 1.0, 1.0)
    # predicting class 1 everywhere: IoU(1) = |truth 1| / |labelled|, every other class 0
    r = task.evaluate(Oracle([np.ones_like(g) for g in gts], 9), ds, CPU)
    labelled = sum(int((g != 255).sum()) for g in gts)
    ones = sum(int((g == 1).sum()) for g in gts)
    present = sorted({int(v) for g in gts for v in np.unique(g) if v != 255} | {1})
    assert r["iou_per_class"][1] == pytest.approx(ones / labelled)
    assert r["aacc"] == pytest.approx(ones / labelled)
    assert r["miou"] == pytest.approx(ones / labelled / len(present))


def test_train_items_pad_with_ignore(msrs: Path) -> None:
    ds = SegmentTask().dataset(msrs, "train", train=True, input_size=64)  # larger than the 56x40 images
    torch.manual_seed(0)
    img, lab = ds[0]
    assert img.shape == (1, 64, 64) and lab.shape == (64, 64) and lab.dtype == torch.int64
    assert (lab == 255).any() and set(torch.unique(lab).tolist()) <= set(range(9)) | {255}


@pytest.mark.parametrize("head", ["fcn", "upernet"])
def test_heads_forward_backward_and_learn(msrs: Path, head: str) -> None:
    torch.manual_seed(0)
    task = SegmentTask({"head": head})
    ds = task.dataset(msrs, "train", train=True, input_size=48)
    model = task.build_model(InfMAEBackbone("infmae_tiny"))
    assert isinstance(model.head, FCNHead if head == "fcn" else UperHead)
    out = model(torch.rand(1, 1, 50, 70))  # not a multiple of 32: padded and cropped back
    assert out.shape == (1, 9, 50, 70)
    batch = task.collate([ds[i] for i in range(4)])
    opt = torch.optim.AdamW(model.param_groups(0.05, 0.75), lr=1e-3)
    losses = []
    for _ in range(8):
        loss, logs = task.loss(model, batch, CPU)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["ce"])
    assert losses[-1] < 0.8 * losses[0]


def test_sliding_window_equals_whole_image_for_a_local_model() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 1)  # per-pixel: windows must reassemble the whole-image answer exactly
    x = torch.rand(1, 1, 70, 101)
    assert torch.allclose(sliding_window(conv, x, crop=32), conv(x), atol=1e-6)
    assert window_starts(70, 32, 21) == [0, 21, 38]
    assert window_starts(20, 32, 21) == [0]


def test_predict_writes_label_maps(msrs: Path, tmp_path: Path) -> None:
    task = SegmentTask({"head": "fcn"})
    task.dataset(msrs, "train", train=False, input_size=32)
    model = task.build_model(InfMAEBackbone("infmae_tiny"))
    image = msrs / "test" / "ir" / "00010N.png"
    paths = task.predict(model, [image], tmp_path / "out", CPU, input_size=32, save_json=True)
    assert sorted(p.name for p in paths) == ["00010N.json", "00010N_labels.png", "00010N_overlay.png"]
    labels = Image.open(tmp_path / "out" / "00010N_labels.png")
    assert labels.mode == "P" and labels.size == (56, 40) and np.asarray(labels).max() < 9
    assert Image.open(tmp_path / "out" / "00010N_overlay.png").size == (3 * 56 + 2 * 4, 40)  # with ground truth
    share = json.loads((tmp_path / "out" / "00010N.json").read_text())["pixel_share"]
    assert list(share) == list(MSRS_CLASSES) and sum(share.values()) == pytest.approx(1.0)
