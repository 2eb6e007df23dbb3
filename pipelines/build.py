"""`inf30 build` end to end: sources -> (scrape the remote ones) -> build (with its dedupe stage).

:func:`inf30.sources.load_sources` only parses and checks; this module is where remote sources are
brought to disk (into ``OUT/.work/scrape/<source>``) before the build reads them, under the output
folder's lock for the whole sequence.
"""

from __future__ import annotations

from pathlib import Path

from inf30.build import BuildOptions, BuildSummary, build
from inf30.lock import lock_folder
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


def build_sources(paths: list[str], out_dir: str | Path, opts: BuildOptions | None = None,
                  config: str | Path | None = None, patterns: bool = False) -> BuildSummary:
    """Parse ``paths``/``config`` (checked before anything is created), scrape the remote sources, then
    build ``out_dir``; the folder's lock is held from the first download to the end of the build."""
    opts = opts or BuildOptions()
    opts.validate()
    specs = load_sources(paths, config=config, patterns=patterns)
    if not any(is_remote(s) for s in specs):
        return build(specs, out_dir, opts)
    with lock_folder(out_dir):
        return build(fetch_remote(specs, out_dir, progress=opts.progress), out_dir, opts)
