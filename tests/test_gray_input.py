"""Gray model input: a [B, 1, H, W] batch gives exactly what its 3-channel replication gives.

Real infrared frames (SIRST, HIT-UAV) and the converted published checkpoint; fp32 on the CPU. The gray path
sums the first patch embedding's kernel over channels, so it is not bitwise the 3-channel sum: outputs and
gradients agree to ~1e-6, the mask (an argsort) exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data_dir
from torch import nn

from infmae.backbone import InfMAEBackbone
from infmae.checkpoint import save_model
from infmae.convert import convert_checkpoint
from infmae.data import MEAN, STD, load_gray, make_loader, open_source
from infmae.model import InfMAE, create_model, infmae_tiny, load_model
from infmae.pack import pack

torch.set_num_threads(1)

SMALL_VIT = dict(embed_dims=(96,), depths=(2,), num_heads=3, decoder_dim=64, decoder_depth=1, decoder_heads=4)
SMALL_CONV = dict(embed_dims=(32, 48, 96), depths=(1, 1, 2), num_heads=3, decoder_dim=64, decoder_depth=1,
                  decoder_heads=4)
CASES = {  # name -> (preset, overrides)
    "infmae_tiny": ("infmae_tiny", {}),
    "infmae_tiny-dense": ("infmae_tiny", {"sparse": False}),
    "infmae_tiny-reference-jitter": ("infmae_tiny", {"masking": "reference", "jitter": True}),
    "infmae_tiny-norm_pix": ("infmae_tiny", {"norm_pix_loss": True, "drop_path": 0.1}),
    "mae-small": ("mae_base", SMALL_VIT),
    "mae-small-dense-norm_pix": ("mae_base", {**SMALL_VIT, "sparse": False, "norm_pix_loss": True}),
    "convmae-small": ("convmae_base", SMALL_CONV),
}


@pytest.fixture(scope="module")
def gray(real_frames) -> torch.Tensor:
    """4 real frames resized to 64x96, normalized: [4, 1, 64, 96]."""
    arrs = [np.asarray(load_gray(f).resize((96, 64)), dtype=np.float32) for f in real_frames(4)]
    return (torch.from_numpy(np.stack(arrs))[:, None] / 255.0 - MEAN) / STD


def rgb(x: torch.Tensor) -> torch.Tensor:
    """The 3-channel replication, as a real copy (what the loaders handed the model before)."""
    return x.expand(-1, 3, -1, -1).contiguous()


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> None:
    """Equal to fp32 rounding: atol `atol` relative to b's largest magnitude (at least `atol`)."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=atol * max(1.0, b.abs().max().item()))


def run(model: InfMAE, imgs: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(loss, pred, mask, grads by name) of one forward/backward; drop path reseeded identically."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, pred, mask = model(imgs, seed=seed)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return loss.detach(), pred.detach(), mask, grads


@pytest.mark.parametrize("case", list(CASES))
def test_gray_equals_replicated_outputs_mask_and_gradients(case: str, gray: torch.Tensor) -> None:
    preset, overrides = CASES[case]
    torch.manual_seed(0)
    model = create_model(preset, **overrides).train()
    assert model.accepts_gray
    loss1, pred1, mask1, g1 = run(model, gray, seed=3)
    loss3, pred3, mask3, g3 = run(model, rgb(gray), seed=3)
    assert pred1.shape == pred3.shape == (4, 24, 16 * 16 * 3)  # pred stays p*p*3
    assert torch.equal(mask1, mask3)
    close(loss1, loss3)
    close(pred1, pred3)
    assert g1.keys() == g3.keys()
    for name in g1:
        close(g1[name], g3[name])
    first = "encoder.patch_embed.weight" if preset == "mae_base" else "encoder.embed1.proj.weight"
    assert g1[first].abs().sum() > 0 and model.get_parameter(first).shape[1] == 16 * 16 * 3 // (
        1 if preset == "mae_base" else 16)  # the kernel stays 3-channel and is trained through the gray path


