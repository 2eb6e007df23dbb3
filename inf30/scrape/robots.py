"""robots.txt: fetched once per host with the same downloader limits, cached, checked per URL.

Following RFC 9309: a 4xx robots.txt (none) allows everything; a 5xx or an unreachable one disallows the
host for this run.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from inf30.scrape.download import Downloader, host_of
from inf30.scrape.options import ROBOTS_AGENT

ROBOTS_MAX_BYTES = 512 * 1024


class Robots:
    """Per-host robots.txt cache; :meth:`allowed` says whether our agent may fetch a URL."""

    def __init__(self, downloader: Downloader, agent: str = ROBOTS_AGENT) -> None:
        self.dl = downloader
        self.agent = agent
        self._cache: dict[str, RobotFileParser | bool] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _parser(self, url: str) -> RobotFileParser | bool:
        parts = urlsplit(url)
        host = host_of(url)
        key = f"{parts.scheme}://{host}"
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._cache:
                return self._cache[key]
            robots_url = urlunsplit((parts.scheme, host, "/robots.txt", "", ""))
            res = self.dl.fetch(robots_url, max_bytes=ROBOTS_MAX_BYTES)
            entry: RobotFileParser | bool
            if res.error is None:
                rp = RobotFileParser()
                rp.parse(res.data.decode("utf-8", errors="replace").splitlines())
                entry = rp
            elif res.http_status is not None and 400 <= res.http_status < 500 and res.http_status != 429:
                entry = True  # no robots.txt: everything allowed
            else:
                entry = False  # unreachable or server error: disallow (RFC 9309 2.3.1.4)
            self._cache[key] = entry
            return entry

    def allowed(self, url: str) -> bool:
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return True  # not ours to judge: the downloader refuses other schemes
        p = self._parser(url)
        if isinstance(p, bool):
            return p
        return p.can_fetch(self.agent, url)
