"""InfMAEBackbone: pyramid shapes at any size, loading a pre-training checkpoint, fine-tuning groups."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from infmae.backbone import InfMAEBackbone
from infmae.checkpoint import save_model
from infmae.masking import information_aware_masking
from infmae.model import infmae_tiny

torch.set_num_threads(1)


@pytest.mark.parametrize("hw", [(224, 224), (256, 320), (240, 176)])
def test_pyramid_shapes(hw: tuple[int, int]) -> None:
    bb = InfMAEBackbone("infmae_tiny").eval()
    h, w = hw
    f1, f2, f3, f4 = bb(torch.randn(1, 3, h, w))
    assert f1.shape == (1, 32, h // 4, w // 4)
    assert f2.shape == (1, 48, h // 8, w // 8)
    assert f3.shape == (1, 96, h // 16, w // 16)
    assert f4.shape == (1, 96, -(-h // 32), -(-w // 32))  # ceil for odd H/16
    assert bb.out_channels == (32, 48, 96, 96) and bb.strides == (4, 8, 16, 32)


def test_base_channels() -> None:
    with torch.device("meta"):
        bb = InfMAEBackbone("infmae_base")
    assert bb.out_channels == (256, 384, 768, 768)


def test_f3_matches_pretraining_encoder_with_nothing_masked() -> None:
    torch.manual_seed(0)
    model = infmae_tiny().eval()
    bb = InfMAEBackbone("infmae_tiny").eval()
    bb.load_pretrained_state(model.state_dict())
    imgs = torch.randn(2, 3, 64, 96)
    info = information_aware_masking(torch.randn(2, 24), (4, 6), stride=1)  # every patch visible
    latent = model.forward_encoder(imgs, info)  # sparse path, ids ascending
    _, _, f3, _ = bb(imgs)
    assert torch.allclose(f3.flatten(2).transpose(1, 2), latent, atol=1e-5)


def test_from_pretrained_reports_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = infmae_tiny()
    save_model(model, tmp_path / "ckpt")
    bb = InfMAEBackbone.from_pretrained(tmp_path / "ckpt")
    for k, v in bb.encoder.state_dict().items():
        assert torch.equal(v, model.encoder.state_dict()[k]), k
    assert all(k.startswith("down.") for k in bb.load_info["missing"]) and bb.load_info["missing"]
    assert bb.load_info["unexpected"] == []
    assert any(k.startswith("decoder.") for k in bb.load_info["ignored"])
    # a checkpoint without the fusion layers: missing keys are reported with a warning
    state = {k: v for k, v in model.state_dict().items() if "fuse1" not in k}
    state["encoder.extra.weight"] = torch.zeros(1)
    with pytest.warns(UserWarning, match="missing"):
        info = InfMAEBackbone("infmae_tiny").load_pretrained_state(state)
    assert any("fuse1" in k for k in info["missing"]) and info["unexpected"] == ["encoder.extra.weight"]
    with pytest.raises(RuntimeError):
        InfMAEBackbone("infmae_tiny").load_pretrained_state(state, strict=True)
    # strict loading accepts a matching checkpoint (the new F4 conv is always allowed to be missing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        InfMAEBackbone.from_pretrained(tmp_path / "ckpt" / "model.safetensors", strict=True)


def test_finetune_groups_and_drop_path() -> None:
    bb = InfMAEBackbone("infmae_tiny", drop_path=0.1)
    groups = bb.param_groups(0.05, layer_decay=0.75)
    assert sum(len(g["params"]) for g in groups) == len(list(bb.parameters()))
    scales = {g["lr_scale"] for g in groups}
    assert max(scales) == 1.0 and min(scales) == pytest.approx(0.75 ** (1 + 1 + 2 + 1))
    names = {id(p): n for n, p in bb.named_parameters()}
    first = [g for g in groups if any(names[id(p)].startswith("encoder.embed1.") for p in g["params"])]
    assert all(g["lr_scale"] == min(scales) for g in first)
    bb.train()
    x = torch.randn(2, 3, 32, 32)
    out = bb(x)
    sum(o.sum() for o in out).backward()
    assert all(p.grad is not None for p in bb.parameters())
    with pytest.raises(ValueError):
        InfMAEBackbone("mae_base")
