"""`infmae export` and `infmae visualize` as a hostile user runs them: user files survive a re-export,
the folder lock, broken checkpoints, bad devices, sizes and output formats are one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import shared_data_dir
from PIL import Image
from typer.testing import CliRunner

from cli import infmae_app
from infmae.checkpoint import save_model
from infmae.model import infmae_tiny

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_model(infmae_tiny(), tmp_path_factory.mktemp("ck") / "checkpoint")


@pytest.fixture(scope="module")
def image(sirst_dir: Path) -> Path:
    return sorted((sirst_dir / "images").glob("*.png"))[0]


def _cli(args: list[str]):
    return CliRunner().invoke(infmae_app, [str(a) for a in args])


def _one_line_error(res, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.stderr
    return lines[0]


def test_reexport_keeps_the_users_files(ckpt: Path, tmp_path: Path):
    out = tmp_path / "enc"
    assert _cli(["export", ckpt, "--out", out]).exit_code == 0
    ours = (out / "README.md").read_text()
    assert "library_name: infmae" in ours and json.loads((out / "config.json").read_text())["format"] == "infmae-encoder"
    (out / "README.md").write_text("---\nlicense: mit\n---\n# the card I wrote\n")
    (out / "eval").mkdir()
    (out / "eval" / "results.json").write_text("{}")
    before = (out / "model.safetensors").stat().st_ino
    res = _cli(["export", ckpt, "--out", out])
    assert res.exit_code == 0, res.output
    assert (out / "README.md").read_text().endswith("# the card I wrote\n")
    assert (out / "eval" / "results.json").read_text() == "{}"
    assert (out / "model.safetensors").stat().st_ino != before  # ours was replaced (atomically)
    # a folder holding another model's config.json is not ours to overwrite
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    err = _one_line_error(_cli(["export", ckpt, "--out", tmp_path / "other"]))
    assert "not an exported encoder" in err
    assert (tmp_path / "other" / "config.json").read_text() == '{"model_type": "bert"}'


def test_export_and_convert_take_the_folder_lock(ckpt: Path, tmp_path: Path):
    out = tmp_path / "busy"
    code = "import sys; from inf30.lock import lock_folder\nwith lock_folder(sys.argv[1]):\n print('locked', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # another process writing the folder  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = _one_line_error(_cli(["export", ckpt, "--out", out]), code=1)  # a busy folder: the job failed
        assert "is writing" in err and not (out / "model.safetensors").exists()
        official = shared_data_dir().parent / "official" / "checkpoint-399.pth"
        err = _one_line_error(_cli(["convert", official, "--out", out]), code=1)
        assert "is writing" in err and not (out / "model.safetensors").exists()
    finally:
        holder.communicate("", timeout=30)
    assert _cli(["export", ckpt, "--out", out]).exit_code == 0  # free again once the other process is done


def test_broken_checkpoints_are_one_line_errors(ckpt: Path, image: Path, tmp_path: Path):
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    data = (ckpt / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    (trunc / "config.json").write_bytes((ckpt / "config.json").read_bytes())
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02 definitely not a checkpoint" * 50)
    for bad in (trunc, trunc / "model.safetensors", garbage):
        err = _one_line_error(_cli(["export", bad, "--out", tmp_path / "e"]))
        assert "truncated" in err or "not a loadable" in err
        err = _one_line_error(_cli(["visualize", bad, image, "--out", tmp_path / "r.png"]))
        assert "truncated" in err or "not a loadable" in err
    assert not (tmp_path / "r.png").exists()


def test_visualize_devices_sizes_and_formats(ckpt: Path, image: Path, tmp_path: Path):
    base = ["visualize", ckpt, image, "--input-size", "64"]
    err = _one_line_error(_cli([*base, "--out", tmp_path / "a.png", "--device", "bogus"]))
    assert "--device 'bogus' is not a device" in err
    if not torch.cuda.is_available():  # this machine has no CUDA: the clear message instead of a traceback
        err = _one_line_error(_cli([*base, "--out", tmp_path / "a.png", "--device", "cuda"]))
        assert "CUDA is not available" in err
    for size in ("-16", "0", "40"):
        err = _one_line_error(_cli(["visualize", ckpt, image, "--input-size", size, "--out", tmp_path / "a.png"]))
        assert "must be a positive multiple of 16" in err
    err = _one_line_error(_cli([*base, "--out", tmp_path / "a.xyz"]))
    assert "unknown image extension '.xyz'" in err
    assert not list(tmp_path.glob("a.*"))
    for name, fmt in (("r.jpg", "JPEG"), ("r.jpeg", "JPEG"), ("r.png", "PNG"), ("r.webp", "WEBP")):
        res = _cli([*base, "--out", tmp_path / name])
        assert res.exit_code == 0, res.output
        with Image.open(tmp_path / name) as img:
            assert img.format == fmt and img.mode == "RGB"


def test_reconstruction_of_a_per_patch_normalized_model_undoes_the_patch_statistics(image: Path):
    """A ``norm_pix_loss`` model predicts per-patch normalized pixels: the figure maps them back with each
    patch's own mean / std, then with the preprocessing mean / std (a [B, 3, H, W] result, as without it)."""
    from infmae.data import load_gray
    from infmae.visualize import normalize_gray, reconstruct

    torch.manual_seed(0)
    model = infmae_tiny(norm_pix_loss=True).eval()
    x = normalize_gray(load_gray(image).resize((64, 32)), model.pretrained_cfg)[None]
    parts = reconstruct(model, x)
    assert parts["reconstruction"].shape == parts["original"].shape == (1, 3, 32, 64)
    m = parts["mask"].bool().expand_as(parts["original"])
    assert 0 < m.float().mean() < 1
    assert torch.equal(parts["pasted"][~m], parts["original"][~m])  # visible patches: the image itself
    # the masked patches are the prediction mapped back with each patch's statistics (not a constant image)
    assert parts["reconstruction"].std() > 0.01
