"""The training engine with real processes on real frames (CPU): options checked up front, the run-folder
lock, the epoch mean after a mid-epoch resume, truncated / garbage / unwritable checkpoints, the meaning of
the 0 intervals, and DDP without gradient-stride copies (a real gloo process group)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import infmae_app

INFMAE = str(Path(sys.executable).parent / "infmae")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def args(data: Path, run: Path, *extra: str) -> list[str]:
    """A tiny CPU pre-training: 16 frames, batch 4 -> 4 steps per epoch."""
    return ["pretrain", "--data", str(data), "--out", str(run), "--preset", "infmae_tiny", "--epochs", "2",
            "--warmup-epochs", "1", "--batch", "4", "--input-size", "32", "--workers", "0", "--device", "cpu",
            "--vis-every", "0", "--log-every", "1", "--deterministic", "-q", *extra]


def patched(hook: str, *cli_args: str) -> list[str]:
    """The real CLI in a new process, with ``infmae.checkpoint.before_commit`` replaced by ``hook``
    (a lambda's source, called with the temporary checkpoint folder before it is committed)."""
    code = (f"import os, sys, time, signal, infmae.checkpoint as c; c.before_commit = {hook}; "
            "from cli import infmae_app; infmae_app(prog_name='infmae')")
    return [sys.executable, "-c", code, *cli_args]


# the 3rd checkpoint write dies (SIGKILL) after the weights and state are written: mid-epoch, mid-write
KILL_ON_THIRD = ("(lambda n=[0]: (lambda tmp: (n.__setitem__(0, n[0] + 1), "
                 "n[0] == 3 and os.kill(os.getpid(), signal.SIGKILL))))()")


def one_line_error(r) -> str:
    """The one `error: ...` line, last on stderr (after at most the run's start line), no traceback."""
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), r.stderr[-2000:]
    assert all(not x.startswith("error") for x in lines[:-1]) and len(lines) <= 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return lines[-1]


@pytest.mark.parametrize("bad,words", [
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--max-steps", "-1"], "--max-steps must be >= 1"),
    (["--latest-every", "-1"], "--latest-every must be >= 0"),
    (["--save-every", "-2"], "--save-every must be >= 0"),
    (["--log-every", "0"], "--log-every must be >= 1"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--batch", "0"], "--batch must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--input-size", "40"], "--input-size must be a positive multiple of 16"),
    (["--precision", "fp8"], "--precision must be one of"),
    (["--accum", "3"], "--batch 4 must be divisible by --accum 3"),
    (["--preset", "nope"], "--preset must be one of"),
    (["--max-minutes", "0"], "--max-minutes must be > 0"),
])
def test_bad_pretrain_options_exit_2_before_any_work(tmp_path: Path, bad: list[str], words: str) -> None:
    """Every option is checked in PretrainConfig.validate() before the data is read or --out created."""
    run = tmp_path / "run"
    r = runner.invoke(infmae_app, args(tmp_path / "no-such-data", run, *bad))
    assert r.exit_code == 2, r.output
    line = one_line_error(r)
    assert words in line, line
    assert not run.exists()


def test_zero_intervals_mean_only_at_the_end(frames_folder, tmp_path: Path) -> None:
    """--latest-every 0 writes checkpoint-latest only at the end, --save-every 0 only the last epoch's folder
    (before the engine they divided by zero after the first step)."""
    torch.set_num_threads(1)
    data, run = frames_folder(16), tmp_path / "run"
    r = runner.invoke(infmae_app, args(data, run, "--latest-every", "0", "--save-every", "0"))
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-0002", "checkpoint-latest"]
    assert json.loads((run / "checkpoint-latest" / "trainer.json").read_text())["step"] == 8
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in epochs if x["kind"] == "epoch"] == [1, 2]


