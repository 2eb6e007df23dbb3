"""`inf30 build` on the real infrared images in ../shared/data, odd formats and hostile input."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import copy_folder
from PIL import Image

from inf30.build import BuildOptions, build
from inf30.decode import agc, pixel_id
from inf30.manifest import read_manifest
from inf30.sources import load_sources

INF30 = str(Path(sys.executable).parent / "inf30")
OPTS = dict(workers=1, dedupe=False, progress=False)


def run_build(paths, out, config=None, **kw):
    return build(load_sources([str(p) for p in paths], config=config, out_dir=out), out, BuildOptions(**{**OPTS, **kw}))


def stored_gray(out: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(out / rel).convert("L"))


def reason_of(df: pd.DataFrame, suffix: str) -> str:
    row = df[df["item_key"].str.endswith(suffix)]
    assert len(row) == 1, f"expected one row for {suffix}, got {len(row)}"
    return str(row["reason"].iloc[0])


def test_sirst_mixed_modes_are_normalized_and_stored_losslessly(sirst_dir, tmp_path):
    out = tmp_path / "ds"
    summary = run_build([sirst_dir / "images"], out, workers=2)
    df = read_manifest(out)
    n_files = len(list((sirst_dir / "images").iterdir()))
    assert len(df) == n_files == summary.items
    assert set(df["orig_mode"]) >= {"L", "RGB", "P"}
    kept = df[df["status"] == "kept"]
    assert len(kept) == n_files  # SIRST has no exact duplicates, nothing tiny or broken
    for row in kept.itertuples():
        gray = stored_gray(out, row.path)
        assert gray.shape == (row.height, row.width)
        assert pixel_id(gray) == row.id  # the stored file decodes to exactly the normalized pixels
        if row.orig_mode == "L":
            # 8-bit gray needs no conversion: the original bytes are kept (no re-encoding loss)
            assert row.normalization == "none"
            assert hashlib.sha256((out / row.path).read_bytes()).hexdigest() == row.source_sha256
        assert 0 < row.entropy <= 8
        assert len(row.phash) == 16
    assert kept["pseudocolor"].dtype == bool


def test_hituav_video_frames_sampled_with_timestamps(hituav_dir, tmp_path):
    frames = sorted((hituav_dir / "train").glob("*.jpg"))[:25]
    video = tmp_path / "src" / "flight.mp4"
    video.parent.mkdir()
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 512))
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    out = tmp_path / "ds"
    run_build([video], out, video_every=1.0)
    df = read_manifest(out)
    assert list(df["timestamp_s"]) == [0.0, 1.0, 2.0]  # 25 frames at 10 fps: t = 0, 1, 2 s
    assert set(df["origin_kind"]) == {"video_frame"}
    assert df["origin"].iloc[1].endswith("flight.mp4@1.000s")
    assert (df["status"] == "kept").all()
    assert (df["width"] == 640).all() and (df["height"] == 512).all()
    # the first frame is the first HIT-UAV image, through a lossy codec
    first = stored_gray(out, df["path"].iloc[0]).astype(int)
    ref = cv2.imread(str(frames[0]), cv2.IMREAD_GRAYSCALE).astype(int)
    assert np.abs(first - ref).mean() < 6


def test_16bit_and_float_tiff_use_percentile_agc(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    raw = (rng.normal(30000, 800, (64, 80))).clip(0, 65535).astype(np.uint16)
    Image.fromarray(raw).save(src / "radiometric.tif")
    temps = rng.normal(295.0, 3.0, (48, 48)).astype(np.float32)
    Image.fromarray(temps, mode="F").save(src / "kelvin.tif")
    out = tmp_path / "ds"
    run_build([src], out, agc_percentiles=(2.0, 98.0))
    df = read_manifest(out).set_index("item_key")
    r16 = df.loc["src:radiometric.tif"]
    assert r16["bit_depth"] == 16 and r16["normalization"].startswith("agc(p2=")
    lo, hi = np.percentile(raw.astype(float), [2, 98])
    expected = np.clip(np.rint((raw - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    assert np.array_equal(stored_gray(out, r16["path"]), expected)
    rf = df.loc["src:kelvin.tif"]
    assert rf["orig_mode"] == "F" and rf["status"] == "kept"
    g = stored_gray(out, rf["path"])
    assert g.min() == 0 and g.max() == 255  # the 2nd..98th percentile span fills the 8-bit range


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries almost no data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")


def test_bad_input_is_recorded_with_reasons_never_crashes(hituav_dir, sirst_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    jpg = next((hituav_dir / "val").glob("*.jpg")).read_bytes()
    png = next((sirst_dir / "images").glob("*.png")).read_bytes()
    (src / "zero.png").write_bytes(b"")
    (src / "trunc.png").write_bytes(png[: len(png) // 2])
    (src / "trunc.jpg").write_bytes(jpg[: len(jpg) // 3])
    (src / "text.jpg").write_text("hello, I am not a JPEG\n")
    (src / "badheader.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (src / "bomb.png").write_bytes(_png_header_only(30000, 30000))  # 900 M pixels claimed
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    Image.fromarray(np.full((12, 15), 100, np.uint8)).save(src / "tiny.png")
    Image.fromarray(np.full((10, 400), 100, np.uint8)).save(src / "thin_strip.png")  # height < 20 only: kept
    pano = np.tile(np.linspace(0, 255, 6912, dtype=np.uint8), (1024, 1))
    Image.fromarray(pano).save(src / "panorama.png")  # the paper's largest image size
    (src / "README.txt").write_text("not an input")
    out = tmp_path / "ds"
    summary = run_build([src], out)
    df = read_manifest(out)
    assert reason_of(df, "zero.png").startswith("corrupt | empty")
    assert reason_of(df, "trunc.png").startswith("corrupt")
    assert reason_of(df, "trunc.jpg").startswith("corrupt")
    assert reason_of(df, "text.jpg").startswith("unsupported")
    assert reason_of(df, "badheader.png").startswith("corrupt")
    assert reason_of(df, "bomb.png").startswith("decompression_bomb")
    assert reason_of(df, "broken.mp4").startswith("video_unreadable")
    assert reason_of(df, "tiny.png").startswith("too_small")
    kept = set(df.loc[df["status"] == "kept", "item_key"])
    assert kept == {"src:thin_strip.png", "src:panorama.png"}
    pano_row = df[df["item_key"] == "src:panorama.png"].iloc[0]
    assert (pano_row["width"], pano_row["height"]) == (6912, 1024)
    assert summary.skipped_files == 1  # README.txt is not an input


def test_min_side_and_max_pixels_options(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.full((10, 400), 100, np.uint8)).save(src / "strip.png")
    Image.fromarray(np.full((300, 300), 100, np.uint8)).save(src / "square.png")
    out = tmp_path / "ds"
    run_build([src], out, min_side=16, max_pixels=50_000)
    df = read_manifest(out)
    assert reason_of(df, "strip.png").startswith("too_small | shorter side 10")
    assert reason_of(df, "square.png").startswith("decompression_bomb")


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if data else None)


def test_hostile_archives_never_write_outside_and_bombs_are_bounded(sirst_dir, tmp_path):
    imgs = sorted((sirst_dir / "images").glob("*.png"))[:3]
    blobs = [p.read_bytes() for p in imgs]
    work = tmp_path / "work"
    src = work / "src"
    src.mkdir(parents=True)
    with zipfile.ZipFile(src / "evil.zip", "w") as zf:
        zf.writestr("ok/a.png", blobs[0])
        zf.writestr("../../escape.png", blobs[1])
        zf.writestr("/abs/escape.png", blobs[1])
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    with tarfile.open(src / "evil.tar.gz", "w:gz") as tf:
        _tar_add(tf, "good/b.png", blobs[1])
        _tar_add(tf, "../escape2.png", blobs[2])
        _tar_add(tf, "sym.png", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _tar_add(tf, "hard.png", type=tarfile.LNKTYPE, linkname="good/b.png")
        _tar_add(tf, "dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
    with zipfile.ZipFile(src / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("c.png", blobs[2])
        zf.writestr("huge.png", b"\x00" * (8 << 20))  # 8 MB of zeros, compresses to a few KB
        zf.writestr("after.png", blobs[0])
    with tarfile.open(src / "broken.tar.xz", "w:xz") as tf:
        _tar_add(tf, "x.png", blobs[0])
    data = (src / "broken.tar.xz").read_bytes()
    (src / "broken.tar.xz").write_bytes(data[: len(data) // 2])
    before = sorted(p.name for p in tmp_path.iterdir())
    out = work / "ds"
    run_build([src], out, max_archive_bytes=1 << 20)
    df = read_manifest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list(tmp_path.rglob("escape*.png"))
    assert reason_of(df, "evil.zip!../../escape.png").startswith("unsafe_archive_member")
    assert reason_of(df, "evil.zip!/abs/escape.png").startswith("unsafe_archive_member")
    assert reason_of(df, "evil.zip!link.png").startswith("unsafe_archive_member | symlink")
    assert reason_of(df, "evil.tar.gz!../escape2.png").startswith("unsafe_archive_member")
    assert reason_of(df, "evil.tar.gz!sym.png").startswith("unsafe_archive_member | link")
    assert reason_of(df, "evil.tar.gz!hard.png").startswith("unsafe_archive_member | link")
    assert reason_of(df, "evil.tar.gz!dev/null").startswith("unsafe_archive_member | device")
    assert reason_of(df, "bomb.zip!huge.png").startswith("archive_bomb")
    assert reason_of(df, "broken.tar.xz").startswith("corrupt | archive unreadable")
    kept = df[df["status"] == "kept"]
    assert set(kept["item_key"]) == {"src:evil.zip!ok/a.png", "src:evil.tar.gz!good/b.png", "src:bomb.zip!c.png"}
    assert set(kept["origin_kind"]) == {"archive_member"}


def test_exact_duplicates_kept_once_first_by_key(sirst_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    f = next(p for p in sorted((sirst_dir / "images").glob("*.png")) if Image.open(p).mode == "L")
    (src / "b_original.png").write_bytes(f.read_bytes())
    (src / "c_copy.png").write_bytes(f.read_bytes())
    g = np.asarray(Image.open(f))
    Image.fromarray(np.stack([g] * 3, -1)).save(src / "a_rgb_equal.png")  # same pixels, other encoding
    out = tmp_path / "ds"
    summary = run_build([src], out)
    df = read_manifest(out).set_index("item_key")
    assert df.loc["src:a_rgb_equal.png", "status"] == "kept"
    anchor = df.loc["src:a_rgb_equal.png", "id"]
    for k in ("src:b_original.png", "src:c_copy.png"):
        assert df.loc[k, "reason"] == f"exact_duplicate:{anchor}"
    assert summary.kept == 1 and summary.dropped == {"exact_duplicate": 2}


def test_config_yaml_licence_filters_and_pseudocolor(sirst_dir, hituav_dir, tmp_path):
    cfg = tmp_path / "sources.yaml"
    cfg.write_text(
        f"""
