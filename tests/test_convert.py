"""`infmae convert`: the authors' published checkpoint format -> our model, exactly.

The reference is ../shared/official: a small checkpoint in the published format, written by the authors' own
model code, with the outputs their code computed (io.npz). The authors' code itself is not available here, so
the "width no preset has" case uses a checkpoint written by `_to_authors_format` below (our model's tensors
under the published key names and conv layouts): it tests the head-count flags and the mapping at that width,
not a second run of the authors' code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data_dir
from typer.testing import CliRunner

from cli import infmae_app
from infmae.backbone import InfMAEBackbone
from infmae.convert import ConvertError, convert_checkpoint, safe_load, unwrap
from infmae.model import InfMAE
from infmae.pos_embed import sincos_2d

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def official() -> Path:
    path = shared_data_dir().parent / "official"
    if not (path / "checkpoint-399.pth").is_file():
        pytest.fail(f"the reference checkpoint is not at {path} (../shared/official)")
    return path


@pytest.fixture(scope="module")
def io(official: Path) -> dict[str, np.ndarray]:
    return dict(np.load(official / "io.npz"))


@pytest.fixture(scope="module")
def converted(official: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conv") / "infmae-tiny"
    convert_checkpoint(official / "checkpoint-399.pth", out)
    return out


@pytest.fixture(scope="module")
def official_state(official: Path) -> dict[str, torch.Tensor]:
    return unwrap(safe_load(official / "checkpoint-399.pth"))[0]


def _run(model: InfMAE, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x))


# ------------------------------------------------------------------------------------- exact equivalence


def test_converted_model_reproduces_the_authors_outputs(converted: Path, io: dict[str, np.ndarray]):
    model = InfMAE.from_pretrained(converted)
    loss, pred, mask = _run(model, io["x"])
    assert torch.equal(mask, torch.from_numpy(io["mask"]))  # exactly the authors' mask
    assert torch.allclose(pred, torch.from_numpy(io["pred"]), rtol=0, atol=1e-5)
    assert abs(loss.item() - float(io["loss"])) < 1e-5
    model.sparse = False  # the dense masked reference path agrees too
    loss_d, pred_d, mask_d = _run(model, io["x"])
    assert torch.equal(mask_d, mask) and torch.allclose(pred_d, pred, atol=1e-5)
    # the eps are load-bearing: with 1e-6 everywhere (our old default) the prediction misses the 1e-5 bar
    legacy = InfMAE(**{**{k: v for k, v in model.config.items() if k != "preset"}, "norm_eps_conv": 1e-6})
    legacy.load_state_dict(model.state_dict())
    assert not torch.allclose(_run(legacy, io["x"])[1], torch.from_numpy(io["pred"]), rtol=0, atol=1e-5)


def test_every_key_is_accounted_for_and_the_card(converted: Path, official: Path, official_state: dict):
    report = json.loads((converted / "conversion.json").read_text())
    src = official / "checkpoint-399.pth"
    assert report["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert set(report["mapped"]) | {k for k in report["ignored"] if not k.startswith("<")} == set(official_state)
    assert set(report["ignored"]) >= {"<optimizer>", "<epoch>", "<scaler>", "<args>", "pos_embed", "decoder_pos_embed"}
    assert report["unknown"] == [] and report["kind"] == "infmae" and not report["encoder_only"]
    assert report["config"]["masking"] == "reference" and report["config"]["stem_width"] == 96
    assert report["mapped"]["patch_embed.proj.weight"] == "masker.reference_weight"
    assert report["args"]["model"] == "infmae_vit_base_patch16"
    cfg = json.loads((converted / "config.json").read_text())
    assert (cfg["norm_eps"], cfg["norm_eps_conv"]) == (1e-6, 1e-5)
    assert cfg["preprocessing"]["mean"] == [0.425] * 3 and cfg["preprocessing"]["input_size"] == [3, 224, 224]
    from huggingface_hub import ModelCard

    card = ModelCard.load(converted / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "infmae" and meta["license"]
    assert {"infrared", "masked-image-modeling"} <= set(meta["tags"])
    assert meta["source_file"] == "checkpoint-399.pth" and meta["source_sha256"] == report["sha256"]
    assert "Conversion report" in card.text and "105 mapped" in card.text


def test_backbone_from_converted_folder_on_a_non_square_input(converted: Path):
    bb = InfMAEBackbone.from_pretrained(converted).eval()
    assert bb.load_info["unexpected"] == [] and set(bb.load_info["missing"]) == {"down.weight", "down.bias"}
    assert bb.source_path == str(converted / "model.safetensors")
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        f1, f2, f3, f4 = bb(x)
        ref = InfMAE.from_pretrained(converted).encoder.forward_pyramid(x)[2]  # same weights, same F3
    assert f1.shape == (1, 32, 24, 40) and f2.shape == (1, 48, 12, 20)
    assert f3.shape == (1, 96, 6, 10) and f4.shape == (1, 96, 3, 5)
    assert torch.equal(f3, ref.permute(0, 3, 1, 2))
    assert bb.encoder.embed1.norm.eps == 1e-5 and bb.encoder.blocks[0].norm1.eps == 1e-6


# ------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "module", "prefix", "model+prefix"])
def test_wrappers_convert_identically(wrap: str, official_state: dict, converted: Path, tmp_path: Path):
    from safetensors.torch import load_file

    sd = dict(official_state)
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    obj = {"bare": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "module": {"module": sd},
           "prefix": prefixed, "model+prefix": {"model": prefixed, "args": argparse.Namespace(lr=1.0)}}[wrap]
    torch.save(obj, tmp_path / "ck.pth")
    convert_checkpoint(tmp_path / "ck.pth", tmp_path / "out")
    got, want = load_file(tmp_path / "out" / "model.safetensors"), load_file(converted / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_convmae_and_encoder_only(official_state: dict, converted: Path, tmp_path: Path):
    convmae = {k: v for k, v in official_state.items() if not k.startswith("patch_embed.")}
    torch.save({"model": convmae}, tmp_path / "convmae.pth")
    report = convert_checkpoint(tmp_path / "convmae.pth", tmp_path / "convmae")
    model = InfMAE.from_pretrained(tmp_path / "convmae")
    assert report.kind == "convmae" and model.config["masking"] == "random" and not hasattr(model.masker, "reference_weight")
    assert any("ConvMAE" in n for n in report.notes)

    enc = {k: v for k, v in official_state.items() if not k.startswith(("decoder", "mask_token"))}
    torch.save(enc, tmp_path / "enc.pth")
    report = convert_checkpoint(tmp_path / "enc.pth", tmp_path / "enc")
    assert report.encoder_only and any("encoder-only" in n for n in report.notes)
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["format"] == "infmae-encoder"
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a = InfMAEBackbone.from_pretrained(tmp_path / "enc").eval()(x)
        b = InfMAEBackbone.from_pretrained(converted).eval()(x)
    assert all(torch.equal(p, q) for p, q in zip(a[:3], b[:3], strict=True))


# ------------------------------------------------------------------------------------- refusals


class _RunsCode:
    """Unpickling this would create the marker file."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_refuses_a_pickle_that_runs_code(official_state: dict, tmp_path: Path):
    evil = _RunsCode()
    evil.marker = tmp_path / "pwned"
    torch.save({"model": official_state, "epoch": evil}, tmp_path / "evil.pth")
    assert not evil.marker.exists()
    with pytest.raises(ConvertError, match=r"refused: the file needs the global \S+") as err:
        convert_checkpoint(tmp_path / "evil.pth", tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not evil.marker.exists() and not (tmp_path / "out").exists()


def test_refuses_truncated_garbage_and_foreign_checkpoints(official: Path, tmp_path: Path):
    import torchvision

    data = (official / "checkpoint-399.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint " * 64)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    cases = {"trunc.pth": "not a complete PyTorch checkpoint", "garbage.pth": "not a complete PyTorch checkpoint",
             "resnet18.pth": "not an InfMAE/ConvMAE checkpoint"}  # fmt: skip
    for name, expected in cases.items():
        with pytest.raises(ConvertError, match=expected) as err:
            convert_checkpoint(tmp_path / name, tmp_path / "out")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unknown_keys_and_learned_position_tables(official_state: dict, tmp_path: Path):
    extra = dict(official_state, **{"head.weight": torch.zeros(10, 96)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ConvertError, match=r"1 unknown keys \['head.weight'\].*--allow-unknown"):
        convert_checkpoint(tmp_path / "extra.pth", tmp_path / "out")
    report = convert_checkpoint(tmp_path / "extra.pth", tmp_path / "out", allow_unknown=True)
    assert report.unknown == ["head.weight"] and "head.weight" not in report.mapped

    learned = dict(official_state, pos_embed=official_state["pos_embed"] + 0.01 * torch.randn(1, 196, 96))
    torch.save(learned, tmp_path / "learned.pth")
    with pytest.raises(ConvertError, match="learned position embedding"):
        convert_checkpoint(tmp_path / "learned.pth", tmp_path / "out2")


# ------------------------------------------------------------------------------------- a width no preset has


def _to_authors_format(model: InfMAE) -> dict[str, torch.Tensor]:
    """Our InfMAE's tensors under the published key names and layouts (conv weights [out, in, kh, kw])."""
    out: dict[str, torch.Tensor] = {}
    ks = {"1": 4, "2": 2, "3": 2}
    for k, v in model.state_dict().items():
        v = v.clone()
        if m := re.fullmatch(r"masker\.reference_(weight|bias)", k):
            out[f"patch_embed.proj.{m[1]}"] = v
        elif m := re.fullmatch(r"encoder\.embed(\d)\.(proj|norm)\.(weight|bias)", k):
            if m[2] == "proj" and m[3] == "weight":
                kk = ks[m[1]]
                v = v.view(v.shape[0], kk, kk, -1).permute(0, 3, 1, 2)
            out[f"patch_embed{m[1]}.{m[2]}.{m[3]}"] = v
        elif m := re.fullmatch(r"encoder\.embed3_linear\.(weight|bias)", k):
            out[f"patch_embed4.{m[1]}"] = v
        elif m := re.fullmatch(r"encoder\.fuse(\d)\.proj\.(weight|bias)", k):
            if m[2] == "weight":
                kk = 4 if m[1] == "1" else 2
                v = v.view(v.shape[0], kk, kk, -1).permute(0, 3, 1, 2)
            out[f"stage{m[1]}_output_decode.{m[2]}"] = v
        elif m := re.fullmatch(r"encoder\.stage(\d)\.(\d+)\.(\w+(?:\.fc\d)?)\.(weight|bias)", k):
            part = {"dwconv": "attn"}.get(m[3], m[3])
            if m[4] == "weight" and part in ("conv1", "conv2", "mlp.fc1", "mlp.fc2"):
                v = v[:, :, None, None]
            out[f"blocks{m[1]}.{m[2]}.{part}.{m[4]}"] = v
        elif k.startswith("encoder.blocks."):
            out["blocks3." + k.removeprefix("encoder.blocks.")] = v
        elif k.startswith("encoder.norm."):
            out[k.removeprefix("encoder.")] = v
        elif k == "decoder.mask_token":
            out["mask_token"] = v
        elif k.startswith("decoder.blocks."):
            out["decoder_blocks." + k.removeprefix("decoder.blocks.")] = v
        else:
            out["decoder_" + k.removeprefix("decoder.")] = v
    out["pos_embed"] = sincos_2d(14, 14, model.config["embed_dims"][-1])[None]
    out["decoder_pos_embed"] = sincos_2d(14, 14, model.config["decoder_dim"])[None]
    return out


def test_a_width_no_preset_has_needs_the_head_flags(tmp_path: Path):
    torch.manual_seed(0)
    src = InfMAE(embed_dims=(40, 80, 160), depths=(1, 2, 2), num_heads=5, decoder_dim=48, decoder_depth=1,
                 decoder_heads=3, masking="reference", stem_width=160).eval()  # fmt: skip
    for name, p in src.named_parameters():  # perturb norms / biases: no tensor at its initial value
        p.data += 0.05 * torch.randn_like(p) if ("norm" in name or name.endswith("bias")) else 0
    src.masker.reference_weight.normal_(0, 0.02)
    src.masker.reference_bias.normal_(0, 0.02)
    torch.save({"model": _to_authors_format(src), "epoch": 1}, tmp_path / "wide.pth")
    with pytest.raises(ConvertError, match=r"no preset has the widths \[40, 80, 160\].*--num-heads N"):
        convert_checkpoint(tmp_path / "wide.pth", tmp_path / "out")
    with pytest.raises(ConvertError, match=r"decoder width 48.*--decoder-heads N"):
        convert_checkpoint(tmp_path / "wide.pth", tmp_path / "out", num_heads=5)
    with pytest.raises(ConvertError, match="does not divide the width 160"):
        convert_checkpoint(tmp_path / "wide.pth", tmp_path / "out", num_heads=3, decoder_heads=3)
    report = convert_checkpoint(tmp_path / "wide.pth", tmp_path / "out", num_heads=5, decoder_heads=3)
    assert report.config["preset"] == "custom" and report.config["depths"] == [1, 2, 2]
    model = InfMAE.from_pretrained(tmp_path / "out")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        (l1, p1, m1), (l2, p2, m2) = src(x), model.eval()(x)
    assert torch.equal(m1, m2) and torch.allclose(p1, p2, rtol=0, atol=1e-6) and abs(l1 - l2) < 1e-6


# ------------------------------------------------------------------------------------- CLI


def _cli(args: list[str]):
    return CliRunner().invoke(infmae_app, args)


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.stderr
    return lines[0]


def test_cli_convert_and_bad_options(official: Path, tmp_path: Path):
    ck = str(official / "checkpoint-399.pth")
    out = tmp_path / "out"
    for bad in (["--num-heads", "0"], ["--decoder-heads", "-4"], ["--push", "not a repo id"]):
        err = _one_line_error(_cli(["convert", ck, "--out", str(out), *bad]))
        assert bad[0] in err
        assert not out.exists()  # refused before any work
    res = _cli(["convert", ck, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "105 keys mapped" in res.stdout and "preset infmae_tiny" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == [".lock", "README.md", "config.json", "conversion.json",
                                                     "model.safetensors"]  # fmt: skip
    # a model card the user rewrote survives a second conversion; their other files too
    (out / "README.md").write_text("---\nlicense: mit\n---\n# my card\n")
    (out / "notes.txt").write_text("mine")
    assert _cli(["convert", ck, "--out", str(out)]).exit_code == 0
    assert (out / "README.md").read_text().endswith("# my card\n") and (out / "notes.txt").read_text() == "mine"
    err = _one_line_error(_cli(["convert", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o2")]))
    assert "no such checkpoint file" in err
