"""`inf30 build` and `inf30 merge` end to end: the stages in sequence, under one folder lock.

build: sources -> (scrape the remote ones) -> :func:`inf30.build.build` -> :func:`inf30.dedupe.dedupe_dataset`;
merge: shard folders -> :func:`inf30.merge.merge` -> the dedupe stage across shards. Each stage is a library
function that starts no other stage; this module is where they are chained. The output folder's lock is held
from the first download to the end of the dedupe stage, and ``build.json`` is rewritten after dedupe so its
summary is the final manifest's. :func:`inf30.sources.load_sources` only parses and checks.
"""

from __future__ import annotations

from pathlib import Path

from inf30.build import BuildOptions, BuildSummary, build, resummarize
from inf30.distribute import check_distributor
from inf30.lock import lock_folder
from inf30.merge import check_shards, merge
from inf30.sources import load_sources
from inf30.spec import SourceSpec, is_remote


def fetch_remote(specs: list[SourceSpec], out_dir: str | Path, progress: bool = True) -> list[SourceSpec]:
    """The local specs the build reads: local ones unchanged, each remote one scraped into
    ``out_dir/.work/scrape/<name>`` (resumable) and replaced by its local specs. Takes ``out_dir``'s lock
    while it downloads (re-entrant: callers that already hold it keep it)."""
    if not any(is_remote(s) for s in specs):
        return list(specs)
    from inf30.scrape import materialize

    out: list[SourceSpec] = []
    with lock_folder(out_dir):
        for spec in specs:
            work = Path(out_dir) / ".work" / "scrape" / spec.name
            out.extend(materialize(spec, work, progress=progress) if is_remote(spec) else [spec])
    return out


def dedupe_stage(out_dir: str | Path, summary: BuildSummary, progress: bool = True, distributor: str = "local",
                 ray_address: str | None = None) -> BuildSummary:
    """Run the near-duplicate stage (default options, on ``distributor``) on a folder just built or merged
    (when it kept anything) and return the summary of the manifest it rewrote (also written into
    ``build.json``). Caller holds the lock."""
    if not summary.kept:
        return summary
    from inf30.dedupe import DedupeOptions, dedupe_dataset

    opts = DedupeOptions(distributor=distributor, ray_address=ray_address)
    text = dedupe_dataset(out_dir, opts, progress=progress).table()
    return resummarize(Path(out_dir), summary, text)


def build_sources(paths: list[str], out_dir: str | Path, opts: BuildOptions | None = None,
                  config: str | Path | None = None, patterns: bool = False) -> BuildSummary:
    """Parse ``paths``/``config`` (checked before anything is created), scrape the remote sources, build
    ``out_dir``, then (``opts.dedupe``, the default) remove near-duplicates; one lock for the whole run."""
    opts = opts or BuildOptions()
    opts.validate()
    specs = load_sources(paths, config=config, patterns=patterns)
    if not specs:
        return build(specs, out_dir, opts)  # its one-line "no sources given", before the folder exists
    with lock_folder(out_dir):
        summary = build(fetch_remote(specs, out_dir, progress=opts.progress), out_dir, opts)
        if not opts.dedupe:
            return summary
        return dedupe_stage(out_dir, summary, opts.progress, opts.distributor, opts.ray_address)


def merge_shards(shard_dirs: list[str | Path], out_dir: str | Path, dedupe: bool = True,
                 progress: bool = True, distributor: str = "local", ray_address: str | None = None) -> BuildSummary:
    """Merge shard folders into ``out_dir`` and (``dedupe``) re-make the near-duplicate decisions across
    shards, from the union of the shards' feature caches, on ``distributor`` (local processes or a Ray
    cluster at ``ray_address``); one lock for the whole run."""
    check_distributor(distributor, ray_address)  # a usage error before any work
    dirs = check_shards(shard_dirs, out_dir)  # before --out is created
    with lock_folder(out_dir):
        summary = merge(dirs, out_dir, redo_dedupe=dedupe, progress=progress)
        if not dedupe:
            return summary
        from inf30.dedupe import merge_caches

        merge_caches(dirs, Path(out_dir))
        return dedupe_stage(out_dir, summary, progress, distributor, ray_address)
