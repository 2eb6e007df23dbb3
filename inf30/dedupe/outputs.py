"""What the dedupe stage writes besides the groups table: drop marks in the manifest and the contact sheet
``DIR/dedupe/groups.png``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from inf30.dedupe.cache import read_gray


def mark_dropped(df: pd.DataFrame, row: int, stage: int, anchor_id: str, evidence: str) -> None:
    """Mark manifest row ``row`` (an index label of ``df``) as dropped by stage 2 (``near_copy``) or
    stage 3 (``near_duplicate``) of anchor ``anchor_id``, with its evidence, in place."""
    kind = "near_copy" if stage == 2 else "near_duplicate"
    df.loc[row, ["status", "reason", "dup_anchor", "dup_evidence"]] = [
        "dropped",
        f"{kind}:{anchor_id} | {evidence}",
        anchor_id,
        evidence,
    ]
    df.loc[row, "dup_stage"] = stage


def contact_sheet(
    dataset_dir: Path,
    groups: pd.DataFrame,
    paths: dict[str, str],
    n_groups: int = 8,
    per_row: int = 8,
    thumb: int = 112,
) -> np.ndarray:
    """A contact sheet (H, W) uint8 of the largest groups: one row per group, anchor first (white frame),
    members after it labelled with their stage and evidence. Unreadable images show as grey tiles."""
    label_h = 14
    cell = thumb + label_h
    if groups.empty:
        sheet = np.full((cell, per_row * thumb), 40, np.uint8)
        cv2.putText(sheet, "no near-duplicate groups", (6, cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1)
        return sheet
    sizes = groups.groupby("anchor").size().sort_values(ascending=False, kind="stable")
    order = sorted(sizes.index, key=lambda a: (-sizes[a], a))[:n_groups]
    sheet = np.full((cell * len(order), per_row * thumb), 40, np.uint8)

    def tile(ident: str) -> np.ndarray:
        img = read_gray(Path(dataset_dir) / paths.get(ident, "")) if ident in paths else None
        t = np.full((thumb, thumb), 90, np.uint8)
        if img is None:
            return t
        s = thumb / max(img.shape)
        small = cv2.resize(
            img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))), interpolation=cv2.INTER_AREA
        )
        t[: small.shape[0], : small.shape[1]] = small
        return t

    for r, anchor in enumerate(order):
        members = groups[groups["anchor"] == anchor].sort_values(["stage", "member"])
        items = [(anchor, f"anchor {anchor[:6]} +{len(members)}")]
        items += [
            (m, ("copy " if st == 2 else "crop " if ev.startswith("crop search") else "scene ")
             + ev.split(",")[0].split("=")[-1])  # Hamming distance, ORB inliers or crop-search correlation
            for m, st, ev in zip(members["member"], members["stage"], members["evidence"], strict=True)
        ]
        for c, (ident, text) in enumerate(items[:per_row]):
            y, x = r * cell, c * thumb
            sheet[y : y + thumb, x : x + thumb] = tile(ident)
            if c == 0:
                cv2.rectangle(sheet, (x, y), (x + thumb - 1, y + thumb - 1), 255, 2)
            cv2.putText(sheet, text, (x + 2, y + thumb + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, 230, 1)
    return sheet
