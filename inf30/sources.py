"""Sources of a build: what a user names on the command line or lists in a YAML config.

A source is a folder (recursive), a glob, an archive, a video, or a remote kind (``urls``, ``page``,
``hf``, an http(s) URL) that :mod:`inf30.scrape` brings to local disk first.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LOCAL_KINDS = ("folder", "glob", "archive", "video", "image")
REMOTE_KINDS = ("urls", "page", "hf", "url")


@dataclass
class SourceSpec:
    """One source. ``options`` holds per-source settings: ``video_every`` (s), ``drop_pseudocolor``
    (bool), ``agc_percentiles`` ([lo, hi]), ``origins`` ({relpath: url} for scraped folders), and the
    remote kinds' own settings."""

    name: str
    path: str
    kind: str = "auto"
    licence: str | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm",
    ".pbm", ".gif", ".jp2", ".j2k", ".exr", ".hdr", ".sr", ".ras", ".pfm",
)
_GLOB_CHARS = set("*?[")


def is_remote(path: str) -> bool:
    return path.startswith(("http://", "https://", "hf://"))


def guess_kind(path: str) -> str:
    """The kind of a local source path: folder, glob, archive, video or image."""
    from inf30.archive import is_archive_name
    from inf30.video import is_video_name

    if is_remote(path):
        return "url"
    if any(c in path for c in _GLOB_CHARS):
        return "glob"
    p = Path(path)
    if p.is_dir():
        return "folder"
    if is_archive_name(p.name):
        return "archive"
    if is_video_name(p.name):
        return "video"
    return "image"


