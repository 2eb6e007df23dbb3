"""`inf30 merge`: combine shard outputs of `inf30 build --shard K/N` into one dataset.

Rows are concatenated, kept images linked (or copied) into the merged folder, cross-shard exact
duplicates dropped with the same rule as a single build (first in item_key order wins), and the
near-duplicate stage runs across shards from the shards' feature caches.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tqdm import tqdm

from inf30.atomic import link_or_copy_atomic
from inf30.build import BuildSummary, finish, mark_exact_duplicates
from inf30.errors import UsageError
from inf30.lock import lock_folder
from inf30.manifest import read_manifest
from inf30.reasons import DEDUPE_REASONS


def merge(shard_dirs: list[str | Path], out_dir: str | Path, dedupe: bool = True, progress: bool = True) -> BuildSummary:
    """Merge built shard folders into ``out_dir``; returns the merged summary."""
    shard_dirs = [Path(d) for d in shard_dirs]
    out_dir = Path(out_dir)
    if not shard_dirs:
        raise UsageError("give at least one shard folder to merge")
    for d in shard_dirs:
        if not (d / "manifest.parquet").is_file():
            raise FileNotFoundError(f"{d}: no manifest.parquet; is it an `inf30 build --shard K/N` output folder?")
        if d.resolve() == out_dir.resolve():
            raise UsageError(f"--out {out_dir} must differ from the shard folders")
    frames = []
    for d in shard_dirs:
        df = read_manifest(d)
        df["_shard_dir"] = str(d)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if df["item_key"].duplicated().any():
        dup = df.loc[df["item_key"].duplicated(), "item_key"].iloc[0]
        raise UsageError(f"item {dup!r} appears in two shard folders: were they built with different --shard N?")
    # near-duplicate decisions are re-made across shards (when dedupe runs), so undo the shards' ones
    if dedupe:
        redo = df["reason"].fillna("").str.startswith(DEDUPE_REASONS)
        df.loc[redo, "status"] = "kept"
        df.loc[redo, "reason"] = None
    with lock_folder(out_dir):
        kept = df[df["status"] == "kept"]
        for path, shard in tqdm(list(zip(kept["path"], kept["_shard_dir"], strict=True)), desc="merge",
                                unit="img", disable=not progress):
            link_or_copy_atomic(Path(shard) / path, out_dir / path)
        if dedupe:
            from inf30.dedupe import merge_caches

            merge_caches(shard_dirs, out_dir)
        df = mark_exact_duplicates(df.drop(columns=["_shard_dir"]))
        return finish(out_dir, df, dedupe, progress, 0, {"merged_from": [str(d) for d in shard_dirs]})
