"""`inf30 report DIR` on a dataset built from the real data: the funnel adds up, the plots are real, and
every image of index.html loads in headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_folder
from PIL import Image
from typer.testing import CliRunner

from cli import inf30_app
from inf30.dedupe import mark_dropped
from inf30.manifest import read_manifest, write_manifest
from inf30.report import FUNNEL_COLUMNS, ReportOptions, funnel_table, write_report

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, sirst_dir: Path, hituav_dir: Path) -> Path:
    """A dataset built by `inf30 build` from real images (two sources with licences, an exact copy, a tiny
    image, a corrupt file), then marked by the dedupe stage's contract: one near-copy and three scene
    duplicates of consecutive HIT-UAV video frames, with dedupe/groups.parquet."""
    from inf30.build import BuildOptions, build
    from inf30.sources import load_sources

    tmp = tmp_path_factory.mktemp("report")
    sirst_files = sorted((sirst_dir / "images").glob("*.png"))[:16]
    sirst = copy_folder(tmp / "src" / "sirst", sirst_files)
    shutil.copy(sirst_files[3], sirst / "copy_of_3.png")  # exact duplicate
    Image.open(sirst_files[0]).convert("L").resize((12, 10)).save(sirst / "tiny.png")  # too small
    (sirst / "broken.png").write_bytes(sirst_files[1].read_bytes()[:300])  # corrupt
    frames = sorted((hituav_dir / "train").glob("*.jpg"))[:8]  # one video sequence, consecutive frames
    hit = copy_folder(tmp / "src" / "hituav", frames + sorted((hituav_dir / "val").glob("*.jpg"))[:4])
    cfg = tmp / "sources.yaml"
    cfg.write_text(
        f"sources:\n"
        f"  - {{name: sirst, path: {sirst}, licence: 'research use, cite Dai et al. WACV 2021'}}\n"
        f"  - {{name: hituav, path: {hit}, licence: CC BY 4.0}}\n"
    )
    out = tmp / "ds"
    build(
        load_sources([], config=cfg, out_dir=out), out, BuildOptions(workers=1, dedupe=False, progress=False)
    )

    # the dedupe stage's output as inf30.dedupe writes it (numeric stages 2 = near-copy, 3 = scene)
    df = read_manifest(out)
    df["dup_stage"] = pd.array([None] * len(df), dtype="Int8")
    df["dup_anchor"] = None
    df["dup_evidence"] = None
    keys = [f"hituav:{f.name}" for f in frames]
    anchor_id = df.loc[df["item_key"] == keys[0], "id"].item()
    groups = []
    for key, stage, ev in [
        (keys[1], 2, "hamming=3"),
        (keys[2], 3, "inliers=412,similarity=0.861"),
        (keys[3], 3, "inliers=377,similarity=0.842"),
        (keys[4], 3, "inliers=251,similarity=0.803"),
    ]:
        i = df.index[df["item_key"] == key][0]
        mark_dropped(df, i, stage, anchor_id, ev)
        groups.append({"anchor": anchor_id, "member": df.loc[i, "id"], "stage": stage, "evidence": ev})
    write_manifest(out, df)
    (out / "dedupe").mkdir()
    g = pd.DataFrame(groups)
    g["stage"] = g["stage"].astype(np.int8)
    g.to_parquet(out / "dedupe" / "groups.parquet")
    return out


@pytest.fixture(scope="module")
def report(dataset: Path):
    return write_report(dataset, ReportOptions(progress=False, workers=1, samples_per_source=4, extremes=4))


def _chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium; installed by scripts/ensure_chromium.sh when missing (as `make test` does)."""
    exe = _chromium_path()
    if exe is None:
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "ensure_chromium.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        exe = _chromium_path()
        if exe is None:
            why = (proc.stderr or proc.stdout).strip().splitlines()
            pytest.skip(f"headless Chromium is missing and could not be installed: {why[-1] if why else '?'}")
    return exe


