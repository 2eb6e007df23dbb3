"""``inf30 scrape``: plan the URLs of remote sources, download them concurrently into a resumable cache,
write ``scrape_manifest.parquet``, and hand the build local sources (:func:`materialize`)."""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from inf30.errors import UsageError
from inf30.lock import lock_folder
from inf30.manifest import write_table
from inf30.scrape.download import Downloader, host_of, redact
from inf30.scrape.magic import Magic, refine
from inf30.scrape.options import ScrapeOptions
from inf30.scrape.remote import Task, crawl, pattern_verdict, read_url_list, remote_kind
from inf30.scrape.robots import Robots
from inf30.scrape.state import Journal, safe_name, url_key
from inf30.scrape.store import (
    CATEGORY_DIRS,
    COLUMNS,
    MANIFEST_NAME,
    final_path,
    new_row,
    partial_path,
    place,
    rows_table,
)
from inf30.spec import SourceSpec, is_remote

#: per-source option keys that only the scraper uses (not passed on to the local specs)
REMOTE_OPTION_KEYS = {
    "depth", "same_host", "allow_hosts", "pages", "auth", "token_env", "split", "config", "revision",
    "image_column", "filter", "url_column", "licence_column", "max_rows", "max_pages", "respect_robots",
}


@dataclass
class ScrapeResult:
    """What a scrape did: one row per URL, the manifest path, and the local sources for the build."""

    out_dir: Path
    rows: list[dict]
    manifest_path: Path
    local_specs: list[SourceSpec] = field(default_factory=list)
    elapsed_s: float = 0.0
    download_s: float = 0.0  #: time spent in the concurrent download phase (URL files only)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)

    @property
    def files(self) -> list[dict]:
        return [r for r in self.rows if r.get("role") == "file"]

    @property
    def ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.files)

    @property
    def errors(self) -> int:
        return sum(r["status"] == "error" for r in self.rows)

    @property
    def bytes(self) -> int:
        return sum(int(r["bytes"] or 0) for r in self.files if r["status"] == "ok")

    def table(self) -> str:
        """A plain-text summary per source, with the failure reasons."""
        lines = [f"{'source':<28} {'files':>7} {'ok':>7} {'cached':>7} {'errors':>7} {'skipped':>8} {'MB':>9} {'pages':>6}"]
        by_src: dict[str, list[dict]] = {}
        for r in self.rows:
            by_src.setdefault(r["source"], []).append(r)
        for src, rows in by_src.items():
            files = [r for r in rows if r.get("role") == "file"]
            mb = sum(int(r["bytes"] or 0) for r in files if r["status"] == "ok") / 1e6
            lines.append(
                f"{src[:28]:<28} {len(files):>7} {sum(r['status'] == 'ok' for r in files):>7} "
                f"{sum(bool(r['cached']) for r in files):>7} {sum(r['status'] == 'error' for r in files):>7} "
                f"{sum(r['status'] == 'skipped' for r in files):>8} {mb:>9.1f} "
                f"{sum(r.get('role') == 'page' for r in rows):>6}"
            )
        reasons = Counter(r["reason"] for r in self.rows if r["status"] != "ok" and r["reason"])
        if reasons:
            lines.append("not fetched: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
        lines.append(f"{self.ok} files ({self.bytes / 1e6:.1f} MB) in {self.elapsed_s:.1f} s; manifest {self.manifest_path}")
        return "\n".join(lines)


def _auth(spec: SourceSpec) -> dict[str, tuple[str, str]]:
    """Basic-auth credentials of a source: ``options.auth = {username, password_env, hosts?}``."""
    auth = (spec.options or {}).get("auth")
    if not auth:
        return {}
    if not isinstance(auth, dict) or "username" not in auth or "password_env" not in auth:
        raise ValueError(f"source {spec.name!r}: options.auth needs username and password_env")
    password = os.environ.get(str(auth["password_env"]))
    if password is None:
        raise ValueError(f"source {spec.name!r}: environment variable {auth['password_env']} is not set")
    hosts = [host_of(str(spec.path))] + [str(h).lower() for h in auth.get("hosts", [])]
    return {h: (str(auth["username"]), password) for h in hosts if h}


@dataclass
class _Job:
    spec: SourceSpec
    opts: ScrapeOptions
    dl: Downloader
    robots: Robots | None


def _fetch_one(task: Task, job: _Job, out_dir: Path, journal: Journal) -> dict:
    """Download one URL into the cache; never raises."""
    url = redact(task.url) or task.url
    key = url_key(url)
    base = dict(url=url, origin=url, source=task.source, licence=task.licence, key=key, meta=task.meta,
                found_on=redact(task.found_on))
    try:
        done = journal.get(out_dir, task.source, key)
        if done is not None:
            return new_row(**{**done, "cached": True, "licence": task.licence, "meta": task.meta,
                              "found_on": redact(task.found_on)})
        try:
            urlsplit(task.url).port  # noqa: B018 - raises ValueError on a malformed host or port
        except ValueError:
            return new_row(**base, status="error", reason="invalid_url")
        if job.robots is not None and not job.robots.allowed(task.url):
            return new_row(**base, status="skipped", reason="robots_disallowed")
        part = partial_path(out_dir, task.source, key)
        res = job.dl.download(task.url, part)
        row = new_row(**base, final_url=redact(res.final_url), http_status=res.http_status, attempts=res.attempts,
                      resumed=res.resumed, detail=res.detail)
        if res.error is not None:
            row.update(status="error", reason=res.error)
            return row
        magic: Magic = refine(part, res.magic)  # type: ignore[arg-type]
        row.update(bytes=res.bytes, sha256=res.sha256, content_kind=magic.kind, category=magic.category)
        if not magic.media and not job.opts.keep_html:
            part.unlink(missing_ok=True)
            part.with_name(part.name + ".json").unlink(missing_ok=True)
            row.update(status="error", reason=f"not_media:{magic.kind}")
            return row
        dest = final_path(out_dir, task.source, key, magic)
        place(part, dest, job.opts.fsync)
        part.with_name(part.name + ".json").unlink(missing_ok=True)
        row.update(status="ok", path=dest.relative_to(out_dir).as_posix())
        return row  # journaled by the caller's thread (one writer, no lock convoy among workers)
    except Exception as exc:  # noqa: BLE001 - one bad URL never stops the job
        return new_row(**base, status="error", reason=f"internal_error:{type(exc).__name__}")


def _plan(spec: SourceSpec, job: _Job) -> tuple[list[Task], list[dict]]:
    """Files to fetch and rows already decided (skipped links, pages) for one source."""
    kind = remote_kind(spec)
    include = list(job.opts.include) + list(spec.include or [])
    exclude = list(job.opts.exclude) + list(spec.exclude or [])
    if kind == "page":
        cr = crawl(spec, job.opts, job.dl, job.robots, include, exclude)
        return cr.tasks, [new_row(**{**r, "url": redact(r["url"]), "origin": redact(r["url"]),
                                     "final_url": redact(r.get("final_url")), "found_on": redact(r.get("found_on"))})
                          for r in cr.rows]
    if kind == "urls":
        try:
            tasks = read_url_list(spec, job.dl)
        except ValueError as exc:
            if str(spec.path).lower().startswith(("http://", "https://")):
                return [], [new_row(url=redact(str(spec.path)), role="list", source=spec.name, status="error",
                                    reason="list_unreadable", detail=str(exc)[:200])]
            raise
    else:  # url, archive/video by URL
        tasks = [Task(url=str(spec.path), source=spec.name, licence=spec.licence)]
    keep, rows = [], []
    for t in tasks:
        verdict = pattern_verdict(t.url, include, exclude)
        if verdict:
            rows.append(new_row(url=redact(t.url), origin=redact(t.url), source=spec.name, licence=t.licence,
                                status="skipped", reason=verdict, meta=t.meta))
        else:
            keep.append(t)
    return keep, rows


def _local_specs(spec: SourceSpec, rows: list[dict], out_dir: Path) -> list[SourceSpec]:
    """The build's view of a scraped source: an image folder (with origins) plus archive/video specs."""
    passthrough = {k: v for k, v in (spec.options or {}).items() if k not in REMOTE_OPTION_KEYS}
    folder = out_dir / safe_name(spec.name) / CATEGORY_DIRS["image"]
    origins: dict[str, str] = {}
    licences: dict[str, str] = {}
    metas: dict[str, dict] = {}
    out: list[SourceSpec] = []
    for r in rows:
        if r["status"] != "ok" or r.get("role") != "file" or not r.get("path"):
            continue
        path = out_dir / r["path"]
        if r["category"] == "image":
            rel = path.relative_to(folder).as_posix()
            origins[rel] = r["origin"] or r["url"]
            if r.get("licence") and r["licence"] != spec.licence:
                licences[rel] = r["licence"]
            if r.get("meta"):
                import json

                metas[rel] = json.loads(r["meta"])
        elif r["category"] in ("archive", "video"):
            opts = {**passthrough, "origins": {"": r["origin"] or r["url"]}}
            out.append(SourceSpec(name=spec.name, path=str(path), kind=r["category"],
                                  licence=r.get("licence") or spec.licence, options=opts))
    if origins:
        opts = {**passthrough, "origins": origins}
        if licences:
            opts["licences"] = licences
        if metas:
            opts["meta"] = metas
        out.insert(0, SourceSpec(name=spec.name, path=str(folder), kind="folder", licence=spec.licence, options=opts))
    return out


def scrape(specs: list[SourceSpec], out_dir: Path, opts: ScrapeOptions | None = None,
           progress: bool = True) -> ScrapeResult:
    """Download remote sources into ``out_dir`` (resumable), write ``out_dir/scrape_manifest.parquet``
    (one row per URL) and return the rows and the local sources for the build. Local specs pass through."""
    opts = opts or ScrapeOptions()
    opts.validate()
    for spec in specs:
        if is_remote(spec):
            opts.with_source(spec.options).validate(f"source {spec.name!r}: options")
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UsageError(f"source names must be unique, repeated: {sorted(dup)}")
    out_dir = Path(out_dir)
    with lock_folder(out_dir):  # a second scrape into the same folder is refused (one line)
        return _scrape(specs, out_dir, opts, progress)


def _scrape(specs: list[SourceSpec], out_dir: Path, opts: ScrapeOptions, progress: bool) -> ScrapeResult:
    t0 = time.monotonic()
    names = [s.name for s in specs]
    journal = Journal(out_dir)
    rows: list[dict] = []
    local: list[SourceSpec] = []
    work: list[tuple[Task, _Job]] = []
    jobs: dict[str, _Job] = {}
    t_dl = 0.0
    try:
        for spec in specs:
            if not is_remote(spec):
                local.append(spec)
                continue
            sopts = opts.with_source(spec.options)
            if remote_kind(spec) == "hf":
                from inf30.scrape.hf import scrape_hf, scrub

                try:
                    rows += scrape_hf(spec, out_dir, sopts, journal, progress)
                except Exception as exc:  # noqa: BLE001 - an unreadable dataset ends this source only
                    token_env = (spec.options or {}).get("token_env")
                    rows.append(new_row(url=f"hf://{str(spec.path).removeprefix('hf://')}", role="list",
                                        source=spec.name, status="error", reason="dataset_unreadable",
                                        detail=scrub(f"{type(exc).__name__}: {exc}",
                                                     os.environ.get(str(token_env)) if token_env else None)))
                continue
            dl = Downloader(sopts, auth=_auth(spec))
            job = _Job(spec, sopts, dl, Robots(dl) if sopts.respect_robots else None)
            jobs[spec.name] = job
            tasks, planned = _plan(spec, job)
            rows += planned
            seen: set[str] = set()
            for t in tasks:
                if t.url not in seen:
                    seen.add(t.url)
                    work.append((t, job))
        t_dl = time.monotonic()
        rows += _run(work, out_dir, journal, opts, progress)
        t_dl = time.monotonic() - t_dl
    finally:
        journal.close()
        for job in jobs.values():
            job.dl.close()
    manifest = out_dir / MANIFEST_NAME
    keep_old: list[dict] = []
    if manifest.exists():
        try:
            old = pq.read_table(manifest).to_pylist()
            keep_old = [r for r in old if r.get("source") not in set(names)]
        except Exception:  # noqa: BLE001 - an unreadable old manifest is rewritten
            keep_old = []
    write_table(manifest, rows_table(keep_old + rows))
    for spec in specs:
        if is_remote(spec):
            local += _local_specs(spec, [r for r in rows if r["source"] == spec.name], out_dir)
    return ScrapeResult(out_dir=out_dir, rows=rows, manifest_path=manifest, local_specs=local,
                        elapsed_s=time.monotonic() - t0, download_s=t_dl)


def _run(work: list[tuple[Task, _Job]], out_dir: Path, journal: Journal, opts: ScrapeOptions,
         progress: bool) -> list[dict]:
    """Fetch all tasks on a thread pool, with a progress bar of files, bytes and errors."""
    rows: list[dict] = []
    if not work:
        return rows
    nbytes = errors = 0
    last = 0.0
    bar = tqdm(total=len(work), unit="file", desc="scrape", disable=not progress, dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, opts.concurrency), thread_name_prefix="scrape") as pool:
            futures = [pool.submit(_fetch_one, t, job, out_dir, journal) for t, job in work]
            for fut in as_completed(futures):
                row = fut.result()
                if row["status"] == "ok" and not row["cached"]:
                    journal.add(row, flush=False)
                nbytes += int(row["bytes"] or 0) if row["status"] == "ok" else 0
                errors += row["status"] == "error"
                bar.update(1)
                now = time.monotonic()
                if now - last > 0.25:
                    journal.flush()
                    bar.set_postfix_str(f"{nbytes / 1e6:.1f} MB, {errors} errors", refresh=False)
                    last = now
            bar.set_postfix_str(f"{nbytes / 1e6:.1f} MB, {errors} errors")
            rows = [f.result() for f in futures]  # in task order: the manifest is deterministic
    finally:
        bar.close()
    return rows


def materialize(spec: SourceSpec, work_dir: Path, opts: ScrapeOptions | None = None,
                progress: bool = True) -> list[SourceSpec]:
    """Bring one remote source to ``work_dir`` and return the local specs the build reads instead
    (a ``folder`` of images with ``options['origins']``, plus ``archive``/``video`` specs). A local spec
    comes back unchanged."""
    if not is_remote(spec):
        return [spec]
    return scrape([spec], Path(work_dir), opts, progress=progress).local_specs
