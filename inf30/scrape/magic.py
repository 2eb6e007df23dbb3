"""File type from the bytes (magic numbers), never from the extension or the Content-Type header."""

from __future__ import annotations

import bz2
import lzma
import zlib
from dataclasses import dataclass

#: bytes a caller should read before calling :func:`sniff` (enough for tar's ``ustar`` at offset 257).
SNIFF_BYTES = 4096


@dataclass(frozen=True)
class Magic:
    """What a file is: ``kind`` (``png``, ``zip``, ``mp4``, ``html``, ``unknown`` ...), its ``category``
    (``image``, ``archive``, ``video``, ``html``, ``other``) and the extension to store it under."""

    kind: str
    category: str
    ext: str

    @property
    def media(self) -> bool:
        """True for images, archives and videos (what a scrape keeps)."""
        return self.category in ("image", "archive", "video")


UNKNOWN = Magic("unknown", "other", ".bin")


def _is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def _decompressed_head(kind: str, head: bytes) -> bytes:
    """The first bytes of a compressed stream's payload (best effort, for tar detection)."""
    try:
        if kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1024)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(head, 1024)
        if kind == "xz":
            return lzma.LZMADecompressor().decompress(head, 1024)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        return b""
    return b""


_COMPRESSED = {"gzip": (".gz", ".tar.gz"), "bzip2": (".bz2", ".tar.bz2"), "xz": (".xz", ".tar.xz")}


def sniff(head: bytes) -> Magic:
    """Classify a file from its first bytes (give at least :data:`SNIFF_BYTES` when available)."""
    h = head
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return Magic("png", "image", ".png")
    if h.startswith(b"\xff\xd8\xff"):
        return Magic("jpeg", "image", ".jpg")
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return Magic("gif", "image", ".gif")
    if h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return Magic("tiff", "image", ".tif")
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return Magic("webp", "image", ".webp")
    if h[:4] == b"RIFF" and h[8:12] == b"AVI ":
        return Magic("avi", "video", ".avi")
    if h.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n"):
        return Magic("jp2", "image", ".jp2")
    if h.startswith(b"BM") and len(h) >= 14 and h[6:10] == b"\x00\x00\x00\x00":
        return Magic("bmp", "image", ".bmp")
    if len(h) >= 3 and h[0:1] == b"P" and h[1:2] in b"123456" and h[2:3] in b" \t\r\n#":
        return Magic(
            "pnm", "image", {b"1": ".pbm", b"4": ".pbm", b"2": ".pgm", b"5": ".pgm"}.get(h[1:2], ".ppm")
        )
    if h[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return Magic("zip", "archive", ".zip")
    if h.startswith(b"7z\xbc\xaf\x27\x1c"):
        return Magic("7z", "archive", ".7z")
    if h.startswith(b"Rar!\x1a\x07"):
        return Magic("rar", "archive", ".rar")
    if h.startswith(b"\x28\xb5\x2f\xfd"):
        return Magic("zstd", "archive", ".zst")
    if _is_tar(h):
        return Magic("tar", "archive", ".tar")
    for kind, sig in (("gzip", b"\x1f\x8b"), ("bzip2", b"BZh"), ("xz", b"\xfd7zXZ\x00")):
        if h.startswith(sig):
            plain, tarred = _COMPRESSED[kind]
            if _is_tar(_decompressed_head(kind, h)):
                return Magic(f"tar+{kind}", "archive", tarred)
            return Magic(kind, "archive", plain)
    if len(h) >= 12 and h[4:8] == b"ftyp":
        brand = h[8:12]
        if brand == b"qt  ":
            return Magic("mov", "video", ".mov")
        if brand.startswith((b"avif", b"avis")):
            return Magic("avif", "image", ".avif")
        if brand.startswith((b"heic", b"heix", b"mif1", b"msf1")):
            return Magic("heif", "image", ".heic")
        return Magic("mp4", "video", ".mp4")
    if h.startswith(b"\x1a\x45\xdf\xa3"):
        return Magic("matroska", "video", ".webm" if b"webm" in h[:64] else ".mkv")
    if h.startswith(b"\x00\x00\x01\xba") or h.startswith(b"\x00\x00\x01\xb3"):
        return Magic("mpeg", "video", ".mpg")
    if len(h) > 188 and h[0] == 0x47 and h[188] == 0x47:
        return Magic("mpegts", "video", ".ts")
    if h.startswith(b"FLV\x01"):
        return Magic("flv", "video", ".flv")
    if h.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return Magic("asf", "video", ".wmv")
    text = h[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:512]:
        return Magic("html", "html", ".html")
    return UNKNOWN


def refine(path, magic: Magic) -> Magic:
    """For a compressed stream whose head did not show a tar (bzip2 needs a whole block), look into the
    file's decompressed start; return the tar kind when it is one."""
    opener = {"gzip": "gzip", "bzip2": "bz2", "xz": "lzma"}.get(magic.kind)
    if opener is None:
        return magic
    import importlib

    try:
        with importlib.import_module(opener).open(path, "rb") as f:
            head = f.read(512)
    except (OSError, EOFError, ValueError, lzma.LZMAError):
        return magic
    if _is_tar(head):
        return Magic(f"tar+{magic.kind}", "archive", _COMPRESSED[magic.kind][1])
    return magic


def sniff_file(path) -> Magic:
    """:func:`sniff` on a file's first bytes (and :func:`refine` for compressed streams)."""
    with open(path, "rb") as f:
        return refine(path, sniff(f.read(SNIFF_BYTES)))


__all__ = ["Magic", "SNIFF_BYTES", "UNKNOWN", "sniff", "sniff_file"]
