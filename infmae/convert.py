"""``infmae convert``: the authors' published InfMAE (and ConvMAE) ``.pth`` checkpoints -> our checkpoint format.

    convert_checkpoint("checkpoint-399.pth", "infmae-base")  -> ConversionReport
    OUT/model.safetensors + OUT/config.json   as `infmae.checkpoint.save_model` writes them
    OUT/README.md                             model card (library, licence field, tags, source + sha256, report)
    OUT/conversion.json                       the report: every source key mapped, ignored or unknown

Loading is safe: ``torch.load(weights_only=True)`` with only ``argparse.Namespace`` (the training ``args``)
allowed; any other global is refused with a one-line error naming it; never ``weights_only=False``.

Key mapping (authors -> ours; conv weights [out, in, kh, kw] become Linear weights over (kh, kw, in) patches by
``w.permute(0, 2, 3, 1).reshape(out, -1)``):

    patch_embed.proj                masker.reference_weight / reference_bias (the masking stem; InfMAE only)
    patch_embed{1,2,3}.{proj,norm}  encoder.embed{1,2,3}.{proj,norm}
    patch_embed4                    encoder.embed3_linear
    stage{1,2}_output_decode        encoder.fuse{1,2}.proj
    blocks{1,2}.N                   encoder.stage{1,2}.N (conv1/conv2/mlp 1x1 convs -> Linear, attn -> dwconv)
    blocks3.N, norm                 encoder.blocks.N, encoder.norm
    decoder_embed, mask_token, decoder_blocks.N, decoder_norm, decoder_pred   decoder.*
    pos_embed, decoder_pos_embed    ignored: fixed 2-D sin-cos tables, recomputed for any grid (checked equal)

Widths, depths, MLP ratio and decoder size come from the shapes; head counts (stored nowhere) from the preset
with the same widths or from `num_heads` / `decoder_heads`.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from inf30.errors import UsageError, UserError

from .checkpoint import sha256_file

WRAPPERS = ("model", "state_dict", "module", "model_state")
TRAINING_KEYS = {"optimizer": "optimizer state", "epoch": "training epoch", "scaler": "AMP grad-scaler state",
                 "args": "training arguments (kept in the report)", "lr_scheduler": "scheduler state",
                 "model_ema": "EMA weights (not converted)"}  # fmt: skip
SINCOS_TOL = 1e-4


class ConvertError(UserError):
    """A checkpoint that cannot be converted (one line; exit 2: the CKPT argument is not usable)."""


@dataclass
class ConversionReport:
    """What a conversion did with every key of the source checkpoint."""

    source: str
    sha256: str
    kind: str  # "infmae" (masking stem) or "convmae"
    encoder_only: bool
    config: dict[str, Any]
    mapped: dict[str, str] = field(default_factory=dict)  # source key -> our key
    ignored: dict[str, str] = field(default_factory=dict)  # source key -> why
    unknown: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    out: str = ""
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        c = self.config
        lines = [
            "## Conversion report", "",
            f"- source: `{Path(self.source).name}` (sha256 `{self.sha256}`)",
            f"- architecture: {self.kind}, widths {c.get('embed_dims')}, depths {c.get('depths')}, "
            f"{c.get('num_heads')} heads" + ("" if self.encoder_only else
                                              f", decoder {c.get('decoder_dim')} x {c.get('decoder_depth')} "
                                              f"({c.get('decoder_heads')} heads)"),
            f"- masking: {c.get('masking')}" + (" (the published masking stem)" if c.get("stem_width") else ""),
            f"- LayerNorm eps: {c.get('norm_eps_conv')} (patch embeddings, conv blocks), {c.get('norm_eps')} "
            "(Transformer parts)",
            f"- keys: {len(self.mapped)} mapped, {len(self.ignored)} ignored, {len(self.unknown)} unknown",
        ]
        lines += [f"- note: {n}" for n in self.notes]
        if self.ignored:
            lines += ["", "Ignored:", ""] + [f"- `{k}`: {why}" for k, why in sorted(self.ignored.items())]
        if self.unknown:
            lines += ["", "Unknown (not converted):", ""] + [f"- `{k}`" for k in self.unknown]
        lines += ["", "<details><summary>Mapped keys</summary>", ""]
        lines += [f"- `{k}` -> `{v}`" for k, v in self.mapped.items()] + ["", "</details>", ""]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ loading


def safe_load(path: str | Path) -> Any:
    """`torch.load(weights_only=True)` allowing only argparse.Namespace; one-line ConvertError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ConvertError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
        if m:
            raise ConvertError(
                f"{path}: refused: the file needs the global {m.group(1)}, which unpickling would import and "
                "could run code; only argparse.Namespace (training args) is allowed"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise ConvertError(f"{path}: not a complete PyTorch checkpoint (truncated or another format: "
                           f"{detail.group(1).strip() if detail else _first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated zips, garbage bytes: RuntimeError, EOFError, KeyError, ...
        raise ConvertError(
            f"{path}: not a complete PyTorch checkpoint (truncated or another format: {_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (library messages run on for paragraphs)."""
    text = (str(exc).strip() or exc.__class__.__name__).splitlines()[0]
    if " " not in text:  # KeyError: 101 and the like
        text = f"{exc.__class__.__name__} {text}"
    return re.split(r"(?<=[a-z])\. ", text, maxsplit=1)[0][:200]


def unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, Any]]:
    """(state dict with `module.` prefixes removed, ignored top-level entries -> why, training args)."""
    ignored: dict[str, str] = {}
    args: dict[str, Any] = {}
    for _ in range(3):  # {'model': {'module': {...}}} and the like
        if not isinstance(obj, dict):
            break
        inner = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None or all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for k, v in obj.items():
            if k == inner:
                continue
            if isinstance(v, argparse.Namespace):
                args = {a: b for a, b in vars(v).items() if isinstance(b, str | int | float | bool | None)}
            ignored[f"<{k}>"] = TRAINING_KEYS.get(k, "training state (not part of the model)")
        obj = obj[inner]
    if not isinstance(obj, dict) or not obj:
        raise ConvertError("the file holds no state dict (expected a dict of tensors, or one under 'model')")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad or not all(isinstance(k, str) for k in obj):
        raise ConvertError(f"the state dict holds non-tensor entries ({bad[:3]}); not a model checkpoint")
    state = {}
    for k, v in obj.items():
        while k.startswith(("module.", "_orig_mod.")):
            k = k.split(".", 1)[1]
        state[k] = v
    return state, ignored, args


# ------------------------------------------------------------------------------------------------ mapping


def _conv_as_linear(w: torch.Tensor) -> torch.Tensor:
    """Conv weight [out, in, kh, kw] -> Linear weight [out, kh*kw*in] over (kh, kw, in)-ordered patches."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def _rule(key: str) -> tuple[str, Any] | None:
    """Our key and the tensor transform for an authors' key, or None when the key is not part of the format."""
    same = None
    m = re.fullmatch(r"patch_embed\.proj\.(weight|bias)", key)
    if m:
        return f"masker.reference_{m[1]}", same
    m = re.fullmatch(r"patch_embed([123])\.proj\.(weight|bias)", key)
    if m:
        return f"encoder.embed{m[1]}.proj.{m[2]}", _conv_as_linear if m[2] == "weight" else same
    m = re.fullmatch(r"patch_embed([123])\.norm\.(weight|bias)", key)
    if m:
        return f"encoder.embed{m[1]}.norm.{m[2]}", same
    m = re.fullmatch(r"patch_embed4\.(weight|bias)", key)
    if m:
        return f"encoder.embed3_linear.{m[1]}", same
    m = re.fullmatch(r"stage([12])_output_decode\.(weight|bias)", key)
    if m:
        return f"encoder.fuse{m[1]}.proj.{m[2]}", _conv_as_linear if m[2] == "weight" else same
    m = re.fullmatch(r"blocks([12])\.(\d+)\.(norm1|norm2|conv1|conv2|attn|mlp\.fc1|mlp\.fc2)\.(weight|bias)", key)
    if m:
        part = {"attn": "dwconv"}.get(m[3], m[3])
        flat = m[4] == "weight" and part != "dwconv" and not part.startswith("norm")
        return f"encoder.stage{m[1]}.{m[2]}.{part}.{m[4]}", (lambda w: w.flatten(1)) if flat else same
    m = re.fullmatch(r"blocks3\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)", key)
    if m:
        return f"encoder.blocks.{m[1]}.{m[2]}.{m[3]}", same
    m = re.fullmatch(r"norm\.(weight|bias)", key)
    if m:
        return f"encoder.norm.{m[1]}", same
    if key == "mask_token":
        return "decoder.mask_token", same
    m = re.fullmatch(r"decoder_(embed|norm|pred)\.(weight|bias)", key)
    if m:
        return f"decoder.{m[1]}.{m[2]}", same
    m = re.fullmatch(r"decoder_blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)", key)
    if m:
        return f"decoder.blocks.{m[1]}.{m[2]}.{m[3]}", same
    return None


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    ids = {int(m[1]) for k in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))}
    if ids and ids != set(range(len(ids))):
        raise ConvertError(f"{prefix}: block indices {sorted(ids)} are not 0..{len(ids) - 1}")
    return len(ids)


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ConvertError(f"not an InfMAE/ConvMAE checkpoint: no `{key}` (keys: {sorted(state)[:6]} ...)")
    return tuple(state[key].shape)


