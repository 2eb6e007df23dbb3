"""The downloader: bounded, retrying, resumable HTTP(S) fetches with per-host and global limits.

Only ``http`` and ``https`` URLs are fetched, also after redirects (followed by hand, each hop checked).
A file is written to a ``.part`` file; :meth:`Downloader.download` returns when it is complete and the
caller renames it into place, so nothing half-written is ever taken as done.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import urllib3

from inf30.scrape.magic import SNIFF_BYTES, Magic, sniff
from inf30.scrape.options import ScrapeOptions

SAFE_SCHEMES = ("http", "https")
_REDIRECTS = (301, 302, 303, 307, 308)


def redact(url: str | None) -> str | None:
    """``url`` without user:password (what may be printed or stored)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # kept as listed, minus anything that looks like user:password@
        return re.sub(r"//[^/@]*@", "//", url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, lower case, without credentials."""
    netloc = urlsplit(url).netloc.lower()
    return netloc.rsplit("@", 1)[-1]


@dataclass
class FetchResult:
    """How one fetch ended. ``error`` is None on success, else a short reason (``http_404``,
    ``timeout``, ``too_large``, ``redirect_loop``, ``unsafe_redirect:file``, ...)."""

    url: str
    final_url: str | None = None
    http_status: int | None = None
    bytes: int = 0
    sha256: str | None = None
    magic: Magic | None = None
    data: bytes | None = None
    error: str | None = None
    detail: str | None = None
    attempts: int = 0
    resumed: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class _Fail(Exception):
    """A failed try: ``retry`` says whether another try may succeed."""

    def __init__(
        self,
        reason: str,
        retry: bool,
        status: int | None = None,
        wait: float | None = None,
        detail: str | None = None,
        keep_partial: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason, self.retry, self.status, self.wait = reason, retry, status, wait
        self.detail, self.keep_partial = detail, keep_partial


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class RateLimiter:
    """A global request-rate limit (requests per second), shared by all threads."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


class Downloader:
    """Fetches URLs under :class:`ScrapeOptions` limits. Thread-safe (one urllib3 pool manager).

    ``auth`` maps ``host[:port]`` to ``(username, password)``; credentials go only to those hosts (and
    ``user:password@`` in a URL only to that URL's host) and are never part of a result.
    """

    def __init__(self, opts: ScrapeOptions, auth: dict[str, tuple[str, str]] | None = None) -> None:
        self.opts = opts
        self.auth = dict(auth or {})
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._not_before: dict[str, float] = {}
        self._lock = threading.Lock()
        self._rate = RateLimiter(opts.rate)
        self._rand = random.Random()
        self._timeout = urllib3.Timeout(connect=opts.connect_timeout, read=opts.read_timeout)
        self._pool = urllib3.PoolManager(
            num_pools=64,
            maxsize=max(4, opts.per_host),
            retries=False,
            timeout=self._timeout,
        )
        self._headers = {"User-Agent": opts.user_agent, "Accept-Encoding": "identity"}

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._pool.clear()

    def _host_slot(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            sem = self._hosts.get(host)
            if sem is None:
                sem = self._hosts[host] = threading.BoundedSemaphore(max(1, self.opts.per_host))
            return sem

    def _wait_host(self, host: str) -> None:
        with self._lock:
            until = self._not_before.get(host, 0.0)
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _hold_host(self, host: str, seconds: float) -> None:
        with self._lock:
            self._not_before[host] = max(self._not_before.get(host, 0.0), time.monotonic() + seconds)

    def _open(self, url: str, headers: dict[str, str]) -> tuple[urllib3.BaseHTTPResponse, str]:
        """GET with redirects followed by hand; every hop must be http(s), new, and within the limit."""
        parts = urlsplit(url)
        userinfo = None
        if "@" in parts.netloc:  # credentials in the URL: used for that host only, then dropped
            cred, _, hostport = parts.netloc.rpartition("@")
            user, _, pw = cred.partition(":")
            userinfo = (hostport.lower(), (unquote(user), unquote(pw)))
            url = urlunsplit(parts._replace(netloc=hostport))
        seen = {url}
        cur = url
        for _hop in range(self.opts.max_redirects + 1):
            scheme = urlsplit(cur).scheme.lower()
            if scheme not in SAFE_SCHEMES:
                raise _Fail(f"unsafe_scheme:{scheme or 'none'}", retry=False)
            host = host_of(cur)
            creds = self.auth.get(host) or (userinfo[1] if userinfo and userinfo[0] == host else None)
            hdrs = {**self._headers, **headers}
            if creds:
                hdrs.update(urllib3.make_headers(basic_auth=f"{creds[0]}:{creds[1]}"))
            resp = self._pool.request("GET", cur, headers=hdrs, preload_content=False, redirect=False,
                                      retries=False, timeout=self._timeout)
            location = resp.headers.get("location")
            if resp.status in _REDIRECTS and location:
                status = resp.status
                resp.drain_conn()
                resp.release_conn()
                nxt = urljoin(cur, location.strip())
                nscheme = urlsplit(nxt).scheme.lower()
                if nscheme not in SAFE_SCHEMES:
                    raise _Fail(f"unsafe_redirect:{nscheme or 'none'}", retry=False, status=status)
                nxt = urlunsplit(urlsplit(nxt)._replace(fragment=""))
                if nxt in seen:
                    raise _Fail("redirect_loop", retry=False, status=status)
                seen.add(nxt)
                cur = nxt
                continue
            return resp, cur
        raise _Fail("too_many_redirects", retry=False, status=_REDIRECTS[1])

    # ------------------------------------------------------------------ public
    def fetch(self, url: str, max_bytes: int | None = None) -> FetchResult:
        """Fetch into memory (HTML pages, robots.txt, URL lists); ``data`` holds the body on success."""
        limit = max_bytes or self.opts.max_page_bytes
        buf = io.BytesIO()
        res = self._run(url, buf, lambda m: limit, part_meta=None)
        if res.error is None:
            res.data = buf.getvalue()
        return res

    def download(self, url: str, part: Path, limit_for: Callable[[Magic], int] | None = None) -> FetchResult:
        """Download ``url`` into ``part`` (resuming it with an HTTP Range request when it already holds
        bytes and the server allows). On success ``part`` is complete; on failure it is removed, except
        after an interruption that a later run may resume."""
        _mkdir(part.parent)
        limit_for = limit_for or self.default_limit
        meta_path = part.with_name(part.name + ".json")
        try:
            f = open(part, "ab")  # noqa: SIM115 - closed below
        except FileNotFoundError:  # the folder was removed since it was made
            part.parent.mkdir(parents=True, exist_ok=True)
            f = open(part, "ab")  # noqa: SIM115
        with f:
            res = self._run(url, f, limit_for, part_meta=meta_path)
        if res.error is not None and res.detail != "partial_kept":
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
        return res

    def default_limit(self, magic: Magic) -> int:
        """Byte limit for a file of this type (images vs archives/videos/other)."""
        return self.opts.max_image_bytes if magic.category in ("image", "html", "other") else self.opts.max_archive_bytes

    # ------------------------------------------------------------------ the loop
    def _run(self, url: str, sink: BinaryIO, limit_for: Callable[[Magic], int], part_meta: Path | None) -> FetchResult:
        res = FetchResult(url=url)
        try:
            scheme = urlsplit(url).scheme.lower()
            host = host_of(url)
        except ValueError:
            res.error = "invalid_url"
            return res
        if scheme not in SAFE_SCHEMES:
            res.error = f"unsafe_scheme:{scheme or 'none'}"
            return res
        last: _Fail | None = None
        mem: dict = {}  # what the part file holds, for retries within this run
        for attempt in range(self.opts.retries + 1):
            res.attempts = attempt + 1
            try:
                self._wait_host(host)
                with self._host_slot(host):
                    self._rate.wait()
                    self._once(url, sink, limit_for, part_meta, res, mem)
                res.error = res.detail = None
                return res
            except _Fail as exc:
                last = exc
            except urllib3.exceptions.NewConnectionError as exc:
                last = _Fail("connection_error", retry=True, detail=type(exc).__name__)
            except urllib3.exceptions.ConnectTimeoutError:
                last = _Fail("timeout", retry=True, detail="connect")
            except urllib3.exceptions.ReadTimeoutError:
                last = _Fail("timeout", retry=True, detail="read", keep_partial=True)
            except (urllib3.exceptions.LocationValueError, urllib3.exceptions.LocationParseError,
                    urllib3.exceptions.URLSchemeUnknown, UnicodeError, ValueError) as exc:
                last = _Fail("invalid_url", retry=False, detail=type(exc).__name__)
            except urllib3.exceptions.SSLError as exc:
                last = _Fail("tls_error", retry=False, detail=type(exc).__name__)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                last = _Fail("connection_error", retry=True, detail=type(exc).__name__, keep_partial=True)
            res.http_status = last.status if last.status is not None else res.http_status
            if not last.retry or attempt >= self.opts.retries:
                break
            wait = self.opts.backoff(attempt, self._rand.random())
            if last.wait is not None:
                if last.wait > self.opts.backoff_max:
                    last.reason += "_retry_after_too_long"
                    break
                wait = max(wait, last.wait)
                self._hold_host(host, last.wait)
            time.sleep(wait)
        assert last is not None
        res.error = last.reason
        res.detail = last.detail
        if part_meta is not None and last.keep_partial and last.retry and sink.tell() > 0 and part_meta.exists():
            res.detail = "partial_kept"  # a later run resumes it with a Range request
        return res

    def _once(self, url: str, sink: BinaryIO, limit_for: Callable[[Magic], int], part_meta: Path | None,
              res: FetchResult, mem: dict) -> None:
        """One try: request (resuming ``sink`` from its current size when it is a file), stream the body."""
        offset = sink.tell() if part_meta is not None else 0
        if part_meta is None:
            sink.seek(0)
            sink.truncate()
        headers: dict[str, str] = {}
        prev: dict = {}
        if offset > 0:
            prev = dict(mem)
            if not prev:  # left by an earlier run
                try:
                    prev = json.loads(part_meta.read_text())
                except (OSError, ValueError):
                    prev = {}
            if prev.get("url") != url:  # no record of what these bytes are: start again
                sink.seek(0)
                sink.truncate()
                offset = 0
            else:
                headers["Range"] = f"bytes={offset}-"
                validator = prev.get("etag") if not str(prev.get("etag", "W/")).startswith("W/") else None
                validator = validator or prev.get("last_modified")
                if validator:
                    headers["If-Range"] = validator
        resp, final = self._open(url, headers)
        try:
            self._body(resp, final, url, sink, offset, headers, prev, limit_for, part_meta, res, mem)
        except BaseException:
            resp.close()  # an unfinished body: never hand the connection back to the pool
            raise
        resp.release_conn()

    def _body(self, resp: urllib3.BaseHTTPResponse, final: str, url: str, sink: BinaryIO, offset: int,
              headers: dict[str, str], prev: dict, limit_for: Callable[[Magic], int], part_meta: Path | None,
              res: FetchResult, mem: dict) -> None:
        status = resp.status
        res.http_status, res.final_url = status, final
        if status == 429 or 500 <= status < 600:
            wait = parse_retry_after(resp.headers.get("retry-after"))
            raise _Fail(f"http_{status}", retry=True, status=status, wait=wait, keep_partial=True)
        if status == 416 and offset > 0:
            sink.seek(0)
            sink.truncate()
            raise _Fail("range_not_satisfiable", retry=True, status=status)
        if status >= 400 or status < 200 or status in (204, 205) or 300 <= status < 400:
            raise _Fail(f"http_{status}", retry=False, status=status)
        length = resp.headers.get("content-length")
        expected = int(length) if length and length.isdigit() else None
        if status == 206:
            start, total = _content_range(resp.headers.get("content-range"))
            if start != offset or (not headers.get("If-Range") and prev.get("total") not in (None, total)):
                sink.seek(0)
                sink.truncate()
                raise _Fail("bad_range_response", retry=True, status=status)
            res.resumed = True
        elif offset:  # 200: the whole file again
            sink.seek(0)
            sink.truncate()
            offset = 0
        total = offset + expected if expected is not None else None
        hard_limit = max(self.opts.max_image_bytes, self.opts.max_archive_bytes)
        if total is not None and total > hard_limit:
            raise _Fail("too_large", retry=False, status=status, detail=f"{total} bytes declared")
        meta = None
        if part_meta is not None:
            meta = {"url": url, "etag": resp.headers.get("etag"), "last_modified": resp.headers.get("last-modified"),
                    "total": total}
            mem.clear()
            mem.update(meta)
            if offset:
                part_meta.write_text(json.dumps(meta))
                meta = None
        digest = hashlib.sha256()
        head = b""
        if offset:
            sink.flush()
            with open(sink.name, "rb") as r:  # type: ignore[attr-defined]
                while chunk := r.read(1 << 20):
                    if len(head) < SNIFF_BYTES:
                        head += chunk[: SNIFF_BYTES - len(head)]
                    digest.update(chunk)
            sink.seek(0, os.SEEK_END)
        size = offset
        limit = hard_limit
        magic: Magic | None = None
        if len(head) >= SNIFF_BYTES:
            magic = sniff(head)
            limit = limit_for(magic)
        t0 = time.monotonic()
        deadline = t0 + self.opts.total_timeout
        try:
            while True:
                # read1: whatever has arrived (up to chunk_size), so the whole-file deadline is checked at
                # least once per read timeout even when a server trickles
                chunk = resp.read1(self.opts.chunk_size)
                if not chunk:
                    break
                if magic is None:
                    head += chunk[: SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:
                        magic = sniff(head)
                        limit = limit_for(magic)
                        if total is not None and total > limit:
                            raise _Fail("too_large", retry=False, status=status, detail=f"{total} bytes declared")
                size += len(chunk)
                if size > limit:
                    raise _Fail("too_large", retry=False, status=status, detail=f"over {limit} bytes")
                sink.write(chunk)
                digest.update(chunk)
                now = time.monotonic()
                if meta is not None and (now - t0 > 0.2 or size > (1 << 20)):
                    # a slow or large download: record what the part file holds, so a kill can resume it
                    # (small fast files skip this write and simply restart)
                    part_meta.write_text(json.dumps(meta))  # type: ignore[union-attr]
                    meta = None
                if now > deadline:
                    raise _Fail("timeout", retry=True, status=status, detail="total", keep_partial=True)
        except urllib3.exceptions.ReadTimeoutError:
            raise _Fail("timeout", retry=True, status=status, detail="read", keep_partial=True) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Fail("incomplete", retry=True, status=status, detail=type(exc).__name__, keep_partial=True) from None
        if magic is None:
            magic = sniff(head)
            if size > limit_for(magic):
                raise _Fail("too_large", retry=False, status=status, detail=f"over {limit_for(magic)} bytes")
        if total is not None and size != total:
            raise _Fail("incomplete", retry=True, status=status, detail=f"{size} of {total} bytes", keep_partial=True)
        sink.flush()
        if self.opts.fsync and part_meta is not None:
            os.fsync(sink.fileno())
        res.bytes, res.sha256, res.magic = size, digest.hexdigest(), magic
        res.headers = {k.lower(): v for k, v in resp.headers.items() if k.lower() in ("content-type", "etag", "last-modified")}


_made_dirs: set[Path] = set()


def _mkdir(path: Path) -> None:
    """mkdir -p, remembered (a scrape writes thousands of files into few folders)."""
    if path not in _made_dirs:
        path.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(path)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    try:
        unit, rng = (value or "").split(" ", 1)
        span, total = rng.split("/", 1)
        return int(span.split("-", 1)[0]), (None if total.strip() == "*" else int(total))
    except ValueError:
        return None, None
