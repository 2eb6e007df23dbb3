"""Safe, bounded archive extraction (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz).

Nothing is ever written outside the destination: absolute paths, ``..`` members, links and device
entries are refused with a reason. Extraction is bounded in bytes and member count (archive bombs).
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK = 1 << 20


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass
class Extracted:
    """Result of an extraction: ``members`` maps member name -> extracted path; ``rejected`` maps member
    name -> reason (``unsafe_archive_member | ...``, ``archive_bomb | ...``)."""

    members: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the archive itself could not be read


def safe_member_name(name: str) -> str | None:
    """A normalized relative POSIX name, or None if the name is absolute or escapes the root."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    norm = posixpath.normpath(name)
    if norm in (".", "") or norm.startswith("../") or norm == ".." or "/../" in f"/{norm}/":
        return None
    return norm


class _Budget:
    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.bytes_left = max_bytes
        self.files_left = max_files


def _copy_bounded(src: IO[bytes], dst_path: Path, budget: _Budget) -> bool:
    """Copy ``src`` to ``dst_path`` without exceeding the byte budget; False (and no file) if exceeded."""
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst_path.with_name(f".tmp-{dst_path.name}")
    with open(tmp, "wb") as out:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            budget.bytes_left -= len(chunk)
            if budget.bytes_left < 0:
                out.close()
                tmp.unlink()
                return False
            out.write(chunk)
    tmp.replace(dst_path)
    return True


def _iter_zip(zf: zipfile.ZipFile) -> Iterator[tuple[str, str | None, object]]:
    """Yield (name, refusal reason or None, info)."""
    for info in zf.infolist():
        if info.is_dir():
            continue
        ftype = stat.S_IFMT(info.external_attr >> 16)
        if ftype and ftype != stat.S_IFREG:
            mode = info.external_attr >> 16
            kind = "symlink" if stat.S_ISLNK(mode) else "special file"
            yield info.filename, f"{kind} entry", info
            continue
        yield info.filename, None, info


def _iter_tar(tf: tarfile.TarFile) -> Iterator[tuple[str, str | None, object]]:
    for info in tf:
        if info.isdir():
            continue
        if info.issym() or info.islnk():
            yield info.name, f"link entry -> {info.linkname}", info
        elif info.isdev() or info.isfifo():
            yield info.name, "device or fifo entry", info
        elif not info.isreg():
            yield info.name, "not a regular file", info
        else:
            yield info.name, None, info


def extract(archive: str | Path, dest: str | Path, *, max_bytes: int, max_files: int) -> Extracted:
    """Extract ``archive`` under ``dest`` (which is emptied first) safely and within bounds."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    result = Extracted()
    budget = _Budget(max_bytes, max_files)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name, refusal, info in _iter_zip(zf):
                    if not _take(result, budget, name, refusal, dest, lambda i=info: zf.open(i)):
                        break
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                for name, refusal, info in _iter_tar(tf):
                    if not _take(result, budget, name, refusal, dest, lambda i=info: tf.extractfile(i)):
                        break
        else:
            result.error = "unsupported | not a zip or tar archive"
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, ValueError) as exc:
        result.error = f"corrupt | archive unreadable: {type(exc).__name__}: {exc}"
    return result


def _take(result: Extracted, budget: _Budget, name: str, refusal: str | None, dest: Path, opener) -> bool:
    """Handle one member; False stops the extraction (bomb)."""
    safe = safe_member_name(name)
    if refusal is not None or safe is None:
        result.rejected[name] = f"unsafe_archive_member | {refusal or 'path escapes the archive root'}"
        return True
    if safe in result.members:
        result.rejected[name] = "unsafe_archive_member | duplicate member name"
        return True
    budget.files_left -= 1
    if budget.files_left < 0:
        result.rejected[name] = "archive_bomb | member count limit reached; extraction stopped"
        return False
    target = dest / safe
    try:
        src = opener()
        if src is None:
            result.rejected[name] = "unsafe_archive_member | unreadable entry"
            return True
        with src:
            ok = _copy_bounded(src, target, budget)
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, ValueError) as exc:
        result.rejected[name] = f"corrupt | member unreadable: {type(exc).__name__}: {exc}"
        return True
    if not ok:
        result.rejected[name] = "archive_bomb | extracted bytes limit reached; extraction stopped"
        return False
    result.members[name] = str(target)
    return True
