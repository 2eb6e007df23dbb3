"""The one read-only entry point of a dataset for code outside ``inf30`` (training, fine-tuning):
:func:`open` a built folder, a published folder, a ``save_to_disk`` folder, a folder of ``datasets`` files
or a Hub dataset id, and get the kept images.

A built dataset gives file paths (``paths``, with their manifest ``ids`` and ``sources``); the others give
a ``datasets.Dataset`` (``table``) whose image column decodes lazily. Nothing is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inf30.manifest import MANIFEST_NAME, kept, read_manifest
from inf30.publish import is_published, published_files

__all__ = ["OpenedDataset", "is_built", "is_published", "open"]


@dataclass
class OpenedDataset:
    """What :func:`open` found: ``kind`` is ``built``, ``published``, ``saved`` (save_to_disk), ``files``
    (a folder of parquet/arrow/json/csv files) or ``hub``."""

    kind: str
    location: str
    paths: list[str] | None = None  #: built: kept images' files (absolute or relative to the cwd)
    ids: list[str] | None = None  #: built: their manifest ids (sha256 of the pixels)
    sources: list[str] | None = None  #: built: their source names
    table: Any = None  #: the others: a ``datasets.Dataset`` (one split)

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.table)


def is_built(path: str | os.PathLike) -> bool:
    """A folder written by ``inf30 build`` (it has ``manifest.parquet``)."""
    return (Path(path) / MANIFEST_NAME).is_file()


def _one_split(dsd: Any, location: str, split: str) -> Any:
    from datasets import DatasetDict

    if not isinstance(dsd, DatasetDict):
        return dsd
    if split in dsd:
        return dsd[split]
    if len(dsd) == 1:
        return next(iter(dsd.values()))
    raise ValueError(f"{location} has splits {sorted(dsd)} and none is {split!r}")


def open(path: str | os.PathLike, split: str = "train") -> OpenedDataset:  # noqa: A001 - the module's verb
    """Open a dataset read-only (see the module docstring). Raises ValueError or OSError (one line) when
    the path is none of these or cannot be read; a Hub id is loaded with ``datasets.load_dataset``."""
    src = str(path)
    p = Path(src)
    if p.is_dir() and is_built(p):
        rows = kept(read_manifest(p))
        rows = rows[rows["path"].notna()]
        return OpenedDataset("built", src, [str(p / r) for r in rows["path"]], rows["id"].astype(str).tolist(),
                             rows["source"].astype(str).tolist())
    from datasets import load_dataset, load_from_disk

    if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists()):
        return OpenedDataset("saved", src, table=_one_split(load_from_disk(src), src, split))
    if p.is_dir() and is_published(p):
        # through the parquet builder, whose cache key hashes the files themselves (load_dataset(FOLDER) keys
        # by the folder's name: two published folders both called "published" would share a stale cache)
        files = published_files(p, "default", split)
        return OpenedDataset("published", src, table=load_dataset("parquet", data_files={split: files}, split=split))
    kind = "files" if p.is_dir() else "hub"
    return OpenedDataset(kind, src, table=_one_split(load_dataset(src), src, split))