def _default_name(path: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path.rstrip("/")).name.split("?")[0]) or "source"
    for suffix in (".tar.gz", ".tar.xz", ".tar.bz2", ".tgz", ".zip", ".tar"):
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def load_config(path: str | Path) -> list[SourceSpec]:
    """Read a sources YAML: ``sources: [{name, path, kind, licence, include, exclude, options}]``.

    Relative paths are taken relative to the YAML file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"config {path} must have a non-empty list `sources:`")
    specs, taken = [], set()
    allowed = {"name", "path", "kind", "licence", "license", "include", "exclude", "options"}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "path" not in entry:
            raise ValueError(f"config {path}: source #{i + 1} needs at least a `path`")
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"config {path}: source #{i + 1} has unknown keys {sorted(unknown)}")
        src_path = str(entry["path"])
        if not is_remote(src_path) and not Path(src_path).is_absolute():
            src_path = str(path.parent / src_path)
        name = str(entry.get("name") or _default_name(src_path, taken))
        if name in taken:
            raise ValueError(f"config {path}: duplicate source name {name!r}")
        taken.add(name)
        specs.append(
            SourceSpec(
                name=name,
                path=src_path,
                kind=str(entry.get("kind", "auto")),
                licence=entry.get("licence", entry.get("license")),
                include=list(entry.get("include") or []),
                exclude=list(entry.get("exclude") or []),
                options=dict(entry.get("options") or {}),
            )
        )
    return specs


def load_sources(paths: list[str], config: str | Path | None = None, out_dir: str | Path | None = None,
                 progress: bool = True) -> list[SourceSpec]:
    """Sources from command-line paths and/or a YAML config, checked to exist; remote ones are scraped
    into ``out_dir/.work/scrape`` first (see :mod:`inf30.scrape`). Raises FileNotFoundError (one line)
    for a missing local path."""
    specs = load_config(config) if config is not None else []
    taken = {s.name for s in specs}
    for p in paths:
        name = _default_name(p, taken)
        taken.add(name)
        specs.append(SourceSpec(name=name, path=p))
    local: list[SourceSpec] = []
    for spec in specs:
        kind = guess_kind(spec.path) if spec.kind == "auto" else spec.kind
        if kind in REMOTE_KINDS:
            from inf30 import scrape

            work = Path(out_dir or ".") / ".work" / "scrape" / spec.name
            local.extend(scrape.materialize(spec, work, progress=progress))
            continue
        if kind not in LOCAL_KINDS:
            raise ValueError(f"source {spec.name!r}: unknown kind {kind!r}; use one of {LOCAL_KINDS + REMOTE_KINDS}")
        if kind == "glob":
            if not glob.glob(spec.path, recursive=True):
                raise FileNotFoundError(f"source {spec.name!r}: no file matches {spec.path}")
        elif not Path(spec.path).exists():
            raise FileNotFoundError(f"source {spec.name!r}: path not found: {spec.path}")
        spec.kind = kind
        local.append(spec)
    return local


@dataclass(frozen=True)
class Input:
    """A top-level input file of a source: an image, an archive or a video. The unit of sharding."""

    key: str  # "<source>:<relpath>"
    path: str
    kind: str  # image | archive | video
    source: str
    origin: str
    origin_kind: str  # file | url


def _matches(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(Path(rel).name, p) for p in patterns)


def _walk_files(root: str, skip: os.stat_result | None = None) -> list[tuple[str, str]]:
    """(path relative to ``root`` with ``/``, full path) of every file or symlink below the folder ``root``.

    Like ``Path.rglob("*")`` (symlinked folders are listed, not entered; unreadable subfolders are
    skipped) but with ``os.scandir``, whose entries know their type without a ``stat`` per file. The folder
    ``skip`` (the ``os.stat`` of the build's own output) is not entered.
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
                if skip is None or not _same_folder(e, skip):
                    stack.append((e.path, rel + "/"))
            elif e.is_symlink() or e.is_file(follow_symlinks=False):
                out.append((rel, rel if root == "." else os.path.join(root, rel)))
    return out


def _same_folder(entry: os.DirEntry, st: os.stat_result) -> bool:
    """Whether the folder ``entry`` is the one ``st`` describes (inode from the listing, device checked
    only when the inode matches)."""
    if entry.inode() != st.st_ino:
        return False
    return entry.stat(follow_symlinks=False).st_dev == st.st_dev


def enumerate_inputs(spec: SourceSpec, out_dir: str | os.PathLike | None = None) -> tuple[list[Input], int]:
    """All inputs of a local source, sorted by key; also the number of other files skipped.

    Nothing inside ``out_dir`` is an input: a build whose output folder sits inside its source (``inf30
    build . --out inf30``) never reads its own images, parts or extracted archives back."""
    from inf30.archive import is_archive_name
    from inf30.video import is_video_name

    out_real = os.path.realpath(out_dir) if out_dir is not None else None
    if spec.kind in ("image", "archive", "video"):
        p = Path(spec.path)
        pairs = [(p.name, p)]
    elif spec.kind == "glob":
        root = Path(spec.path.split("*")[0].split("?")[0].split("[")[0] or ".")
        root = root if root.is_dir() else root.parent
        # only when the output lies under the glob's root can a match be inside it
        inside = out_real is not None and (out_real + os.sep).startswith(os.path.realpath(root).rstrip(os.sep) + os.sep)
        pairs = []
        for m in glob.glob(spec.path, recursive=True):
            mp = Path(m)
            if mp.is_file() and not (inside and os.path.realpath(m).startswith(out_real + os.sep)):
                pairs.append((mp.relative_to(root).as_posix() if mp.is_relative_to(root) else mp.name, mp))
    else:
        skip = os.stat(out_dir) if out_dir is not None and os.path.isdir(out_dir) else None
        pairs = _walk_files(str(Path(spec.path)), skip)
    origins = spec.options.get("origins") or {}
    inputs, skipped = [], 0
    for rel, f in sorted(pairs, key=lambda x: x[0]):
        if ".tmp-" in rel and any(part.startswith(".tmp-") for part in rel.split("/")):
            continue
        if spec.include and not _matches(rel, spec.include):
            continue
        if spec.exclude and _matches(rel, spec.exclude):
            continue
        name = os.path.basename(f).lower()
        if spec.kind == "archive" or (spec.kind != "video" and is_archive_name(name)):
            kind = "archive"
        elif spec.kind == "video" or is_video_name(name):
            kind = "video"
        elif spec.kind == "image" or name.endswith(IMAGE_SUFFIXES):
            kind = "image"
        else:
            skipped += 1
            continue
        url = origins.get(rel) or origins.get("")
        inputs.append(
            Input(
                key=f"{spec.name}:{rel}",
                path=str(f),
                kind=kind,
                source=spec.name,
                origin=url or str(f),
                origin_kind="url" if url else "file",
            )
        )
    return inputs, skipped
