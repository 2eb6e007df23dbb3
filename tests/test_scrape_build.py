"""`inf30 build` takes remote sources directly: a page on a loopback server is scraped, then built, and
every kept image records its URL as the origin (archive members: the archive's URL)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from http_fixtures import LoopbackServer

from inf30.build import BuildOptions, build
from inf30.errors import UsageError
from inf30.manifest import read_manifest
from inf30.sources import load_sources
from pipelines.build import fetch_remote


def test_build_takes_a_remote_page(sirst_dir: Path, hituav_dir: Path, tmp_path: Path):
    pngs = sorted((sirst_dir / "images").glob("*.png"))[:3]
    jpgs = sorted((hituav_dir / "val").glob("*.jpg"))[:2]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in jpgs:
            z.write(p, arcname=f"seq/{p.name}")
    with LoopbackServer() as srv:
        for p in pngs:
            srv.files[f"/img/{p.name}"] = p.read_bytes()
        srv.files["/set.zip"] = buf.getvalue()
        links = "".join(f'<img src="img/{p.name}">' for p in pngs)
        srv.files["/index.html"] = f'<html><body>{links}<a href="set.zip">all</a></body></html>'.encode()
        out = tmp_path / "inf30"
        parsed = load_sources([srv.url("/index.html")])
        assert not out.exists() and not srv.log  # parsing downloads nothing
        with pytest.raises(UsageError, match="is remote"):  # the build reads local sources only
            build(parsed, out, BuildOptions(workers=1, dedupe=False, progress=False))
        assert not out.exists()
        specs = fetch_remote(parsed, out, progress=False)
        assert sorted(s.kind for s in specs) == ["archive", "folder"]
        build(specs, out, BuildOptions(workers=1, dedupe=False, progress=False))
    df = read_manifest(out)
    kept = df[df.status == "kept"]
    assert len(kept) == 5
    urls = {srv.url(f"/img/{p.name}") for p in pngs}
    files = kept[kept.origin_kind != "archive_member"]
    assert set(files.origin) == urls
    members = kept[kept.origin_kind == "archive_member"]
    assert len(members) == 2 and all(o.startswith(srv.url("/set.zip")) for o in members.origin)
    assert (out / ".work" / "scrape").is_dir()
