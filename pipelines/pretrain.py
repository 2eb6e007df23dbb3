"""Pre-training flow for pipelines: a built (or published, or plain) dataset -> a short or full InfMAE run.

``python -m pipelines.pretrain --data inf30-demo --out runs/demo --minutes 3`` runs ``infmae_tiny`` on the CPU
for a few minutes (the ``make demo`` step); every other setting of ``infmae pretrain`` can be passed through
:func:`run_pretrain`'s keyword arguments.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from infmae.data import open_source
from infmae.train import PretrainConfig, pretrain


def demo_settings(n_images: int, minutes: float) -> dict[str, Any]:
    """A CPU-sized recipe for a small dataset: infmae_tiny at 96 px, batch <= 32 and <= half the dataset,
    peak lr 1.5e-3 (a tiny model on a tiny set learns visibly in minutes), 10 % warm-up, stopped by the time budget (the schedule is sized so it ends near the budget on a
    2-core machine)."""
    batch = 32
    while batch > 1 and batch > n_images // 2:  # at least 2 steps per epoch
        batch //= 2
    steps_per_epoch = max(1, n_images // batch)
    # infmae_tiny at 96 px trains at ~90 img/s with 1 thread + 1 loader worker on a busy 2-core machine
    # (benchmarks/dataloader_throughput.py --pipeline-steps); size the schedule for 60 img/s
    epochs = max(2, int(minutes * 60 * 60 / batch / steps_per_epoch))
    return {
        "preset": "infmae_tiny", "input_size": 96, "batch": batch, "epochs": epochs,
        "warmup_epochs": max(1.0, epochs / 10), "lr": 1.5e-3, "workers": 1, "device": "cpu", "nproc": 1,
        # one core for the loader worker, the rest for the model (oversubscribed OpenMP threads spin)
        "threads": max(1, (os.cpu_count() or 2) - 1),
        "max_minutes": minutes, "vis_every": max(1, epochs // 4), "save_every": epochs, "latest_every": 50,
        "log_every": 10,
    }


def run_pretrain(data: str | Path, out: str | Path, minutes: float | None = 3.0, **overrides: Any) -> dict[str, Any]:
    """Pre-train on ``data`` into ``out``. With ``minutes`` (and no overrides of the recipe) the CPU demo
    recipe of :func:`demo_settings`; ``overrides`` are :class:`infmae.train.PretrainConfig` fields.
    Re-running resumes. Returns the trainer's summary (checkpoint, PNG, metrics paths)."""
    settings: dict[str, Any] = {}
    if minutes is not None:
        settings = demo_settings(len(open_source(data)), minutes)
    settings.update(overrides)
    cfg = PretrainConfig(data=str(data), out=str(out), **settings)
    return pretrain(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="built / published dataset or image folder")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--minutes", type=float, default=3.0, help="time budget of the CPU demo run")
    args = ap.parse_args()
    result = run_pretrain(args.data, args.out, args.minutes)
    print(f"checkpoint: {result['checkpoint']}\nreconstruction: {result['png']}")


if __name__ == "__main__":
    main()
