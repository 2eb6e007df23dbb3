"""The pre-training data pipeline: any image source -> augmented, normalized tensors in resumable batches.

Sources (:func:`open_source` picks the kind):

- a folder written by ``inf30 build`` (it has ``manifest.parquet``): the manifest's kept rows;
- a dataset written by ``inf30 publish``, a ``save_to_disk`` folder, or any ``datasets``-loadable local path or
  Hub id: the first column whose feature type is ``datasets.Image``;
- a plain folder of images (searched recursively).

Every image is decoded to 8-bit gray (any mode, any size), then (paper recipe, IMPLEMENTATION-NOTES):
random resized crop to the input size (scale 0.2-1.0, aspect 3/4-4/3, bicubic), horizontal flip with p=0.5,
gray replicated to 3 channels, normalized with mean 0.425 and std 0.200.

Determinism: the augmentation of a sample depends only on ``(seed, epoch, position in the epoch's global
order)``, never on the worker, rank or process that decodes it. :class:`EpochBatchSampler` yields
``(index, sample_seed)`` pairs, shards each global batch over the ranks, and can start an epoch at any step,
so a run resumed mid-epoch, or run on a different number of processes, sees exactly the same samples.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

MEAN = 0.425
STD = 0.200
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".gif")
DATASET_FILE_EXTENSIONS = (".parquet", ".arrow", ".jsonl", ".csv")

Image.MAX_IMAGE_PIXELS = 400_000_000  # the paper's largest frames are 6912x1024; keep a bomb limit


class DataError(ValueError):
    """A dataset the trainer cannot use (empty, unreadable, no image column); the message is one line."""


# ----------------------------------------------------------------------------------------------- decoding
def to_gray8(img: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit single-channel (mode ``L``).

    16-bit and float images are scaled by their 1st-99th percentiles (the same gain control ``inf30 build``
    applies); palette, RGB(A) and LA images become luminance.
    """
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = np.percentile(arr, (1.0, 99.0))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out = np.clip((arr - lo) * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(out, mode="L")
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

    @property
    def describe(self) -> str:
        return f"{len(self)} images from {self.kind} {self.location}"


class FileListSource(ImageSource):
    """Images given as file paths (a built dataset's kept rows, or a plain folder)."""

    def __init__(self, paths: Sequence[str], kind: str, location: str) -> None:
        self.paths = list(paths)
        self.kind = kind
        self.location = location

    def __len__(self) -> int:
        return len(self.paths)

    def gray(self, i: int) -> Image.Image:
        return load_gray(self.paths[i])

    def name(self, i: int) -> str:
        return self.paths[i]


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
        value = self.ds[int(i)][self.column]
        if isinstance(value, Image.Image):
            value.load()
            return to_gray8(value)
        if isinstance(value, dict):  # undecoded Image feature: {"bytes": ..., "path": ...}
            if value.get("bytes") is not None:
                import io

                return load_gray(io.BytesIO(value["bytes"]))
            return load_gray(value["path"])
        raise DataError(f"column {self.column!r} of {self.location} does not hold images")


def _image_files(folder: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                out.append(os.path.join(root, f))
    return out


def _has_dataset_files(folder: Path) -> bool:
    if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
        return True
    for _root, _dirs, files in os.walk(folder):
        if any(f.endswith(DATASET_FILE_EXTENSIONS) for f in files):
            return True
    return False


def _is_published(path: Path) -> bool:
    """A folder written by ``inf30 publish`` (its card selects the data files)."""
    try:
        from inf30.publish import is_published
    except ImportError:  # pragma: no cover - publish is part of the toolkit
        return False
    return is_published(path)


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


def _pick_split(dsd, location: str):
    from datasets import DatasetDict

    if not isinstance(dsd, DatasetDict):
        return dsd
    if "train" in dsd:
        return dsd["train"]
    if len(dsd) == 1:
        return next(iter(dsd.values()))
    raise DataError(f"{location} has splits {sorted(dsd)} and none is 'train'")


def _open_datasets(src: str) -> ImageSource:
    path = Path(src)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            from datasets import load_from_disk

            ds = _pick_split(load_from_disk(str(path)), src)
        elif path.is_dir() and _is_published(path):
            from inf30.publish import load_published

            ds = load_published(str(path), split="train")
        else:
            from datasets import load_dataset

            ds = _pick_split(load_dataset(str(src)), src)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
        msg = " ".join(str(exc).split())[:300] or exc.__class__.__name__
        raise DataError(f"cannot load {src} as a dataset: {msg}") from None
    column = _pick_image_column(ds, src)
    return HFSource(ds, column, src)


def open_source(src: str | os.PathLike, check: int = 4) -> ImageSource:
    """Open SRC as an image collection and check that it is non-empty and that its first images decode.

    Raises :class:`DataError` (one line) for an empty, missing or unreadable source.
    """
    src = str(src)
    path = Path(src)
    if path.is_dir():
        from inf30.manifest import MANIFEST_NAME, kept, read_manifest

        if (path / MANIFEST_NAME).exists():
            try:
                rows = kept(read_manifest(path))
            except Exception as exc:  # noqa: BLE001
                msg = " ".join(str(exc).split())[:200]
                raise DataError(f"cannot read {path / MANIFEST_NAME}: {msg}") from None
            rows = rows[rows["path"].notna()]
            source: ImageSource = FileListSource(
                [str(path / p) for p in rows["path"]], kind="built dataset", location=src
            )
        elif _has_dataset_files(path):
            source = _open_datasets(src)
        else:
            source = FileListSource(_image_files(path), kind="image folder", location=src)
    elif path.is_file():
        raise DataError(f"{src} is a file; give a dataset folder, a published dataset or a folder of images")
    elif src.count("/") == 1 and not src.startswith((".", "/", "~")):
        source = _open_datasets(src)  # a Hub id such as user/inf30
    else:
        raise DataError(f"{src} does not exist")
    if len(source) == 0:
        raise DataError(f"no images in {src} ({source.kind})")
    _check_readable(source, check)
    return source


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
def random_resized_crop_box(
    width: int, height: int, rng: random.Random, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """Crop box (left, top, right, bottom) with torchvision's RandomResizedCrop rule, drawn from ``rng``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height  # fallback: central crop clamped to the ratio range
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def to_tensor(gray: Image.Image) -> torch.Tensor:
    """8-bit gray PIL image -> normalized float tensor [3, H, W] (gray replicated)."""
    # numpy, not torch: no intra-op thread pool here (OpenMP threads spin badly on a busy machine)
    x = (np.asarray(gray, dtype=np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(x, (3, *x.shape))))


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

    ``ds[(i, seed)]`` -> float tensor [3, size, size], augmented with ``random.Random(seed)``. An image that
    fails to decode is replaced (with a warning) by the next one that decodes, deterministically.
    """

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
        return to_tensor(augment(self._gray(int(index)), self.size, rng))

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
    """What :func:`make_loader` built."""

    loader: torch.utils.data.DataLoader
    sampler: EpochBatchSampler
    dataset: PretrainDataset

    def to_input(self, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A loader batch -> the model's input on `device` ([micro, 3, size, size] float). The training loop
        calls this for every batch, so a loader that augments on the device does its work here."""
        return batch.to(device, non_blocking=True)


def _worker_init(worker_id: int) -> None:
    # augmentation uses per-sample seeds; keep the libraries' global RNGs distinct and reproducible anyway
    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else worker_id) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)


def make_loader(
    source: ImageSource, size: int, global_batch: int, world: int = 1, rank: int = 0, accum: int = 1,
    seed: int = 0, workers: int = 0, pin_memory: bool = False, prefetch: int = 4,
) -> LoaderInfo:
    """A DataLoader of normalized batches [micro, 3, size, size] for this rank (see :class:`EpochBatchSampler`)."""
    dataset = PretrainDataset(source, size)
    sampler = EpochBatchSampler(len(dataset), global_batch, world, rank, accum, seed)
    kwargs: dict = {}
    if workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": prefetch, "worker_init_fn": _worker_init}
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory, **kwargs
    )
    return LoaderInfo(loader, sampler, dataset)
