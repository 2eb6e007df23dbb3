"""``hf`` sources: a Hugging Face Hub dataset (streamed with ``datasets``) or a local Parquet /
``save_to_disk`` dataset; the image column's original bytes are written to the source's image folder.

Options: ``split`` (default ``train``), ``config``, ``revision``, ``image_column`` (default: the first
Image feature, else ``image``/``img``/``jpg``/``png``), ``filter`` ({column: value or [values]}),
``licence_column``, ``max_rows``, ``token_env`` (name of the environment variable holding a Hub token;
the token itself is never printed or stored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from inf30.scrape.magic import sniff
from inf30.scrape.options import ScrapeOptions
from inf30.scrape.remote import LICENCE_COLUMNS, plain_value
from inf30.scrape.state import Journal, url_key
from inf30.scrape.store import final_path, new_row, write_file
from inf30.spec import SourceSpec

IMAGE_NAMES = ("image", "img", "jpg", "jpeg", "png", "picture", "frame")


def _open_dataset(spec: SourceSpec, token: str | None):
    """(iterable dataset, dataset id for origins, split)."""
    import datasets

    o = spec.options or {}
    split = str(o.get("split", "train"))
    path = str(spec.path).removeprefix("hf://")
    local = Path(path)
    if local.is_dir() and ((local / "state.json").exists() or (local / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"source {spec.name!r}: split {split!r} not in {list(ds)}")
            ds = ds[split]
        return ds, local.name, split
    if local.is_file() and local.suffix.lower() == ".parquet":
        ds = datasets.load_dataset("parquet", data_files={split: str(local)}, split=split, streaming=True)
        return ds, local.stem, split
    # a Hub id, or a local folder of data files: the same streaming call
    ds = datasets.load_dataset(
        path, name=o.get("config"), split=split, streaming=True, token=token, revision=o.get("revision")
    )
    return ds, (local.name if local.exists() else path), split


def _image_column(ds, spec: SourceSpec) -> str:
    import datasets

    wanted = (spec.options or {}).get("image_column")
    feats = getattr(ds, "features", None) or {}
    if wanted:
        if feats and wanted not in feats:
            raise ValueError(f"source {spec.name!r}: no column {wanted!r} (columns: {list(feats)})")
        return str(wanted)
    for name, feat in feats.items():
        if isinstance(feat, datasets.Image):
            return name
    for name in IMAGE_NAMES:
        if name in feats:
            return name
    raise ValueError(
        f"source {spec.name!r}: no image column found; set options.image_column (columns: {list(feats)})"
    )


def _matches(row: dict, flt: dict[str, Any]) -> bool:
    for col, want in flt.items():
        val = row.get(col)
        if isinstance(want, list):
            if val not in want:
                return False
        elif val != want:
            return False
    return True


def _image_bytes(value: Any, token: str | None, limit: int) -> tuple[bytes | None, str | None]:
    """(bytes, error) from an image cell: raw bytes, or {'bytes', 'path'} (remote path read bounded)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"]), None
        path = value.get("path")
        if isinstance(path, str) and path.startswith(("hf://", "https://")):
            from datasets import DownloadConfig
            from datasets.utils.file_utils import xopen

            with xopen(path, "rb", download_config=DownloadConfig(token=token)) as f:
                data = f.read(limit + 1)
            return data, None
        return None, "no_embedded_bytes"  # never read local paths named by a dataset
    return None, f"unsupported_cell:{type(value).__name__}"


def iter_rows(spec: SourceSpec) -> Iterator[tuple[int, dict]]:
    """(row index, row) of the dataset, image column as undecoded bytes (for tests and tools)."""
    token = _token(spec)
    ds, _, _ = _open_dataset(spec, token)
    yield from enumerate(_undecoded(ds, _image_column(ds, spec)))


