"""`inf30 publish`: Hub-ready dataset repository, load round trip, dataset card, push.

Real data from ../shared/data throughout. The push tests run huggingface_hub's own upload code against a
loopback stand-in for the Hub endpoints (tests/hub_standin.py): the real Hub is unreachable here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from hub_standin import HubStandin
from PIL import Image

from inf30.entropy import entropy8
from inf30.hashing import compute_hashes
from inf30.manifest import empty_row, read_manifest, write_manifest
from inf30.publish import PublishError, PublishOptions, load_published, parse_size, publish

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_standinSECRET0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def hf_env(tmp_path_factory) -> dict[str, str]:
    """Environment for subprocesses: offline datasets, HF caches in tmp, no saved login, no token."""
    home = tmp_path_factory.mktemp("hf_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(
        HF_HOME=str(home),
        HF_DATASETS_CACHE=str(home / "datasets"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(REPO),
    )
    return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("ds_cache"))


def _store(out: Path, src: Path, img: Image.Image) -> tuple[str, str, int, int]:
    """Store one real image as `inf30 build` does: id = sha256 of the 8-bit pixels; 8-bit gray inputs keep
    their bytes, others are stored as PNG of the luminance."""
    gray = img.convert("L")
    iid = hashlib.sha256(np.asarray(gray).tobytes()).hexdigest()
    if img.mode == "L":
        rel = f"images/{iid[:2]}/{iid}{src.suffix}"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / rel)
    else:
        rel = f"images/{iid[:2]}/{iid}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        gray.save(out / rel)
    return iid, rel, gray.width, gray.height


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, sirst_dir: Path, hituav_dir: Path) -> Path:
    """A small built-dataset folder (manifest + images, the architecture contract) from real images: 40 SIRST
    (PNG modes L/RGB/P, no licence given) and 10 HIT-UAV (640x512 JPEG, CC BY 4.0), plus dropped rows (the
    SIRST VOC .xml files as unsupported, a duplicate)."""
    out = tmp_path_factory.mktemp("built")
    files = [("sirst", p, None) for p in sorted((sirst_dir / "images").glob("*.png"))[:40]]
    files += [("hit-uav", p, "CC BY 4.0") for p in sorted((hituav_dir / "val").glob("*.jpg"))[:10]]
    rows = []
    for source, path, licence in files:
        with Image.open(path) as img:
            iid, rel, w, h = _store(out, path, img)
            gray = np.asarray(img.convert("L"))
        rows.append(
            empty_row(item_key=f"{source}:{path.name}", id=iid, source=source, origin=str(path.name),
                      origin_kind="file", path=rel, width=w, height=h, orig_mode=img.mode, bit_depth=8,
                      licence=licence, entropy=entropy8(gray), phash=compute_hashes(gray)["phash"], status="kept")
        )  # fmt: skip
    first = rows[0]
    rows.append(empty_row(item_key="sirst:copy/" + first["origin"], id=first["id"], source="sirst",
                          origin="copy/" + first["origin"], origin_kind="file", status="dropped",
                          reason=f"exact_duplicate:{first['id']}"))  # fmt: skip
    for xml in sorted((sirst_dir / "masks").glob("*.xml"))[:4]:
        rows.append(empty_row(item_key=f"sirst:masks/{xml.name}", source="sirst", origin=f"masks/{xml.name}",
                              origin_kind="file", status="dropped", reason="unsupported | not an image"))  # fmt: skip
    write_manifest(out, pd.DataFrame(rows))
    return out


@pytest.fixture(scope="module")
def published(dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pub") / "inf30-hf"
    publish(dataset, out, PublishOptions(max_side=256, shard_size="1MB", progress=False))
    return out


def _kept(dataset: Path) -> pd.DataFrame:
    df = read_manifest(dataset)
    return df[df["status"] == "kept"].reset_index(drop=True)


def _cli(args: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    code = "import sys; from cli import inf30_app; sys.argv[0] = 'inf30'; inf30_app()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    return errors[0]


# ------------------------------------------------------------------------------------------- layout


def test_parse_size():
    assert parse_size("500MB") == 500_000_000
    assert parse_size("2GB") == 2_000_000_000
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("800kb") == 800_000
    assert parse_size("1234") == 1234
    for bad in ("lots", "5XB", "0MB", "-1GB"):
        with pytest.raises(PublishError):
            parse_size(bad)


def test_layout_and_shards(published: Path, dataset: Path):
    files = sorted(p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file())
    assert "README.md" in files and "manifest/dropped.parquet" in files and "LICENSE.md" in files
    shards = [f for f in files if f.startswith("data/")]
    assert len(shards) >= 2, "1MB shards of ~2MB of images must give several shards"
    n = len(shards)
    assert shards == [f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    small = [f for f in files if f.startswith("data_max_side_256/")]
    assert small and all(re.fullmatch(r"data_max_side_256/train-\d{5}-of-\d{5}\.parquet", f) for f in small)
    assert not [f for f in files if "/." in f or f.startswith(".")], "no temporary files left"
    assert not list(published.parent.glob(".tmp-*")), "no staging folder left beside OUT"
    for shard in shards:  # shard size is by image bytes: one image at most over the limit
        images = pq.read_table(published / shard, columns=["image"]).column("image").to_pylist()
        sizes = [len(x["bytes"]) for x in images]
        assert sum(sizes[:-1]) <= 1_000_000


def test_load_dataset_round_trip(published: Path, dataset: Path, cache: str):
    """`datasets.load_dataset(OUT)` loads the default config: rows equal the manifest's kept rows, images
    decode, and the image bytes are the stored files' bytes, unchanged."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    ds = load_dataset(str(published), split="train", cache_dir=cache)
    kept = _kept(dataset)
    assert ds.num_rows == len(kept)
    assert set(ds.column_names) == {"image", "id", "source", "origin", "width", "height", "entropy", "phash", "licence"}
    got = ds.remove_columns("image").to_pandas()
    for col in ["id", "source", "origin", "width", "height", "phash", "licence"]:
        assert got[col].tolist() == kept[col].tolist(), col
    assert np.allclose(got["entropy"].to_numpy(float), kept["entropy"].to_numpy(float))
    for i in (0, 17, len(kept) - 1):
        img = ds[i]["image"]
        assert img.mode == "L" and img.size == (kept["width"][i], kept["height"][i])
        assert hashlib.sha256(np.asarray(img).tobytes()).hexdigest() == kept["id"][i]
    raw = ds.cast_column("image", ImageFeature(decode=False))
    for row, rel in zip(raw, kept["path"], strict=True):
        assert row["image"]["bytes"] == (dataset / rel).read_bytes()


