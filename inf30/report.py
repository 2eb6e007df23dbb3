"""The dataset report (``inf30 report DIR``): what a build kept, dropped and why.

Writes ``DIR/report/index.html`` (plots beside it, or embedded with ``embed=True``), ``DIR/report/report.md``,
``DIR/report/summary.json`` and the PNG plots: the funnel per source, the entropy histogram with the
paper's reference means, resolution and aspect ratios, sample grids per source, the lowest and highest
entropy images with local entropy maps, the largest duplicate groups and the licences per source.
Everything is read from ``DIR/manifest.parquet``, ``DIR/images``, ``DIR/build.json`` and
``DIR/dedupe/groups.parquet`` (see docs/architecture.md); nothing is rebuilt. The numbers come from
:mod:`inf30.report_tables` (re-exported here), the figures and documents from :mod:`inf30.report_render`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inf30.atomic import write_text_atomic
from inf30.errors import check
from inf30.lock import lock_folder
from inf30.manifest import MANIFEST_NAME, read_manifest
from inf30.options import option
from inf30.report_tables import (  # noqa: F401 - the tables are part of this module's interface
    DUP_KINDS,
    FUNNEL_COLUMNS,
    FUNNEL_OF_REASON,
    GROUPS_FILE,
    NOT_DECODED,
    PAPER_RESOLUTION,
    STAGE_FUNNEL,
    STAGE_NAMES,
    DupGroup,
    ReportTables,
    duplicate_edges,
    duplicate_groups,
    entropy_table,
    funnel_table,
    licence_table,
    outcomes,
    reason_table,
    report_tables,
    resolution_summary,
    stage_name,
)

REPORT_DIR = "report"


@dataclass
class ReportOptions:
    """What the report shows. ``embed`` puts the PNGs into index.html as data URIs."""

    samples_per_source: int = option(8, "Random sample images per source.")
    extremes: int = option(6, "Lowest and highest entropy images shown (each).")
    dup_groups: int = option(6, "Largest duplicate groups shown.")
    dup_members: int = option(5, "Duplicates shown per group.")
    entropy_maps: bool = option(True, "Local entropy maps of the extremes.")
    embed: bool = option(False, "Embed the plots in index.html (one portable file).")
    seed: int = option(0, "Random seed of the sample images.")
    workers: int = option(0, "Processes computing missing entropies (0 = all cores).")
    progress: bool = option(True, "Show a progress bar.")

    def validate(self) -> None:
        """UsageError (one line, exit 2) for an out-of-range option, before any work."""
        for name, flag, low in (("samples_per_source", "--samples", 0), ("extremes", "extremes", 0),
                                ("dup_groups", "dup_groups", 0), ("dup_members", "dup_members", 1),
                                ("seed", "seed", 0), ("workers", "workers", 0)):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                  f"{flag} must be a whole number of at least {low}, got {value!r}")


@dataclass
class Report:
    """Paths of what :func:`write_report` wrote, and the numbers (also in ``summary.json``)."""

    out_dir: Path
    html: Path
    markdown: Path
    summary_json: Path
    plots: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def write_report(dataset_dir: str | os.PathLike, opts: ReportOptions | None = None) -> Report:
    """Write the report of a built dataset into ``dataset_dir/report`` and return what was written."""
    opts = opts or ReportOptions()
    opts.validate()
    root = Path(dataset_dir)
    if not (root / MANIFEST_NAME).is_file():
        read_manifest(root)  # a clear error for a folder that is not a dataset, before the lock creates anything
    with lock_folder(root):  # a build, merge or dedupe writing the dataset meanwhile is refused (and vice versa)
        return _write_report(root, opts)


def _write_report(root: Path, opts: ReportOptions) -> Report:
    from inf30 import report_render as render

    df = read_manifest(root)
    for col in ("status", "source", "item_key"):
        if col not in df.columns:
            raise ValueError(f"{root}: manifest has no {col!r} column; is this a built dataset?")
    out = root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    tables = report_tables(root, df, opts.dup_groups, opts.workers, opts.progress)
    figs = render.figures(root, out, tables, opts)
    written = {
        out / "index.html": render.render_html(root, tables, figs, embed=opts.embed),
        out / "report.md": render.render_markdown(root, tables, figs),
        out / "summary.json": json.dumps(tables.summary, indent=2, default=str) + "\n",
    }
    for path, text in written.items():
        write_text_atomic(path, text)
    html_path, md_path, json_path = written
    return Report(out, html_path, md_path, json_path, figs.ordered, tables.summary)
