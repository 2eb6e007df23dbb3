"""Shared fixtures: the real infrared data in ../shared/data (or $INFMAE_DATA)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The Ctrl-C tests need SIGINT deliverable. A shell starts a background job ("make test &") with SIGINT
# ignored, Python keeps that at startup, and the children the tests start inherit it: restore the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_data_dir() -> Path:
    env = os.environ.get("INFMAE_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "sirst").is_dir():
        pytest.fail(f"real test data not found at {path}; set INFMAE_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def sirst_dir(data_dir: Path) -> Path:
    return data_dir / "sirst"


@pytest.fixture(scope="session")
def hituav_dir(data_dir: Path) -> Path:
    return data_dir / "hit-uav"


@pytest.fixture(scope="session")
def sirst60(sirst_dir: Path) -> list:
    """60 SIRST images (8-bit gray arrays) spread over the set (every 7th by name): mostly low-texture skies."""
    import numpy as np
    from PIL import Image

    return [np.asarray(Image.open(f).convert("L")) for f in sorted((sirst_dir / "images").glob("*.png"))[::7][:60]]


@pytest.fixture(scope="session")
def hit3(hituav_dir: Path) -> list:
    """3 HIT-UAV val frames (8-bit gray arrays), every 30th by name."""
    import numpy as np
    from PIL import Image

    return [np.asarray(Image.open(f).convert("L")) for f in sorted((hituav_dir / "val").glob("*.jpg"))[::30][:3]]


# ------------------------------------------------------------------------------------------ real frames
def mixed_frames(data_dir: Path, n: int) -> list[Path]:
    """``n`` real frames, a fixed selection: the first ``n // 2`` SIRST images (mixed modes and sizes) and the
    first ``n - n // 2`` HIT-UAV val frames (640x512 gray JPEG)."""
    sirst = sorted((data_dir / "sirst" / "images").iterdir())[: n // 2]
    return sirst + sorted((data_dir / "hit-uav" / "val").iterdir())[: n - n // 2]


def link_folder(dst: Path, files: list[Path]) -> Path:
    """A folder of symlinks to real images (nothing is copied); returns ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        (dst / f.name).symlink_to(f)
    return dst


def copy_folder(dst: Path, files: list[Path]) -> Path:
    """A folder of copies of real images, for a test that changes its source folder (never the shared data's
    files themselves); returns ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, dst / f.name)
    return dst


def interrupt_build(cmd: list[str], out: Path, parts_done: int, env: dict | None = None, timeout: float = 180) -> None:
    """Start ``inf30 build ... --out out`` (``cmd``) in its own session, wait until ``parts_done`` parts are
    committed, send SIGINT to its whole process group (what a terminal's Ctrl-C does) and check the answer:
    exit 130, the one-line message, no manifest."""
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    parts = out / ".work" / "parts"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.parquet"))) >= parts_done:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the build ended before the interrupt: " + proc.stderr.read()
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["error: interrupted; re-run the same command to resume"], stderr
    assert not (out / "manifest.parquet").exists()


def mini_sirst(sirst: Path, dst: Path, n_train: int = 16, n_val: int = 4, n_test: int = 4) -> Path:
    """A small NUAA-SIRST: symlinks to the first images and masks of each real split."""
    for sub in ("images", "masks", "idx_427"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if not n:
            continue
        names = (sirst / "idx_427" / f"{split}.txt").read_text().split()[:n]
        (dst / "idx_427" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            (dst / "images" / f"{name}.png").symlink_to(sirst / "images" / f"{name}.png")
            (dst / "masks" / f"{name}_pixels0.png").symlink_to(sirst / "masks" / f"{name}_pixels0.png")
    return dst


@pytest.fixture(scope="session")
def real_frames(data_dir: Path):
    """``real_frames(n)``: :func:`mixed_frames` of the shared data (a list of paths)."""
    return lambda n: mixed_frames(data_dir, n)


@pytest.fixture(scope="session")
def frames_folder(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``frames_folder(n)``: a folder of symlinks to :func:`mixed_frames` ``n`` (one per ``n``, shared by the
    session: read it, never write into it)."""
    made: dict[int, Path] = {}

    def make(n: int) -> Path:
        if n not in made:
            made[n] = link_folder(tmp_path_factory.mktemp(f"frames{n}") / "frames", mixed_frames(data_dir, n))
        return made[n]

    return make


@pytest.fixture(scope="session")
def built_dataset(frames_folder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset built by ``inf30.build`` (one worker, no dedupe) from ``frames_folder(12)``: 6 SIRST and
    6 HIT-UAV frames, all kept. Shared by the session: read it, never write into it."""
    from inf30.build import BuildOptions, build
    from inf30.sources import load_sources

    src = frames_folder(12)
    out = tmp_path_factory.mktemp("built") / "inf30"
    build(load_sources([str(src)], out_dir=out), out, BuildOptions(workers=1, dedupe=False, progress=False))
    return out
