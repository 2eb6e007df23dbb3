"""Remote source kinds: which URLs a ``urls`` list, a ``url``, or a crawled ``page`` stands for.

Planning only: this module turns a :class:`~inf30.spec.SourceSpec` into download tasks (and manifest
rows for URLs that are skipped: off-host, excluded, disallowed by robots.txt, unreadable pages).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import re
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from inf30.files import IMAGE_SUFFIXES
from inf30.scrape.download import Downloader, host_of, redact
from inf30.scrape.options import ScrapeOptions
from inf30.scrape.robots import Robots
from inf30.spec import REMOTE_KINDS, SourceSpec, is_http

# a URL ending in one of these is a file to download, not a page (its type then comes from its bytes):
# the build's image suffixes, plus formats some sites serve
IMAGE_EXTS = set(IMAGE_SUFFIXES) | {".avif", ".heic"}
ARCHIVE_EXTS = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".7z", ".rar", ".zst"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".m4v"}
MEDIA_EXTS = IMAGE_EXTS | ARCHIVE_EXTS | VIDEO_EXTS


@dataclass
class Task:
    """One file to fetch for a source."""

    url: str
    source: str
    licence: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    found_on: str | None = None  #: the page a crawled link came from


def url_ext(url: str) -> str:
    """The lower-case extension of a URL's path (``.tar.gz`` style double ones as the last part)."""
    return PurePosixPath(unquote(urlsplit(url).path)).suffix.lower()


def remote_kind(spec: SourceSpec) -> str:
    """The effective remote kind of a spec: explicit kind, else guessed from its path."""
    if spec.kind in REMOTE_KINDS:
        return spec.kind
    path = str(spec.path)
    if path.startswith("hf://"):
        return "hf"
    if is_http(path):
        return "url" if url_ext(path) in MEDIA_EXTS else "page"
    return spec.kind


def parse_source(arg: str, licence: str | None = None) -> SourceSpec:
    """A command-line SOURCE: ``KIND:LOCATION`` (``urls:list.csv``, ``page:https://...``,
    ``hf:org/name``, ``url:https://...``) or a bare http(s) URL (a file when its path ends in an image,
    archive or video extension, else a page) or a local ``.txt``/``.csv``/``.parquet`` URL list."""
    kind = "auto"
    loc = arg
    head, sep, rest = arg.partition(":")
    if sep and head in REMOTE_KINDS and not (head == "hf" and rest.startswith("//")):
        kind, loc = head, rest
    if kind == "auto":
        if is_http(loc):
            kind = "url" if url_ext(loc) in MEDIA_EXTS else "page"
        elif loc.startswith("hf://"):
            kind = "hf"
        elif Path(loc).suffix.lower() in (".txt", ".csv", ".tsv", ".parquet", ".lst"):
            kind = "urls"
        else:
            raise ValueError(f"not a remote source: {arg!r} (use urls:, page:, url: or hf: before it)")
    if kind == "hf":
        loc = loc.removeprefix("hf://")
    if is_http(loc):
        parts = urlsplit(loc)
        stem = f"{parts.hostname or ''}_{PurePosixPath(unquote(parts.path)).stem}"
    elif kind == "hf":
        stem = loc.replace("/", "_")
    else:
        stem = Path(loc).stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[-60:] or kind
    return SourceSpec(name=name, path=loc, kind=kind, licence=licence)


# ---------------------------------------------------------------------------------------------- patterns
def _match(url: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], url) is not None
    return fnmatch.fnmatchcase(url, pattern) or fnmatch.fnmatchcase(
        PurePosixPath(urlsplit(url).path).name, pattern
    )


def pattern_verdict(url: str, include: list[str], exclude: list[str]) -> str | None:
    """None when the URL passes the include/exclude patterns, else ``excluded``/``not_included``."""
    if any(_match(url, p) for p in exclude):
        return "excluded"
    if include and not any(_match(url, p) for p in include):
        return "not_included"
    return None


