"""The report's numbers: a built dataset's manifest (and dedupe groups) -> DataFrames and dicts.

No pixels, no files written: :mod:`inf30.report_render` draws and formats what this module computes, and
:func:`inf30.report.write_report` ties the two together.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inf30.entropy import REFERENCES, describe, run_tasks
from inf30.reasons import parse_reason, reason_kind, reason_target

GROUPS_FILE = Path("dedupe") / "groups.parquet"
PAPER_RESOLUTION = "40x23 to 6912x1024"
#: Reason kinds (text before ``:`` / `` | ``) counted as "corrupt / not decoded" in the funnel.
NOT_DECODED = frozenset(
    "corrupt unsupported decompression_bomb video_unreadable archive_bomb unsafe_archive_member "
    "unreadable download_failed missing".split()
)
#: Reason kind -> funnel column.
FUNNEL_OF_REASON = {
    "too_small": "too_small",
    "exact_duplicate": "exact_duplicates",
    "near_copy": "near_copies",
    "near_duplicate": "scene_duplicates",
    "scene_duplicate": "scene_duplicates",
}
FUNNEL_COLUMNS = [
    "found",
    "decoded",
    "corrupt",
    "too_small",
    "other_dropped",
    "exact_duplicates",
    "near_copies",
    "scene_duplicates",
    "kept",
]
DUP_KINDS = ("exact_duplicate", "near_copy", "near_duplicate", "scene_duplicate")
#: The dedupe stage records stages as numbers (``dup_stage``, groups.parquet ``stage``).
STAGE_NAMES = {1: "exact_duplicate", 2: "near_copy", 3: "near_duplicate"}
STAGE_FUNNEL = {1: "exact_duplicates", 2: "near_copies", 3: "scene_duplicates"}


def stage_name(stage: Any) -> str:
    """``2`` / ``'2'`` / ``'near_copy'`` -> ``'near_copy'`` (numbers as the dedupe stage writes them)."""
    try:
        return STAGE_NAMES.get(int(stage), str(stage))
    except (TypeError, ValueError):
        return "" if stage is None else str(stage)


def outcomes(df: pd.DataFrame) -> pd.Series:
    """The funnel column of each manifest row: kept, corrupt, too_small, exact_duplicates, near_copies,
    scene_duplicates or other_dropped."""
    kinds = df["reason"].map(reason_kind) if "reason" in df else pd.Series("", index=df.index)
    stage = df["dup_stage"].astype("string").str.lower() if "dup_stage" in df else None
    no_id = df["id"].isna() if "id" in df else pd.Series(True, index=df.index)
    out = []
    for i, (status, kind, missing) in enumerate(zip(df["status"], kinds, no_id, strict=True)):
        if status == "kept":
            out.append("kept")
        elif kind in FUNNEL_OF_REASON:
            out.append(FUNNEL_OF_REASON[kind])
        elif kind in NOT_DECODED or (missing and not kind.startswith("pseudo")):
            out.append("corrupt")
        elif stage is not None and isinstance(stage.iloc[i], str):
            st = stage.iloc[i]
            if st.isdigit():
                out.append(STAGE_FUNNEL.get(int(st), "other_dropped"))
            elif "exact" in st:
                out.append("exact_duplicates")
            elif "copy" in st:
                out.append("near_copies")
            elif "scene" in st or "near" in st:
                out.append("scene_duplicates")
            else:
                out.append("other_dropped")
        else:
            out.append("other_dropped")
    return pd.Series(out, index=df.index, dtype=object)


def funnel_table(df: pd.DataFrame) -> pd.DataFrame:
    """Counts per source (rows, sorted, plus ``TOTAL``) of :data:`FUNNEL_COLUMNS`; ``decoded`` is
    ``found - corrupt`` and the outcome columns add up to ``found``."""
    outc = outcomes(df)
    tab = pd.crosstab(df["source"].fillna("(none)"), outc) if len(df) else pd.DataFrame()
    tab = tab.reindex(columns=FUNNEL_COLUMNS, fill_value=0).fillna(0).astype(int)
    tab["found"] = tab[[c for c in FUNNEL_COLUMNS if c not in ("found", "decoded")]].sum(axis=1)
    tab["decoded"] = tab["found"] - tab["corrupt"]
    tab = tab.sort_index()
    tab.loc["TOTAL"] = tab.sum(axis=0)
    tab.index.name = "source"
    return tab[FUNNEL_COLUMNS].astype(int)


def reason_table(df: pd.DataFrame) -> pd.DataFrame:
    """Dropped rows per reason kind (rows) and source (columns, plus ``TOTAL``)."""
    dropped = df[df["status"] != "kept"]
    if dropped.empty:
        return pd.DataFrame(columns=["TOTAL"])
    kinds = dropped["reason"].map(reason_kind).replace("", "(no reason)")
    tab = pd.crosstab(kinds, dropped["source"].fillna("(none)"))
    tab["TOTAL"] = tab.sum(axis=1)
    tab.index.name = "reason"
    return tab.sort_values("TOTAL", ascending=False)


def entropy_table(kept: pd.DataFrame) -> pd.DataFrame:
    """Per source (plus ``ALL``): n, mean, std, median, min, max of the kept images' entropy."""
    rows = {}
    for name, g in sorted(kept.groupby("source")):
        rows[name] = _stats_row(g["entropy"].dropna().to_numpy(float))
    rows["ALL"] = _stats_row(kept["entropy"].dropna().to_numpy(float))
    tab = pd.DataFrame.from_dict(rows, orient="index")
    tab.index.name = "source"
    return tab