def test_mid_epoch_kill_then_resume_logs_the_uninterrupted_epoch_mean(frames_folder, tmp_path: Path) -> None:
    """Killed inside the 3rd checkpoint write (step 3 of a 4-step epoch) and re-run: the same weights and the
    same epoch mean loss in metrics.jsonl as one uninterrupted run (the running sums are checkpointed)."""
    data = frames_folder(16)
    straight, run = tmp_path / "straight", tmp_path / "run"
    extra = ("--latest-every", "1", "--max-steps", "6")
    torch.set_num_threads(1)
    r = runner.invoke(infmae_app, args(data, straight, *extra))
    assert r.exit_code == 0, r.output
    p = subprocess.run(patched(KILL_ON_THIRD, *args(data, run, *extra)), capture_output=True, text=True, env=ENV,
                       timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    assert json.loads((run / "checkpoint-latest" / "trainer.json").read_text())["step"] == 2  # mid-epoch 0
    r = runner.invoke(infmae_app, args(data, run, *extra))
    assert r.exit_code == 0, r.output
    assert "checkpoint-latest at step 2" in r.stderr

    def records(d: Path) -> list[dict]:
        return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]

    a, b = records(straight), records(run)
    assert [x["step"] for x in b if x["kind"] == "step"] == list(range(1, 7))
    ea, eb = [x for x in a if x["kind"] == "epoch"], [x for x in b if x["kind"] == "epoch"]
    assert len(ea) == len(eb) == 1
    assert eb[0]["loss"] == ea[0]["loss"]  # bitwise: the same losses summed in the same order
    sa = [x["loss"] for x in a if x["kind"] == "step"]
    assert ea[0]["loss"] == pytest.approx(sum(sa[:4]) / 4)
    wa = torch.load(straight / "checkpoint-latest" / "train_state.pt", weights_only=True)
    wb = torch.load(run / "checkpoint-latest" / "train_state.pt", weights_only=True)
    assert wa["running"] == wb["running"] and wa["step"] == wb["step"] == 6


