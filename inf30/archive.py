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

from tqdm import tqdm

from inf30.atomic import atomic_path
from inf30.errors import OutputError

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
    """What one top-level extraction may still write (shared by the archives nested in it)."""

    def __init__(self, max_bytes: int, max_files: int, max_depth: int, bar: tqdm) -> None:
        self.bytes_left = max_bytes
        self.files_left = max_files
        self.max_depth = max_depth
        self.stopped = False  # a limit was reached: the whole extraction stops
        self.folders = 0  # nested archives extracted so far (each gets its own folder)
        self.bar = bar  # bytes written


class _SourceError(Exception):
    """Reading the member failed (carries the original exception)."""


class _OverBudget(Exception):
    """The member would exceed the extraction's byte budget."""


def _copy_bounded(src: IO[bytes], dst_path: Path, budget: _Budget) -> bool:
    """Copy ``src`` to ``dst_path`` without exceeding the byte budget; False (and no file) if exceeded.

    An error reading ``src`` propagates as it is (the member is corrupt); an error writing the copy
    (disk full, quota, read-only) raises :class:`~inf30.errors.OutputError`: the extraction must stop, not
    record the member as broken."""
    try:
        with atomic_path(dst_path, fsync=False) as tmp, open(tmp, "wb") as out:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except Exception as exc:  # noqa: BLE001 - re-raised below, as it was
                    raise _SourceError() from exc
                if not chunk:
                    break
                budget.bytes_left -= len(chunk)
                budget.bar.update(len(chunk))
                if budget.bytes_left < 0:
                    raise _OverBudget
                out.write(chunk)
        return True
    except _OverBudget:
        return False
    except _SourceError as exc:
        raise exc.__cause__ from None
    except OSError as exc:
        raise OutputError.writing(dst_path.parent, exc) from None


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


DEFAULT_MAX_DEPTH = 3


def archive_kind(path: str | Path) -> str | None:
    """The kind of archive, from the bytes: ``"zip"``, ``"tar"`` (plain or compressed) or None.

    A zip's own signature at the start wins, then tar, then a zip found by its end record (a zip with a
    prefix, such as a self-extracting one). The order matters: ``zipfile.is_zipfile`` alone also accepts a
    tar that merely *contains* an uncompressed zip, because it finds the inner zip's end record.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    return None


def extract(
    archive: str | Path,
    dest: str | Path,
    *,
    max_bytes: int,
    max_files: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    progress: bool = False,
) -> Extracted:
    """Extract ``archive`` under ``dest`` (which is emptied first) safely and within bounds.

    Archives inside the archive (a .tar.gz of per-sequence .zip files, say) are extracted in turn, up to
    ``max_depth`` levels counting the outer one; their members are named ``inner.zip!frame.png`` and the
    inner archive file itself is deleted once expanded. The byte and member limits bound the whole tree
    (nested archive bombs such as 42.zip stop at the limit). An inner archive that cannot be read, or one
    nested deeper than ``max_depth``, becomes a rejected member with its reason.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    result = Extracted()
    # the bar appears only when the extraction lasts more than 2 s
    bar = tqdm(desc=f"extract {archive.name}", unit="B", unit_scale=True, delay=2, disable=not progress)
    budget = _Budget(max_bytes, max_files, max_depth, bar)
    try:
        result.error = _extract_level(archive, dest / "0", "", 1, result, budget)
    finally:
        bar.close()
    return result


def _extract_level(archive: Path, root: Path, prefix: str, depth: int, result: Extracted, budget: _Budget) -> str | None:
    """Extract one archive of the tree into ``root``; members are recorded as ``prefix + name``.

    Returns the reason the archive itself cannot be read, or None."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        kind = archive_kind(archive)
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for name, refusal, info in _iter_zip(zf):
                    _take(result, budget, prefix, name, refusal, root, lambda i=info: zf.open(i), depth)
                    if budget.stopped:
                        break
        elif kind == "tar":
            with tarfile.open(archive, "r:*") as tf:
                for name, refusal, info in _iter_tar(tf):
                    _take(result, budget, prefix, name, refusal, root, lambda i=info: tf.extractfile(i), depth)
                    if budget.stopped:
                        break
        else:
            return "unsupported | not a zip or tar archive"
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, ValueError) as exc:
        return f"corrupt | archive unreadable: {type(exc).__name__}: {exc}"
    return None


def _take(
    result: Extracted,
    budget: _Budget,
    prefix: str,
    name: str,
    refusal: str | None,
    root: Path,
    opener,
    depth: int,
) -> None:
    """Handle one member (sets ``budget.stopped`` when a limit is reached: an archive bomb)."""
    key = prefix + name
    safe = safe_member_name(name)
    if refusal is not None or safe is None:
        result.rejected[key] = f"unsafe_archive_member | {refusal or 'path escapes the archive root'}"
        return
    if key in result.members or (root / safe).exists():
        result.rejected[key] = "unsafe_archive_member | duplicate member name"
        return
    budget.files_left -= 1
    if budget.files_left < 0:
        result.rejected[key] = "archive_bomb | member count limit reached; extraction stopped"
        budget.stopped = True
        return
    target = root / safe
    try:
        src = opener()
        if src is None:
            result.rejected[key] = "unsafe_archive_member | unreadable entry"
            return
        with src:
            ok = _copy_bounded(src, target, budget)
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, ValueError) as exc:
        result.rejected[key] = f"corrupt | member unreadable: {type(exc).__name__}: {exc}"
        return
    if not ok:
        result.rejected[key] = "archive_bomb | extracted bytes limit reached; extraction stopped"
        budget.stopped = True
        return
    if not is_archive_name(safe):
        result.members[key] = str(target)
        return
    # an archive inside the archive: expand it into a folder of its own, then drop the inner file
    if depth >= budget.max_depth:
        result.rejected[key] = f"unsupported | nested archive deeper than {budget.max_depth} levels"
    else:
        budget.folders += 1
        error = _extract_level(target, root.parent / str(budget.folders), key + "!", depth + 1, result, budget)
        if error is not None:
            result.rejected[key] = error
    target.unlink()
