"""Image information entropy (paper Eq. 1): H = -sum_i p(x_i) log2 p(x_i) over 256 brightness levels.

The build stores :func:`entropy8` of each kept image's normalized 8-bit pixels in the manifest. This module
also computes statistics of entropy over any folders or built datasets without building
(:func:`analyze`, the library side of ``inf30 entropy``), compares two sets with a bootstrap confidence
interval (:func:`compare_values`), and draws local entropy maps (:func:`local_entropy_map`).

16-bit and float sources: the manifest's ``entropy`` (and ``inf30 entropy``) is always the entropy of the
normalized 8-bit image, i.e. after the build's percentile gain control, so values are comparable across
sources and with the paper (at most 8 bits). :func:`entropy_raw` optionally gives the entropy of the raw
values, binned (``inf30 entropy --raw``): 256 equal-width bins over each image's own value range by default
(comparable with 8-bit numbers), or exact distinct levels with ``bins=None`` (up to 16 bits for 16-bit data).
"""

from __future__ import annotations

import glob
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inf30.files import image_files, is_glob_pattern
from inf30.options import option

#: Mean entropies the paper reports (Sec. 3.2), drawn as reference lines in reports.
PAPER_INF30_MEAN = 6.44
PAPER_IMAGENET_MEAN = 7.19
REFERENCES = {"Inf30 (paper)": PAPER_INF30_MEAN, "ImageNet-1K (paper)": PAPER_IMAGENET_MEAN}

#: Histogram bin edges (bits) used for statistics: 0.25-bit bins from 0 to 8.
HIST_EDGES = tuple(float(x) for x in np.linspace(0.0, 8.0, 33))
PERCENTILES = (1, 5, 10, 25, 75, 90, 95, 99)
_CALC_HIST_LIMIT = 1 << 24  # float32 histogram counts are exact below this many pixels


# ------------------------------------------------------------------------------------------ per image
def histogram256(gray: np.ndarray) -> np.ndarray:
    """Counts of the 256 brightness levels of an 8-bit image (int64 array of length 256)."""
    arr = np.asarray(gray)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.uint8)
    if 0 < arr.size < _CALC_HIST_LIMIT:
        try:
            import cv2

            flat = np.ascontiguousarray(arr).reshape(1, -1) if arr.ndim != 2 else np.ascontiguousarray(arr)
            return cv2.calcHist([flat], [0], None, [256], [0, 256]).ravel().astype(np.int64)
        except Exception:  # noqa: BLE001 - fall back to numpy on any OpenCV limitation
            pass
    return np.bincount(arr.ravel(), minlength=256).astype(np.int64)


