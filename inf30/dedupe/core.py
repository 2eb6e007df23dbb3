"""The dedupe stage on a built dataset folder: reset earlier own drops, features, edges, anchors, then the
manifest, ``DIR/dedupe/groups.parquet`` and the contact sheet (see :mod:`inf30.dedupe`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from inf30.atomic import write_bytes_atomic
from inf30.dedupe.anchors import anchor_rank, assign_anchors
from inf30.dedupe.cache import DEDUPE_DIR, compute_features
from inf30.dedupe.edges import find_edges
from inf30.dedupe.hashes import hex_to_codes
from inf30.dedupe.options import DedupeOptions, DedupeSummary
from inf30.dedupe.outputs import contact_sheet, mark_dropped
from inf30.errors import UsageError
from inf30.lock import lock_folder
from inf30.manifest import MANIFEST_NAME, read_manifest, write_manifest, write_table
from inf30.reasons import DEDUPE_REASONS
from inf30.scene import EMPTY

OWN_REASONS = DEDUPE_REASONS  # the reason prefixes dedupe writes (inf30.reasons)


def dedupe_dataset(
    dataset_dir: str | os.PathLike, opts: DedupeOptions | None = None, progress: bool = True
) -> DedupeSummary:
    """Run stages 2 and 3 on a built dataset folder and rewrite its manifest (see module docstring).

    Re-running is idempotent: rows this function dropped earlier are reconsidered from scratch.
    """
    t0 = time.perf_counter()
    opts = opts or DedupeOptions()
    opts.validate()
    ddir = Path(dataset_dir)
    if not ddir.is_dir():
        raise UsageError(f"{ddir} is not a folder; give a dataset folder written by `inf30 build SOURCES --out DIR`")
    if not (ddir / MANIFEST_NAME).is_file():
        raise UsageError(f"{ddir} has no {MANIFEST_NAME}; build a dataset into it first: `inf30 build SOURCES --out {ddir}`")
    with lock_folder(ddir):  # re-entrant: the build holds it while it runs this stage
        stats = _dedupe_locked(ddir, opts, progress)
    stats.seconds = time.perf_counter() - t0
    return stats


def _dedupe_locked(ddir: Path, opts: DedupeOptions, progress: bool) -> DedupeSummary:
    """The body of :func:`dedupe_dataset`, run while holding the folder's lock."""
    df = read_manifest(ddir).reset_index(drop=True)
    for col in ("dup_stage", "dup_anchor", "dup_evidence"):
        if col not in df.columns:
            df[col] = None
    own = df["status"].eq("dropped") & df["reason"].fillna("").str.startswith(OWN_REASONS)
    df.loc[own, "status"] = "kept"
    df.loc[own, "reason"] = None
    df["dup_stage"] = pd.array([None] * len(df), dtype="Int8")
    df["dup_anchor"] = None
    df["dup_evidence"] = None

    sel = df.index[df["status"].eq("kept") & df["id"].notna() & df["path"].notna()].to_numpy()
    work = df.loc[sel].drop_duplicates("id")
    work = work.iloc[np.argsort(work["id"].to_numpy(), kind="stable")].reset_index()  # 'index' = manifest row
    stats = DedupeSummary(considered=len(work))
    ids = work["id"].astype(str).tolist()

    missing: dict[str, set[str]] = {}
    for kind in opts.hashes:
        col = work[kind] if kind in work.columns else pd.Series([None] * len(work))
        for ident, h in zip(ids, col, strict=True):
            if not (isinstance(h, str) and len(h) == 16):
                missing.setdefault(ident, set()).add(kind)
    cache = compute_features(ddir, work[["id", "path"]], missing, opts, progress)
    stats.unreadable = sum(1 for i in ids if i in cache.unreadable)

    hash_cols = []
    for kind in opts.hashes:
        col = work[kind].tolist() if kind in work.columns else [None] * len(work)
        hash_cols.append(
            [
                h if isinstance(h, str) and len(h) == 16 else cache.hashes.get(i, {}).get(kind)
                for i, h in zip(ids, col, strict=True)
            ]
        )
    codes, valid = hex_to_codes(hash_cols)
    feats = [cache.feats.get(i, EMPTY) for i in ids]
    stats.no_scene_features = sum(1 for f in feats if not f.usable)
    rank = anchor_rank(work, opts.order)
    edges = find_edges(
        codes, valid, feats if opts.scene else None, opts, ids, progress, stats, work["item_key"].astype(str).tolist(),
        rank=rank,
    )

    dropped = assign_anchors(rank, edges, opts.hops)
    g_rows = []
    for member, (anchor, stage, ev, parent) in sorted(dropped.items(), key=lambda kv: rank[kv[0]]):
        a_id, m_id = ids[anchor], ids[member]
        if parent != anchor:  # reached through another member of the group
            ev = f"{ev},via={ids[parent]}"
        row = int(work.at[member, "index"])
        mark_dropped(df, row, stage, a_id, ev)
        g_rows.append(
            {"anchor": a_id, "member": m_id, "stage": stage, "evidence": ev, "manifest_row": int(row)}
        )
    stats.near_copies = sum(1 for r in g_rows if r["stage"] == 2)
    stats.near_duplicates = sum(1 for r in g_rows if r["stage"] == 3)
    stats.kept = stats.considered - len(g_rows)
    groups = pd.DataFrame(g_rows, columns=["anchor", "member", "stage", "evidence", "manifest_row"])
    groups["stage"] = groups["stage"].astype(np.int8)
    stats.groups = groups["anchor"].nunique()

    out = ddir / DEDUPE_DIR
    out.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa

    write_table(
        out / "groups.parquet",
        pa.Table.from_pandas(groups.drop(columns=["manifest_row"]), preserve_index=False),
    )
    paths = dict(zip(work["id"], work["path"], strict=True))
    sheet = contact_sheet(ddir, groups, paths, opts.sheet_groups)
    write_bytes_atomic(out / "groups.png", cv2.imencode(".png", sheet)[1].tobytes())
    write_manifest(ddir, df)
    return stats
