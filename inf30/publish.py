"""Publish a built Inf30 dataset as a Hugging Face dataset repository (local folder, then optionally the Hub).

Layout of the published folder ``OUT`` (see docs/publish.md)::

    OUT/
      README.md                               dataset card: YAML front matter (licence, configs, ...) + numbers
      LICENSE.md                              per-source licences (only when they differ)
      data/train-00000-of-0000N.parquet       config `default`: column `image` (datasets.Image) + metadata
      data_max_side_<N>/train-...parquet      config `max_side_<N>` (with --max-side N): downscaled images
      manifest/dropped.parquet                every dropped input item and why (config `dropped`)
      figures/*.png                           the report's figures, when `inf30 report` has run

The default config stores each kept image's bytes exactly as they are in ``DIR/images/`` (no re-encoding).
``OUT`` is assembled in a temporary folder beside it and swapped in at the end, so a failure never leaves a
half-written or damaged ``OUT``.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inf30.atomic import atomic_path, write_text_atomic
from inf30.card import CardConfig, CardInputs, card_markdown, licence_front_matter, licence_markdown
from inf30.errors import BusyError, UsageError
from inf30.lock import lock_folder
from inf30.manifest import MANIFEST_NAME, frame_to_table, read_manifest, write_table
from inf30.options import option

HASH_COLUMNS = ("phash", "dhash", "whash", "ahash")
ROW_GROUP_ROWS = 100
ROW_GROUP_BYTES = 100 * 1000 * 1000
DEFAULT_SHARD_SIZE = "500MB"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


class PublishError(UsageError):
    """A publishing problem the user can fix (printed as one line by the CLI, exit 2)."""


def parse_size(text: str | int) -> int:
    """``"500MB"`` -> 500_000_000; also ``2GB``, ``1.5GiB``, ``800kB``, plain bytes."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise PublishError(f"cannot read size {text!r}: use e.g. 500MB, 2GB, 1.5GiB")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise PublishError(f"size must be positive, got {text!r}")
    return value


@dataclass
class PublishOptions:
    """Options of :func:`publish`. ``token``/``endpoint`` default to the standard environment and login."""

    repo_id: str | None = option(None, "Hub dataset repository USER/NAME.")
    push: bool = option(False, "Create or update the Hub repo and upload (token: HF_TOKEN or `hf auth login`).")
    private: bool = option(False, "Create the Hub repo as private.")
    max_side: int | None = option(None, "Also write config max_side_N: images downscaled so the longer side is at most N.")
    shard_size: int | str = option(DEFAULT_SHARD_SIZE, "Most image bytes per parquet shard (500MB, 2GB).")
    overwrite: bool = option(False, "Replace an existing non-empty output folder.")
    pretty_name: str = option("Inf30", "The dataset's name on its card.")
    progress: bool = option(True, "Show a progress bar.")
    token: str | None = option(None, "Hub token (None: HF_TOKEN or the `hf auth login` one).")
    endpoint: str | None = option(None, "Hub endpoint URL (None: HF_ENDPOINT or huggingface.co).")

    def validate(self) -> None:
        """PublishError (a UsageError: one line, exit 2) for a bad option, before any work."""
        parse_size(self.shard_size)
        if self.max_side is not None and (isinstance(self.max_side, bool) or not isinstance(self.max_side, int)
                                          or self.max_side < 1):
            raise PublishError(f"--max-side must be a positive number of pixels, got {self.max_side}")
        if self.repo_id is not None or self.push:
            _check_repo_id(self.repo_id)
        if not isinstance(self.pretty_name, str) or not self.pretty_name.strip():
            raise PublishError(f"pretty_name must be a non-empty string, got {self.pretty_name!r}")


