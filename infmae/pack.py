"""``infmae pack SRC --out PACK``: decode every image of a pre-training source once, into memory-mappable shards.

Layout (read by :class:`infmae.data.PackedImages`)::

    PACK/
      plan.json             written first: format, options, the source's kind, location, size and fingerprint
      shards/00000.bin      single-channel uint8 pixels, images back to back (row-major, no header)
      shards/00000.parquet  the shard's index, one row per source item: offset, height, width, id, source,
                            name (and the reason when it did not decode: height 0); written after the .bin
      index.parquet         every packed image (shard, offset, height, width, id, source, name)
      pack.json             written last: the plan plus the shard list and counts (a pack is done when present)

Each image of SRC (anything ``infmae pretrain --data`` accepts, via :func:`infmae.data.open_source`) is
decoded to 8-bit gray and, when its shorter side exceeds ``short_side``, resized (Pillow bicubic,
antialiased) so that the shorter side is exactly ``short_side``; smaller images are stored as they are.
Shard ``s`` holds source items ``s*images_per_shard ...``, so the result is deterministic. Each shard's two
files are written atomically (.bin first, its .parquet last: the shard's completion marker), so a killed run
resumes at the first unfinished shard and ends with the same bytes. ``--shard K/N`` builds shards
``s % N == K`` only (N jobs in parallel, on one machine or a cluster sharing the folder); whichever job
finds every shard present writes the index and ``pack.json``; ``workers`` builds a run's shards in that many
processes. An unsharded run holds the folder lock; a
sharded one holds ``PACK/.work/shard-K-of-N``'s (shard files are written atomically with identical bytes,
so racing writers are harmless).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from inf30.atomic import atomic_path, write_text_atomic
from inf30.errors import UserError
from infmae.data import (
    INDEX_FILE,
    PACK_FILE,
    PACK_FORMAT,
    PLAN_FILE,
    SHARDS_DIR,
    DataError,
    ImageSource,
    open_source,
    source_fingerprint,
)
from infmae.options import PackOptions  # its home is torch-free (the CLI reads it); re-exported

VERSION = 1
OWN_NAMES = {PLAN_FILE, PACK_FILE, INDEX_FILE, SHARDS_DIR, ".work", ".lock"}
INDEX_SCHEMA = pa.schema([
    ("offset", pa.int64()), ("height", pa.int32()), ("width", pa.int32()), ("id", pa.string()),
    ("source", pa.string()), ("name", pa.string()), ("reason", pa.string()),
])


class PackError(UserError):
    """An output folder that is not this pack, a source that is already one, or shards that failed (one line)."""


@dataclass
class PackSummary:
    """What a :func:`pack` call found and did (``table()``: the CLI's two lines)."""

    out: str
    images: int  # packed so far (all shards when complete)
    skipped: int  # items that did not decode
    shards_done: int
    shards_total: int
    built_now: int  # images decoded by this call
    seconds: float
    bytes: int
    complete: bool

    def table(self) -> str:
        rate = self.built_now / self.seconds if self.seconds > 0 else 0.0
        state = "complete" if self.complete else (
            f"{self.shards_done}/{self.shards_total} shards; run the other --shard jobs (or no --shard) to finish")
        per = self.bytes / max(1, self.images)
        return (f"pack {self.out}: {self.images} images ({self.skipped} skipped), {self.bytes / 2**20:.1f} MiB "
                f"({per / 1024:.1f} KiB/image), {state}\n"
                f"this run: {self.built_now} images in {self.seconds:.1f} s ({rate:.1f} img/s)")


def resize_short_side(img: Image.Image, short_side: int) -> Image.Image:
    """Shorter side down to ``short_side`` (bicubic, antialiased); smaller images are returned unchanged."""
    w, h = img.size
    s = min(w, h)
    if s <= short_side:
        return img
    nw, nh = (short_side, max(1, round(h * short_side / w))) if w <= h else (max(1, round(w * short_side / h)), short_side)
    return img.resize((nw, nh), Image.Resampling.BICUBIC)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PackError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and not (out / PLAN_FILE).exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_NAMES)
        if foreign:
            raise PackError(f"{out} is not empty and is not a pack ({foreign[0]}, ...); choose a new or empty --out")


