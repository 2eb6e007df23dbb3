"""`inf30 sample`: a small deterministic source tree for the demo and for trying the tools.

Synthetic thermal-looking scenes (warm objects on cool backgrounds with sensor noise and vignetting) in
the formats real collections mix: 8-bit PNG and JPEG, 16-bit radiometric TIFF, RGB-with-equal-channels
PNG, a pseudo-coloured frame, a short video, a zip archive (with a tar inside), planted exact duplicates, shifted crops (scene
near-duplicates), tiny images and broken files.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def thermal_scene(rng: np.random.Generator, h: int = 192, w: int = 256, objects: int = 4) -> np.ndarray:
    """A (h, w) float32 scene in kelvin-like units: sky/ground gradient, warm blobs, noise."""
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    horizon = rng.uniform(0.3, 0.6)
    scene = np.where(y < horizon, 280 + 6 * y, 288 + 4 * (y - horizon) + 2 * np.sin(8 * x + rng.uniform(0, 6)))
    scene = np.broadcast_to(scene, (h, w)).astype(np.float32).copy()
    for _ in range(objects):
        cy, cx = rng.uniform(horizon, 0.95) * h, rng.uniform(0.05, 0.95) * w
        ry, rx = rng.uniform(2, max(h / 6, 3)), rng.uniform(2, max(w / 8, 3))
        heat = rng.uniform(6, 25)
        yy, xx = np.ogrid[:h, :w]
        blob = np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) ** 2)
        scene += heat * blob.astype(np.float32)
    vignette = 1 - 0.015 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    scene = scene * vignette + rng.normal(0, 0.35, (h, w)).astype(np.float32)
    return scene


def to8(scene: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(scene, [1, 99])
    return np.clip((scene - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)


def write_sample(out: str | Path, seed: int = 0, n_scenes: int = 40) -> dict:
    """Write the sample tree under ``out`` (replacing it). Returns {"files": count, "root": path}."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    rng = np.random.default_rng(seed)
    cam = out / "camera_a"
    cam16 = out / "radiometric"
    web = out / "web"
    for d in (cam, cam16, web):
        d.mkdir(parents=True)
    scenes = [thermal_scene(rng) for _ in range(n_scenes)]
    for i, s in enumerate(scenes[: n_scenes // 2]):
        Image.fromarray(to8(s)).save(cam / f"frame_{i:03d}.png")
    for i, s in enumerate(scenes[n_scenes // 2 : n_scenes // 2 + 8]):
        raw = np.clip((s - 250) * 100, 0, 65535).astype(np.uint16)  # 0.01 K per count, like radiometric cores
        Image.fromarray(raw).save(cam16 / f"raw_{i:03d}.tif")
    for i, s in enumerate(scenes[n_scenes // 2 + 8 :]):
        g = to8(s)
        if i % 3 == 0:
            Image.fromarray(np.stack([g] * 3, -1)).save(web / f"web_{i:03d}.png")  # RGB, equal channels
        else:
            Image.fromarray(g).save(web / f"web_{i:03d}.jpg", quality=92)
    # pseudo-coloured (ironbow-like) frame
    Image.fromarray(cv2.applyColorMap(to8(scenes[0]), cv2.COLORMAP_INFERNO)[..., ::-1]).save(web / "pseudo.png")
    # planted exact duplicate and scene near-duplicates (shifted crops of a frame)
    shutil.copy(cam / "frame_001.png", web / "copy_of_frame_001.png")
    g = to8(scenes[2])
    Image.fromarray(g[10:180, 12:240]).save(web / "crop_of_frame_002.png")
    Image.fromarray(cv2.resize(g[5:185, 0:250], (200, 144))).save(web / "zoom_of_frame_002.png")
    # a short video: a warm object crossing a static scene, 4 s at 10 fps
    vid = out / "videos"
    vid.mkdir()
    base = scenes[3]
    writer = cv2.VideoWriter(str(vid / "patrol.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 192), False)
    for t in range(40):
        frame = base.copy()
        yy, xx = np.ogrid[:192, :256]
        frame += 20 * np.exp(-(((yy - 140) / 12.0) ** 2 + ((xx - (20 + 5 * t)) / 8.0) ** 2))
        writer.write(to8(frame))
    writer.release()
    # an archive with images inside
    with zipfile.ZipFile(out / "archive_b.zip", "w") as zf:
        for i in range(4):
            buf = io.BytesIO()
            Image.fromarray(to8(thermal_scene(rng, 128, 160))).save(buf, "PNG")
            zf.writestr(f"seq/img_{i}.png", buf.getvalue())
        zf.writestr("../escape.png", buf.getvalue())  # refused: path escapes the archive
        # an archive inside the archive (datasets often ship a tarball of per-sequence archives)
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w") as tf:
            for i in range(2):
                png = io.BytesIO()
                Image.fromarray(to8(thermal_scene(rng, 128, 160))).save(png, "PNG")
                info = tarfile.TarInfo(f"night/img_{i}.png")
                info.size = png.tell()
                png.seek(0)
                tf.addfile(info, png)
        zf.writestr("seq_night.tar", inner.getvalue())
    # bad input
    bad = out / "broken"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.jpg").write_text("this is not an image\n")
    png = (cam / "frame_004.png").read_bytes()
    (bad / "truncated.png").write_bytes(png[: len(png) // 3])
    Image.fromarray(to8(thermal_scene(rng, 12, 16))).save(bad / "tiny.png")
    files = sum(1 for p in out.rglob("*") if p.is_file())
    return {"files": files, "root": str(out)}
