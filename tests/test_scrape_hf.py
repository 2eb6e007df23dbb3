"""``hf`` sources. The Hub is unreachable here, so the Hub code path (``datasets.load_dataset(ID_OR_DIR,
split=..., streaming=True)``) is tested on a local folder of Parquet files written by ``datasets``
itself; the same call with a Hub id only differs in where ``datasets`` reads the files from. A single
Parquet file and a ``save_to_disk`` folder are tested too."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from inf30.scrape import materialize, scrape
from inf30.sources import SourceSpec


@pytest.fixture(scope="module", autouse=True)
def offline():
    """This module's tests never ask the Hub: offline for its tests only (set in os.environ at import, it
    leaked into every later test module). huggingface_hub and datasets read the variables at import, so
    their constants are patched too where another module imported them first."""
    import datasets.config
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
        yield


@pytest.fixture(scope="module")
def hf_dataset(sirst_dir: Path, tmp_path_factory):
    import datasets

    names = sorted(p.name for p in (sirst_dir / "images").glob("*.png"))[:6]
    raw = [(sirst_dir / "images" / n).read_bytes() for n in names]
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in raw], "scene": ["sky", "sea", "sky", "land", "sky", "sea"],
         "name": names},
        features=datasets.Features({"image": datasets.Image(), "scene": datasets.Value("string"),
                                    "name": datasets.Value("string")}),
    )
    root = tmp_path_factory.mktemp("hf")
    hub_like = root / "hub_like"
    (hub_like / "data").mkdir(parents=True)
    ds.to_parquet(str(hub_like / "data" / "train-00000-of-00001.parquet"))
    ds.save_to_disk(str(root / "saved"))
    return {"hub_like": hub_like, "saved": root / "saved", "raw": raw, "names": names,
            "file": hub_like / "data" / "train-00000-of-00001.parquet"}


def test_hf_streaming_path_filter_and_origins(hf_dataset, tmp_path: Path):
    spec = SourceSpec(name="thermal-hf", path=str(hf_dataset["hub_like"]), kind="hf", licence="CC-BY-4.0",
                      options={"split": "train", "filter": {"scene": ["sky", "sea"]}})
    specs = materialize(spec, tmp_path / "out", progress=False)
    assert [s.kind for s in specs] == ["folder"]
    origins = specs[0].options["origins"]
    # rows 0,1,2,4,5 pass the filter (row 3 is 'land'); origins are hf://<id>/<split>/<row>
    assert sorted(origins.values()) == sorted(f"hf://hub_like/train/{i}" for i in (0, 1, 2, 4, 5))
    want = {hashlib.sha256(b).hexdigest() for i, b in enumerate(hf_dataset["raw"]) if i != 3}
    got = {hashlib.sha256((Path(specs[0].path) / rel).read_bytes()).hexdigest() for rel in origins}
    assert got == want  # the original image bytes, unchanged
    meta = specs[0].options["meta"]
    assert {m["scene"] for m in meta.values()} == {"sky", "sea"}

    # a re-run takes everything from the cache
    res = scrape([spec], tmp_path / "out", progress=False)
    assert len(res.rows) == 5 and all(r["cached"] for r in res.rows)


@pytest.mark.parametrize("which", ["saved", "file"])
def test_hf_local_save_to_disk_and_parquet_file(hf_dataset, tmp_path: Path, which: str):
    spec = SourceSpec(name="local", path=str(hf_dataset[which]), kind="hf", options={"max_rows": 4})
    res = scrape([spec], tmp_path / "out", progress=False)
    assert [r["status"] for r in res.rows] == ["ok"] * 4
    assert [r["sha256"] for r in res.rows] == [hashlib.sha256(b).hexdigest() for b in hf_dataset["raw"][:4]]
    assert all(r["content_kind"] == "png" and r["url"].endswith(f"/train/{i}") for i, r in enumerate(res.rows))


def test_hf_unreadable_dataset_is_a_row_not_a_crash(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("INF30_TEST_TOKEN", "hf_secret_token_value")
    spec = SourceSpec(name="gone", path=str(tmp_path / "no-such-dataset"), kind="hf",
                      options={"token_env": "INF30_TEST_TOKEN"})
    res = scrape([spec], tmp_path / "out", progress=False)
    assert [(r["status"], r["reason"]) for r in res.rows] == [("error", "dataset_unreadable")]
    assert res.local_specs == []
    assert "hf_secret_token_value" not in (tmp_path / "out" / "scrape_manifest.parquet").read_bytes().decode("latin-1")