sources:
  - name: sirst
    path: {sirst_dir / 'images'}
    licence: research-only
    include: ["Misc_1*.png"]
    options: {{drop_pseudocolor: true}}
  - name: hituav
    path: {hituav_dir / 'val'}
    licence: CC-BY-4.0
    exclude: ["1_*"]
"""
    )
    out = tmp_path / "ds"
    run_build([], out, config=cfg)
    df = read_manifest(out)
    sirst = df[df["source"] == "sirst"]
    assert len(sirst) and sirst["item_key"].str.match(r"sirst:Misc_1.*\.png").all()
    assert set(sirst["licence"]) == {"research-only"}
    pseudo = sirst[sirst["pseudocolor"]]
    assert len(pseudo) and (pseudo["reason"] == "pseudocolor | differing colour channels").all()
    hit = df[df["source"] == "hituav"]
    assert len(hit) and not hit["item_key"].str.contains("hituav:1_").any()
    assert set(hit["licence"]) == {"CC-BY-4.0"}


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([INF30, "build", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().startswith("error: ") and "missing" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [ {path: x")
    r = subprocess.run([INF30, "build", "--config", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "not valid YAML" in r.stderr
    r = subprocess.run([INF30, "build", str(tmp_path), "--shard", "3/2", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def _snapshot(out: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    df = read_manifest(out).sort_values("item_key").reset_index(drop=True)
    files = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in (out / "images").rglob("*") if p.is_file()}
    return df, files


@pytest.fixture(scope="module")
def mixed_src(tmp_path_factory, sirst_dir, hituav_dir) -> Path:
    """A folder of symlinks to ~160 real images (SIRST + HIT-UAV) plus planted duplicates."""
    src = tmp_path_factory.mktemp("mixed")
    for p in sorted((sirst_dir / "images").glob("*"))[:100]:
        (src / f"s_{p.name}").symlink_to(p)
    for p in sorted((hituav_dir / "val").glob("*.jpg"))[:60]:
        (src / f"h_{p.name}").symlink_to(p)
    first = sorted((sirst_dir / "images").glob("*"))[0]
    (src / "zz_dup.png").symlink_to(first)
    return src


def test_shards_merged_equal_a_single_build(mixed_src, tmp_path):
    full = tmp_path / "full"
    run_build([mixed_src], full, part_size=16)
    shards = []
    for k in range(3):
        d = tmp_path / f"shard{k}"
        run_build([mixed_src], d, shard=f"{k}/3", part_size=16)
        shards.append(d)
    sizes = [len(read_manifest(d)) for d in shards]
    assert sum(sizes) == len(read_manifest(full)) and min(sizes) > 0
    r = subprocess.run([INF30, "merge", *map(str, shards), "--out", str(tmp_path / "merged"), "--no-dedupe"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, fa = _snapshot(full)
    b, fb = _snapshot(tmp_path / "merged")
    pd.testing.assert_frame_equal(a, b)
    assert fa == fb


def test_killed_build_resumes_to_the_same_result(mixed_src, tmp_path):
    """SIGKILL a real `inf30 build` process at several points; the resumed result equals a clean build."""
    ref = tmp_path / "ref"
    run_build([mixed_src], ref, part_size=8)
    out = tmp_path / "killed"
    cmd = [INF30, "build", str(mixed_src), "--out", str(out), "--workers", "1", "--part-size", "8",
           "--no-dedupe", "--quiet"]
    parts = out / ".work" / "parts"
    killed_mid_run = 0
    for stop_after in (0, 3, 9, 15):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            n = len(list(parts.glob("*.parquet"))) if parts.exists() else 0
            if n >= stop_after:
                proc.kill()
                killed_mid_run += proc.wait() == -9
                break
        proc.wait()
    assert killed_mid_run >= 3, "the build finished before it could be killed: the test proved nothing"
    assert not (out / "manifest.parquet").exists()  # never killed after the end: no manifest yet
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, fa = _snapshot(ref)
    b, fb = _snapshot(out)
    pd.testing.assert_frame_equal(a, b)
    assert fa == fb
    assert not list(out.rglob(".tmp-*"))


def test_every_common_format_mode_and_exif_orientation(sirst_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    g = np.asarray(Image.open(next(p for p in sorted((sirst_dir / "images").glob("*.png"))
                                   if Image.open(p).mode == "L")))
    Image.fromarray(g).save(src / "a.bmp")
    Image.fromarray(g).save(src / "b.webp", lossless=True)
    Image.fromarray(g).save(src / "c.pgm")
    Image.fromarray(g).save(src / "d.tif")
    cv2.imwrite(str(src / "e16.pgm"), g.astype(np.uint16) * 257)  # 16-bit PGM
    rgb16 = np.stack([g, g, g], -1).astype(np.uint16) * 257
    cv2.imwrite(str(src / "f_rgb16.tif"), rgb16)  # 3-channel 16-bit TIFF (Pillow cannot read it)
    Image.fromarray(g).convert("LA").save(src / "g_la.png")
    Image.fromarray(g).convert("RGB").convert("CMYK").save(src / "h_cmyk.jpg", quality=95)
    pal = Image.fromarray(g).convert("P")
    pal.info["transparency"] = 0
    pal.save(src / "i_palette.png", transparency=0)
    Image.fromarray(g).convert("1").save(src / "j_bilevel.png")
    rotated = Image.fromarray(g)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated.save(src / "k_exif.jpg", exif=exif, quality=95)
    out = tmp_path / "ds"
    run_build([src], out)
    df = read_manifest(out).set_index("item_key")
    assert (df["reason"].fillna("").str.startswith(("corrupt", "unsupported")) == False).all(), df["reason"]  # noqa: E712
    gid = pixel_id(g)
    for lossless in ("a.bmp", "b.webp", "c.pgm", "d.tif", "g_la.png", "i_palette.png"):
        row = df.loc[f"src:{lossless}"]
        assert row["id"] == gid or row["reason"] == f"exact_duplicate:{gid}", lossless
    assert df.loc["src:e16.pgm", "bit_depth"] == 16 and df.loc["src:e16.pgm", "normalization"].startswith("agc")
    assert df.loc["src:f_rgb16.tif", "normalization"].startswith("gray_from_equal_channels+agc")
    assert not df.loc["src:h_cmyk.jpg", "pseudocolor"]
    assert df.loc["src:j_bilevel.png", "bit_depth"] == 1
    k = df.loc["src:k_exif.jpg"]
    assert (k["width"], k["height"]) == (g.shape[0], g.shape[1])  # displayed upright: sides swapped
    assert k["normalization"].startswith("exif_transpose")


def test_sharded_build_and_merge_with_dedupe_equal_a_single_build(tmp_path):
    """The default path (near-duplicate removal on: the pipeline's build -> dedupe and merge -> dedupe)
    gives the same decisions sharded or not."""
    from inf30.sample import write_sample
    from pipelines.build import build_sources, merge_shards

    src = tmp_path / "src"
    write_sample(src, n_scenes=16)
    full = tmp_path / "full"
    build_sources([str(src)], full, BuildOptions(**{**OPTS, "dedupe": True}))
    shards = []
    for k in range(2):
        shards.append(tmp_path / f"s{k}")
        build_sources([str(src)], shards[-1], BuildOptions(**{**OPTS, "dedupe": True, "shard": f"{k}/2"}))
    merge_shards(shards, tmp_path / "merged", progress=False)
    a = read_manifest(full).sort_values("item_key").reset_index(drop=True)
    b = read_manifest(tmp_path / "merged").sort_values("item_key").reset_index(drop=True)
    assert a["reason"].fillna("").str.startswith(("near_copy", "near_duplicate")).sum() >= 2
    for col in ("item_key", "id", "status", "reason"):
        assert a[col].fillna("").tolist() == b[col].fillna("").tolist(), col


def test_folder_walk_lists_what_rglob_lists(sirst_dir, tmp_path):
    """The os.scandir walk of a folder source returns the same files, in the same order, as Path.rglob:
    nested folders entered, symlinked files listed, a symlinked folder listed but not entered, special and
    half-written ``.tmp-`` files left out."""
    from inf30.files import walk_files
    from inf30.sources import SourceSpec, enumerate_inputs

    real = sorted((sirst_dir / "images").glob("*.png"))[:2]
    root = tmp_path / "src"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "deep.png").write_bytes(real[0].read_bytes())
    (root / "top.png").symlink_to(real[1])
    (root / "a" / ".tmp-half.png").write_bytes(b"\x89PNG half")
    (root / "linked_dir").symlink_to(sirst_dir, target_is_directory=True)
    (root / "notes.txt").write_text("not an image")
    os.mkfifo(root / "a" / "pipe.png")

    def rglob_pairs(r):
        return sorted(
            (f.relative_to(r).as_posix(), str(f)) for f in r.rglob("*") if f.is_file() or f.is_symlink()
        )

    assert sorted(walk_files(str(root))) == rglob_pairs(root)
    inputs, skipped = enumerate_inputs(SourceSpec(name="s", path=str(root) + "/", kind="folder"))
    assert [i.key for i in inputs] == ["s:a/b/deep.png", "s:top.png"]
    assert [i.path for i in inputs] == [str(root / "a" / "b" / "deep.png"), str(root / "top.png")]
    assert skipped == 2  # notes.txt and the symlinked folder (not an image name)


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            _tar_add(tf, name, data)
    return buf.getvalue()


def test_nested_archives_are_extracted_within_depth_and_limits(sirst_dir, hituav_dir, tmp_path):
    """A .tar.gz of per-sequence .zip files (how several infrared datasets ship) is built member by member:
    inner members are named outer!inner.zip!frame.jpg and keep their pixels; a corrupt inner archive, one
    nested deeper than --max-archive-depth and a hostile inner member each get a row with a reason; nothing
    is written outside the output folder."""
    frames = sorted((hituav_dir / "train").glob("*.jpg"))[:4]
    pngs = sorted((sirst_dir / "images").glob("*.png"))[:3]
    fb = [p.read_bytes() for p in frames]
    pb = [p.read_bytes() for p in pngs]
    seq1 = _zip_bytes({"f0.jpg": fb[0], "f1.jpg": fb[1]})
    seq2 = _tar_bytes({"f2.jpg": fb[2], "../../escape.jpg": fb[3]})
    level3 = _zip_bytes({"deep.png": pb[0]})
    level4 = _zip_bytes({"too_deep.png": pb[1]})
    work = tmp_path / "work"
    src = work / "src"
    src.mkdir(parents=True)
    (src / "dataset.tar.gz").write_bytes(
        _tar_bytes(
            {
                "seq1.zip": seq1,
                "seq2.tar": seq2,
                "bad.zip": b"this is not a zip archive",
                "wrap.zip": _zip_bytes({"level3.zip": level3, "mid.tar": _tar_bytes({"level4.zip": level4})}),
                "top.png": pb[2],
            },
            mode="w:gz",
        )
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    out = work / "ds"
    run_build([src], out)
    df = read_manifest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not list(tmp_path.rglob("escape*"))
    kept = df[df["status"] == "kept"].set_index("item_key")
    expect = {
        "src:dataset.tar.gz!seq1.zip!f0.jpg": fb[0],
        "src:dataset.tar.gz!seq1.zip!f1.jpg": fb[1],
        "src:dataset.tar.gz!seq2.tar!f2.jpg": fb[2],
        "src:dataset.tar.gz!wrap.zip!level3.zip!deep.png": pb[0],
        "src:dataset.tar.gz!top.png": pb[2],
    }
    assert set(kept.index) == set(expect)
    for key, blob in expect.items():
        gray = np.asarray(Image.open(io.BytesIO(blob)).convert("L"))
        assert kept.loc[key, "id"] == pixel_id(gray)
        assert np.array_equal(stored_gray(out, kept.loc[key, "path"]), gray)
        assert kept.loc[key, "origin"].endswith(key.split(":", 1)[1])
        assert kept.loc[key, "origin_kind"] == "archive_member"
    assert reason_of(df, "dataset.tar.gz!bad.zip").startswith("unsupported | not a zip or tar archive")
    assert reason_of(df, "seq2.tar!../../escape.jpg").startswith("unsafe_archive_member")
    assert reason_of(df, "wrap.zip!mid.tar!level4.zip") == "unsupported | nested archive deeper than 3 levels"
    # a deeper limit reaches the fourth level; depth 1 keeps only the outer archive's own images
    deeper = read_manifest(run_build([src], work / "ds4", max_archive_depth=4) and work / "ds4")
    assert "src:dataset.tar.gz!wrap.zip!mid.tar!level4.zip!too_deep.png" in set(
        deeper.loc[deeper["status"] == "kept", "item_key"]
    )
    flat = read_manifest(run_build([src], work / "ds1", max_archive_depth=1) and work / "ds1")
    assert set(flat.loc[flat["status"] == "kept", "item_key"]) == {"src:dataset.tar.gz!top.png"}
    assert reason_of(flat, "dataset.tar.gz!seq1.zip") == "unsupported | nested archive deeper than 1 levels"


def test_nested_archive_bomb_stops_at_the_limits_for_the_whole_tree(sirst_dir, tmp_path):
    """42.zip-style nesting: the member and byte limits count every level together, so many small inner
    archives cannot multiply past them; the build still finishes and says why extraction stopped."""
    blob = next(iter(sorted((sirst_dir / "images").glob("*.png")))).read_bytes()
    inner = _zip_bytes({f"x{i}.png": blob for i in range(10)})
    src = tmp_path / "src"
    src.mkdir()
    (src / "bomb.zip").write_bytes(_zip_bytes({f"in{i}.zip": inner for i in range(10)}))
    out = tmp_path / "ds"
    run_build([src], out, max_archive_files=25)
    df = read_manifest(out)
    bombs = df[df["reason"].fillna("").str.startswith("archive_bomb | member count limit")]
    assert list(bombs["item_key"]) == ["src:bomb.zip!in2.zip!x2.png"]
    # 25 members in all: in0.zip and its 10, in1.zip and its 10, in2.zip and 2 of its members; the images
    # are one picture, so one is kept and the others are exact duplicates of it
    images = df[df["item_key"].str.endswith(".png") & (df["origin_kind"] == "archive_member")]
    assert len(images) == 23 and (images["status"] == "kept").sum() == 1
    assert len(list((out / ".work" / "extract").rglob("*.png"))) == 22
    assert not list((out / ".work" / "extract").rglob("*.zip"))  # inner archives are deleted once expanded


def test_file_and_member_names_that_are_not_utf8_are_kept_with_escapes(hituav_dir, tmp_path):
    """A file or tar member named in another encoding (bytes that are not UTF-8, common in archives made on
    old systems) used to fail the whole part when its row was written; now the name is stored with \\xNN
    escapes, the image is built, and a re-run gives the same manifest."""
    frames = sorted((hituav_dir / "train").glob("*.jpg"))[:3]
    src = tmp_path / "src"
    src.mkdir()
    with open(os.path.join(os.fsencode(src), b"caf\xe9.jpg"), "wb") as f:  # latin-1 name
        f.write(frames[0].read_bytes())
    (src / "line\nbreak.jpg").write_bytes(frames[1].read_bytes())
    with tarfile.open(src / "old.tar", "w", encoding="utf-8", errors="surrogateescape") as tf:
        _tar_add(tf, os.fsdecode(b"seq/\xff\xfe.jpg"), frames[2].read_bytes())
    out = tmp_path / "ds"
    run_build([src], out)
    df = read_manifest(out).set_index("item_key")
    keys = {"src:caf\\xe9.jpg", "src:line\nbreak.jpg", "src:old.tar!seq/\\xff\\xfe.jpg"}
    assert set(df.index) == keys and set(df["status"]) == {"kept"}
    assert df.loc["src:caf\\xe9.jpg", "origin"].endswith("caf\\xe9.jpg")
    for key, frame in zip(sorted(keys), [frames[0], frames[1], frames[2]], strict=True):
        gray = np.asarray(Image.open(frame).convert("L"))
        assert df.loc[key, "id"] == pixel_id(gray), key
    run_build([src], out)  # resume / re-run: nothing changes
    assert read_manifest(out).set_index("item_key").sort_index().equals(df.sort_index())


def test_multi_frame_files_give_one_row_per_frame(hituav_dir, tmp_path):
    """A radiometric TIFF stack (every page a frame) and an animated GIF give one row per frame, keyed
    KEY#p000001, each page normalized on its own and stored as its own image (never the whole stack under the
    first page's id); a stack cut short keeps the pages before the cut and says which page failed."""
    frames = [np.asarray(Image.open(p)) for p in sorted((hituav_dir / "train").glob("*.jpg"))[:8]]
    src = tmp_path / "src"
    src.mkdir()
    pages = [Image.fromarray(f) for f in frames]
    pages[0].save(src / "stack8.tif", save_all=True, append_images=pages[1:3])  # 8-bit gray pages 0-2
    rng = np.random.default_rng(0)
    raw = [(f.astype(np.uint16) * 40 + rng.integers(0, 200, f.shape)).astype(np.uint16) for f in frames[3:5]]
    Image.fromarray(raw[0]).save(src / "stack16.tif", save_all=True, append_images=[Image.fromarray(raw[1])])
    pages[5].save(src / "anim.gif", save_all=True, append_images=[pages[6]], duration=100)
    buf = io.BytesIO()
    pages[7].save(buf, "TIFF", save_all=True, append_images=[Image.fromarray(255 - frames[7])] * 2)
    (src / "cut.tif").write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.8)])  # last page cut short
    out = tmp_path / "ds"
    run_build([src], out)
    df = read_manifest(out).set_index("item_key")
    assert set(df["status"]) == {"kept", "dropped"}
    for k in range(3):
        row = df.loc[f"src:stack8.tif#p{k:06d}"]
        assert row["id"] == pixel_id(frames[k]) and row["origin"].endswith(f"stack8.tif#page{k}")
        assert row["status"] == "kept" and row["path"].endswith(".png")
        assert np.array_equal(stored_gray(out, row["path"]), frames[k])
    assert len([k for k in df.index if k.startswith("src:stack8.tif")]) == 3
    for k in range(2):
        row = df.loc[f"src:stack16.tif#p{k:06d}"]
        assert row["bit_depth"] == 16 and row["normalization"].startswith("agc")
        assert row["id"] == pixel_id(agc(raw[k])[0])
    gif = df.loc[["src:anim.gif#p000000", "src:anim.gif#p000001"]]
    assert list(gif["status"]) == ["kept", "kept"] and list(gif["id"]) == [pixel_id(frames[5]), pixel_id(frames[6])]
    assert df.loc["src:cut.tif#p000000", "id"] == pixel_id(frames[7])
    assert df.loc["src:cut.tif#p000000", "status"] == "kept"
    assert df.loc["src:cut.tif#p000002", "reason"].startswith("corrupt | frame 2")
    # single-frame files keep their plain key and are stored as they are
    single_src = tmp_path / "single"
    single_src.mkdir()
    pages[0].save(single_src / "one.tif")
    run_build([single_src], tmp_path / "ds2")
    single = read_manifest(tmp_path / "ds2").set_index("item_key").loc["single:one.tif"]
    assert single["status"] == "kept" and single["path"].endswith(".tif")