def test_streaming_and_load_published(published: Path, dataset: Path, cache: str):
    kept = _kept(dataset)
    stream = load_published(published, streaming=True)
    ids = []
    for i, row in enumerate(stream):
        if i < 3:
            assert row["image"].mode == "L"
            assert hashlib.sha256(np.asarray(row["image"]).tobytes()).hexdigest() == row["id"]
        ids.append(row["id"])
    assert ids == kept["id"].tolist()


def test_max_side_config(published: Path, dataset: Path, cache: str):
    """Config max_side_256: longer side <= 256, aspect kept, original size recorded; images that already fit
    keep their bytes."""
    from datasets import Image as ImageFeature

    kept = _kept(dataset)
    ds = load_published(published, "max_side_256", cache_dir=cache)
    assert ds["id"] == kept["id"].tolist()
    raw = ds.cast_column("image", ImageFeature(decode=False))
    resized = fits = 0
    for i, (row, raw_row) in enumerate(zip(ds, raw, strict=True)):
        img, w0, h0 = row["image"], kept["width"][i], kept["height"][i]
        assert img.mode == "L" and max(img.size) <= 256 and img.size == (row["width"], row["height"])
        assert (row["orig_width"], row["orig_height"]) == (w0, h0)
        if max(w0, h0) > 256:
            resized += 1
            assert max(img.size) == 256 and abs(img.size[0] / img.size[1] - w0 / h0) < 0.02
        else:
            fits += 1
            assert raw_row["image"]["bytes"] == (dataset / kept["path"][i]).read_bytes()
    assert resized >= 40 and fits >= 1


def test_dropped_parquet(published: Path, dataset: Path, cache: str):
    df = read_manifest(dataset)
    dropped = pq.read_table(published / "manifest" / "dropped.parquet").to_pandas()
    want = df[df["status"] != "kept"]
    assert dropped["item_key"].tolist() == want["item_key"].tolist()
    assert dropped["reason"].tolist() == want["reason"].tolist()
    ds = load_published(published, "dropped", cache_dir=cache)
    assert ds.num_rows == len(want) and "reason" in ds.column_names


