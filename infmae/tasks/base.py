"""The contract between the fine-tuning engine (`infmae.finetune`) and a downstream task.

The engine owns everything tasks share: INIT loading into an `InfMAEBackbone`, DDP / precision / compile,
AdamW with layer-wise lr decay (from `model.param_groups(weight_decay, layer_decay)`), the warm-up + cosine /
poly schedule, atomic checkpoints with mid-epoch resume, metrics.jsonl + TensorBoard, the progress bar,
results.json and the CLI (`infmae finetune TASK`, `evaluate`, `predict`, `compare`).

A task owns what is specific to it: the data layouts it reads, the head on the backbone, the loss, the
metrics and the drawing of predictions. Tasks never write checkpoints or parse CLI options themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn


class DataLayoutError(ValueError):
    """The data folder matches none of the task's layouts (or is inconsistent); one-line message that names
    the layouts the task reads, or the offending file."""


class DownstreamTask(ABC):
    """One downstream task. `options` is the task's own settings dict (e.g. {"head": "upernet"}), stored in
    the run's config so `evaluate` / `predict` rebuild the same model."""

    name: ClassVar[str]
    # paper-section defaults the engine uses unless the user overrides them
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 0.05, "input_size": 256,
                                          "epochs": 100, "schedule": "cosine", "batch": 8}
    # the keys of `options` the task reads (`infmae finetune --task-option KEY=VALUE` is checked against them);
    # None: not declared, any key is accepted
    option_keys: ClassVar[tuple[str, ...] | None] = None
    # the key of `evaluate()`'s result that decides the "best" checkpoint, and its direction
    primary_metric: ClassVar[str]
    primary_mode: ClassVar[str] = "max"  # "max": higher is better; "min": lower is better
    # DDP's find_unused_parameters: True is always correct; False saves a graph traversal per step when every
    # parameter of the model (the whole backbone included, F4 too) gets a gradient from the loss
    find_unused_parameters: ClassVar[bool] = True

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    # ------------------------------------------------------------------------------------------ data
    @classmethod
    @abstractmethod
    def detect_layout(cls, data_dir: Path) -> str:
        """The name of the layout of `data_dir` (e.g. "sirst", "coco"); DataLayoutError if none matches."""

    @abstractmethod
    def dataset(self, data_dir: Path, split: str, train: bool, input_size: int) -> torch.utils.data.Dataset:
        """The split's samples (train=True: with augmentation, crops of `input_size`; False: whole images)."""

    def collate(self, items: Sequence[Any]) -> Any:
        """Batch a list of dataset items (default: torch's default_collate)."""
        return torch.utils.data.default_collate(list(items))

    # ----------------------------------------------------------------------------------------- model
    @abstractmethod
    def build_model(self, backbone: nn.Module) -> nn.Module:
        """The full task model around `backbone` (an `InfMAEBackbone`). The model must expose
        `param_groups(weight_decay, layer_decay)` (backbone layers decayed, head at full lr)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of one batch (model in train mode) and a dict of scalars to log."""

    # ------------------------------------------------------------------------------------ evaluation
    @abstractmethod
    def evaluate(self, model: nn.Module, dataset: torch.utils.data.Dataset, device: torch.device) -> dict[str, Any]:
        """Metrics of `model` (eval mode, no grad) over the whole `dataset` (built with train=False)."""

    @abstractmethod
    def predict(self, model: nn.Module, images: Sequence[Path], out_dir: Path, device: torch.device,
                **kwargs: Any) -> list[Path]:
        """Run on image files and write outputs (maps, overlays, drawn boxes) under out_dir; the paths."""

    def sample_images(self, data_dir: Path, split: str, count: int) -> list[Path]:
        """`count` image files of `split`, spread evenly (the fixed sample whose predictions a run draws).
        Default: the `image_paths` / `images` / `paths` / `files` list of the split's dataset (train=False)."""
        ds = self.dataset(data_dir, split, False, int(self.defaults.get("input_size", 256)))
        for attr in ("image_paths", "images", "paths", "files"):
            items = getattr(ds, attr, None)
            if isinstance(items, (list, tuple)) and items and isinstance(items[0], (str, Path)):
                n = len(items)
                return [Path(items[int(k * n / count)]) for k in range(min(count, n))]
        return []

    def table_columns(self) -> list[str]:
        """The metric keys `infmae compare` prints, in the paper's order."""
        return [self.primary_metric]