def _undecoded(ds, col: str):
    import datasets

    feats = getattr(ds, "features", None) or {}
    if isinstance(feats.get(col), datasets.Image):
        ds = ds.cast_column(col, datasets.Image(decode=False))
    return ds


def _guarded(ds, rows: list[dict], spec: SourceSpec, token: str | None):
    """enumerate(ds), but a stream that fails part-way ends with an error row instead of an exception."""
    it = iter(ds)
    i = 0
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - network or data errors mid-stream end this source only
            rows.append(new_row(url=f"hf://{spec.path}", role="list", source=spec.name, status="error",
                                reason=f"stream_error:{type(exc).__name__}", detail=scrub(str(exc), token)))
            return
        yield i, rec
        i += 1


def scrub(text: str, secret: str | None) -> str:
    """``text`` shortened, with a credential removed if it appears."""
    if secret:
        text = text.replace(secret, "***")
    return text[:300]


def _token(spec: SourceSpec) -> str | None:
    env = (spec.options or {}).get("token_env")
    return os.environ.get(str(env)) if env else None


def scrape_hf(
    spec: SourceSpec, out_dir: Path, opts: ScrapeOptions, journal: Journal, progress: bool
) -> list[dict]:
    """Write the images of an ``hf`` source; one manifest row per dataset row taken."""
    o = spec.options or {}
    token = _token(spec)
    ds, ds_id, split = _open_dataset(spec, token)
    col = _image_column(ds, spec)
    ds = _undecoded(ds, col)
    flt = o.get("filter") or {}
    if not isinstance(flt, dict):
        raise ValueError(f"source {spec.name!r}: options.filter must be a mapping column -> value(s)")
    lic_col = o.get("licence_column") or None
    max_rows = o.get("max_rows")
    rows: list[dict] = []
    bar = tqdm(desc=f"hf {spec.name}", unit="row", disable=not progress, leave=False)
    try:
        for i, rec in _guarded(ds, rows, spec, token):
            if max_rows is not None and len(rows) >= int(max_rows):
                break
            bar.update(1)
            if flt and not _matches(rec, flt):
                continue
            origin = f"hf://{ds_id}/{split}/{i}"
            key = url_key(origin)
            done = journal.get(out_dir, spec.name, key)
            if done is not None:
                rows.append(new_row(**{**done, "cached": True}))
                continue
            lic = (
                rec.get(lic_col) if lic_col else next((rec.get(c) for c in LICENCE_COLUMNS if c in rec), None)
            )
            lic = lic if isinstance(lic, str) and lic else spec.licence
            meta = {
                k: plain_value(v) for k, v in rec.items() if k != col and not isinstance(v, (dict, list, bytes))
            }
            meta = {k: v for k, v in meta.items() if v is not None}
            row = new_row(
                url=origin, origin=origin, source=spec.name, licence=lic, key=key, meta=meta, attempts=1
            )
            try:
                data, err = _image_bytes(rec.get(col), token, opts.max_image_bytes)
            except Exception as exc:  # noqa: BLE001 - one bad row never stops the job
                data, err = None, f"read_error:{type(exc).__name__}"
            if data is None:
                rows.append({**row, "status": "error", "reason": err})
                continue
            magic = sniff(data[:4096])
            row.update(bytes=len(data), content_kind=magic.kind, category=magic.category)
            if len(data) > opts.max_image_bytes:
                rows.append({**row, "status": "error", "reason": "too_large", "bytes": None})
                continue
            if magic.category != "image":
                rows.append({**row, "status": "error", "reason": f"not_image:{magic.kind}"})
                continue
            import hashlib

            dest = final_path(out_dir, spec.name, key, magic)
            write_file(dest, data, opts.fsync)
            row.update(
                status="ok",
                sha256=hashlib.sha256(data).hexdigest(),
                path=dest.relative_to(out_dir).as_posix(),
            )
            journal.add(row)
            rows.append(row)
    finally:
        bar.close()
    return rows


__all__ = ["iter_rows", "scrape_hf"]
