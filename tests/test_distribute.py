"""inf30.distribute: one distributor, inline / local processes / a real local Ray cluster, on real frames."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inf30.decode import decode_to_gray, pixel_id
from inf30.distribute import Distributor, Outcome
from inf30.errors import UsageError, UserError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


# ------------------------------------------------------------------------------- units (module level: picklable)
def digest(path: str) -> tuple[str, int, int]:
    """A real unit of work: decode an infrared image to 8-bit gray -> (pixel id, width, height)."""
    gray = decode_to_gray(Path(path).read_bytes()).gray
    return pixel_id(gray), int(gray.shape[1]), int(gray.shape[0])


def fail_first_time(marker: str) -> str:
    """Raises on the first call for ``marker`` (leaving the marker file), succeeds afterwards."""
    m = Path(marker)
    if not m.exists():
        m.write_text("tried")
        raise RuntimeError(f"first try of {m.name}")
    return m.name


def die_first_time(marker: str) -> str:
    """Kills its worker process on the first call for ``marker`` (as an out-of-memory kill would)."""
    m = Path(marker)
    if not m.exists():
        m.write_text("tried")
        os._exit(3)
    return m.name


def sigint_handler(_unit: object) -> str:
    """The SIGINT disposition of the process running the unit."""
    return "ignored" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else "handled"


def worker_pid(_unit: object) -> int:
    return os.getpid()


class Fatal(Exception):
    pass


def raise_fatal(x: int) -> int:
    if x == 3:
        raise Fatal("disk full")
    return x


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def images(real_frames, hituav_dir: Path) -> list[str]:
    """A mixed selection of real frames (10 SIRST, 10 HIT-UAV), plus one file that is not an image."""
    frames = real_frames(20)
    assert len(frames) == 20
    return [str(p) for p in frames] + [str(hituav_dir / "LICENSE")]


@pytest.fixture(scope="module")
def expected(images: list[str]) -> list[Outcome]:
    return Distributor(workers=1, progress=False).map(digest, images)


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster (2 CPUs) for the module; workers import this file's units from tests/."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'infmae-toolkit[ray]')")
    path = os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}},
    )  # fmt: skip
    yield ray
    ray.shutdown()


# ----------------------------------------------------------------------------------------------------- tests
def test_inline_results_and_the_unreadable_file_reported(images, expected):
    assert [o.index for o in expected] == list(range(len(images)))
    good, bad = expected[:-1], expected[-1]
    assert all(o.ok and o.attempts == 1 for o in good)
    assert len({o.value[0] for o in good}) == len(good)  # distinct frames, distinct pixel ids
    assert not bad.ok and bad.value is None and bad.error.startswith("DecodeError")
    assert bad.attempts == 2  # the default: one retry, then reported; the run went on


def test_local_pool_gives_the_inline_results(images, expected):
    got = Distributor(workers=2, chunksize=3, progress=False).map(digest, images)
    assert got == expected
    ordered = list(Distributor(workers=2, ordered=True, progress=False)(digest, images[:8]))
    assert [o.index for o in ordered] == list(range(8))
    assert ordered == expected[:8]


def test_ray_backend_starts_and_stops_its_own_local_ray(images):
    """No cluster running: the call starts a local Ray (2 CPUs), runs the units there, and stops it."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'infmae-toolkit[ray]')")
    assert not ray.is_initialized()  # runs before the module's cluster fixture
    got = Distributor(backend="ray", workers=2, progress=False).map(os.path.getsize, images)
    assert [o.value for o in got] == [os.path.getsize(p) for p in images]
    assert not ray.is_initialized()


def test_ray_cluster_gives_the_inline_results(ray_cluster, images, expected, tmp_path):
    dist = Distributor(backend="ray", workers=2, chunksize=4, progress=False)
    assert dist.map(digest, images) == expected
    assert ray_cluster.is_initialized()  # a cluster the caller started is left running
    flaky = Distributor(backend="ray", retries=1, progress=False).map(fail_first_time, [str(tmp_path / "r")])
    assert flaky == [Outcome(0, "r", None, 2)]
    with pytest.raises(Fatal, match="disk full"):  # comes back from the Ray worker as the same type
        Distributor(backend="ray", fatal=(Fatal,), progress=False).map(raise_fatal, range(6))
    assert ray_cluster.is_initialized()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_unit_that_fails_once_is_retried(tmp_path, workers):
    markers = [str(tmp_path / f"m{i}") for i in range(4)]
    Path(markers[1]).write_text("already tried")  # this one succeeds at once
    got = Distributor(workers=workers, retries=1, progress=False).map(fail_first_time, markers)
    assert [(o.value, o.attempts) for o in got] == [("m0", 2), ("m1", 1), ("m2", 2), ("m3", 2)]
    assert all(o.ok for o in got)


