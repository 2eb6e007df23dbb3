"""Perceptual hashes (inf30.hashing) on real infrared images: format, agreement with imagehash, robustness."""

from __future__ import annotations

from pathlib import Path

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image

from inf30.hashing import HASHES, compute_hashes


def ham(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


@pytest.fixture(scope="module")
def real_images(sirst_dir: Path, hituav_dir: Path) -> list[np.ndarray]:
    files = sorted((sirst_dir / "images").glob("*.png"))[::50] + sorted((hituav_dir / "val").glob("*.jpg"))[::40]
    return [np.asarray(Image.open(f).convert("L")) for f in files]


def test_format_and_all_kinds(real_images: list[np.ndarray]) -> None:
    h = compute_hashes(real_images[0], tuple(HASHES))
    assert set(h) == set(HASHES)
    for v in h.values():
        assert len(v) == 16 and int(v, 16) >= 0
    assert compute_hashes(Image.fromarray(real_images[0]), ("phash",)) == {"phash": h["phash"]}
    with pytest.raises(ValueError):
        compute_hashes(real_images[0], ("nohash",))
    with pytest.raises(ValueError):
        compute_hashes(np.zeros((0, 5), np.uint8))


def test_phash_agrees_with_imagehash(real_images: list[np.ndarray]) -> None:
    """Same algorithm and bit layout as imagehash.phash (only the downscale filter differs)."""
    d = [ham(compute_hashes(im)["phash"], str(imagehash.phash(Image.fromarray(im)))) for im in real_images]
    assert np.mean(d) <= 2.0 and max(d) <= 8
    img = real_images[0]
    assert compute_hashes(img, ("whash",))["whash"] == str(imagehash.whash(Image.fromarray(img)))


def test_copies_close_unrelated_far(real_images: list[np.ndarray]) -> None:
    near, far = [], []
    for k, im in enumerate(real_images):
        h, w = im.shape
        small = cv2.resize(im, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        _, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 50])
        copy = np.clip(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(int) + 8, 0, 255).astype(np.uint8)
        near.append(ham(compute_hashes(im)["phash"], compute_hashes(copy)["phash"]))
        far.append(ham(compute_hashes(im)["phash"], compute_hashes(real_images[k - 1])["phash"]))
    assert np.median(near) <= 4 and np.percentile(near, 90) <= 8  # flat sky images are less stable
    assert np.median(far) >= 20
