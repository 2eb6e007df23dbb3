"""Where scraped files go and what a scrape-manifest row holds.

``<out>/<source>/{images,archives,videos}/<key[:2]>/<key><ext>``, with ``key`` = :func:`url_key` of the
URL (or of the ``hf://`` origin) and the extension from the file's magic bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from inf30.atomic import write_bytes_atomic
from inf30.scrape.magic import Magic
from inf30.scrape.state import safe_name

MANIFEST_NAME = "scrape_manifest.parquet"

SCHEMA = pa.schema(
    [
        ("url", pa.string()),  # the URL as listed/found (credentials removed); hf rows: the hf:// origin
        ("final_url", pa.string()),  # after redirects
        ("http_status", pa.int32()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),  # of the file's bytes
        ("path", pa.string()),  # the local file, relative to the scrape folder (ok files only)
        ("content_kind", pa.string()),  # from the magic bytes: png, jpeg, zip, tar+gzip, mp4, html, unknown
        ("category", pa.string()),  # image, archive, video, html, other
        ("status", pa.string()),  # ok, error, skipped
        ("reason", pa.string()),  # why not ok: http_404, timeout, too_large, robots_disallowed, ...
        ("detail", pa.string()),
        ("source", pa.string()),
        ("licence", pa.string()),
        ("role", pa.string()),  # file (fetched and kept) or page (an HTML page that was crawled)
        ("found_on", pa.string()),  # the page a crawled link came from
        ("origin", pa.string()),  # what the build records as the origin (the URL, or hf://id/split/row)
        ("key", pa.string()),  # cache key
        ("attempts", pa.int32()),
        ("resumed", pa.bool_()),  # finished with an HTTP Range request
        ("cached", pa.bool_()),  # found finished by an earlier run
        ("meta", pa.string()),  # JSON of the list's extra columns / the dataset row's scalar columns
    ]
)
COLUMNS = SCHEMA.names
CATEGORY_DIRS = {
    "image": "images",
    "archive": "archives",
    "video": "videos",
    "html": "other",
    "other": "other",
}


def new_row(**values: Any) -> dict:
    """A manifest row with every column (None where not given)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(attempts=0, resumed=False, cached=False, role="file")
    for k, v in values.items():
        if k in row:
            row[k] = v
    if isinstance(row["meta"], dict):
        row["meta"] = json.dumps(row["meta"], sort_keys=True, default=str) if row["meta"] else None
    return row


def final_path(out_dir: Path, source: str, key: str, magic: Magic) -> Path:
    """Where a finished file of ``source`` with cache key ``key`` is stored."""
    return out_dir / safe_name(source) / CATEGORY_DIRS[magic.category] / key[:2] / f"{key}{magic.ext}"


def partial_path(out_dir: Path, source: str, key: str) -> Path:
    return out_dir / ".scrape" / "partial" / safe_name(source) / f"{key}.part"


def place(tmp: Path, dest: Path, fsync: bool = False) -> None:
    """Move a complete temporary file into place atomically (same file system)."""
    if fsync:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    try:
        os.replace(tmp, dest)
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)


def write_file(dest: Path, data: bytes, fsync: bool = False) -> None:
    """Write bytes to ``dest`` atomically (:func:`inf30.atomic.write_bytes_atomic`)."""
    write_bytes_atomic(dest, data, fsync=fsync)


def rows_table(rows: list[dict]) -> pa.Table:
    """Rows -> a typed Arrow table with :data:`SCHEMA`."""
    cols = {name: [r.get(name) for r in rows] for name in COLUMNS}
    return pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in SCHEMA}, schema=SCHEMA)
