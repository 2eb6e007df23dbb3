"""The dataset report (``inf30 report DIR``): what a build kept, dropped and why.

Writes ``DIR/report/index.html`` (plots beside it, or embedded with ``embed=True``), ``DIR/report/report.md``,
``DIR/report/summary.json`` and the PNG plots: the funnel per source, the entropy histogram with the
paper's reference means, resolution and aspect ratios, sample grids per source, the lowest and highest
entropy images with local entropy maps, the largest duplicate groups and the licences per source.
Everything is read from ``DIR/manifest.parquet``, ``DIR/images``, ``DIR/build.json`` and
``DIR/dedupe/groups.parquet`` (see docs/architecture.md); nothing is rebuilt.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inf30.atomic import write_text_atomic
from inf30.entropy import REFERENCES, describe, local_entropy_map, run_tasks
from inf30.errors import check
from inf30.lock import lock_folder
from inf30.manifest import MANIFEST_NAME, read_manifest

REPORT_DIR = "report"
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


@dataclass
class ReportOptions:
    """What the report shows. ``embed`` puts the PNGs into index.html as data URIs."""

    samples_per_source: int = 8
    extremes: int = 6
    dup_groups: int = 6
    dup_members: int = 5
    entropy_maps: bool = True
    embed: bool = False
    seed: int = 0
    workers: int = 0
    progress: bool = True

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


# ------------------------------------------------------------------------------------------- tables
def reason_kind(reason: Any) -> str:
    """``'exact_duplicate:ab12 | detail'`` -> ``'exact_duplicate'``; empty string for no reason."""
    if not isinstance(reason, str) or not reason.strip():
        return ""
    return reason.split(" | ", 1)[0].split(":", 1)[0].strip()


def _reason_target(reason: Any) -> str | None:
    """The id after ``kind:`` in a duplicate reason (``near_copy:<id> | ...`` -> ``<id>``)."""
    if not isinstance(reason, str):
        return None
    head = reason.split(" | ", 1)[0]
    return head.split(":", 1)[1].strip() or None if ":" in head else None


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
    target = dup["reason"].map(_reason_target)
    if "dup_anchor" in dup:
        target = dup["dup_anchor"].where(
            dup["dup_anchor"].map(lambda x: isinstance(x, str) and bool(x)), target
        )
    detail = dup["reason"].map(lambda r: r.split(" | ", 1)[1] if " | " in r else "")
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
            (m, lookup(m, False), str(st), _short_text(ev))
            for m, st, ev in zip(members["member"], members["stage"], members["evidence"], strict=True)
        ]
        groups.append(DupGroup(str(anchor), lookup(anchor, True), rows))
    order = {a: i for i, a in enumerate(top)}
    groups.sort(key=lambda g: order[g.anchor])
    return groups, len(sizes), origin


def _short_text(x: Any, n: int = 60) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    s = x if isinstance(x, str) else json.dumps(x, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


# ------------------------------------------------------------------------------------------- images
def _thumb(gray: np.ndarray, side: int = 256) -> np.ndarray:
    from PIL import Image

    if max(gray.shape) <= side:
        return gray
    im = Image.fromarray(gray, "L")
    im.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(im)


def _load_stored(root: Path, row: pd.Series | None) -> np.ndarray | None:
    """Pixels of a kept row's stored image (mode L), or None."""
    from PIL import Image

    if row is None or not isinstance(row.get("path"), str):
        return None
    try:
        with Image.open(root / row["path"]) as im:
            return np.asarray(im.convert("L"))
    except Exception:  # noqa: BLE001 - a missing or broken stored file shows as an empty tile
        return None


def _load_member(
    root: Path, row: pd.Series | None, anchor_px: np.ndarray | None
) -> tuple[np.ndarray | None, str]:
    """Pixels of a dropped duplicate: stored file, identical anchor pixels, or the original file."""
    from inf30.entropy import decode_gray

    if row is None:
        return None, "not in manifest"
    px = _load_stored(root, row)
    if px is not None:
        return px, ""
    if anchor_px is not None and reason_kind(row.get("reason")) == "exact_duplicate":
        return anchor_px, "same pixels"
    origin = row.get("origin")
    if row.get("origin_kind") == "file" and isinstance(origin, str) and Path(origin).is_file():
        try:
            return decode_gray(Path(origin).read_bytes()), "from origin"
        except Exception:  # noqa: BLE001
            return None, "origin unreadable"
    return None, "not stored"


