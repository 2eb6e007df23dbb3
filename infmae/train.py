"""InfMAE pre-training: the paper's recipe (section 5.1), resumable and distributed.

Shaped like facebookresearch/mae `main_pretrain.py`: :func:`pretrain` validates the options, locks the run
folder and launches the workers; :func:`train_worker` sets up (data, model, optimizer, resume) and hands the
loop to :class:`infmae.engine.Engine` (``train_one_epoch`` + epoch-end hooks: save, visualize).

Recipe: AdamW (betas 0.9, 0.95; fused kernel), weight decay 0.05 on weights only (``model.param_groups``),
lr = blr x effective batch / 256 set every optimizer step on a linear warm-up then a half-cycle cosine,
gradient accumulation, bf16 autocast (fp16 with a grad scaler as an option, fp32), optional ``torch.compile``.
``--batch`` is the *effective* batch of one optimizer step over all processes and accumulation steps
(the paper's 256): every process gets ``batch / (processes x accum)`` images per micro-step.

Run directory::

    RUN_DIR/
      .lock                  held while a run writes the folder (a second run into it is refused)
      checkpoint-latest/     every --latest-every steps and at the end (plus checkpoint-latest.prev while swapping)
      checkpoint-0040/ ...   every --save-every epochs and after the last epoch
        model.safetensors, config.json   the model (infmae.model.load_model reads the folder)
        train_state.pt                   optimizer, grad scaler, step, running sums, RNG states
        train_config.json                the full training configuration
        trainer.json                     step, epoch, loss: written last, marks the folder complete
      metrics.jsonl          one JSON line per logged step and per epoch
      tb/                    TensorBoard event files
      vis/epoch-0005.png ... reconstructions of fixed images (original | visible | reconstruction | pasted)

Re-running the same command resumes from the newest readable checkpoint, mid-epoch included: the sampler
skips the steps already done and every sample's augmentation depends only on (seed, epoch, position), so the
resumed run is the run that was interrupted (bitwise on CPU; see docs/pretrain.md).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from infmae.checkpoint import (  # noqa: F401 - re-exported for scripts
    CheckpointError,
    before_commit,
    load_train_state,
    newest_complete,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from infmae.data import DataError, make_loader, open_source, sample_seed
from infmae.distributed import cleanup
from infmae.engine import (  # noqa: F401 - re-exported: the pre-training API before the engine existed
    Engine,
    NonFiniteLossError,
    RunConfig,
    TrainError,
    autocast,
    check,
    make_adamw,
    make_optimizer,
    note,
    resolve_precision,
    run_locked,
    setup,
    wrap_model,
)
from infmae.engine import lr_at as _lr_at
from infmae.options import PretrainConfig  # noqa: F401 - re-exported

# settings that must not change when a run is resumed (they change what a step computes)
RESUME_KEYS = ("preset", "input_size", "batch", "blr", "lr", "seed", "mask_stride", "norm_pix_loss",
               "model_overrides", "weight_decay", "warmup_epochs", "min_lr", "schedule", "drop_path")


def base_lr(cfg: PretrainConfig) -> float:
    """Peak learning rate: ``--lr`` when given, else blr x effective batch / 256."""
    return cfg.peak_lr()


def lr_at(epoch_f: float, cfg: RunConfig) -> float:
    """Learning rate at fractional epoch ``epoch_f`` (``infmae.engine.lr_at``)."""
    return _lr_at(epoch_f, cfg)


def check_resume(saved: dict[str, Any], cfg: RunConfig, n_images: int, run_dir: Path,
                 keys: tuple[str, ...] = RESUME_KEYS) -> None:
    """TrainError when ``run_dir``'s run was made with other step-defining settings or data."""
    old = saved.get("train", {})
    for key in keys:
        if key in old and hasattr(cfg, key) and old[key] != getattr(cfg, key):
            raise TrainError(
                f"{run_dir} holds a run with {key}={old[key]!r}, this command has {getattr(cfg, key)!r}; "
                "use the same settings to resume or a new --out"
            )
    if saved.get("n_images") not in (None, n_images):
        raise TrainError(
            f"the dataset has {n_images} images but {run_dir} was trained on {saved['n_images']}; "
            "resume with the same data or use a new --out"
        )


