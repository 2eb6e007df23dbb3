"""A real threaded HTTP/1.1 server on 127.0.0.1 for scrape tests and benchmarks.

Serves in-memory files (with Range, ETag, optional throttling) and routes that misbehave on purpose.
Every handler is bounded: sleeps and trickles stop by themselves, so a test can never hang on it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[["Handler"], None]

TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".zip": "application/zip", ".html": "text/html",
         ".txt": "text/plain"}


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha1(data).hexdigest()[:16] + '"'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY, as real servers do (else keep-alive stalls 40 ms on ACKs)
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server.owner
        path = self.path.split("?", 1)[0]
        with srv.lock:
            srv.hits[path] += 1
            srv.log.append((path, dict(self.headers.items()), time.monotonic()))
        try:
            route = srv.routes.get(path)
            if route is not None:
                route(self)
            elif path in srv.files:
                self.send_file(srv.files[path], throttle=srv.throttle)
            else:
                self.send_bytes(b"not found", status=404, ctype="text/plain")
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass

    # --------------------------------------------------------------- helpers for routes
    def send_bytes(self, data: bytes, status: int = 200, ctype: str = "application/octet-stream",
                   headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_file(self, data: bytes, ctype: str | None = None, ranges: bool = True,
                  throttle: tuple[int, float] | None = None) -> None:
        """200, or 206 for ``Range: bytes=N-`` (honouring If-Range); ``throttle`` = (chunk, seconds)."""
        etag = etag_of(data)
        ctype = ctype or TYPES.get(self.path[self.path.rfind("."):].lower(), "application/octet-stream")
        start = 0
        rng = self.headers.get("Range")
        if ranges and rng and rng.startswith("bytes=") and self.headers.get("If-Range", etag) == etag:
            try:
                start = int(rng[6:].split("-", 1)[0])
            except ValueError:
                start = 0
            if start >= len(data):
                self.send_bytes(b"", status=416, headers={"Content-Range": f"bytes */{len(data)}"})
                return
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if throttle is None:
            self.wfile.write(body)
            return
        chunk, pause = throttle
        for i in range(0, len(body), chunk):
            self.wfile.write(body[i:i + chunk])
            self.wfile.flush()
            time.sleep(pause)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    owner: LoopbackServer


class LoopbackServer:
    """``with LoopbackServer() as srv: srv.files['/a.png'] = b'...'; srv.url('/a.png')``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.files: dict[str, bytes] = {}
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.log: list[tuple[str, dict, float]] = []
        self.lock = threading.Lock()
        self.throttle: tuple[int, float] | None = None
        self._srv = _Server((host, 0), Handler)
        self._srv.owner = self
        self.host, self.port = self._srv.server_address[:2]
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
