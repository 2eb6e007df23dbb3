"""Resumable scrape state under ``<out>/.scrape/``: a journal of finished files and the partial downloads.

A file is journaled only after it was renamed into place complete, so after a kill a re-run trusts every
journal entry whose file still has its recorded size, resumes ``.part`` files, and fetches the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

STATE_DIR = ".scrape"
JOURNAL = "journal.jsonl"


def url_key(text: str) -> str:
    """The cache key of a URL (or an ``hf://`` origin): 32 hex chars of its sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def safe_name(name: str) -> str:
    """A source name usable as one folder name (no separators, no dot-dot)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "source"
    return cleaned[:80]


class Journal:
    """Append-only JSON-lines record of finished files, keyed by (source, key)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / STATE_DIR / JOURNAL
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.done: dict[tuple[str, str], dict] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:  # a line cut by a kill
                        continue
                    if isinstance(row, dict) and "source" in row and "key" in row:
                        self.done[(row["source"], row["key"])] = row
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def get(self, out_dir: Path, source: str, key: str) -> dict | None:
        """The finished row for (source, key) if its file is still there with its recorded size."""
        row = self.done.get((source, key))
        if row is None or not row.get("path"):
            return None
        p = out_dir / row["path"]
        try:
            if p.stat().st_size != row.get("bytes"):
                return None
        except OSError:
            return None
        return row

    def add(self, row: dict, flush: bool = True) -> None:
        """Record a finished file (its file must already be in place). Unflushed lines lost to a kill
        only mean those files are fetched again."""
        line = json.dumps(row, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            self.done[(row["source"], row["key"])] = row
            self._f.write(line)
            if flush:
                self._f.flush()

    def flush(self) -> None:
        with self._lock:
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            self._f.close()