# ----------------------------------------------------------------------------------------------- the worker
def train_worker(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """One training process (rank from the environment); returns a summary (rank 0's is the run's)."""
    cfg = PretrainConfig.from_dict(cfg_dict)
    info, precision = setup(cfg)
    try:
        return _pretrain(cfg, info, precision)
    finally:
        cleanup()


def _pretrain(cfg: PretrainConfig, info: Any, precision: str) -> dict[str, Any]:
    from infmae.model import create_model

    run_dir, device = Path(cfg.out), info.device
    source = open_source(cfg.data)
    li = make_loader(
        source, cfg.input_size, cfg.batch, info.world, info.rank, cfg.accum, cfg.seed, cfg.workers,
        pin_memory=device.type == "cuda", loader=cfg.loader,
    )
    torch.manual_seed(cfg.seed)  # identical initialization on every rank
    overrides = {"mask_stride": cfg.mask_stride, "norm_pix_loss": cfg.norm_pix_loss, **cfg.model_overrides}
    if cfg.drop_path:
        overrides["drop_path"] = cfg.drop_path
    model = create_model(cfg.preset, **overrides).to(device)
    li.match_model(model)  # gray [B, 1, H, W] batches for a model that accepts them (no 3x copy)
    optimizer = make_optimizer(model, cfg)
    seeded_masking = model.config.get("masking") == "random" or bool(model.config.get("jitter"))
    spe = li.sampler.steps_per_epoch
    full_config = {
        "train": asdict(cfg), "model": model.config, "world": info.world, "precision": precision,
        "steps_per_epoch": spe, "peak_lr": cfg.peak_lr(), "n_images": len(source),
        "data_description": source.describe, "loader": getattr(li, "describe", ""), "torch": torch.__version__,
    }

    def loss_fn(net: torch.nn.Module, imgs: torch.Tensor, step: int, micro: int):
        kwargs = {"seed": sample_seed(cfg.seed, step, info.rank * cfg.accum + micro)} if seeded_masking else {}
        loss, _, _ = net(imgs, **kwargs)
        return loss, {}

    eng = Engine(cfg, info, precision, run_dir, model, model, optimizer, li.sampler, li.loader, loss_fn,
                 li.to_input, full_config, name="pretrain")
    step = eng.resume(lambda saved: check_resume(saved, cfg, len(source), run_dir))
    eng.net = wrap_model(model, info, cfg.compile)
    if info.is_main:
        where = f"resumed from {eng.resumed_from} at step {step}" if eng.resumed_from is not None else "new run"
        note(
            f"infmae pretrain: {getattr(li, 'describe', '') or source.describe}; {cfg.preset} at {cfg.input_size}px on {info.world} x {device.type}"
            f" ({precision}); batch {cfg.batch} = {li.sampler.micro} x {info.world} proc x {cfg.accum} accum;"
            f" lr {cfg.peak_lr():.3g}; {spe} steps/epoch, {eng.total_steps} total; {where}"
        )

    fixed = li.dataset.fixed_views(cfg.vis_count) if info.is_main else None
    pngs: list[Path] = []

    def visualize(tag: str) -> None:
        if not info.is_main:
            return
        from infmae.visualize import save_reconstruction

        model.eval()
        with torch.no_grad(), autocast(device, precision):
            pngs.append(save_reconstruction(model, fixed.to(device), run_dir / "vis" / f"{tag}.png",
                                            title=f"{cfg.preset} step {eng.state.step}"))
        model.train()

    def on_epoch_end(engine: Engine, ep: int) -> None:  # MAE's epoch-end: save, then visualize
        if (cfg.save_every and ep % cfg.save_every == 0) or ep == cfg.epochs:
            engine.save(f"checkpoint-{ep:04d}")
        if cfg.vis_every and ep % cfg.vis_every == 0:
            visualize(f"epoch-{ep:04d}")

    try:
        result = eng.fit([on_epoch_end])
        visualize("final")
    finally:
        eng.close()
    result["png"] = str(pngs[-1]) if pngs else ""
    return result


def _launched_worker(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Entry point of a worker started by :func:`infmae.distributed.launch` (user errors become values)."""
    from inf30.errors import UserError

    try:
        return train_worker(cfg_dict)
    except (UserError, DataError) as exc:
        return {"error": str(exc), "usage": isinstance(exc, ValueError) and not isinstance(exc, TrainError)}


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pre-train as configured; with several processes per node (``--nproc``, default the GPU count) or
    several nodes, start the workers through torch's elastic launcher and return rank 0's summary.
    Options are validated first (UsageError, nothing created); a second run into a busy ``--out`` is refused
    (BusyError) without touching it."""
    return run_locked(cfg, train_worker, _launched_worker, "infmae pretrain")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `infmae pretrain`")
