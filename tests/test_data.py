"""The pre-training data pipeline (infmae.data): every SRC kind, bad input, augmentation, resumable sampling."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infmae.data import (
    MEAN,
    STD,
    DataError,
    EpochBatchSampler,
    FileListSource,
    PretrainDataset,
    augment,
    load_gray,
    make_loader,
    open_source,
)


@pytest.fixture(scope="module")
def real_folder(frames_folder) -> Path:
    """12 real frames (6 SIRST, 6 HIT-UAV): the folder ``built_dataset`` is built from."""
    return frames_folder(12)


def test_every_source_kind_loads(built_dataset: Path, real_folder: Path, tmp_path: Path) -> None:
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    from inf30.publish import PublishOptions, publish

    published = tmp_path / "published"
    publish(built_dataset, published, PublishOptions(progress=False))
    # a generic `datasets` folder: parquet with a differently named image column among other columns
    files = sorted(real_folder.iterdir())[:5]
    ds = Dataset.from_dict(
        {"caption": [f.name for f in files], "frame": [str(f.resolve()) for f in files]},
        features=Features({"caption": Value("string"), "frame": ImageFeature()}),
    )
    generic = tmp_path / "generic"
    generic.mkdir()
    ds.to_parquet(str(generic / "train.parquet"))
    on_disk = tmp_path / "saved"
    ds.save_to_disk(str(on_disk))

    expected = {built_dataset: ("built dataset", 12), published: ("datasets", 12), real_folder: ("image folder", 12),
                generic: ("datasets", 5), on_disk: ("datasets", 5)}
    for src, (kind, n) in expected.items():
        source = open_source(src)
        assert (source.kind, len(source)) == (kind, n), src
        img = source.gray(0)
        assert img.mode == "L" and min(img.size) > 0
        batch = next(iter(make_loader(source, 64, 4).loader))
        assert batch.shape == (4, 3, 64, 64) and batch.dtype == torch.float32
        assert torch.isfinite(batch).all()
    assert open_source(generic).column == "frame"  # picked by feature type, not by name


def test_bad_sources_give_one_line_errors(tmp_path: Path, real_folder: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"frame{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    bad_manifest = tmp_path / "bad_built"
    bad_manifest.mkdir()
    (bad_manifest / "manifest.parquet").write_bytes(b"PAR1 garbage")
    no_image_col = tmp_path / "tabular"
    no_image_col.mkdir()
    import pandas as pd

    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(no_image_col / "train.parquet")
    cases = {
        empty: "no images",
        broken: "unreadable",
        bad_manifest: "cannot read",
        no_image_col: "no image column",
        tmp_path / "missing": "does not exist",
        next(real_folder.iterdir()): "is a file",
    }
    for src, words in cases.items():
        with pytest.raises(DataError) as info:
            open_source(src)
        msg = str(info.value)
        assert words in msg and "\n" not in msg, (src, msg)
    with pytest.raises(DataError, match="multiple of 16"):
        PretrainDataset(open_source(real_folder), 100)
    with pytest.raises(DataError, match="fewer than one batch"):
        make_loader(open_source(real_folder), 64, global_batch=64)


def test_augmentation_any_size_and_normalization(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for w, h in [(40, 23), (6912, 1024), (23, 40), (320, 240)]:  # the paper's extremes and a usual frame
        gray = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
        for size in (64, 96, 224):
            out = augment(gray, size, random.Random(1))
            assert out.size == (size, size) and out.mode == "L"
    # constant frames (gray and RGB): 8-bit gray, replicated to 3 channels, (v/255 - mean) / std everywhere
    Image.new("L", (50, 30), 200).save(tmp_path / "flat.png")
    Image.new("RGB", (41, 23), (200, 200, 200)).save(tmp_path / "flat_rgb.png")
    ds = PretrainDataset(FileListSource([str(tmp_path / "flat.png"), str(tmp_path / "flat_rgb.png")], "t", "t"), 32)
    ramp = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 13 + 1000).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "thermal16.png")  # 16-bit radiometric frame
    g = load_gray(tmp_path / "thermal16.png")
    assert g.mode == "L" and g.size == (64, 48)
    assert np.asarray(g).min() == 0 and np.asarray(g).max() == 255  # 1-99 % gain control
    for i in range(2):
        x = ds[(i, 3)]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert torch.allclose(x, torch.full_like(x, (200 / 255 - MEAN) / STD), atol=1e-5)


def test_sampler_resume_and_shard_equivalence() -> None:
    n, gb = 50, 8
    one = EpochBatchSampler(n, gb, world=1, rank=0, seed=3)
    assert one.steps_per_epoch == 6
    one.set_epoch(2)
    full = list(one)
    assert len(full) == 6 and all(len(b) == 8 for b in full)
    flat = [i for b in full for i, _ in b]
    assert len(set(flat)) == 48  # a permutation, the 2 left over are dropped
    one.set_epoch(2, start_step=4)
    assert list(one) == full[4:]  # mid-epoch resume skips exactly
    one.set_epoch(3)
    assert [i for b in one for i, _ in b] != flat  # shuffled per epoch
    # 2 ranks x (batch 4, accum 1) and 1 rank x (accum 2) see exactly the global batches of 1 rank x 8
    for world, accum in [(2, 1), (1, 2), (2, 2)]:
        parts = []
        for r in range(world):
            s = EpochBatchSampler(n, gb, world=world, rank=r, accum=accum, seed=3)
            s.set_epoch(2)
            parts.append(list(s))
        for step in range(6):
            got = [x for r in range(world) for m in range(accum) for x in parts[r][step * accum + m]]
            assert got == full[step], (world, accum, step)


def test_loader_is_worker_independent(real_folder: Path) -> None:
    source = open_source(real_folder)
    a = make_loader(source, 64, 4, seed=5, workers=0)
    b = make_loader(source, 64, 4, seed=5, workers=2)
    for li in (a, b):
        li.sampler.set_epoch(1, start_step=1)
    xa = torch.stack(list(a.loader))
    xb = torch.stack(list(b.loader))
    assert xa.shape == (2, 4, 3, 64, 64)
    assert torch.equal(xa, xb)


def test_missing_path_fails_at_once_and_only_plausible_ids_ask_the_hub(tmp_path: Path, monkeypatch) -> None:
    """`--data inf30/demo` beside a local inf30/ folder is a mistyped path: an error at once and no Hub request.
    A plausible dataset id is asked once (no retries, short timeout) from a loopback stand-in of the Hub (the
    real Hub is unreachable from the test machines): 404 -> not on the Hub; a closed port -> did not answer."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked: list[str] = []

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            asked.append(self.path)
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # huggingface_hub reads HF_HUB_OFFLINE once, at import: another test module may have imported it offline
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.chdir(tmp_path)
        (tmp_path / "inf30").mkdir()
        for src in ["inf30/demo", "./missing", "data/frames.png", "a/b/c", "~/x", "../up/x"]:
            with pytest.raises(DataError, match="does not exist") as info:
                open_source(src)
            assert "\n" not in str(info.value)
        assert "inf30/ is a local folder" in str(pytest.raises(DataError, open_source, "inf30/demo").value)
        assert asked == []
        with pytest.raises(DataError, match="not a dataset on http://127.0.0.1"):
            open_source("someone/thermal-set")
        # exactly one question about the dataset (huggingface_hub may add requests of its own, e.g. /api/agent-harnesses)
        dataset_requests = [p for p in asked if "/api/datasets/" in p]
        assert len(dataset_requests) == 1 and "someone/thermal-set" in dataset_requests[0]
    finally:
        server.shutdown()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
    with pytest.raises(DataError, match="did not answer") as info:
        open_source("someone/thermal-set")
    assert "\n" not in str(info.value)