# ---------------------------------------------------------------------------------------------- url lists
URL_COLUMNS = ("url", "URL", "image_url", "img_url", "link", "href")
LICENCE_COLUMNS = ("licence", "license", "LICENSE", "Licence", "License")


def _rows_from_frame(df, spec: SourceSpec) -> list[Task]:
    opts = spec.options or {}
    ucol = opts.get("url_column") or next((c for c in URL_COLUMNS if c in df.columns), None)
    if ucol is None or ucol not in df.columns:
        raise ValueError(
            f"source {spec.name!r}: no URL column (set options.url_column; columns: {list(df.columns)})"
        )
    lcol = opts.get("licence_column") or next((c for c in LICENCE_COLUMNS if c in df.columns), None)
    tasks = []
    extra = [c for c in df.columns if c not in (ucol, lcol)]
    for rec in df.to_dict("records"):
        url = rec.get(ucol)
        if not isinstance(url, str) or not url.strip():
            continue
        lic = rec.get(lcol) if lcol else None
        meta = {c: plain_value(rec.get(c)) for c in extra}
        meta = {k: v for k, v in meta.items() if v is not None}
        tasks.append(
            Task(
                url=url.strip(),
                source=spec.name,
                licence=lic if isinstance(lic, str) and lic else spec.licence,
                meta=meta,
            )
        )
    return tasks


def plain_value(v: Any) -> Any:
    """A JSON-safe scalar (NaN -> None); other values as their string."""
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, (str, int, float, bool)):
        return v
    if hasattr(v, "item"):
        try:
            return v.item()
        except (ValueError, TypeError):
            pass
    return str(v)


def read_url_list(spec: SourceSpec, dl: Downloader | None = None) -> list[Task]:
    """The URLs of a ``urls`` source: a text file (one URL a line, ``#`` comments), CSV/TSV with a
    header (URL column ``url`` or ``options.url_column``; licence column ``licence``/``license`` or
    ``options.licence_column``; other columns kept as metadata), or Parquet. The list may itself be at an
    http(s) URL."""
    import pandas as pd

    path = str(spec.path)
    ext = Path(urlsplit(path).path if is_http(path) else path).suffix.lower()
    if is_http(path):
        if dl is None:
            raise ValueError("a remote URL list needs a downloader")
        res = dl.fetch(path)
        if res.error is not None:
            raise ValueError(f"source {spec.name!r}: cannot fetch URL list {redact(path)}: {res.error}")
        data = res.data or b""
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"source {spec.name!r}: URL list not found: {path}")
        data = p.read_bytes()
    if ext == ".parquet" or data[:4] == b"PAR1":
        return _rows_from_frame(pd.read_parquet(io.BytesIO(data)), spec)
    text = data.decode("utf-8-sig", errors="replace")
    first = text.lstrip().split("\n", 1)[0]
    if ext in (".csv", ".tsv") or (("," in first or "\t" in first) and not is_http(first.strip())):
        delim = "\t" if ext == ".tsv" or ("\t" in first and "," not in first) else ","
        reader = csv.DictReader(io.StringIO(text), delimiter=delim)
        return _rows_from_frame(pd.DataFrame(list(reader), columns=reader.fieldnames or []), spec)
    tasks = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            tasks.append(Task(url=line, source=spec.name, licence=spec.licence))
    return tasks


# ---------------------------------------------------------------------------------------------- pages
class LinkParser(HTMLParser):
    """Collects ``<img src/srcset>``, ``<source src/srcset>``, ``<video/a href>`` links and ``<base>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.media: list[str] = []  # always files (img, source, video)
        self.anchors: list[str] = []  # files when their extension says so, else pages

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "base" and a.get("href") and self.base is None:
            self.base = a["href"]
        elif tag in ("img", "source", "video"):
            for key in ("src", "data-src", "poster"):
                if a.get(key):
                    self.media.append(a[key])
            for key in ("srcset", "data-srcset"):
                if a.get(key):
                    self.media += [c.strip().split()[0] for c in a[key].split(",") if c.strip()]
        elif tag in ("a", "area") and a.get("href"):
            self.anchors.append(a["href"])


def _clean(url: str) -> str | None:
    """Absolute http(s) URL without fragment, else None (mailto:, javascript:, data:, ...)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path or "/", parts.query, ""))


