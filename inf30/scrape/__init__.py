"""Scrape remote infrared sources (URL lists, web pages, remote archives/videos, Hub datasets) to local
disk for ``inf30 build``. See docs/scrape.md.

Modules: :mod:`~inf30.scrape.download` (the downloader), :mod:`~inf30.scrape.remote` (URL lists, page
crawl), :mod:`~inf30.scrape.hf` (Hub / Parquet datasets), :mod:`~inf30.scrape.robots`,
:mod:`~inf30.scrape.magic` (file type from bytes), :mod:`~inf30.scrape.state` (resumable cache),
:mod:`~inf30.scrape.store` (layout, manifest schema), :mod:`~inf30.scrape.core` (scrape, materialize).
"""

from __future__ import annotations

import importlib
from typing import Any

# names re-exported here, imported on first use so that ``inf30.scrape.options`` (what the CLI reads its
# defaults from) stays a light import
_EXPORTS = {
    "MANIFEST_NAME": "inf30.scrape.store",
    "ScrapeOptions": "inf30.scrape.options",
    "ScrapeResult": "inf30.scrape.core",
    "default_user_agent": "inf30.scrape.options",
    "is_remote": "inf30.spec",
    "materialize": "inf30.scrape.core",
    "parse_source": "inf30.scrape.remote",
    "scrape": "inf30.scrape.core",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