def test_gray_masking_is_the_replicated_masking_bitwise(gray: torch.Tensor) -> None:
    """The gray score is the channel mean of an expanded view: bitwise the 3-channel mean (mean(x, x, x) is not
    always x in float32, so a plain gray mean could reorder near-equal patches)."""
    model = infmae_tiny()
    assert torch.equal(model.masker.scores(gray), model.masker.scores(rgb(gray)))
    wide = torch.nn.functional.interpolate(gray, size=(224, 320), mode="bilinear")
    assert torch.equal(model.make_mask(wide).ids_keep, model.make_mask(rgb(wide)).ids_keep)


def test_backbone_gray_features_equal_replicated(gray: torch.Tensor) -> None:
    torch.manual_seed(0)
    bb = InfMAEBackbone("infmae_tiny").eval()
    assert bb.accepts_gray
    with torch.no_grad():
        for f1, f3 in zip(bb(gray), bb(rgb(gray)), strict=True):
            close(f1, f3)


def test_other_channel_counts_are_refused(gray: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\[B, 3 or 1, H, W\]"):
        infmae_tiny()(gray.expand(-1, 2, -1, -1))


# ------------------------------------------------------------------------------ the converted official model


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    official = shared_data_dir().parent / "official"
    if not (official / "checkpoint-399.pth").is_file():
        pytest.fail(f"the reference checkpoint is not at {official} (../shared/official)")
    out = tmp_path_factory.mktemp("conv") / "infmae-tiny"
    convert_checkpoint(official / "checkpoint-399.pth", out)
    return out


def test_converted_official_checkpoint_gray_equals_replicated(converted: Path) -> None:
    """The published model (reference masking with its full 96-channel stem) on io.npz's x, channel 0."""
    x = torch.from_numpy(np.load(shared_data_dir().parent / "official" / "io.npz")["x"][:, :1].copy())
    model = InfMAE.from_pretrained(converted).eval()
    assert model.config["masking"] == "reference" and model.masker.reference_weight.shape[:2] == (96, 3)
    for sparse in (True, False):
        model.sparse = sparse
        loss1, pred1, mask1, g1 = run(model, x, seed=0)
        loss3, pred3, mask3, g3 = run(model, rgb(x), seed=0)
        assert torch.equal(mask1, mask3) and mask1.sum() == 2 * (196 - 49)
        close(loss1, loss3)
        close(pred1, pred3)
        for name in g1:
            close(g1[name], g3[name])
    bb = InfMAEBackbone.from_pretrained(converted).eval()
    with torch.no_grad():
        for f1, f3 in zip(bb(x[..., :160]), bb(rgb(x)[..., :160]), strict=True):  # non-square too
            close(f1, f3)


# ------------------------------------------------------------------------------------------------ checkpoints


def test_gray_trained_checkpoint_loads_and_runs_in_3_channel_use(gray: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = infmae_tiny()
    b = infmae_tiny()
    b.load_state_dict(a.state_dict())
    before = {k: v.clone() for k, v in a.state_dict().items()}
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.05), torch.optim.SGD(b.parameters(), lr=0.05)
    for step in range(3):  # the same steps, on gray and on replicated input
        for model, opt, x in ((a, opt_a, gray), (b, opt_b, rgb(gray))):
            opt.zero_grad()
            model(x, seed=step)[0].backward()
            opt.step()
    assert not torch.equal(a.encoder.embed1.proj.weight, before["encoder.embed1.proj.weight"])  # it trained
    for p, q in zip(a.parameters(), b.parameters(), strict=True):  # and as the 3-channel twin did
        close(p, q, atol=1e-5)
    save_model(a, tmp_path / "ck")
    loaded = load_model(tmp_path / "ck")
    assert loaded.encoder.embed1.proj.weight.shape == (32, 4 * 4 * 3)  # still a 3-channel checkpoint
    for k, v in a.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        l3, p3, m3 = loaded.eval()(rgb(gray), seed=9)
        l1, p1, m1 = a.eval()(gray, seed=9)
    assert torch.equal(m1, m3)
    close(l1, l3)
    close(p1, p3)
    bb = InfMAEBackbone.from_pretrained(tmp_path / "ck")
    assert [k for k in bb.load_info["missing"] if not k.startswith("down.")] == []


# ------------------------------------------------------------------------------------------ the packed loader


@pytest.fixture(scope="module")
def packed(tmp_path_factory, frames_folder) -> Path:
    src = frames_folder(4)
    out = tmp_path_factory.mktemp("pack") / "pack"
    assert pack(src, out, short_side=96, progress=False).complete
    return out


def test_packed_loader_hands_gray_batches_to_a_model_that_accepts_them(packed: Path) -> None:
    li = make_loader(open_source(packed), 64, global_batch=4, seed=5)
    assert li.channels == 3  # until it knows the model
    batch = next(iter(li.loader))
    x3 = li.to_input(batch, torch.device("cpu"))
    model = infmae_tiny()
    assert li.match_model(model) is li and li.channels == 1
    x1 = li.to_input(batch, torch.device("cpu"))
    assert x1.shape == (4, 1, 64, 64) and x3.shape == (4, 3, 64, 64)
    assert torch.equal(x1, x3[:, :1]) and torch.equal(x3[:, 1], x3[:, 2])
    with torch.no_grad():
        l1, p1, m1 = model(x1)
        l3, p3, m3 = model(x3)
    assert torch.equal(m1, m3)
    close(l1, l3)
    close(p1, p3)
    li.match_model(nn.Conv2d(3, 8, 3))  # a model without `accepts_gray` keeps 3 channels
    assert li.to_input(batch, torch.device("cpu")).shape == (4, 3, 64, 64)


@pytest.mark.parametrize("workers", [0, 1])
def test_decode_loader_hands_channel_0_to_a_gray_model(packed: Path, workers: int) -> None:
    """A batch made before `match_model` is handed over as its channel 0; when `match_model` comes first (as in
    `pretrain`), the decode loader's workers build the gray batch itself (no 3x copy), the same values; a
    3-channel model gets 3 channels."""
    def loader():
        return make_loader(open_source(packed), 64, global_batch=4, seed=5, loader="decode", workers=workers)

    li = loader()
    batch = next(iter(li.loader))
    assert batch.shape[1] == 3
    x1 = li.match_model(infmae_tiny()).to_input(batch, torch.device("cpu"))
    assert x1.shape == (4, 1, 64, 64) and torch.equal(x1, batch[:, :1])
    li = loader().match_model(infmae_tiny())
    gray = next(iter(li.loader))  # the same samples (same epoch and seed)
    assert gray.shape == (4, 1, 64, 64) and torch.equal(gray, batch[:, :1])
    assert torch.equal(li.to_input(gray, torch.device("cpu")), gray)
    li = loader().match_model(nn.Conv2d(3, 8, 3))
    assert torch.equal(next(iter(li.loader)), batch)


def test_pretraining_on_gray_batches_follows_the_3_channel_loss_curve(packed: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """`infmae.train.pretrain` from a pack, 6 steps, same seed: fed gray [2,1,64,64] batches or their 3-channel
    copies (forced here by wrapping the loader, whatever `pretrain` itself asks for), the losses agree."""
    import infmae.train as train
    from infmae.train import PretrainConfig

    make = train.make_loader
    shapes: list[tuple[int, ...]] = []

    def run_with(channels: int, out: Path) -> list[float]:
        def loader(*a, **k):
            li = make(*a, **k)
            to_input = li.to_input

            def forced(batch, device):
                x = to_input(batch, device)
                x = x[:, :1] if channels == 1 else x[:, :1].expand(-1, 3, -1, -1).contiguous()
                shapes.append(tuple(x.shape))
                return x

            li.to_input = forced
            return li

        monkeypatch.setattr(train, "make_loader", loader)
        cfg = PretrainConfig(
            data=str(packed), out=str(out), preset="infmae_tiny", epochs=4, warmup_epochs=1, batch=2, input_size=64,
            lr=2e-3, workers=0, threads=1, max_steps=6, log_every=1, latest_every=1000, save_every=1000,
            vis_every=0, tensorboard=False, progress=False, nproc=1, deterministic=True,
        )
        train.pretrain(cfg)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["kind"] == "step"]

    ref = run_with(3, tmp_path / "rgb")
    assert set(shapes) == {(2, 3, 64, 64)}
    shapes.clear()
    gray = run_with(1, tmp_path / "gray")
    assert set(shapes) == {(2, 1, 64, 64)} and len(gray) == len(ref) == 6
    np.testing.assert_allclose(gray, ref, rtol=1e-5, atol=1e-6)