@dataclass
class CrawlResult:
    tasks: list[Task]
    rows: list[dict]  #: manifest rows for pages and skipped links


def crawl(
    spec: SourceSpec,
    opts: ScrapeOptions,
    dl: Downloader,
    robots: Robots | None,
    include: list[str],
    exclude: list[str],
) -> CrawlResult:
    """Breadth-first crawl from the seed page(s) ``spec.path`` (+ ``options.pages``) to ``opts.depth``
    link hops; returns the files to fetch and rows for pages and skipped links (each URL once)."""
    seeds = [str(spec.path)] + [str(u) for u in (spec.options or {}).get("pages", [])]
    seeds = [u for u in (_clean(s) for s in seeds) if u]
    allowed = {host_of(s) for s in seeds} | {h.lower() for h in opts.allow_hosts}

    def in_scope(url: str) -> bool:
        if not opts.same_host:
            return True
        host = host_of(url)
        return host in allowed or host.split(":")[0] in allowed

    tasks: list[Task] = []
    rows: list[dict] = []
    seen: set[str] = set()
    queue: deque[tuple[str, int, str | None]] = deque((s, 0, None) for s in seeds)
    pages = 0
    while queue:
        page, level, parent = queue.popleft()
        if page in seen:
            continue
        seen.add(page)
        row = {"url": page, "role": "page", "source": spec.name, "licence": spec.licence, "found_on": parent}
        if pages >= opts.max_pages:
            rows.append({**row, "status": "skipped", "reason": "max_pages"})
            continue
        if robots is not None and not robots.allowed(page):
            rows.append({**row, "status": "skipped", "reason": "robots_disallowed"})
            continue
        pages += 1
        res = dl.fetch(page)
        row.update(
            final_url=res.final_url,
            http_status=res.http_status,
            bytes=res.bytes,
            sha256=res.sha256,
            content_kind=res.magic.kind if res.magic else None,
            attempts=res.attempts,
        )
        if res.error is not None:
            rows.append({**row, "status": "error", "reason": res.error})
            continue
        if res.magic is not None and res.magic.media:
            # the "page" is itself a file: fetch it as one
            rows.append({**row, "status": "skipped", "reason": "not_html:file_fetched"})
            tasks.append(Task(url=page, source=spec.name, licence=spec.licence, found_on=parent))
            continue
        rows.append({**row, "status": "ok", "reason": None})
        parser = LinkParser()
        try:
            parser.feed((res.data or b"").decode("utf-8", errors="replace"))
            parser.close()
        except Exception:  # noqa: BLE001 - html.parser is lenient; be safe on hostile pages
            pass
        base = urljoin(res.final_url or page, parser.base) if parser.base else (res.final_url or page)
        links = [(m, True) for m in parser.media] + [(a, False) for a in parser.anchors]
        for raw, is_media in links:
            url = _clean(urljoin(base, raw))
            if url is None or url in seen:
                continue
            file_like = is_media or url_ext(url) in MEDIA_EXTS
            if not file_like:
                if level + 1 < opts.depth and in_scope(url) and pattern_verdict(url, [], exclude) is None:
                    queue.append((url, level + 1, page))
                continue
            seen.add(url)
            frow = {
                "url": url,
                "role": "file",
                "source": spec.name,
                "licence": spec.licence,
                "found_on": page,
            }
            if not in_scope(url):
                rows.append({**frow, "status": "skipped", "reason": "off_host"})
                continue
            verdict = pattern_verdict(url, include, exclude)
            if verdict:
                rows.append({**frow, "status": "skipped", "reason": verdict})
                continue
            tasks.append(Task(url=url, source=spec.name, licence=spec.licence, found_on=page))
    return CrawlResult(tasks=tasks, rows=rows)
