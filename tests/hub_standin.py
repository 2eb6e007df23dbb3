"""A loopback HTTP stand-in for the Hugging Face Hub endpoints that `inf30 publish --push` calls.

The real Hub is unreachable from the test machines, so this serves, on 127.0.0.1, just enough of the Hub
API for huggingface_hub's own client code (``HfApi.create_repo`` + ``HfApi.upload_folder``) to run
unchanged:

- ``POST /api/validate-yaml``                            parse the card's YAML (DatasetCard + `configs`)
- ``POST /api/repos/create``                               create a dataset repo (409 when it exists)
- ``GET  /api/datasets/<repo>/tree/<rev>``                 list the repo's files (for delete patterns)
- ``GET  /api/datasets/<repo>/revision/<rev>``             repo info
- ``POST /api/datasets/<repo>/preupload/<rev>``            upload modes (``lfs`` for parquet/png, else regular)
- ``POST /api/datasets/<repo>/commit/<rev>``               the ndjson commit (regular files inline)
- ``POST /datasets/<repo>.git/info/lfs/objects/batch``     git-LFS batch API (``basic`` transfer)
- ``PUT  /lfs-upload/<oid>``                               the LFS object upload itself (HF_HUB_DISABLE_XET=1)
- ``GET  /api/datasets/<repo>/xet-write-token/<rev>``      a short-lived Xet token + the CAS URL below
- ``/cas/v1/chunks/...`` (404: no global dedup), ``/cas/v1/xorb-grants/...`` (404: hf_xet falls back to the
  direct upload), ``POST /cas/v1/xorbs/default/<hash>``, ``/cas/v2/shards`` (404: falls back to v1),
  ``POST /cas/v1/shards``: the Xet storage protocol that hf_xet (huggingface_hub's default uploader) speaks.
  Xorbs are decoded (raw, LZ4 frame, byte-grouped LZ4 chunks) and the shard's file entries are used to
  rebuild each uploaded file, so a commit's ``lfsFile`` entries resolve to the exact bytes that were sent.

Model repos (``infmae convert/export --push``, ``push_to_hub``, ``from_pretrained``) use the same endpoints
under ``/api/models/<repo>/...`` and ``/<repo>.git/info/lfs/objects/batch``, kept apart in ``hub.models``, plus
the file download that ``hf_hub_download`` makes:

- ``HEAD|GET /<repo>/resolve/<rev>/<path>``  (``/datasets/<repo>/resolve/...`` for datasets) at ``main`` or
  any commit oid, with the ``X-Repo-Commit`` and ``ETag`` headers the client's cache needs; private repos
  need the token, public ones do not.

It is not the Hub: no auth beyond comparing bearer tokens, no git, no hash verification of xorbs (the file
sha256 from the shard is checked against the rebuilt bytes). Every request is recorded (method, path,
headers, body) so tests can check what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/?]+)"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit oid -> files at that commit


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients closing keep-alive sockets: fine
            super().handle_error(request, client_address)


class HubStandin:
    """Start with ``with HubStandin(token=...) as hub:``; point HF_ENDPOINT at ``hub.url``."""

    def __init__(self, token: str) -> None:
        self.token = token  # the only token the stand-in accepts (anything else: 401, like the Hub)
        self.requests: list[Request] = []
        self.repos: dict[str, Repo] = {}  # dataset repos
        self.models: dict[str, Repo] = {}  # model repos
        self.lfs: dict[str, bytes] = {}  # sha256 hex -> bytes, from LFS uploads and rebuilt Xet files
        self.xorbs: dict[str, list[bytes]] = {}  # xorb hash -> decoded chunks
        self.xet_token = "xet-" + secrets.token_hex(8)
        self.validated: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ----------------------------------------------------------------------------------------- routing
    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with hub._lock:
                    hub.requests.append(req)
                try:
                    status, payload, extra = hub._route(req)
                except Exception as exc:  # a stand-in bug: answer 500 and keep it for the test to see
                    hub.errors.append(f"{req.method} {req.path}: {exc!r}")
                    status, payload, extra = 500, {"error": repr(exc)}, {}
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                if "Content-Type" not in extra:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":  # a HEAD answer has headers only (keep-alive stays in sync)
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve

        return Handler

    def _authorized(self, req: Request) -> bool:
        return req.headers.get("authorization") == f"Bearer {self.token}"

    def _route(self, req: Request) -> tuple[int, dict | list | bytes, dict]:
        path = unquote(urlsplit(req.path).path)
        m = re.fullmatch(r"/lfs-upload/(?P<oid>[0-9a-f]{64})", path)
        if m and req.method == "PUT":  # pre-signed-URL style: no Authorization header
            if hashlib.sha256(req.body).hexdigest() != m["oid"]:
                return 400, {"error": "sha256 mismatch"}, {}
            self.lfs[m["oid"]] = req.body
            return 200, b"", {}
        if path.startswith("/cas/"):
            return self._cas(path, req)
        m = re.fullmatch(rf"(?P<ds>/datasets)?/{_REPO}/resolve/{_REV}/(?P<file>.+)", path)
        if m and req.method in ("GET", "HEAD"):
            return self._resolve(m["repo"], self.repos if m["ds"] else self.models, m["rev"], m["file"], req)
        if not self._authorized(req):
            return 401, {"error": "Invalid credentials in Authorization header"}, {"X-Error-Code": "InvalidCredentials"}

        if path == "/api/repos/create" and req.method == "POST":
            info = json.loads(req.body)
            repo_id = f"{info['organization']}/{info['name']}"
            kind = info.get("type") or "model"
            if kind not in ("dataset", "model"):
                return 400, {"error": "the stand-in only serves dataset and model repos"}, {}
            repos = self.repos if kind == "dataset" else self.models
            url = self._repo_url(repo_id) if kind == "dataset" else f"{self.url}/{repo_id}"
            if repo_id in repos:
                return 409, {"error": f"You already created this {kind} repo", "url": url}, {}
            repos[repo_id] = Repo(private=info.get("visibility") == "private" or bool(info.get("private")))
            return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

        if path == "/api/validate-yaml" and req.method == "POST":
            return self._validate_yaml(json.loads(req.body))

        m = re.fullmatch(rf"/api/(?P<kind>datasets|models)/{_REPO}/(?P<op>tree|revision|preupload|commit|xet-write-token)/{_REV}(?P<rest>/.*)?", path)
        if m:
            repo = (self.repos if m["kind"] == "datasets" else self.models).get(m["repo"])
            if repo is None:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            return self._repo_api(m["op"], m["repo"], repo, req)

        m = re.fullmatch(rf"(/datasets)?/{_REPO}\.git/info/lfs/objects/batch", path)
        if m and req.method == "POST":
            batch = json.loads(req.body)
            objects = []
            for obj in batch["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in self.lfs:
                    entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
                objects.append(entry)
            return 200, {"transfer": "basic", "objects": objects}, {}
        return 404, {"error": f"the Hub stand-in does not serve {req.method} {path}"}, {}

    def _validate_yaml(self, body: dict):
        """Check a README's YAML the way the `datasets` loader reads it (the Hub's own rules are richer)."""
        from datasets.utils.metadata import MetadataConfigs
        from huggingface_hub import DatasetCard, ModelCard

        errors = []
        try:
            if body.get("repoType") == "model":  # a model card: metadata parses, with a licence field
                card = ModelCard(body["content"])
            else:
                card = DatasetCard(body["content"])
                MetadataConfigs.from_dataset_card_data(card.data)
            if body.get("repoType") not in ("dataset", "model"):
                errors.append("expected a dataset or model card")
            if not card.data.get("license"):
                errors.append("no license in the metadata")
        except Exception as exc:  # noqa: BLE001 - reported to the client like the Hub does
            errors.append(str(exc))
        self.validated.append(body["content"])
        if errors:
            return 400, {"errors": [{"message": e} for e in errors]}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _repo_url(self, repo_id: str) -> str:
        return f"{self.url}/datasets/{repo_id}"

    def _repo_api(self, op: str, repo_id: str, repo: Repo, req: Request):
        if op == "xet-write-token":
            return 200, {"accessToken": self.xet_token, "exp": int(time.time()) + 3600, "casUrl": f"{self.url}/cas"}, {}
        if op == "tree":
            items = [
                {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for p, b in sorted(repo.files.items())
            ]
            return 200, items, {}
        if op == "revision":
            sha = repo.commits[-1]["oid"] if repo.commits else "0" * 40
            siblings = [{"rfilename": p} for p in sorted(repo.files)]
            return 200, {"id": repo_id, "sha": sha, "private": repo.private, "siblings": siblings}, {}
        if op == "preupload":
            files = json.loads(req.body)["files"]
            out = []
            for f in files:
                lfs = f["path"].endswith((".parquet", ".png", ".jpg", ".safetensors")) or f["size"] > 10_000_000
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
            return 200, {"files": out}, {}
        if op == "commit":
            return self._commit(repo_id, repo, req)
        return 404, {"error": op}, {}

    def _commit(self, repo_id: str, repo: Repo, req: Request):
        lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        new_files = dict(repo.files)
        header = {}
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                new_files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                data = self.lfs.get(value["oid"])
                if data is None or len(data) != value["size"]:
                    return 422, {"error": f"LFS object {value['oid']} for {value['path']} was never uploaded"}, {}
                new_files[value["path"]] = data
            elif key == "deletedFile":
                new_files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                new_files = {p: b for p, b in new_files.items() if not p.startswith(prefix)}
        oid = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in new_files.items())).encode())
        commit = {"oid": oid.hexdigest(), "summary": header.get("summary"), "n_lines": len(lines)}
        repo.files = new_files
        repo.commits.append(commit)
        repo.snapshots[commit["oid"]] = dict(new_files)
        return 200, {"commitUrl": f"{self._repo_url(repo_id)}/commit/{commit['oid']}", "commitOid": commit["oid"]}, {}

    def _resolve(self, repo_id: str, repos: dict[str, Repo], rev: str, file: str, req: Request):
        """A file download (HEAD for the metadata, GET for the bytes) at a branch name or commit oid."""
        repo = repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(req)):
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        if rev == "main":
            oid = repo.commits[-1]["oid"] if repo.commits else None
        else:
            oid = rev if rev in repo.snapshots else None
        if oid is None:
            return 404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"}
        files = repo.snapshots[oid]
        if file not in files:
            return 404, {"error": f"{file} not found"}, {"X-Error-Code": "EntryNotFound"}
        data = files[file]
        etag = hashlib.sha256(data).hexdigest()
        return 200, data, {"X-Repo-Commit": oid, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}

    # ------------------------------------------------------------------------------------ Xet storage
    def _cas(self, path: str, req: Request):
        if req.headers.get("authorization") != f"Bearer {self.xet_token}":
            return 401, {"error": "bad Xet token"}, {}
        m = re.fullmatch(r"/cas/v1/xorbs/default/(?P<hash>[0-9a-f]{64})", path)
        if m and req.method == "POST":
            self.xorbs[m["hash"]] = _xorb_chunks(req.body)
            return 200, {"was_inserted": True}, {}
        if path == "/cas/v1/shards" and req.method == "POST":
            for sha, data in _shard_files(req.body, self.xorbs):
                if hashlib.sha256(data).hexdigest() != sha:
                    return 400, {"error": f"rebuilt file does not match its sha256 {sha}"}, {}
                self.lfs[sha] = data
            return 200, {"result": 1}, {}
        return 404, {"error": f"the Hub stand-in does not serve {req.method} {path}"}, {}


def _hash_hex(raw: bytes) -> str:
    """A Xet MerkleHash (32 bytes) as the hex string Xet prints: four little-endian u64."""
    return "".join(f"{int.from_bytes(raw[i : i + 8], 'little'):016x}" for i in range(0, 32, 8))


def _xorb_chunks(body: bytes) -> list[bytes]:
    """Split a serialized xorb into its decoded chunks (8-byte header: version, sizes, compression)."""
    chunks, pos = [], 0
    while pos + 8 <= len(body):
        version, csize, scheme, usize = body[pos], int.from_bytes(body[pos + 1 : pos + 4], "little"), body[pos + 4], int.from_bytes(body[pos + 5 : pos + 8], "little")
        if version != 0 or scheme > 2 or pos + 8 + csize > len(body):
            break  # the xorb footer (chunk hashes), not needed here
        data = body[pos + 8 : pos + 8 + csize]
        if scheme == 1:
            data = _lz4_frame(data)
        elif scheme == 2:
            data = _ungroup4(_lz4_frame(data))
        if len(data) != usize:
            raise ValueError("xorb chunk has the wrong size after decoding")
        chunks.append(data)
        pos += 8 + csize
    return chunks


def _shard_files(body: bytes, xorbs: dict[str, list[bytes]]):
    """Yield (sha256 hex, bytes) for each file of a Xet shard, rebuilt from the uploaded xorbs."""
    pos = 48  # header: tag (32), version, footer size
    while True:
        file_hash, (flags, n) = body[pos : pos + 32], struct.unpack("<II", body[pos + 32 : pos + 40])
        pos += 48
        if file_hash == b"\xff" * 32:
            return
        parts = []
        for _ in range(n):
            entry = body[pos : pos + 48]
            _, _, start, end = struct.unpack("<IIII", entry[32:48])
            parts += xorbs[_hash_hex(entry[:32])][start:end]
            pos += 48
        if flags & (1 << 31):  # verification entries
            pos += 48 * n
        if flags & (1 << 30):  # metadata extension: the file's sha256
            yield _hash_hex(body[pos : pos + 32]), b"".join(parts)
            pos += 48


def _ungroup4(data: bytes) -> bytes:
    """Undo Xet's 4-way byte grouping (bytes i%4==0 first, then 1, 2, 3)."""
    n = len(data)
    sizes = [n // 4 + (1 if g < n % 4 else 0) for g in range(4)]
    out, start = bytearray(n), 0
    for g, size in enumerate(sizes):
        out[g::4] = data[start : start + size]
        start += size
    return bytes(out)


def _lz4_frame(data: bytes) -> bytes:
    """Decode an LZ4 frame (pure Python: the lz4 package is not a dependency)."""
    if data[:4] != b"\x04\x22\x4d\x18":
        raise ValueError("not an LZ4 frame")
    flg = data[4]
    pos = 7 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0)
    out = bytearray()
    while True:
        size = int.from_bytes(data[pos : pos + 4], "little")
        pos += 4
        if size == 0:
            return bytes(out)
        block = data[pos : pos + (size & 0x7FFFFFFF)]
        pos += (size & 0x7FFFFFFF) + (4 if flg & 0x10 else 0)
        if size & 0x80000000:
            out += block
        else:
            _lz4_block(block, out)


def _lz4_length(src: bytes, i: int, length: int) -> tuple[int, int]:
    """An LZ4 length nibble, extended by 255-valued bytes when it is 15: (length, next index)."""
    if length == 15:
        while True:
            length += src[i]
            i += 1
            if src[i - 1] != 255:
                break
    return length, i


def _lz4_block(src: bytes, out: bytearray) -> None:
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        length, i = _lz4_length(src, i, token >> 4)
        out += src[i : i + length]
        i += length
        if i >= n:
            return
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        length, i = _lz4_length(src, i, token & 15)
        length += 4
        start = len(out) - offset
        for k in range(length):  # byte by byte: matches may overlap their own output
            out.append(out[start + k])
