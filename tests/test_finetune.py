"""The fine-tuning engine (`infmae finetune / evaluate / predict / compare`) on real SIRST images and masks.

The engine is task-agnostic; to test it independently of the real tasks, `PixelTask` below is a small but
real task written against the contract (`infmae.tasks.base.DownstreamTask`): per-pixel target regression on
SIRST (a 1x1 convolution on F1, upsampled), with its own IoU / MAE metrics and drawn predictions. It is
registered for the test as task `pixel`, in this process and (through `-c`) in subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import mini_sirst
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from cli import infmae_app
from infmae.tasks.base import DataLayoutError, DownstreamTask

INFMAE = str(Path(sys.executable).parent / "infmae")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HERE = Path(__file__).resolve().parent
runner = CliRunner()


# ----------------------------------------------------------------------------------------------- the task
class PixelModel(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(backbone.out_channels[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> logits [B, 1, H, W]."""
        f1 = self.backbone(x)[0]
        return F.interpolate(self.head(f1.contiguous()), size=x.shape[-2:], mode="bilinear", align_corners=False)

    def param_groups(self, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
        groups = self.backbone.param_groups(weight_decay, layer_decay)
        groups.append({"params": list(self.head.parameters()), "weight_decay": 0.0, "lr_scale": 1.0})
        return groups


class PixelDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, names: list[str], train: bool, size: int) -> None:
        self.root, self.names, self.train, self.size = root, names, train, size
        self.image_paths = [root / "images" / f"{n}.png" for n in names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.image_paths[i]) as im:
            img = im.convert("L")
        with Image.open(self.root / "masks" / f"{self.names[i]}_pixels0.png") as m:
            mask = m.convert("L")
        if self.train:  # a random crop of half to all of the image, and a flip: the global RNGs (seeded per sample)
            w, h = img.size
            s = random.uniform(0.5, 1.0)
            cw, ch = max(1, int(w * s)), max(1, int(h * s))
            left, top = random.randint(0, w - cw), random.randint(0, h - ch)
            box = (left, top, left + cw, top + ch)
            img, mask = img.crop(box), mask.crop(box)
            if torch.rand(()) < 0.5:
                img, mask = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
        mask = mask.resize((self.size, self.size), Image.Resampling.NEAREST)
        x = (torch.from_numpy(np.asarray(img, dtype=np.float32)) / 255 - 0.425) / 0.2
        y = torch.from_numpy((np.asarray(mask) > 127).astype(np.float32))
        return x.expand(3, -1, -1).contiguous(), y[None]


class PixelTask(DownstreamTask):
    """Per-pixel target map regression on SIRST (BCE), metrics IoU and MAE at 0.5."""

    name = "pixel"
    primary_metric = "iou"
    defaults = {"lr": 2e-3, "weight_decay": 0.05, "input_size": 64, "epochs": 2, "schedule": "cosine", "batch": 4}

    @classmethod
    def detect_layout(cls, data_dir: Path) -> str:
        if (data_dir / "images").is_dir() and (data_dir / "masks").is_dir() and (data_dir / "idx_427").is_dir():
            return "sirst"
        raise DataLayoutError(f"{data_dir}: expected the NUAA-SIRST layout (images/, masks/, idx_427/)")

    def dataset(self, data_dir: Path, split: str, train: bool, input_size: int) -> PixelDataset:
        f = data_dir / "idx_427" / f"{split}.txt"
        if not f.is_file():
            raise FileNotFoundError(f)
        return PixelDataset(data_dir, f.read_text().split(), train, input_size)

    def build_model(self, backbone: nn.Module) -> nn.Module:
        return PixelModel(backbone)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = (t.to(device) for t in batch)
        logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        return loss, {"pos_frac": float(y.mean())}

    def evaluate(self, model: nn.Module, dataset: Any, device: torch.device) -> dict[str, Any]:
        inter = union = 0.0
        err, n = 0.0, 0
        for i in range(len(dataset)):
            x, y = dataset[i]
            p = torch.sigmoid(model(x[None].to(device)))[0].cpu()
            b = p > 0.5
            t = y > 0.5
            inter += float((b & t).sum())
            union += float((b | t).sum())
            err += float((p - y).abs().mean())
            n += 1
        return {"iou": inter / max(union, 1.0), "mae": err / max(n, 1), "n": n}

    def predict(self, model: nn.Module, images: Sequence[Path], out_dir: Path, device: torch.device,
                **kwargs: Any) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for path in images:
            with Image.open(path) as im:
                img = im.convert("L").resize((64, 64))
            x = (torch.from_numpy(np.asarray(img, dtype=np.float32)) / 255 - 0.425) / 0.2
            p = torch.sigmoid(model(x.expand(3, -1, -1)[None].to(device)))[0, 0].cpu().numpy()
            dst = out_dir / f"{Path(path).stem}.png"
            Image.fromarray(np.concatenate([np.asarray(img), (p * 255).astype(np.uint8)], axis=1)).save(dst)
            paths.append(dst)
            if kwargs.get("save_json"):
                js = out_dir / f"{Path(path).stem}.json"
                js.write_text(json.dumps({"mean_prob": float(p.mean())}))
                paths.append(js)
        return paths

    def table_columns(self) -> list[str]:
        return ["iou", "mae"]


