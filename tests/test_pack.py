"""`infmae pack` and the packed loader: crop distribution and fixed-box equivalence against torchvision, the
pack's resumability with real killed processes, and pre-training from a pack (loss curve, bitwise resume)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infmae.augment import augment_batch, draw_boxes, resized_crop
from infmae.data import MEAN, STD, PackedImages, load_gray, make_loader, open_source, sample_seed
from infmae.pack import pack

INFMAE = str(Path(sys.executable).parent / "infmae")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a pack except the lock and the sharded jobs' lock folders: relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock" and ".work" not in p.parts}


@pytest.fixture(scope="module")
def real(frames_folder) -> Path:
    """16 real frames (8 SIRST, 8 HIT-UAV 640x512): the session's read-only ``frames_folder(16)``."""
    return frames_folder(16)


@pytest.fixture(scope="module")
def packed(tmp_path_factory, real: Path) -> Path:
    """The 16 frames packed without resizing (short side 1024 > every frame): the same pixels as decoding."""
    out = tmp_path_factory.mktemp("pack") / "pack"
    summary = pack(real, out, short_side=1024, images_per_shard=5, progress=False)
    assert summary.complete and summary.images == 16 and summary.shards_total == 4
    return out


# ----------------------------------------------------------------------------------------------- augmentation
def test_crop_distribution_matches_torchvision_random_resized_crop() -> None:
    """Coordinate-encoding canvases (value = x, value = y) through the on-device crop: each crop's box is
    recovered from its output and its scale and log aspect ratio are compared with torchvision's
    RandomResizedCrop boxes on the same image size (two-sample KS tests at a fixed seed); flips are fair."""
    from scipy.stats import binomtest, ks_2samp
    from torchvision.transforms import RandomResizedCrop

    h, w, s, n = 240, 320, 32, 600
    xs = torch.arange(w, dtype=torch.float32).expand(1, 1, h, w)
    ys = torch.arange(h, dtype=torch.float32)[:, None].expand(1, 1, h, w)
    canvas = torch.cat([xs, ys], 1).expand(n, 2, h, w)
    seeds = torch.tensor([sample_seed(7, 0, p) for p in range(n)])
    boxes, flips = draw_boxes(torch.tensor([[h, w]] * n), seeds)
    out = resized_crop(canvas, boxes, s, flips, method="matmul")  # [n, 2, s, s], the GPU's path
    loop = resized_crop(canvas[:50], boxes[:50], s, flips[:50], method="loop")  # the CPU's path
    assert (loop - out[:50]).abs().max() < 0.05
    i1, i2 = s // 4, 3 * s // 4  # interior samples: bicubic reproduces a linear ramp exactly there
    sx = (out[:, 0, s // 2, i2] - out[:, 0, s // 2, i1]) / (i2 - i1)  # input pixels per output pixel, signed
    sy = (out[:, 1, i2, s // 2] - out[:, 1, i1, s // 2]) / (i2 - i1)
    bw, bh = (sx.abs() * s).double(), (sy * s).double()
    assert torch.allclose(bw, (boxes[:, 2] - boxes[:, 0]).double(), atol=0.05)  # the recovered box is the drawn one
    assert torch.equal(sx < 0, flips)  # a flip mirrors the columns
    ours_scale = (bw * bh / (h * w)).numpy()
    ours_logr = torch.log(bw / bh).numpy()

    torch.manual_seed(0)
    img = torch.zeros(1, h, w)
    ref = [RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    ref_scale = np.array([bh_ * bw_ / (h * w) for _, _, bh_, bw_ in ref])
    ref_logr = np.log([bw_ / bh_ for _, _, bh_, bw_ in ref])
    assert ks_2samp(ours_scale, ref_scale).pvalue > 0.01
    assert ks_2samp(ours_logr, ref_logr).pvalue > 0.01
    assert 0.2 - 1e-3 <= ours_scale.min() and ours_scale.max() <= 1 + 1e-3
    assert binomtest(int(flips.sum()), n, 0.5).pvalue > 0.01


def test_fixed_box_matches_torchvision_resized_crop(packed: Path, real: Path) -> None:
    """For fixed boxes (down- and upscaling, thin, whole image) on real frames gathered into one padded canvas,
    the output equals torchvision's resized_crop (bicubic, antialias) within float rounding, and Pillow's
    bicubic resize (the decode loader's) within its uint8 rounding and border handling."""
    from torchvision.transforms.v2 import functional as F

    p = PackedImages(packed)
    big = int(np.argmax(p.height * p.width))
    idx = [i for i in range(16) if i != big][:2] + [big]  # SIRST frames and a 640x512 HIT-UAV frame: padding
    canvas, sizes = p.gather(idx)
    assert canvas.dtype == torch.uint8 and canvas.shape[:2] == (3, 1) and sizes.tolist()[2] == [512, 640]
    for k, i in enumerate(idx):
        hh, ww = sizes[k].tolist()
        img = p.image(i)
        assert np.array_equal(canvas[k, 0, :hh, :ww].numpy(), img)
        assert np.array_equal(img, np.asarray(load_gray(p.names[i])))  # unresized pack == the decoded file
        for box in [(0, 0, ww, hh), (3, 5, ww // 2, hh // 2 + 7), (10, 20, 40, 50), (1, 0, 30, hh)]:
            left, top, right, bottom = box
            ref = F.resized_crop(torch.from_numpy(np.array(img)).float()[None], top, left, bottom - top,
                                 right - left, [48, 48],
                                 interpolation=F.InterpolationMode.BICUBIC, antialias=True)[0]
            for method in ("matmul", "loop"):  # the GPU's batched matmuls and the CPU's per-sample path
                got = resized_crop(canvas[k : k + 1], torch.tensor([box]), 48, method=method)[0, 0]
                assert (got - ref).abs().max().item() < 1e-2, (i, box, method)
            pil = np.asarray(Image.fromarray(img).resize((48, 48), Image.Resampling.BICUBIC, box=box), np.float32)
            assert np.abs(got.clamp(0, 255).numpy() - pil).mean() < 1.0, (i, box)
    # the full step: normalization and gray -> 3 equal channels
    x = augment_batch(canvas, sizes, torch.tensor([1, 2, 3]), 64)
    assert x.shape == (3, 3, 64, 64) and torch.equal(x[:, 0], x[:, 2])
    assert x.min() >= -MEAN / STD - 1e-5 and x.max() <= (1 - MEAN) / STD + 1e-5


# ----------------------------------------------------------------------------------------------- the pack
def test_pack_resizes_never_upscales_and_loads_everywhere(real: Path, packed: Path, tmp_path: Path) -> None:
    small = pack(real, tmp_path / "p128", short_side=128, progress=False)
    assert small.images == 16
    p = PackedImages(tmp_path / "p128")
    assert (np.minimum(p.height, p.width) == 128).all()  # every frame is larger: shorter side exactly 128
    p_full = PackedImages(packed)
    short = np.minimum(p_full.height, p_full.width)
    assert np.array_equal(p.width, np.round(p_full.width * 128 / short))  # aspect kept
    assert np.array_equal(p.height, np.round(p_full.height * 128 / short))
    assert sorted(p.ids) == sorted(p_full.ids) and len(p) == len(p_full) == 16
    # open_source and make_loader recognise a pack and say so; the decode loader still works on it
    src = open_source(packed)
    assert src.kind == "pack" and len(src) == 16
    li = make_loader(src, 64, 4, seed=1)
    assert li.describe.startswith("packed loader")
    canvas, sizes, seeds = next(iter(li.loader))
    assert canvas.dtype == torch.uint8 and sizes.shape == (4, 2) and seeds.shape == (4,)
    x = li.to_input((canvas, sizes, seeds), torch.device("cpu"))
    assert x.shape == (4, 3, 64, 64) and torch.isfinite(x).all()
    assert p_full.batch([0, 1], 32, torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)
    dec = make_loader(src, 64, 4, seed=1, loader="decode")
    assert dec.describe.startswith("decode loader") and next(iter(dec.loader)).shape == (4, 3, 64, 64)
    assert li.dataset.fixed_views(3).shape == (3, 3, 64, 64)
    # the packed loader gives the same batches with 0 and 2 worker processes
    a = make_loader(src, 64, 4, seed=5, workers=0)
    b = make_loader(src, 64, 4, seed=5, workers=2)
    for z in (a, b):
        z.sampler.set_epoch(1, start_step=1)
    xa = torch.stack([a.to_input(t, torch.device("cpu")) for t in a.loader])
    xb = torch.stack([b.to_input(t, torch.device("cpu")) for t in b.loader])
    assert xa.shape == (3, 4, 3, 64, 64) and torch.equal(xa, xb)


def test_an_image_that_does_not_decode_is_a_row_with_its_reason(real: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    src = tmp_path / "mixed"
    src.mkdir()
    for f in sorted(real.iterdir())[:3]:
        (src / f.name).symlink_to(f.resolve())
    (src / "zz_truncated.png").write_bytes((real / sorted(p.name for p in real.iterdir())[0]).read_bytes()[:200])
    summary = pack(src, tmp_path / "p", progress=False)
    assert (summary.images, summary.skipped, summary.complete) == (3, 1, True)
    rows = pq.read_table(tmp_path / "p" / "shards" / "00000.parquet").to_pylist()
    bad = [r for r in rows if r["height"] == 0]
    assert len(bad) == 1 and bad[0]["name"].endswith("zz_truncated.png") and bad[0]["reason"]
    assert len(PackedImages(tmp_path / "p")) == 3


def test_pack_beside_a_built_or_published_dataset_is_used_when_up_to_date(real: Path, tmp_path: Path) -> None:
    from inf30.build import BuildOptions, build
    from inf30.sources import load_sources

    built = tmp_path / "inf30"
    build(load_sources([str(real)], out_dir=built), built, BuildOptions(workers=1, dedupe=False, progress=False))
    assert open_source(built).kind == "built dataset"
    pack(built, built / "pack", progress=False)
    src = open_source(built)
    assert src.kind == "pack" and "beside built dataset" in src.describe
    ids = set(src.packed.ids)
    from inf30.manifest import kept, read_manifest

    assert ids == set(kept(read_manifest(built))["id"])  # the index keeps the manifest's ids
    # an `inf30 publish` output with a pack beside it (in it): the same images, found through the pack
    from inf30.publish import PublishOptions, publish

    published = tmp_path / "published"
    publish(built, published, PublishOptions(progress=False))
    assert open_source(published).kind == "datasets"
    pack(published, published / "pack", progress=False)
    src = open_source(published)
    assert src.kind == "pack" and set(src.packed.ids) == ids and "beside datasets" in src.describe
    # the dataset changes (an image is no longer kept): the pack is stale, ignored with a warning
    import pandas as pd

    from inf30.manifest import write_manifest

    df = read_manifest(built)
    df.loc[df.index[df["status"] == "kept"][0], "status"] = "dropped"
    write_manifest(built, pd.DataFrame(df))
    with pytest.warns(UserWarning, match="another version"):
        src = open_source(built)
    assert src.kind == "built dataset" and len(src) == 15


def test_bad_pack_options_and_outputs_exit_2_before_any_work(real: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import infmae_app

    runner = CliRunner()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    cases = [
        (["--short-side", "8"], "short-side"), (["--shard", "2/2"], "--shard"), (["--shard", "x"], "K/N"),
        (["--images-per-shard", "0"], "images-per-shard"),
    ]
    for extra, words in cases:
        r = runner.invoke(infmae_app, ["pack", str(real), "--out", str(tmp_path / "never"), *extra])
        assert r.exit_code == 2 and words in r.output, (extra, r.output)
        assert not (tmp_path / "never").exists()
    r = runner.invoke(infmae_app, ["pack", str(real), "--out", str(foreign)])
    assert r.exit_code == 2 and "not a pack" in r.output
    assert sorted(p.name for p in foreign.iterdir()) == ["mine.txt"]
    r = runner.invoke(infmae_app, ["pack", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_pack_killed_mid_shard_resumes_identically_and_shards_build_in_parallel(real: Path, tmp_path: Path) -> None:
    """A real `infmae pack` SIGKILLed inside a shard, then re-run, ends with the same bytes as an uninterrupted
    one; so do two `--shard K/2` processes run at the same time into one folder, and `--workers 2`."""
    base = [INFMAE, "pack", str(real), "--short-side", "200", "--images-per-shard", "3", "-q"]
    straight = tmp_path / "straight"
    summary = pack(real, straight, short_side=200, images_per_shard=3, progress=False)
    assert "16 images (0 skipped)" in summary.table()

    run = tmp_path / "run"
    env = {**ENV, "INFMAE_TEST_PACK_DELAY": "1.0"}  # every shard pauses before its index (completion marker)
    proc = subprocess.Popen([*base, "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not (run / "shards" / "00002.parquet").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.005)
    time.sleep(0.1)  # inside shard 3's pause: its pixels are written, its index is not
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run / "pack.json").exists() and not (run / "shards" / "00003.parquet").exists()
    with pytest.raises(Exception, match="unfinished pack"):
        PackedImages(run)
    resumed = pack(real, run, short_side=200, images_per_shard=3, progress=False)  # the same command, again
    assert resumed.complete and resumed.built_now == 16 - 9  # shards 0-2 were kept, 3-5 built
    assert tree_bytes(run) == tree_bytes(straight)
    assert not list((run / "shards").glob(".tmp-*"))

    par = tmp_path / "parallel"
    jobs = [subprocess.Popen([*base, "--out", str(par), "--shard", f"{k}/2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV) for k in range(2)]
    outs = [j.communicate(timeout=120) for j in jobs]
    assert all(j.returncode == 0 for j in jobs), outs
    assert any("complete" in o for o, _ in outs)
    assert tree_bytes(par) == tree_bytes(straight)
    pack(real, tmp_path / "workers", short_side=200, images_per_shard=3, workers=2, progress=False)
    assert tree_bytes(tmp_path / "workers") == tree_bytes(straight)  # --workers never changes the pack
    meta = json.loads((straight / "pack.json").read_text())
    assert meta["short_side"] == 200 and meta["source"]["items"] == 16 and len(meta["source"]["fingerprint"]) == 32


# ----------------------------------------------------------------------------------------------- training
def _cfg(data: Path, out: Path, steps: int, **kw):
    from infmae.train import PretrainConfig

    return PretrainConfig(
        data=str(data), out=str(out), preset="infmae_tiny", epochs=4, warmup_epochs=1, batch=8, input_size=64,
        lr=2e-3, workers=0, threads=1, max_steps=steps, log_every=1, latest_every=1000, save_every=1000, vis_every=0,
        tensorboard=False, progress=False, nproc=1, deterministic=True, **kw,
    )


def _losses(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x["kind"] == "step"]


def test_pretrain_from_pack_matches_folder_and_resumes_bitwise(real: Path, packed: Path, tmp_path: Path) -> None:
    """Same seed, same images (unresized pack): the per-step losses from the pack and from the folder agree
    within interpolation noise; a run from the pack stopped mid-epoch and resumed equals a straight one bitwise."""
    from safetensors.torch import load_file

    from infmae.train import pretrain

    torch.set_num_threads(1)
    pretrain(_cfg(real, tmp_path / "folder", 6))
    pretrain(_cfg(packed, tmp_path / "pack", 6))
    a, b = _losses(tmp_path / "folder"), _losses(tmp_path / "pack")
    assert len(a) == len(b) == 6
    assert all(math.isfinite(x) for x in a + b)
    # (another seed changes single losses by up to 20 % here; pack vs folder differ by ~1e-4)
    assert max(abs(x - y) / x for x, y in zip(a, b, strict=True)) < 0.01, (a, b)

    pretrain(_cfg(packed, tmp_path / "resumed", 3))  # 16 images / batch 8 = 2 steps per epoch: stops mid-epoch 1
    pretrain(_cfg(packed, tmp_path / "resumed", 6))
    wa = load_file(str(tmp_path / "pack" / "checkpoint-latest" / "model.safetensors"))
    wb = load_file(str(tmp_path / "resumed" / "checkpoint-latest" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _losses(tmp_path / "resumed") == b
