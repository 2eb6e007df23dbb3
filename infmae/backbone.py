"""InfMAE's encoder as a downstream backbone (paper section 4.3): no masking, a four-level feature pyramid.

    F1 [B, C1, H/4,  W/4 ]  stage-1 map (256 ch for base)
    F2 [B, C2, H/8,  W/8 ]  stage-2 map (384)
    F3 [B, C3, H/16, W/16]  stage-3 tokens reshaped to a map (768): LayerNorm(blocks + multi-scale fusion)
    F4 [B, C3, ceil(H/32), ceil(W/32)]  F3 through a 3x3 stride-2 convolution (new, trained downstream)

Any input size divisible by 16 (square or not); gray input [B, 1, H, W] gives exactly the features of its
3-channel replication, without the copy (`accepts_gray`: the first patch embedding sums its kernel over
channels). `InfMAEBackbone.from_pretrained(path)` loads the encoder of a pre-training checkpoint (see
`infmae.checkpoint`) and reports missing and unexpected keys.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import (
    LN_EPS,
    LN_EPS_CONV,
    PREPROCESSING,
    PRESETS,
    MultiScaleEncoder,
    param_groups,
    upgrade_config,
)


class InfMAEBackbone(nn.Module):
    """`InfMAEBackbone(preset)(imgs) -> (F1, F2, F3, F4)`, channels-first maps (see the module docstring)."""

    strides = (4, 8, 16, 32)
    accepts_gray = True  # [B, 1, H, W] is taken as its 3-channel replication

    def __init__(
        self,
        preset: str = "infmae_base",
        drop_path: float = 0.0,
        fuse_multiscale: bool = True,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
        cfg = {**PRESETS[preset], **overrides}
        if cfg.get("encoder", "multiscale") != "multiscale":
            raise ValueError(f"preset {preset!r} has no multi-scale encoder; InfMAEBackbone needs one")
        self.config: dict[str, Any] = {"preset": preset, "drop_path": drop_path, "fuse_multiscale": fuse_multiscale}
        self.config.update({k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()})
        dims, depths = tuple(cfg["embed_dims"]), tuple(cfg["depths"])
        self.encoder = MultiScaleEncoder(
            dims, depths, cfg["num_heads"], cfg.get("mlp_ratio", 4.0), cfg.get("in_chans", 3),
            cfg.get("multiscale", True), drop_path, cfg.get("norm_eps", LN_EPS), cfg.get("norm_eps_conv", LN_EPS_CONV),
        )
        self.preprocessing = dict(cfg.get("preprocessing") or PREPROCESSING)
        for key, default in (("norm_eps", LN_EPS), ("norm_eps_conv", LN_EPS_CONV)):  # saved configs are explicit
            self.config[key] = cfg.get(key, default)
        self.config["preprocessing"] = self.preprocessing
        self.fuse_multiscale = fuse_multiscale
        self.down = nn.Conv2d(dims[2], dims[2], 3, stride=2, padding=1)  # F3 -> F4
        self.out_channels = (dims[0], dims[1], dims[2], dims[2])
        self.load_info: dict[str, list[str]] = {"missing": [], "unexpected": [], "ignored": []}

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs [B, 3 or 1, H, W] (H, W divisible by 16) -> (F1, F2, F3, F4), each [B, C, h, w]."""
        if imgs.shape[-2] % 16 or imgs.shape[-1] % 16:
            raise ValueError(f"input size {tuple(imgs.shape[-2:])} is not divisible by 16")
        f1, f2, f3 = self.encoder.forward_pyramid(imgs, fuse=self.fuse_multiscale)
        f1, f2, f3 = (f.permute(0, 3, 1, 2) for f in (f1, f2, f3))  # channels-last memory, NCHW shape
        return f1, f2, f3, self.down(f3)

    def param_groups(self, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
        """AdamW groups for fine-tuning: no decay on biases / norms; with `layer_decay` a per-group `lr_scale`
        of layer_decay ** (depth - layer), deepest (F4 conv, final norm, fusion) 1.0, first patch embed least."""
        n = sum(self.encoder.depths) + 1

        def layer_id(name: str) -> int:
            return self.encoder.layer_id(name[len("encoder.") :]) if name.startswith("encoder.") else n

        return param_groups(self, weight_decay, layer_decay, layer_id, n)

    def load_pretrained_state(self, state: dict[str, torch.Tensor], strict: bool = False) -> dict[str, list[str]]:
        """Load a pre-training state dict (keys `encoder.*`; `decoder.*` and `masker.*` are ignored).

        Returns {"missing", "unexpected", "ignored"} key lists; warns when missing/unexpected are not empty
        (the F4 convolution is always missing from a pre-training checkpoint: it is trained downstream).
        """
        ignored = [k for k in state if k.startswith(("decoder.", "masker."))]
        keep = {k: v for k, v in state.items() if k not in ignored}
        result = self.load_state_dict(keep, strict=False)
        missing = list(result.missing_keys)
        unexpected = list(result.unexpected_keys)
        info = {"missing": missing, "unexpected": unexpected, "ignored": ignored}
        real_missing = [k for k in missing if not k.startswith("down.")]
        if strict and (real_missing or unexpected):
            raise RuntimeError(f"checkpoint does not match the backbone: missing {real_missing}, unexpected {unexpected}")
        if real_missing or unexpected:
            warnings.warn(
                f"InfMAEBackbone: {len(real_missing)} missing keys {real_missing[:8]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:8]}",
                stacklevel=2,
            )
        self.load_info = info
        return info

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        drop_path: float = 0.0,
        fuse_multiscale: bool = True,
        strict: bool = False,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
    ) -> InfMAEBackbone:
        """Build the backbone matching a pre-training checkpoint (a directory written by
        `infmae.checkpoint.save_model` or `infmae export` / `infmae convert`, its model.safetensors, a torch
        file read with weights_only=True, or a Hub repo id "org/name" at `revision`, cached in `cache_dir`)
        and load its encoder weights. `backbone.load_info` lists missing / unexpected / ignored keys."""
        from .checkpoint import read_checkpoint
        from .hub import resolve

        path = resolve(path, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
        state, config = read_checkpoint(path)
        if config is None:
            raise ValueError(f"{path}: no model config found next to the weights; cannot rebuild the encoder")
        config = upgrade_config(config)
        preset = config.get("preset", "infmae_base")
        arch_keys = ("embed_dims", "depths", "num_heads", "mlp_ratio", "in_chans", "multiscale", "encoder",
                     "norm_eps", "norm_eps_conv", "preprocessing")
        overrides = {k: config[k] for k in arch_keys if k in config}
        if preset not in PRESETS:
            preset = "infmae_base"
        model = cls(preset, drop_path=drop_path, fuse_multiscale=fuse_multiscale, **overrides)
        model.load_pretrained_state(state, strict=strict)
        weights = Path(path) / "model.safetensors" if Path(path).is_dir() else Path(path)
        model.source_path = str(weights) if weights.is_file() else None  # the local (or Hub-cached) weights file
        return model

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload the backbone (model.safetensors + config.json + model card) to the Hub model repo `repo_id`."""
        from .hub import push_model

        return push_model(self, repo_id, **kwargs)
