"""Sources of a build: what a user names on the command line or lists in a YAML config.

A source is a folder (recursive), a glob, an archive, a video, or a remote kind (``urls``, ``page``,
``hf``, an http(s) URL) that :mod:`inf30.scrape` brings to local disk first.
"""

from __future__ import annotations

import fnmatch
import glob
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from inf30.errors import UsageError, check
from inf30.files import IMAGE_SUFFIXES, is_glob_pattern, is_hidden, is_image_name, walk_files
from inf30.spec import LOCAL_KINDS, REMOTE_KINDS, SourceSpec, is_remote

__all__ = ["IMAGE_SUFFIXES", "LOCAL_KINDS", "REMOTE_KINDS", "SourceSpec", "is_remote"]  # re-exported



def check_agc(agc: object, where: str = "--agc") -> tuple[float, float]:
    """``(LOW, HIGH)`` percentiles with 0 <= LOW < HIGH <= 100, as floats; UsageError otherwise."""
    try:
        if isinstance(agc, str) or any(isinstance(x, bool) for x in agc):  # type: ignore[union-attr]
            raise TypeError
        lo, hi = (float(x) for x in agc)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise UsageError(f"{where} must be two percentiles LOW,HIGH (e.g. 1,99), got {agc!r}") from None
    check(math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi <= 100,
          f"{where} needs 0 <= LOW < HIGH <= 100 (percentiles), got {lo:g},{hi:g}")
    return lo, hi


def check_video_every(every: object, where: str = "--video-every") -> float:
    """Seconds between sampled video frames: a finite number > 0; UsageError otherwise."""
    try:
        if isinstance(every, bool):
            raise TypeError
        value = float(every)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"{where} must be a number of seconds, got {every!r}") from None
    check(math.isfinite(value) and value > 0, f"{where} must be more than 0 seconds, got {every!r}")
    return value




def guess_kind(path: str) -> str:
    """The kind of a local source path: folder, glob, archive, video or image."""
    from inf30.archive import is_archive_name
    from inf30.video import is_video_name

    if is_remote(path):
        return "url"
    p = Path(path)
    # an existing path is a path, even when its name holds glob characters (`cam[1]`, `frame[1].png`);
    # a pattern is a pattern only when no such path exists (or with an explicit kind `glob`, `--glob`)
    if is_glob_pattern(path):
        return "glob"
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


BUILD_OPTION_KEYS = {"video_every", "drop_pseudocolor", "agc_percentiles", "origins", "licences"}
_ENTRY_KEYS = {"name", "path", "kind", "licence", "license", "include", "exclude", "options"}
# options of the remote kinds (inf30.scrape) and their types; ScrapeOptions fields are checked by its validate()
_REMOTE_TYPES: dict[str, type | tuple[type, ...]] = {
    "depth": int, "same_host": bool, "allow_hosts": list, "pages": list, "auth": dict, "token_env": str,
    "split": str, "config": str, "revision": str, "image_column": str, "filter": dict, "url_column": str,
    "licence_column": str, "max_rows": int, "max_pages": int, "respect_robots": bool,
}  # fmt: skip


def _patterns(value: object, where: str) -> list[str]:
    """``include``/``exclude``: one pattern (a string) or a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return list(value)
    raise UsageError(f"{where} must be a pattern or a list of patterns (strings), got {value!r}")


def _check_type(value: object, kind: type | tuple[type, ...], where: str) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    names = " or ".join({bool: "true/false", int: "a whole number", float: "a number", str: "a string",
                         list: "a list", dict: "a mapping"}[k] for k in kinds)  # fmt: skip
    check(ok, f"{where} must be {names}, got {value!r}")


def validate_source_options(options: object, where: str) -> dict[str, Any]:
    """Check a source's ``options`` mapping (keys, types, ranges); returns it with normalized values."""
    from dataclasses import fields

    from inf30.scrape.options import ScrapeOptions

    if options is None:
        return {}
    if not isinstance(options, dict):
        raise UsageError(f"{where}: `options` must be a mapping (key: value), got {options!r}")
    scrape_fields = {f.name: f for f in fields(ScrapeOptions)}
    allowed = BUILD_OPTION_KEYS | set(_REMOTE_TYPES) | set(scrape_fields)
    out: dict[str, Any] = {}
    for key, value in options.items():
        at = f"{where}: options.{key}"
        check(isinstance(key, str) and key in allowed,
              f"{where}: unknown option {key!r}; allowed: {', '.join(sorted(allowed))}")
        if key == "video_every":
            value = check_video_every(value, at)
        elif key == "agc_percentiles":
            check(isinstance(value, (list, tuple)), f"{at} must be a list [LOW, HIGH] of percentiles, got {value!r}")
            value = list(check_agc(value, at))
        elif key == "drop_pseudocolor":
            _check_type(value, bool, at)
        elif key in ("origins", "licences"):
            _check_type(value, dict, at)
        elif key in _REMOTE_TYPES:
            _check_type(value, _REMOTE_TYPES[key], at)
        else:
            default = getattr(ScrapeOptions(), key)
            _check_type(value, float if isinstance(default, float) or key == "rate" else type(default), at)
        out[key] = value
    scrape_over = {k: v for k, v in out.items() if k in scrape_fields}
    if scrape_over:
        ScrapeOptions().with_source(scrape_over).validate(f"{where}: options")
    for key in ("max_rows", "max_pages"):
        if key in out:
            check(out[key] >= 1, f"{where}: options.{key} must be at least 1, got {out[key]}")
    if "depth" in out:
        check(out["depth"] >= 0, f"{where}: options.depth must be 0 or more, got {out['depth']}")
    return out