def entropy_from_counts(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram (levels with zero count contribute nothing)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(max(0.0, -(p * np.log2(p)).sum()))


def entropy8(gray: np.ndarray) -> float:
    """Shannon entropy in bits of an 8-bit image (any shape, dtype uint8). Empty levels contribute 0.

    A constant image gives 0.0, two equally frequent levels 1.0, all 256 levels equally 8.0.
    """
    return entropy_from_counts(histogram256(gray))


def entropy_raw(values: np.ndarray, bins: int | None = 256) -> float:
    """Entropy in bits of raw (e.g. 16-bit or float) pixel values.

    ``bins=256`` (default): equal-width bins over the image's own [min, max] range, comparable with 8-bit
    entropy. ``bins=None``: exact distinct values (integer data; up to 16 bits for 16-bit images).
    Non-finite values are ignored.
    """
    arr = np.asarray(values).ravel()
    if arr.dtype.kind == "f":
        arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return 0.0
    if bins is None:
        if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
            counts = np.bincount(arr.astype(np.int64) - int(arr.min()))
        else:
            _, counts = np.unique(arr, return_counts=True)
        return entropy_from_counts(counts)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return 0.0
    idx = ((arr.astype(np.float64) - lo) * (bins / (hi - lo))).astype(np.int64)
    np.clip(idx, 0, bins - 1, out=idx)
    return entropy_from_counts(np.bincount(idx, minlength=bins))


def local_entropy_map(gray: np.ndarray, radius: int = 5, max_side: int | None = 512) -> np.ndarray:
    """Local entropy (bits) in a disk of ``radius`` around each pixel (scikit-image rank filter).

    Images larger than ``max_side`` are downscaled first (the map then has the reduced size).
    Returns float32 values in [0, 8].
    """
    from PIL import Image
    from skimage.filters.rank import entropy as rank_entropy
    from skimage.morphology import disk

    arr = np.array(gray, dtype=np.uint8)  # a writable copy (scikit-image needs one)
    if arr.ndim != 2:
        raise ValueError(f"local_entropy_map needs a 2-D gray image, got shape {arr.shape}")
    if max_side and max(arr.shape) > max_side:
        scale = max_side / max(arr.shape)
        size = (max(1, round(arr.shape[1] * scale)), max(1, round(arr.shape[0] * scale)))
        arr = np.array(Image.fromarray(arr, "L").resize(size, Image.Resampling.BILINEAR))
    return rank_entropy(arr, disk(radius)).astype(np.float32)


# ------------------------------------------------------------------------------------------- decoding
def decode_gray(data: bytes, agc_percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Bytes of an image -> the normalized 8-bit gray image the build stores (:mod:`inf30.decode`).

    Raises :class:`inf30.decode.DecodeError` on undecodable data."""
    from inf30.decode import decode_to_gray

    return decode_to_gray(data, agc_percentiles=agc_percentiles).gray


def _raw_values(data: bytes) -> np.ndarray | None:
    """Raw pixel values of a >8-bit single-channel image (None for 8-bit or colour inputs)."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    if not (im.mode.startswith("I") or im.mode == "F"):
        return None
    raw = np.asarray(im)
    return None if raw.dtype.itemsize == 1 else raw


@dataclass
class ItemEntropy:
    """The entropy of one input (``error`` set and ``entropy`` None when it could not be decoded)."""

    name: str
    group: str
    entropy: float | None = None
    width: int | None = None
    height: int | None = None
    entropy_raw: float | None = None
    error: str | None = None


def _error_text(exc: Exception) -> str:
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    kind = "" if type(exc).__name__ == "DecodeError" else f"{type(exc).__name__}: "
    return (kind + detail).rstrip(": ") or "corrupt"


#: (path, name, group, raw) or (path, name, group, raw, frames): see :func:`_file_task`.
FileTask = tuple[str, str, str, bool] | tuple[str, str, str, bool, bool]


def _file_task(task: FileTask) -> list[ItemEntropy]:
    """Worker: read, decode and measure one file; never raises.

    ``task`` is (path, name, group, raw) or (path, name, group, raw, frames). With ``frames`` true, every
    frame of a multi-frame file (TIFF stack, animated GIF/WebP/PNG) is an item named like the build's rows,
    ``name#p000001`` (raw entropy: first frame only); otherwise the first frame stands for the file."""
    from inf30.decode import DecodeError, decode_to_gray, frame_key, later_frames

    path, name, group, raw = task[:4]
    frames = bool(task[4]) if len(task) > 4 else False
    try:
        data = Path(path).read_bytes()
        dec = decode_to_gray(data)
        multi = frames and dec.multi_frame
        item = ItemEntropy(
            frame_key(name, 0) if multi else name, group, entropy8(dec.gray), dec.gray.shape[1], dec.gray.shape[0]
        )
        if raw:
            values = _raw_values(data)
            if values is not None:
                item.entropy_raw = entropy_raw(values)
    except Exception as exc:  # noqa: BLE001 - bad input is counted, never a crash
        return [ItemEntropy(name, group, error=_error_text(exc))]
    items = [item]
    if multi:
        for k, res in later_frames(data):
            if isinstance(res, DecodeError):
                items.append(ItemEntropy(frame_key(name, k), group, error=_error_text(res)))
            else:
                h, w = res.gray.shape
                items.append(ItemEntropy(frame_key(name, k), group, entropy8(res.gray), w, h))
    return items


# ------------------------------------------------------------------------------------------ collection
@dataclass
class EntropySet:
    """Per-item entropies of one set (all PATHs of one side), with decode failures and skipped files."""

    label: str
    items: list[ItemEntropy] = field(default_factory=list)
    skipped: int = 0  # files without an image suffix

    @property
    def values(self) -> np.ndarray:
        return np.array([i.entropy for i in self.items if i.entropy is not None], dtype=np.float64)

    @property
    def failures(self) -> list[ItemEntropy]:
        return [i for i in self.items if i.entropy is None]

    def groups(self) -> dict[str, np.ndarray]:
        out: dict[str, list[float]] = {}
        for i in self.items:
            if i.entropy is not None:
                out.setdefault(i.group, []).append(i.entropy)
        return {k: np.asarray(v) for k, v in out.items()}


def _is_dataset(path: Path) -> bool:
    from inf30.manifest import MANIFEST_NAME

    return (path.is_dir() and (path / MANIFEST_NAME).is_file()) or (
        path.is_file() and path.suffix == ".parquet"
    )


def _expand(spec: str) -> list[Path]:
    if is_glob_pattern(spec):
        hits = sorted(Path(p) for p in glob.glob(spec, recursive=True))
        if not hits:
            raise FileNotFoundError(f"no files match {spec!r}")
        return hits
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{spec}: no such file or folder")
    return [path]


def _pair_key(name: str) -> str:
    return str(Path(name).with_suffix("")).lower()


def _int_or_none(x: Any) -> int | None:
    try:
        return None if x is None or x != x else int(x)
    except (TypeError, ValueError):
        return None


def _dataset_items(path: Path) -> tuple[list[ItemEntropy], list[FileTask]]:
    """Kept rows of a built dataset: stored entropies, plus decode tasks for rows lacking one (stored
    images are 8-bit, so raw entropy does not apply to datasets)."""
    from inf30.manifest import kept, read_manifest

    df = kept(read_manifest(path))
    root = path if path.is_dir() else path.parent
    items, tasks = [], []
    have = "entropy" in df.columns
    for row in df.itertuples(index=False):
        key = str(row.item_key)
        name = key.split(":", 1)[1] if ":" in key else key
        group = str(row.source)
        ent = getattr(row, "entropy", None) if have else None
        if ent is not None and not (isinstance(ent, float) and math.isnan(ent)):
            w, h = _int_or_none(getattr(row, "width", None)), _int_or_none(getattr(row, "height", None))
            items.append(ItemEntropy(name, group, float(ent), w, h))
        elif isinstance(row.path, str):
            tasks.append((str(root / row.path), name, group, False))
        else:
            items.append(ItemEntropy(name, group, error="kept row without a stored path"))
    return items, tasks


def collect(
    paths: Sequence[str | os.PathLike],
    label: str | None = None,
    workers: int = 0,
    raw: bool = False,
    progress: bool = True,
    distributor: str = "local",
    ray_address: str | None = None,
) -> EntropySet:
    """Entropies of every image under ``paths``: folders (recursive), image files, globs, or built
    datasets (their kept rows; the stored ``entropy`` column is used, images are decoded only where it
    is missing). Images are decoded the way the build decodes them, in ``workers`` processes
    (0 = all cores), or as Ray tasks (``distributor="ray"``, on the cluster at ``ray_address``).
    Undecodable files are recorded as failures, never raised."""
    if not paths:
        raise ValueError("give at least one PATH")
    out = EntropySet(label or " ".join(str(p) for p in paths))
    tasks: list[FileTask] = []
    seen: set[str] = set()  # a file named twice (a folder and its subfolder) counts once
    for spec in paths:
        for path in _expand(str(spec)):
            if _is_dataset(path):
                items, more = _dataset_items(path)
                out.items += items
                tasks += more
            elif path.is_dir():
                files, skipped = image_files(path)
                out.skipped += skipped
                tasks += [(f, os.path.relpath(f, path), str(path), raw, True) for f in files]
            else:
                tasks.append((str(path), path.name, str(path.parent), raw, True))
    unique = []
    for task in tasks:
        real = os.path.realpath(task[0])
        if real not in seen:
            seen.add(real)
            unique.append(task)
    tasks = unique
    if not out.items and not tasks:
        raise ValueError(f"no images found in {', '.join(str(p) for p in paths)}")
    out.items += run_tasks(tasks, workers=workers, progress=progress, desc=f"entropy {out.label}"[:40],
                           distributor=distributor, ray_address=ray_address)
    return out


def run_tasks(
    tasks: list[FileTask], workers: int = 0, progress: bool = True, desc: str = "entropy",
    distributor: str = "local", ray_address: str | None = None,
) -> list[ItemEntropy]:
    """Run :func:`_file_task` over ``tasks`` through :class:`inf30.distribute.Distributor` (local processes,
    inline for fewer than 32 tasks or one worker; or Ray tasks with ``distributor="ray"``).

    One result per task, in order, except for tasks that ask for the frames of a multi-frame file."""
    from tqdm import tqdm

    from inf30.distribute import Distributor

    if not tasks:
        return []
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    chunk = max(1, min(64, len(tasks) // (n_workers * 8)))
    dist = Distributor(backend=distributor, workers=workers, chunksize=chunk, ordered=True, inline_below=32,
                       ray_address=ray_address, preload=("inf30.entropy", "inf30.decode"))
    results: list[ItemEntropy] = []
    with tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for out in dist(_file_task, tasks, bar=bar):
            # _file_task never raises; a worker that died on every attempt leaves the task's failure
            results += out.value if out.ok else [ItemEntropy(tasks[out.index][1], tasks[out.index][2], error=out.error)]
    return results


# ------------------------------------------------------------------------------------------- statistics
def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def describe(values: Iterable[float], edges: Sequence[float] = HIST_EDGES) -> dict[str, Any]:
    """n, mean, std (sample, ddof=1), median, min, max, percentiles and a histogram of entropy values.

    Statistics of an empty set are None (JSON null)."""
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    counts, _ = np.histogram(v, bins=np.asarray(edges))
    out: dict[str, Any] = {"n": int(v.size)}
    if v.size:
        pct = np.percentile(v, PERCENTILES)
        out.update(
            mean=float(v.mean()),
            std=float(v.std(ddof=1)) if v.size > 1 else 0.0,
            median=float(np.median(v)),
            min=float(v.min()),
            max=float(v.max()),
            percentiles={str(p): float(x) for p, x in zip(PERCENTILES, pct, strict=True)},
        )
    else:
        out.update(mean=None, std=None, median=None, min=None, max=None, percentiles={})
    out["histogram"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    return out


def _bootstrap_mean_diffs(
    a: np.ndarray, b: np.ndarray | None, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap replicates of mean(a) - mean(b) (or of mean(a) when ``b`` is None), in bounded chunks."""
    out = np.empty(n_boot)
    budget = 4_000_000
    done = 0
    while done < n_boot:
        k = max(1, min(n_boot - done, budget // max(1, a.size + (0 if b is None else b.size))))
        ma = a[rng.integers(0, a.size, size=(k, a.size))].mean(axis=1)
        mb = 0.0 if b is None else b[rng.integers(0, b.size, size=(k, b.size))].mean(axis=1)
        out[done : done + k] = ma - mb
        done += k
    return out


def compare_values(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Compare two entropy samples: difference of means (a - b) with a percentile bootstrap confidence
    interval (independent resampling of each set), Cohen's d, and the median difference.

    With ``pairs`` (matched values of the same scenes in both sets), also the paired mean difference
    with a bootstrap interval over the pairs."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("both sets need at least one decodable image to compare")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1, got {ci}")
    rng = np.random.default_rng(seed)
    alpha = (1 - ci) / 2
    reps = _bootstrap_mean_diffs(a, b, n_boot, rng)
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    var_a = a.var(ddof=1) if a.size > 1 else 0.0
    var_b = b.var(ddof=1) if b.size > 1 else 0.0
    pooled = math.sqrt(((a.size - 1) * var_a + (b.size - 1) * var_b) / max(1, a.size + b.size - 2))
    diff = float(a.mean() - b.mean())
    out: dict[str, Any] = {
        "n_a": int(a.size),
        "n_b": int(b.size),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "mean_diff": diff,
        "ci": ci,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "median_diff": float(np.median(a) - np.median(b)),
        "cohens_d": _clean(diff / pooled) if pooled > 0 else None,
        "paired": None,
    }
    if pairs is not None and len(pairs[0]) >= 2:
        d = np.asarray(pairs[0], dtype=np.float64) - np.asarray(pairs[1], dtype=np.float64)
        preps = _bootstrap_mean_diffs(d, None, n_boot, rng)
        plo, phi = np.quantile(preps, [alpha, 1 - alpha])
        out["paired"] = {
            "n_pairs": int(d.size),
            "mean_diff": float(d.mean()),
            "ci_low": float(plo),
            "ci_high": float(phi),
            "share_a_higher": float((d > 0).mean()),
        }
    return out


def _pairs(a: EntropySet, b: EntropySet) -> tuple[np.ndarray, np.ndarray] | None:
    """Values of items with the same relative name (without suffix) in both sets, when most match."""
    da = {_pair_key(i.name): i.entropy for i in a.items if i.entropy is not None}
    db = {_pair_key(i.name): i.entropy for i in b.items if i.entropy is not None}
    common = sorted(set(da) & set(db))
    if len(common) < 2 or len(common) < 0.5 * min(len(da), len(db)):
        return None
    return np.array([da[k] for k in common]), np.array([db[k] for k in common])


# --------------------------------------------------------------------------------------------- analysis
@dataclass
class EntropyAnalysis:
    """Result of ``inf30 entropy``: statistics per set, per group, failures, and the comparison."""

    sets: list[EntropySet]
    comparison: dict[str, Any] | None = None
    stats: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, max_failures: int | None = None) -> dict[str, Any]:
        """JSON-ready dict (no NaN): per set its stats, per-group stats, decode failures and references."""
        sets = []
        for s, st in zip(self.sets, self.stats, strict=True):
            fails = s.failures
            shown = fails if max_failures is None else fails[:max_failures]
            raw = [i.entropy_raw for i in s.items if i.entropy_raw is not None]
            sets.append(
                {
                    "label": s.label,
                    "found": len(s.items),
                    "decoded": int(st["n"]),
                    "corrupt": len(fails),
                    "skipped_non_images": s.skipped,
                    "stats": st,
                    "groups": {g: _short(describe(v)) for g, v in sorted(s.groups().items())},
                    "raw_entropy": _short(describe(raw)) if raw else None,
                    "failures": [{"name": f.name, "error": f.error} for f in shown],
                }
            )
        return {"sets": sets, "comparison": self.comparison, "references": REFERENCES}

    def table(self, max_failures: int = 5) -> str:
        """Human-readable summary: statistics, a text histogram, failures and the comparison."""
        lines: list[str] = []
        d = self.to_dict(max_failures=max_failures)
        for s in d["sets"]:
            st = s["stats"]
            lines.append(f"== {s['label']}")
            lines.append(
                f"images {s['found']}  decoded {s['decoded']}  corrupt {s['corrupt']}"
                + (f"  skipped non-image files {s['skipped_non_images']}" if s["skipped_non_images"] else "")
            )
            if st["n"]:
                p = st["percentiles"]
                lines.append(
                    f"entropy bits: mean {st['mean']:.3f}  std {st['std']:.3f}  median {st['median']:.3f}  "
                    f"min {st['min']:.3f}  max {st['max']:.3f}"
                )
                lines.append("percentiles: " + "  ".join(f"p{k} {v:.3f}" for k, v in p.items()))
            if len(s["groups"]) > 1:
                lines.append(f"  {'group':<28} {'n':>7} {'mean':>7} {'std':>7} {'median':>7}")
                for g, gs in s["groups"].items():
                    lines.append(
                        f"  {g[:28]:<28} {gs['n']:>7} {gs['mean']:>7.3f} {gs['std']:>7.3f} {gs['median']:>7.3f}"
                    )
            if s["raw_entropy"]:
                r = s["raw_entropy"]
                lines.append(
                    f"raw (>8-bit inputs, 256 bins over value range): n {r['n']}  mean {r['mean']:.3f}"
                )
            for f in s["failures"]:
                lines.append(f"  corrupt: {f['name']}: {f['error']}")
            if s["corrupt"] > len(s["failures"]):
                lines.append(f"  ... and {s['corrupt'] - len(s['failures'])} more (see --json)")
        lines += _text_histogram(d["sets"])
        lines.append("paper means: " + "  ".join(f"{k} {v:.2f}" for k, v in REFERENCES.items()))
        c = self.comparison
        if c:
            pct = round(c["ci"] * 100)
            lines.append(
                f"difference of means (first - second): {c['mean_diff']:+.3f} bits, {pct}% bootstrap CI "
                f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] ({c['n_boot']} resamples); "
                f"median diff {c['median_diff']:+.3f}"
                + (f"; Cohen's d {c['cohens_d']:+.2f}" if c["cohens_d"] is not None else "")
            )
            if c["paired"]:
                pr = c["paired"]
                lines.append(
                    f"paired by file name ({pr['n_pairs']} pairs): mean diff {pr['mean_diff']:+.3f}, {pct}% CI "
                    f"[{pr['ci_low']:+.3f}, {pr['ci_high']:+.3f}]; first higher in {pr['share_a_higher']:.0%}"
                )
        return "\n".join(lines)


def _short(st: dict[str, Any]) -> dict[str, Any]:
    return {k: st[k] for k in ("n", "mean", "std", "median", "min", "max")}


def _text_histogram(sets: list[dict[str, Any]], width: int = 30) -> list[str]:
    """Side-by-side text bars of the sets' histograms (0.5-bit bins) over the non-empty range."""
    hists = [s["stats"]["histogram"] for s in sets if s["stats"]["n"]]
    if not hists:
        return []
    edges = np.asarray(hists[0]["edges"])
    counts = np.array([h["counts"] for h in hists], dtype=np.float64)
    if len(edges) == 33:  # merge the 0.25-bit bins pairwise for a compact text view
        counts = counts.reshape(len(hists), 16, 2).sum(axis=2)
        edges = edges[::2]
    nz = np.nonzero(counts.sum(axis=0))[0]
    lo, hi = int(nz[0]), int(nz[-1])
    fracs = counts / counts.sum(axis=1, keepdims=True)
    peak = fracs.max()
    lines = [f"histogram (share of images per {edges[1] - edges[0]:g}-bit bin):"]
    for i in range(lo, hi + 1):
        bars = "  ".join(f"{'#' * round(width * f[i] / peak):<{width}} {f[i]:5.1%}" for f in fracs)
        lines.append(f"  {edges[i]:4.2f}-{edges[i + 1]:4.2f} {bars}")
    return lines


@dataclass
class EntropyOptions:
    """Options of :func:`analyze` (``inf30 entropy``)."""

    workers: int = option(0, "Decode processes (0 = all cores).")
    distributor: str = option("local", "Where the images are decoded: local (processes) or ray (a Ray cluster).")
    ray_address: str | None = option(None, "Ray cluster to join (HEAD:6379, or auto on a cluster node); default: a local Ray for the run. Needs --distributor ray.")
    raw: bool = option(False, "Also the entropy of 16-bit/float inputs' raw values (256 bins).")
    n_boot: int = option(2000, "Bootstrap resamples for the comparison's interval.")
    ci: float = option(0.95, "Confidence level of the comparison's interval (0..1).")
    seed: int = option(0, "Random seed of the bootstrap.")

    def validate(self) -> None:
        """UsageError (one line, exit 2) for an out-of-range option, before any work."""
        from inf30.errors import check

        check(isinstance(self.workers, int) and self.workers >= 0, f"--workers must be 0 (all cores) or more, got {self.workers}")
        check(isinstance(self.n_boot, int) and self.n_boot >= 1, f"--n-boot must be at least 1, got {self.n_boot}")
        check(isinstance(self.ci, (int, float)) and 0 < self.ci < 1, f"ci must be between 0 and 1, got {self.ci}")
        check(isinstance(self.seed, int) and self.seed >= 0, f"--seed must be 0 or more, got {self.seed}")
        from inf30.distribute import check_distributor

        check_distributor(self.distributor, self.ray_address)


def analyze(
    paths: Sequence[str | os.PathLike],
    compare: Sequence[str | os.PathLike] | None = None,
    workers: int = EntropyOptions.workers,
    raw: bool = EntropyOptions.raw,
    n_boot: int = EntropyOptions.n_boot,
    ci: float = EntropyOptions.ci,
    seed: int = EntropyOptions.seed,
    progress: bool = True,
    distributor: str = EntropyOptions.distributor,
    ray_address: str | None = EntropyOptions.ray_address,
) -> EntropyAnalysis:
    """Entropy statistics of ``paths`` (and of ``compare``, with the comparison), without building.

    The library side of ``inf30 entropy PATH... [--compare PATH...]``. Raises JobFailed (exit 1) when no
    image of a set decodes."""
    from inf30.errors import JobFailed

    EntropyOptions(workers=workers, distributor=distributor, ray_address=ray_address, raw=raw, n_boot=n_boot,
                   ci=ci, seed=seed).validate()
    run = dict(workers=workers, raw=raw, progress=progress, distributor=distributor, ray_address=ray_address)
    sets = [collect(paths, **run)]
    if compare:
        sets.append(collect(compare, **run))
    for s in sets:
        if not len(s.values):
            fails = s.failures
            example = f"; e.g. {fails[0].name}: {fails[0].error}" if fails else ""
            raise JobFailed(f"none of the {len(s.items)} images in {s.label} decodes{example}")
    result = EntropyAnalysis(sets, stats=[describe(s.values) for s in sets])
    if compare:
        a, b = sets
        result.comparison = compare_values(
            a.values, b.values, n_boot=n_boot, ci=ci, seed=seed, pairs=_pairs(a, b)
        )
    return result
