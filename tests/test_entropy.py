"""Entropy (paper Eq. 1): exact values, agreement with scikit-image on the real data, statistics, the
bootstrap comparison and `inf30 entropy` on folders and built datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.measure import shannon_entropy
from typer.testing import CliRunner

from cli import inf30_app
from inf30.entropy import (
    analyze,
    collect,
    compare_values,
    decode_gray,
    describe,
    entropy8,
    entropy_raw,
    histogram256,
    local_entropy_map,
)

runner = CliRunner()


# ------------------------------------------------------------------------------------- exact values
def test_constant_image_is_zero() -> None:
    assert entropy8(np.full((40, 30), 117, np.uint8)) == 0.0
    assert entropy8(np.zeros((1, 1), np.uint8)) == 0.0
    assert entropy8(np.zeros((0, 5), np.uint8)) == 0.0


def test_two_equal_levels_is_one_bit() -> None:
    img = np.zeros((64, 64), np.uint8)
    img[:, 32:] = 255
    assert entropy8(img) == pytest.approx(1.0, abs=1e-12)
    img2 = np.where(np.indices((10, 10)).sum(0) % 2 == 0, 3, 200).astype(np.uint8)  # checkerboard
    assert entropy8(img2) == pytest.approx(1.0, abs=1e-12)


def test_all_levels_equally_is_eight_bits() -> None:
    img = np.arange(256, dtype=np.uint8).repeat(7).reshape(56, 32)
    assert entropy8(img) == pytest.approx(8.0, abs=1e-12)


def test_known_unequal_distribution() -> None:
    # p = (1/2, 1/4, 1/4) -> H = 1.5 bits
    img = np.array([0, 0, 1, 2] * 25, np.uint8).reshape(10, 10)
    assert entropy8(img) == pytest.approx(1.5, abs=1e-12)


def test_histogram_paths_agree_and_are_exact() -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (300, 400), dtype=np.uint8)
    assert np.array_equal(histogram256(small), np.bincount(small.ravel(), minlength=256))
    # non-contiguous and 3-D views
    assert np.array_equal(histogram256(small[::2, ::3]), np.bincount(small[::2, ::3].ravel(), minlength=256))
    cube = rng.integers(0, 256, (4, 30, 20), dtype=np.uint8)
    assert np.array_equal(histogram256(cube), np.bincount(cube.ravel(), minlength=256))
    # above 2**24 pixels the exact integer path is used
    big = np.zeros((1 << 12, (1 << 12) + 1), np.uint8)
    big[0, :5] = 9
    counts = histogram256(big)
    assert counts[9] == 5 and counts[0] == big.size - 5


def test_matches_skimage_on_real_images(sirst_dir: Path, hituav_dir: Path) -> None:
    files = sorted((sirst_dir / "images").glob("*.png")) + sorted((hituav_dir / "val").glob("*.jpg"))[::10]
    modes = set()
    for f in files:
        with Image.open(f) as im:
            modes.add(im.mode)
        gray = decode_gray(f.read_bytes())
        assert abs(entropy8(gray) - shannon_entropy(gray, base=2)) < 1e-6, f
    assert {"L", "RGB", "P"} <= modes  # SIRST's mixed modes are all covered
    assert len(files) > 400


def test_raw_entropy_of_16_bit_values() -> None:
    two = np.array([[100, 40000]] * 8, np.uint16)
    assert entropy_raw(two) == pytest.approx(1.0)
    assert entropy_raw(np.full((5, 5), 1234, np.uint16)) == 0.0
    levels = np.arange(1024, dtype=np.uint16).reshape(32, 32) * 7
    assert entropy_raw(levels, bins=None) == pytest.approx(10.0)  # exact distinct levels
    assert entropy_raw(levels) == pytest.approx(8.0)  # 256 bins over the range, 4 levels each
    f = np.array([0.0, 1.0, np.nan, np.inf], np.float32)
    assert entropy_raw(f) == pytest.approx(1.0)


def test_local_entropy_map() -> None:
    flat = local_entropy_map(np.full((50, 60), 80, np.uint8), radius=3)
    assert flat.shape == (50, 60) and float(flat.max()) == 0.0
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (700, 350), dtype=np.uint8)
    m = local_entropy_map(noise, radius=5, max_side=256)
    assert m.shape == (256, 128)
    assert 4.0 < float(m.mean()) <= 8.0
    ro = np.full((20, 20), 5, np.uint8)
    ro.flags.writeable = False  # decoded arrays are often read-only
    assert local_entropy_map(ro).shape == (20, 20)
    with pytest.raises(ValueError):
        local_entropy_map(np.zeros((4, 4, 3), np.uint8))


# --------------------------------------------------------------------------------------- statistics
def test_describe() -> None:
    d = describe([1.0, 2.0, 3.0, 4.0])
    assert d["n"] == 4 and d["mean"] == pytest.approx(2.5) and d["median"] == pytest.approx(2.5)
    assert d["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert d["min"] == 1.0 and d["max"] == 4.0
    assert sum(d["histogram"]["counts"]) == 4 and len(d["histogram"]["edges"]) == 33
    empty = describe([])
    assert empty["n"] == 0 and empty["mean"] is None
    json.dumps(empty, allow_nan=False)


def test_compare_bootstrap_interval() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(6.4, 0.8, 400)
    b = rng.normal(7.2, 0.6, 500)
    c = compare_values(a, b, n_boot=1000, seed=0)
    assert c["mean_diff"] == pytest.approx(a.mean() - b.mean())
    assert c["ci_low"] < c["mean_diff"] < c["ci_high"] < 0  # clearly lower, interval excludes 0
    assert c["ci_low"] < -0.8 + 0.2 and c["ci_high"] > -0.8 - 0.2
    same = compare_values(a, a.copy(), n_boot=500, seed=0)
    assert same["ci_low"] < 0 < same["ci_high"]
    # deterministic for a seed
    assert compare_values(a, b, n_boot=200, seed=5) == compare_values(a, b, n_boot=200, seed=5)
    with pytest.raises(ValueError):
        compare_values(a, np.array([]))


# ---------------------------------------------------------------------------------- folders and CLI
@pytest.fixture()
def messy_folder(tmp_path: Path, sirst_dir: Path) -> Path:
    """40 real SIRST images, a truncated PNG, a non-image disguised as PNG, a text file, a hidden dir."""
    root = tmp_path / "messy"
    (root / "sub").mkdir(parents=True)
    files = sorted((sirst_dir / "images").glob("*.png"))[:40]
    for i, f in enumerate(files):
        shutil.copy(f, (root / "sub" if i % 2 else root) / f.name)
    (root / "truncated.png").write_bytes(files[0].read_bytes()[:200])
    (root / "fake.jpg").write_bytes(b"this is not an image")
    (root / "notes.txt").write_text("hello")
    (root / ".hidden").mkdir()
    shutil.copy(files[1], root / ".hidden" / "x.png")
    return root


def test_folder_counts_corrupt_files_and_matches_skimage(messy_folder: Path) -> None:
    s = collect([messy_folder], workers=1, progress=False)
    assert len(s.items) == 42 and len(s.failures) == 2 and s.skipped == 1
    assert {f.name for f in s.failures} == {"truncated.png", "fake.jpg"}
    assert all(f.error for f in s.failures)
    for item in s.items:
        if item.entropy is not None:
            p = messy_folder / item.name
            assert item.entropy == pytest.approx(
                shannon_entropy(decode_gray(p.read_bytes()), base=2), abs=1e-6
            )


def test_pool_gives_the_same_result_as_inline(messy_folder: Path) -> None:
    one = collect([messy_folder], workers=1, progress=False)
    two = collect([messy_folder], workers=2, progress=False)
    assert [(i.name, i.entropy, i.error) for i in one.items] == [
        (i.name, i.entropy, i.error) for i in two.items
    ]


def test_cli_text_and_json(messy_folder: Path, hituav_dir: Path) -> None:
    res = runner.invoke(inf30_app, ["entropy", str(messy_folder), "-q", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "images 42  decoded 40  corrupt 2" in res.output
    assert "truncated.png" in res.output and "Traceback" not in res.output
    res = runner.invoke(
        inf30_app,
        ["entropy", str(messy_folder), "--compare", str(hituav_dir / "val" / "0_*.jpg"), "--json", "-q",
         "--workers", "1", "--n-boot", "300"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    a, b = d["sets"]
    assert a["decoded"] == 40 and a["corrupt"] == 2 and len(a["failures"]) == 2
    assert b["decoded"] > 0 and b["corrupt"] == 0
    c = d["comparison"]
    assert c["mean_diff"] == pytest.approx(a["stats"]["mean"] - b["stats"]["mean"])
    assert c["ci_low"] <= c["mean_diff"] <= c["ci_high"]
    assert d["references"] == {"Inf30 (paper)": 6.44, "ImageNet-1K (paper)": 7.19}


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    res = runner.invoke(inf30_app, ["entropy", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(inf30_app, ["entropy", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no images found" in res.output


def test_paired_comparison_by_file_name(tmp_path: Path, hituav_dir: Path) -> None:
    """The same scenes in two sets (here: originals and a 16-level posterized copy) are paired by name."""
    a, b = tmp_path / "full", tmp_path / "poster"
    a.mkdir()
    b.mkdir()
    for f in sorted((hituav_dir / "val").glob("*.jpg"))[:12]:
        gray = decode_gray(f.read_bytes())
        Image.fromarray(gray).save(a / (f.stem + ".png"))
        Image.fromarray((gray // 16) * 16).save(b / (f.stem + ".png"))
    r = analyze([a], compare=[b], workers=1, n_boot=300, progress=False)
    p = r.comparison["paired"]
    assert p["n_pairs"] == 12 and p["share_a_higher"] == 1.0 and p["ci_low"] > 0
    assert r.stats[1]["max"] <= 4.0 + 1e-9  # at most 16 levels
    assert "paired by file name (12 pairs)" in r.table()


def test_16_bit_images_use_agc_and_raw_entropy(tmp_path: Path, hituav_dir: Path) -> None:
    gray = decode_gray(sorted((hituav_dir / "val").glob("*.jpg"))[0].read_bytes())
    raw16 = (gray.astype(np.uint16) * 200 + 3000).astype(np.uint16)  # a real scene as radiometric counts
    Image.fromarray(raw16).save(tmp_path / "scene16.png")
    r = analyze([tmp_path], raw=True, workers=1, progress=False)
    item = r.sets[0].items[0]
    assert item.entropy is not None and 0 < item.entropy <= 8
    assert item.entropy_raw == pytest.approx(entropy_raw(raw16))
    assert r.to_dict()["sets"][0]["raw_entropy"]["n"] == 1


def test_built_dataset_uses_stored_entropy(built_dataset: Path, frames_folder) -> None:
    """`inf30 entropy DIR` on a built dataset reads the manifest; values equal a folder run on the inputs
    (the session's ``built_dataset``: 6 SIRST PNGs and 6 HIT-UAV JPEGs from ``frames_folder(12)``)."""
    src = frames_folder(12)
    from_ds = {i.name: i.entropy for i in collect([built_dataset], progress=False).items}
    from_folder = {i.name: i.entropy for i in collect([src], workers=1, progress=False).items}
    assert len(from_ds) == 12 and from_ds.keys() == from_folder.keys()
    for k, v in from_ds.items():
        assert v == pytest.approx(from_folder[k], abs=1e-12)


def test_folder_frames_of_a_tiff_stack_are_items_like_the_build_rows(tmp_path: Path, hituav_dir: Path) -> None:
    """`inf30 entropy` on a folder sees every frame of a multi-frame file, named as the build names its rows
    (name#p000001); a single-frame file stays one item under its own name."""
    frames = [np.asarray(Image.open(p)) for p in sorted((hituav_dir / "val").glob("*.jpg"))[:4]]
    Image.fromarray(frames[0]).save(tmp_path / "stack.tif", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:3]])  # fmt: skip
    Image.fromarray(frames[3]).save(tmp_path / "single.png")
    s = collect([tmp_path], workers=1, progress=False)
    got = {i.name: i.entropy for i in s.items}
    want = {f"stack.tif#p{k:06d}": entropy8(frames[k]) for k in range(3)} | {"single.png": entropy8(frames[3])}
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(v, abs=1e-12) for k, v in want.items())
