"""The output-folder lock every command that writes a folder takes (build, merge, dedupe, report, publish,
pretrain, finetune, export, convert, pack).

`with lock_folder(path):` creates the folder if needed, holds an exclusive flock on `path/.lock` for the
duration, and refuses a folder another process holds with a one-line `UserError`. The lock is released by the kernel when the process dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def lock_folder(folder: str | Path, tool: str = "inf30") -> Iterator[Path]:
    """Hold the exclusive lock of `folder` (created if missing); UserError at once if another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another {tool} process is writing {folder}; wait for it or use another --out") from None
        yield folder
