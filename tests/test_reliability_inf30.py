"""Issue 13, the inf30 side: never destroy a user's files, never reuse stale work, reject bad options up front.

Each test failed before its fix. Real images (../shared/data), real archives replaced in place, real
processes for the folder lock and for Ctrl-C.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import copy_folder, interrupt_build
from typer.testing import CliRunner

from cli import inf30_app
from inf30.build import BuildOptions, build, summarize
from inf30.errors import UsageError
from inf30.manifest import read_manifest
from inf30.sources import load_config, load_sources

REPO = Path(__file__).resolve().parents[1]
INF30 = str(Path(sys.executable).parent / "inf30")


def _build(paths: list[str], out: Path, **kw) -> object:
    opts = BuildOptions(workers=1, progress=False, **{"dedupe": False, **kw})
    return build(load_sources(paths, out_dir=out), out, opts)


def _zip(path: Path, files: list[Path]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            zf.writestr(f"seq/{f.name}", f.read_bytes())
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)  # replaced in place, as `cp new.zip path` or a finished download would


def _cli(args: list[str]) -> tuple[int, list[str]]:
    """Run the inf30 CLI in-process; (exit code, the output's lines)."""
    res = CliRunner().invoke(inf30_app, args)
    assert "Traceback" not in res.output, res.output
    return res.exit_code, res.output.strip().splitlines()


def _usage_error(args: list[str]) -> str:
    code, lines = _cli(args)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, code, lines)
    return lines[0]


@pytest.fixture(scope="module")
def frames(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "hit-uav" / "val").glob("*.jpg"))


@pytest.fixture(scope="module")
def small(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "sirst" / "images").glob("*.png"))


