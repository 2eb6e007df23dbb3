"""InfMAE: information-aware masked autoencoder for infrared images (model, masking, backbone, checkpoints).

The names below are imported on first use (PEP 562), so that ``import infmae.options`` (the CLI's option
declarations) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_EXPORTS = {
    "InfMAEBackbone": "backbone",
    "save_model": "checkpoint",
    "MaskGenerator": "masking",
    "MaskInfo": "masking",
    "information_aware_masking": "masking",
    "random_masking": "masking",
    "PRESETS": "model",
    "InfMAE": "model",
    "convmae_base": "model",
    "create_model": "model",
    "infmae_base": "model",
    "infmae_large": "model",
    "infmae_small": "model",
    "infmae_tiny": "model",
    "load_model": "model",
    "mae_base": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'infmae' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
