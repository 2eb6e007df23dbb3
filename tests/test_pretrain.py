"""Pre-training on real infrared images (CPU): overfitting, the `infmae pretrain / visualize / export`
commands end to end, the schedule, and the non-finite-loss stop."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli import infmae_app

INFMAE = str(Path(sys.executable).parent / "infmae")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
runner = CliRunner()


def test_infmae_tiny_overfits_a_fixed_batch_and_draws_it(real_frames, tmp_path: Path) -> None:
    from infmae.data import FileListSource, PretrainDataset
    from infmae.model import infmae_tiny
    from infmae.visualize import save_reconstruction

    torch.manual_seed(0)
    torch.set_num_threads(1)
    files = [str(p) for p in real_frames(64)]
    ds = PretrainDataset(FileListSource(files, "image folder", "real"), 64)
    imgs = ds.fixed_views(64)  # [64, 3, 64, 64], one fixed batch
    assert imgs.shape == (64, 3, 64, 64)
    model = infmae_tiny(mask_stride=4)
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=2e-3, betas=(0.9, 0.95))
    losses = []
    for _ in range(70):
        loss, pred, mask = model(imgs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert pred.shape == (64, 16, 768) and mask.shape == (64, 16)
    assert math.isfinite(losses[-1])
    assert min(losses[-5:]) < 0.5 * losses[0], losses[::10]  # seen: 1.48 -> 0.52

    png = save_reconstruction(model.eval(), imgs[:4], tmp_path / "recon.png", title="overfit")
    with Image.open(png) as im:
        im.load()
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.width > 4 * 128 and im.height > 4 * 128  # 4 columns x 4 rows of >= 128 px cells


def test_lr_schedule_follows_the_recipe() -> None:
    from infmae.train import PretrainConfig, base_lr, lr_at

    cfg = PretrainConfig(data="x", out="y", epochs=400, warmup_epochs=40, batch=512, blr=1.5e-4)
    peak = 1.5e-4 * 512 / 256
    assert base_lr(cfg) == pytest.approx(peak)
    assert lr_at(0.0, cfg) == 0.0
    assert lr_at(20.0, cfg) == pytest.approx(peak / 2)  # linear, per iteration
    assert lr_at(40.0, cfg) == pytest.approx(peak)
    assert lr_at(220.0, cfg) == pytest.approx(peak / 2)  # half-cycle cosine
    assert lr_at(400.0, cfg) == pytest.approx(0.0, abs=1e-12)


def test_cli_pretrain_visualize_export(real_frames, frames_folder, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from infmae.model import load_model

    files = real_frames(64)
    data = frames_folder(64)
    run = tmp_path / "run"
    cmd = [INFMAE, "pretrain", "--data", str(data), "--out", str(run), "--preset", "infmae_tiny", "--epochs", "2",
           "--warmup-epochs", "1", "--batch", "16", "--accum", "2", "--input-size", "64", "--workers", "1",
           "--save-every", "1", "--vis-every", "1", "--latest-every", "3", "--log-every", "1", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "step 8/8 (done)" in r.stdout
    for name in ("checkpoint-latest", "checkpoint-0001", "checkpoint-0002"):
        folder = run / name
        assert sorted(p.name for p in folder.iterdir()) == [
            "config.json", "model.safetensors", "train_config.json", "train_state.pt", "trainer.json"]
    state = torch.load(run / "checkpoint-latest" / "train_state.pt", weights_only=True)
    assert state["step"] == 8 and state["epoch"] == 2 and state["step_in_epoch"] == 0
    cfg = json.loads((run / "checkpoint-latest" / "train_config.json").read_text())
    assert cfg["train"]["batch"] == 16 and cfg["steps_per_epoch"] == 4 and cfg["n_images"] == 64
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in records if x["kind"] == "step"]
    assert [x["step"] for x in steps] == list(range(1, 9))
    assert all(math.isfinite(x["loss"]) and x["img_per_s"] > 0 for x in steps)
    assert steps[0]["lr"] == 0.0 and steps[3]["lr"] == pytest.approx(1.5e-4 * 16 / 256 * 0.75)
    assert [x["epoch"] for x in records if x["kind"] == "epoch"] == [1, 2]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    for png in ("epoch-0001.png", "epoch-0002.png", "final.png"):
        with Image.open(run / "vis" / png) as im:
            assert im.format == "PNG"
    model = load_model(run / "checkpoint-latest")
    assert model.config["preset"] == "infmae_tiny"

    # the same command again resumes: nothing left to do, nothing rewritten
    mtime = (run / "checkpoint-0002" / "model.safetensors").stat().st_mtime_ns
    torch.set_num_threads(1)
    res = runner.invoke(infmae_app, cmd[1:])
    assert res.exit_code == 0 and "at step 8" in res.stderr, res.output
    assert (run / "checkpoint-0002" / "model.safetensors").stat().st_mtime_ns == mtime

    # visualize and export through the same CLI, in this process (one interpreter start is enough)
    out_png = tmp_path / "vis.png"
    res = runner.invoke(infmae_app, ["visualize", str(run / "checkpoint-latest"), str(files[0]), str(files[-1]),
                                     "--out", str(out_png)])
    assert res.exit_code == 0, res.output
    with Image.open(out_png) as im:
        assert im.format == "PNG" and im.height > 2 * 128

    enc = tmp_path / "encoder"
    res = runner.invoke(infmae_app, ["export", str(run / "checkpoint-latest"), "--out", str(enc)])
    assert res.exit_code == 0, res.output
    weights = load_file(str(enc / "model.safetensors"))
    full = model.state_dict()
    assert sorted(weights) == sorted(k for k in full if k.startswith("encoder."))  # no decoder, no masker
    for k, v in weights.items():
        assert torch.equal(v, full[k])
    from infmae.export import load_encoder

    backbone = load_encoder(enc)
    feats = backbone(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_bad_data_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = runner.invoke(infmae_app, ["pretrain", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run"),
                                     "--preset", "infmae_tiny"])
    assert res.exit_code != 0
    assert res.stderr.strip().splitlines() == [f"error: no images in {tmp_path / 'empty'} (image folder)"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(frames_folder, tmp_path: Path) -> None:
    from infmae.model import load_model
    from infmae.train import NonFiniteLossError, PretrainConfig, pretrain

    torch.set_num_threads(1)
    data = frames_folder(16)
    run = tmp_path / "run"
    # an absurd learning rate: step 1 is taken (finite loss), the weights blow up, step 2's loss is not finite
    cfg = PretrainConfig(data=str(data), out=str(run), preset="infmae_tiny", epochs=1, warmup_epochs=0,
                         batch=4, lr=1e30, input_size=64, workers=0, latest_every=1, progress=False,
                         tensorboard=False)
    with pytest.raises(NonFiniteLossError) as info:
        pretrain(cfg)
    msg = str(info.value)
    assert "\n" not in msg and "at step 2" in msg and "checkpoint-latest" in msg
    assert json.loads((run / "checkpoint-latest" / "trainer.json").read_text())["step"] == 1
    model = load_model(run / "checkpoint-latest")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not list(run.glob(".tmp-*"))
