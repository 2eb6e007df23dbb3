"""Shared fixtures: the real infrared data in ../shared/data (or $INFMAE_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
