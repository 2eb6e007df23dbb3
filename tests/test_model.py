"""InfMAE and its baselines: contract shapes, the loss, sparse == dense, gradients, presets, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from infmae.masking import MaskGenerator
from infmae.model import (
    PRESETS,
    InfMAE,
    convmae_base,
    create_model,
    infmae_base,
    infmae_large,
    infmae_small,
    infmae_tiny,
    mae_base,
)

torch.set_num_threads(1)

TINY_VIT = dict(encoder="vit", embed_dims=(64,), depths=(2,), num_heads=4, decoder_dim=32, decoder_depth=1,
                decoder_heads=4, masking="random")


@pytest.mark.parametrize("hw", [(224, 224), (256, 320), (512, 640)])
def test_contract_shapes(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = infmae_tiny()
    imgs = torch.randn(2 if hw[0] < 512 else 1, 3, *hw)
    n = (hw[0] // 16) * (hw[1] // 16)
    loss, pred, mask = model(imgs)
    assert loss.shape == () and torch.isfinite(loss)
    assert pred.shape == (imgs.shape[0], n, 16 * 16 * 3)
    assert mask.shape == (imgs.shape[0], n) and mask.dtype == torch.float32
    assert torch.all((1 - mask).sum(1) == n // 4)  # N/S visible, 1 = masked
    assert model.patch_size == 16
    assert model.patchify(imgs).shape == (imgs.shape[0], n, 768)
    assert torch.equal(model.unpatchify(model.patchify(imgs), *hw), imgs)  # pixel size
    assert torch.equal(model.unpatchify(model.patchify(imgs), hw[0] // 16, hw[1] // 16), imgs)  # grid size


def test_loss_ignores_visible_patches() -> None:
    torch.manual_seed(0)
    model = infmae_tiny()
    imgs = torch.randn(2, 3, 64, 96)
    loss, pred, mask = model(imgs)
    vis = (mask == 0).unsqueeze(-1)
    garbage = torch.where(vis, torch.full_like(pred, 1e3), pred)
    assert torch.allclose(model.forward_loss(imgs, garbage, mask), loss)
    p = pred.detach().requires_grad_()
    model.forward_loss(imgs, p, mask).backward()
    assert torch.all(p.grad[mask == 0] == 0) and torch.any(p.grad[mask == 1] != 0)
    target = model.patchify(imgs)
    manual = ((pred - target) ** 2).mean(-1)[mask == 1].mean()
    assert torch.allclose(loss, manual, rtol=1e-5)


def test_norm_pix_loss_targets() -> None:
    model = infmae_tiny(norm_pix_loss=True)
    imgs = torch.randn(1, 3, 32, 32)
    pred = torch.zeros(1, 4, 768)
    mask = torch.tensor([[1.0, 0, 0, 0]])
    t = model.patchify(imgs)[0, 0]
    expect = (((t - t.mean()) / (t.var() + 1e-6) ** 0.5) ** 2).mean()
    assert torch.allclose(model.forward_loss(imgs, pred, mask), expect, rtol=1e-5)


def _run(model: InfMAE, imgs: torch.Tensor, info, sparse: bool):
    model.sparse = sparse
    model.zero_grad(set_to_none=True)
    loss, pred, _ = model(imgs, mask_info=info)
    loss.backward()
    return loss.detach(), pred.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "hw,options",
    [
        ((224, 224), {}),
        ((64, 96), {"masking": "random"}),
        ((224, 240), {"mask_stride": 7, "multiscale": False}),  # N = 210, not divisible by the stride
        ((64, 64), {"mask_stride": 2, "jitter": True}),
    ],
)
def test_sparse_equals_dense_forward_and_gradients(hw: tuple[int, int], options: dict) -> None:
    torch.manual_seed(0)
    model = infmae_tiny(**options).double()
    imgs = torch.randn(2, 3, *hw, dtype=torch.float64)
    info = model.make_mask(imgs, seed=1)
    ls, ps, gs = _run(model, imgs, info, True)
    ld, pd, gd = _run(model, imgs, info, False)
    assert torch.allclose(ls, ld, rtol=1e-12, atol=1e-12)
    assert torch.allclose(ps, pd, rtol=1e-10, atol=1e-10)
    for name in gs:
        assert torch.allclose(gs[name], gd[name], rtol=1e-9, atol=1e-12), name


def test_sparse_equals_dense_float32_base_width() -> None:
    torch.manual_seed(0)
    model = create_model("infmae_tiny", embed_dims=(256, 384, 768), num_heads=12, depths=(1, 1, 1))
    imgs = torch.randn(1, 3, 64, 64)
    info = model.make_mask(imgs)
    ls, ps, gs = _run(model, imgs, info, True)
    ld, pd, gd = _run(model, imgs, info, False)
    assert torch.allclose(ls, ld, rtol=1e-5)
    assert torch.allclose(ps, pd, atol=1e-4)
    for name in gs:
        assert torch.allclose(gs[name], gd[name], rtol=1e-3, atol=1e-5), name


def test_masked_positions_do_not_change_visible_outputs() -> None:
    """Sparse computation is exact because the encoder never looks at masked pixels."""
    torch.manual_seed(0)
    model = infmae_tiny(sparse=False)
    imgs = torch.randn(1, 3, 64, 96)
    info = model.make_mask(imgs)
    latent = model.forward_encoder(imgs, info)
    pixel_mask = model.unpatchify(info.mask.unsqueeze(-1).expand(-1, -1, 768), 64, 96)
    noisy = imgs + 5 * torch.randn_like(imgs) * pixel_mask
    assert torch.allclose(model.forward_encoder(noisy, info), latent, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"masking": "reference"},
        {"masking": "random", "decoder_depth": 3},
        {"multiscale": False, "jitter": True},
        TINY_VIT,
    ],
)
def test_every_parameter_gets_a_gradient(options: dict) -> None:
    torch.manual_seed(0)
    model = infmae_tiny(**options)
    loss, _, _ = model(torch.randn(2, 3, 64, 64), seed=0)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_infmae_base_parameter_count() -> None:
    with torch.device("meta"):
        model = infmae_base()
    trainable = sum(p.numel() for p in model.parameters())
    # the reference stores its fixed 224x224 sin-cos tables as (frozen) parameters: 196 x 768 + 196 x 512
    tables = 196 * 768 + 196 * 512
    assert round((trainable + tables) / 1e6, 1) == 96.1
    assert abs(trainable - 95_876_224) < 1000
    # the reference's unused 16x16 projection (3 x 16 x 16 -> 768) accounts for the rest of its 96.7 M
    assert round((trainable + tables + 3 * 256 * 768 + 768) / 1e6, 1) == 96.7
    with torch.device("meta"):
        assert round((sum(p.numel() for p in mae_base().parameters()) + 197 * 1280) / 1e6, 1) == 111.9


def test_presets_and_config() -> None:
    with torch.device("meta"):
        models = {f.__name__: f() for f in (infmae_tiny, infmae_small, infmae_base, infmae_large, mae_base,
                                             convmae_base)}
    assert set(models) == set(PRESETS)
    for name, m in models.items():
        cfg = json.loads(json.dumps(m.config))
        assert cfg["preset"] == name and cfg == m.config
    assert models["mae_base"].config["masking"] == "random" and len(models["mae_base"].decoder.blocks) == 8
    assert models["convmae_base"].config["encoder"] == "multiscale"
    assert len(models["convmae_base"].decoder.blocks) == 8 and len(models["infmae_base"].decoder.blocks) == 2
    m = create_model("infmae_tiny", decoder_depth=4, mask_stride=7, multiscale=False, masking="reference")
    assert len(m.decoder.blocks) == 4 and m.masker.stride == 7 and not hasattr(m.encoder, "fuse1")
    assert m.config["decoder_depth"] == 4 and m.config["preset"] == "infmae_tiny"
    with pytest.raises(ValueError):
        create_model("nope")
    with pytest.raises(TypeError):
        create_model("infmae_tiny", not_an_option=1)


def test_param_groups() -> None:
    model = infmae_tiny()
    groups = model.param_groups(0.05)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            no_decay = n.endswith(".bias") or "norm" in n or n.endswith("mask_token")
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), n
    torch.optim.AdamW(groups, lr=1e-3)


def test_param_groups_with_layer_decay_scale_the_encoder_only() -> None:
    """``--layer-decay`` in pre-training: lr_scale = D ** (depth - layer) over the encoder's layers (first patch
    embedding lowest, deeper blocks higher), the decoder at 1.0; the same parameters, each once."""
    model = infmae_tiny()
    groups = model.param_groups(0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert sorted(scale) == sorted(id(p) for p in model.parameters())
    named = dict(model.named_parameters())
    n = sum(model.encoder.depths) + 1
    assert scale[id(named["encoder.embed1.proj.weight"])] == pytest.approx(0.5 ** n)
    assert scale[id(named["encoder.blocks.0.attn.qkv.weight"])] < scale[id(named["encoder.blocks.1.attn.qkv.weight"])] < 1
    assert all(v == 1.0 for k, v in ((k, scale[id(p)]) for k, p in named.items()) if k.startswith("decoder."))
    with pytest.raises(ValueError, match="multiscale"):
        create_model("mae_base", depths=(1, 1, 1), embed_dims=(64, 64, 64), num_heads=2).param_groups(0.05, 0.5)


def test_determinism_under_seed() -> None:
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 64, 64)
    for options in ({"masking": "random"}, {"jitter": True}):
        model = infmae_tiny(**options)
        a, b, c = model(imgs, seed=7), model(imgs, seed=7), model(imgs, seed=8)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
        assert not torch.equal(a[2], c[2])
    model = infmae_tiny()  # information-aware masking without jitter needs no seed
    assert torch.equal(model(imgs)[2], model(imgs, seed=3)[2])
    torch.manual_seed(1)
    m1 = infmae_tiny()
    torch.manual_seed(1)
    m2 = infmae_tiny()
    assert torch.equal(m1(imgs)[0], m2(imgs)[0])


def test_bf16_autocast_and_non_square() -> None:
    model = infmae_tiny()
    imgs = torch.randn(1, 3, 48, 80)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pred, mask = model(imgs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert pred.shape == (1, 15, 768) and (1 - mask).sum() == 4  # ceil(15 / 4)


def test_rejects_bad_sizes() -> None:
    model = infmae_tiny()
    with pytest.raises(ValueError):
        model(torch.randn(1, 3, 40, 48))
    assert MaskGenerator("gray")(torch.randn(1, 3, 48, 48)).num_visible == 3


def test_published_layernorm_eps_and_preprocessing_in_the_config() -> None:
    with torch.device("meta"):
        for name in PRESETS:
            m = create_model(name)
            cfg = m.config
            assert cfg["preprocessing"]["mean"] == [0.425] * 3 and cfg["preprocessing"]["std"] == [0.2] * 3
            assert cfg["preprocessing"]["input_size"] == [3, 224, 224] and cfg["preprocessing"]["patch_size"] == 16
            assert m.pretrained_cfg is cfg["preprocessing"]
            eps = {n: mod.eps for n, mod in m.named_modules() if isinstance(mod, torch.nn.LayerNorm)}
            for n, e in eps.items():  # conv parts 1e-5, Transformer parts 1e-6, as published
                conv_part = n.startswith(("encoder.embed", "encoder.stage"))
                assert e == (1e-5 if conv_part else 1e-6), (name, n, e)


def test_checkpoints_without_eps_keys_load_as_they_were(tmp_path) -> None:
    """Configs written before the eps were recorded used 1e-6 in every LayerNorm (model.py's LN_EPS then):
    they rebuild exactly that model, not the published eps."""
    from safetensors.torch import load_file, save_file

    from infmae.checkpoint import save_model
    from infmae.model import load_model

    torch.manual_seed(0)
    old = infmae_tiny(norm_eps_conv=1e-6)  # the model an older version built for this config
    for name, p in old.named_parameters():
        if "norm" in name:
            p.data += 0.1 * torch.randn_like(p)
    save_model(old, tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    for key in ("norm_eps", "norm_eps_conv", "stem_width", "preprocessing"):  # keys older versions did not write
        del cfg[key]
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    state = load_file(tmp_path / "ck" / "model.safetensors")
    save_file(state, tmp_path / "ck" / "model.safetensors", metadata={"config": json.dumps(cfg)})
    loaded = load_model(tmp_path / "ck").eval()
    assert {m.eps for m in loaded.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    assert loaded.config["preprocessing"]["mean"] == [0.425] * 3
    imgs = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref, got = old.eval()(imgs), loaded(imgs)
        new = infmae_tiny()
        new.load_state_dict(old.state_dict())
        published = new.eval()(imgs)
    assert torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])
    assert not torch.allclose(published[1], ref[1], atol=1e-6)  # the eps change would be visible