@dataclass
class PublishResult:
    """What :func:`publish` wrote (and pushed)."""

    out: Path
    rows: int
    dropped: int
    shards: dict[str, list[str]] = field(default_factory=dict)
    url: str | None = None

    def table(self) -> str:
        lines = [f"published {self.rows:,} images to {self.out} ({self.dropped:,} dropped items listed)"]
        for config, files in self.shards.items():
            lines.append(f"  config {config}: {len(files)} shard(s)")
        if self.url:
            lines.append(f"pushed: {self.url}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- parquet


def _features(hash_cols: list[str], variant: bool):
    from datasets import Features, Image, Value

    cols: dict[str, Any] = {
        "image": Image(),
        "id": Value("string"),
        "source": Value("string"),
        "origin": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
    }
    if variant:
        cols["orig_width"] = Value("int32")
        cols["orig_height"] = Value("int32")
    cols["entropy"] = Value("float64")
    for h in hash_cols:
        cols[h] = Value("string")
    cols["licence"] = Value("string")
    return Features(cols)


def _parquet_options(features, schema: pa.Schema) -> dict:
    """The per-column options `datasets` itself uses for Hub parquet (no compression of image bytes)."""
    try:
        from datasets.arrow_writer import get_parquet_column_options
    except ImportError:  # older datasets
        return {}
    return get_parquet_column_options(features, schema)


class _ShardWriter:
    """Streams rows into ``folder/train-XXXXX-of-YYYYY.parquet``, starting a new shard at ``shard_size`` bytes.

    Each shard is written to a temporary file and renamed when complete; the final ``-of-YYYYY`` names are
    given by :meth:`close` once the count is known.
    """

    def __init__(self, folder: Path, features, shard_size: int) -> None:
        self.folder = folder
        self.features = features
        self.schema = features.arrow_schema
        self.options = _parquet_options(features, self.schema)
        self.shard_size = shard_size
        self.done: list[tuple[Path, int]] = []
        self._stack: contextlib.ExitStack | None = None
        self._writer: pq.ParquetWriter | None = None
        self._bytes = 0
        self._rows = 0
        self._buffer: list[dict] = []
        self._buffer_bytes = 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict, nbytes: int) -> None:
        if self._writer is not None and self._bytes + nbytes > self.shard_size:
            self._close_shard()
        if self._writer is None:
            self._open_shard()
        self._buffer.append(row)
        self._bytes += nbytes
        self._rows += 1
        self._buffer_bytes += nbytes
        if len(self._buffer) >= ROW_GROUP_ROWS or self._buffer_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _open_shard(self) -> None:
        self._stack = contextlib.ExitStack()
        provisional = self.folder / f".shard-{len(self.done):05d}.parquet"
        tmp = self._stack.enter_context(atomic_path(provisional))
        kwargs = dict(self.options, write_page_index=True)
        try:  # content-defined chunking keeps re-uploads small on the Hub's Xet storage (pyarrow >= 21)
            from datasets import config as ds_config

            kwargs["use_content_defined_chunking"] = ds_config.DEFAULT_CDC_OPTIONS
            self._writer = pq.ParquetWriter(tmp, self.schema, **kwargs)
        except (TypeError, AttributeError, ImportError):
            kwargs.pop("use_content_defined_chunking", None)
            self._writer = pq.ParquetWriter(tmp, self.schema, **kwargs)
        self._path = provisional
        self._bytes = 0
        self._rows = 0

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
        self._buffer, self._buffer_bytes = [], 0

    def _close_shard(self) -> None:
        self._flush()
        assert self._writer is not None and self._stack is not None
        self._writer.close()
        self._stack.close()  # fsync + rename the temporary file
        self.done.append((self._path, self._rows))
        self._writer, self._stack = None, None

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self._stack is not None:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temporary file
        self._writer, self._stack = None, None

    def close(self) -> list[str]:
        """Finish the last shard and give every shard its final name; return the names."""
        if self._writer is not None:
            self._close_shard()
        n = len(self.done)
        names = []
        for i, (path, _) in enumerate(self.done):
            name = f"train-{i:05d}-of-{n:05d}.parquet"
            os.replace(path, self.folder / name)
            names.append(name)
        return names


# --------------------------------------------------------------------------------------------- publish


def _records(df: pd.DataFrame) -> list[dict]:
    return df.astype(object).where(df.notna(), None).to_dict("records")