_CHECK_JS = """<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("img").forEach(function (im) {
    out.push({src: im.getAttribute("src").slice(0, 80), complete: im.complete,
              w: im.naturalWidth, h: im.naturalHeight});
  });
  var pre = document.createElement("pre");
  pre.id = "imgcheck";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def browser_images(chromium: str, page: Path) -> list[dict]:
    """Open ``page`` in headless Chromium (a copy with a checking script beside it, so relative image
    paths resolve) and return, per <img>, whether it loaded and its natural size."""
    probe = page.with_name("_imgcheck_" + page.name)
    probe.write_text(page.read_text().replace("</body>", _CHECK_JS + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--dump-dom", probe.as_uri(),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    probe.unlink()
    m = re.search(r'<pre id="imgcheck">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"chromium gave no result (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def assert_real_plot(path: Path) -> None:
    """A PNG with plot-like content: a reasonable size, many colours, neither blank nor solid."""
    with Image.open(path) as im:
        assert im.format == "PNG", path
        assert im.width >= 300 and im.height >= 200, (path, im.size)
        rgb = np.asarray(im.convert("RGB"))
    packed = rgb[..., 0].astype(np.uint32) << 16 | rgb[..., 1].astype(np.uint32) << 8 | rgb[..., 2]
    colours = np.unique(packed)
    assert len(colours) >= 30, (path, len(colours))
    ink = (rgb < 240).any(axis=2).mean()
    assert 0.01 < ink < 0.99, (path, ink)


# --------------------------------------------------------------------------------------------- tests
def test_funnel_adds_up(dataset: Path, report) -> None:
    df = read_manifest(dataset)
    t = report.summary["funnel"]["TOTAL"]
    assert t == {
        "found": len(df),
        "decoded": len(df) - 1,
        "corrupt": 1,
        "too_small": 1,
        "other_dropped": 0,
        "exact_duplicates": 1,
        "near_copies": 1,
        "scene_duplicates": 3,
        "kept": int((df["status"] == "kept").sum()),
    }
    assert t["found"] == 16 + 3 + 12 and t["kept"] == t["found"] - 7
    s, h = report.summary["funnel"]["sirst"], report.summary["funnel"]["hituav"]
    assert (s["found"], s["kept"], s["corrupt"], s["too_small"], s["exact_duplicates"]) == (19, 16, 1, 1, 1)
    assert (h["found"], h["kept"], h["near_copies"], h["scene_duplicates"]) == (12, 8, 1, 3)
    tab = funnel_table(df)
    outcome_cols = [c for c in FUNNEL_COLUMNS if c not in ("found", "decoded")]
    assert (tab[outcome_cols].sum(axis=1) == tab["found"]).all()


def test_report_contents(dataset: Path, report) -> None:
    out = dataset / "report"
    assert report.html == out / "index.html" and report.markdown == out / "report.md"
    names = {p.name for p in report.plots}
    assert {"funnel.png", "entropy_hist.png", "resolution.png", "samples.png", "entropy_extremes.png",
            "duplicates.png"} <= names  # fmt: skip
    for p in report.plots:
        assert_real_plot(p)
    page = report.html.read_text()
    md = report.markdown.read_text()
    for p in report.plots:
        assert f'src="{p.name}"' in page and f"({p.name})" in md
    # numbers in the page: per-source entropy table, the paper's references, resolution, licences
    kept = read_manifest(dataset).query("status == 'kept'")
    e = report.summary["entropy"]
    assert e["ALL"]["n"] == len(kept) and e["ALL"]["mean"] == pytest.approx(kept["entropy"].mean())
    assert e["hituav"]["mean"] == pytest.approx(kept.query("source == 'hituav'")["entropy"].mean())
    assert "6.44" in page and "7.19" in page and "6.44" in md
    r = report.summary["resolution"]
    area = kept["width"] * kept["height"]
    lo = area.idxmin()
    assert r["min_resolution"] == f"{int(kept['width'][lo])}x{int(kept['height'][lo])}"
    assert r["max_resolution"] == "640x512" and "40x23 to 6912x1024" in page
    assert report.summary["licences"]["hituav"]["licence"] == "CC BY 4.0"
    assert "CC BY 4.0" in page and "CC BY 4.0" in md
    dg = report.summary["duplicate_groups"]
    assert dg["from"].startswith("dedupe") and dg["count"] == 1 and dg["largest"][0]["members"] == 4
    assert sorted(dg["largest"][0]["stages"]) == ["near_copy", "near_duplicate"]
    json.loads(report.summary_json.read_text())


def test_every_image_loads_in_chromium(report, chromium: str) -> None:
    n_tags = report.html.read_text().count("<img ")
    imgs = browser_images(chromium, report.html)
    assert len(imgs) == n_tags == len(report.plots)
    for im in imgs:
        assert im["complete"] and im["w"] > 0 and im["h"] > 0, im


def test_the_browser_check_catches_a_missing_image(tmp_path: Path, report, chromium: str) -> None:
    page = report.out_dir / "_broken_test.html"
    page.write_text('<html><body><img src="funnel.png"><img src="no_such_plot.png"></body></html>')
    try:
        imgs = browser_images(chromium, page)
    finally:
        page.unlink()
    assert imgs[0]["w"] > 0 and imgs[1]["w"] == 0


def test_manifest_only_dataset_embedded_via_cli(dataset: Path, tmp_path: Path, chromium: str) -> None:
    """No dedupe/groups.parquet and no stored entropy: groups come from the manifest's reasons and the
    entropy is computed from the stored images; `--embed` gives one HTML file that works on its own."""
    df = read_manifest(dataset).drop(columns=["dup_stage", "dup_anchor", "dup_evidence"])
    expected = df.loc[df["status"] == "kept", "entropy"].mean()
    df["entropy"] = None
    other = tmp_path / "ds2"
    other.mkdir()
    os.symlink(dataset / "images", other / "images")
    write_manifest(other, df)
    res = runner.invoke(
        inf30_app, ["report", str(other), "--embed", "--samples", "2", "--no-entropy-maps", "-q"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((other / "report" / "summary.json").read_text())
    assert summary["entropy"]["ALL"]["mean"] == pytest.approx(expected, abs=1e-12)
    assert any("computed here" in n for n in summary["notes"])
    dg = summary["duplicate_groups"]
    assert dg["from"] == "manifest duplicate reasons"
    assert sorted(g["members"] for g in dg["largest"]) == [1, 4]  # the exact copy; the video frames
    for p in sorted((other / "report").glob("*.png")):
        assert_real_plot(p)
    page = other / "report" / "index.html"
    text = page.read_text()
    assert 'src="data:image/png;base64,' in text and 'src="funnel.png"' not in text
    alone = tmp_path / "alone.html"  # away from the PNGs
    shutil.copy(page, alone)
    imgs = browser_images(chromium, alone)
    assert len(imgs) == text.count("<img ") >= 5 and all(im["complete"] and im["w"] > 0 for im in imgs)


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    res = runner.invoke(inf30_app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "no manifest" in res.output and "Traceback" not in res.output


def test_nothing_kept_still_reports(tmp_path: Path) -> None:
    rows = [
        {"item_key": "a:x.png", "source": "a", "origin": "x.png", "origin_kind": "file", "status": "dropped",
         "reason": "corrupt | truncated"},
        {"item_key": "a:y.png", "source": "a", "origin": "y.png", "origin_kind": "file", "status": "dropped",
         "reason": "unsupported | not an image"},
    ]  # fmt: skip
    write_manifest(tmp_path, pd.DataFrame(rows))
    rep = write_report(tmp_path, ReportOptions(progress=False))
    assert rep.summary["funnel"]["TOTAL"]["corrupt"] == 2 and rep.summary["funnel"]["TOTAL"]["kept"] == 0
    assert rep.html.is_file() and rep.markdown.is_file()
