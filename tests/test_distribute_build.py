"""`inf30 build` (with and without its dedupe stage) and `inf30 entropy` through the distributor: local
processes and a real local Ray cluster (started here with `ray start --head`, 2 CPUs, joined with
`--ray-address`; the tests that need it are skipped only when Ray cannot be imported) give the same results
on real SIRST and HIT-UAV frames plus a corrupt file; the options are checked before any work; a part that
fails every attempt is redone item by item."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_folder, interrupt_build
from typer.testing import CliRunner

from cli import inf30_app
from inf30.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
NO_RAY = "Ray is not installed (pip install 'infmae-toolkit[ray]')"


def cli(args: list[str]) -> tuple[int, str]:
    """Run the inf30 CLI in-process: (exit code, its output, stderr included)."""
    r = CliRunner().invoke(inf30_app, args)
    assert "Traceback" not in r.output, r.output
    return r.exit_code, r.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def src(sirst_dir: Path, hituav_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 SIRST + 12 HIT-UAV frames and one PNG cut short (corrupt)."""
    root = tmp_path_factory.mktemp("src")
    sirst = sorted((sirst_dir / "images").glob("*.png"))[:12]
    hit = sorted((hituav_dir / "val").rglob("*.jpg"))[:12]
    assert len(sirst) == len(hit) == 12
    copy_folder(root / "sirst", sirst)
    copy_folder(root / "hit", hit)
    (root / "sirst" / "cut_short.png").write_bytes(sirst[0].read_bytes()[:300])
    return root


