"""Checkpoints: safetensors + JSON config round trip, torch files only with weights_only, key reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from infmae.checkpoint import read_checkpoint, save_model
from infmae.model import infmae_tiny, load_model

torch.set_num_threads(1)


def test_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = infmae_tiny(masking="reference", decoder_depth=3, jitter=True)
    out = save_model(model, tmp_path / "ck")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    cfg = json.loads((out / "config.json").read_text())
    assert cfg == model.config and cfg["preset"] == "infmae_tiny" and cfg["decoder_depth"] == 3
    loaded = load_model(out)
    assert loaded.config == model.config and loaded.load_info == {"missing": [], "unexpected": []}
    sd = model.state_dict()
    assert sd.keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in sd.items())
    imgs = torch.randn(1, 3, 64, 64)
    a, b = model(imgs, seed=1), loaded(imgs, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    # the weights file alone carries the config in its metadata
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / "model.safetensors", alone / "w.safetensors")
    assert load_model(alone / "w.safetensors").config == model.config


def test_torch_file_and_key_report(tmp_path: Path) -> None:
    model = infmae_tiny()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # DDP-prefixed keys are accepted
    del state["module.decoder.pred.bias"]
    state["module.bogus"] = torch.zeros(2)
    torch.save({"model": state, "config": model.config, "step": 3}, tmp_path / "ck.pt")
    with pytest.warns(UserWarning, match="missing"):
        loaded = load_model(tmp_path / "ck.pt")
    assert loaded.load_info == {"missing": ["decoder.pred.bias"], "unexpected": ["bogus"]}
    with pytest.raises(RuntimeError):
        load_model(tmp_path / "ck.pt", strict=True)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/infmae-evil-marker"),))


def test_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    marker = Path("/tmp/infmae-evil-marker")
    marker.unlink(missing_ok=True)
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Evil()}, tmp_path / "evil.pt")
    marker.unlink(missing_ok=True)
    with pytest.raises(Exception):  # noqa: B017 (the unpickler's error type varies across torch versions)
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_missing_config_is_an_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError):
        load_model(tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing")