def load_config(path: str | Path) -> list[SourceSpec]:
    """Read a sources YAML: ``sources: [{name, path, kind, licence, include, exclude, options}]``, checked
    against its schema (allowed keys, types, ranges; errors name the source and the key).

    Relative paths are taken relative to the YAML file's folder. ``include``/``exclude`` take one pattern
    or a list of them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise UsageError(f"config {path} is not a UTF-8 text file") from None
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"config {path} must have a non-empty list `sources:`")
    if isinstance(data, dict) and set(data) - {"sources"}:
        raise UsageError(f"config {path}: unknown top-level keys {sorted(map(str, set(data) - {'sources'}))}; only `sources:`")
    specs, taken = [], set()
    kinds = ("auto",) + LOCAL_KINDS + REMOTE_KINDS
    for i, entry in enumerate(entries):
        label = f"source #{i + 1}"
        if isinstance(entry, dict) and isinstance(entry.get("name"), (str, int)) and not isinstance(entry.get("name"), bool):
            label += f" ({entry['name']})"
        where = f"config {path}: {label}"
        if not isinstance(entry, dict) or "path" not in entry:
            raise UsageError(f"{where} needs at least a `path`")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise UsageError(f"{where} has unknown keys {sorted(map(str, unknown))}; allowed: {sorted(_ENTRY_KEYS)}")
        raw_path = entry["path"]
        check(isinstance(raw_path, str) and raw_path.strip() != "", f"{where}: `path` must be a non-empty string, got {raw_path!r}")
        src_path = raw_path
        if not is_remote(src_path) and not Path(src_path).is_absolute():
            src_path = str(path.parent / src_path)
        raw_name = entry.get("name")
        check(raw_name is None or (isinstance(raw_name, (str, int)) and not isinstance(raw_name, bool) and str(raw_name).strip()),
              f"{where}: `name` must be a non-empty string, got {raw_name!r}")
        name = str(raw_name) if raw_name is not None else _default_name(src_path, taken)
        if name in taken:
            raise UsageError(f"{where}: duplicate source name {name!r}")
        taken.add(name)
        kind = entry.get("kind", "auto")
        check(kind in kinds, f"{where}: `kind` must be one of {', '.join(kinds)}, got {kind!r}")
        check(not ("licence" in entry and "license" in entry), f"{where}: give `licence` or `license`, not both")
        licence = entry.get("licence", entry.get("license"))
        check(licence is None or isinstance(licence, str), f"{where}: `licence` must be a string, got {licence!r}")
        specs.append(
            SourceSpec(
                name=name,
                path=src_path,
                kind=kind,
                licence=licence,
                include=_patterns(entry.get("include"), f"{where}: `include`"),
                exclude=_patterns(entry.get("exclude"), f"{where}: `exclude`"),
                options=validate_source_options(entry.get("options"), where),
            )
        )
    return specs


def load_sources(paths: list[str], config: str | Path | None = None, out_dir: str | Path | None = None,
                 patterns: bool = False) -> list[SourceSpec]:
    """Sources from command-line paths and/or a YAML config, each with its kind resolved; local ones are
    checked to exist (FileNotFoundError, one line). Remote ones are returned as they are: nothing is
    downloaded here (``pipelines.build.fetch_remote`` scrapes them). A path whose name holds glob characters
    is a path when it exists; with ``patterns`` (``--glob``) every command-line path is a glob pattern.
    ``out_dir`` is not used (accepted for callers that pass the build's output folder)."""
    del out_dir
    specs = load_config(config) if config is not None else []
    taken = {s.name for s in specs}
    for p in paths:
        name = _default_name(p, taken)
        taken.add(name)
        specs.append(SourceSpec(name=name, path=p, kind="glob" if patterns and not is_remote(p) else "auto"))
    for spec in specs:  # every local path is checked before anything is scraped or created
        kind = guess_kind(spec.path) if spec.kind == "auto" else spec.kind
        if kind in REMOTE_KINDS:
            continue  # the scraper resolves "auto" remote paths itself (a page or a file URL)
        if kind not in LOCAL_KINDS:
            raise UsageError(f"source {spec.name!r}: unknown kind {kind!r}; use one of {LOCAL_KINDS + REMOTE_KINDS}")
        if kind == "glob":
            if not glob.glob(spec.path, recursive=True):
                raise FileNotFoundError(f"source {spec.name!r}: no file matches {spec.path}")
        elif not (Path(spec.path).exists() or Path(spec.path).is_symlink()):
            raise FileNotFoundError(f"source {spec.name!r}: path not found: {spec.path}")
        spec.kind = kind
    return specs


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


_STORED_IMAGE = re.compile(r"images/([0-9a-f]{2})/\1[0-9a-f]{62}\.[A-Za-z0-9]+")
BUILD_OUTPUT_DIRS = (".work/", "dedupe/", "report/")  # what `inf30 build/dedupe/report` write into DIR
BUILD_OUTPUT_FILES = ("manifest.parquet", "build.json", ".lock")


def is_build_output(rel: str) -> bool:
    """Whether ``rel`` (a path relative to a built dataset folder, with ``/``) is one of the files the
    toolkit writes there: stored images ``images/<id[:2]>/<id>.<ext>``, ``.work/``, ``dedupe/``,
    ``report/``, the manifest, ``build.json``, the lock."""
    return rel.startswith(BUILD_OUTPUT_DIRS) or rel in BUILD_OUTPUT_FILES or bool(_STORED_IMAGE.fullmatch(rel))


def _same_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_ino == b.st_ino and a.st_dev == b.st_dev


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
        root_real = os.path.realpath(root).rstrip(os.sep)
        # only when the output lies under the glob's root can a match be inside it; an output strictly
        # below the root is skipped whole, an output that is the root (or above it) only for its own files
        inside = out_real is not None and (out_real + os.sep).startswith(root_real + os.sep)
        below = inside and out_real != root_real
        pairs = []
        for m in glob.glob(spec.path, recursive=True):
            mp = Path(m)
            if not mp.is_file():
                continue
            real = os.path.realpath(m)
            if out_real is not None and real.startswith(out_real + os.sep):
                if below or is_build_output(os.path.relpath(real, out_real)):
                    continue
            pairs.append((mp.relative_to(root).as_posix() if mp.is_relative_to(root) else mp.name, mp))
    else:
        skip = os.stat(out_dir) if out_dir is not None and os.path.isdir(out_dir) else None
        pairs = walk_files(str(Path(spec.path)), skip)
        if skip is not None and _same_stat(os.stat(spec.path), skip):
            # the output is the source folder itself: its own files are not inputs (the user's are)
            pairs = [(rel, f) for rel, f in pairs if not is_build_output(rel)]
        elif out_real is not None and os.path.realpath(spec.path).startswith(out_real + os.sep):
            # the source lies inside the output (`inf30 build ds/images --out ds`): the same, below it;
            # except the build's own scrape downloads (`.work/scrape/...`), which are its inputs
            pre = os.path.relpath(os.path.realpath(spec.path), out_real).replace(os.sep, "/") + "/"
            if not pre.startswith(".work/"):
                pairs = [(rel, f) for rel, f in pairs if not is_build_output(pre + rel)]
    if spec.kind == "folder":  # the one folder rule (inf30.files): hidden entries are not inputs
        pairs = [(rel, f) for rel, f in pairs if not is_hidden(rel)]
    origins = spec.options.get("origins") or {}
    inputs, skipped = [], 0
    for rel, f in sorted(pairs, key=lambda x: x[0]):
        if spec.include and not _matches(rel, spec.include):
            continue
        if spec.exclude and _matches(rel, spec.exclude):
            continue
        name = os.path.basename(f).lower()
        if spec.kind == "archive" or (spec.kind != "video" and is_archive_name(name)):
            kind = "archive"
        elif spec.kind == "video" or is_video_name(name):
            kind = "video"
        elif spec.kind == "image" or is_image_name(name):
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
