"""Settings of a scrape (downloader limits, crawl scope) and the tool's User-Agent."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

from inf30.options import option

MB = 1024 * 1024


def tool_version() -> str:
    """The installed toolkit version (falls back to the source tree's)."""
    try:
        from importlib.metadata import version

        return version("infmae-toolkit")
    except Exception:  # noqa: BLE001 - not installed: running from a checkout
        return "0.1.0"


#: the robots.txt product token
ROBOTS_AGENT = "inf30-scrape"


def default_user_agent() -> str:
    return f"{ROBOTS_AGENT}/{tool_version()} (infmae-toolkit; +https://github.com/infmae/infmae-toolkit)"


@dataclass
class ScrapeOptions:
    """How to download. Per-source ``options`` in the YAML (``depth``, ``same_host``, ``allow_hosts``,
    ``respect_robots``, ``max_pages``) override the crawl settings for that source."""

    concurrency: int = option(16, "Downloads in flight at once (threads).")
    per_host: int = option(8, "Downloads in flight per host.")
    rate: float | None = option(None, "Requests per second over all hosts (None = unlimited).")
    connect_timeout: float = option(10.0, "Seconds to connect.")
    read_timeout: float = option(30.0, "Seconds without a byte before a try fails.")
    total_timeout: float = option(600.0, "Seconds for one whole file (against servers that trickle).")
    retries: int = option(4, "Extra tries on timeouts, connection errors, 429 and 5xx.")
    backoff_base: float = option(0.5, "First retry backoff in seconds (doubles each try, with jitter).")
    backoff_max: float = option(30.0, "Longest backoff in seconds, also the cap on a server's Retry-After.")
    max_image_bytes: int = option(64 * MB, "Largest image file, bytes.")
    max_archive_bytes: int = option(512 * MB, "Largest archive or video file, bytes.")
    max_page_bytes: int = option(8 * MB, "Largest HTML page or URL list fetched into memory, bytes.")
    max_redirects: int = option(10, "Most redirects followed per URL.")
    user_agent: str = option(help="User-Agent header of every request.", factory=default_user_agent)
    depth: int = option(1, "Page crawl: link hops from a seed page to a file (1 = files linked from the page).")
    same_host: bool = option(True, "Page crawl: stay on the seed pages' hosts.")
    allow_hosts: list[str] = option(help="Page crawl: extra hosts a crawl may visit.", factory=list)
    max_pages: int = option(1000, "Page crawl: most HTML pages fetched per source.")
    include: list[str] = option(help="URL glob (or re:REGEX) a file must match.", factory=list)
    exclude: list[str] = option(help="URL glob (or re:REGEX) that drops a file or page.", factory=list)
    respect_robots: bool = option(True, "Respect robots.txt.")
    keep_html: bool = option(False, "Keep non-media downloads (HTML, unknown types) instead of deleting them.")
    fsync: bool = option(False, "fsync each file before its rename (power-loss safety; a killed process is safe anyway).")
    chunk_size: int = option(256 * 1024, "Bytes read from the network at a time.")

    def validate(self, where: str = "") -> None:
        """Raise :class:`~inf30.errors.UsageError` (one line, exit 2) for an out-of-range option; called by
        :func:`inf30.scrape.scrape` before any work (and for each source's overrides of a sources YAML)."""
        from inf30.errors import check

        pre = f"{where}: " if where else ""

        def positive(name: str, flag: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v != float("inf")
            check(ok and (v >= 0 if allow_zero else v > 0),
                  f"{pre}{flag} must be {'0 or more' if allow_zero else 'more than 0'}, got {v!r}")

        for name, flag in (("concurrency", "--concurrency"), ("per_host", "--per-host"),
                           ("connect_timeout", "--connect-timeout"), ("read_timeout", "--read-timeout"),
                           ("total_timeout", "total_timeout"), ("max_image_bytes", "--max-image-mb"),
                           ("max_archive_bytes", "--max-archive-mb"), ("max_page_bytes", "max_page_bytes"),
                           ("max_pages", "max_pages"), ("chunk_size", "chunk_size")):
            positive(name, flag)
        for name, flag in (("retries", "--retries"), ("backoff_base", "--backoff"), ("backoff_max", "backoff_max"),
                           ("depth", "--depth"), ("max_redirects", "--max-redirects")):
            positive(name, flag, allow_zero=True)
        if self.rate is not None:
            positive("rate", "--rate")
        for name in ("concurrency", "per_host", "retries", "depth", "max_redirects", "max_pages"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool), f"{pre}{name} must be a whole number, got {v!r}")
        for name in ("include", "exclude", "allow_hosts"):
            v = getattr(self, name)
            check(isinstance(v, list) and all(isinstance(x, str) for x in v),
                  f"{pre}{name} must be a list of strings, got {v!r}")
        for pattern in self.include + self.exclude:
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    check(False, f"{pre}--include/--exclude {pattern!r} is not a valid regular expression: {exc}")
        for name in ("same_host", "respect_robots", "keep_html", "fsync"):
            v = getattr(self, name)
            check(isinstance(v, bool), f"{pre}{name} must be true or false, got {v!r}")

    def with_source(self, spec_options: dict[str, Any]) -> ScrapeOptions:
        """These options overridden by a source's ``options`` (only keys that are option names)."""
        names = {f.name for f in fields(self)}
        over = {k: v for k, v in (spec_options or {}).items() if k in names}
        return replace(self, **over) if over else self

    def backoff(self, attempt: int, rand: float) -> float:
        """Seconds to wait before try ``attempt`` + 1: exponential with 'equal jitter' (rand in [0, 1))."""
        cap = min(self.backoff_max, self.backoff_base * (2**attempt))
        return cap / 2 + cap / 2 * rand