def _plan(source: ImageSource, opts: PackOptions) -> dict:
    n = len(source)
    return {
        "format": PACK_FORMAT, "version": VERSION, "short_side": opts.short_side,
        "images_per_shard": opts.images_per_shard,
        "source": {"kind": source.kind, "location": source.location, "items": n,
                   "fingerprint": source_fingerprint(source)},
        "shards_total": -(-n // opts.images_per_shard),
    }


def _write_plan(out: Path, plan: dict) -> None:
    path = out / PLAN_FILE
    if path.exists():
        old = json.loads(path.read_text())
        for key in ("format", "version", "short_side", "images_per_shard", "source"):
            if old.get(key) != plan[key]:
                raise PackError(
                    f"{out} holds a pack with another {key} ({old.get(key)!r}, now {plan[key]!r}); "
                    "re-run with the same source and options, or choose a new --out"
                )
        return
    write_text_atomic(path, json.dumps(plan, indent=2))


def _build_shard(source: ImageSource, out: Path, s: int, lo: int, hi: int, short_side: int, bar) -> None:
    """Decode items lo..hi-1 into shards/NNNNN.bin and its index (each written atomically, index last)."""
    rows: dict[str, list] = {k: [] for k in INDEX_SCHEMA.names}
    folder = out / SHARDS_DIR
    offset = 0
    with atomic_path(folder / f"{s:05d}.bin") as tmp, open(tmp, "wb") as f:
        for i in range(lo, hi):
            try:
                img, item_id, src = source.record(i)
                arr = np.ascontiguousarray(np.asarray(resize_short_side(img, short_side), dtype=np.uint8))
                reason = None
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken image is a row with its reason, never a stop
                arr, item_id, src = np.zeros((0, 0), np.uint8), "", ""
                reason = f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"
            f.write(arr.tobytes())
            for k, v in zip(INDEX_SCHEMA.names, (offset, arr.shape[0], arr.shape[1], item_id, src,
                                                 source.name(i), reason), strict=True):
                rows[k].append(v)
            offset += arr.size
            bar.update(1)
    delay = float(os.environ.get("INFMAE_TEST_PACK_DELAY", "0") or 0)
    if delay:  # tests widen the window in which a kill lands mid-shard; never set in normal use
        time.sleep(delay)
    with atomic_path(folder / f"{s:05d}.parquet") as tmp:
        pq.write_table(pa.table(rows, schema=INDEX_SCHEMA), tmp)


class _NoBar:
    def update(self, n: int) -> None:
        pass


@functools.lru_cache(maxsize=2)
def _worker_source(src: str) -> ImageSource:
    """The source as a worker process opens it, once per process (the first shard it builds)."""
    import torch

    torch.set_num_threads(1)
    return open_source(src, check=1, packs=False)


def _worker_shard(job: tuple[str, Path, int, int, int, int]) -> int:
    """Worker: build shard ``s`` (items lo..hi-1) of ``src`` into ``out``; returns how many items."""
    src, out, s, lo, hi, short_side = job
    _build_shard(_worker_source(src), out, s, lo, hi, short_side, _NoBar())
    return hi - lo


def _build_parallel(src: str, out: Path, jobs: list[tuple[int, int, int]], short_side: int, workers: int,
                    bar) -> None:
    """Build shards ``(s, lo, hi)`` in ``workers`` processes (inf30.distribute: each opens the source itself,
    once). A shard whose worker died on every attempt is a :class:`PackError` after the others are done."""
    from inf30.distribute import Distributor

    dist = Distributor(workers=workers, preload=("infmae.pack",), fatal=(DataError, OSError))
    units = [(src, out, s, lo, hi, short_side) for s, lo, hi in jobs]
    failed = [o for o in dist(_worker_shard, units, weight=lambda u: u[4] - u[3], bar=bar) if not o.ok]
    if failed:
        raise PackError(f"{len(failed)} shards failed (shard {units[failed[0].index][2]}: {failed[0].error}); "
                        "re-run the same command to resume")


def _finish(out: Path, plan: dict) -> tuple[int, int, int]:
    """Write index.parquet and pack.json (both deterministic) once every shard is done."""
    tables, shards, total_bytes, skipped = [], [], 0, 0
    for s in range(plan["shards_total"]):
        t = pq.read_table(out / SHARDS_DIR / f"{s:05d}.parquet")
        ok = pc.greater(t["height"], 0)
        skipped += len(t) - (pc.sum(ok).as_py() or 0)
        t = t.filter(ok).drop_columns(["reason"])
        nbytes = (out / SHARDS_DIR / f"{s:05d}.bin").stat().st_size
        tables.append(t.add_column(0, "shard", pa.array(np.full(len(t), s, np.int32))))
        shards.append({"name": f"{s:05d}", "images": len(t), "bytes": nbytes})
        total_bytes += nbytes
    index = pa.concat_tables(tables)
    n = len(index)
    with atomic_path(out / INDEX_FILE) as tmp:
        pq.write_table(index, tmp)
    meta = {**plan, "images": n, "skipped": skipped, "bytes": total_bytes, "shards": shards}
    write_text_atomic(out / PACK_FILE, json.dumps(meta, indent=2))
    return n, skipped, total_bytes


def pack(src: str | os.PathLike, out: str | os.PathLike, opts: PackOptions | None = None, **kw) -> PackSummary:
    """Pack SRC into OUT (see the module docstring); ``kw`` overrides :class:`PackOptions` fields
    (``pack(src, out, short_side=256, shard="0/4")``). Resumable: re-run the same call."""
    from tqdm.auto import tqdm

    from inf30.lock import lock_folder

    opts = opts or PackOptions()
    for k, v in kw.items():
        if not hasattr(opts, k):
            raise TypeError(f"unknown pack option {k!r}")
        setattr(opts, k, v)
    shard = opts.validate()
    out = Path(out)
    _check_out(out)
    source = open_source(src, packs=False)
    if getattr(source, "packed", None) is not None:
        raise PackError(f"{src} is already a pack")
    plan = _plan(source, opts)
    lock_dir = out if shard is None else out / ".work" / f"shard-{shard[0]}-of-{shard[1]}"
    t0 = time.perf_counter()
    with lock_folder(lock_dir, tool="infmae pack"):
        _write_plan(out, plan)
        (out / SHARDS_DIR).mkdir(exist_ok=True)
        if shard is None:  # temporary files of a killed run (ours: only this folder's writers make them)
            for stale in (out / SHARDS_DIR).glob(".tmp-*"):
                stale.unlink(missing_ok=True)
        per, n, total = opts.images_per_shard, plan["source"]["items"], plan["shards_total"]
        mine = [s for s in range(total) if shard is None or s % shard[1] == shard[0]]
        todo = [s for s in mine if not (out / SHARDS_DIR / f"{s:05d}.parquet").exists()]
        count = sum(min(n, (s + 1) * per) - s * per for s in mine)
        left = sum(min(n, (s + 1) * per) - s * per for s in todo)
        with tqdm(total=count, initial=count - left, desc="pack", unit="img", dynamic_ncols=True,
                  disable=not opts.progress) as bar:
            jobs = [(s, s * per, min(n, (s + 1) * per)) for s in todo]
            workers = min(opts.workers or os.cpu_count() or 1, len(jobs))
            if workers > 1:
                _build_parallel(str(src), out, jobs, opts.short_side, workers, bar)
            else:
                for s, lo, hi in jobs:
                    _build_shard(source, out, s, lo, hi, opts.short_side, bar)
        done = sum((out / SHARDS_DIR / f"{s:05d}.parquet").exists() for s in range(total))
        images = skipped = nbytes = 0
        if done == total:
            if (out / PACK_FILE).exists():
                meta = json.loads((out / PACK_FILE).read_text())
                images, skipped, nbytes = meta["images"], meta["skipped"], meta["bytes"]
            else:
                images, skipped, nbytes = _finish(out, plan)
        else:
            for s in range(total):
                p = out / SHARDS_DIR / f"{s:05d}.parquet"
                if p.exists():
                    h = pq.read_table(p, columns=["height"])["height"].to_numpy()
                    images += int((h > 0).sum())
                    skipped += int((h == 0).sum())
                    nbytes += (out / SHARDS_DIR / f"{s:05d}.bin").stat().st_size
    return PackSummary(str(out), images, skipped, done, total, left, time.perf_counter() - t0, nbytes,
                       done == total)