def _downscale(data: bytes, max_side: int) -> tuple[bytes, int, int, str]:
    """Image bytes -> (bytes, width, height, ext) with the longer side at most ``max_side``.

    Images that already fit are returned unchanged; others are resized (Lanczos) and stored as PNG.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise PublishError(f"cannot decode a stored image ({exc}); rebuild the dataset") from None
    with img:
        w, h = img.size
        if max(w, h) <= max_side:
            return data, w, h, ""
        img = img.convert("L") if img.mode != "L" else img
        scale = max_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        buf = io.BytesIO()
        small.save(buf, format="PNG")
        return buf.getvalue(), size[0], size[1], "png"


def _check_out(dataset_dir: Path, out: Path, overwrite: bool) -> None:
    d, o = dataset_dir.resolve(), out.resolve()
    if o == d or o in d.parents:
        raise PublishError(f"--to {out} would contain the dataset {dataset_dir}; choose another folder")
    if out.exists() and not out.is_dir():
        raise PublishError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; add --overwrite to replace it")


def _start_staging(out: Path) -> tuple[Path, int]:
    """A new staging folder ``.tmp-publish-OUT.XXXX`` beside ``out`` and the descriptor of its lock file.

    The lock file ``.tmp-publish-OUT.XXXX.lock`` is locked (flock) before its name appears, and stays
    locked while this process lives: a staging folder whose lock is free belongs to a publish that was
    killed, and is removed here first, so a re-run after a kill does not leave a second copy of the data.
    """
    mine = re.compile(rf"\.tmp-publish-{re.escape(out.name)}\.[^.]+\.(lock|partial)")  # not OUT.v2's
    for lock in glob.glob(os.path.join(glob.escape(str(out.parent)), f".tmp-publish-{glob.escape(out.name)}.*")):
        if not mine.fullmatch(os.path.basename(lock)):
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its publish is still running
            os.close(fd)
            continue
        shutil.rmtree(lock.rsplit(".", 1)[0], ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
    fd, partial = tempfile.mkstemp(prefix=f".tmp-publish-{out.name}.", suffix=".partial", dir=out.parent)
    fcntl.flock(fd, fcntl.LOCK_EX)
    base = partial.removesuffix(".partial")
    os.replace(partial, base + ".lock")
    os.mkdir(base)
    return Path(base), fd


def _end_staging(staging: Path, lock_fd: int) -> None:
    """Remove the lock file of ``staging`` (already swapped in or removed) and release it."""
    with contextlib.suppress(OSError):
        os.unlink(f"{staging}.lock")
    os.close(lock_fd)


def _swap_in(staging: Path, out: Path, overwrite: bool) -> None:
    """Move the finished ``staging`` folder to ``out`` (replacing it only when allowed)."""
    if out.is_dir():
        if not any(out.iterdir()):
            out.rmdir()
        elif overwrite:
            old = Path(tempfile.mkdtemp(prefix=f".old-{out.name}.", dir=out.parent))
            os.replace(out, old / out.name)
            try:
                os.replace(staging, out)
            except OSError:
                os.replace(old / out.name, out)  # put the old OUT back
                raise
            finally:
                if not (old / out.name).exists() or out.exists():
                    shutil.rmtree(old, ignore_errors=True)
            return
        else:
            raise FileExistsError(f"{out} exists and is not empty; add --overwrite to replace it")
    os.replace(staging, out)


def _check_repo_id(repo_id: str | None) -> str:
    if not repo_id or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise PublishError(f"--repo-id must look like USER/NAME, got {repo_id!r}")
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """The Hub token: given, else ``HF_TOKEN`` or the saved login; a clear error when there is none."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (needs write access)")
    return token


def publish(
    dataset_dir: str | os.PathLike, out: str | os.PathLike, opts: PublishOptions | None = None
) -> PublishResult:
    """Write ``out`` as a Hub-ready dataset repository from the built dataset ``dataset_dir``; push it
    when ``opts.push``. Returns what was written."""
    opts = opts or PublishOptions()
    opts.validate()
    dataset_dir, out = Path(dataset_dir), Path(out)
    shard_size = parse_size(opts.shard_size)
    token = None
    if opts.push:
        token = resolve_token(opts.token)
    _check_out(dataset_dir, out, opts.overwrite)
    if not (dataset_dir / MANIFEST_NAME).is_file():
        read_manifest(dataset_dir)  # the one-line "no manifest" error, before the lock creates anything
    with _dataset_lock(dataset_dir):  # no build, merge, dedupe or report changes the dataset while it is read
        return _publish(dataset_dir, out, opts, shard_size, token)


@contextlib.contextmanager
def _dataset_lock(dataset_dir: Path):
    """The dataset folder's lock (inf30.lock); a dataset on a read-only mount is read without it."""
    try:
        cm = lock_folder(dataset_dir)
        cm.__enter__()
    except BusyError:
        raise
    except OSError:  # cannot create the lock file (read-only mount): nobody of ours can be writing there
        yield
        return
    try:
        yield
    finally:
        cm.__exit__(None, None, None)


