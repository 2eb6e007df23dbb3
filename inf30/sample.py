"""`inf30 sample`: a small deterministic source tree for the demo and for trying the tools.

Synthetic thermal-looking scenes (warm objects on cool backgrounds with sensor noise and vignetting) in
the formats real collections mix: 8-bit PNG and JPEG, 16-bit radiometric TIFF, RGB-with-equal-channels
PNG, a pseudo-coloured frame, a short video, a zip archive (with a tar inside), planted exact duplicates, shifted crops (scene
near-duplicates), tiny images and broken files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from inf30.archive import safe_member_name
from inf30.atomic import write_text_atomic
from inf30.errors import UsageError, check
from inf30.options import option


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


MARKER = ".inf30-sample.json"  # written by `inf30 sample`: the files it wrote, so a re-run replaces only those


@dataclass
class SampleOptions:
    """Options of :func:`write_sample`. ``overwrite`` allows writing into a non-empty folder that is not an
    earlier sample; even then only the sample's own files are replaced, nothing else is deleted."""

    seed: int = option(0, "Random seed (the tree is deterministic for a seed).")
    n_scenes: int = option(40, "Synthetic scenes to draw (at least 10).")
    overwrite: bool = option(False, "Write into a non-empty folder that is not an earlier sample (files of the "
                             "sample's names are replaced; nothing is deleted).")

    def validate(self) -> None:
        check(self.seed >= 0, f"--seed must be 0 or more, got {self.seed}")
        check(self.n_scenes >= 10, f"n_scenes must be at least 10, got {self.n_scenes}")


def _earlier_files(out: Path) -> list[str] | None:
    """The files an earlier sample wrote into ``out`` (from its marker), or None when it is not a sample."""
    try:
        rec = json.loads((out / MARKER).read_text())
        files = rec["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [f for f in files if isinstance(f, str) and safe_member_name(f) == f]


def write_sample(out: str | Path, seed: int = SampleOptions.seed, n_scenes: int = SampleOptions.n_scenes,
                 overwrite: bool = SampleOptions.overwrite) -> dict:
    """Write the sample tree under ``out``. Returns {"files": count, "root": path}.

    ``out`` must be missing, empty or an earlier sample (whose files are replaced: only those); a folder
    holding anything else is refused unless ``overwrite`` (then the sample's files are added to it, and
    still nothing that is not the sample's is deleted). The tree is generated in a temporary folder inside
    ``out`` and moved into place after the marker listing its files is written, so a killed run is
    recognised and finished by a re-run."""
    opts = SampleOptions(seed=seed, n_scenes=n_scenes, overwrite=overwrite)
    opts.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    earlier = _earlier_files(out) if out.is_dir() else None
    if out.is_dir() and earlier is None and not overwrite:
        if any(e.name != MARKER and not e.name.startswith(".tmp-sample-") for e in os.scandir(out)):
            raise UsageError(
                f"{out} is not empty and is not an earlier `inf30 sample` folder; choose a new folder (or add "
                "--overwrite to add the sample's files to it; nothing else is deleted)"
            )
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(".tmp-sample-*"):  # a killed run's staging folder (this tool's own)
        shutil.rmtree(old, ignore_errors=True)
    for rel in earlier or []:
        with contextlib.suppress(FileNotFoundError):
            (out / rel).unlink()
    for rel in sorted({str(Path(r).parent) for r in earlier or []}, key=len, reverse=True):
        with contextlib.suppress(OSError):  # folders the sample made, now empty (a non-empty one stays)
            if rel != ".":
                (out / rel).rmdir()
    stage = Path(tempfile.mkdtemp(prefix=".tmp-sample-", dir=out))
    _generate(stage, opts.seed, opts.n_scenes)
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    write_text_atomic(out / MARKER, json.dumps({"tool": "inf30 sample", "seed": seed, "files": files}, indent=1))
    for rel in files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, out / rel)
    shutil.rmtree(stage, ignore_errors=True)
    return {"files": len(files), "root": str(out)}


def _generate(out: Path, seed: int, n_scenes: int) -> None:
    """Write the sample tree into the (new, empty) folder ``out``."""
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