def infer_config(
    state: dict[str, torch.Tensor], args: dict[str, Any], num_heads: int | None, decoder_heads: int | None
) -> tuple[dict[str, Any], str, bool, list[str]]:
    """(our model config, kind, encoder_only, notes) from the tensor shapes (+ head counts)."""
    from .model import LN_EPS, LN_EPS_CONV, PREPROCESSING, PRESETS

    notes: list[str] = []
    c1, in_chans, k1, _ = _shape(state, "patch_embed1.proj.weight")
    c2, _, k2, _ = _shape(state, "patch_embed2.proj.weight")
    c3, _, k3, _ = _shape(state, "patch_embed3.proj.weight")
    if (k1, k2, k3) != (4, 2, 2):
        raise ConvertError(f"patch embeddings with kernels {k1}/{k2}/{k3}; the format has 4/2/2")
    depths = [_count(state, "blocks1"), _count(state, "blocks2"), _count(state, "blocks3")]
    if depths[2] == 0:
        raise ConvertError("no Transformer blocks (blocks3.N) in the checkpoint")
    hidden = _shape(state, "blocks3.0.mlp.fc1.weight")[0]
    mlp_ratio = hidden / c3
    for i, c in ((1, c1), (2, c2)):
        if depths[i - 1] and _shape(state, f"blocks{i}.0.mlp.fc1.weight")[0] != int(c * mlp_ratio):
            raise ConvertError(f"stage {i} has another MLP ratio than stage 3; not supported")
    dims = [c1, c2, c3]
    preset = next((n for n, p in PRESETS.items() if list(p.get("embed_dims", ())) == dims), None)
    if num_heads is None:
        if preset is None:
            raise ConvertError(f"no preset has the widths {dims}, and head counts are not stored in the file: "
                               f"give the encoder's heads with --num-heads N (a divisor of {c3})")  # fmt: skip
        num_heads = PRESETS[preset]["num_heads"]
        notes.append(f"{num_heads} encoder heads from the preset {preset} (same widths)")
    if c3 % num_heads:
        raise ConvertError(f"--num-heads {num_heads} does not divide the width {c3}")
    stem = "patch_embed.proj.weight" in state
    kind = "infmae" if stem else "convmae"
    cfg: dict[str, Any] = {
        "encoder": "multiscale", "embed_dims": dims, "depths": depths, "num_heads": num_heads,
        "mlp_ratio": mlp_ratio, "in_chans": in_chans, "multiscale": "stage1_output_decode.weight" in state,
        "norm_eps": LN_EPS, "norm_eps_conv": LN_EPS_CONV, "norm_pix_loss": bool(args.get("norm_pix_loss", False)),
        "preprocessing": dict(PREPROCESSING, input_size=[in_chans, *(2 * [int(args.get("input_size", 224))])]),
    }  # fmt: skip
    if stem:
        w = _shape(state, "patch_embed.proj.weight")
        if w[1:] != (in_chans, 16, 16):
            raise ConvertError(f"masking stem of shape {list(w)}; expected [W, {in_chans}, 16, 16]")
        cfg.update(masking="reference", mask_stride=4, stem_width=w[0])
        notes.append(f"the masking stem ({w[0]} channels) is the `reference` masking projection: the model masks "
                     "exactly as the authors' code (sorted positions 0, 4, 8, ... visible)")  # fmt: skip
    else:
        cfg.update(masking="random", mask_ratio=float(args.get("mask_ratio", 0.75)))
        notes.append("no masking stem: a ConvMAE checkpoint, random masking")
    if not cfg["multiscale"]:
        notes.append("no stage{1,2}_output_decode: converted without the multi-scale fusion")
    encoder_only = "decoder_embed.weight" not in state
    if encoder_only:
        notes.append("encoder-only checkpoint (no decoder): converted to an encoder for InfMAEBackbone, in the "
                     "`infmae export` format; it cannot reconstruct images")  # fmt: skip
    else:
        ddim = _shape(state, "decoder_embed.weight")[0]
        pred = _shape(state, "decoder_pred.weight")[0]
        if pred != 16 * 16 * in_chans:
            raise ConvertError(f"decoder_pred predicts {pred} values per patch; expected {16 * 16 * in_chans}")
        dpreset = next((n for n, p in PRESETS.items() if p.get("decoder_dim") == ddim), None)
        if decoder_heads is None:
            if dpreset is None:
                raise ConvertError(f"no preset has the decoder width {ddim}, and head counts are not stored in the "
                                   f"file: give the decoder's heads with --decoder-heads N (a divisor of {ddim})")  # fmt: skip
            decoder_heads = PRESETS[dpreset]["decoder_heads"]
            notes.append(f"{decoder_heads} decoder heads from the preset {dpreset} (same decoder width)")
        if ddim % decoder_heads:
            raise ConvertError(f"--decoder-heads {decoder_heads} does not divide the decoder width {ddim}")
        cfg.update(decoder_dim=ddim, decoder_depth=_count(state, "decoder_blocks"), decoder_heads=decoder_heads)
    match = next((n for n, p in PRESETS.items()
                  if all(list(v) == cfg.get(k) if isinstance(v, tuple) else v == cfg.get(k)
                         for k, v in p.items() if not (encoder_only and k.startswith("decoder")))), None)  # fmt: skip
    cfg["preset"] = match or "custom"
    return cfg, kind, encoder_only, notes