def test_a_second_run_into_a_busy_folder_is_refused_and_leaves_the_first_alone(frames_folder, tmp_path: Path) -> None:
    """Two real processes: while the first one is inside a checkpoint write, the same command is refused with
    one line (exit 1), and the first's temporary checkpoint is still there; the first then finishes."""
    data, run = frames_folder(16), tmp_path / "run"
    flag = tmp_path / "go"
    hold = f"(lambda tmp: [time.sleep(0.05) for _ in range(2400) if not os.path.exists({str(flag)!r})])"
    first = subprocess.Popen(patched(hold, *args(data, run, "--max-steps", "1")), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not list(run.glob(".tmp-checkpoint-latest-*/train_state.pt")):
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        partial = next(run.glob(".tmp-checkpoint-latest-*"))
        second = subprocess.run([INFMAE, *args(data, run, "--max-steps", "1")], capture_output=True, text=True,
                                env=ENV, timeout=120)
        assert second.returncode == 1
        assert "another infmae pretrain process is writing" in one_line_error(second)
        assert (partial / "train_state.pt").is_file() and (partial / "model.safetensors").is_file()
        flag.touch()
        assert first.wait(timeout=120) == 0, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert json.loads((run / "checkpoint-latest" / "trainer.json").read_text())["step"] == 1
    assert not list(run.glob(".tmp-*"))


def test_truncated_latest_falls_back_and_garbage_everywhere_is_one_line(frames_folder, tmp_path: Path) -> None:
    """A truncated checkpoint-latest: the re-run says so and resumes from the newest complete checkpoint
    (the epoch folder), ending equal to an uninterrupted run. Nothing readable: a one-line error, files kept."""
    torch.set_num_threads(1)
    data = frames_folder(16)
    straight, run = tmp_path / "straight", tmp_path / "run"
    extra = ("--save-every", "1", "--latest-every", "1", "--max-steps", "6")
    assert runner.invoke(infmae_app, args(data, straight, *extra)).exit_code == 0
    r = runner.invoke(infmae_app, args(data, run, *extra[:4], "--max-steps", "5"))
    assert r.exit_code == 0, r.output
    weights = run / "checkpoint-latest" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated (a copy cut short, a bad disk)
    r = runner.invoke(infmae_app, args(data, run, *extra))
    assert r.exit_code == 0, r.output
    assert "checkpoint-latest is unreadable" in r.stderr and "falling back to" in r.stderr
    assert "checkpoint-0001 at step 4" in r.stderr
    a = torch.load(straight / "checkpoint-latest" / "train_state.pt", weights_only=True)
    b = torch.load(run / "checkpoint-latest" / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for k in ("exp_avg", "exp_avg_sq"):
        assert all(torch.equal(x[k], y[k]) for x, y in zip(a["optimizer"]["state"].values(),
                                                           b["optimizer"]["state"].values(), strict=True))
    for d in run.glob("checkpoint-*"):
        (d / "train_state.pt").write_bytes(b"garbage, not a torch file")
    r = runner.invoke(infmae_app, args(data, run, *extra[:4], "--max-steps", "7"))
    assert r.exit_code == 1
    line = one_line_error(r)
    assert "is unreadable" in line and "no readable checkpoint to resume from" in line
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0001", "checkpoint-latest"]


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(frames_folder, tmp_path: Path) -> None:
    """RLIMIT_FSIZE (EFBIG: the path of a full disk or quota) caps files at 3 MB: infmae_tiny's weights
    (2.1 MB) fit, its optimizer state (4.3 MB) does not. The run stops with one line (exit 1), the previous
    checkpoint-latest is intact and loadable, no partial folder stays, and a re-run with room finishes."""
    data, run = frames_folder(16), tmp_path / "run"
    torch.set_num_threads(1)
    r = runner.invoke(infmae_app, args(data, run, "--max-steps", "2", "--latest-every", "2"))
    assert r.exit_code == 0, r.output

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))

    cmd = [INFMAE, *args(data, run, "--max-steps", "4", "--latest-every", "2")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, preexec_fn=limit)
    assert r.returncode == 1, r.stderr[-2000:]
    line = one_line_error(r)
    assert line.startswith(f"error: cannot write to {run}: File too large") and "re-run" in line
    assert f"last good checkpoint: {run / 'checkpoint-latest'} (intact)" in line
    assert json.loads((run / "checkpoint-latest" / "trainer.json").read_text())["step"] == 2
    from infmae.checkpoint import read_training_checkpoint
    from infmae.model import load_model

    read_training_checkpoint(run / "checkpoint-latest")
    load_model(run / "checkpoint-latest")
    assert not list(run.glob(".tmp-*"))
    r = runner.invoke(infmae_app, cmd[1:])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "checkpoint-latest" / "trainer.json").read_text())["step"] == 4


STRIDE_CHECK = """
import sys, warnings, torch, torch.distributed as dist
from infmae.backbone import InfMAEBackbone
from infmae.engine import match_grad_layout
from infmae.model import create_model
torch.set_num_threads(1)
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
for kind in ("pretrain", "backbone"):  # the warning is once per process: a second one only shows with the fix
    model = create_model("infmae_tiny") if kind == "pretrain" else InfMAEBackbone("infmae_tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fixed = match_grad_layout(model) if sys.argv[1] == "fix" else []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # values unchanged
    net = torch.nn.parallel.DistributedDataParallel(model)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = net(torch.randn(2, 3, 32, 32))
        (out[0] if kind == "pretrain" else sum(f.mean() for f in out)).backward()
    print(len(fixed), sum("Grad strides do not match" in str(w.message) for w in seen))
"""


