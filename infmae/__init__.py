"""InfMAE: information-aware masked autoencoder for infrared images (model, masking, backbone, checkpoints)."""

from .backbone import InfMAEBackbone
from .checkpoint import load_model, save_model
from .masking import MaskGenerator, MaskInfo, information_aware_masking, random_masking
from .model import (
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

__all__ = [
    "PRESETS",
    "InfMAE",
    "InfMAEBackbone",
    "MaskGenerator",
    "MaskInfo",
    "convmae_base",
    "create_model",
    "infmae_base",
    "infmae_large",
    "infmae_small",
    "infmae_tiny",
    "information_aware_masking",
    "load_model",
    "mae_base",
    "random_masking",
    "save_model",
]