def _caption(text: str, n: int = 28) -> str:
    text = str(text)
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:40] or "source"


# ------------------------------------------------------------------------------------------- writing
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
    from inf30 import plots

    df = read_manifest(root)
    for col in ("status", "source", "item_key"):
        if col not in df.columns:
            raise ValueError(f"{root}: manifest has no {col!r} column; is this a built dataset?")
    out = root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    kept = df[df["status"] == "kept"].copy()
    notes: list[str] = []

    # entropy of kept rows that lack it (older builds): computed from the stored images
    if "entropy" not in kept.columns:
        kept["entropy"] = np.nan
    missing = kept["entropy"].isna() & kept["path"].map(lambda p: isinstance(p, str)).astype(bool)
    if missing.any():
        tasks = [
            (str(root / p), k, "", False)
            for p, k in zip(kept.loc[missing, "path"], kept.loc[missing, "item_key"], strict=True)
        ]
        results = run_tasks(tasks, workers=opts.workers, progress=opts.progress, desc="report entropy")
        kept.loc[missing, "entropy"] = [r.entropy if r.entropy is not None else np.nan for r in results]
        notes.append(
            f"entropy was missing in the manifest for {int(missing.sum())} kept images; computed here"
        )

    funnel = funnel_table(df)
    reasons = reason_table(df)
    ent_tab = entropy_table(kept)
    lic_tab = licence_table(df)
    res = resolution_summary(kept)
    groups, n_groups, groups_origin = duplicate_groups(root, df, limit=opts.dup_groups)
    ent_all = kept["entropy"].dropna().to_numpy(float)
    by_source = {n: g["entropy"].dropna().to_numpy(float) for n, g in kept.groupby("source")}

    figs: dict[str, Path] = {}
    figs["funnel"] = plots.funnel(funnel, out / "funnel.png")
    figs["entropy"] = plots.entropy_histogram(ent_all, by_source, REFERENCES, out / "entropy_hist.png")
    kr = kept.dropna(subset=["width", "height"])
    figs["resolution"] = plots.resolution(
        kr["width"].to_numpy(float),
        kr["height"].to_numpy(float),
        kr["source"].astype(str).tolist(),
        out / "resolution.png",
    )

    # samples per source, in figures of at most 10 sources
    sample_rows = []
    for name, g in sorted(kept.groupby("source")):
        take = g.iloc[np.sort(rng.choice(len(g), size=min(opts.samples_per_source, len(g)), replace=False))]
        items = []
        for _, row in take.iterrows():
            px = _load_stored(root, row)
            ent = row["entropy"]
            cap = f"{_caption(str(row['item_key']).split(':', 1)[-1], 22)}\nH={ent:.2f}" if ent == ent else ""
            items.append((None if px is None else _thumb(px), cap))
        sample_rows.append((name, items))
    sample_figs = []
    for i in range(0, max(1, len(sample_rows)), 10):
        chunk = sample_rows[i : i + 10]
        name = "samples.png" if len(sample_rows) <= 10 else f"samples_{i // 10 + 1}.png"
        sample_figs.append(plots.image_grid(chunk, out / name, "Random kept images per source"))

    # lowest / highest entropy with local entropy maps
    ke = kept.dropna(subset=["entropy"]).sort_values("entropy", kind="stable")
    ext_rows = []
    k = min(opts.extremes, max(1, len(ke) // 2))  # lowest and highest never show the same image twice
    halves = (("lowest entropy", ke.head(k)), ("highest entropy", ke.iloc[max(k, len(ke) - k) :][::-1]))
    for label, part in halves:
        imgs, maps = [], []
        for _, row in part.iterrows():
            px = _load_stored(root, row)
            cap = f"{row['source']}\nH={row['entropy']:.2f}"
            imgs.append((None if px is None else _thumb(px), cap))
            if opts.entropy_maps:
                m = None if px is None else local_entropy_map(px, radius=4, max_side=160)
                maps.append((m, "local entropy" if m is not None else "not stored"))
        ext_rows.append((label, imgs))
        if opts.entropy_maps:
            ext_rows.append(("local entropy, 0-8 bits", maps, "magma", 8.0))
    figs["extremes"] = plots.image_grid(
        ext_rows, out / "entropy_extremes.png", "Lowest and highest entropy kept images"
    )

    # largest duplicate groups
    dup_rows, dup_info = [], []
    for g in groups[: opts.dup_groups]:
        anchor_px = _load_stored(root, g.anchor_row)
        anchor_name = (
            str(g.anchor_row["item_key"]).split(":", 1)[-1] if g.anchor_row is not None else g.anchor
        )
        items = [(None if anchor_px is None else _thumb(anchor_px), f"anchor\n{_caption(anchor_name, 22)}")]
        for _member, row, stage, ev in g.members[: opts.dup_members]:
            px, how = _load_member(root, row, anchor_px)
            note = "\n".join(_caption(part, 26) for part in (ev or how).split(",")[:2])
            items.append((None if px is None else _thumb(px), f"{stage}\n{note}"))
        anchor_key = str(g.anchor_row["item_key"]) if g.anchor_row is not None else g.anchor
        shown = min(len(g.members), opts.dup_members)
        more = f" ({shown} shown)" if shown < len(g.members) else ""
        dup_rows.append((f"anchor and {len(g.members)} duplicate(s){more}", items))
        dup_info.append(
            {
                "anchor": anchor_key,
                "members": len(g.members),
                "stages": sorted({m[2] for m in g.members}),
                "examples": [str(m[1]["item_key"]) if m[1] is not None else m[0] for m in g.members[:3]],
            }
        )
    if dup_rows:
        figs["duplicates"] = plots.image_grid(
            dup_rows, out / "duplicates.png", f"Largest duplicate groups (from {groups_origin})"
        )

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
        "entropy": {src: _jsonable(row.to_dict()) for src, row in ent_tab.iterrows()},
        "entropy_references": REFERENCES,
        "resolution": res,
        "licences": {src: _jsonable(row.to_dict()) for src, row in lic_tab.iterrows()},
        "duplicate_groups": {"from": groups_origin, "count": n_groups, "largest": dup_info},
        "notes": notes,
    }
    plot_paths = list(figs.values())[:3] + sample_figs + list(figs.values())[3:]
    ctx = _Context(
        root, summary, funnel, reasons, ent_tab, lic_tab, plot_paths, sample_figs, figs, build_json
    )
    html_path = out / "index.html"
    md_path = out / "report.md"
    json_path = out / "summary.json"
    write_text_atomic(html_path, _html(ctx, embed=opts.embed))
    write_text_atomic(md_path, _markdown(ctx))
    write_text_atomic(json_path, json.dumps(summary, indent=2, default=str) + "\n")
    for path in [html_path, md_path, json_path, *plot_paths]:
        _readable(path)
    return Report(out, html_path, md_path, json_path, plot_paths, summary)


def _readable(path: Path) -> None:
    """Atomic writes create 0600 files; a report is meant to be shared (0644 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        path.chmod(0o644 & ~umask)
    except OSError:
        pass


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (float, np.floating)):
            v = None if not math.isfinite(v) else float(v)
        out[k] = v
    return out


@dataclass
class _Context:
    root: Path
    summary: dict[str, Any]
    funnel: pd.DataFrame
    reasons: pd.DataFrame
    entropy: pd.DataFrame
    licences: pd.DataFrame
    plots: list[Path]
    samples: list[Path]
    figs: dict[str, Path]
    build: dict[str, Any] | None


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    return str(v)


def _headline(ctx: _Context) -> list[str]:
    t = ctx.summary["funnel"]["TOTAL"]
    e = ctx.summary["entropy"].get("ALL", {})
    r = ctx.summary["resolution"]
    lines = [
        f"{t['found']:,} items found, {t['decoded']:,} decoded, {t['kept']:,} kept "
        f"({t['corrupt']:,} corrupt, {t['too_small']:,} too small, {t['exact_duplicates']:,} exact duplicates, "
        f"{t['near_copies']:,} near-copies, {t['scene_duplicates']:,} scene duplicates, "
        f"{t['other_dropped']:,} dropped by other filters).",
    ]
    if e.get("n"):
        lines.append(
            f"Mean entropy of the kept images {e['mean']:.2f} bits (std {e['std']:.2f}); the paper reports "
            + " and ".join(f"{k} {v:.2f}" for k, v in REFERENCES.items())
            + "."
        )
    if r.get("n"):
        lines.append(
            f"Resolution from {r['min_resolution']} to {r['max_resolution']} (the paper's Inf30: {PAPER_RESOLUTION})."
        )
    return lines


def _img_src(path: Path, embed: bool) -> str:
    if embed:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return path.name


def _html_table(tab: pd.DataFrame, bold_last: bool = False) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [tab.index.name or ""] + list(tab.columns))
    body = []
    for i, (idx, *values) in enumerate(tab.itertuples(name=None)):
        cls = ' class="total"' if bold_last and i == len(tab) - 1 else ""
        cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in values)
        body.append(f"<tr{cls}><th>{html.escape(str(idx))}</th>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _md_table(tab: pd.DataFrame) -> str:
    cols = [tab.index.name or ""] + [str(c) for c in tab.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, *values in tab.itertuples(name=None):
        cells = [str(idx)] + [_fmt(v) for v in values]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#222;padding:0 1rem}h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2.2rem}table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}th,td{border:1px solid #ddd;
padding:.25rem .6rem;text-align:right}thead th{background:#f3f5f7}tbody th{text-align:left;font-weight:500}
tr.total{font-weight:700;background:#fafafa}img{max-width:100%;height:auto;border:1px solid #eee;margin:.4rem 0}
.muted{color:#666;font-size:.9rem}nav a{margin-right:1rem}pre{background:#f6f8fa;padding:.8rem;overflow:auto;
font-size:.8rem}
"""

_SECTIONS = [
    ("funnel", "Funnel"),
    ("entropy", "Entropy"),
    ("resolution", "Resolution"),
    ("samples", "Samples"),
    ("duplicates", "Duplicates"),
    ("licences", "Licences"),
]


def _html(ctx: _Context, embed: bool) -> str:
    s = ctx.summary
    esc = html.escape

    def img(path: Path, alt: str) -> str:
        return f'<img src="{_img_src(path, embed)}" alt="{esc(alt)}">'

    r = s["resolution"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Inf30 dataset report: {esc(ctx.root.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Dataset report: {esc(ctx.root.name)}</h1>",
        f'<p class="muted">{esc(s["dataset"])} · generated {esc(s["generated"])} by <code>inf30 report</code></p>',
        "<nav>" + "".join(f'<a href="#{k}">{t}</a>' for k, t in _SECTIONS) + "</nav>",
        "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in _headline(ctx)) + "</ul>",
    ]
    parts += [f'<p class="muted">Note: {esc(n)}</p>' for n in s["notes"]]
    parts += [
        '<h2 id="funnel">Funnel</h2>',
        "<p>Every input item is one manifest row; each ends in exactly one column. "
        "<em>decoded</em> = found − corrupt.</p>",
        _html_table(ctx.funnel, bold_last=True),
        img(ctx.figs["funnel"], "funnel: images remaining after each stage, and outcome per source"),
        "<h3>Drop reasons</h3>",
        _html_table(ctx.reasons) if len(ctx.reasons) else "<p>Nothing was dropped.</p>",
        '<h2 id="entropy">Entropy</h2>',
        "<p>Information entropy H = −Σ p(x<sub>i</sub>) log<sub>2</sub> p(x<sub>i</sub>) over the 256 levels "
        "of each normalized 8-bit image (paper Eq. 1). Reference lines: the paper's mean for Inf30 "
        f"({REFERENCES['Inf30 (paper)']:.2f}) and ImageNet-1K ({REFERENCES['ImageNet-1K (paper)']:.2f}).</p>",
        img(ctx.figs["entropy"], "entropy histogram of the kept images with reference lines"),
        _html_table(ctx.entropy, bold_last=True),
        '<h2 id="resolution">Resolution</h2>',
    ]
    if r.get("n"):
        parts.append(
            f"<p>Smallest {esc(r['min_resolution'])} ({esc(r['min_item'])}), largest "
            f"{esc(r['max_resolution'])} ({esc(r['max_item'])}), median {esc(r['median_resolution'])}; "
            f"widths {r['min_width']}–{r['max_width']}, heights {r['min_height']}–{r['max_height']}; "
            f"aspect ratio {r['aspect_min']:.2f}–{r['aspect_max']:.2f} (median {r['aspect_median']:.2f}). "
            f"The paper's Inf30 spans {PAPER_RESOLUTION}.</p>"
        )
    parts.append(img(ctx.figs["resolution"], "width by height scatter and aspect ratio histogram"))
    parts.append('<h2 id="samples">Samples</h2>')
    parts += [img(p, "random kept images per source") for p in ctx.samples]
    parts.append(img(ctx.figs["extremes"], "lowest and highest entropy images with local entropy maps"))
    dg = s["duplicate_groups"]
    parts.append('<h2 id="duplicates">Duplicates</h2>')
    if dg["count"]:
        parts.append(f"<p>{dg['count']:,} duplicate groups (from {esc(dg['from'])}); the largest:</p>")
        parts.append(img(ctx.figs["duplicates"], "largest duplicate groups"))
        tab = pd.DataFrame(
            [(g["anchor"], g["members"], ", ".join(g["stages"])) for g in dg["largest"]],
            columns=["anchor", "members", "stages"],
        ).set_index("anchor")
        parts.append(_html_table(tab))
    else:
        parts.append("<p>No duplicate groups (nothing dropped as a duplicate, or dedupe has not run).</p>")
    parts += ['<h2 id="licences">Licences</h2>', _html_table(ctx.licences)]
    if any(v["licence"] == "not given" for v in s["licences"].values()):
        parts.append(
            '<p class="muted">Sources with no licence in their config need one before publishing.</p>'
        )
    if ctx.build is not None:
        parts.append("<details><summary>build.json</summary><pre>")
        parts.append(esc(json.dumps(ctx.build, indent=2, default=str)[:20000]) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _markdown(ctx: _Context) -> str:
    s = ctx.summary
    r = s["resolution"]
    lines = [f"# Dataset report: {ctx.root.name}", "", f"{s['dataset']}, generated {s['generated']}.", ""]
    lines += [f"- {line}" for line in _headline(ctx)]
    lines += [f"- Note: {n}" for n in s["notes"]]
    lines += [
        "",
        "## Funnel",
        "",
        _md_table(ctx.funnel),
        "",
        "![funnel](funnel.png)",
        "",
        "### Drop reasons",
        "",
    ]
    lines += [_md_table(ctx.reasons) if len(ctx.reasons) else "Nothing was dropped.", ""]
    lines += [
        "## Entropy",
        "",
        "Entropy of each normalized 8-bit image (paper Eq. 1); reference lines at the paper's means "
        + ", ".join(f"{k} {v:.2f}" for k, v in REFERENCES.items())
        + ".",
        "",
        "![entropy histogram](entropy_hist.png)",
        "",
        _md_table(ctx.entropy),
        "",
        "## Resolution",
        "",
    ]
    if r.get("n"):
        lines += [
            f"Smallest {r['min_resolution']} ({r['min_item']}), largest {r['max_resolution']} ({r['max_item']}), "
            f"median {r['median_resolution']}; aspect ratio {r['aspect_min']:.2f} to {r['aspect_max']:.2f}. "
            f"The paper's Inf30 spans {PAPER_RESOLUTION}.",
            "",
        ]
    lines += ["![resolution](resolution.png)", "", "## Samples", ""]
    lines += [f"![samples]({p.name})" for p in ctx.samples]
    lines += ["", "![entropy extremes](entropy_extremes.png)", "", "## Duplicates", ""]
    dg = s["duplicate_groups"]
    if dg["count"]:
        lines += [
            f"{dg['count']:,} duplicate groups (from {dg['from']}).",
            "",
            "![duplicates](duplicates.png)",
            "",
        ]
        lines += ["| anchor | members | stages |", "|---|---|---|"]
        lines += [f"| {g['anchor']} | {g['members']} | {', '.join(g['stages'])} |" for g in dg["largest"]]
    else:
        lines.append("No duplicate groups.")
    lines += ["", "## Licences", "", _md_table(ctx.licences), ""]
    return "\n".join(lines)
