"""The manifest: one row per input item, kept or dropped, as a typed Parquet table.

See docs/architecture.md for the meaning of each column. Later stages (dedupe, entropy) add columns and
rewrite the file atomically with :func:`write_manifest`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inf30.atomic import atomic_path

MANIFEST_NAME = "manifest.parquet"

SCHEMA = pa.schema(
    [
        ("item_key", pa.string()),
        ("id", pa.string()),
        ("source", pa.string()),
        ("origin", pa.string()),
        ("origin_kind", pa.string()),
        ("timestamp_s", pa.float64()),
        ("source_sha256", pa.string()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("orig_mode", pa.string()),
        ("bit_depth", pa.int16()),
        ("pseudocolor", pa.bool_()),
        ("normalization", pa.string()),
        ("licence", pa.string()),
        ("entropy", pa.float64()),
        ("phash", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)
COLUMNS = SCHEMA.names
_COLUMN_SET = frozenset(COLUMNS)


def empty_row(**values) -> dict:
    """A row dict with every schema column present (None where not given)."""
    row = dict.fromkeys(COLUMNS)
    row["pseudocolor"] = False
    row["normalization"] = "none"
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown manifest columns: {sorted(unknown)}")
    row.update(values)
    return row


def utf8_text(text: str) -> str:
    """``text`` made storable as UTF-8: the bytes of a file name that is not UTF-8 (which Python keeps as
    surrogate escapes) become ``\\xNN`` escapes, so ``b"\\xffa.png"`` reads ``"\\xffa.png"``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts) -> an Arrow table with the manifest schema; extra columns are kept after it.

    Text that is not valid UTF-8 (file and member names in another encoding) is escaped with
    :func:`utf8_text` instead of failing the whole part."""
    try:
        if rows and all(row.keys() == _COLUMN_SET for row in rows):
            return pa.Table.from_pylist(rows, schema=SCHEMA)  # the common case, without a DataFrame
        return frame_to_table(pd.DataFrame(rows))
    except UnicodeEncodeError:
        return rows_to_table([{k: utf8_text(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows])


def frame_to_table(df: pd.DataFrame) -> pa.Table:
    """A DataFrame -> Arrow table: schema columns first with their types, then any extra columns."""
    df = df.copy()
    for name in COLUMNS:
        if name not in df.columns:
            df[name] = None
    fields = list(SCHEMA)
    extra = [c for c in df.columns if c not in COLUMNS]
    table = pa.Table.from_pandas(df[COLUMNS + extra], preserve_index=False)
    out = []
    for f in fields:
        out.append(table.column(f.name).cast(f.type))
    out += [table.column(c) for c in extra]
    return pa.table(out, names=COLUMNS + extra)


def write_table(path: str | os.PathLike, table: pa.Table) -> None:
    """Write a Parquet file atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_manifest(out_dir: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write ``out_dir/manifest.parquet`` atomically from a DataFrame; return its path."""
    path = Path(out_dir) / MANIFEST_NAME
    write_table(path, frame_to_table(df))
    return path


def read_manifest(dataset_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``dataset_dir/manifest.parquet`` (or a manifest file path) as a DataFrame."""
    path = Path(dataset_dir)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"no manifest at {path}: run `inf30 build ... --out {path.parent}` first")
    return pq.read_table(path).to_pandas()


def kept(df: pd.DataFrame) -> pd.DataFrame:
    """Only the kept rows."""
    return df[df["status"] == "kept"]
