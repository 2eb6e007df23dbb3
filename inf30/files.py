"""Which files of a folder are images: the one suffix list and folder walk of ``build``, ``entropy`` and
``infmae pretrain``.

Rule: every regular file (or symlink to one) below the folder, recursively, whose name ends in one of
:data:`IMAGE_SUFFIXES` (any case); hidden entries (a name starting with ``.``: ``.DS_Store``, macOS
``._x.jpg`` companions, this tool's ``.tmp-`` files, ``.work/``) and everything under a hidden folder are
not inputs. Symlinked folders are listed, not entered.
"""

from __future__ import annotations

import os

#: Suffixes read as images: what Pillow or OpenCV (the decoders of :mod:`inf30.decode`) can open. A file
#: with one of them that does not decode is a manifest row with its reason, never a silent skip.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".bmp", ".dib", ".exr", ".gif", ".hdr", ".ico", ".j2k", ".jp2", ".jpe", ".jpeg", ".jpg", ".pbm", ".pfm",
    ".pgm", ".png", ".pnm", ".ppm", ".ras", ".sr", ".tga", ".tif", ".tiff", ".webp",
)  # fmt: skip


def is_image_name(name: str) -> bool:
    """Whether the file name (or path) ends in an image suffix, any case."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_glob_pattern(path: str) -> bool:
    """Whether a command-line path is a glob pattern: it holds ``*``, ``?`` or ``[`` and no such file or
    folder (or symlink) exists. An existing path is a path even when its name holds those (``cam[1]/``)."""
    return any(c in path for c in "*?[") and not (os.path.exists(path) or os.path.islink(path))


def is_hidden(rel: str) -> bool:
    """Whether a ``/``-separated relative path has a hidden component (a name starting with ``.``)."""
    return any(part.startswith(".") for part in rel.split("/"))


def same_folder(entry: os.DirEntry, st: os.stat_result) -> bool:
    """Whether the folder ``entry`` is the one ``st`` describes (inode from the listing, device checked
    only when the inode matches)."""
    if entry.inode() != st.st_ino:
        return False
    return entry.stat(follow_symlinks=False).st_dev == st.st_dev


def walk_files(root: str, skip: os.stat_result | None = None) -> list[tuple[str, str]]:
    """(path relative to ``root`` with ``/``, full path) of every file or symlink below the folder ``root``,
    hidden ones included (callers filter with :func:`is_hidden`).

    Like ``Path.rglob("*")`` (symlinked folders are listed, not entered; unreadable subfolders are
    skipped) but with ``os.scandir``, whose entries know their type without a ``stat`` per file. The folder
    ``skip`` (the ``os.stat`` of a build's own output) is not entered. Raises OSError when ``root`` itself
    cannot be listed.
    """
    out: list[tuple[str, str]] = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            if not prefix:
                raise
            continue
        for e in entries:
            rel = prefix + e.name
            if e.is_dir(follow_symlinks=False):
                if skip is None or not same_folder(e, skip):
                    stack.append((e.path, rel + "/"))
            elif e.is_symlink() or e.is_file(follow_symlinks=False):
                out.append((rel, rel if root == "." else os.path.join(root, rel)))
    return out


def image_files(root: str | os.PathLike) -> tuple[list[str], int]:
    """Image files below the folder ``root`` by the rule above, sorted by relative path, and the number of
    other (non-hidden) files skipped."""
    files, skipped = [], 0
    for rel, path in sorted(walk_files(str(root))):
        if is_hidden(rel):
            continue
        if is_image_name(rel):
            files.append(path)
        else:
            skipped += 1
    return files, skipped