def test_16bit_and_float_images_get_the_builds_gain_control(sirst_dir: Path, tmp_path: Path) -> None:
    """`infmae pretrain` and `inf30 build` turn a 16-bit frame into the same 8-bit pixels (one AGC,
    inf30.decode.agc: rounded, not truncated); a float frame with NaN pixels maps them to 0 instead of failing."""
    from inf30.decode import agc, decode_to_gray

    src = sorted((sirst_dir / "images").glob("*.png"))[0]
    with Image.open(src) as im:
        gray = np.asarray(im.convert("L"), dtype=np.uint16)
    raw = gray * 257 + np.arange(gray.size, dtype=np.uint16).reshape(gray.shape) % 97  # a real frame, 16-bit
    path = tmp_path / "frame16.png"
    Image.fromarray(raw).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    ours = np.asarray(load_gray(path))
    built = decode_to_gray(path.read_bytes()).gray
    assert np.array_equal(ours, built)
    assert np.array_equal(ours, agc(raw)[0])
    truncated = np.clip((raw.astype(np.float32) - np.percentile(raw, 1)) * 255.0 / np.ptp(np.percentile(raw, [1, 99])), 0, 255).astype(np.uint8)
    assert not np.array_equal(ours, truncated)  # the old truncating path gave other pixels

    flt = raw.astype(np.float32)
    flt[:4, :4] = np.nan
    out = np.asarray(load_gray_from_array(flt))
    assert out.dtype == np.uint8 and (out[:4, :4] == 0).all()
    assert np.array_equal(out, agc(flt)[0])


def load_gray_from_array(arr: np.ndarray) -> Image.Image:
    from infmae.data import to_gray8

    return to_gray8(Image.fromarray(arr, mode="F"))