def _publish(dataset_dir: Path, out: Path, opts: PublishOptions, shard_size: int, token: str | None) -> PublishResult:
    from tqdm.auto import tqdm


    manifest = read_manifest(dataset_dir)
    is_kept = manifest["status"] == "kept"
    kept, dropped = manifest[is_kept], manifest[~is_kept]
    if kept.empty:
        raise PublishError(f"no kept images in {dataset_dir}: nothing to publish")
    if kept["path"].isna().any() or kept["id"].isna().any():
        raise PublishError(f"{dataset_dir}/manifest.parquet has kept rows without `path` or `id`: rebuild")
    missing = [p for p in kept["path"] if not (dataset_dir / p).is_file()]
    if missing:
        raise PublishError(
            f"{len(missing)} kept image(s) missing under {dataset_dir}, e.g. {missing[0]}: rebuild"
        )
    hash_cols = [h for h in HASH_COLUMNS if h in manifest.columns]

    out.parent.mkdir(parents=True, exist_ok=True)
    staging, lock_fd = _start_staging(out)
    writers: list[_ShardWriter] = []
    try:
        main = _ShardWriter(staging / "data", _features(hash_cols, False), shard_size)
        writers.append(main)
        small = None
        if opts.max_side:
            small = _ShardWriter(
                staging / f"data_max_side_{opts.max_side}", _features(hash_cols, True), shard_size
            )
            writers.append(small)
        total_bytes = 0
        bar = tqdm(total=len(kept), desc="publish", unit="img", disable=not opts.progress)
        needed = ["path", "id", "source", "origin", "width", "height", "entropy", *hash_cols, "licence"]
        for rec in _records(kept[needed]):
            data = (dataset_dir / rec["path"]).read_bytes()
            total_bytes += len(data)
            base = {
                "id": rec["id"],
                "source": rec["source"],
                "origin": rec["origin"],
                "width": rec["width"],
                "height": rec["height"],
            }
            meta = {"entropy": rec["entropy"], **{h: rec[h] for h in hash_cols}, "licence": rec["licence"]}
            name = Path(rec["path"]).name
            main.add({"image": {"bytes": data, "path": name}, **base, **meta}, len(data))
            if small is not None:
                try:
                    sdata, w, h, ext = _downscale(data, opts.max_side)
                except PublishError as exc:
                    raise PublishError(f"{rec['path']}: {exc}") from None
                sname = f"{rec['id']}.{ext}" if ext else name
                row = {"image": {"bytes": sdata, "path": sname}, **base, "width": w, "height": h,
                       "orig_width": rec["width"], "orig_height": rec["height"], **meta}  # fmt: skip
                small.add(row, len(sdata))
            bar.update()
        bar.close()

        shards = {"default": [f"data/{n}" for n in main.close()]}
        configs = [CardConfig("default", "data/train-*", len(kept), "the stored images, byte for byte", True)]
        if small is not None:
            name = f"max_side_{opts.max_side}"
            shards[name] = [f"data_max_side_{opts.max_side}/{n}" for n in small.close()]
            configs.append(
                CardConfig(
                    name,
                    f"data_max_side_{opts.max_side}/train-*",
                    len(kept),
                    f"longer side at most {opts.max_side} px (PNG where resized; original size in "
                    "`orig_width`, `orig_height`)",
                )  # fmt: skip
            )
        writers.clear()

        (staging / "manifest").mkdir()
        write_table(
            staging / "manifest" / "dropped.parquet", frame_to_table(dropped)
        )
        if len(dropped):
            configs.append(CardConfig("dropped", "manifest/dropped.parquet", len(dropped),
                                      "every dropped input item with `origin` and `reason` (no images)"))  # fmt: skip

        figures = []
        report = dataset_dir / "report"
        if report.is_dir():
            for png in sorted(report.glob("*.png")):
                (staging / "figures").mkdir(exist_ok=True)
                shutil.copyfile(png, staging / "figures" / png.name)
                figures.append(f"figures/{png.name}")

        inputs = CardInputs(opts.pretty_name, kept, dropped, configs, total_bytes, figures, opts.repo_id)
        card = card_markdown(inputs)
        _validate_card(card)
        write_text_atomic(staging / "README.md", card)
        licence, per_source = licence_front_matter(kept)
        if licence["license"] == "other":
            write_text_atomic(staging / "LICENSE.md", "# Licences of the Inf30 sources\n\n"
                              + licence_markdown(per_source) + "\n")  # fmt: skip
        _swap_in(staging, out, opts.overwrite)
    except BaseException:
        for w in writers:
            w.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _end_staging(staging, lock_fd)

    result = PublishResult(out=out, rows=len(kept), dropped=len(dropped), shards=shards)
    if opts.push:
        result.url = push(out, opts.repo_id or "", private=opts.private, token=token, endpoint=opts.endpoint)
    return result


