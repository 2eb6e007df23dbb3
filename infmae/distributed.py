"""Process-group setup and the elastic launcher (the machinery behind ``torchrun``).

``infmae pretrain --nproc N`` (or a machine with several GPUs) calls :func:`launch`, which starts N workers
per node through :func:`torch.distributed.launcher.api.elastic_launch`: on one node with the ``c10d``
rendezvous on a free local port (like ``torchrun --standalone``), on several nodes with the ``static``
rendezvous at ``--master-addr:--master-port`` and ``--node-rank`` (like ``torchrun --nnodes --node-rank``).
Each worker reads ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` from the environment the launcher sets and calls
:func:`init_distributed`. A run started by the user's own ``torchrun`` works the same way.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """This process's place in the job and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def env_world() -> tuple[int, int, int, int]:
    """``(rank, world, local_rank, local_world)`` from the launcher's environment (1 process when unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return rank, world, local_rank, local_world


def inside_launcher() -> bool:
    """True in a worker started by torchrun / elastic_launch."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def select_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this worker's GPU (``cuda:LOCAL_RANK``) when CUDA is available, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but CUDA is not available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(requested)


def init_distributed(device: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the process group when launched with several processes (NCCL on GPUs, gloo on CPU)."""
    rank, world, local_rank, local_world = env_world()
    dev = select_device(device, local_rank)
    if dev.type == "cuda" and local_world > torch.cuda.device_count():
        raise ValueError(
            f"{local_world} processes per node but {torch.cuda.device_count()} visible GPU(s); "
            "lower --nproc or use --device cpu"
        )
    info = DistInfo(rank, world, local_rank, local_world, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
        if backend == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
        info.backend = backend
    if dev.type == "cpu" and local_world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return info


def cleanup() -> None:
    """Leave the process group (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def default_nproc(device: str = "auto") -> int:
    """Processes per node when ``--nproc`` is not given: the GPU count on a CUDA machine, else 1."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LaunchError(RuntimeError):
    """A worker failed; the message is one line naming the rank and the worker's error."""


def launch(
    entrypoint: Callable[..., Any],
    args: tuple,
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    max_restarts: int = 0,
) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` in ``nproc`` workers per node through torch's elastic launcher.

    ``entrypoint`` must be a module-level function (workers are spawned). Returns ``{global rank: return
    value}`` for this node's workers. A failed worker raises :class:`LaunchError`.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1 or nnodes < 1:
        raise ValueError(f"--nproc and --nnodes must be >= 1, got {nproc} and {nnodes}")
    if nnodes > 1:
        if master_port is None:
            raise ValueError("multi-node runs need --master-addr and --master-port")
        backend, endpoint, conf = "static", f"{master_addr}:{master_port}", {"rank": node_rank}
        run_id = f"infmae-{master_addr}-{master_port}"
    else:
        port = master_port or free_port()
        backend, endpoint, conf = "c10d", f"127.0.0.1:{port}", {}
        run_id = f"infmae-{uuid.uuid4().hex[:8]}"
    if "OMP_NUM_THREADS" not in os.environ and nproc > 1 and not torch.cuda.is_available():
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    config = LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=nproc,
        run_id=run_id,
        rdzv_backend=backend,
        rdzv_endpoint=endpoint,
        rdzv_configs=conf,
        max_restarts=max_restarts,
        monitor_interval=0.2,
        start_method="spawn",
    )
    try:
        return elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        msg = failure.message
        if isinstance(msg, dict):
            msg = msg.get("message", "")
        msg = " ".join(str(msg or "").split())
        if not msg:
            msg = f"exit code {failure.exitcode}"
        raise LaunchError(f"worker rank {rank} failed: {msg[:400]}") from None
