"""The decoder's fast path for gray JPEG (OpenCV) against Pillow, on the real HIT-UAV frames and odd JPEGs;
the image store's small atomic write."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inf30.decode import DecodeError, decode_to_gray, jpeg_gray_size


def _pillow_gray(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_fast_path_gives_pillows_pixels_on_every_real_gray_jpeg(hituav_dir):
    files = sorted(hituav_dir.rglob("*.jpg"))
    assert len(files) > 100
    for f in files:
        data = f.read_bytes()
        assert jpeg_gray_size(data) == Image.open(f).size, f.name  # the fast path is taken
        dec = decode_to_gray(data)
        assert np.array_equal(dec.gray, _pillow_gray(data)), f.name
        assert (dec.orig_mode, dec.bit_depth, dec.normalization, dec.store_ext) == ("L", 8, "none", ".jpg")


def _gray_jpeg(**save) -> bytes:
    g = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def test_jpeg_header_reader_sends_odd_files_to_the_general_path():
    plain = _gray_jpeg()
    assert jpeg_gray_size(plain) == (64, 48)
    exif = Image.Exif()
    exif[0x0112] = 1
    assert jpeg_gray_size(_gray_jpeg(exif=exif)) is None  # EXIF: orientation handled by Pillow
    rgb = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(rgb, "JPEG")
    assert jpeg_gray_size(rgb.getvalue()) is None  # three components
    assert jpeg_gray_size(b"\xff\xd8\xff") is None and jpeg_gray_size(b"") is None
    assert jpeg_gray_size(plain[:20]) is None  # header cut before the frame


def test_truncated_and_oversized_gray_jpeg_get_pillows_reasons():
    plain = _gray_jpeg()
    with pytest.raises(DecodeError) as err:
        decode_to_gray(plain[: len(plain) * 2 // 3])  # no end-of-image marker: Pillow reports truncation
    assert err.value.reason == "corrupt"
    with pytest.raises(DecodeError) as err:
        decode_to_gray(plain, max_pixels=64 * 48 - 1)
    assert err.value.reason == "decompression_bomb"
    # a header claiming 60000 x 60000 pixels: refused before any decoding
    sof = plain.index(b"\xff\xc0")
    bomb = plain[: sof + 5] + (60000).to_bytes(2, "big") * 2 + plain[sof + 9 :]
    assert jpeg_gray_size(bomb) == (60000, 60000)
    with pytest.raises(DecodeError) as err:
        decode_to_gray(bomb)
    assert err.value.reason == "decompression_bomb"


def test_small_atomic_write_recreates_a_folder_removed_after_first_use(tmp_path):
    """The image store remembers the folders it made; a folder removed since (a rebuilt output in the same
    process) is made again instead of failing the write."""
    import shutil

    from inf30.atomic import write_small_atomic

    target = tmp_path / "images" / "ab" / "x.png"
    write_small_atomic(str(target), b"one")
    shutil.rmtree(tmp_path / "images")
    write_small_atomic(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["x.png"]  # no temporary file left
