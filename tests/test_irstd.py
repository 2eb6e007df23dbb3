"""The irstd task on the real SIRST data: layouts, reading (modes, sizes, padding), the model, the loss,
evaluation and prediction files. The fine-tuning engine is tested in test_finetune.py."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from infmae.backbone import InfMAEBackbone
from infmae.tasks import DataLayoutError, get_task
from infmae.tasks.irstd import IRSTDTask, read_mask, soft_iou_loss

# real SIRST train images of each PNG mode
MODES = {"L": "Misc_1", "P": "Misc_125", "RGB": "Misc_104"}
CPU = torch.device("cpu")


def basic_layout(sirst: Path, root: Path, tag: str, names: list[str], test: list[str]) -> Path:
    """SIRST images re-laid out as the BasicIRSTD toolbox has them (masks/NAME.png 0/255, img_idx/)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "img_idx").mkdir()
    for n in names + test:
        (root / "images" / f"{n}.png").symlink_to(sirst / "images" / f"{n}.png")
        mask = read_mask(sirst / "masks" / f"{n}_pixels0.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{n}.png")
    (root / "img_idx" / f"train_{tag}.txt").write_text("\n".join(names) + "\n")
    (root / "img_idx" / f"test_{tag}.txt").write_text("\n".join(test) + "\n")
    return root


def test_registered_and_detects_real_sirst(sirst_dir: Path) -> None:
    assert get_task("irstd") is IRSTDTask
    assert IRSTDTask.detect_layout(sirst_dir) == "sirst"
    assert {"train", "val", "test"} <= set(IRSTDTask.splits(sirst_dir))


def test_layout_errors_name_the_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="sirst.*irstd-1k") as info:
        IRSTDTask.detect_layout(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()  # folders but no split files
    with pytest.raises(DataLayoutError, match="no infrared small-target layout"):
        IRSTDTask.detect_layout(tmp_path)
    with pytest.raises(DataLayoutError, match="not a folder"):
        IRSTDTask.detect_layout(tmp_path / "missing")


@pytest.mark.parametrize(("tag", "layout"), [("IRSTD-1K", "irstd-1k"), ("NUDT-SIRST", "nudt-sirst")])
def test_basicirstd_layouts(sirst_dir: Path, tmp_path: Path, tag: str, layout: str) -> None:
    root = basic_layout(sirst_dir, tmp_path / tag, tag, ["Misc_1", "Misc_125"], ["Misc_104"])
    assert IRSTDTask.detect_layout(root) == layout
    assert IRSTDTask.splits(root) == ["test", "train"]
    task = IRSTDTask()
    ds = task.dataset(root, "train", train=False, input_size=64)
    ref = task.dataset(sirst_dir, "train", train=False, input_size=64)
    by_name = {s.name: i for i, s in enumerate(ref.samples)}
    for i, s in enumerate(ds.samples):
        img, mask = ds[i]
        rimg, rmask = ref[by_name[s.name]]
        assert torch.equal(img, rimg) and torch.equal(mask, rmask)
    with pytest.raises(DataLayoutError, match="no split 'val'.*test, train"):
        task.dataset(root, "val", train=False, input_size=64)


def test_missing_mask_is_a_one_line_error(sirst_dir: Path, tmp_path: Path) -> None:
    root = basic_layout(sirst_dir, tmp_path / "d", "NUDT-SIRST", ["Misc_1"], ["Misc_104"])
    (root / "masks" / "Misc_1.png").unlink()
    with pytest.raises(DataLayoutError, match="mask of 'Misc_1' not found"):
        IRSTDTask().dataset(root, "train", train=True, input_size=64)


def test_mismatched_mask_real_sirst(sirst_dir: Path) -> None:
    # SIRST's Misc_111 (test split) has a 325x220 image and a 592x400 mask
    with pytest.raises(DataLayoutError, match=r"Misc_111_pixels0\.png: label size 592x400") as info:
        IRSTDTask({"mismatch": "error"}).dataset(sirst_dir, "test", train=False, input_size=64)
    assert "\n" not in str(info.value)
    with pytest.warns(UserWarning, match="Misc_111_pixels0.png"):
        ds = IRSTDTask().dataset(sirst_dir, "test", train=False, input_size=64)
    assert [s.name for s in ds.samples if s.name == "Misc_111"] == []
    assert len(ds.skipped) == 1 and "Misc_111" in ds.skipped[0]
    names = (sirst_dir / "idx_427" / "test.txt").read_text().split()
    assert len(ds) == len(names) - 1


def test_fixed_prediction_sample(sirst_dir: Path) -> None:
    paths = IRSTDTask().sample_images(sirst_dir, "test", 3)
    assert len(paths) == 3 and all(p.is_file() and p.parent.name == "images" for p in paths)


def test_mixed_modes_read_as_gray(sirst_dir: Path) -> None:
    ds = IRSTDTask().dataset(sirst_dir, "train", train=False, input_size=64)
    index = {s.name: i for i, s in enumerate(ds.samples)}
    for mode, name in MODES.items():
        path = sirst_dir / "images" / f"{name}.png"
        with Image.open(path) as im:
            assert im.mode == mode
            want = np.asarray(im.convert("L"), dtype=np.float32) / 255
        img, mask = ds[index[name]]
        assert img.shape == (1, *want.shape) and mask.shape == img.shape
        np.testing.assert_allclose(img[0].numpy(), want, atol=1e-6)
        assert set(torch.unique(mask).tolist()) == {0.0, 1.0}


def test_train_items_are_augmented_crops(sirst_dir: Path) -> None:
    ds = IRSTDTask().dataset(sirst_dir, "train", train=True, input_size=96)
    torch.manual_seed(0)
    items = [ds[0] for _ in range(8)]
    assert all(img.shape == (1, 96, 96) and mask.shape == (1, 96, 96) for img, mask in items)
    assert len({img.sum().item() for img, _ in items}) > 1  # random crops / flips / scales differ
    assert any(mask.sum() > 0 for _, mask in items)


def test_model_forward_backward_odd_size() -> None:
    torch.manual_seed(0)
    model = IRSTDTask().build_model(InfMAEBackbone("infmae_tiny"))
    x = torch.rand(2, 1, 75, 101)  # neither divisible by 16 nor by 32: padded, then cropped back
    out = model(x)
    assert out.shape == (2, 1, 75, 101)
    out.mean().backward()
    assert all(p.grad is not None for p in model.head.parameters())
    assert all(p.grad is not None for p in model.backbone.encoder.parameters())
    groups = model.param_groups(0.05, 0.75)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    assert max(g["lr_scale"] for g in groups) == 1.0 and min(g["lr_scale"] for g in groups) < 1.0


def test_normalization_follows_the_backbone() -> None:
    from infmae.data import MEAN, STD

    model = IRSTDTask().build_model(InfMAEBackbone("infmae_tiny"))
    assert model.mean.flatten().tolist() == pytest.approx([MEAN] * 3)
    assert model.std.flatten().tolist() == pytest.approx([STD] * 3)
    pre = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_size": [3, 224, 224]}
    model = IRSTDTask().build_model(InfMAEBackbone("infmae_tiny", preprocessing=pre))
    assert model.mean.flatten().tolist() == [0.5] * 3 and model.std.flatten().tolist() == [0.25] * 3
    x = torch.full((1, 1, 64, 64), 0.5)  # the new mean: the backbone sees zeros
    seen = []
    model.backbone.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0]))
    model(x)
    assert torch.equal(seen[0], torch.zeros(1, 3, 64, 64))


