"""A source as named on the command line or in a sources YAML: :class:`SourceSpec`, the source kinds,
and :func:`is_remote`. A leaf module: it imports nothing of the project, so both :mod:`inf30.sources`
(local enumeration) and :mod:`inf30.scrape` (remote kinds) depend on it and not on each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


def is_http(path: str) -> bool:
    """Whether ``path`` is an http(s) URL (any case)."""
    return path.lower().startswith(("http://", "https://"))


def is_remote(source: SourceSpec | str) -> bool:
    """Whether a source (a spec, or a bare path) is one :mod:`inf30.scrape` brings to disk first: a remote
    kind (``urls``, ``page``, ``hf``, ``url``), an http(s) URL or an ``hf://`` path."""
    if isinstance(source, SourceSpec):
        if source.kind in REMOTE_KINDS:
            return True
        source = str(source.path)
    return is_http(source) or source.startswith("hf://")
