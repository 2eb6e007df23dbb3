"""Scrape remote infrared sources (URL lists, web pages, remote archives/videos, Hub datasets) to local
disk for ``inf30 build``. See docs/scrape.md.

Modules: :mod:`~inf30.scrape.download` (the downloader), :mod:`~inf30.scrape.remote` (URL lists, page
crawl), :mod:`~inf30.scrape.hf` (Hub / Parquet datasets), :mod:`~inf30.scrape.robots`,
:mod:`~inf30.scrape.magic` (file type from bytes), :mod:`~inf30.scrape.state` (resumable cache),
:mod:`~inf30.scrape.store` (layout, manifest schema), :mod:`~inf30.scrape.core` (scrape, materialize).
"""

from inf30.scrape.core import ScrapeResult, materialize, scrape
from inf30.scrape.options import ScrapeOptions, default_user_agent
from inf30.scrape.remote import is_remote, parse_source
from inf30.scrape.store import MANIFEST_NAME

__all__ = [
    "MANIFEST_NAME",
    "ScrapeOptions",
    "ScrapeResult",
    "default_user_agent",
    "is_remote",
    "materialize",
    "parse_source",
    "scrape",
]
