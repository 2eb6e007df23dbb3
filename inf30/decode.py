"""Decode any image file to 8-bit single-channel infrared intensity.

Rules (recorded in the manifest's ``normalization`` column):
- 8-bit gray: kept as is (``none``); the original bytes can then be stored unchanged.
- 16-bit or float radiometric data: percentile automatic gain control, ``agc(p1=..,p99=..,lo=..,hi=..)``.
- 3 equal channels: taken as gray (``gray_from_equal_channels``); differing channels: pseudo-colour or
  visible, converted to luminance (ITU-R 601-2, ``luminance``) with ``pseudocolor=True``.
- Palette, alpha, CMYK, 1-bit: converted first (``palette+...``, alpha dropped, CMYK -> RGB).
- EXIF orientation is honoured (``exif_transpose+...``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = None  # we check the pixel count ourselves, before decoding
cv2.setNumThreads(1)
try:  # OpenCV's own warnings ("PNG input buffer is incomplete") duplicate our manifest reasons
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # pragma: no cover - older OpenCV builds
    pass

DEFAULT_MAX_PIXELS = 300_000_000

# File signatures of image formats: a file that starts like one but fails to decode is "corrupt",
# anything else is "unsupported".
_SIGNATURES = (
    b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"P2", b"P5", b"P6",
    b"P3", b"\x00\x00\x00\x0cjP", b"\xff\x4f\xff\x51",
)
STORE_AS_IS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "PPM": ".pgm"}


class DecodeError(Exception):
    """Decoding failed; ``reason`` is the manifest reason (corrupt, unsupported, decompression_bomb)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Decoded:
    """A decoded, normalized image. ``gray`` is (H, W) uint8."""

    gray: np.ndarray
    orig_mode: str
    bit_depth: int
    pseudocolor: bool
    normalization: str
    format: str | None  # Pillow format name of the input, None for OpenCV-only decodes
    unchanged: bool  # the input decodes (Pillow, mode L) to exactly ``gray``: its bytes can be stored as is
    multi_frame: bool = False  # the file has more frames (TIFF stack, animated GIF/WebP/PNG); this is the first

    @property
    def store_ext(self) -> str | None:
        """The extension to store the original bytes under, or None when they must be re-encoded."""
        return STORE_AS_IS.get(self.format or "") if self.unchanged else None


def looks_like_image(data: bytes) -> bool:
    return any(data.startswith(sig) for sig in _SIGNATURES)


def agc(values: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple[np.ndarray, str]:
    """Percentile automatic gain control: map values in [p_lo, p_hi] linearly to 0..255 (clipped).

    ``values`` is (H, W) of any numeric dtype; non-finite values map to 0. Returns (uint8 image, label).
    """
    v = values.astype(np.float64, copy=False)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(v.shape, np.uint8), "agc(no finite values)"
    plo, phi = percentiles
    lo, hi = np.percentile(v[finite], [plo, phi])
    if hi <= lo:  # flat image: everything maps to mid-gray rather than dividing by zero
        hi = lo + 1.0
    out = np.where(finite, (v - lo) * (255.0 / (hi - lo)), 0.0)
    gray = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return gray, f"agc(p{plo:g}={lo:.6g},p{phi:g}={hi:.6g})"


# Mean absolute difference between colour channels (in 8-bit levels) below which an RGB image is a gray
# image with compression noise in its chroma (many public infrared sets ship like that), not pseudo-colour.
NEAR_GRAY_TOLERANCE = 2.0


def channel_spread(rgb: np.ndarray) -> float:
    """Mean absolute difference of R-G and G-B over the image, in 8-bit levels."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return float((np.abs(r - g).mean() + np.abs(g - b).mean()) / 2)


def rgb_to_gray(rgb: np.ndarray) -> tuple[np.ndarray, bool, str]:
    """(H, W, 3) uint8 RGB -> ((H, W) uint8, pseudocolor, label).

    Equal channels are taken as gray; nearly equal ones (spread <= NEAR_GRAY_TOLERANCE) are gray with
    chroma noise (luminance, not pseudo-colour); otherwise the image is pseudo-coloured or visible.
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):
        return np.ascontiguousarray(r), False, "gray_from_equal_channels"
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    if channel_spread(rgb) <= NEAR_GRAY_TOLERANCE:
        return gray, False, "luminance_near_gray"
    return gray, True, "luminance"