def test_without_retries_the_failure_is_recorded(tmp_path):
    markers = [str(tmp_path / "a"), str(tmp_path / "b")]
    Path(markers[1]).write_text("already tried")
    got = Distributor(workers=2, retries=0, progress=False).map(fail_first_time, markers)
    assert got == [Outcome(0, None, "RuntimeError: first try of a", 1), Outcome(1, "b", None, 1)]


def test_a_dead_worker_costs_one_attempt_and_the_pool_is_replaced(tmp_path):
    markers = [str(tmp_path / f"d{i}") for i in range(3)]
    for m in markers[1:]:
        Path(m).write_text("already tried")
    got = Distributor(workers=2, retries=2, progress=False).map(die_first_time, markers)
    assert [o.value for o in got] == ["d0", "d1", "d2"] and got[0].attempts >= 2
    Path(tmp_path / "y").write_text("already tried")
    units = [str(tmp_path / "x"), str(tmp_path / "y")]  # two units: a pool, not inline
    gone = Distributor(workers=2, retries=0, progress=False).map(die_first_time, units)
    assert gone[0].error.startswith("worker failed: BrokenProcessPool")


def test_a_pool_broken_with_several_batches_in_flight_gives_every_unit_its_outcome(tmp_path):
    """Every unit kills its worker on its first call: each death breaks the pool while other batches are in
    flight; those come back as failed attempts (not lost), and every unit ends done."""
    markers = [str(tmp_path / f"k{i}") for i in range(4)]
    got = Distributor(workers=2, retries=4, progress=False).map(die_first_time, markers)  # <= 4 breaks each
    assert [o.value for o in got] == ["k0", "k1", "k2", "k3"] and all(o.attempts >= 2 for o in got)


def test_calls_inside_with_share_one_pool():
    dist = Distributor(workers=2, progress=False)
    with dist:
        first = {o.value for o in dist.map(worker_pid, range(6))}
        second = {o.value for o in dist.map(worker_pid, range(6))}
    assert os.getpid() not in first | second and len(first | second) <= 2  # the same two workers
    after = {o.value for o in dist.map(worker_pid, range(6))}  # outside the block: a pool of its own
    assert os.getpid() not in after and not after & (first | second)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_fatal_error_stops_the_run(workers):
    dist = Distributor(workers=workers, fatal=(Fatal,), progress=False)
    with pytest.raises(Fatal, match="disk full"):
        dist.map(raise_fatal, range(6))


def test_bad_options_are_usage_errors():
    for kwargs in ({"backend": "spark"}, {"workers": -1}, {"retries": -1}, {"chunksize": 0},
                   {"ray_address": "auto"}):  # fmt: skip
        with pytest.raises(UsageError):
            Distributor(**kwargs)


def test_ray_missing_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    with pytest.raises(UserError) as err:
        Distributor(backend="ray")
    assert "pip install 'infmae-toolkit[ray]'" in str(err.value) and "\n" not in str(err.value)


CTRL_C = """
import time
from inf30.distribute import Distributor

if __name__ == "__main__":
    for o in Distributor(workers=2, progress=False)(time.sleep, [0.2] * 500):
        print("done", o.index, flush=True)
"""


def test_workers_leave_ctrl_c_to_the_parent():
    assert {o.value for o in Distributor(workers=2, progress=False).map(sigint_handler, range(4))} == {"ignored"}
    assert Distributor(workers=1, progress=False).map(sigint_handler, [0])[0].value == "handled"  # inline


def group_ends(pgid: int) -> bool:
    """Wait (up to 20 s) until no process of group ``pgid`` is left."""
    for _ in range(100):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def start_job(tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "job.py"
    script.write_text(CTRL_C)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, cwd=REPO, env=env)  # fmt: skip
    assert proc.stdout.readline().startswith("done")  # the pool is running
    return proc


def test_ctrl_c_stops_the_workers_without_their_tracebacks(tmp_path):
    """A real Ctrl-C: SIGINT to the whole process group (parent, fork server, workers), as a terminal does."""
    proc = start_job(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert err.count("Traceback (most recent call last)") == 1, err  # the parent's, once; none from workers
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    assert len(out.splitlines()) < 499  # stopped, did not run to the end
    assert group_ends(proc.pid), "worker processes outlived the interrupted parent"


def test_workers_of_a_killed_parent_exit(tmp_path):
    """SIGKILL of the parent alone (no cleanup runs): its workers and the fork server still go."""
    proc = start_job(tmp_path)
    proc.kill()
    proc.wait(timeout=60)  # reaped: a zombie would still count as alive
    ended = group_ends(proc.pid)
    proc.stdout.close()
    proc.stderr.close()
    if not ended:  # do not leave them behind
        os.killpg(proc.pid, signal.SIGKILL)
    assert ended, "workers outlived their killed parent"
