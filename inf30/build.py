"""`inf30 build`: sources -> normalized, content-addressed images + a manifest of every input item.

Architecture (as img2dataset): a reader plans the work (enumerate sources, extract archives safely,
split items into parts), a per-part worker decodes, normalizes, hashes and stores images, and a writer
commits each part's rows atomically to ``DIR/.work/parts``. The part is the unit of work, of resumption
and of distribution: a killed build re-run with the same command skips committed parts and ends with the
same manifest and files as an uninterrupted one. The parts run through :class:`inf30.distribute.Distributor`
(local processes, or a Ray cluster with ``distributor="ray"``); the driver alone commits them, so a killed
driver resumes whichever backend ran the parts. ``--shard K/N`` builds a deterministic 1/N of the inputs;
:mod:`inf30.merge` combines shard outputs.

This stage does not start others: the near-duplicate stage (:mod:`inf30.dedupe`) and the download of
remote sources are run around it by :mod:`pipelines.build` (what ``inf30 build`` calls).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from inf30 import archive as archive_mod
from inf30.atomic import write_small_atomic, write_text_atomic
from inf30.decode import (
    DEFAULT_MAX_PIXELS,
    Decoded,
    DecodeError,
    decode_to_gray,
    encode_png,
    frame_key,
    later_frames,
    pixel_id,
    rgb_to_gray,
)
from inf30.distribute import Distributor, check_distributor
from inf30.entropy import entropy8
from inf30.errors import JobFailed, OutputError, UsageError, check
from inf30.files import is_image_name
from inf30.hashing import HASHES, compute_hashes
from inf30.lock import lock_folder
from inf30.manifest import SCHEMA, empty_row, read_manifest, rows_to_table, write_manifest, write_table
from inf30.options import option
from inf30.reasons import EXACT_DUPLICATE, reason_kind
from inf30.sources import Input, SourceSpec, check_agc, check_video_every, enumerate_inputs
from inf30.spec import is_remote
from inf30.video import VideoError, is_video_name, sample_frames

__all__ = ["BuildOptions", "BuildSummary", "build", "finish", "mark_exact_duplicates",
           "parse_shard", "resummarize", "summarize"]


@dataclass
class BuildOptions:
    """Build settings. Per-source ``options`` in the config override ``video_every``,
    ``drop_pseudocolor`` and ``agc_percentiles`` for that source."""

    workers: int = option(0, "Decode processes (0 = all cores).")
    video_every: float = option(1.0, "Seconds between sampled video frames.")
    min_size: int = option(20, "Drop images whose width AND height are below this (px; the paper's 20).")
    min_side: int = option(0, "Also drop images whose shorter side is below this (px; 0 = off).")
    agc_percentiles: tuple[float, float] = option((1.0, 99.0), "Percentiles LOW,HIGH of the gain control of 16-bit/float images.")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "Decompression-bomb limit in pixels.")
    shard: str | None = option(None, "Build only shard K of N (K from 0 to N-1), as K/N.")
    drop_pseudocolor: bool = option(False, "Drop pseudo-coloured / visible images.")
    dedupe: bool = option(True, "Run near-duplicate removal after the build (pipelines.build; build() alone never does).")
    hashes: tuple[str, ...] = option(("phash",), "Perceptual hashes to store, comma-separated (phash,dhash,whash,ahash).")
    progress: bool = option(True, "Show a progress bar.")
    part_size: int = option(256, "Images per unit of work (and of resumption); a video is a part of its own.")
    max_archive_bytes: int = option(64 << 30, "Extraction limit per archive, bytes.")
    max_archive_files: int = option(1_000_000, "Extraction limit per archive, members.")
    max_archive_depth: int = option(archive_mod.DEFAULT_MAX_DEPTH, "Archives inside archives are extracted up to this many levels (outer one included).")
    distributor: str = option("local", "Where the parts run: local (processes) or ray (a Ray cluster).")
    ray_address: str | None = option(None, "Ray cluster to join (HEAD:6379, or auto on a cluster node); default: a local Ray for the run. Needs --distributor ray.")

    def validate(self) -> None:
        """Raise :class:`~inf30.errors.UsageError` (one line, exit 2) for any out-of-range option (and
        normalize ``agc_percentiles``, ``video_every`` to floats); called by :func:`build` before any work
        and by the CLI before anything is created."""
        check(isinstance(self.workers, int) and self.workers >= 0, f"--workers must be 0 (all cores) or more, got {self.workers}")
        self.video_every = check_video_every(self.video_every)
        check(self.min_size >= 0, f"--min-size must be 0 or more pixels, got {self.min_size}")
        check(self.min_side >= 0, f"--min-side must be 0 (off) or more pixels, got {self.min_side}")
        self.agc_percentiles = check_agc(self.agc_percentiles)
        for name in ("min_size", "min_side", "max_pixels", "part_size", "max_archive_bytes", "max_archive_files",
                     "max_archive_depth"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool), f"{name} must be a whole number, got {value!r}")
        check(self.max_pixels >= 1, f"--max-pixels must be at least 1, got {self.max_pixels}")
        parse_shard(self.shard)
        check(len(self.hashes) > 0, "--hashes needs at least one of " + ", ".join(HASHES))
        unknown = [h for h in self.hashes if h not in HASHES]
        check(not unknown, f"--hashes: unknown hash {', '.join(map(repr, unknown))}; choose from {', '.join(HASHES)}")
        check(self.part_size >= 1, f"--part-size must be at least 1 image, got {self.part_size}")
        check(self.max_archive_bytes >= 1, f"--max-archive-bytes must be at least 1, got {self.max_archive_bytes}")
        check(self.max_archive_files >= 1, f"--max-archive-files must be at least 1, got {self.max_archive_files}")
        check(self.max_archive_depth >= 1, f"--max-archive-depth must be at least 1 (the outer archive), got {self.max_archive_depth}")
        check_distributor(self.distributor, self.ray_address)


@dataclass
class BuildSummary:
    """Counts of a build: per status/reason, overall and per source."""

    out_dir: str
    items: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_files: int = 0
    dedupe: str | None = None
    pruned_images: int = 0  # stored images no manifest row pointed to any more (removed)

    def table(self) -> str:
        lines = [f"Inf30 build: {self.out_dir}", f"  items   {self.items:>8}", f"  kept    {self.kept:>8}"]
        for reason, n in sorted(self.dropped.items(), key=lambda x: -x[1]):
            lines.append(f"  dropped {n:>8}  {reason}")
        if self.skipped_files:
            lines.append(f"  ({self.skipped_files} non-image files ignored)")
        if self.pruned_images:
            lines.append(f"  ({self.pruned_images} stored images no row points to any more were removed)")
        if len(self.per_source) > 1:
            lines.append(
                "  per source: "
                + ", ".join(
                    f"{s} {c.get('kept', 0)}/{sum(c.values())}" for s, c in sorted(self.per_source.items())
                )
            )
        if self.dedupe:
            lines.append(self.dedupe)
        return "\n".join(lines)


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """ "K/N" -> (K, N) with 0 <= K < N."""
    if shard is None:
        return None
    try:
        k, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like K/N (for example 0/8), got {shard!r}") from None
    check(n >= 1 and 0 <= k < n, f"--shard {shard}: needs N >= 1 and K in 0..N-1")
    return k, n


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    k, n = shard
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") % n == k


# ------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class WorkItem:
    key: str
    path: str
    kind: str  # image | video
    source: str
    origin: str
    origin_kind: str  # file | archive_member | url
    licence: str | None
    video_every: float
    drop_pseudocolor: bool
    agc: tuple[float, float]


@dataclass
class Plan:
    parts: list[tuple[str, list[WorkItem]]]
    pre_rows: list[dict]  # rows decided while planning (unsafe archive members, bombs, unreadable archives)
    skipped_files: int


def _source_settings(spec: SourceSpec, opts: BuildOptions) -> tuple[float, bool, tuple[float, float]]:
    o = spec.options
    every = float(o.get("video_every", opts.video_every))
    drop = bool(o.get("drop_pseudocolor", opts.drop_pseudocolor))
    agc_p = tuple(float(x) for x in o.get("agc_percentiles", opts.agc_percentiles))
    return every, drop, agc_p  # type: ignore[return-value]


def _extract_archive(inp: Input, work: Path, opts: BuildOptions) -> archive_mod.Extracted:
    """Extract once per archive version; a ``.done`` record makes it resumable.

    The cache is keyed by the archive's item key *and* its (size, mtime_ns, inode): an archive that was
    still being copied, or that was replaced by another, is extracted again, and the extraction of its
    earlier version (this tool's own folder under ``.work/extract``) is removed, so its members' rows go."""
    base = hashlib.sha1(inp.key.encode()).hexdigest()[:20]
    try:
        st = os.stat(inp.path)
        stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    except OSError:
        stamp = "missing"
    dest = work / "extract" / f"{base}-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}"
    done = dest.with_name(dest.name + ".done.json")
    for old in (work / "extract").glob(f"{base}*"):  # earlier versions of this archive (and the old naming)
        stem = old.name.split(".", 1)[0]
        if stem != dest.name and (stem == base or stem.startswith(f"{base}-")):
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    if done.exists():
        rec = json.loads(done.read_text())
        return archive_mod.Extracted(rec["members"], rec["rejected"], rec["error"])
    res = archive_mod.extract(
        inp.path,
        dest,
        max_bytes=opts.max_archive_bytes,
        max_files=opts.max_archive_files,
        max_depth=opts.max_archive_depth,
        progress=opts.progress,
    )
    write_text_atomic(done, json.dumps(asdict(res)))
    return res


def _file_stamp(path: str) -> str:
    try:
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "missing"


def _dropped_member(inp: Input, member: str, licence: str | None, reason: str) -> dict:
    """The manifest row of an archive member refused while planning."""
    return empty_row(item_key=f"{inp.key}!{member}", source=inp.source, origin=f"{inp.origin}!{member}",
                     origin_kind="archive_member", licence=licence, status="dropped", reason=reason)


def make_plan(specs: list[SourceSpec], out_dir: Path, opts: BuildOptions) -> Plan:
    shard = parse_shard(opts.shard)
    work = out_dir / ".work"
    singles: list[WorkItem] = []
    pre_rows: list[dict] = []
    skipped = 0
    for spec in specs:
        every, drop, agc_p = _source_settings(spec, opts)
        inputs, skip = enumerate_inputs(spec, out_dir)
        skipped += skip
        for inp in inputs:
            if not in_shard(inp.key, shard):
                continue
            # per-file licences (a scraped URL list's licence column) override the source's
            licence = (spec.options.get("licences") or {}).get(inp.key.split(":", 1)[1], spec.licence)
            common = dict(source=inp.source, licence=licence, video_every=every, drop_pseudocolor=drop, agc=agc_p)
            if inp.kind != "archive":
                singles.append(
                    WorkItem(
                        inp.key, inp.path, inp.kind, origin=inp.origin, origin_kind=inp.origin_kind, **common
                    )
                )
                continue
            res = _extract_archive(inp, work, opts)
            if res.error:
                pre_rows.append(empty_row(item_key=inp.key, source=inp.source, origin=inp.origin,
                                          origin_kind=inp.origin_kind, licence=spec.licence, status="dropped",
                                          reason=res.error))
            pre_rows.extend(_dropped_member(inp, m, spec.licence, why) for m, why in res.rejected.items())
            for member, path in sorted(res.members.items()):
                low = member.lower()
                if is_video_name(low):
                    kind = "video"
                elif is_image_name(low):
                    kind = "image"
                else:
                    if archive_mod.is_archive_name(low):  # only in an extraction cached by an older version
                        pre_rows.append(_dropped_member(inp, member, spec.licence, "unsupported | nested archive"))
                    else:
                        skipped += 1
                    continue
                singles.append(
                    WorkItem(
                        f"{inp.key}!{member}",
                        path,
                        kind,
                        origin=f"{inp.origin}!{member}",
                        origin_kind="archive_member",
                        **common,
                    )
                )
    singles.sort(key=lambda w: w.key)
    fingerprint = json.dumps(
        [opts.min_size, opts.min_side, opts.max_pixels, list(opts.hashes)], sort_keys=True
    )
    parts: list[tuple[str, list[WorkItem]]] = []
    images = [w for w in singles if w.kind == "image"]
    videos = [w for w in singles if w.kind == "video"]
    groups = [images[i : i + opts.part_size] for i in range(0, len(images), opts.part_size)] + [
        [v] for v in videos
    ]
    for group in groups:
        h = hashlib.sha1(fingerprint.encode())
        for w in group:
            # repr of str/float/bool/None values is unambiguous and stable; a changed input changes the name
            h.update(
                repr((w.key, w.licence, w.video_every, w.drop_pseudocolor, w.agc, w.origin, _file_stamp(w.path)))
                .encode()
            )
        parts.append((h.hexdigest()[:24], group))
    return Plan(parts, pre_rows, skipped)


# --------------------------------------------------------------------------------------------- worker
def _store(out_dir: Path, image_id: str, data: bytes, ext: str) -> str:
    rel = f"images/{image_id[:2]}/{image_id}{ext}"
    target = os.path.join(out_dir, rel)
    if not os.path.exists(target):
        try:
            write_small_atomic(target, data)
        except OSError as exc:
            raise OutputError.writing(out_dir, exc) from None
    return rel


def _finish_row(
    row: dict,
    gray: np.ndarray,
    item: WorkItem,
    opts: BuildOptions,
    out_dir: Path,
    original: tuple[bytes, str] | None,
) -> dict:
    """Size filter, pseudo-colour filter, id, entropy, hashes, storage."""
    h, w = gray.shape
    row.update(width=w, height=h)
    row["id"] = pixel_id(gray)
    if w < opts.min_size and h < opts.min_size:
        return {
            **row,
            "status": "dropped",
            "reason": f"too_small | {w}x{h} < {opts.min_size} px on both sides",
        }
    if opts.min_side and min(w, h) < opts.min_side:
        return {
            **row,
            "status": "dropped",
            "reason": f"too_small | shorter side {min(w, h)} < {opts.min_side} px",
        }
    if row["pseudocolor"] and item.drop_pseudocolor:
        return {**row, "status": "dropped", "reason": "pseudocolor | differing colour channels"}
    row["entropy"] = entropy8(gray)
    for kind, value in compute_hashes(gray, opts.hashes).items():
        row[kind] = value
    data, ext = original if original is not None else (encode_png(gray), ".png")
    row["path"] = _store(out_dir, row["id"], data, ext)
    row["status"] = "kept"
    return row


def _base_row(item: WorkItem) -> dict:
    return empty_row(
        item_key=item.key,
        source=item.source,
        origin=item.origin,
        origin_kind=item.origin_kind,
        licence=item.licence,
    )


def _decoded_row(row: dict, dec: Decoded) -> dict:
    return {
        **row,
        "orig_mode": dec.orig_mode,
        "bit_depth": dec.bit_depth,
        "pseudocolor": dec.pseudocolor,
        "normalization": dec.normalization,
    }


def _error_row(row: dict, exc: DecodeError) -> dict:
    return {**row, "status": "dropped", "reason": f"{exc.reason} | {exc.detail}" if exc.detail else exc.reason}


def process_image(item: WorkItem, opts: BuildOptions, out_dir: Path) -> list[dict]:
    """The rows of one image file: one row, or one per frame of a multi-frame file (keys ``KEY#p000001``)."""
    row = _base_row(item)
    try:
        with open(item.path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return [{**row, "status": "dropped", "reason": f"corrupt | unreadable file: {exc.strerror or exc}"}]
    row["source_sha256"] = hashlib.sha256(data).hexdigest()
    try:
        dec = decode_to_gray(data, max_pixels=opts.max_pixels, agc_percentiles=item.agc)
    except DecodeError as exc:
        return [_error_row(row, exc)]
    except MemoryError:
        return [{**row, "status": "dropped", "reason": "decompression_bomb | out of memory while decoding"}]
    ext = dec.store_ext
    if not dec.multi_frame:
        return [_finish_row(_decoded_row(row, dec), dec.gray, item, opts, out_dir, (data, ext) if ext else None)]

    def frame_row(k: int) -> dict:
        return {**row, "item_key": frame_key(item.key, k), "origin": f"{item.origin}#page{k}"}

    rows = [_finish_row(_decoded_row(frame_row(0), dec), dec.gray, item, opts, out_dir, None)]
    for k, res in later_frames(data, max_pixels=opts.max_pixels, agc_percentiles=item.agc):
        if isinstance(res, DecodeError):
            rows.append(_error_row(frame_row(k), res))
        else:
            rows.append(_finish_row(_decoded_row(frame_row(k), res), res.gray, item, opts, out_dir, None))
    return rows


def process_video(item: WorkItem, opts: BuildOptions, out_dir: Path) -> list[dict]:
    rows = []
    try:
        with open(item.path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        return [
            {**_base_row(item), "status": "dropped", "reason": f"video_unreadable | {exc.strerror or exc}"}
        ]
    try:
        for t, frame in sample_frames(item.path, item.video_every):
            row = _base_row(item)
            row.update(
                item_key=f"{item.key}@{t:012.3f}",
                origin=f"{item.origin}@{t:.3f}s",
                timestamp_s=t,
                origin_kind="video_frame",
                source_sha256=digest,
                bit_depth=8,
            )
            if frame.ndim == 2:
                gray, pseudo, label = frame, False, "none"
                row["orig_mode"] = "L"
            else:
                gray, pseudo, label = rgb_to_gray(np.ascontiguousarray(frame[..., ::-1]))
                row["orig_mode"] = "RGB"
            row.update(pseudocolor=pseudo, normalization=f"video_frame+{label}")
            rows.append(_finish_row(row, np.ascontiguousarray(gray), item, opts, out_dir, None))
    except VideoError as exc:
        if not rows:
            return [
                {
                    **_base_row(item),
                    "source_sha256": digest,
                    "status": "dropped",
                    "reason": f"video_unreadable | {exc}",
                }
            ]
    except OutputError:
        raise
    except Exception as exc:  # a broken stream mid-way keeps the frames read so far, and says so
        rows.append(
            {
                **_base_row(item),
                "item_key": f"{item.key}@error",
                "source_sha256": digest,
                "status": "dropped",
                "reason": f"video_unreadable | stopped after {len(rows)} frames: {exc}",
            }
        )
    return rows


def process_part(args: tuple[str, list[WorkItem], BuildOptions, str]) -> tuple[str, list[dict]]:
    """Worker: decode/normalize/hash/store every item of one part; returns its rows."""
    name, items, opts, out = args
    out_dir = Path(out)
    rows: list[dict] = []
    for item in items:
        try:
            if item.kind == "video":
                rows.extend(process_video(item, opts, out_dir))
            else:
                rows.extend(process_image(item, opts, out_dir))
        except OutputError:  # the output cannot be written: stop, do not record inputs as broken
            raise
        except Exception as exc:  # never let one odd file kill a long build
            rows.append(
                {
                    **_base_row(item),
                    "status": "dropped",
                    "reason": f"corrupt | unexpected {type(exc).__name__}: {exc}",
                }
            )
    return name, rows


def worker_failed_rows(items: list[WorkItem], error: str | None) -> list[dict]:
    """The rows of items whose worker failed on every attempt (``error``: the distributor's one line)."""
    return [{**_base_row(item), "status": "dropped", "reason": f"corrupt | the worker building it failed: {error}"}
            for item in items]


# --------------------------------------------------------------------------------------------- writer
_TMP_IMAGE = re.compile(r"\.tmp-[0-9a-f]{64}\.[A-Za-z0-9]+\.[A-Za-z0-9_]+")  # temporaries of stored images
_TMP_TOP = re.compile(r"\.tmp-(manifest\.parquet|build\.json)\..+")  # atomic_path's, for DIR's own files


def _clean_temporaries(out_dir: Path) -> None:
    """Remove half-written files a killed run left behind (never taken as done): only names this tool's
    atomic writes use, so a user's file in a source folder that is also the output is never touched."""
    doomed = list((out_dir / ".work" / "parts").glob(".tmp-*"))
    doomed += [p for p in out_dir.glob("images/??/.tmp-*") if _TMP_IMAGE.fullmatch(p.name)]
    doomed += [p for p in out_dir.glob(".tmp-*") if _TMP_TOP.fullmatch(p.name)]
    for tmp in doomed:
        with contextlib.suppress(OSError):
            tmp.unlink()


STALE_DEDUPE_OUTPUTS = ("dedupe/groups.parquet", "dedupe/groups.png")  # rewritten by each dedupe run
_STORED = re.compile(r"[0-9a-f]{64}\.[A-Za-z0-9]+")


def remove_stale_dedupe_outputs(out_dir: Path) -> None:
    """A new manifest makes an earlier dedupe run's groups stale: remove them (the dedupe stage, when it
    runs, writes them again; its feature cache stays, it is keyed by image)."""
    for rel in STALE_DEDUPE_OUTPUTS:
        (out_dir / rel).unlink(missing_ok=True)


def prune_unreferenced_images(out_dir: Path, df: pd.DataFrame) -> int:
    """Remove stored images (``images/<id[:2]>/<id>.<ext>``, this tool's own files) that no manifest row
    points to, e.g. after a source file changed or was removed; returns how many were removed. Files
    that do not look like a stored image are never touched."""
    images = out_dir / "images"
    if not images.is_dir():
        return 0
    referenced = {str(p) for p in df["path"].dropna()} if "path" in df else set()
    removed = 0
    for sub in os.scandir(images):
        if not (sub.is_dir(follow_symlinks=False) and len(sub.name) == 2):
            continue
        for e in os.scandir(sub.path):
            if (e.is_file(follow_symlinks=False) and _STORED.fullmatch(e.name) and e.name.startswith(sub.name)
                    and f"images/{sub.name}/{e.name}" not in referenced):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
                    removed += 1
        with contextlib.suppress(OSError):
            os.rmdir(sub.path)  # only when empty
    return removed


def write_build_json(out_dir: Path, record: dict) -> None:
    write_text_atomic(out_dir / "build.json", json.dumps(record, indent=2, default=str))


def finish(out_dir: Path, df: pd.DataFrame, skipped: int, record: dict) -> BuildSummary:
    """Write the manifest, drop an earlier dedupe run's stale groups, remove stored images nothing points
    to, and write ``build.json`` whose summary is the manifest's. Caller holds the lock."""
    write_manifest(out_dir, df)
    remove_stale_dedupe_outputs(out_dir)
    summary = summarize(df, out_dir, skipped)
    summary.pruned_images = prune_unreferenced_images(out_dir, df)
    write_build_json(out_dir, {**record, "summary": asdict(summary)})  # agrees with the manifest written above
    return summary


def resummarize(out_dir: Path, before: BuildSummary, dedupe_text: str | None) -> BuildSummary:
    """After a later stage rewrote ``out_dir``'s manifest (the dedupe stage): the summary of the manifest
    as it is now, with ``dedupe_text``, also written into ``build.json``. Caller holds the lock."""
    summary = summarize(read_manifest(out_dir), out_dir, before.skipped_files)
    summary.pruned_images, summary.dedupe = before.pruned_images, dedupe_text
    path = out_dir / "build.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    write_build_json(out_dir, {**record, "summary": asdict(summary)})
    return summary


def mark_exact_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Among kept rows (in item_key order) keep the first of each id; the others become
    ``exact_duplicate:<id>``. Returns the frame sorted by item_key."""
    df = df.sort_values("item_key", kind="stable").reset_index(drop=True)
    kept = df["status"] == "kept"
    dup = kept & df["id"].duplicated(keep="first") & df["id"].notna()
    df.loc[dup, "status"] = "dropped"
    df.loc[dup, "reason"] = f"{EXACT_DUPLICATE}:" + df.loc[dup, "id"]
    df.loc[dup, "path"] = None
    return df


def summarize(df: pd.DataFrame, out_dir: Path, skipped: int = 0) -> BuildSummary:
    dropped = Counter(reason_kind(r) or "unknown" for r in df.loc[df["status"] != "kept", "reason"])
    per_source: dict[str, dict[str, int]] = {}
    for (src, status), n in df.groupby(["source", "status"]).size().items():
        per_source.setdefault(str(src), {})[str(status)] = int(n)
    return BuildSummary(
        str(out_dir), len(df), int((df["status"] == "kept").sum()), dict(dropped), per_source, skipped
    )


def build(specs: list[SourceSpec], out_dir: str | Path, opts: BuildOptions | None = None) -> BuildSummary:
    """Build (or resume building) a dataset from local sources into ``out_dir``: the manifest, the stored
    images and ``build.json``, without near-duplicate removal (``opts.dedupe`` is the pipeline's:
    :func:`pipelines.build.build_sources` runs the dedupe stage after this). A remote source is refused:
    :func:`pipelines.build.fetch_remote` scrapes it first. A part whose worker dies on every attempt is redone
    item by item; an item that still kills its worker is a dropped row that says so."""
    opts = opts or BuildOptions()
    opts.validate()
    out_dir = Path(out_dir)
    if not specs:
        raise UsageError("no sources given")
    remote = [s.name for s in specs if is_remote(s)]
    check(not remote, f"source {', '.join(map(repr, remote))} is remote: bring it to disk first "
                      "(`inf30 build` does, through pipelines.build.fetch_remote)")
    with lock_folder(out_dir):
        _clean_temporaries(out_dir)
        plan = make_plan(specs, out_dir, opts)
        parts_dir = out_dir / ".work" / "parts"
        parts_dir.mkdir(parents=True, exist_ok=True)
        todo = [(n, items) for n, items in plan.parts if not (parts_dir / f"{n}.parquet").exists()]
        total = sum(len(items) for _, items in plan.parts)
        done_items = total - sum(len(items) for _, items in todo)
        counts = Counter()
        bar = tqdm(
            total=total,
            initial=done_items,
            unit="item",
            desc="build",
            disable=not opts.progress,
            dynamic_ncols=True,
        )
        jobs = [(n, items, opts, str(out_dir)) for n, items in todo]

        built: dict[str, pa.Table] = {}  # parts committed by this run, kept to skip reading them back
        seen: set[int] = set()  # 64-bit id prefixes of this run's kept rows, to count exact duplicates live

        def commit(name: str, rows: list[dict]) -> None:
            table = rows_to_table(rows) if rows else SCHEMA.empty_table()
            try:
                write_table(parts_dir / f"{name}.parquet", table)
            except OSError as exc:
                raise OutputError.writing(out_dir, exc) from None
            built[name] = table
            counts.update(r["status"] for r in rows)
            for r in rows:
                if r["status"] == "kept":
                    key = int(r["id"][:16], 16)
                    counts["duplicate"] += key in seen
                    seen.add(key)
            # which copy of an exact duplicate is kept is decided at the end; the counts are right already
            bar.set_postfix(kept=counts["kept"] - counts["duplicate"], dropped=counts["dropped"] + counts["duplicate"])

        dist = Distributor(backend=opts.distributor, workers=opts.workers, progress=opts.progress,
                           ray_address=opts.ray_address, preload=("inf30.build",), fatal=(OutputError,))
        try:
            # workers ignore SIGINT; on Ctrl-C (or an OutputError) the distributor stops them
            failed = {}  # part name -> (items, error): its worker died (or it raised) on every attempt
            for out in dist(process_part, jobs, weight=lambda job: len(job[1]), bar=bar):
                if out.ok:
                    commit(*out.value)
                else:
                    failed[jobs[out.index][0]] = (jobs[out.index][1], out.error)
            # a failed part is redone item by item: the item that kills its worker (a decoder crash, out of
            # memory) becomes a dropped row saying so, the others are built as usual
            rows = {name: [] for name in failed}
            singles = [(name, [item], opts, str(out_dir)) for name, (items, _) in failed.items() if len(items) > 1
                       for item in items]  # fmt: skip
            errors = {name: error for name, (items, error) in failed.items() if len(items) == 1}
            for out in dist(process_part, singles, bar=bar, weight=lambda _job: 0):
                name = singles[out.index][0]
                rows[name] += out.value[1] if out.ok else worker_failed_rows(singles[out.index][1], out.error)
            for name, (items, _) in failed.items():
                commit(name, rows[name] + (worker_failed_rows(items, errors[name]) if name in errors else []))
        finally:
            bar.close()
        frames = [
            (built[n] if n in built else pq.read_table(parts_dir / f"{n}.parquet")).to_pandas()
            for n, _ in plan.parts
        ]
        if plan.pre_rows:
            frames.append(rows_to_table(plan.pre_rows).to_pandas())
        frames = [f for f in frames if len(f)]
        if not frames:
            raise JobFailed(
                f"no image, video or archive found in the sources ({plan.skipped_files} other files)"
            )
        df = mark_exact_duplicates(pd.concat(frames, ignore_index=True))
        record = {
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
            "sources": [asdict(s) for s in specs],
        }
        return finish(out_dir, df, plan.skipped_files, record)