def _bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _from_pil(img: Image.Image, agc_p: tuple[float, float]) -> Decoded:
    fmt = img.format
    orig_mode = img.mode
    depth = _bit_depth(orig_mode)
    steps: list[str] = []
    if _orientation(img) != 1:
        img = ImageOps.exif_transpose(img)
        steps.append("exif_transpose")
    mode = img.mode
    pseudo = False
    if mode == "L":
        gray = np.asarray(img)
    elif mode == "1":
        gray = np.asarray(img.convert("L"))
        steps.append("binary_to_gray")
    elif mode in ("LA", "La"):
        gray = np.asarray(img.getchannel(0))
        steps.append("drop_alpha")
    elif mode.startswith("I") or mode == "F":
        arr = np.asarray(img)
        if arr.dtype.byteorder not in ("=", "|"):
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if mode == "I" and fmt in ("PNG", "PPM", "TIFF") and arr.size and 0 <= arr.min() and arr.max() <= 65535:
            depth = 16  # Pillow widens 16-bit PNG/PGM samples to 32-bit mode I
        gray, label = agc(arr, agc_p)
        steps.append(label)
    else:
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            steps.append("palette")
        if img.mode in ("RGBA", "RGBa", "PA"):
            steps.append("drop_alpha")
        if img.mode == "CMYK":
            steps.append("cmyk")
        rgb = np.asarray(img.convert("RGB"))
        gray, pseudo, label = rgb_to_gray(rgb)
        steps.append(label)
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    return Decoded(gray, orig_mode, depth, pseudo, "+".join(steps) or "none", fmt, unchanged=not steps)


def _from_cv2(data: bytes, agc_p: tuple[float, float]) -> Decoded:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise DecodeError("corrupt" if looks_like_image(data) else "unsupported", "no decoder could read it")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    orig_mode = f"{arr.dtype.name}x{channels}"
    depth = arr.dtype.itemsize * 8
    steps = []
    if channels == 4:
        arr = arr[..., :3]
        steps.append("drop_alpha")
    pseudo = False
    if arr.ndim == 3 and arr.shape[2] == 3:
        rgb = arr[..., ::-1]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            arr = rgb[..., 0]
            steps.append("gray_from_equal_channels")
        else:
            scale = 255.0 / np.iinfo(rgb.dtype).max if rgb.dtype.kind in "ui" else 1.0
            pseudo = channel_spread(rgb.astype(np.float64) * scale) > NEAR_GRAY_TOLERANCE
            arr = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            steps.append("luminance" if pseudo else "luminance_near_gray")
    elif arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype == np.uint8:
        gray = arr
    elif depth == 8:
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    else:
        gray, label = agc(arr, agc_p)
        steps.append(label)
    return Decoded(np.ascontiguousarray(gray), orig_mode, depth, pseudo, "+".join(steps) or "none", None, False)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # malformed EXIF is not a reason to lose the image
        return 1


_JPEG_EOI = b"\xff\xd9"
_CV2_GRAY = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


def jpeg_gray_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an 8-bit one-component JPEG without EXIF, from its header; None otherwise.

    Reads the marker segments up to the start of frame; stops at anything unexpected (the caller then
    takes the general path). A file with an EXIF segment returns None, as its orientation may apply.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
            return None
        if marker in _SOF:
            if i + 10 > n or data[i + 4] != 8 or data[i + 9] != 1:
                return None
            h = int.from_bytes(data[i + 5 : i + 7], "big")
            w = int.from_bytes(data[i + 7 : i + 9], "big")
            return (w, h) if w > 0 and h > 0 else None
        if marker in (0xDA, 0xD9) or length < 2:
            return None
        i += 2 + length
    return None


def _plain_jpeg_gray(data: bytes, max_pixels: int) -> Decoded | None:
    """Fast path for the commonest infrared file: an 8-bit gray JPEG without EXIF, decoded by OpenCV.

    OpenCV's libjpeg-turbo gives the same pixels as Pillow's (both use the accurate integer IDCT;
    ``tests/test_decode.py`` checks it on every real gray JPEG) and skips Pillow's header parsing and
    copies (about 30 % faster here). OpenCV accepts truncated files silently, so only files that end with
    the end-of-image marker take this path; anything else, an image over ``max_pixels`` and any decode
    failure take the general (Pillow) path, which gives the right reason.
    """
    size = jpeg_gray_size(data)
    if size is None or size[0] * size[1] > max_pixels or data[-64:].rstrip(b"\x00")[-2:] != _JPEG_EOI:
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_GRAY)
    if arr is None or arr.shape != (size[1], size[0]):
        return None
    return Decoded(arr, "L", 8, False, "none", "JPEG", unchanged=True)


