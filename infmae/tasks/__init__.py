"""Downstream fine-tuning tasks (paper section 5): one module per task, all driven by one engine.

    irstd    infrared small-target detection (`infmae.tasks.irstd`)   metrics: IoU, nIoU, P_d, F_a, F1, AUC
    segment  semantic segmentation, FCN / UperNet heads (`.segment`)  metrics: mIoU, mAcc, aAcc
    detect   object detection, Faster / Mask R-CNN (`.detect`)        metrics: COCO mAP, AP50, AP50 per class

`get_task(name)` returns the task class; the engine (`infmae.finetune`) is task-agnostic.
"""

from __future__ import annotations

import importlib

from .base import DataLayoutError, DownstreamTask

__all__ = ["TASKS", "DataLayoutError", "DownstreamTask", "get_task"]

TASKS = {"irstd": "infmae.tasks.irstd:IRSTDTask", "segment": "infmae.tasks.segment:SegmentTask",
         "detect": "infmae.tasks.detect:DetectTask"}


def get_task(name: str) -> type[DownstreamTask]:
    """The task class registered as `name` (one of TASKS); ValueError with the choices otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