def test_frames_beyond_the_cap_are_recorded_not_read(hituav_dir, tmp_path, monkeypatch):
    """Reading frames stops at inf30.decode.MAX_FRAMES (Pillow walks a TIFF page chain in quadratic time);
    the row at the cap says how many frames were read."""
    import inf30.decode

    monkeypatch.setattr(inf30.decode, "MAX_FRAMES", 2)
    pages = [Image.open(p) for p in sorted((hituav_dir / "train").glob("*.jpg"))[:4]]
    src = tmp_path / "src"
    src.mkdir()
    pages[0].save(src / "stack.tif", save_all=True, append_images=pages[1:])
    run_build([src], tmp_path / "ds")
    df = read_manifest(tmp_path / "ds").set_index("item_key").sort_index()
    assert list(df.index) == ["src:stack.tif#p000000", "src:stack.tif#p000001", "src:stack.tif#p000002"]
    assert list(df["status"]) == ["kept", "kept", "dropped"]
    assert df["reason"].iloc[2] == "unsupported | more than 2 frames: frames from 2 on were not read"


def test_an_output_folder_inside_the_source_is_never_read_back(hituav_dir, tmp_path, monkeypatch):
    """`inf30 build . --out inf30` (and a recursive glob) run twice: the second run must not take the first
    run's stored images, lock or parts for new inputs."""
    for source, out in ((".", "inf30"), ("./**/*.jpg", "globbed")):
        copy_folder(tmp_path / out, sorted((hituav_dir / "train").glob("*.jpg"))[:5])
        monkeypatch.chdir(tmp_path / out)
        for _ in range(2):
            summary = run_build([source], Path(out))
            assert summary.items == 5 and summary.kept == 5, (source, summary)
        assert not read_manifest(out)["origin"].str.contains(f"{out}/").any()