def decode_to_gray(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    agc_percentiles: tuple[float, float] = (1.0, 99.0),
) -> Decoded:
    """Decode image bytes and normalize to 8-bit gray. Raises :class:`DecodeError` with a reason."""
    if not data:
        raise DecodeError("corrupt", "empty file")
    fast = _plain_jpeg_gray(data, max_pixels)
    if fast is not None:
        return fast
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        img = None
    except Image.DecompressionBombError as exc:  # another module set Pillow's own (global) limit
        raise DecodeError("decompression_bomb", str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:  # a header Pillow recognizes but cannot parse
        raise DecodeError("corrupt", f"bad header: {exc}") from None
    if img is None:
        return _from_cv2(data, agc_percentiles)
    w, h = img.size
    if w <= 0 or h <= 0:
        raise DecodeError("corrupt", f"invalid size {w}x{h}")
    if w * h > max_pixels:
        raise DecodeError("decompression_bomb", f"{w}x{h} = {w * h} pixels > limit {max_pixels}")
    if img.format == "TIFF" and img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        bits = img.tag_v2.get(258, (8,))
        if max(bits if isinstance(bits, tuple) else (bits,)) > 8:
            # Pillow would cut multi-channel 16-bit TIFF to 8 bits; OpenCV keeps every bit for the AGC
            return _from_cv2(data, agc_percentiles)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except Image.DecompressionBombError as exc:
        raise DecodeError("decompression_bomb", str(exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        # Pillow cannot decode some valid files (16-bit multi-channel TIFF, some float TIFFs):
        # OpenCV gets a chance before we call the file corrupt.
        try:
            return _from_cv2(data, agc_percentiles)
        except DecodeError:
            raise DecodeError("corrupt", f"{type(exc).__name__}: {exc}") from None
    try:
        dec = _from_pil(img, agc_percentiles)
    except (OSError, ValueError) as exc:
        try:
            return _from_cv2(data, agc_percentiles)
        except DecodeError:
            raise DecodeError("unsupported", f"mode {img.mode}: {exc}") from None
    if _is_multi_frame(img):
        # a multi-frame file is not the first frame's image: each frame is stored re-encoded
        return replace(dec, multi_frame=True, unchanged=False)
    return dec


#: Formats whose frames are separate pictures (pages of a stack, animation frames). Others with several
#: frames (MPO's preview or second view, ICO's sizes) give their first frame only.
MULTI_FRAME_FORMATS = frozenset({"TIFF", "GIF", "WEBP", "PNG"})
#: Frames read from one file at most (Pillow walks a TIFF's page chain in quadratic time).
MAX_FRAMES = 100_000


def _is_multi_frame(img: Image.Image) -> bool:
    """Whether ``img`` has a second frame (cheap: no count of all frames)."""
    try:
        return img.format in MULTI_FRAME_FORMATS and bool(getattr(img, "is_animated", False))
    except (OSError, ValueError, SyntaxError, EOFError):  # a broken frame table: the first frame only
        return False


def frame_key(key: str, k: int) -> str:
    """The name of frame ``k`` of the multi-frame file named ``key`` (``key#p000003``)."""
    return f"{key}#p{k:06d}"


def later_frames(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    agc_percentiles: tuple[float, float] = (1.0, 99.0),
) -> Iterator[tuple[int, Decoded | DecodeError]]:
    """Frames 1, 2, ... of a multi-frame file whose first frame :func:`decode_to_gray` returned (pages of a
    radiometric TIFF stack, frames of an animated GIF/WebP/PNG), each normalized like a single image.

    Yields (frame index, Decoded or the DecodeError of that frame) up to :data:`MAX_FRAMES` frames; reading
    stops at a frame that cannot be reached. One frame is in memory at a time."""
    img = Image.open(io.BytesIO(data))
    for k in range(1, MAX_FRAMES + 1):
        try:
            img.seek(k)
        except EOFError:
            return  # the last frame was k - 1
        except (OSError, ValueError, SyntaxError) as exc:
            yield k, DecodeError("corrupt", f"frame {k} unreadable: {type(exc).__name__}: {exc}")
            return
        if k == MAX_FRAMES:
            yield k, DecodeError("unsupported", f"more than {MAX_FRAMES} frames: frames from {k} on were not read")
            return
        try:
            w, h = img.size
            if w * h > max_pixels:
                raise DecodeError("decompression_bomb", f"frame {k}: {w}x{h} = {w * h} pixels > limit {max_pixels}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
            yield k, replace(_from_pil(img, agc_percentiles), multi_frame=True, unchanged=False)
        except DecodeError as exc:
            yield k, exc
        except Image.DecompressionBombError as exc:  # another module set Pillow's own (global) limit
            yield k, DecodeError("decompression_bomb", f"frame {k}: {exc}")
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
            yield k, DecodeError("corrupt", f"frame {k}: {type(exc).__name__}: {exc}")


def encode_png(gray: np.ndarray) -> bytes:
    """(H, W) uint8 -> PNG bytes (lossless)."""
    ok, buf = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 2-D array
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def pixel_id(gray: np.ndarray) -> str:
    """Content id: sha256 hex of ``b"HxW:"`` followed by the raw uint8 pixels (row-major)."""
    import hashlib

    h, w = gray.shape
    digest = hashlib.sha256(f"{h}x{w}:".encode())
    digest.update(np.ascontiguousarray(gray).data)
    return digest.hexdigest()