@dataclass(frozen=True)
class Cluster:
    address: str
    temp: Path

    def tasks_run(self, expected: int) -> int:
        """Batches the cluster's workers ran (each logs ``:task_name:run_batch`` as it starts one), read once
        it reaches ``expected`` (worker logs are written asynchronously) or after a generous wait."""
        n = 0
        for _ in range(60):
            n = sum(p.read_text(errors="replace").count(":task_name:run_batch")
                    for p in self.temp.glob("session_latest/logs/worker-*.out"))
            if n >= expected:
                break
            time.sleep(0.5)
        return n


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray cluster: `ray start --head --block` (2 CPUs) in its own temp dir, stopped (SIGTERM,
    which makes it stop the processes it started) at the end of the module. Token authentication is off on
    both sides (this loopback cluster and the in-process driver), so no token file is read or written."""
    pytest.importorskip("ray", reason=NO_RAY)
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         f"--ray-client-server-port={free_port()}", "--include-dashboard=false", f"--temp-dir={temp}",
         f"--object-store-memory={100 * 1024**2}", "--node-ip-address=127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    try:
        for line in proc.stdout:  # "Ray runtime started." then it blocks
            lines.append(line)
            if "Ray runtime started" in line:
                break
        assert proc.poll() is None, "".join(lines)
        yield Cluster(f"127.0.0.1:{port}", Path(temp))
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
        mp.undo()


def manifest(out: Path) -> pd.DataFrame:
    return read_manifest(out).sort_values("item_key").reset_index(drop=True)


def stored(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "images").rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------- options, no work
def test_distributor_options_are_checked_before_any_work(src: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "out"
    for extra, says in (
        (["--distributor", "spark"], "--distributor must be one of local, ray"),
        (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --distributor ray"),
    ):
        for cmd in (["build", str(src), "--out", str(out), "-q"], ["entropy", str(src), "-q"],
                    ["merge", str(src), "--out", str(out), "-q"]):
            code, text = cli(cmd + extra)
            assert code == 2 and says in text, (cmd, text)
            assert text.strip().count("\n") == 0, text
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as without the extra
    for cmd in (["build", str(src), "--out", str(out), "-q"], ["entropy", str(src), "-q"],
                ["merge", str(src), "--out", str(out), "-q"]):
        code, text = cli(cmd + ["--distributor", "ray"])
        assert code == 2 and "pip install 'infmae-toolkit[ray]'" in text, text
    assert not out.exists()


# ----------------------------------------------------------------------------------- local == Ray
def test_build_on_ray_gives_the_local_manifest_and_images(src: Path, cluster: Cluster, tmp_path: Path):
    common = ["--workers", "2", "--part-size", "4", "--no-dedupe", "-q"]
    local, ray = tmp_path / "local", tmp_path / "ray"
    code, text = cli(["build", str(src), "--out", str(local), *common])
    assert code == 0, text
    before = cluster.tasks_run(0)
    code, text = cli(["build", str(src), "--out", str(ray), *common, "--distributor", "ray",
                      "--ray-address", cluster.address])  # fmt: skip
    assert code == 0, text
    assert cluster.tasks_run(before + 7) == before + 7  # the 7 parts (25 items by 4) ran on the cluster
    a, b = manifest(local), manifest(ray)
    assert len(a) == 25 and (a["status"] == "kept").sum() == 24
    assert a.loc[a["item_key"].str.endswith("cut_short.png"), "reason"].iloc[0].startswith("corrupt")
    pd.testing.assert_frame_equal(a, b)
    assert stored(local) == stored(ray)

    # the driver commits the parts: a re-run on Ray with some parts gone redoes those only, same result
    parts = sorted((ray / ".work" / "parts").glob("*.parquet"))
    kept_parts = {p.name: p.stat().st_mtime_ns for p in parts[3:]}
    for p in parts[:3]:
        p.unlink()
    code, text = cli(["build", str(src), "--out", str(ray), *common, "--distributor", "ray",
                      "--ray-address", cluster.address])  # fmt: skip
    assert code == 0, text
    assert cluster.tasks_run(before + 10) == before + 10  # only the 3 missing parts ran again
    assert {p.name: p.stat().st_mtime_ns for p in parts[3:]} == kept_parts
    assert all(p.exists() for p in parts[:3])
    pd.testing.assert_frame_equal(manifest(ray), a)


def test_entropy_on_ray_gives_the_local_statistics(src: Path, cluster: Cluster):
    code, local = cli(["entropy", str(src), "--json", "--workers", "2", "-q"])
    assert code == 0, local
    before = cluster.tasks_run(0)
    code, ray = cli(["entropy", str(src), "--json", "--workers", "2", "-q", "--distributor", "ray",
                     "--ray-address", cluster.address])  # fmt: skip
    assert code == 0, ray
    assert cluster.tasks_run(before + 1) > before  # decoded on the cluster
    a, b = json.loads(local), json.loads(ray)
    assert a["sets"][0]["found"] == 25 and a["sets"][0]["corrupt"] == 1
    assert a == b


def test_the_local_backend_needs_no_ray(src: Path, tmp_path: Path, monkeypatch):
    """A machine without the extra builds in local processes as before (Ray is never imported)."""
    monkeypatch.setitem(sys.modules, "ray", None)
    code, text = cli(["build", str(src / "hit"), "--out", str(tmp_path / "o"), "--workers", "2", "--part-size", "6",
                      "--no-dedupe", "-q"])  # fmt: skip
    assert code == 0, text
    assert (manifest(tmp_path / "o")["status"] == "kept").sum() == 12


def test_a_part_that_fails_every_attempt_is_redone_item_by_item(src: Path, tmp_path: Path, monkeypatch):
    """A worker that dies on one input (a decoder crash, out of memory) cannot be caused on demand by a real
    file, so the part worker is wrapped here (in-process, one worker) to fail on every part holding one
    chosen frame: the other items of that part are built as usual, the frame is a row that says why."""
    import inf30.build as build_mod
    from inf30.build import BuildOptions, build
    from inf30.sources import load_sources

    poison = sorted((src / "hit").iterdir())[5].name
    real = build_mod.process_part
    calls: list[int] = []

    def process_part(job):
        calls.append(len(job[1]))
        if any(item.path.endswith(poison) for item in job[1]):
            raise RuntimeError("worker died")
        return real(job)

    opts = BuildOptions(workers=1, part_size=4, dedupe=False, progress=False)
    build(load_sources([str(src / "hit")]), tmp_path / "want", opts)
    monkeypatch.setattr(build_mod, "process_part", process_part)
    build(load_sources([str(src / "hit")]), tmp_path / "got", opts)
    assert calls.count(4) == 3 + 1  # three parts of 4, the failed one retried once
    assert calls.count(1) == 4 + 1  # then its 4 items alone, the poisoned one retried once
    a, b = manifest(tmp_path / "want"), manifest(tmp_path / "got")
    bad = b["item_key"].str.endswith(poison)
    assert b.loc[bad, "reason"].tolist() == ["corrupt | the worker building it failed: RuntimeError: worker died"]
    # the same rows otherwise (the dropped row's nulls make integer columns floats: values compared)
    pd.testing.assert_frame_equal(a[~bad].reset_index(drop=True), b[~bad].reset_index(drop=True), check_dtype=False)


def test_build_with_dedupe_on_ray_gives_the_local_decisions(hituav_dir: Path, sirst_dir: Path, cluster: Cluster,
                                                            tmp_path: Path):
    """The default `inf30 build` (build, then dedupe) with every stage on Ray: the same near-duplicate
    decisions and groups as local processes, on consecutive frames of a real HIT-UAV sequence."""
    src = copy_folder(tmp_path / "src", sorted((hituav_dir / "train").glob("*.jpg"))[:8]
                      + sorted((sirst_dir / "images").glob("*.png"))[:4])  # fmt: skip
    common = ["--workers", "2", "--part-size", "4", "-q"]
    code, text = cli(["build", str(src), "--out", str(tmp_path / "local"), *common])
    assert code == 0, text
    before = cluster.tasks_run(0)
    code, text = cli(["build", str(src), "--out", str(tmp_path / "ray"), *common, "--distributor", "ray",
                      "--ray-address", cluster.address])  # fmt: skip
    assert code == 0, text
    assert cluster.tasks_run(before + 4) >= before + 4  # 3 parts and at least one feature chunk
    a, b = manifest(tmp_path / "local"), manifest(tmp_path / "ray")
    assert a["reason"].fillna("").str.startswith("near_duplicate").sum() >= 1
    pd.testing.assert_frame_equal(a, b)
    groups = [pd.read_parquet(tmp_path / d / "dedupe" / "groups.parquet") for d in ("local", "ray")]
    pd.testing.assert_frame_equal(*groups)
    summary = json.loads((tmp_path / "ray" / "build.json").read_text())["summary"]
    assert summary["kept"] == int((b["status"] == "kept").sum()) and summary["dedupe"]


def test_merge_with_dedupe_on_ray_gives_the_local_merge(hituav_dir: Path, sirst_dir: Path, cluster: Cluster,
                                                        tmp_path: Path):
    """`inf30 merge` of two shards with the cross-shard near-duplicate stage on Ray: the same manifest and
    groups as the local merge (consecutive frames of a real HIT-UAV sequence fall into different shards)."""
    src = copy_folder(tmp_path / "src", sorted((hituav_dir / "train").glob("*.jpg"))[:8]
                      + sorted((sirst_dir / "images").glob("*.png"))[:4])  # fmt: skip
    shards = [tmp_path / f"s{k}" for k in range(2)]
    for k, d in enumerate(shards):
        code, text = cli(["build", str(src), "--out", str(d), "--shard", f"{k}/2", "--workers", "2", "-q"])
        assert code == 0, text
    code, text = cli(["merge", *map(str, shards), "--out", str(tmp_path / "local"), "-q"])
    assert code == 0, text
    before = cluster.tasks_run(0)
    code, text = cli(["merge", *map(str, shards), "--out", str(tmp_path / "ray"), "-q", "--distributor", "ray",
                      "--ray-address", cluster.address])  # fmt: skip
    assert code == 0, text
    assert cluster.tasks_run(before + 1) >= before + 1  # verification chunks ran on the cluster
    a, b = manifest(tmp_path / "local"), manifest(tmp_path / "ray")
    assert len(a) == 12 and a["reason"].fillna("").str.startswith("near_duplicate").sum() >= 1
    pd.testing.assert_frame_equal(a, b)
    groups = [pd.read_parquet(tmp_path / d / "dedupe" / "groups.parquet") for d in ("local", "ray")]
    pd.testing.assert_frame_equal(*groups)


def test_ctrl_c_during_a_build_on_ray_prints_one_line_and_resumes(sirst_dir: Path, cluster: Cluster, tmp_path: Path):
    """A real Ctrl-C (SIGINT to the driver's process group, as a terminal sends it) while the parts run on the
    Ray cluster: exit 130 with the one-line message, no manifest, the committed parts kept; the same command
    then resumes to the complete build without redoing them."""
    src, out = tmp_path / "src", tmp_path / "ds"
    copy_folder(src, sorted((sirst_dir / "images").glob("*.png"))[:150])
    cmd = [str(Path(sys.executable).parent / "inf30"), "build", str(src), "--out", str(out), "--part-size", "1",
           "--no-dedupe", "-q", "--distributor", "ray", "--ray-address", cluster.address]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    interrupt_build(cmd, out, 3, env)
    parts = out / ".work" / "parts"
    done = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.parquet")}
    assert 3 <= len(done) < 150
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr  # -q: nothing printed, Ray's INFO lines included
    m = read_manifest(out)
    assert len(m) == 150 and (m["status"] == "kept").sum() == 150
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("*.parquet") if p.name in done} == done  # not redone