def _limited_file_size(limit: int):
    """preexec_fn: files the process writes may not grow past ``limit`` bytes (writes fail with EFBIG, as
    on a full disk), without the SIGXFSZ that would kill it."""
    import resource
    import signal

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("with_archive", [False, True])
def test_an_unwritable_output_stops_the_build_and_a_rerun_resumes(hituav_dir, tmp_path, with_archive):
    """When the output cannot be written (here every file is capped at 40 kB by RLIMIT_FSIZE, the same
    EFBIG/ENOSPC path as a full disk or quota), `inf30 build` stops with a one-line error instead of
    recording the inputs as corrupt (or caching a half extraction), and a re-run with room finishes equal to
    an uninterrupted build."""
    frames = sorted((hituav_dir / "train").glob("*.jpg"))[:6]  # about 70 kB each
    src = copy_folder(tmp_path / "src", frames[:4])
    if with_archive:
        (src / "more.zip").write_bytes(_zip_bytes({f.name: f.read_bytes() for f in frames[4:]}))
    out = tmp_path / "ds"
    cmd = [INF30, "build", str(src), "--out", str(out), "--workers", "1", "--no-dedupe", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_limited_file_size(40_000))
    assert r.returncode == 1, r.stderr  # failed (not bad usage)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write to ") and "re-run" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (out / "manifest.parquet").exists()
    assert not list((out / ".work").rglob("*.done.json")) and not list((out / ".work").rglob("*.parquet"))
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    df = read_manifest(out)
    assert len(df) == (6 if with_archive else 4) and set(df["status"]) == {"kept"}
    clean = tmp_path / "clean"
    run_build([src], clean)
    a, files_a = _snapshot(out)
    b, files_b = _snapshot(clean)
    pd.testing.assert_frame_equal(a, b)
    assert files_a == files_b


