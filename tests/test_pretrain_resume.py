"""Resumable pre-training with real processes: SIGKILL mid-run and mid-checkpoint-write, then re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

INFMAE = str(Path(sys.executable).parent / "infmae")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# the real CLI with the checkpoint writer's test hook patched: a 0.5 s pause after the weights and state
PAUSED_CLI = ("import time, infmae.checkpoint as c; c.before_commit = lambda tmp: time.sleep(0.5); "
              "from cli import infmae_app; infmae_app(prog_name='infmae')")
N = 16  # optimizer steps; 64 images / batch 8 = 8 steps per epoch, so the kill lands in epoch 0 or 1


def command(data: Path, run: Path, *extra: str) -> list[str]:
    return [INFMAE, "pretrain", "--data", str(data), "--out", str(run), "--preset", "infmae_tiny",
            "--epochs", "3", "--warmup-epochs", "1", "--batch", "8", "--input-size", "64", "--workers", "0",
            "--max-steps", str(N), "--latest-every", "1", "--log-every", "1", "--save-every", "100",
            "--vis-every", "0", "--deterministic", "-q", *extra]


def latest_step(run: Path) -> int:
    try:
        return json.loads((run / "checkpoint-latest" / "trainer.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true (polled every 2 ms)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before the kill: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting to kill"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def assert_same_run(a: Path, b: Path) -> None:
    wa = load_file(str(a / "checkpoint-latest" / "model.safetensors"))
    wb = load_file(str(b / "checkpoint-latest" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise
    sa = torch.load(a / "checkpoint-latest" / "train_state.pt", weights_only=True)
    sb = torch.load(b / "checkpoint-latest" / "train_state.pt", weights_only=True)
    assert sa["step"] == sb["step"] == N
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_kill_mid_run_and_mid_checkpoint_write_then_resume_bitwise(frames_folder, tmp_path: Path) -> None:
    """N steps in one process == the same command SIGKILLed mid-run, re-run and SIGKILLed inside a checkpoint
    write, then re-run to N: same parameters and optimizer state, bitwise (CPU, --deterministic)."""
    from infmae.model import load_model

    data = frames_folder(64)
    straight, run = tmp_path / "straight", tmp_path / "run"
    r = subprocess.run(command(data, straight), capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]

    # 1. a plain SIGKILL once N/4 steps are checkpointed (epoch 0 of 8-step epochs)
    proc = subprocess.Popen(command(data, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    kill_when(proc, lambda: latest_step(run) >= N // 4)
    first = latest_step(run)
    assert N // 4 <= first < N

    # 2. the same command resumes; every checkpoint write now pauses 0.5 s after the weights and optimizer
    # state are written (before the completion marker and the rename), and the kill lands in that pause once
    # N/2 steps are done: mid-epoch 1, mid-write
    paused = [sys.executable, "-c", PAUSED_CLI, *command(data, run)[1:]]
    proc = subprocess.Popen(paused, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)

    partial = run / f".tmp-checkpoint-latest-{proc.pid}"
    kill_when(proc, lambda: latest_step(run) > N // 2 and (partial / "train_state.pt").exists())
    assert not (partial / "trainer.json").exists()  # the new checkpoint is half-written
    good = latest_step(run)
    assert first < good < N and good % 8 != 0  # progress was made and we are mid-epoch
    model = load_model(run / "checkpoint-latest")  # the previous checkpoint is complete and loadable
    assert all(torch.isfinite(p).all() for p in model.parameters())
    torch.load(run / "checkpoint-latest" / "train_state.pt", weights_only=True)
    # a kill between the two renames of a swap would leave only checkpoint-latest.prev: make that state
    os.replace(run / "checkpoint-latest", run / "checkpoint-latest.prev")

    # 3. the same command finishes the run from there
    r = subprocess.run(command(data, run), capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"checkpoint-latest.prev at step {good}" in r.stderr
    assert not list(run.glob(".tmp-*")) and not (run / "checkpoint-latest.prev").exists()
    assert_same_run(straight, run)
    # metrics were cut back to each checkpoint and continued: one line per step, in order
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "step"]
    assert steps == list(range(1, N + 1))
