"""inf30.scrape over real HTTP on 127.0.0.1: real infrared files from ../shared/data, and routes that
misbehave on purpose. Each URL must end as the right manifest row, never as a crash, a hang, or a file
outside the output folder."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from http_fixtures import Handler, LoopbackServer, etag_of

from inf30.scrape import MANIFEST_NAME, ScrapeOptions, materialize, parse_source, scrape
from inf30.sources import SourceSpec

PNG_NAMES = ["Misc_1.png", "Misc_10.png", "Misc_100.png", "Misc_101.png"]


def fast_opts(**kw) -> ScrapeOptions:
    """Short timeouts and backoffs so the misbehaving routes end quickly."""
    base = dict(concurrency=8, per_host=8, retries=2, backoff_base=0.05, backoff_max=3.0, connect_timeout=2.0,
                read_timeout=0.6, total_timeout=2.0, max_image_bytes=400_000, max_archive_bytes=2_000_000)
    base.update(kw)
    return ScrapeOptions(**base)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def real(sirst_dir: Path, hituav_dir: Path) -> dict[str, bytes]:
    files = {f"/files/{n}": (sirst_dir / "images" / n).read_bytes() for n in PNG_NAMES}
    for p in sorted((hituav_dir / "val").glob("*.jpg"))[:2]:
        files[f"/files/{p.name}"] = p.read_bytes()
    return files


@pytest.fixture(scope="module")
def server(real: dict[str, bytes]):
    png = real["/files/Misc_1.png"]
    with LoopbackServer() as srv:
        srv.files.update(real)
        srv.files["/robots.txt"] = b"User-agent: *\nDisallow: /private/\n"
        srv.files["/private/secret.png"] = png

        def flaky(h: Handler) -> None:  # 500 twice, then the file
            if srv.hits[h.path] <= 2:
                h.send_bytes(b"oops", status=500)
            else:
                h.send_file(png)

        def busy(h: Handler) -> None:  # 429 with Retry-After: 1, then the file
            if srv.hits[h.path] == 1:
                h.send_bytes(b"slow down", status=429, headers={"Retry-After": "1"})
            else:
                h.send_file(png)

        def slow(h: Handler) -> None:  # headers later than the read timeout (bounded sleep)
            time.sleep(2.0)
            h.send_file(png)

        def trickle(h: Handler) -> None:  # bytes keep coming, but the whole file takes too long
            h.send_response(200)
            h.send_header("Content-Length", str(len(png)))
            h.end_headers()
            for i in range(30):
                h.wfile.write(png[i * 10:(i + 1) * 10])
                h.wfile.flush()
                time.sleep(0.2)
            h.close_connection = True

        def cut_then_range(h: Handler) -> None:  # first try cut short, later tries honour Range
            if srv.hits[h.path] == 1:
                h.send_response(200)
                h.send_header("Content-Length", str(len(png)))
                h.send_header("ETag", etag_of(png))
                h.send_header("Accept-Ranges", "bytes")
                h.end_headers()
                h.wfile.write(png[: len(png) // 2])
                h.close_connection = True
            else:
                h.send_file(png)

        def cut_always(h: Handler) -> None:  # always cut short, no Range support
            h.send_response(200)
            h.send_header("Content-Length", str(len(png)))
            h.end_headers()
            h.wfile.write(png[:1000])
            h.close_connection = True

        def redirect(to: str, code: int = 302):
            def route(h: Handler) -> None:
                h.send_bytes(b"", status=code, headers={"Location": to})
            return route

        def huge(h: Handler) -> None:  # no Content-Length, body much larger than the image limit
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(png[:64])
            for _ in range(40):
                h.wfile.write(b"\0" * 65536)
            h.close_connection = True

        def huge_declared(h: Handler) -> None:  # declares 1 TB
            h.send_response(200)
            h.send_header("Content-Length", str(10**12))
            h.end_headers()
            h.wfile.write(b"PK\x03\x04" + b"\0" * 4096)
            h.close_connection = True

        srv.routes.update({
            "/flaky.png": flaky,
            "/busy.png": busy,
            "/slow.png": slow,
            "/trickle.png": trickle,
            "/cut.png": cut_then_range,
            "/cutnorange.png": cut_always,
            "/wrongtype.jpg": lambda h: h.send_file(png, ctype="text/html"),
            "/fake.jpg": lambda h: h.send_bytes(b"<!DOCTYPE html><html><body>hi</body></html>", ctype="image/jpeg"),
            "/loop/a": redirect("/loop/b"),
            "/loop/b": redirect("/loop/a"),
            "/evil.png": redirect("file:///etc/passwd"),
            "/moved.png": redirect("/files/Misc_10.png", 301),
            "/huge.png": huge,
            "/huge-declared.zip": huge_declared,
        })
        yield srv


EXPECT = {  # path -> (status, reason)
    "/files/Misc_1.png": ("ok", None),
    "/missing.png": ("error", "http_404"),
    "/flaky.png": ("ok", None),
    "/busy.png": ("ok", None),
    "/slow.png": ("error", "timeout"),
    "/trickle.png": ("error", "timeout"),
    "/cut.png": ("ok", None),
    "/cutnorange.png": ("error", "incomplete"),
    "/wrongtype.jpg": ("ok", None),
    "/fake.jpg": ("error", "not_media:html"),
    "/loop/a": ("error", "redirect_loop"),
    "/evil.png": ("error", "unsafe_redirect:file"),
    "/moved.png": ("ok", None),
    "/huge.png": ("error", "too_large"),
    "/huge-declared.zip": ("error", "too_large"),
    "/private/secret.png": ("skipped", "robots_disallowed"),
}


def test_misbehaving_routes_end_in_the_right_rows(server: LoopbackServer, real: dict[str, bytes], tmp_path: Path):
    listing = tmp_path / "list.txt"
    odd = ["ftp://127.0.0.1/x.png", "file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo="]
    urls = [server.url(p) for p in EXPECT] + odd + ["http://[::1/x.png"]
    listing.write_text("# misbehaving routes\n" + "\n".join(urls + [urls[0]]) + "\n")  # a duplicate too
    out = tmp_path / "out"
    res = scrape([SourceSpec(name="bad", path=str(listing), kind="urls", licence="test")], out, fast_opts(),
                 progress=False)

    df = pq.read_table(out / MANIFEST_NAME).to_pandas()
    assert len(df) == len(urls), "one row per distinct URL"
    # missing values read back as None (pandas 2) or NaN (pandas 3's string dtype): compare them as None
    rows = {r["url"]: {k: (None if v is None or (isinstance(v, float) and v != v) else v) for k, v in r.items()}
            for r in df.to_dict("records")}
    for path, (status, reason) in EXPECT.items():
        r = rows[server.url(path)]
        assert (r["status"], r["reason"]) == (status, reason), (path, r["status"], r["reason"], r["detail"])
    for u, scheme in zip(odd, ["ftp", "file", "data"], strict=True):
        assert (rows[u]["status"], rows[u]["reason"]) == ("error", f"unsafe_scheme:{scheme}")
    assert (rows["http://[::1/x.png"]["status"], rows["http://[::1/x.png"]["reason"]) == ("error", "invalid_url")

    png = real["/files/Misc_1.png"]
    assert rows[server.url("/flaky.png")]["attempts"] == 3  # 500, 500, 200
    assert server.hits["/missing.png"] == 1  # no retry on 404
    assert server.hits["/private/secret.png"] == 0  # robots.txt respected
    assert server.hits["/evil.png"] == 1
    busy_times = [t for p, _, t in server.log if p == "/busy.png"]
    assert busy_times[1] - busy_times[0] >= 0.95  # Retry-After: 1 honoured (a lower bound, not a speed claim)
    cut = rows[server.url("/cut.png")]
    assert cut["resumed"] and cut["sha256"] == sha(png) and cut["bytes"] == len(png)
    range_hdrs = [h.get("Range") for p, h, _ in server.log if p == "/cut.png"]
    assert range_hdrs[0] is None and range_hdrs[1] == f"bytes={len(png) // 2}-"
    wrong = rows[server.url("/wrongtype.jpg")]
    assert wrong["content_kind"] == "png" and wrong["path"].endswith(".png")  # type from bytes, not header/ext
    moved = rows[server.url("/moved.png")]
    assert moved["final_url"] == server.url("/files/Misc_10.png") and moved["http_status"] == 200
    assert moved["sha256"] == sha(real["/files/Misc_10.png"])
    assert rows[server.url("/huge-declared.zip")]["detail"].endswith("declared")
    assert rows[server.url("/evil.png")]["http_status"] == 302

    # every ok row's file is complete, inside the output folder, and matches the served bytes
    for r in df[df.status == "ok"].to_dict("records"):
        data = (out / r["path"]).read_bytes()
        assert sha(data) == r["sha256"] and len(data) == r["bytes"]
    images = [p for p in all_files(out) if "/images/" in p.as_posix()]
    assert sorted(p.relative_to(out).as_posix() for p in images) == sorted(df[df.status == "ok"].path)
    assert all(p.resolve().is_relative_to(out.resolve()) for p in all_files(tmp_path) if p != listing)
    assert not any(b"root:" in p.read_bytes() for p in all_files(out))
    assert "bad" in res.table() and "http_404 1" in res.table()

    # a re-run fetches nothing that finished
    hits = server.hits["/files/Misc_1.png"]
    again = scrape([SourceSpec(name="bad", path=str(listing), kind="urls")], out, fast_opts(retries=0), progress=False)
    assert server.hits["/files/Misc_1.png"] == hits
    ok_again = [r for r in again.rows if r["status"] == "ok"]
    assert ok_again and all(r["cached"] for r in ok_again)
    assert len(ok_again) == int((df.status == "ok").sum())


def page_html(srv: LoopbackServer) -> bytes:
    return f"""<!DOCTYPE html><html><head><title>thermal set</title></head><body>
    <img src="files/Misc_1.png"> <img src="./files/Misc_1.png"> <img src="{srv.url('/files/Misc_1.png')}">
    <img srcset="files/Misc_10.png 1x, /files/Misc_100.png 2x" src="data:image/png;base64,AAAA">
    <a href="{srv.url('/files/Misc_101.png')}">absolute</a>
    <a href="{srv.url('/files/off.png', host='localhost')}">off host</a>
    <a href="data.zip">the archive</a> <a href="private/secret.png">private</a>
    <a href="sub/more.html">more</a> <a href="mailto:x@example.org">mail</a> <a href="javascript:void(0)">js</a>
    <a href="file:///etc/passwd">passwd</a> <a href="files/Misc_1.png#frag">dup with fragment</a>
    <a href="files/skip_me.png">excluded by pattern</a>
    </body></html>""".encode()


@pytest.fixture()
def site(server: LoopbackServer, real: dict[str, bytes], sirst_dir: Path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in PNG_NAMES[:3]:
            z.write(sirst_dir / "images" / n, arcname=f"imgs/{n}")
    server.files["/data.zip"] = buf.getvalue()
    server.files["/page.html"] = page_html(server)
    server.files["/sub/more.html"] = b'<html><body><img src="../files/deep.png"></body></html>'
    server.files["/files/deep.png"] = real["/files/Misc_100.png"] + b""
    server.files["/files/skip_me.png"] = real["/files/Misc_1.png"]
    return server


def test_page_crawl_links_scope_robots_and_archives(site: LoopbackServer, tmp_path: Path):
    out = tmp_path / "out"
    spec = SourceSpec(name="site", path=site.url("/page.html"), kind="page", licence="CC-BY-4.0",
                      exclude=["*skip_me*"])
    res = scrape([spec], out, fast_opts(), progress=False)
    rows = {r["url"]: r for r in res.rows}
    files = {u.rsplit("/", 1)[-1]: r for u, r in rows.items() if r["role"] == "file"}
    ok = sorted(n for n, r in files.items() if r["status"] == "ok")
    assert ok == ["Misc_1.png", "Misc_10.png", "Misc_100.png", "Misc_101.png", "data.zip"]
    assert files["off.png"]["reason"] == "off_host" and site.hits["/files/off.png"] == 0
    assert files["secret.png"]["reason"] == "robots_disallowed"
    assert files["skip_me.png"]["reason"] == "excluded" and site.hits["/files/skip_me.png"] == 0
    assert "deep.png" not in files  # depth 1: the sub page is not followed
    assert files["data.zip"]["category"] == "archive"
    assert rows[site.url("/page.html")]["role"] == "page" and rows[site.url("/page.html")]["status"] == "ok"
    assert all(r["found_on"] == site.url("/page.html") for r in files.values())
    assert sum(1 for u in rows if u.endswith("Misc_1.png")) == 1  # duplicates collapse to one row

    # depth 2 follows the sub page; materialize hands the build local specs with origins
    specs = materialize(SourceSpec(name="site2", path=site.url("/page.html"), kind="page", licence="CC-BY-4.0",
                                   options={"depth": 2, "video_every": 2.0}), tmp_path / "work", fast_opts(),
                        progress=False)
    kinds = [s.kind for s in specs]
    assert kinds == ["folder", "archive"]
    folder, archive = specs
    origins = folder.options["origins"]
    assert site.url("/files/deep.png") in origins.values()
    assert sorted(p.relative_to(folder.path).as_posix() for p in all_files(Path(folder.path))) == sorted(origins)
    assert folder.licence == "CC-BY-4.0" and folder.options["video_every"] == 2.0 and "depth" not in folder.options
    assert archive.options["origins"] == {"": site.url("/data.zip")}
    with zipfile.ZipFile(archive.path) as z:
        assert sorted(z.namelist()) == [f"imgs/{n}" for n in PNG_NAMES[:3]]


def test_url_list_formats_keep_licence_and_metadata(server: LoopbackServer, real: dict[str, bytes], tmp_path: Path):
    import pandas as pd

    csv = tmp_path / "list.csv"
    csv.write_text("url,licence,camera\n"
                   f"{server.url('/files/Misc_1.png')},CC-BY-4.0,FLIR\n"
                   f"{server.url('/files/Misc_10.png')},,Optris\n")
    pqt = tmp_path / "list.parquet"
    pd.DataFrame({"link": [server.url("/files/Misc_100.png")], "site": ["x"]}).to_parquet(pqt)
    specs = [SourceSpec(name="csv", path=str(csv), kind="urls", licence="default-lic"),
             SourceSpec(name="pq", path=str(pqt), kind="urls", options={"url_column": "link"})]
    res = scrape(specs, tmp_path / "out", fast_opts(), progress=False)
    by = {r["url"].rsplit("/", 1)[-1]: r for r in res.rows}
    assert by["Misc_1.png"]["licence"] == "CC-BY-4.0" and by["Misc_10.png"]["licence"] == "default-lic"
    assert '"camera": "Optris"' in by["Misc_10.png"]["meta"]
    assert by["Misc_100.png"]["source"] == "pq" and by["Misc_100.png"]["sha256"] == sha(real["/files/Misc_100.png"])
    csv_folder = next(s for s in res.local_specs if s.name == "csv")
    assert csv_folder.options["meta"][next(iter(csv_folder.options["origins"]))]["camera"] in ("FLIR", "Optris")


def test_credentials_are_used_but_never_stored_or_printed(server: LoopbackServer, real: dict[str, bytes],
                                                         tmp_path: Path, monkeypatch, capsys):
    import base64

    secret = "s3cr3t-pa55word"
    good = "Basic " + base64.b64encode(f"alice:{secret}".encode()).decode()

    def guarded(h: Handler) -> None:
        if h.headers.get("Authorization") == good:
            h.send_file(real["/files/Misc_1.png"])
        else:
            h.send_bytes(b"who are you", status=401)

    server.routes["/auth/a.png"] = guarded
    server.routes["/auth/b.png"] = guarded
    monkeypatch.setenv("INF30_TEST_PW", secret)
    specs = [SourceSpec(name="auth", path=server.url("/auth/a.png"), kind="url",
                        options={"auth": {"username": "alice", "password_env": "INF30_TEST_PW"}}),
             SourceSpec(name="userinfo", path=server.url("/auth/b.png").replace("://", f"://alice:{secret}@"),
                        kind="url")]
    res = scrape(specs, tmp_path / "out", fast_opts(), progress=True)
    print(res.table())
    assert [r["status"] for r in res.rows] == ["ok", "ok"]
    assert all(secret not in (r["url"] or "") + (r["final_url"] or "") for r in res.rows)
    for p in all_files(tmp_path / "out"):
        assert secret.encode() not in p.read_bytes(), p
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    assert all(s.options.get("auth") is None for s in res.local_specs)
    # the user agent names the tool and its version
    ua = [h.get("User-Agent") for p, h, _ in server.log if p == "/auth/a.png"][0]
    assert ua.startswith("inf30-scrape/0.")


def test_parse_source_arguments():
    assert parse_source("https://h/x/a.zip").kind == "url"
    assert parse_source("https://h/x/index.html").kind == "page"
    assert parse_source("page:https://h/x/a.png").kind == "page"
    assert (parse_source("hf:org/name").kind, parse_source("hf:org/name").path) == ("hf", "org/name")
    assert parse_source("hf://org/name").path == "org/name"
    assert parse_source("urls:list.dat").kind == "urls" and parse_source("list.csv").kind == "urls"
    with pytest.raises(ValueError):
        parse_source("some/folder")


def test_cli_with_config_and_bad_input(site: LoopbackServer, tmp_path: Path):
    from typer.testing import CliRunner

    from cli import inf30_app

    listing = tmp_path / "two.txt"
    listing.write_text(f"{site.url('/files/Misc_1.png')}\n{site.url('/missing.png')}\n")
    cfg = tmp_path / "sources.yaml"
    cfg.write_text(
        "sources:\n"
        f"  - {{name: lst, path: two.txt, kind: urls, licence: CC-BY-4.0}}\n"
        f"  - {{name: pg, path: '{site.url('/page.html')}', kind: page, exclude: ['*.zip'],"
        " options: {depth: 1}}\n"
    )
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(inf30_app, ["scrape", "--config", str(cfg), "--out", str(out), "--quiet", "--retries", "1",
                                    "--backoff", "0.05", "--read-timeout", "2"])
    assert res.exit_code == 0, res.output
    assert "lst" in res.output and "pg" in res.output and "http_404 1" in res.output
    df = pq.read_table(out / MANIFEST_NAME).to_pandas()
    assert set(df.source) == {"lst", "pg"}
    assert df[(df.source == "pg") & df.url.str.endswith(".zip")].reason.tolist() == ["excluded"]

    bad = runner.invoke(inf30_app, ["scrape", "no/such/folder", "--out", str(out)])
    assert bad.exit_code == 2 and "error:" in bad.output and "Traceback" not in bad.output


def test_per_host_and_rate_limits(server: LoopbackServer, real: dict[str, bytes], tmp_path: Path):
    import threading

    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def counted(h: Handler) -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            time.sleep(0.1)
            h.send_file(real["/files/Misc_1.png"])
        finally:
            with lock:
                state["now"] -= 1

    for i in range(8):
        server.routes[f"/count/{i}.png"] = counted
    listing = tmp_path / "l.txt"
    listing.write_text("\n".join(server.url(f"/count/{i}.png") for i in range(8)))
    res = scrape([SourceSpec(name="lim", path=str(listing), kind="urls")], tmp_path / "out",
                 fast_opts(concurrency=8, per_host=2, rate=20.0, read_timeout=5.0), progress=False)
    assert res.ok == 8
    assert state["max"] <= 2  # never more than per_host requests in flight on one host
    # 20 requests/s at most: the 8th request cannot start before 7/20 s (a lower bound, not a speed claim)
    assert res.download_s >= 7 / 20