def test_build_entropy_and_pretrain_see_the_same_files_of_a_mixed_folder(sirst_dir, hituav_dir, tmp_path):
    """One folder rule (inf30.files) for `inf30 build`, `inf30 entropy` and `infmae pretrain`: real SIRST and
    HIT-UAV frames under many suffixes (upper case, .jpe, .tga, .ico, .pgm, a TIFF), nested, plus what none
    of them reads (hidden files and folders, a macOS ``._`` companion, a text file)."""
    from PIL import Image

    from inf30.entropy import collect
    from inf30.sources import SourceSpec, enumerate_inputs
    from infmae.data import open_source

    png = sorted((sirst_dir / "images").glob("*.png"))[:3]
    jpg = sorted((hituav_dir / "val").glob("*.jpg"))[:2]
    root = tmp_path / "mixed"
    (root / "seq" / "deep").mkdir(parents=True)
    (root / ".cache").mkdir()
    shutil.copy(png[0], root / "a.png")
    shutil.copy(png[1], root / "seq" / "B.PNG")
    shutil.copy(jpg[0], root / "seq" / "c.jpe")
    shutil.copy(jpg[1], root / "seq" / "deep" / "d.JPG")
    with Image.open(png[2]) as im:
        im.convert("L").save(root / "e.tga")
        im.convert("L").save(root / "seq" / "f.pgm")
        im.convert("L").resize((64, 64)).save(root / "g.ico")
        im.convert("L").save(root / "seq" / "deep" / "h.tiff")
    shutil.copy(png[0], root / ".hidden.png")
    shutil.copy(png[0], root / ".cache" / "x.png")
    shutil.copy(jpg[0], root / "seq" / "._c.jpe")
    (root / "notes.txt").write_text("not an image")
    expected = {"a.png", "seq/B.PNG", "seq/c.jpe", "seq/deep/d.JPG", "e.tga", "seq/f.pgm", "g.ico", "seq/deep/h.tiff"}

    inputs, skipped = enumerate_inputs(SourceSpec(name="m", path=str(root), kind="folder"))
    build_set = {i.key.split(":", 1)[1] for i in inputs}
    entropy_set = {i.name for i in collect([root], workers=1, progress=False).items}
    pretrain_set = {os.path.relpath(p, root) for p in open_source(root, check=1).paths}
    assert build_set == expected
    assert entropy_set == expected
    assert pretrain_set == expected
    assert skipped == 1  # notes.txt
