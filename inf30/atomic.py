"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    On an exception (or a kill) the target is untouched and the temporary file is removed (or left
    with a ``.tmp-`` prefix that readers never take as done). ``fsync=False`` skips the flush to disk:
    still atomic against a killed process, not against a power cut (used for the many image files,
    whose part record is fsynced after them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if fsync:
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def link_or_copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` a hard link to ``src`` (a copy across file systems), atomically; no-op if it exists."""
    dst = Path(dst)
    if dst.exists():
        return
    with atomic_path(dst, fsync=False) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


_KNOWN_DIRS: set[str] = set()


def write_small_atomic(path: str, data: bytes) -> None:
    """Write one small file (an image) atomically with the fewest system calls, without fsync.

    The temporary name is ``.tmp-<name>.<pid>`` beside ``path`` (one writer process per name at a time;
    a stale one from a killed run is truncated and reused); ``os.open`` creates it with the umask's
    permissions, so no chmod is needed. Folders already made by this process are remembered (and made again
    if something removed them since).
    """
    parent, name = os.path.split(path)
    if parent not in _KNOWN_DIRS:
        os.makedirs(parent, exist_ok=True)
        _KNOWN_DIRS.add(parent)
    tmp = os.path.join(parent, f".tmp-{name}.{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:  # the folder was removed after we made it
        os.makedirs(parent, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
