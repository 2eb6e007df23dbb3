"""Perceptual hashes of normalized 8-bit images, as 16-hex-char strings for 64-bit hashes.

pHash, dHash and aHash follow imagehash's algorithms and bit layout exactly (``str(imagehash.phash(img))``
format: the 8x8 bit matrix row-major, most significant bit first) but downscale with OpenCV's area filter
instead of Pillow's Lanczos filter and compute the DCT as one small matrix product. That is roughly 10x
faster than imagehash (``benchmarks/dedupe_scale.py --hash-only`` measures it against imagededup's PHash);
the bits agree with imagehash's for the large majority of positions (the same benchmark prints the mean
Hamming distance between the two on real images), so thresholds carry over. wHash uses imagehash (PyWavelets).
"""

from __future__ import annotations

import cv2
import imagehash
import numpy as np
from PIL import Image


def _dct_matrix(n: int = 32, keep: int = 8) -> np.ndarray:
    """First ``keep`` rows of the unnormalized DCT-II matrix (scipy.fftpack.dct, type 2, norm=None): (keep, n)."""
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT8 = _dct_matrix()


def _small(gray: np.ndarray, w: int, h: int) -> np.ndarray:
    return cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)


def _bits_to_hex(bits: np.ndarray) -> str:
    return np.packbits(bits.ravel().astype(np.uint8)).tobytes().hex()


def phash(gray: np.ndarray) -> str:
    """64-bit pHash of an 8-bit gray image (H, W): 32x32 downscale, 2-D DCT, 8x8 low frequencies > median."""
    px = _small(gray, 32, 32).astype(np.float64)
    # _DCT8 @ px @ _DCT8.T with OpenCV's single-threaded gemm: numpy's BLAS would wake its thread pool,
    # whose spinning threads slow a build worker that is meant to use one core.
    low = cv2.gemm(cv2.gemm(_DCT8, px, 1.0, None, 0.0), _DCT8, 1.0, None, 0.0, flags=cv2.GEMM_2_T)
    mid = np.sort(low, axis=None)[31:33]  # np.median of the 64 values, without its per-call overhead
    return _bits_to_hex(low > (mid[0] + mid[1]) / 2)


def dhash(gray: np.ndarray) -> str:
    """64-bit dHash (horizontal gradient signs on a 9x8 downscale) of an 8-bit gray image (H, W)."""
    px = _small(gray, 9, 8).astype(np.int16)
    return _bits_to_hex(px[:, 1:] > px[:, :-1])


def ahash(gray: np.ndarray) -> str:
    """64-bit aHash (8x8 downscale > its mean) of an 8-bit gray image (H, W)."""
    px = _small(gray, 8, 8).astype(np.float64)
    return _bits_to_hex(px > px.mean())


def whash(gray: np.ndarray) -> str:
    """64-bit wHash (Haar wavelet) of an 8-bit gray image (H, W), by imagehash."""
    return str(imagehash.whash(Image.fromarray(gray, "L")))


HASHES = {"phash": phash, "dhash": dhash, "whash": whash, "ahash": ahash}


def compute_hashes(gray: np.ndarray | Image.Image, kinds: tuple[str, ...] = ("phash",)) -> dict[str, str]:
    """Hashes named in ``kinds`` of an 8-bit gray image (H, W) -> {kind: 16-hex-char string}."""
    if isinstance(gray, Image.Image):
        gray = np.asarray(gray.convert("L"))
    arr = np.ascontiguousarray(np.asarray(gray, dtype=np.uint8))
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"expected a non-empty 2-D 8-bit gray image, got shape {arr.shape}")
    out = {}
    for kind in kinds:
        if kind not in HASHES:
            raise ValueError(f"unknown hash {kind!r}; choose from {', '.join(HASHES)}")
        out[kind] = HASHES[kind](arr)
    return out
