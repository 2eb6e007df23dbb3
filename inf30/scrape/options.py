"""Settings of a scrape (downloader limits, crawl scope) and the tool's User-Agent."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

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

    concurrency: int = 16  #: downloads in flight at once (threads)
    per_host: int = 8  #: downloads in flight per host
    rate: float | None = None  #: requests per second over all hosts (None = unlimited)
    connect_timeout: float = 10.0  #: seconds to connect
    read_timeout: float = 30.0  #: seconds without receiving a byte
    total_timeout: float = 600.0  #: seconds for one whole file (against servers that trickle)
    retries: int = 4  #: extra tries after the first, on timeouts, connection errors, 429 and 5xx
    backoff_base: float = 0.5  #: first backoff in seconds; doubles each try, with jitter
    backoff_max: float = 30.0  #: longest backoff, also the cap on a server's Retry-After
    max_image_bytes: int = 64 * MB  #: largest image file
    max_archive_bytes: int = 512 * MB  #: largest archive or video file
    max_page_bytes: int = 8 * MB  #: largest HTML page or URL list fetched into memory
    max_redirects: int = 10
    user_agent: str = field(default_factory=default_user_agent)
    depth: int = 1  #: page crawl: link hops from a seed page to a file (1 = files linked from the page)
    same_host: bool = True  #: page crawl: stay on the seed pages' hosts
    allow_hosts: list[str] = field(default_factory=list)  #: extra hosts a crawl may visit
    max_pages: int = 1000  #: page crawl: most HTML pages fetched per source
    include: list[str] = field(default_factory=list)  #: URL globs (or ``re:REGEX``) a file must match
    exclude: list[str] = field(default_factory=list)  #: URL globs (or ``re:REGEX``) that drop a file/page
    respect_robots: bool = True
    keep_html: bool = False  #: keep non-media downloads (HTML, unknown) instead of deleting them
    fsync: bool = (
        False  #: fsync each file before its rename (power-loss safety; a killed process is safe anyway)
    )
    chunk_size: int = 256 * 1024

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