# ---------------------------------------------------------------------------------------------- card


def test_card_parses_and_validates(published: Path, dataset: Path):
    """The card's YAML parses with huggingface_hub's DatasetCard and its `configs` pass datasets' checks.
    (`DatasetCard.validate()` itself posts to the Hub's /api/validate-yaml, unreachable here.)"""
    from datasets.utils.metadata import MetadataConfigs, _NoDuplicateSafeLoader
    from huggingface_hub import DatasetCard

    text = (published / "README.md").read_text()
    card = DatasetCard.load(published / "README.md")
    meta = yaml.load(text.split("---")[1], Loader=_NoDuplicateSafeLoader)  # no duplicate keys
    assert meta == card.data.to_dict()
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert set(configs) == {"default", "max_side_256", "dropped"}
    assert configs.get_default_config_name() == "default"
    assert configs["default"]["data_files"] == [{"split": "train", "path": "data/train-*"}]
    # SIRST (no licence given) + HIT-UAV (CC BY 4.0): `other` with the per-source list
    assert card.data.license == "other" and card.data.license_link == "LICENSE.md"
    licences = (published / "LICENSE.md").read_text()
    assert "| hit-uav | CC BY 4.0 | `cc-by-4.0` |" in licences and "| sirst | not stated | `unknown` |" in licences
    assert card.data.size_categories == ["n<1K"]
    assert "image-feature-extraction" in card.data.task_categories
    kept = _kept(dataset)
    assert f"| images kept | {len(kept):,} |" in card.text
    assert "| `exact_duplicate` | 1 |" in card.text and "| `unsupported` | 4 |" in card.text


def test_card_single_licence(dataset: Path, tmp_path: Path):
    from huggingface_hub import DatasetCard

    from inf30.card import hub_licence

    assert hub_licence("CC BY 4.0") == "cc-by-4.0" and hub_licence("cc0") == "cc0-1.0"
    assert hub_licence(None) == "unknown" and hub_licence("research only") == "other"
    df = read_manifest(dataset)
    one = tmp_path / "one"
    shutil.copytree(dataset / "images", one / "images")
    write_manifest(one, df[df["source"] == "hit-uav"])
    (one / "report").mkdir()  # a figure where `inf30 report` writes them: copied and shown in the card
    shutil.copyfile(next((dataset / "images").rglob("*.png")), one / "report" / "entropy.png")
    publish(one, tmp_path / "out", PublishOptions(progress=False))
    card = DatasetCard.load(tmp_path / "out" / "README.md")
    assert card.data.license == "cc-by-4.0" and not (tmp_path / "out" / "LICENSE.md").exists()
    assert (tmp_path / "out" / "figures" / "entropy.png").read_bytes() == (one / "report" / "entropy.png").read_bytes()
    assert "![entropy.png](figures/entropy.png)" in card.text


# -------------------------------------------------------------------------------------------- errors