# ------------------------------------------------------------------------------------ 1. inf30 sample
def test_sample_never_deletes_a_users_files(tmp_path: Path, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    (user / "camera_a").mkdir()
    (user / "camera_a" / "calib.txt").write_text("calibration")
    monkeypatch.chdir(user)
    err = _usage_error(["sample", "."])
    assert "not empty" in err and "--overwrite" in err
    assert sorted(p.relative_to(user).as_posix() for p in user.rglob("*")) == [
        "camera_a", "camera_a/calib.txt", "thesis.tex"]  # fmt: skip

    # --overwrite adds the sample's files and deletes nothing
    code, lines = _cli(["sample", ".", "--overwrite"])
    assert code == 0, lines
    assert (user / "thesis.tex").read_text() == "years of work"
    assert (user / "camera_a" / "calib.txt").read_text() == "calibration"
    assert (user / "camera_a" / "frame_000.png").is_file()

    # an earlier sample is replaced: only its own files; a file the user added inside it stays
    sample = tmp_path / "sample"
    assert _cli(["sample", str(sample)])[0] == 0
    listed = json.loads((sample / ".inf30-sample.json").read_text())["files"]
    (sample / "web" / "my_notes.txt").write_text("keep me")
    (sample / "camera_a" / "frame_000.png").unlink()  # the user removed one; the re-run writes it again
    assert _cli(["sample", str(sample), "--seed", "1"])[0] == 0
    assert (sample / "web" / "my_notes.txt").read_text() == "keep me"
    assert (sample / "camera_a" / "frame_000.png").is_file()
    assert json.loads((sample / ".inf30-sample.json").read_text())["files"] == listed
    assert not list(sample.glob(".tmp-sample-*"))
    # a file (not a folder) is refused, untouched
    (tmp_path / "afile").write_text("x")
    assert "not a folder" in _usage_error(["sample", str(tmp_path / "afile")])
    assert (tmp_path / "afile").read_text() == "x"


# ------------------------------------------------------------------------------------ 3. folder lock
HOLD = "import sys, time; from inf30.lock import lock_folder\nwith lock_folder(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)"


@pytest.fixture(scope="module")
def built(tmp_path_factory, small: list[Path]) -> Path:
    tmp = tmp_path_factory.mktemp("built")
    copy_folder(tmp / "src", small[:6])
    _build([str(tmp / "src")], tmp / "ds")
    return tmp / "ds"


def test_a_busy_folder_is_refused_by_build_merge_report_publish(built: Path, tmp_path: Path):
    """Hold the lock in one real process; `inf30 build/merge/report/publish` in others are refused with one
    line (exit 1) and leave the folder as it was."""
    src = built.parent / "src"
    merged = tmp_path / "merged"
    merged.mkdir()
    cases = [
        (built, ["build", str(src), "--out", str(built), "--no-dedupe", "-q", "--workers", "1"]),
        (merged, ["merge", str(built), "--out", str(merged), "--no-dedupe", "-q"]),
        (built, ["report", str(built), "-q", "--no-entropy-maps"]),
        (built, ["publish", str(built), "--to", str(tmp_path / "hf"), "-q"]),
    ]
    for folder, args in cases:
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            before = sorted(p.name for p in folder.iterdir())
            r = subprocess.run([INF30, *args], capture_output=True, text=True, timeout=120)
        finally:
            holder.kill()
            holder.wait()
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, (args, r.returncode, r.stderr)
        assert lines[0].startswith("error: another inf30 process is writing"), lines
        assert sorted(p.name for p in folder.iterdir()) == before, args
        assert not (tmp_path / "hf").exists()
    # once the holder is gone (killed: the kernel released its lock) the same command works
    r = subprocess.run([INF30, *cases[1][1]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------ 4. archive cache
def test_an_archive_replaced_in_place_is_extracted_again(small: list[Path], tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "ds"
    src.mkdir()
    _zip(src / "seq.zip", small[:2])
    _build([str(src)], out)
    _zip(src / "seq.zip", small[2:5])  # other members, replaced in place
    _build([str(src)], out)
    df = read_manifest(out)
    assert sorted(df["item_key"]) == [f"src:seq.zip!seq/{f.name}" for f in small[2:5]]
    assert (df["status"] == "kept").all()
    # one extraction folder: the old version's is gone
    assert len([p for p in (out / ".work" / "extract").iterdir() if p.is_dir()]) == 1

    # an archive still being copied (truncated: the archive itself unreadable), then completed in place
    data = (src / "seq.zip").read_bytes()
    (src / "seq.zip").write_bytes(data[: len(data) // 2])
    _build([str(src)], out)
    df = read_manifest(out)
    assert df["reason"].fillna("").str.startswith("corrupt").any()
    with open(src / "seq.zip", "r+b") as f:  # same inode, completed
        f.write(data)
    _build([str(src)], out)
    df = read_manifest(out)
    assert sorted(df["item_key"]) == [f"src:seq.zip!seq/{f.name}" for f in small[2:5]]
    assert (df["status"] == "kept").all()


# --------------------------------------------------------------------------------- 5. --out is the source
def test_build_into_its_own_source_folder_reads_nothing_of_its_own_back(frames: list[Path], small: list[Path],
                                                                        tmp_path: Path):
    src = tmp_path / "src"
    copy_folder(src, frames[:4])
    _zip(src / "more.zip", small[:2])
    (src / "images").mkdir()  # the user's own images/ folder (not content-addressed names) is an input
    shutil.copyfile(small[3], src / "images" / "user.png")
    (src / ".tmp-notes.txt").write_text("a user's file that merely looks temporary")
    first = _build([str(src)], src)
    assert first.items == 7
    for _ in range(2):
        again = _build([str(src)], src)
        assert (again.items, again.kept) == (first.items, first.kept)
    keys = set(read_manifest(src)["item_key"])
    assert "src:images/user.png" in keys and not any(".work" in k or "/images/" in k[4:] for k in keys)
    assert (src / ".tmp-notes.txt").is_file() and (src / "images" / "user.png").is_file()

    # a glob whose root is the output folder: the same
    g = _build([str(src / "*.jpg")], src)
    assert g.items == 4
    # a source inside the output (its stored images): only the user's file there is an input
    assert _build([str(src / "images")], src).items == 1


# ------------------------------------------------------------------- 6. stale dedupe groups, build.json, orphans
def test_no_dedupe_rerun_drops_stale_groups_and_build_json_matches_the_manifest(frames: list[Path], tmp_path: Path):
    from PIL import Image

    src, out = tmp_path / "src", tmp_path / "ds"
    copy_folder(src, frames[:3])
    # a near copy of the first frame: re-encoded smaller (a different id, the same picture)
    Image.open(frames[0]).resize((480, 384)).save(src / "copy_small.png")
    from pipelines.build import build_sources  # build, then the dedupe stage (build() alone never dedupes)

    build_sources([str(src)], out, BuildOptions(workers=1, progress=False, dedupe=True))
    df = read_manifest(out)
    assert df["reason"].fillna("").str.startswith(("near_copy", "near_duplicate")).sum() == 1
    record = json.loads((out / "build.json").read_text())
    assert record["summary"]["kept"] == int((df["status"] == "kept").sum()) == 3
    assert (out / "dedupe" / "groups.parquet").is_file()

    _build([str(src)], out, dedupe=False)
    df = read_manifest(out)
    assert not (out / "dedupe" / "groups.parquet").exists()
    record = json.loads((out / "build.json").read_text())
    assert record["summary"]["kept"] == int((df["status"] == "kept").sum()) == 4
    code, lines = _cli(["report", str(out), "-q", "--no-entropy-maps", "--samples", "1"])
    assert code == 0, lines
    groups = json.loads((out / "report" / "summary.json").read_text())["duplicate_groups"]
    assert groups["count"] == 0, groups  # not the earlier run's group beside a manifest without duplicates

    # a source file removed: its stored image goes (it was this tool's), a user's file in images/ stays
    gone = read_manifest(out).set_index("item_key").loc[f"src:{frames[1].name}", "path"]
    (out / "images" / "README.txt").write_text("user notes")
    (src / frames[1].name).unlink()
    summary = _build([str(src)], out)
    assert summary.pruned_images == 1 and not (out / gone).exists()
    stored = {p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file()}
    assert stored == set(read_manifest(out)["path"].dropna()) | {"images/README.txt"}
    assert json.loads((out / "build.json").read_text())["summary"] == summarize(read_manifest(out), out).__dict__ | {
        "pruned_images": 1, "dedupe": None}  # fmt: skip


# ------------------------------------------------------------------------- 8. glob characters in names
def test_an_existing_name_with_glob_characters_is_a_path(small: list[Path], tmp_path: Path):
    a, b = small[0], small[1]
    folder = tmp_path / "cam[1]"
    folder.mkdir()
    shutil.copyfile(a, folder / "frame[1].png")
    shutil.copyfile(b, folder / "frame1.png")
    (tmp_path / "cam1").mkdir()
    shutil.copyfile(small[2], tmp_path / "cam1" / "x.png")

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    _build([str(folder / "frame[1].png")], tmp_path / "o1")
    assert read_manifest(tmp_path / "o1")["source_sha256"].tolist() == [sha(a)]
    _build([str(folder)], tmp_path / "o2")  # the folder `cam[1]`, not `cam1`
    assert sorted(read_manifest(tmp_path / "o2")["source_sha256"]) == sorted([sha(a), sha(b)])
    # --glob: a pattern, explicitly
    code, lines = _cli(["build", glob.escape(str(folder)) + "/frame[1].png", "--glob", "--out", str(tmp_path / "o3"),
                        "--no-dedupe", "-q", "--workers", "1"])  # fmt: skip
    assert code == 0, lines
    assert read_manifest(tmp_path / "o3")["source_sha256"].tolist() == [sha(b)]
    # a pattern that names no existing path is still a pattern
    _build([glob.escape(str(folder)) + "/frame?.png"], tmp_path / "o4")
    assert read_manifest(tmp_path / "o4")["source_sha256"].tolist() == [sha(b)]


# ------------------------------------------------------------------------------ 9. sources YAML schema
def test_sources_yaml_is_checked_against_its_schema(small: list[Path], frames: list[Path], tmp_path: Path):
    src = tmp_path / "src"
    copy_folder(src, small[:2])
    copy_folder(src, frames[:1])

    def config(entry: dict) -> Path:
        path = tmp_path / "sources.yaml"
        path.write_text(yaml.safe_dump({"sources": [{"name": "cam", "path": "src", **entry}]}))
        return path

    # a string is one pattern
    specs = load_config(config({"include": "*.png"}))
    assert specs[0].include == ["*.png"]
    _build_cfg = build(load_sources([], config=config({"include": "*.png"}), out_dir=tmp_path / "a"), tmp_path / "a",
                       BuildOptions(workers=1, progress=False, dedupe=False))  # fmt: skip
    assert _build_cfg.items == 2
    excl = build(load_sources([], config=config({"exclude": "*.jpg"}), out_dir=tmp_path / "b"), tmp_path / "b",
                 BuildOptions(workers=1, progress=False, dedupe=False))  # fmt: skip
    assert excl.items == 2
    for entry, words in [
        ({"options": {"agc_percentiles": 5}}, ["cam", "options.agc_percentiles"]),
        ({"options": {"agc_percentiles": [99, 1]}}, ["cam", "options.agc_percentiles", "LOW < HIGH"]),
        ({"options": [1, 2]}, ["cam", "`options` must be a mapping"]),
        ({"options": {"video_every": 0}}, ["cam", "options.video_every"]),
        ({"options": {"video_every": True}}, ["cam", "options.video_every"]),
        ({"options": {"concurrency": 0}}, ["cam", "concurrency"]),
        ({"options": {"drop_pseudocolor": "yes"}}, ["cam", "options.drop_pseudocolor"]),
        ({"options": {"bogus": 1}}, ["cam", "unknown option 'bogus'"]),
        ({"options": {"depth": -1}}, ["cam", "depth"]),
        ({"include": [1, 2]}, ["cam", "`include`"]),
        ({"kind": "folders"}, ["cam", "`kind`"]),
        ({"licence": ["a"]}, ["cam", "`licence`"]),
        ({"colour": 1}, ["cam", "unknown keys"]),
    ]:
        with pytest.raises(UsageError) as exc:
            load_config(config(entry))
        assert all(w in str(exc.value) for w in words), (entry, str(exc.value))
        err = _usage_error(["build", "--config", str(config(entry)), "--out", str(tmp_path / "never"), "-q"])
        assert "Traceback" not in err
        assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------- 10. bad options, exit 2
BUILD_PROBES = [
    ["--agc", "1,200"], ["--agc", "99,1"], ["--agc", "x"], ["--agc", "1,2,3"], ["--agc", "-1,50"],
    ["--video-every", "0"], ["--video-every", "-1"], ["--video-every", "nan"], ["--video-every", "inf"],
    ["--hashes", "bogus"], ["--hashes", "phash,bogus"], ["--hashes", ","], ["--max-pixels", "0"],
    ["--part-size", "0"], ["--part-size", "-1"], ["--shard", "5/3"], ["--shard", "0/0"], ["--shard", "-1/3"],
    ["--shard", "x"], ["--workers", "-1"], ["--min-size", "-1"], ["--min-side", "-2"],
    ["--max-archive-bytes", "0"], ["--max-archive-files", "0"], ["--max-archive-depth", "0"],
]  # fmt: skip


@pytest.mark.parametrize("probe", BUILD_PROBES, ids=lambda p: " ".join(p))
def test_bad_build_options_are_usage_errors_before_any_work(probe: list[str], small: list[Path], tmp_path: Path):
    src = tmp_path / "src"
    copy_folder(src, small[:1])
    out = tmp_path / "out"
    _usage_error(["build", str(src), "--out", str(out), "-q", *probe])
    assert not out.exists()


def test_bad_options_of_the_other_commands_are_usage_errors(built: Path, tmp_path: Path):
    out = tmp_path / "out"
    for args in (
        ["scrape", "https://127.0.0.1:9/x.png", "--concurrency", "0"], ["scrape", "https://127.0.0.1:9/x.png", "--per-host", "0"],
        ["scrape", "https://127.0.0.1:9/x.png", "--retries", "-1"], ["scrape", "https://127.0.0.1:9/x.png", "--rate", "-1"],
        ["scrape", "https://127.0.0.1:9/x.png", "--read-timeout", "0"], ["scrape", "https://127.0.0.1:9/x.png", "--connect-timeout", "-1"],
        ["scrape", "https://127.0.0.1:9/x.png", "--backoff", "-1"], ["scrape", "https://127.0.0.1:9/x.png", "--depth", "-1"],
        ["scrape", "https://127.0.0.1:9/x.png", "--max-image-mb", "0"], ["scrape", "https://127.0.0.1:9/x.png", "--max-archive-mb", "-1"],
        ["scrape", "https://127.0.0.1:9/x.png", "--max-redirects", "-1"],
        ["scrape", "https://127.0.0.1:9/x.png", "--include", "re:("],
        ["scrape", "https://127.0.0.1:9/x.png", "--max-image-mb", "nan"], ["scrape", "https://127.0.0.1:9/x.png", "--rate", "inf"],
    ):  # fmt: skip
        _usage_error([*args, "--out", str(out), "-q"])
        assert not out.exists(), args
    for args in (["--max-side", "0"], ["--max-side", "-5"], ["--shard-size", "0"], ["--shard-size", "-1MB"],
                 ["--shard-size", "lots"], ["--repo-id", "no-slash"]):  # fmt: skip
        _usage_error(["publish", str(built), "--to", str(out), "-q", *args])
        assert not out.exists(), args
    assert "--samples" in _usage_error(["report", str(built), "--samples", "-3", "-q"])
    _usage_error(["entropy", str(built), "--n-boot", "0", "-q"])
    _usage_error(["entropy", str(built), "--workers", "-1", "-q"])
    _usage_error(["entropy", str(built), "--seed", "-1", "-q"])
    _usage_error(["sample", str(out), "--seed", "-1"])
    assert not out.exists()
    # an --out that is a file is a usage error, and the file stays as it was
    (tmp_path / "file").write_text("mine")
    assert "not a folder" in _usage_error(["build", str(built.parent / "src"), "--out", str(tmp_path / "file"), "-q"])
    assert "not a folder" in _usage_error(["merge", str(built), "--out", str(tmp_path / "file"), "-q"])
    assert (tmp_path / "file").read_text() == "mine"


def test_entropy_where_nothing_decodes_fails_with_exit_1(tmp_path: Path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "broken" / "b.jpg").write_text("text")
    code, lines = _cli(["entropy", str(tmp_path / "broken"), "-q"])
    assert code == 1 and len(lines) == 1 and "decodes" in lines[0], lines


# ------------------------------------------------------------------------------------ 11. Ctrl-C
def test_ctrl_c_during_a_parallel_build_prints_one_line_and_exits_130(frames: list[Path], tmp_path: Path):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does) while two pool workers decode."""
    src, out = tmp_path / "src", tmp_path / "ds"
    copy_folder(src, frames[:120])
    interrupt_build([INF30, "build", str(src), "--out", str(out), "--workers", "2", "--part-size", "1", "--no-dedupe",
                     "-q"], out, 2, timeout=120)  # fmt: skip
    # and the re-run resumes to a complete build
    r = subprocess.run([INF30, "build", str(src), "--out", str(out), "--workers", "2", "--part-size", "1",
                        "--no-dedupe", "-q"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(read_manifest(out)) == 120