def test_ddp_has_no_grad_stride_mismatch(frames_folder, tmp_path: Path) -> None:
    """`infmae pretrain --nproc 2` (real gloo processes) emits no "Grad strides do not match bucket view
    strides" warning. In fresh processes with a 1-rank gloo group (the same DDP reducer; the warning is
    once per process): without the engine's layout matching the warning is there (so the check can fail);
    with it, it is gone for the pre-training model and the fine-tuning backbone."""
    data = frames_folder(16)
    r = subprocess.run([INFMAE, *args(data, tmp_path / "a", "--max-steps", "1", "--nproc", "2")],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 x cpu" in r.stderr
    assert "Grad strides do not match" not in r.stderr
    out = {}
    for fix in ("none", "fix"):
        p = subprocess.run([sys.executable, "-c", STRIDE_CHECK, fix], capture_output=True, text=True, env=ENV,
                           timeout=120, cwd=REPO)
        assert p.returncode == 0, p.stderr[-2000:]
        out[fix] = [int(x) for x in p.stdout.split()]
    # (kernels re-strided, warnings) for the pre-training model, then the backbone: 2 depthwise kernels in tiny
    assert out["none"] == [0, 1, 0, 0] and out["fix"] == [2, 0, 2, 0], out


# The CLI's defaults and help come from PretrainConfig / FinetuneConfig: tests/test_cli_options.py checks every
# field of both (and that a run records each option given on the command line).


def test_schedules_and_layer_wise_lr_decay() -> None:
    """Warm-up then cosine or poly (power 0.9); AdamW groups with ConvMAE's layer-wise decay over the
    Transformer depth (patch embeddings and conv stages at layer 0) and the head at full lr."""
    from infmae.backbone import InfMAEBackbone
    from infmae.engine import RunConfig, lr_at, make_optimizer

    cfg = RunConfig(data="d", out="o", epochs=10, warmup_epochs=2, lr=1.0, min_lr=0.1)
    assert lr_at(1.0, cfg) == pytest.approx(0.5) and lr_at(2.0, cfg) == pytest.approx(1.0)
    assert lr_at(6.0, cfg) == pytest.approx(0.55) and lr_at(10.0, cfg) == pytest.approx(0.1)
    cfg.schedule = "poly"
    assert lr_at(6.0, cfg) == pytest.approx(0.1 + 0.9 * 0.5 ** 0.9) and lr_at(10.0, cfg) == pytest.approx(0.1)

    class Seg(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = InfMAEBackbone("infmae_small")  # Transformer depth 11
            self.head = torch.nn.Conv2d(128, 2, 1)

        def param_groups(self, wd: float, ld: float | None = None) -> list[dict]:
            return [*self.backbone.param_groups(wd, ld), {"params": list(self.head.parameters()), "weight_decay": wd}]

    model = Seg()
    opt = make_optimizer(model, RunConfig(data="d", out="o", lr=1e-3, weight_decay=0.05, layer_decay=0.75))
    scale, decay = {}, {}
    for g in opt.param_groups:
        for p in g["params"]:
            scale[id(p)], decay[id(p)] = g["lr_scale"], g["weight_decay"]
    named = dict(model.named_parameters())
    assert len(scale) == len(named)  # every parameter once
    want = {"backbone.encoder.embed1.proj.weight": 0.75 ** 12, "backbone.encoder.stage1.1.dwconv.weight": 0.75 ** 12,
            "backbone.encoder.stage2.0.mlp.fc1.weight": 0.75 ** 12, "backbone.encoder.embed3_linear.weight": 0.75 ** 12,
            "backbone.encoder.blocks.0.attn.qkv.weight": 0.75 ** 11, "backbone.encoder.blocks.10.mlp.fc2.weight": 0.75,
            "backbone.encoder.norm.weight": 1.0, "backbone.down.weight": 1.0, "head.weight": 1.0}
    for name, s in want.items():
        assert scale[id(named[name])] == pytest.approx(s), name
    assert decay[id(named["backbone.encoder.blocks.0.attn.qkv.bias"])] == 0.0
    assert decay[id(named["backbone.encoder.blocks.0.attn.qkv.weight"])] == 0.05