REGISTER = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import infmae.tasks as t; "
            "t.TASKS['pixel'] = 'test_finetune:PixelTask'; ")


@pytest.fixture(autouse=True)
def _register(monkeypatch: pytest.MonkeyPatch) -> None:
    import infmae.tasks

    monkeypatch.setitem(infmae.tasks.TASKS, "pixel", "test_finetune:PixelTask")
    monkeypatch.syspath_prepend(str(HERE))
    torch.set_num_threads(1)


def ft_args(data: Path, run: Path, *extra: str) -> list[str]:
    """Tiny fine-tuning: 16 images, batch 4 -> 4 steps per epoch, 2 epochs, 64 px, infmae_tiny."""
    return ["finetune", "pixel", "--data", str(data), "--out", str(run), "--preset", "infmae_tiny",
            "--workers", "0", "--device", "cpu", "--log-every", "1", "--deterministic", "--vis-count", "2", "-q",
            *extra]


# ----------------------------------------------------------------------------------------------- tests
def test_finetune_scratch_writes_results_and_evaluate_predict_compare_use_them(sirst_dir: Path, tmp_path: Path) -> None:
    data = mini_sirst(sirst_dir, tmp_path / "sirst")
    run = tmp_path / "scratch"
    r = runner.invoke(infmae_app, ft_args(data, run))
    assert r.exit_code == 0, r.output
    assert "init scratch" in r.stderr and "eval on val" in r.stderr and "layer decay 0.75" in r.stderr
    res = json.loads((run / "results.json").read_text())
    assert res["task"] == "pixel" and res["layout"] == "sirst" and res["init"]["kind"] == "scratch"
    assert res["init"]["sha256"] is None
    assert res["config"]["lr"] == 2e-3 and res["config"]["input_size"] == 64  # the task's defaults
    assert res["config"]["epochs"] == 2 and res["checkpoint"] == "checkpoint-best"
    assert set(res["val"]) == {"iou", "mae", "n"} and res["val"]["n"] == 4 and res["test"]["n"] == 4
    assert 0.0 <= res["test"]["iou"] <= 1.0 and 0.0 < res["test"]["mae"] < 1.0
    assert res["best"]["metric"] == "iou" and res["best"]["epoch"] in (1, 2)
    # the best checkpoint is the epoch with the highest val IoU among the evaluations logged
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in evals if x["kind"] == "eval"]
    assert [x["epoch"] for x in evals] == [1, 2]
    assert res["best"]["value"] == max(x["iou"] for x in evals)
    assert res["val"]["iou"] == pytest.approx(res["best"]["value"])
    md = (run / "results.md").read_text().splitlines()
    assert md[0] == "| run | task | init | split | iou | mae |" and md[2] == res["markdown"]
    assert len(res["predictions"]) == 2 and all((run / p).is_file() for p in res["predictions"])
    # layer-wise decay reached the optimizer: tiny has 2 Transformer blocks, so embeddings and conv stages get
    # 0.75^3, the blocks 0.75^2 and 0.75, the head 1
    st = torch.load(run / "checkpoint-latest" / "train_state.pt", weights_only=True)
    scales = sorted({g["lr_scale"] for g in st["optimizer"]["param_groups"]})
    assert scales == pytest.approx([0.75 ** 3, 0.75 ** 2, 0.75, 1.0])

    # evaluate: the same metrics from the best checkpoint
    r = runner.invoke(infmae_app, ["evaluate", str(run), "--data", str(data), "--split", "test", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == pytest.approx(res["test"])
    # predict: the task's drawings, kwargs passed through
    img = data / "images" / (data / "idx_427" / "test.txt").read_text().split()[0]
    img = img.with_suffix(".png")
    r = runner.invoke(infmae_app, ["predict", str(run), str(img), "--out", str(tmp_path / "pred"), "--save-json",
                                   "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert sorted(p.suffix for p in (tmp_path / "pred").iterdir() if p.name != ".lock") == [".json", ".png"]
    # compare: one row per run, the task's columns
    other = tmp_path / "other"
    other.mkdir()
    res2 = {**res, "test": {"iou": 0.5, "mae": 0.25}}
    (other / "results.json").write_text(json.dumps(res2))
    r = runner.invoke(infmae_app, ["compare", str(run), str(other)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "| run | task | init | split | iou | mae |"
    assert lines[2].startswith(f"| scratch | pixel | scratch | test | {res['test']['iou']:.4f} |")
    assert lines[3] == "| other | pixel | scratch | test | 0.5000 | 0.2500 |"
    # re-running the finished command changes nothing (it resumes at the end)
    before = (run / "checkpoint-latest" / "model.safetensors").read_bytes()
    r = runner.invoke(infmae_app, ft_args(data, run))
    assert r.exit_code == 0, r.output
    assert (run / "checkpoint-latest" / "model.safetensors").read_bytes() == before


def test_init_from_a_pretrain_run_and_a_saved_model_and_wrong_architectures(sirst_dir: Path, tmp_path: Path) -> None:
    """INIT kinds: a run folder of a real (tiny) `infmae pretrain`, its `infmae export` folder, a `save_model`
    folder; the encoder weights are loaded (sha256 recorded, no missing keys but the F4 conv). A ViT
    checkpoint and a checkpoint whose weights do not fit its config are one-line errors (exit 1)."""
    from infmae.checkpoint import save_model
    from infmae.model import create_model, load_model

    data = mini_sirst(sirst_dir, tmp_path / "sirst", n_train=8, n_val=2, n_test=0)
    pre = tmp_path / "pre"
    r = runner.invoke(infmae_app, ["pretrain", "--data", str(data / "images"), "--out", str(pre), "--preset",
                                   "infmae_tiny", "--epochs", "1", "--batch", "4", "--input-size", "32",
                                   "--workers", "0", "--device", "cpu", "--vis-every", "0", "-q"])
    assert r.exit_code == 0, r.output
    enc = load_model(pre / "checkpoint-latest").state_dict()
    one = ["--epochs", "1", "--max-steps", "1", "--vis-count", "0"]
    r = runner.invoke(infmae_app, [*ft_args(data, tmp_path / "ft1", *one), "--init", str(pre)])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ft1" / "results.json").read_text())
    weights = pre / "checkpoint-latest" / "model.safetensors"
    assert res["init"]["kind"] == "run" and res["init"]["path"] == str(pre / "checkpoint-latest")
    assert res["init"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert res["init"]["missing"] == [] and res["init"]["unexpected"] == []
    assert "val" in res and "test" not in res  # no test split here: evaluated on val
    # the loaded encoder is the pre-trained one (checked on the run's first optimizer step's input: step 0
    # weights are the checkpoint; compare a fresh load instead of the fine-tuned weights)
    from infmae.finetune import load_backbone

    bb, rec = load_backbone(str(pre), "infmae_base")
    assert bb.config["preset"] == "infmae_tiny" and rec["kind"] == "run"
    assert all(torch.equal(bb.state_dict()[k], v) for k, v in enc.items() if k.startswith("encoder."))

    enc = tmp_path / "enc"  # an `infmae export` folder of the same run: the encoder alone
    assert runner.invoke(infmae_app, ["export", str(pre / "checkpoint-latest"), "--out", str(enc)]).exit_code == 0
    r = runner.invoke(infmae_app, [*ft_args(data, tmp_path / "ft-enc", *one), "--init", str(enc)])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ft-enc" / "results.json").read_text())
    assert res["init"]["kind"] == "checkpoint" and res["init"]["missing"] == [] and res["init"]["unexpected"] == []
    assert res["init"]["sha256"] == hashlib.sha256((enc / "model.safetensors").read_bytes()).hexdigest()

    folder = tmp_path / "saved"
    torch.manual_seed(1)
    save_model(create_model("infmae_tiny"), folder)
    r = runner.invoke(infmae_app, [*ft_args(data, tmp_path / "ft2", *one), "--init", str(folder)])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ft2" / "results.json").read_text())
    assert res["init"]["kind"] == "checkpoint"
    assert res["init"]["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    vit = tmp_path / "vit"
    save_model(create_model("mae_base", embed_dims=(64,), depths=(1,), num_heads=2, decoder_dim=32, decoder_depth=1,
                            decoder_heads=2), vit)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    cfg["embed_dims"] = [64, 96, 192]  # the config of another width than the weights
    (bad / "config.json").write_text(json.dumps(cfg))
    for init in (vit, bad):
        run = tmp_path / f"ft-{init.name}"
        r = runner.invoke(infmae_app, [*ft_args(data, run, *one), "--init", str(init)])
        assert r.exit_code == 1, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: --init {init} is not an InfMAE encoder"), r.stderr
        assert not list(run.glob("checkpoint-*"))


@pytest.mark.parametrize("bad,words", [
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--latest-every", "-1"], "--latest-every must be >= 0"),
    (["--log-every", "0"], "--log-every must be >= 1"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--input-size", "48"], "--input-size must be a multiple of 32"),
    (["--layer-decay", "0"], "--layer-decay must be in (0, 1]"),
    (["--drop-path", "1.5"], "--drop-path must be in [0, 1)"),
    (["--schedule", "step"], "--schedule must be one of cosine, poly"),
    (["--eval-every", "0"], "--eval-every must be >= 1"),
    (["--init", "no/such/dir"], "--init no/such/dir: no such file or folder"),
])
def test_bad_finetune_options_exit_2_before_any_work(sirst_dir: Path, tmp_path: Path, bad: list[str], words: str) -> None:
    run = tmp_path / "run"
    r = runner.invoke(infmae_app, [*ft_args(sirst_dir, run), *bad])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not run.exists()


def test_unknown_task_and_foreign_data_layout_exit_2_before_any_work(sirst_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = runner.invoke(infmae_app, ["finetune", "nope", "--data", str(sirst_dir), "--out", str(run)])
    assert r.exit_code == 2 and "unknown task 'nope'" in r.stderr and not run.exists()
    r = runner.invoke(infmae_app, ft_args(sirst_dir / "images", run))  # a folder of images, no masks or splits
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == [f"error: {sirst_dir / 'images'}: expected the NUAA-SIRST layout "
                                             "(images/, masks/, idx_427/)"]
    assert not run.exists()


# the 3rd checkpoint write dies (SIGKILL) after the weights and state are written: mid-epoch, mid-write
KILL_ON_THIRD = ("import os, signal, infmae.checkpoint as c; c.before_commit = (lambda n=[0]: (lambda tmp: "
                 "(n.__setitem__(0, n[0] + 1), n[0] == 3 and os.kill(os.getpid(), signal.SIGKILL))))(); ")


def test_kill_mid_epoch_then_resume_is_bitwise_the_uninterrupted_run(sirst_dir: Path, tmp_path: Path) -> None:
    """Real processes: fine-tuning SIGKILLed inside its 3rd checkpoint write (step 3 of a 4-step epoch, with
    random crops and flips) and re-run ends with the same weights, optimizer state, best checkpoint, epoch
    means and evaluations as one uninterrupted run (CPU, --deterministic), and the same results.json."""
    data = mini_sirst(sirst_dir, tmp_path / "sirst")
    straight, run = tmp_path / "straight", tmp_path / "run"
    extra = ("--latest-every", "1", "--vis-count", "0")
    cli = REGISTER + "from cli import infmae_app; infmae_app(prog_name='infmae')"
    r = subprocess.run([sys.executable, "-c", cli, *ft_args(data, straight, *extra)], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-c", KILL_ON_THIRD + cli, *ft_args(data, run, *extra)], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]
    assert json.loads((run / "checkpoint-latest" / "trainer.json").read_text())["step"] == 2
    r = subprocess.run([sys.executable, "-c", cli, *ft_args(data, run, *extra)], capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "checkpoint-latest at step 2" in r.stderr
    for name in ("checkpoint-latest", "checkpoint-best"):
        from safetensors.torch import load_file

        wa, wb = load_file(str(straight / name / "model.safetensors")), load_file(str(run / name / "model.safetensors"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    sa = torch.load(straight / "checkpoint-latest" / "train_state.pt", weights_only=True)
    sb = torch.load(run / "checkpoint-latest" / "train_state.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 8 and sa["extra"] == sb["extra"]
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)

    def lines(d: Path, kind: str) -> list[dict]:
        recs = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in x.items() if k not in ("time", "img_per_s", "loader_stall")}
                for x in recs if x["kind"] == kind]

    assert [x["step"] for x in lines(run, "step")] == list(range(1, 9))
    for kind in ("step", "epoch", "eval"):
        assert lines(run, kind) == lines(straight, kind), kind
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (straight, run))
    assert ra["test"] == rb["test"] and ra["val"] == rb["val"] and ra["best"] == rb["best"]


def test_busy_run_folder_is_refused(sirst_dir: Path, tmp_path: Path) -> None:
    """The run folder's lock: a folder held by another process is refused with one line (exit 1), untouched."""
    import fcntl

    data = mini_sirst(sirst_dir, tmp_path / "sirst", n_train=8, n_val=2, n_test=0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = runner.invoke(infmae_app, ft_args(data, run, "--max-steps", "1"))
        assert r.exit_code == 1, r.output
        assert r.stderr.strip().splitlines() == [
            f"error: another infmae finetune process is writing {run}; wait for it or use another --out"]
        assert sorted(p.name for p in run.iterdir()) == [".lock", "notes.txt"]
    finally:
        holder.kill()
        holder.wait()
    assert fcntl  # the same flock the build takes (inf30.lock)


def test_init_from_a_hub_id_through_a_loopback_hub(sirst_dir: Path, tmp_path: Path) -> None:
    """INIT as a Hub id: `infmae export --push` to the loopback Hub stand-in (the real Hub is unreachable
    here), then `infmae finetune --init ORG/NAME` in a fresh process with an empty cache loads it through
    `InfMAEBackbone.from_pretrained` and records the downloaded weights' sha256."""
    from hub_standin import HubStandin

    from infmae.checkpoint import save_model
    from infmae.model import infmae_tiny

    token = "hf_standinMODEL0123456789abcdefXYZ"
    data = mini_sirst(sirst_dir, tmp_path / "sirst", n_train=8, n_val=2, n_test=0)
    torch.manual_seed(0)
    save_model(infmae_tiny(), tmp_path / "ckpt")
    env = {k: v for k, v in ENV.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1")
    cli = REGISTER + "from cli import infmae_app; infmae_app(prog_name='infmae')"
    with HubStandin(token) as hub:
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=token)
        r = subprocess.run([sys.executable, "-c", cli, "export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "enc"),
                            "--push", "carol/enc"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        run = tmp_path / "ft"
        r = subprocess.run([sys.executable, "-c", cli, *ft_args(data, run, "--max-steps", "1", "--vis-count", "0"),
                            "--init", "carol/enc"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        r2 = subprocess.run([sys.executable, "-c", cli, *ft_args(data, tmp_path / "ft2", "--max-steps", "1"),
                             "--init", "carol/missing"], capture_output=True, text=True, env=env, timeout=300)
    res = json.loads((run / "results.json").read_text())
    assert res["init"]["kind"] == "hub" and res["init"]["spec"] == "carol/enc"
    want = hashlib.sha256((tmp_path / "enc" / "model.safetensors").read_bytes()).hexdigest()
    assert res["init"]["sha256"] == want and res["init"]["missing"] == [] and res["init"]["unexpected"] == []
    assert r2.returncode != 0 and r2.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in r2.stderr and not list((tmp_path / "ft2").glob("checkpoint-*"))


def test_cli_finetune_irstd_end_to_end_on_sirst(sirst_dir: Path, tmp_path: Path) -> None:
    """The real IRSTD task (infmae.tasks.irstd) through the engine: `infmae finetune irstd` with infmae_tiny on
    a few SIRST images, a few steps; results.json has the paper's metrics per split, and evaluate agrees."""
    data = mini_sirst(sirst_dir, tmp_path / "sirst", n_train=8, n_val=2, n_test=2)
    run = tmp_path / "run"
    r = runner.invoke(infmae_app, ["finetune", "irstd", "--data", str(data), "--out", str(run), "--preset",
                                   "infmae_tiny", "--input-size", "64", "--batch", "4", "--epochs", "1", "--workers",
                                   "0", "--device", "cpu", "--vis-count", "1", "-q"])
    assert r.exit_code == 0, r.output
    res = json.loads((run / "results.json").read_text())
    assert res["task"] == "irstd" and res["layout"] and res["checkpoint"] == "checkpoint-best"
    for split in ("val", "test"):
        assert {"iou", "niou", "pd", "fa", "f1", "auc"} <= set(res[split]), res[split]
    assert res["predictions"] and all((run / p).is_file() for p in res["predictions"])
    r = runner.invoke(infmae_app, ["evaluate", str(run), "--data", str(data), "--split", "test", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    again = json.loads(r.stdout)
    assert all(again[k] == pytest.approx(res["test"][k]) for k in ("iou", "niou", "pd", "fa", "f1", "auc"))


def test_cli_finetune_irstd_two_gloo_processes(sirst_dir: Path, tmp_path: Path) -> None:
    """`infmae finetune irstd --nproc 2` (torch's elastic launcher, a real gloo group, DDP): both ranks train,
    rank 0 evaluates while the other waits, one set of outputs, and no gradient-stride warning."""
    data = mini_sirst(sirst_dir, tmp_path / "sirst", n_train=8, n_val=2, n_test=0)
    run = tmp_path / "run"
    r = subprocess.run([INFMAE, "finetune", "irstd", "--data", str(data), "--out", str(run), "--preset", "infmae_tiny",
                        "--input-size", "64", "--batch", "4", "--epochs", "1", "--workers", "0", "--device", "cpu",
                        "--nproc", "2", "--vis-count", "0", "--log-every", "1", "-q"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 x cpu" in r.stderr and "Grad strides do not match" not in r.stderr
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs if x["kind"] == "step"] == [1, 2]
    assert [x["epoch"] for x in recs if x["kind"] == "eval"] == [1]
    res = json.loads((run / "results.json").read_text())
    assert res["best"]["epoch"] == 1 and res["val"]["iou"] == pytest.approx(res["best"]["value"])
    assert json.loads((run / "checkpoint-latest" / "train_config.json").read_text())["world"] == 2