def _run_cli(args: list[str]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from cli import inf30_app

    res = CliRunner().invoke(inf30_app, args)
    return res.exit_code, res.output


def _cli_error(args: list[str]) -> str:
    code, output = _run_cli(args)
    assert code == 2 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    return errors[0]


def test_errors_are_one_line_and_never_damage_out(dataset: Path, tmp_path: Path):
    # no kept images
    empty = tmp_path / "empty"
    df = read_manifest(dataset)
    write_manifest(empty, df[df["status"] != "kept"])
    assert "no kept images" in _cli_error(["publish", str(empty), "--to", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    assert "--to OUT" in _cli_error(["publish", str(dataset)])
    assert "--max-side" in _cli_error(["publish", str(dataset), "--to", str(tmp_path / "x"), "--max-side", "0"])
    assert "500MB" in _cli_error(["publish", str(dataset), "--to", str(tmp_path / "x"), "--shard-size", "big"])
    assert "would contain the dataset" in _cli_error(["publish", str(dataset), "--to", str(dataset.parent)])

    # an existing non-empty OUT without --overwrite: refused, untouched
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    err = _cli_error(["publish", str(dataset), "--to", str(out), "-q"])
    assert "--overwrite" in err and (out / "keep.txt").read_text() == "mine"

    # a failure half-way (a stored image that does not decode, met while writing --max-side) with
    # --overwrite: OUT keeps its old content, no staging folder is left
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    victim = broken / _kept(dataset)["path"][30]
    victim.write_bytes(victim.read_bytes()[:200])
    err = _cli_error(["publish", str(broken), "--to", str(out), "--max-side", "64", "--overwrite", "-q"])
    assert "cannot decode" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]

    # --overwrite replaces it
    code, output = _run_cli(["publish", str(dataset), "--to", str(out), "--overwrite", "-q"])
    assert code == 0, output
    assert "published 50 images" in output
    assert not (out / "keep.txt").exists() and (out / "README.md").exists()


_STAGER = """
import os, sys, time, pathlib
from inf30.publish import _start_staging
staging, fd = _start_staging(pathlib.Path(sys.argv[1]))
(staging / "data").mkdir()
(staging / "data" / "train-00000-of-00001.parquet").write_bytes(b"half a shard" * 1000)
print(staging, flush=True)
time.sleep(120)
"""


def _stager(out: Path) -> tuple[subprocess.Popen, Path]:
    """A real process that has started publishing to ``out`` (staging folder + lock) and then waits."""
    proc = subprocess.Popen([sys.executable, "-c", _STAGER, str(out)], stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_publish_leaves_nothing_after_the_next_run(dataset: Path, tmp_path: Path):
    """A publish killed with SIGKILL leaves its staging folder (possibly hundreds of GB at Inf30 scale);
    the next publish to the same OUT removes it, while the staging folder of a publish still running
    (its lock held by a live process) is left alone."""
    out = tmp_path / "pub"
    killed, killed_dir = _stager(out)
    live, live_dir = _stager(out)
    try:
        killed.kill()
        killed.wait()
        assert killed_dir.is_dir() and Path(f"{killed_dir}.lock").exists()
        code, output = _run_cli(["publish", str(dataset), "--to", str(out), "-q"])
        assert code == 0, output
        assert not killed_dir.exists() and not Path(f"{killed_dir}.lock").exists()
        assert live_dir.is_dir() and Path(f"{live_dir}.lock").exists()
        assert (out / "README.md").exists() and not (out / "pub.lock").exists()
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == sorted(
            [live_dir.name, f"{live_dir.name}.lock"]
        )
    finally:
        live.kill()
        live.wait()


# ---------------------------------------------------------------------------------------------- push


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("protocol", ["xet", "lfs"])
def test_push_to_loopback_hub_standin(dataset: Path, tmp_path: Path, hf_env: dict[str, str], protocol: str):
    """`--push` through huggingface_hub's real client (create_repo + upload_folder) against the loopback
    stand-in: the Hub repo ends up with exactly the local files; the token only ever travels in the
    Authorization header of Hub API calls, never in output, files, bodies or storage requests."""
    out = tmp_path / "inf30-hf"
    with HubStandin(TOKEN) as hub:
        env = dict(hf_env, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="0")
        if protocol == "lfs":
            env["HF_HUB_DISABLE_XET"] = "1"  # huggingface_hub's documented fallback to git-LFS uploads
        args = ["publish", str(dataset), "--to", str(out), "--repo-id", "alice/inf30", "--push", "--private",
                "--max-side", "256", "--shard-size", "1MB", "-q"]  # fmt: skip
        res = _cli(args, env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"{hub.url}/datasets/alice/inf30" in res.stdout
        repo = hub.repos["alice/inf30"]
        assert repo.private
        local = _files(out)
        assert repo.files == local
        assert hub.validated == [(out / "README.md").read_text()] * len(hub.validated) and hub.validated
        if protocol == "xet":
            assert hub.xorbs and not any(r.path.startswith("/lfs-upload/") for r in hub.requests)
        else:
            assert sum(r.path.startswith("/lfs-upload/") for r in hub.requests) == len(
                [f for f in local if f.endswith(".parquet")]
            )

        if protocol == "lfs":
            return
        # a second push after re-sharding replaces the shards: no stale train-*-of-* left on the Hub
        res = _cli(["publish", str(dataset), "--to", str(out), "--repo-id", "alice/inf30", "--push",
                    "--shard-size", "3MB", "--overwrite", "-q"], env)  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        assert repo.files == _files(out) and "data/train-00000-of-00001.parquet" in repo.files
        assert not [f for f in repo.files if f.startswith("data_max_side_")]
        assert hub.errors == []

    secret = TOKEN.encode()
    for name, data in _files(out).items():
        assert secret not in data, name
    for name, data in _files(Path(hf_env["HF_HOME"])).items():  # caches, hf_xet logs, ...
        assert secret not in data, name
    assert TOKEN not in res.stdout + res.stderr
    for req in hub.requests:
        auth = req.headers.get("authorization", "")
        assert secret not in req.body and TOKEN not in req.path
        if TOKEN in auth:
            assert req.path.startswith("/api/"), f"token sent to {req.path}"
        assert all(TOKEN not in v for k, v in req.headers.items() if k != "authorization")
    assert any(TOKEN in r.headers.get("authorization", "") for r in hub.requests)


def test_push_errors(dataset: Path, tmp_path: Path, hf_env: dict[str, str]):
    out = tmp_path / "a"
    args = ["publish", str(dataset), "--to", str(out), "--repo-id", "alice/inf30", "--push", "-q"]
    # no token anywhere (HF_HOME is empty, HF_TOKEN unset): refused before anything is written
    err = _one_line_error(_cli(args, hf_env))
    assert "no Hugging Face token" in err and not out.exists()

    # a token the Hub rejects (401): one line, no token in it; the local repository is complete, and the
    # retry command from the message pushes it with a valid token
    with HubStandin("hf_the_valid_token") as hub:
        env = dict(hf_env, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="0")
        res = _cli(args, env)
        err = _one_line_error(res)
        assert "rejected" in err and "401" in err and TOKEN not in res.stdout + res.stderr
        assert (out / "README.md").exists() and "alice/inf30" not in hub.repos
        retry = re.search(r"`(inf30 publish .*? --push)`", err).group(1).split()[1:]
        res = _cli(retry, dict(env, HF_TOKEN="hf_the_valid_token"))
        assert res.returncode == 0, res.stderr[-2000:]
        assert hub.repos["alice/inf30"].files == _files(out)


# ----------------------------------------------------------------------------- built from shared data


def test_round_trip_of_a_real_build(sirst_dir: Path, tmp_path: Path, cache: str):
    """`inf30 build` on ../shared/data/sirst/images -> publish -> load_dataset: every kept row, bytes identical."""
    build_mod = pytest.importorskip("inf30.build")
    from datasets import Image as ImageFeature

    from inf30.sources import load_sources

    built = tmp_path / "built"
    opts = build_mod.BuildOptions(workers=1, dedupe=False, progress=False)
    build_mod.build(load_sources([str(sirst_dir / "images")], out_dir=built), built, opts)
    out = tmp_path / "hf"
    result = publish(built, out, PublishOptions(progress=False))
    kept = _kept(built)
    assert result.rows == len(kept) > 400
    ds = load_published(out, cache_dir=cache)
    assert ds["id"] == kept["id"].tolist() and ds["source"] == kept["source"].tolist()
    assert ds["width"] == kept["width"].tolist() and ds["origin"] == kept["origin"].tolist()
    modes = {ds[i]["image"].mode for i in range(0, len(kept), 50)}
    assert modes == {"L"}
    raw = ds.cast_column("image", ImageFeature(decode=False))
    for row, rel in zip(raw, kept["path"], strict=True):
        assert row["image"]["bytes"] == (built / rel).read_bytes()


def test_two_published_folders_of_the_same_name_load_their_own_rows(dataset: Path, tmp_path: Path, cache: str):
    """Two different datasets published into folders both called ``published`` (one datasets cache): each
    loads its own rows. ``load_dataset(FOLDER)`` keyed its cache by the folder's name and gave the first
    folder's rows for the second; reading the card's files by content does not."""
    from inf30 import dataset as inf30_dataset

    loaded = {}
    for name, keep in (("a", slice(0, 30)), ("b", slice(20, None))):
        built = tmp_path / name / "built"
        shutil.copytree(dataset, built)
        df = read_manifest(built)
        kept_idx = df.index[df["status"] == "kept"]
        drop = kept_idx.difference(kept_idx[keep])
        df.loc[drop, "status"] = "dropped"
        df.loc[drop, "reason"] = "too_small | test subset"
        write_manifest(built, df)
        out = tmp_path / name / "published"
        publish(built, out, PublishOptions(progress=False))
        want = _kept(built)["id"].tolist()
        ds = load_published(out, cache_dir=cache)
        assert ds["id"] == want
        opened = inf30_dataset.open(out)
        assert opened.kind == "published" and opened.table["id"] == want
        loaded[name] = want
    assert loaded["a"] != loaded["b"] and len(loaded["a"]) == 30 and len(loaded["b"]) == 30