def _validate_card(text: str) -> None:
    """Parse the card with huggingface_hub and check the `configs` like `datasets` does (offline)."""
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    card = DatasetCard(text)
    MetadataConfigs.from_dataset_card_data(card.data)


def is_published(path: str | os.PathLike) -> bool:
    """True for a folder written by :func:`publish` (card + data shards)."""
    p = Path(path)
    return (p / "README.md").is_file() and any((p / "data").glob("train-*.parquet"))


# ------------------------------------------------------------------------------------------------ push

# Published-layout folders that a new push replaces entirely (so stale shards of an older push, e.g.
# train-00000-of-00003.parquet after a re-shard to 2 files, do not linger on the Hub and get loaded).
_MANAGED = ["data/*", "data_max_side_*/*", "manifest/*", "figures/*", "LICENSE.md"]


def push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Create or update the Hub dataset repo ``repo_id`` from a published ``folder``; return its URL.

    Uses ``HfApi.upload_folder``: with hf_xet (a dependency of huggingface_hub) it is the resumable,
    multi-commit large-folder upload of huggingface_hub 1.x/2.x; re-running after an interruption skips what
    is already on the Hub. The token is only sent in the Authorization header, never printed.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    repo_id = _check_repo_id(repo_id)
    if not is_published(folder):
        raise PublishError(f"{folder} is not a published dataset (README.md + data/train-*.parquet)")
    token = resolve_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            commit_message="Publish Inf30 (inf30 publish)",
            delete_patterns=_MANAGED,
            ignore_patterns=[".*", "**/.*"],
        )
    except Exception as exc:  # noqa: BLE001 - every Hub/network failure becomes one clean line
        raise PublishError(_push_error(exc, repo_id, folder, token)) from None
    return str(url)


def _push_error(exc: Exception, repo_id: str, folder: Path, token: str) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    server = (getattr(exc, "server_message", None) or "").strip()
    first = (server or str(exc).strip() or exc.__class__.__name__).splitlines()[0]
    first = first.replace(token, "***")
    why = f"rejected (HTTP {status}: {first})" if status else f"failed ({exc.__class__.__name__}: {first})"
    if status in (401, 403):
        why += " - check that the token is valid and may write to this namespace"
    return (
        f"push to {repo_id} {why}; the local repository in {folder} is complete: "
        f"retry with `inf30 publish {folder} --repo-id {repo_id} --push`"
    )


# ------------------------------------------------------------------------------------------------ load


def published_files(folder: str | os.PathLike, config: str = "default", split: str = "train") -> list[str]:
    """The data files of ``config``/``split`` of a local published ``folder``, as its card lists them
    (sorted paths); ValueError (one line) for a config or split the card does not have."""
    from huggingface_hub import DatasetCard

    folder = Path(folder)
    configs = DatasetCard.load(folder / "README.md").data.to_dict().get("configs") or []
    names = [c.get("config_name") for c in configs]
    for c in configs:
        if c.get("config_name") != config:
            continue
        patterns = [d["path"] for d in c.get("data_files", []) if d.get("split") == split]
        files = sorted({str(f) for pat in patterns for f in folder.glob(pat) if f.is_file()})
        if not files:
            raise ValueError(f"{folder}: config {config!r} has no files for split {split!r}")
        return files
    raise ValueError(f"{folder}: no config {config!r} in its card (configs: {', '.join(map(str, names))})")


def load_published(
    path: str | os.PathLike, config: str = "default", split: str = "train", streaming: bool = False, **kwargs: Any
):
    """Load a published Inf30 dataset (local folder or Hub repo id) with ``datasets.load_dataset``.

    Column ``image`` decodes to a PIL image (mode L). ``config`` is ``default`` or ``max_side_<N>``; other
    keyword arguments (``cache_dir``, ``num_proc``, ...) go to ``load_dataset``. A local folder is read
    through the parquet builder from the files its card lists, so the cache is keyed by their content
    (``load_dataset(FOLDER)`` keys by the folder's name: two folders both called ``published`` would
    return the same stale rows).
    """
    from datasets import load_dataset

    if Path(path).is_dir() and is_published(path):
        files = published_files(path, config, split)
        return load_dataset("parquet", data_files={split: files}, split=split, streaming=streaming, **kwargs)
    return load_dataset(str(path), config, split=split, streaming=streaming, **kwargs)
