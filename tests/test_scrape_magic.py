"""File types from magic bytes on real files: SIRST PNGs (modes L/RGB/P), HIT-UAV JPEGs, archives made
with zipfile/tarfile from them, and a video written by OpenCV."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from inf30.scrape.magic import sniff, sniff_file


def test_real_images(sirst_dir: Path, hituav_dir: Path):
    pngs = sorted((sirst_dir / "images").glob("*.png"))
    assert {sniff_file(p).kind for p in pngs} == {"png"}
    jpgs = sorted((hituav_dir / "val").glob("*.jpg"))[:20]
    assert {(sniff_file(p).kind, sniff_file(p).ext) for p in jpgs} == {("jpeg", ".jpg")}
    # the bytes decide, not the name: a PNG renamed .jpg is still a PNG
    assert sniff(pngs[0].read_bytes()[:4096]).ext == ".png"


@pytest.mark.parametrize("mode,kind,ext", [("w:", "tar", ".tar"), ("w:gz", "tar+gzip", ".tar.gz"),
                                           ("w:bz2", "tar+bzip2", ".tar.bz2"), ("w:xz", "tar+xz", ".tar.xz")])
def test_tar_archives(sirst_dir: Path, tmp_path: Path, mode: str, kind: str, ext: str):
    path = tmp_path / "a.bin"
    with tarfile.open(path, mode=mode) as t:
        for p in sorted((sirst_dir / "images").glob("*.png"))[:3]:
            t.add(p, arcname=p.name)
    m = sniff_file(path)
    assert (m.kind, m.category, m.ext) == (kind, "archive", ext)


def test_zip_html_unknown_and_video(sirst_dir: Path, tmp_path: Path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(sorted((sirst_dir / "images").glob("*.png"))[0], arcname="a.png")
    assert sniff(buf.getvalue()).kind == "zip"
    assert sniff(b"\n<!DOCTYPE html><html>").category == "html"
    assert sniff(b"just text").kind == "unknown" and not sniff(b"").media

    import cv2

    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48), isColor=False)
    for i in range(5):
        w.write(np.full((48, 64), i * 40, np.uint8))
    w.release()
    assert (sniff_file(path).kind, sniff_file(path).category) == ("avi", "video")
