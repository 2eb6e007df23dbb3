"""The output-folder lock every command that writes a folder takes (build, merge, dedupe, report, publish,
pretrain, finetune, export, convert, pack).

`with lock_folder(path):` creates the folder if needed, holds an exclusive flock on `path/.lock` for the
duration, and refuses a folder another process holds with a one-line `BusyError` (exit 1). The lock is
released by the kernel when the process dies, so a killed run never leaves a stale lock. Within one process
the lock is re-entrant (``build`` holds it while its dedupe stage takes it again).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import BusyError, UsageError

LOCK_NAME = ".lock"

_held: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) of a folder this process holds -> owning thread
_guard = threading.Lock()


@contextlib.contextmanager
def lock_folder(folder: str | Path, tool: str = "inf30") -> Iterator[Path]:
    """Hold the exclusive lock of `folder` (created if missing); BusyError at once if another process holds it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder; give a folder (new or earlier output)")
    folder.mkdir(parents=True, exist_ok=True)
    st = os.stat(folder)
    key = (st.st_dev, st.st_ino)
    with _guard:
        owner = _held.get(key)
    if owner is not None:
        if owner != threading.get_ident():
            raise BusyError(f"another {tool} job in this process is writing {folder}; wait for it or use another --out")
        yield folder  # re-entered by the thread that holds it
        return
    with open(folder / LOCK_NAME, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"another {tool} process is writing {folder}; wait for it or use another --out") from None
        with _guard:
            _held[key] = threading.get_ident()
        try:
            yield folder
        finally:
            with _guard:
                del _held[key]


def is_locked_here(folder: str | Path) -> bool:
    """Whether this process holds the lock of ``folder``."""
    try:
        st = os.stat(folder)
    except OSError:
        return False
    with _guard:
        return (st.st_dev, st.st_ino) in _held