def _check_sincos(name: str, table: torch.Tensor, dim: int) -> str:
    """A stored position table must be the fixed 2-D sin-cos table of a square grid (we recompute it)."""
    from .pos_embed import sincos_2d

    t = table.reshape(-1, table.shape[-1]).float()
    side = round(t.shape[0] ** 0.5)
    if side * side != t.shape[0] or t.shape[1] != dim:
        raise ConvertError(f"{name} of shape {list(table.shape)} is not a square sin-cos table of width {dim}")
    diff = (t - sincos_2d(side, side, dim)).abs().max().item()
    if diff > SINCOS_TOL:
        raise ConvertError(f"{name} differs from the fixed 2-D sin-cos table by {diff:.2g} (a learned position "
                           "embedding): not supported")  # fmt: skip
    return f"fixed 2-D sin-cos table ({side}x{side}), recomputed for any grid (max difference {diff:.1e})"


# ------------------------------------------------------------------------------------------------ converting


def convert_state(
    state: dict[str, torch.Tensor],
    num_heads: int | None = None,
    decoder_heads: int | None = None,
    allow_unknown: bool = False,
    args: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, ConversionReport]:
    """An authors' state dict -> (our InfMAE with the weights loaded, report without source/out fields)."""
    from .model import model_from_config

    args = args or {}
    cfg, kind, encoder_only, notes = infer_config(state, args, num_heads, decoder_heads)
    report = ConversionReport(source="", sha256="", kind=kind, encoder_only=encoder_only, config=cfg,
                              notes=notes, args=args)  # fmt: skip
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in ("pos_embed", "decoder_pos_embed"):
            dim = cfg["embed_dims"][-1] if key == "pos_embed" else cfg.get("decoder_dim", value.shape[-1])
            report.ignored[key] = _check_sincos(key, value, dim)
            continue
        rule = _rule(key)
        if rule is None or (encoder_only and rule[0].startswith("decoder.")):
            report.unknown.append(key)
            continue
        dst, fn = rule
        ours[dst] = (fn(value) if fn else value).float().contiguous()
        report.mapped[key] = dst
    if report.unknown and not allow_unknown:
        raise ConvertError(f"{len(report.unknown)} unknown keys {report.unknown[:5]}: not the InfMAE/ConvMAE "
                           "format (convert anyway, dropping them, with --allow-unknown)")  # fmt: skip
    if report.unknown:
        notes.append(f"{len(report.unknown)} unknown keys dropped (--allow-unknown)")
    model = model_from_config(cfg).eval()
    expected = {k: v for k, v in model.state_dict().items() if not (encoder_only and k.startswith("decoder."))}
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise ConvertError(f"the checkpoint lacks {len(missing)} tensors of the model: {missing[:5]}")
    for k, v in ours.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            src = next(s for s, d in report.mapped.items() if d == k)
            raise ConvertError(f"{src} has shape {list(state[src].shape)}; the inferred model needs "
                               f"{list(expected[k].shape)} for {k}")  # fmt: skip
    model.load_state_dict(ours, strict=not encoder_only)
    return model, report


