"""Kill a real ``inf30 scrape`` process mid-download (SIGKILL), re-run it, and check that the result equals
an uninterrupted scrape, that partial files were resumed with HTTP Range, and that no half-written file
was ever taken as done."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from http_fixtures import LoopbackServer

from inf30.scrape import MANIFEST_NAME, ScrapeOptions, scrape
from inf30.sources import SourceSpec

REPO = Path(__file__).resolve().parents[1]


def cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "cli.py"), "scrape", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def far_from_done(meta: Path) -> bool:
    """A partial download with at least 16 KB to go (about 0.1 s at the throttled rate)."""
    try:
        total = json.loads(meta.read_text())["total"]
        return meta.with_suffix("").stat().st_size < total - 16384
    except (OSError, ValueError, KeyError, TypeError):
        return False


def manifest_view(out: Path) -> list[tuple]:
    df = pq.read_table(out / MANIFEST_NAME).to_pandas()
    return sorted(zip(df.url, df.status, df.sha256, df.bytes, df.path, df.content_kind, strict=True))


def test_sigkill_then_resume_equals_uninterrupted(hituav_dir: Path, tmp_path: Path):
    files = sorted((hituav_dir / "val").glob("*.jpg"))[:12]
    data = {f"/v/{p.name}": p.read_bytes() for p in files}
    with LoopbackServer() as srv:
        srv.files.update(data)
        listing = tmp_path / "list.txt"
        listing.write_text("\n".join(srv.url(p) for p in data) + "\n")
        out = tmp_path / "killed"
        srv.throttle = (4096, 0.03)  # about 0.5 s per file: the kill lands mid-file
        args = ["urls:" + str(listing), "--out", str(out), "--concurrency", "2", "--per-host", "2", "--quiet",
                "--read-timeout", "5", "--backoff", "0.05"]
        proc = cli(args)
        partial_dir = out / ".scrape" / "partial"
        deadline = time.monotonic() + 60  # bounded wait (no timing assertion)
        journal = out / ".scrape" / "journal.jsonl"
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                parts = [p for p in partial_dir.rglob("*.part.json")] if partial_dir.exists() else []
                parts = [p for p in parts if far_from_done(p)]
                done = journal.read_text().count("\n") if journal.exists() else 0
                if parts and done >= 2:
                    break
                time.sleep(0.01)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the scrape had finished before the kill"
        srv.throttle = None

        # after the kill: every finished file is complete; partial files are only under .scrape/partial
        parts = {p: p.stat().st_size for p in partial_dir.rglob("*.part") if p.with_name(p.name + ".json").exists()}
        assert parts, "a download was in flight"
        sizes = {len(b) for b in data.values()}
        shas = {hashlib.sha256(b).hexdigest() for b in data.values()}
        finished = [p for p in (out / "list").rglob("*") if p.is_file()] if (out / "list").exists() else []
        assert finished and len(finished) < len(data)
        for p in finished:
            assert hashlib.sha256(p.read_bytes()).hexdigest() in shas
        assert not (out / MANIFEST_NAME).exists()  # written at the end only; the journal carries the state
        resumable = {}
        for p, size in parts.items():
            meta = json.loads(p.with_name(p.name + ".json").read_text())
            resumable[meta["url"].split(str(srv.port), 1)[1]] = size
            assert size < meta["total"] and meta["total"] in sizes

        journal_lines = []
        for line in journal.read_text().splitlines():
            try:
                journal_lines.append(json.dumps(json.loads(line)))
            except ValueError:  # a line cut by the kill is ignored by the re-run too
                pass
        n_log = len(srv.log)
        proc = cli(args)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        resumed_requests = {p: h.get("Range") for p, h, _ in srv.log[n_log:] if p in resumable}
        for path, size in resumable.items():
            assert resumed_requests[path] == f"bytes={size}-"
        # journaled files were not fetched again (a file renamed into place just before the kill, whose
        # journal line was not yet flushed, may be fetched again: that is safe, it is replaced atomically)
        journaled = {json.loads(line)["url"].split(str(srv.port), 1)[1] for line in journal_lines}
        refetched = {p for p, _, _ in srv.log[n_log:]} - {"/robots.txt"}
        assert journaled and refetched.isdisjoint(journaled)
        assert refetched | journaled == set(data)

        clean = tmp_path / "clean"
        scrape([SourceSpec(name="list", path=str(listing), kind="urls")], clean, ScrapeOptions(concurrency=2),
               progress=False)
        assert manifest_view(out) == manifest_view(clean)
        assert all(s == "ok" for _, s, *_ in manifest_view(out))
        tree = sorted(p.relative_to(out).as_posix() for p in (out / "list").rglob("*") if p.is_file())
        assert tree == sorted(p.relative_to(clean).as_posix() for p in (clean / "list").rglob("*") if p.is_file())
        for rel in tree:
            assert (out / rel).read_bytes() == (clean / rel).read_bytes()
        assert not list(partial_dir.rglob("*.part"))
        assert "12 files" in stdout.decode()
