"""`from_pretrained`, `push_to_hub`, `infmae convert/export --push` through huggingface_hub.

The real Hub is unreachable here: every test runs huggingface_hub's own client code (create_repo,
upload_folder with Xet uploads, hf_hub_download and its cache) in a real subprocess against the loopback
stand-in for the Hub endpoints (tests/hub_standin.py), with HF_ENDPOINT pointing at it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data_dir
from hub_standin import HubStandin

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_standinMODEL0123456789abcdefXYZ"


@pytest.fixture
def hf_env(tmp_path: Path) -> dict[str, str]:
    """Environment for subprocesses: an empty HF cache of this test, no saved login, no token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO),
               OMP_NUM_THREADS="1")  # fmt: skip
    return env


@pytest.fixture(scope="module")
def official() -> Path:
    path = shared_data_dir().parent / "official"
    if not (path / "checkpoint-399.pth").is_file():
        pytest.fail(f"the reference checkpoint is not at {path} (../shared/official)")
    return path


def _infmae(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import sys; from cli import infmae_app; sys.argv[0] = 'infmae'; infmae_app()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    return res


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


LOAD = """
import sys, numpy as np, torch
from infmae import InfMAE, InfMAEBackbone
kw = dict(revision={rev!r}, local_files_only={offline!r})
model = InfMAE.from_pretrained({repo!r}, **kw).eval()
d = np.load({npz!r})
with torch.no_grad():
    loss, pred, mask = model(torch.from_numpy(d["x"]))
    f = InfMAEBackbone.from_pretrained({repo!r}, **kw).eval()(torch.randn(1, 3, 96, 160))
np.savez({out!r}, loss=loss.numpy(), pred=pred.numpy(), mask=mask.numpy(), shapes=np.array([t.shape for t in f]))
try:  # a repo that is not in the cache
    InfMAE.from_pretrained("alice/other", **kw)
except Exception as e:
    print(type(e).__name__, e)
"""


def test_round_trip_convert_push_from_pretrained_offline(official: Path, tmp_path: Path, hf_env: dict[str, str]):
    """convert --push to the stand-in, then from_pretrained("alice/infmae-tiny") reproduces the authors'
    outputs; with the stand-in gone, HF_HUB_OFFLINE=1 loads the same model from the cache."""
    io = dict(np.load(official / "io.npz"))
    out = tmp_path / "conv"
    with HubStandin(TOKEN) as hub:
        env = dict(hf_env, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN)
        res = _infmae(["convert", str(official / "checkpoint-399.pth"), "--out", str(out), "--push",
                       "alice/infmae-tiny"], env)  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"pushed to {hub.url}/alice/infmae-tiny" in res.stdout
        repo = hub.models["alice/infmae-tiny"]
        assert repo.files == _files(out) and set(repo.files) == {"README.md", "config.json", "conversion.json",
                                                                 "model.safetensors"}  # fmt: skip
        assert hub.xorbs  # the weights went through the Xet upload path
        code = LOAD.format(repo="alice/infmae-tiny", rev=None, offline=False, npz=str(official / "io.npz"),
                           out=str(tmp_path / "online.npz"))  # fmt: skip
        res = _python(code, dict(env, HF_TOKEN=""))  # a public repo downloads without a token
        assert res.returncode == 0, res.stderr[-3000:]
        assert hub.errors == []
    online = np.load(tmp_path / "online.npz")
    assert np.array_equal(online["mask"], io["mask"])
    assert np.abs(online["pred"] - io["pred"]).max() < 1e-5 and abs(float(online["loss"]) - float(io["loss"])) < 1e-5
    assert online["shapes"].tolist() == [[1, 32, 24, 40], [1, 48, 12, 20], [1, 96, 6, 10], [1, 96, 3, 5]]

    # offline: the Hub is gone; the cache answers (HF_HUB_OFFLINE=1, or local_files_only=True); a repo that
    # is not in the cache is one clean error naming it
    for offline_env, flag in ((dict(hf_env, HF_HUB_OFFLINE="1", HF_ENDPOINT=hub.url), False),
                              (dict(hf_env, HF_ENDPOINT=hub.url), True)):  # fmt: skip
        code = LOAD.format(repo="alice/infmae-tiny", rev=None, offline=flag, npz=str(official / "io.npz"),
                           out=str(tmp_path / "offline.npz"))  # fmt: skip
        res = _python(code, offline_env)
        assert res.returncode == 0, res.stderr[-3000:]
        offline = np.load(tmp_path / "offline.npz")
        assert np.array_equal(offline["pred"], online["pred"]) and np.array_equal(offline["mask"], online["mask"])
        assert res.stdout.startswith("HubError cannot get alice/other from the Hub") and "\n" not in res.stdout.strip()


PUSH_TWICE = """
import json, torch
from infmae import InfMAE, infmae_tiny
torch.manual_seed(0)
a = infmae_tiny()
a.push_to_hub("bob/tiny", private=True)
b = infmae_tiny(masking="reference")
b.push_to_hub("bob/tiny", private=True)
from infmae import InfMAEBackbone
bb = InfMAEBackbone("infmae_tiny")
bb.push_to_hub("bob/backbone")
back = InfMAEBackbone.from_pretrained("bob/backbone", strict=True)
assert back.load_info["missing"] == [] and back.load_info["unexpected"] == []
assert all(torch.equal(v, back.state_dict()[k]) for k, v in bb.state_dict().items())
print(json.dumps([a.state_dict()["decoder.pred.bias"][:4].tolist(), b.state_dict()["decoder.pred.bias"][:4].tolist()]))
"""

LOAD_REV = """
import json
from infmae import InfMAE
m = InfMAE.from_pretrained("bob/tiny", revision={rev!r}, cache_dir={cache!r})
print(json.dumps([m.config["masking"], m.state_dict()["decoder.pred.bias"][:4].tolist()]))
"""


def test_push_to_hub_revision_cache_dir_and_private(tmp_path: Path, hf_env: dict[str, str]):
    with HubStandin(TOKEN) as hub:
        env = dict(hf_env, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN)
        res = _python(PUSH_TWICE, env)
        assert res.returncode == 0, res.stderr[-3000:]
        first, second = json.loads(res.stdout.strip().splitlines()[-1])
        repo = hub.models["bob/tiny"]
        assert repo.private and len(repo.commits) == 2 and "README.md" in repo.files
        assert not hub.models["bob/backbone"].private and "model.safetensors" in hub.models["bob/backbone"].files
        cache = str(tmp_path / "cache")
        for rev, masking, bias in ((repo.commits[0]["oid"], "gray", first), (None, "reference", second)):
            res = _python(LOAD_REV.format(rev=rev, cache=cache), env)
            assert res.returncode == 0, res.stderr[-3000:]
            got_masking, got_bias = json.loads(res.stdout.strip().splitlines()[-1])
            assert got_masking == masking and np.allclose(got_bias, bias)
        assert any(Path(cache).rglob("model.safetensors"))  # the given cache_dir was used
        # a private repo without the token: refused, one line
        res = _python(LOAD_REV.format(rev=None, cache=str(tmp_path / "c2")), dict(env, HF_TOKEN=""))
        assert res.returncode != 0 and "HubError: cannot get bob/tiny from the Hub" in res.stderr
        assert TOKEN not in res.stderr + res.stdout
        assert hub.errors == []


def test_export_push_and_backbone_from_the_hub(tmp_path: Path, hf_env: dict[str, str]):
    from infmae.checkpoint import save_model
    from infmae.model import infmae_tiny

    torch.manual_seed(0)
    save_model(infmae_tiny(), tmp_path / "ckpt")
    out = tmp_path / "enc"
    # no token: refused with one line before any work
    res = _infmae(["export", str(tmp_path / "ckpt"), "--out", str(out), "--push", "carol/enc"], hf_env)
    assert res.returncode == 2 and res.stderr.count("error: ") == 1 and "no Hugging Face token" in res.stderr
    assert not out.exists()
    with HubStandin(TOKEN) as hub:
        env = dict(hf_env, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN)
        res = _infmae(["export", str(tmp_path / "ckpt"), "--out", str(out), "--push", "carol/enc"], env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert hub.models["carol/enc"].files == _files(out)
        code = ("from infmae import InfMAEBackbone; import torch\nb = InfMAEBackbone.from_pretrained('carol/enc')\n"
                "print(b.load_info['missing'], b.load_info['unexpected'], [tuple(f.shape) for f in b(torch.randn(1, 3, 64, 96))])")  # fmt: skip
        res = _python(code, env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.stdout.strip() == "['down.weight', 'down.bias'] [] [(1, 32, 16, 24), (1, 48, 8, 12), (1, 96, 4, 6), (1, 96, 2, 3)]"