def convert_checkpoint(
    path: str | Path,
    out: str | Path,
    num_heads: int | None = None,
    decoder_heads: int | None = None,
    allow_unknown: bool = False,
    push: str | None = None,
) -> ConversionReport:
    """Convert the authors' checkpoint at `path` into the folder `out` (locked while written). Files of `out`
    that the conversion does not write are left alone; an edited model card is kept. With `push` ("org/name")
    the folder is then uploaded to that Hub model repo (`report.url`)."""
    from inf30.lock import lock_folder

    from .checkpoint import save_model
    from .export import write_encoder
    from .hub import check_push, model_card, push_folder, write_card

    for name, value in (("--num-heads", num_heads), ("--decoder-heads", decoder_heads)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be a positive number of heads, got {value}")
    token = check_push(push) if push is not None else None
    path, out = Path(path), Path(out)
    obj = safe_load(path)
    state, ignored, args = unwrap(obj)
    model, report = convert_state(state, num_heads, decoder_heads, allow_unknown, args)
    report.ignored = {**ignored, **report.ignored}
    report.source, report.sha256, report.out = str(path), sha256_file(path), str(out)
    _check_out(out)
    with lock_folder(out, tool="infmae"):
        if report.encoder_only:
            write_encoder(model, out, {"checkpoint": str(path), "sha256": report.sha256})
        else:
            save_model(model, out)
        from inf30.atomic import write_text_atomic

        write_text_atomic(out / "conversion.json", json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        title = f"InfMAE converted from {path.name}" if report.kind == "infmae" else f"ConvMAE from {path.name}"
        cfg = json.loads((out / "config.json").read_text())
        write_card(out, model_card(cfg, title=title, source={"file": path.name, "sha256": report.sha256},
                                   body=report.to_markdown()))  # fmt: skip
        if push is not None:
            report.url = push_folder(out, push, token=token, commit_message=f"infmae convert {path.name}")
    return report


def _check_out(out: Path) -> None:
    """Refuse an --out whose config.json / model.safetensors are not ours (we would replace them)."""
    cfg = out / "config.json"
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
        except (ValueError, OSError):
            data = None
        if not isinstance(data, dict) or not ("preset" in data or data.get("format") == "infmae-encoder"):
            raise ConvertError(f"{out} holds a config.json that is not an InfMAE checkpoint's; choose another --out")
    elif (out / "model.safetensors").exists():
        raise ConvertError(f"{out} holds a model.safetensors without our config.json; choose another --out")