def test_soft_iou_loss() -> None:
    t = torch.zeros(1, 1, 8, 8)
    t[..., 2:4, 2:4] = 1
    assert soft_iou_loss(torch.where(t > 0, 30.0, -30.0), t, smooth=0.0) < 1e-6
    assert soft_iou_loss(torch.full_like(t, -30.0), t, smooth=0.0) == pytest.approx(1.0)


def test_loss_decreases_on_real_images(sirst_dir: Path) -> None:
    torch.manual_seed(0)
    task = IRSTDTask()
    ds = task.dataset(sirst_dir, "train", train=True, input_size=96)
    items = [it for it in (ds[i] for i in range(24)) if it[1].sum() > 0][:4]  # real crops holding targets
    assert len(items) == 4
    batch = task.collate(items)
    model = task.build_model(InfMAEBackbone("infmae_tiny"))
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-3)
    losses, sious = [], []
    for _ in range(15):
        loss, logs = task.loss(model, batch, CPU)
        assert set(logs) == {"bce", "soft_iou"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        sious.append(logs["soft_iou"])
    assert losses[-1] < 0.97 * losses[0] and sious[-1] < sious[0]


class Oracle(nn.Module):
    """Returns the logits of given probability maps, in order (stands in for a trained model)."""

    def __init__(self, maps: list[np.ndarray]) -> None:
        super().__init__()
        self.maps = list(maps)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        p = torch.from_numpy(self.maps.pop(0)).clamp(1e-6, 1 - 1e-6)
        assert p.shape == imgs.shape[-2:]
        return torch.logit(p)[None, None]


def test_evaluate_perfect_and_empty(sirst_dir: Path) -> None:
    task = IRSTDTask()
    full = task.dataset(sirst_dir, "val", train=False, input_size=64)
    ds = torch.utils.data.Subset(full, range(4))
    masks = [ds[i][1][0].numpy() for i in range(4)]
    perfect = task.evaluate(Oracle([m.astype(np.float64) for m in masks]), ds, CPU)
    assert {k: perfect[k] for k in ("iou", "niou", "pd", "fa", "f1", "auc")} == {
        "iou": 1.0, "niou": 1.0, "pd": 1.0, "fa": 0.0, "f1": 1.0, "auc": 1.0}
    assert perfect["images"] == 4
    empty = task.evaluate(Oracle([np.zeros_like(m, dtype=np.float64) for m in masks]), ds, CPU)
    assert empty["iou"] == 0.0 and empty["pd"] == 0.0 and empty["fa"] == 0.0
    assert task.table_columns() == ["iou", "niou", "pd", "fa", "f1", "auc"]


def test_predict_writes_maps_and_overlays(sirst_dir: Path, tmp_path: Path) -> None:
    task = IRSTDTask()
    model = task.build_model(InfMAEBackbone("infmae_tiny"))
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((sirst_dir / "images" / "Misc_125.png").read_bytes())
    inside = sirst_dir / "images" / "Misc_104.png"  # mask found next to it: 3 panels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = task.predict(model, [inside, outside], tmp_path / "out", CPU, save_json=True)
    names = sorted(p.name for p in paths)
    assert names == ["Misc_104.json", "Misc_104_overlay.png", "Misc_104_prob.png",
                     "elsewhere.json", "elsewhere_overlay.png", "elsewhere_prob.png"]
    for src, stem, n_panels in ((inside, "Misc_104", 3), (outside, "elsewhere", 2)):
        w, h = Image.open(src).size
        prob = Image.open(tmp_path / "out" / f"{stem}_prob.png")
        assert prob.size == (w, h) and prob.mode == "L"
        overlay = Image.open(tmp_path / "out" / f"{stem}_overlay.png")
        assert overlay.size == (n_panels * w + (n_panels - 1) * 4, h)
        assert "targets" in json.loads((tmp_path / "out" / f"{stem}.json").read_text())
