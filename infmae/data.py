"""The pre-training data pipeline: any image source -> augmented, normalized tensors in resumable batches.

Sources (:func:`open_source` picks the kind):

- a folder written by ``inf30 build`` (it has ``manifest.parquet``): the manifest's kept rows;
- a dataset written by ``inf30 publish``, a ``save_to_disk`` folder, or any ``datasets``-loadable local path or
  Hub id: the first column whose feature type is ``datasets.Image``;
- a plain folder of images (searched recursively).

Every image is decoded to 8-bit gray (any mode, any size), then (the paper's recipe):
random resized crop to the input size (scale 0.2-1.0, aspect 3/4-4/3, bicubic), horizontal flip with p=0.5,
gray replicated to 3 channels, normalized with mean 0.425 and std 0.200.

Determinism: the augmentation of a sample depends only on ``(seed, epoch, position in the epoch's global
order)``, never on the worker, rank or process that decodes it. :class:`EpochBatchSampler` yields
``(index, sample_seed)`` pairs, shards each global batch over the ranks, and can start an epoch at any step,
so a run resumed mid-epoch, or run on a different number of processes, sees exactly the same samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from inf30.dataset import is_built
from inf30.dataset import open as open_dataset
from inf30.decode import agc
from inf30.files import IMAGE_SUFFIXES, image_files
from infmae.augment import MEAN, STD, augment_batch, center_batch, random_resized_crop_box

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # the one list (inf30.files): build, entropy and pretrain see the same files
DATASET_FILE_EXTENSIONS = (".parquet", ".arrow", ".jsonl", ".csv")

Image.MAX_IMAGE_PIXELS = 400_000_000  # the paper's largest frames are 6912x1024; keep a bomb limit


# a pack (``infmae pack``, infmae/pack.py): PACK/pack.json (written last), index.parquet, shards/NNNNN.bin
PACK_FORMAT = "infmae-pack"
PACK_FILE = "pack.json"
PLAN_FILE = "plan.json"
INDEX_FILE = "index.parquet"
SHARDS_DIR = "shards"
PACK_BESIDE = "pack"  # a built or published dataset's pack, used automatically when up to date


class DataError(ValueError):
    """A dataset the trainer cannot use (empty, unreadable, no image column); the message is one line."""


# ----------------------------------------------------------------------------------------------- decoding
def to_gray8(img: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit single-channel (mode ``L``).

    16-bit and float images go through :func:`inf30.decode.agc` (1st-99th percentiles, the build's gain
    control: rounded, non-finite values to 0); palette, RGB(A) and LA images become luminance.
    """
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(agc(np.asarray(img))[0], mode="L")
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    return img.convert("L")


def load_gray(path_or_file) -> Image.Image:
    """Decode an image file (path or file object) to an 8-bit gray PIL image, fully loaded."""
    with Image.open(path_or_file) as img:
        img.load()
        return to_gray8(img)


# ----------------------------------------------------------------------------------------------- sources
class ImageSource:
    """A map-style collection of images: ``len(src)``, ``src.gray(i) -> PIL L image``, ``src.describe``."""

    kind = "?"
    location = ""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def gray(self, i: int) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError

    def name(self, i: int) -> str:
        return f"{self.location}[{i}]"

    def record(self, i: int) -> tuple[Image.Image, str, str]:
        """``(gray image, id, source name)`` of item ``i`` (what ``infmae pack`` stores in its index)."""
        return self.gray(i), str(i), self.location

    @property
    def describe(self) -> str:
        return f"{len(self)} images from {self.kind} {self.location}"