def _stats_row(v: np.ndarray) -> dict[str, Any]:
    d = describe(v)
    return {k: d[k] for k in ("n", "mean", "std", "median", "min", "max")}


def licence_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per source: its licence(s) from the source config, items found and kept."""
    lic = df["licence"] if "licence" in df else pd.Series(None, index=df.index)
    rows = {}
    for name, g in sorted(df.assign(_lic=lic).groupby(df["source"].fillna("(none)"))):
        values = sorted({str(x) for x in g["_lic"].dropna() if str(x).strip()})
        rows[name] = {
            "licence": "; ".join(values) if values else "not given",
            "found": len(g),
            "kept": int((g["status"] == "kept").sum()),
        }
    tab = pd.DataFrame.from_dict(rows, orient="index", columns=["licence", "found", "kept"])
    tab.index.name = "source"
    return tab


def resolution_summary(kept: pd.DataFrame) -> dict[str, Any]:
    """Smallest and largest kept image (by pixel count), extreme widths/heights and aspect ratios."""
    k = kept.dropna(subset=["width", "height"])
    if k.empty:
        return {"n": 0}
    w = k["width"].to_numpy(np.int64)
    h = k["height"].to_numpy(np.int64)
    area = w * h
    ar = w / np.maximum(h, 1)
    lo, hi = int(np.argmin(area)), int(np.argmax(area))
    return {
        "n": len(k),
        "min_resolution": f"{w[lo]}x{h[lo]}",
        "min_item": str(k["item_key"].iloc[lo]),
        "max_resolution": f"{w[hi]}x{h[hi]}",
        "max_item": str(k["item_key"].iloc[hi]),
        "min_width": int(w.min()),
        "max_width": int(w.max()),
        "min_height": int(h.min()),
        "max_height": int(h.max()),
        "median_resolution": f"{int(np.median(w))}x{int(np.median(h))}",
        "aspect_min": float(ar.min()),
        "aspect_median": float(np.median(ar)),
        "aspect_max": float(ar.max()),
        "paper": PAPER_RESOLUTION,
    }


# --------------------------------------------------------------------------------------- duplicates
@dataclass
class DupGroup:
    """An anchor (kept) and the items dropped as its duplicates."""

    anchor: str
    anchor_row: pd.Series | None
    members: list[tuple[str, pd.Series | None, str, str]]  # (member, row, stage, evidence)


def duplicate_edges(dataset_dir: Path, df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """All (anchor, member, stage, evidence) pairs: from ``dedupe/groups.parquet`` when the dedupe stage
    has run, else from the manifest's duplicate reasons (members are then item keys). Returns (edges,
    where they came from)."""
    path = dataset_dir / GROUPS_FILE
    if path.is_file():
        g = pd.read_parquet(path)
        edges = pd.DataFrame(
            {
                "anchor": g["anchor"].astype(str),
                "member": g["member"].astype(str),
                "stage": g["stage"].map(stage_name) if "stage" in g else "",
                "evidence": g["evidence"] if "evidence" in g else "",
            }
        )
        return edges, f"dedupe stage, {GROUPS_FILE}"
    kinds = df["reason"].map(reason_kind) if "reason" in df else pd.Series("", index=df.index)
    dup = df[kinds.isin(DUP_KINDS)]
    target = dup["reason"].map(reason_target)
    if "dup_anchor" in dup:
        target = dup["dup_anchor"].where(
            dup["dup_anchor"].map(lambda x: isinstance(x, str) and bool(x)), target
        )
    detail = dup["reason"].map(lambda r: parse_reason(r)[2])
    if "dup_evidence" in dup:
        detail = dup["dup_evidence"].where(
            dup["dup_evidence"].map(lambda x: isinstance(x, str) and bool(x)), detail
        )
    edges = pd.DataFrame(
        {
            "anchor": target,
            "member": dup["item_key"].astype(str),
            "stage": kinds[dup.index],
            "evidence": detail,
        }
    )
    return edges[edges["anchor"].notna()], "manifest duplicate reasons"


def duplicate_groups(
    dataset_dir: Path, df: pd.DataFrame, limit: int | None = None
) -> tuple[list[DupGroup], int, str]:
    """The ``limit`` largest duplicate groups with their manifest rows resolved, the number of groups, and
    where they came from (see :func:`duplicate_edges`)."""
    edges, origin = duplicate_edges(dataset_dir, df)
    if edges.empty:
        return [], 0, origin
    sizes = edges.groupby("anchor").size().reset_index(name="n")
    sizes = sizes.sort_values(["n", "anchor"], ascending=[False, True])
    top = sizes["anchor"].tolist()[:limit] if limit is not None else sizes["anchor"].tolist()

    by_key = df.drop_duplicates("item_key").set_index("item_key", drop=False)
    ids = df[df["id"].notna()] if "id" in df else df.iloc[:0]
    by_id = (
        ids.sort_values("status", key=lambda s: s != "kept").drop_duplicates("id").set_index("id", drop=False)
    )

    def lookup(value: Any, prefer_id: bool) -> pd.Series | None:
        for table in (by_id, by_key) if prefer_id else (by_key, by_id):
            if value in table.index:
                return table.loc[value]
        return None

    groups = []
    for anchor, members in edges[edges["anchor"].isin(set(top))].groupby("anchor", sort=False):
        rows = [
            (m, lookup(m, False), str(st), short_text(ev))
            for m, st, ev in zip(members["member"], members["stage"], members["evidence"], strict=True)
        ]
        groups.append(DupGroup(str(anchor), lookup(anchor, True), rows))
    order = {a: i for i, a in enumerate(top)}
    groups.sort(key=lambda g: order[g.anchor])
    return groups, len(sizes), origin


def short_text(x: Any, n: int = 60) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    s = x if isinstance(x, str) else json.dumps(x, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def with_entropy(root: Path, kept: pd.DataFrame, workers: int, progress: bool) -> tuple[pd.DataFrame, list[str]]:
    """The kept rows with an ``entropy`` for each stored image: rows that lack one (older builds) get it
    computed from the stored file. Returns (rows, notes for the report)."""
    kept = kept.copy()
    if "entropy" not in kept.columns:
        kept["entropy"] = np.nan
    missing = kept["entropy"].isna() & kept["path"].map(lambda p: isinstance(p, str)).astype(bool)
    if not missing.any():
        return kept, []
    tasks = [
        (str(root / p), k, "", False)
        for p, k in zip(kept.loc[missing, "path"], kept.loc[missing, "item_key"], strict=True)
    ]
    results = run_tasks(tasks, workers=workers, progress=progress, desc="report entropy")
    kept.loc[missing, "entropy"] = [r.entropy if r.entropy is not None else np.nan for r in results]
    return kept, [f"entropy was missing in the manifest for {int(missing.sum())} kept images; computed here"]


def group_info(groups: list[DupGroup]) -> list[dict[str, Any]]:
    """The ``summary.json`` entry of each duplicate group: anchor item, member count, stages, examples."""
    return [
        {
            "anchor": str(g.anchor_row["item_key"]) if g.anchor_row is not None else g.anchor,
            "members": len(g.members),
            "stages": sorted({m[2] for m in g.members}),
            "examples": [str(m[1]["item_key"]) if m[1] is not None else m[0] for m in g.members[:3]],
        }
        for g in groups
    ]


@dataclass
class ReportTables:
    """Everything the report shows as numbers (``summary`` is ``summary.json``)."""

    kept: pd.DataFrame  #: kept rows, with entropy
    funnel: pd.DataFrame
    reasons: pd.DataFrame
    entropy: pd.DataFrame
    licences: pd.DataFrame
    groups: list[DupGroup]
    build: dict[str, Any] | None  #: build.json, when readable
    summary: dict[str, Any]


def report_tables(root: Path, df: pd.DataFrame, dup_groups: int, workers: int = 0,
                  progress: bool = False) -> ReportTables:
    """All tables of the report of the dataset ``root`` whose manifest is ``df``."""
    kept, notes = with_entropy(root, df[df["status"] == "kept"], workers, progress)
    funnel, reasons = funnel_table(df), reason_table(df)
    ent_tab, lic_tab = entropy_table(kept), licence_table(df)
    groups, n_groups, origin = duplicate_groups(root, df, limit=dup_groups)
    build_json = None
    if (root / "build.json").is_file():
        try:
            build_json = json.loads((root / "build.json").read_text())
        except (OSError, ValueError):
            notes.append("build.json could not be read")
    summary = {
        "dataset": str(root.resolve()),
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "funnel": {src: {k: int(v) for k, v in row.items()} for src, row in funnel.iterrows()},
        "drop_reasons": {r: int(n) for r, n in reasons["TOTAL"].items()} if len(reasons) else {},
        "entropy": {src: jsonable(row.to_dict()) for src, row in ent_tab.iterrows()},
        "entropy_references": REFERENCES,
        "resolution": resolution_summary(kept),
        "licences": {src: jsonable(row.to_dict()) for src, row in lic_tab.iterrows()},
        "duplicate_groups": {"from": origin, "count": n_groups, "largest": group_info(groups[:dup_groups])},
        "notes": notes,
    }
    return ReportTables(kept, funnel, reasons, ent_tab, lic_tab, groups, build_json, summary)


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (float, np.floating)):
            v = None if not math.isfinite(v) else float(v)
        out[k] = v
    return out
