"""`inf30 merge`: combine shard outputs of `inf30 build --shard K/N` into one dataset.

Rows are concatenated, kept images linked (or copied) into the merged folder, and cross-shard exact
duplicates dropped with the same rule as a single build (first in item_key order wins). This stage does not
run the near-duplicate stage: :func:`pipelines.build.merge_shards` (what ``inf30 merge`` calls) runs it
across shards afterwards, from the union of the shards' feature caches.
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


def check_shards(shard_dirs: list[str | Path], out_dir: str | Path) -> list[Path]:
    """The shard folders as paths; a one-line error (before anything is written) when there are none, one
    has no manifest, or one is ``out_dir``."""
    shard_dirs = [Path(d) for d in shard_dirs]
    out_dir = Path(out_dir)
    if not shard_dirs:
        raise UsageError("give at least one shard folder to merge")
    for d in shard_dirs:
        if not (d / "manifest.parquet").is_file():
            raise FileNotFoundError(f"{d}: no manifest.parquet; is it an `inf30 build --shard K/N` output folder?")
        if d.resolve() == out_dir.resolve():
            raise UsageError(f"--out {out_dir} must differ from the shard folders")
    return shard_dirs


def merge(shard_dirs: list[str | Path], out_dir: str | Path, redo_dedupe: bool = False,
          progress: bool = True) -> BuildSummary:
    """Merge built shard folders into ``out_dir``; returns the merged summary. The shards' near-duplicate
    decisions are kept, unless ``redo_dedupe`` (the dedupe stage will re-make them across shards): then
    those rows are kept again here."""
    shard_dirs = check_shards(shard_dirs, out_dir)
    out_dir = Path(out_dir)
    frames = []
    for d in shard_dirs:
        df = read_manifest(d)
        df["_shard_dir"] = str(d)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if df["item_key"].duplicated().any():
        dup = df.loc[df["item_key"].duplicated(), "item_key"].iloc[0]
        raise UsageError(f"item {dup!r} appears in two shard folders: were they built with different --shard N?")
    if redo_dedupe:
        redo = df["reason"].fillna("").str.startswith(DEDUPE_REASONS)
        df.loc[redo, "status"] = "kept"
        df.loc[redo, "reason"] = None
    with lock_folder(out_dir):
        kept = df[df["status"] == "kept"]
        for path, shard in tqdm(list(zip(kept["path"], kept["_shard_dir"], strict=True)), desc="merge",
                                unit="img", disable=not progress):
            link_or_copy_atomic(Path(shard) / path, out_dir / path)
        df = mark_exact_duplicates(df.drop(columns=["_shard_dir"]))
        return finish(out_dir, df, 0, {"merged_from": [str(d) for d in shard_dirs]})