class FileListSource(ImageSource):
    """Images given as file paths (a built dataset's kept rows, or a plain folder)."""

    def __init__(
        self, paths: Sequence[str], kind: str, location: str, ids: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.kind = kind
        self.location = location
        self.ids = list(ids) if ids is not None else None  # a built dataset's manifest ids
        self.sources = list(sources) if sources is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def gray(self, i: int) -> Image.Image:
        return load_gray(self.paths[i])

    def name(self, i: int) -> str:
        return self.paths[i]

    def record(self, i: int) -> tuple[Image.Image, str, str]:
        rel = os.path.relpath(self.paths[i], self.location)
        return (self.gray(i), self.ids[i] if self.ids is not None else rel,
                self.sources[i] if self.sources is not None else self.location)


class HFSource(ImageSource):
    """A ``datasets.Dataset`` with an image column (decoded lazily, one row at a time)."""

    kind = "datasets"

    def __init__(self, ds, column: str, location: str) -> None:
        self.ds = ds
        self.column = column
        self.location = location

    def __len__(self) -> int:
        return len(self.ds)

    def gray(self, i: int) -> Image.Image:
        return self._decode(self.ds[int(i)][self.column])

    def record(self, i: int) -> tuple[Image.Image, str, str]:
        row = self.ds[int(i)]
        return self._decode(row[self.column]), str(row.get("id", i)), str(row.get("source", self.location))

    def _decode(self, value) -> Image.Image:
        if isinstance(value, Image.Image):
            value.load()
            return to_gray8(value)
        if isinstance(value, dict):  # undecoded Image feature: {"bytes": ..., "path": ...}
            if value.get("bytes") is not None:
                import io

                return load_gray(io.BytesIO(value["bytes"]))
            return load_gray(value["path"])
        raise DataError(f"column {self.column!r} of {self.location} does not hold images")


def _dataset_files(folder: Path) -> Iterator[Path]:
    """Files with a ``datasets`` extension below ``folder``, sorted, outside packs and hidden folders."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not is_pack(os.path.join(root, d)))
        for f in sorted(files):
            if f.endswith(DATASET_FILE_EXTENSIONS):
                yield Path(root) / f


def _has_dataset_files(folder: Path) -> bool:
    if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
        return True
    return next(_dataset_files(folder), None) is not None


def _pick_image_column(ds, location: str) -> str:
    from datasets import Image as ImageFeature

    features = getattr(ds, "features", None) or {}
    cols = [name for name, feat in features.items() if isinstance(feat, ImageFeature)]
    if cols:
        return "image" if "image" in cols else cols[0]
    raise DataError(
        f"{location} has no image column (columns: {', '.join(features) or 'none'}); "
        "expected a column of feature type datasets.Image"
    )


def _open_datasets(src: str) -> ImageSource:
    try:
        ds = open_dataset(src).table
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
        msg = " ".join(str(exc).split())[:300] or exc.__class__.__name__
        raise DataError(f"cannot load {src} as a dataset: {msg}") from None
    column = _pick_image_column(ds, src)
    return HFSource(ds, column, src)


HUB_TIMEOUT = 5.0  # seconds to ask the Hub whether a dataset id exists before loading it
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
_FILE_SUFFIXES = IMAGE_EXTENSIONS + DATASET_FILE_EXTENSIONS + (".json", ".txt", ".zip", ".tar", ".gz", ".yaml")


def _missing_path_error(src: str) -> DataError | None:
    """Why SRC, which does not exist locally, is not tried on the Hub (None: it is a plausible repo id)."""
    if not _REPO_ID.fullmatch(src) or ".." in src or src.lower().endswith(_FILE_SUFFIXES):
        return DataError(f"{src} does not exist")
    first = src.split("/")[0]
    if Path(first).exists():  # "inf30/demo" beside a local inf30/: a mistyped path, not a Hub id
        return DataError(f"{src} does not exist ({first}/ is a local folder; not trying it as a Hub dataset id)")
    return None


def _check_hub_dataset(repo_id: str) -> None:
    """Ask the Hub (``HF_ENDPOINT``, ``HUB_TIMEOUT`` s, no retries) whether dataset ``repo_id`` exists; one-line
    DataError when it does not or the Hub does not answer. Skipped in offline mode (the cache answers)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        HfApi(endpoint=endpoint).dataset_info(repo_id, timeout=HUB_TIMEOUT)
    except RepositoryNotFoundError:
        raise DataError(
            f"{repo_id} is not a local path and not a dataset on {endpoint} (or a private one without access)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - connection refused, timeout, DNS, HTTP 5xx: one line
        msg = " ".join(str(exc).split())[:160] or exc.__class__.__name__
        raise DataError(
            f"{repo_id} is not a local path, and {endpoint} did not answer within {HUB_TIMEOUT:g} s whether it is a "
            f"Hub dataset ({msg}); check the path, or set HF_HUB_OFFLINE=1 to use a cached copy"
        ) from None


def open_source(src: str | os.PathLike, check: int = 4, packs: bool = True) -> ImageSource:
    """Open SRC as an image collection and check that it is non-empty and that its first images decode.

    A pack (``infmae pack``) opens as a :class:`PackSource`; so does a built or published dataset with an
    up-to-date pack in ``SRC/pack`` (unless ``packs=False``). Raises :class:`DataError` (one line) for an
    empty, missing or unreadable source.
    """
    src = str(src)
    path = Path(src)
    if path.is_dir() and is_pack(path):
        return PackSource(PackedImages(path))
    if path.is_dir():
        if is_built(path):
            try:
                built = open_dataset(path)
            except Exception as exc:  # noqa: BLE001
                msg = " ".join(str(exc).split())[:200]
                raise DataError(f"cannot read {path / 'manifest.parquet'}: {msg}") from None
            source: ImageSource = FileListSource(
                built.paths, kind="built dataset", location=src, ids=built.ids, sources=built.sources,
            )
        elif _has_dataset_files(path):
            source = _open_datasets(src)
        else:
            source = FileListSource(image_files(path)[0], kind="image folder", location=src)
    elif path.is_file():
        raise DataError(f"{src} is a file; give a dataset folder, a published dataset or a folder of images")
    else:
        err = _missing_path_error(src)
        if err is not None:
            raise err
        _check_hub_dataset(src)
        source = _open_datasets(src)  # a Hub id such as user/inf30
    if len(source) == 0:
        raise DataError(f"no images in {src} ({source.kind})")
    _check_readable(source, check)
    if packs and path.is_dir() and is_pack(path / PACK_BESIDE):
        beside = _pack_beside(source, path / PACK_BESIDE)
        if beside is not None:
            return beside
    return source


def source_fingerprint(source: ImageSource) -> str:
    """A short hash that changes when the source's images change: a built dataset's stored paths (content
    addressed), an image folder's relative paths, sizes and mtimes, a published folder's parquet names and
    sizes, otherwise the ``datasets`` fingerprint."""
    h = hashlib.sha256(f"{source.kind}|{len(source)}".encode())
    if isinstance(source, FileListSource):
        stat = source.kind != "built dataset"
        for p in source.paths:
            h.update(os.path.relpath(p, source.location).encode("utf-8", "surrogateescape") + b"\0")
            if stat:
                st = os.stat(p)
                h.update(f"{st.st_size}:{st.st_mtime_ns}\0".encode())
    elif isinstance(source, HFSource):
        loc = Path(source.location)
        files = list(_dataset_files(loc)) if loc.is_dir() else []
        for f in files:
            h.update(f"{f.relative_to(loc)}:{f.stat().st_size}\0".encode())
        if not files:
            h.update(str(getattr(source.ds, "_fingerprint", source.location)).encode())
    else:
        h.update(source.location.encode())
    return h.hexdigest()[:32]


def _pack_beside(source: ImageSource, pack_dir: Path) -> ImageSource | None:
    """The pack in ``SRC/pack`` when it was made from exactly this source, else None (with a warning)."""
    try:
        packed = PackedImages(pack_dir)
    except DataError as exc:
        warnings.warn(f"ignoring {pack_dir}: {exc}; using the decode loader", stacklevel=3)
        return None
    if packed.meta["source"]["fingerprint"] != source_fingerprint(source):
        warnings.warn(
            f"ignoring {pack_dir}: it was packed from another version of {source.location}; re-run "
            f"`infmae pack {source.location} --out {pack_dir}` (using the decode loader)", stacklevel=3,
        )
        return None
    return PackSource(packed, beside=source)


def _check_readable(source: ImageSource, check: int) -> None:
    """Decode up to ``check`` images spread over the source; fail when none decodes."""
    n = len(source)
    picks = sorted({int(i * n / max(1, check)) for i in range(min(check, n))})
    errors = []
    for i in picks:
        try:
            source.gray(i)
            return
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{source.name(i)}: {exc.__class__.__name__}")
    raise DataError(f"{source.location} is unreadable: none of {len(picks)} checked images decodes ({errors[0]})")


# ----------------------------------------------------------------------------------------------- transforms
def to_tensor(gray: Image.Image, channels: int = 3) -> torch.Tensor:
    """8-bit gray PIL image -> normalized float tensor [channels, H, W] (gray replicated; 1: no copy)."""
    # numpy, not torch: no intra-op thread pool here (OpenMP threads spin badly on a busy machine)
    x = (np.asarray(gray, dtype=np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(x[None] if channels == 1 else np.ascontiguousarray(np.broadcast_to(x, (channels, *x.shape))))


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Normalized images [..., 3, H, W] -> [0, 1] floats (clamped)."""
    return (x.float() * STD + MEAN).clamp(0.0, 1.0)


def augment(gray: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """Random resized crop to ``size`` x ``size`` (scale 0.2-1.0, bicubic) and horizontal flip (p=0.5)."""
    box = random_resized_crop_box(gray.width, gray.height, rng)
    out = gray.resize((size, size), Image.Resampling.BICUBIC, box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def center_view(gray: Image.Image, size: int) -> Image.Image:
    """Deterministic view for visualization: resize the shorter side to ``size``, center-crop a square."""
    w, h = gray.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return gray.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


class PretrainDataset(torch.utils.data.Dataset):
    """Map-style dataset over an :class:`ImageSource`, indexed by ``(index, sample_seed)``.

    ``ds[(i, seed)]`` -> float tensor [channels, size, size] (3, or 1 for a model that takes gray input, see
    :meth:`LoaderInfo.match_model`), augmented with ``random.Random(seed)``. An image that fails to decode
    is replaced (with a warning) by the next one that decodes, deterministically.
    """

    channels = 3

    def __init__(self, source: ImageSource, size: int) -> None:
        if size % 16 or size <= 0:
            raise DataError(f"--input-size must be a positive multiple of 16, got {size}")
        self.source = source
        self.size = size
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.source)

    def _gray(self, i: int) -> Image.Image:
        n = len(self.source)
        for k in range(min(n, 64)):
            j = (i + k) % n
            try:
                return self.source.gray(j)
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
                if j not in self._warned:
                    self._warned.add(j)
                    warnings.warn(f"skipping unreadable image {self.source.name(j)}: {exc}", stacklevel=2)
        raise DataError(f"{self.source.location}: 64 consecutive images failed to decode near index {i}")

    def __getitem__(self, item: tuple[int, int] | int) -> torch.Tensor:
        if isinstance(item, tuple):
            index, seed = item
        else:
            index, seed = int(item), int(item)
        rng = random.Random(seed)
        return to_tensor(augment(self._gray(int(index)), self.size, rng), self.channels)

    def fixed_views(self, count: int) -> torch.Tensor:
        """``count`` images spread over the dataset, center view, no augmentation: [count, 3, size, size]."""
        n = len(self.source)
        idx = [int(k * n / count) for k in range(min(count, n))]
        return torch.stack([to_tensor(center_view(self._gray(i), self.size)) for i in idx])


# ----------------------------------------------------------------------------------------------- sampling
def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for the sample at ``position`` of ``epoch``'s global order (stable across processes)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + position * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    return x >> 1


class EpochBatchSampler(torch.utils.data.Sampler):
    """Resumable, distributed batch sampler yielding lists of ``(index, sample_seed)``.

    Each epoch has one global order (a permutation seeded by ``seed + epoch``). Global step ``s`` uses the
    ``global_batch`` consecutive positions ``s*global_batch ...``; rank ``r`` takes its contiguous slice of
    ``global_batch / world`` positions, which it yields as ``accum`` micro-batches. The incomplete last global
    batch is dropped. So 1 process with batch B and W processes with B/W each see identical samples, and
    ``set_epoch(e, start_step=k)`` skips the first ``k`` steps exactly (mid-epoch resume).
    """

    def __init__(
        self, n: int, global_batch: int, world: int = 1, rank: int = 0, accum: int = 1, seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_batch % (world * accum):
            raise DataError(
                f"--batch {global_batch} must be divisible by processes x --accum = {world} x {accum}"
            )
        self.n = n
        self.global_batch = global_batch
        self.world = world
        self.rank = rank
        self.accum = accum
        self.micro = global_batch // (world * accum)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_step = 0
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the dataset has {n} images, fewer than one batch of {global_batch}; lower --batch"
            )

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (full global batches)."""
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's order and the first optimizer step to yield (0 = from the start)."""
        self.epoch = epoch
        self.start_step = start_step

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order(self.epoch)
        per_rank = self.global_batch // self.world
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.global_batch + self.rank * per_rank
            for m in range(self.accum):
                lo = base + m * self.micro
                yield [(order[p], sample_seed(self.seed, self.epoch, p)) for p in range(lo, lo + self.micro)]


@dataclass
class LoaderInfo:
    """What :func:`make_loader` built; ``describe`` says which loader runs (the training log prints it)."""

    loader: torch.utils.data.DataLoader
    sampler: EpochBatchSampler
    dataset: PretrainDataset | PackedDataset
    describe: str = ""
    channels: int = 3  # input channels handed to the model (1: gray, see `match_model`)

    def match_model(self, model: torch.nn.Module) -> LoaderInfo:
        """Hand `model` gray [micro, 1, size, size] input when it takes it as its 3-channel replication
        (``model.accepts_gray``, e.g. InfMAE: same outputs, no 3x copy), else 3 channels; returns self.
        Neither loader makes the copy then: the decode loader's workers build [1, size, size] samples when
        this is called before the first iteration (as ``pretrain`` does); batches of workers started earlier
        (persistent) stay 3 channels and are handed over as channel 0."""
        self.channels = 1 if getattr(model, "accepts_gray", False) else 3
        if isinstance(self.dataset, PretrainDataset):
            self.dataset.channels = self.channels  # read by the workers when iteration starts
        return self

    def to_input(self, batch, device: torch.device) -> torch.Tensor:
        """A loader batch -> the model's input on `device` ([micro, channels, size, size] float). The training loop
        calls this for every batch, so a loader that augments on the device does its work here."""
        batch = batch[:, : self.channels] if self.channels < batch.shape[1] else batch  # gray: 1/3 of the transfer
        return batch.to(device, non_blocking=True)


@dataclass
class PackedLoaderInfo(LoaderInfo):
    """The packed loader: batches are ``(uint8 canvas [B,1,H,W], sizes [B,2], seeds [B])``; ``to_input``
    moves them to the device and crops, flips and normalizes there (:func:`infmae.augment.augment_batch`),
    into [micro, channels, size, size]: gray (1) after :meth:`match_model` with a model that accepts it."""

    def to_input(self, batch, device: torch.device) -> torch.Tensor:
        canvas, sizes, seeds = batch
        return augment_batch(canvas, sizes, seeds, self.dataset.size, device, self.channels)


def _worker_init(worker_id: int) -> None:
    # augmentation uses per-sample seeds; keep the libraries' global RNGs distinct and reproducible anyway
    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else worker_id) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)


PACKED_WORKERS = 2  # gathering is a memory copy: two processes keep ahead of any GPU


def make_loader(
    source: ImageSource, size: int, global_batch: int, world: int = 1, rank: int = 0, accum: int = 1,
    seed: int = 0, workers: int = 0, pin_memory: bool = False, prefetch: int = 4, loader: str = "auto",
) -> LoaderInfo:
    """The loader for this rank (see :class:`EpochBatchSampler`); ``li.to_input(batch, device)`` turns each
    batch into normalized model input [micro, 3, size, size] on the device.

    ``loader``: ``auto`` (packed for a :class:`PackSource`, else decode), ``packed`` or ``decode`` (decode,
    crop and normalize in ``workers`` processes; also works on a pack, as a fallback).
    """
    if loader not in ("auto", "packed", "decode"):
        raise DataError(f"loader must be auto, packed or decode, got {loader!r}")
    packed = getattr(source, "packed", None)
    if loader == "packed" and packed is None:
        raise DataError(f"the packed loader needs a pack; make one with `infmae pack {source.location} --out PACK`")
    if packed is not None and loader != "decode":
        dataset: PretrainDataset | PackedDataset = PackedDataset(packed, size)
        workers = min(workers, PACKED_WORKERS)
    else:
        dataset = PretrainDataset(source, size)
    sampler = EpochBatchSampler(len(dataset), global_batch, world, rank, accum, seed)
    kwargs: dict = {}
    if workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": prefetch, "worker_init_fn": _worker_init}
    if isinstance(dataset, PackedDataset):
        # batch_size=None: the dataset receives the sampler's whole list and gathers it in one go
        dl = torch.utils.data.DataLoader(
            dataset, sampler=sampler, batch_size=None, num_workers=workers, pin_memory=pin_memory, **kwargs
        )
        what = (f"packed loader: uint8 gather in {workers or 'the main'} process{'es' if workers > 1 else ''}, "
                f"crop/flip/normalize on the device; {source.describe}")
        return PackedLoaderInfo(dl, sampler, dataset, what)
    dl = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory, **kwargs
    )
    what = f"decode loader: decode + bicubic crop in {workers or 'the main'} process(es); {source.describe}"
    return LoaderInfo(dl, sampler, dataset, what)


# ----------------------------------------------------------------------------------------------- packs
def is_pack(path: str | os.PathLike) -> bool:
    """A folder written (or being written) by ``infmae pack``."""
    p = Path(path)
    return (p / PACK_FILE).is_file() or (p / PLAN_FILE).is_file()


class PackedImages:
    """A pack written by ``infmae pack``: single-channel uint8 images (shorter side <= the pack's short side)
    in memory-mapped shards, with an index (shard, offset, height, width, id, source).

    ``len(p)``; ``p.image(i)`` -> uint8 array [H, W] (a view of the map); ``p.gather(indices)`` -> (uint8
    canvas [B, 1, Hmax, Wmax], zero-padded, and int64 sizes [B, 2] = (height, width)): the only CPU work of a
    training step; ``p.batch(indices, input_size, generator, device)`` -> float [B, 3, S, S], augmented on
    ``device`` and normalized, as the training loop sees it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta_path = self.path / PACK_FILE
        if not meta_path.is_file():
            if (self.path / PLAN_FILE).is_file():
                raise DataError(f"{path} is an unfinished pack; re-run the `infmae pack` command that made it")
            raise DataError(f"{path} is not a pack (no {PACK_FILE})")
        try:
            self.meta = json.loads(meta_path.read_text())
            if self.meta.get("format") != PACK_FORMAT:
                raise ValueError(f"format {self.meta.get('format')!r}")
            import pyarrow.parquet as pq

            table = pq.read_table(self.path / INDEX_FILE)
        except (OSError, ValueError) as exc:
            msg = " ".join(str(exc).split())[:200]
            raise DataError(f"cannot read pack {path}: {msg}") from None
        self.shard = table["shard"].to_numpy().astype(np.int64)
        self.offset = table["offset"].to_numpy().astype(np.int64)
        self.height = table["height"].to_numpy().astype(np.int64)
        self.width = table["width"].to_numpy().astype(np.int64)
        self.ids = table["id"].to_pylist()
        self.sources = table["source"].to_pylist()
        self.names = table["name"].to_pylist()  # where each image came from (path or source[row])
        self.shard_names = [s["name"] for s in self.meta["shards"]]
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.offset)

    def __getstate__(self) -> dict:  # DataLoader workers reopen the maps instead of pickling pixels
        return {**self.__dict__, "_maps": {}}

    def _map(self, s: int) -> np.ndarray:
        m = self._maps.get(s)
        if m is None:
            f = self.path / SHARDS_DIR / f"{self.shard_names[s]}.bin"
            m = np.memmap(f, dtype=np.uint8, mode="r") if f.stat().st_size else np.zeros(0, np.uint8)
            self._maps[s] = m
        return m

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as a read-only uint8 array [height, width] (no copy)."""
        h, w, o = int(self.height[i]), int(self.width[i]), int(self.offset[i])
        return self._map(int(self.shard[i]))[o : o + h * w].reshape(h, w)

    def gather(self, indices: Sequence[int], out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy images ``indices`` into a zero-padded uint8 canvas [B, 1, Hmax, Wmax] (``out`` when it is large
        enough, e.g. a pinned buffer); returns (canvas, sizes int64 [B, 2] as (height, width))."""
        idx = np.asarray(indices, dtype=np.int64)
        hs, ws = self.height[idx], self.width[idx]
        shape = (len(idx), 1, int(hs.max(initial=1)), int(ws.max(initial=1)))
        if out is not None and out.dim() == 4 and all(a >= b for a, b in zip(out.shape, shape, strict=True)):
            canvas = out[: shape[0], :, : shape[2], : shape[3]]
            canvas.zero_()
        else:
            canvas = torch.zeros(shape, dtype=torch.uint8)
        arr = canvas.numpy()
        for k, i in enumerate(idx.tolist()):
            arr[k, 0, : hs[k], : ws[k]] = self.image(i)
        return canvas, torch.from_numpy(np.stack([hs, ws], 1))

    def batch(
        self, indices: Sequence[int], input_size: int, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Gathered, randomly cropped (scale 0.2-1, ratio 3/4-4/3), flipped and normalized on ``device``:
        float [B, 3, S, S]. Per-sample seeds are drawn from ``generator`` (torch's global one when None)."""
        canvas, sizes = self.gather(indices)
        seeds = torch.randint(0, 2**62, (len(sizes),), generator=generator)
        return augment_batch(canvas, sizes, seeds, input_size, device)


class PackSource(ImageSource):
    """A pack as an :class:`ImageSource` (``.gray(i)`` for the decode loader and visualization); the packed
    loader uses ``.packed`` directly."""

    kind = "pack"

    def __init__(self, packed: PackedImages, beside: ImageSource | None = None) -> None:
        self.packed = packed
        self.location = str(packed.path)
        self.beside = beside
        if len(packed) == 0:
            raise DataError(f"no images in pack {packed.path}")

    def __len__(self) -> int:
        return len(self.packed)

    def gray(self, i: int) -> Image.Image:
        return Image.fromarray(np.array(self.packed.image(i)), mode="L")

    def name(self, i: int) -> str:
        return f"{self.location}[{i}] ({self.packed.ids[i]})"

    def record(self, i: int) -> tuple[Image.Image, str, str]:
        return self.gray(i), self.packed.ids[i], self.packed.sources[i]

    @property
    def describe(self) -> str:
        src = self.packed.meta["source"]
        of = f"beside {self.beside.kind} {self.beside.location}" if self.beside else f"of {src['kind']} {src['location']}"
        return f"{len(self)} images from pack {self.location} (short side <= {self.packed.meta['short_side']} px, {of})"


class PackedDataset(torch.utils.data.Dataset):
    """The packed loader's dataset: ``ds[[(index, seed), ...]]`` -> (uint8 canvas [B,1,H,W], sizes [B,2],
    seeds [B]); the augmentation happens later, on the device (:meth:`PackedLoaderInfo.to_input`)."""

    def __init__(self, packed: PackedImages, size: int) -> None:
        if size % 16 or size <= 0:
            raise DataError(f"--input-size must be a positive multiple of 16, got {size}")
        self.packed = packed
        self.size = size

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, batch: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        canvas, sizes = self.packed.gather([int(i) for i, _ in batch])
        return canvas, sizes, torch.tensor([int(s) for _, s in batch], dtype=torch.int64)

    def fixed_views(self, count: int) -> torch.Tensor:
        """``count`` images spread over the pack, central square view: [count, 3, size, size]."""
        n = len(self.packed)
        canvas, sizes = self.packed.gather([int(k * n / count) for k in range(min(count, n))])
        return center_batch(canvas, sizes, self.size)
