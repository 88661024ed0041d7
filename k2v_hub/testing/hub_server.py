"""A small Hugging Face Hub-compatible HTTP server, for tests and private local Hubs.

The real `huggingface_hub` client (and `datasets`, `transformers`) talk to it over HTTP when the environment has
``HF_ENDPOINT=<server.url>`` and ``HF_HUB_DISABLE_XET=1`` (both are read when `huggingface_hub` is imported: set them
before importing, e.g. in a subprocess) or when ``HfApi(endpoint=server.url)`` is used.

    >>> with HubServer(tmp_path, token="hf_test") as server:
    ...     env = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "hf_test"}

Storage: ``root/<type>s/<org>/<name>/repo.json`` (refs, PRs, visibility) and ``commits/<sha>.json`` (one full
snapshot per commit: ``path -> {sha256, size, oid, lfs}``); file contents live once, by sha256, in ``root/blobs``.
Revisions: branch names, tags, full 40-hex commit ids and ``refs/pr/N``.

Endpoints (models; ``datasets``/``spaces`` likewise):

* ``GET /api/whoami-v2``, ``POST /api/validate-yaml``, ``POST /api/repos/{create,delete,move}``
* ``GET /api/models`` (author, search, filter, pipeline_tag, gated, sort, direction, limit, full, cardData, config,
  expand) with ``Link: <...>; rel="next"`` pagination past ``list_page_size`` or ``limit``
* ``GET /api/models/<org>/<name>[/revision/<rev>]``, ``.../tree/<rev>[/<path>]``, ``POST .../paths-info/<rev>``,
  ``GET .../refs``, ``GET .../commits/<rev>``, ``POST .../preupload/<rev>``, ``POST .../commit/<rev>`` (NDJSON,
  ``create_pr=1``), ``POST|DELETE .../branch/<name>``, ``POST|DELETE .../tag/<rev>``, ``PUT .../settings``
* ``POST /<org>/<name>.git/info/lfs/objects/batch`` + ``PUT /lfs-objects/<sha256>`` + ``POST /lfs-verify/<sha256>``
* ``GET|HEAD /<org>/<name>/resolve/<rev>/<path>`` (Range requests, ``X-Repo-Commit``, ``ETag``, ``X-Linked-*``)
* ``POST /models/<org>/<name>`` and ``POST /endpoints/<name>`` for models registered with `add_inference_model`

Preupload answers like the Hub: ``lfs`` for paths matching the repo's ``.gitattributes`` LFS patterns (parquet,
safetensors, bin, images, ...), binary samples and files of ``lfs_threshold`` bytes or more; ``regular`` (base64 inside
the NDJSON commit) otherwise. (Answering ``regular`` for everything breaks ``Dataset.push_to_hub``, which deletes
each parquet shard right after preuploading it.) Server-side helpers for fixtures: `HubServer.create_repo`,
`add_files`, `set_gated`, `set_private`, `grant_access`, `add_user`, `set_repo_stats`, `set_faults`.

Run ``python -m k2v_hub.testing.hub_server --root DIR --port N [--token T]`` for a foreground server.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import hmac
import inspect
import io
import json
import os
import random
import re
import secrets
import shutil
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

__all__ = ["HubServer", "serve_main"]

_TYPE_FROM_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_YAML_BLOCK_RE = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_CHUNK = 1024 * 1024

# The `.gitattributes` the Hub writes in every new repo: these files go through LFS.
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
*.jpg filter=lfs diff=lfs merge=lfs -text
*.jpeg filter=lfs diff=lfs merge=lfs -text
*.png filter=lfs diff=lfs merge=lfs -text
*.webp filter=lfs diff=lfs merge=lfs -text
*.mp3 filter=lfs diff=lfs merge=lfs -text
*.wav filter=lfs diff=lfs merge=lfs -text
"""

# `config.json` architectures suffix -> pipeline tag (what the Hub infers for transformers models without a card tag)
_ARCH_TO_PIPELINE = [
    ("ForImageClassification", "image-classification"),
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForMaskedLM", "fill-mask"),
    ("ForObjectDetection", "object-detection"),
    ("ForSemanticSegmentation", "image-segmentation"),
    ("ForAudioClassification", "audio-classification"),
    ("ForCTC", "automatic-speech-recognition"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
    ("ForImageTextToText", "image-text-to-text"),
]


class HubError(Exception):
    """An HTTP error answer, with the Hub's `X-Error-Code` / `X-Error-Message` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, body=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.body = body


def _now_iso(ts: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _parse_card(text: str) -> dict | None:
    """YAML front matter of a README.md as a dict (None if absent); raises ValueError if it is not valid YAML."""
    match = _YAML_BLOCK_RE.search(text)
    if match is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as err:
        raise ValueError(f"Invalid YAML in README.md metadata: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("README.md metadata must be a YAML dictionary")
    return json.loads(json.dumps(data, default=str))  # dates etc. -> JSON-safe


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v is not None]
    return [value]


# ----------------------------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------------------------
class _Store:
    """Repos, commits and blobs on disk. Commits and blobs are immutable, the repo.json files are not."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "blobs").mkdir(exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self.lock = threading.RLock()
        self._commit_cache: dict[tuple, dict] = {}
        self._derived_cache: dict[tuple, Any] = {}

    # -- paths
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / f"{repo_type}s" / repo_id

    def exists(self, repo_type: str, repo_id: str) -> bool:
        return (self.repo_dir(repo_type, repo_id) / "repo.json").is_file()

    def load_meta(self, repo_type: str, repo_id: str) -> dict | None:
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        with self.lock:
            try:
                return json.loads(path.read_text())
            except FileNotFoundError:
                return None

    def save_meta(self, repo_type: str, repo_id: str, meta: dict) -> None:
        with self.lock:
            _atomic_write_json(self.repo_dir(repo_type, repo_id) / "repo.json", meta)

    def list_repos(self, repo_type: str) -> list[str]:
        base = self.root / f"{repo_type}s"
        if not base.is_dir():
            return []
        out = []
        for org in sorted(base.iterdir()):
            if org.is_dir():
                for name in sorted(org.iterdir()):
                    if (name / "repo.json").is_file():
                        out.append(f"{org.name}/{name.name}")
        return out

    # -- blobs
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str) -> bool:
        return bool(re.fullmatch(r"[0-9a-f]{64}", sha256 or "")) and self.blob_path(sha256).is_file()

    def put_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha256)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.root / "tmp" / f"{sha256}.{secrets.token_hex(4)}"
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha256

    def put_file(self, tmp_path: Path, sha256: str) -> None:
        path = self.blob_path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, path)

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    # -- commits
    def read_commit(self, repo_type: str, repo_id: str, sha: str) -> dict | None:
        key = (repo_type, repo_id, sha)
        cached = self._commit_cache.get(key)
        if cached is not None:
            return cached
        path = self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json"
        try:
            commit = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        self._commit_cache[key] = commit
        return commit

    def write_commit(self, repo_type: str, repo_id: str, parents: list[str], tree: dict, title: str,
                     message: str, author: str) -> dict:
        date = _now_iso()
        payload = json.dumps([parents, sorted(tree.items()), title, message, date, secrets.token_hex(8)],
                             sort_keys=True, default=str)
        sha = hashlib.sha1(payload.encode()).hexdigest()
        commit = {"id": sha, "parents": parents, "title": title, "message": message, "date": date,
                  "authors": [author], "tree": tree}
        _atomic_write_json(self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json", commit)
        return commit

    def resolve(self, repo_type: str, repo_id: str, meta: dict, rev: str | None) -> str | None:
        rev = rev or "main"
        if rev.startswith("refs/heads/"):
            rev = rev[len("refs/heads/"):]
        if rev.startswith("refs/tags/"):
            return meta.get("tags", {}).get(rev[len("refs/tags/"):])
        if rev in meta.get("branches", {}):
            return meta["branches"][rev]
        if rev in meta.get("tags", {}):
            return meta["tags"][rev]
        m = re.fullmatch(r"refs/pr/(\d+)", rev)
        if m:
            pr = meta.get("prs", {}).get(m.group(1))
            return pr["head"] if pr else None
        if _COMMIT_RE.match(rev) and self.read_commit(repo_type, repo_id, rev) is not None:
            return rev
        return None

    def file_bytes(self, entry: dict) -> bytes:
        return self.read_blob(entry["sha256"])

    def make_entry(self, sha256: str, size: int, lfs: bool, content: bytes | None = None) -> dict:
        if lfs:
            oid = _git_blob_sha1(_lfs_pointer(sha256, size))
        else:
            oid = _git_blob_sha1(content if content is not None else self.read_blob(sha256))
        return {"sha256": sha256, "size": size, "oid": oid, "lfs": bool(lfs)}

    def derived(self, key: tuple, fn: Callable[[], Any]) -> Any:
        """Memoise values computed from immutable things (commits, blobs)."""
        if key in self._derived_cache:
            return self._derived_cache[key]
        value = fn()
        self._derived_cache[key] = value
        return value


# ----------------------------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------------------------
class _Response:
    def __init__(self, status: int = 200, body: bytes | None = b"", headers: dict | None = None,
                 file: tuple[Path, int, int] | None = None):
        self.status = status
        self.body = body or b""
        self.headers = dict(headers or {})
        self.file = file  # (path, start, length) streamed after the headers


def _json_response(data: Any, status: int = 200, headers: dict | None = None) -> _Response:
    body = json.dumps(data, default=str).encode()
    h = {"Content-Type": "application/json; charset=utf-8"}
    h.update(headers or {})
    return _Response(status, body, h)


class _Request:
    def __init__(self, handler: "_Handler"):
        self.handler = handler
        self.method = handler.command
        split = urlsplit(handler.path)
        self.raw_path = split.path
        self.raw_query = split.query
        self.query = parse_qs(split.query, keep_blank_values=True)
        segs = [unquote(s) for s in split.path.split("/")[1:]]
        while segs and segs[-1] == "":
            segs.pop()
        self.segs = segs
        self.path = "/" + "/".join(segs)
        self.headers = handler.headers
        self.body = b""
        auth = self.headers.get("Authorization") or ""
        self.token = auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def qlist(self, *names: str) -> list[str]:
        out: list[str] = []
        for name in names:
            for value in self.query.get(name, []):
                if name.startswith("expand"):
                    out.extend(v for v in value.split(",") if v)
                else:
                    out.append(value)
        return out

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            data = json.loads(self.body)
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err
        if not isinstance(data, dict):
            raise HubError(400, "The JSON body must be an object")
        return data


class _Headers(dict):
    """Request headers as logged in `HubServer.request_log`: a dict with case-insensitive look-ups."""

    def __init__(self, items=()):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key, default=None):
        return super().get(key.lower(), default)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "k2v-hub-local/1"
    timeout = 120  # seconds an idle keep-alive connection may stay open
    hub: "HubServer"  # set on the subclass built by HubServer.start

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr access log
        pass

    def setup(self):
        super().setup()
        self.hub._connections.add(self.connection)

    def finish(self):
        self.hub._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    # -- request bodies
    def _iter_body(self) -> Iterable[bytes]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    return
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        trailer = self.rfile.readline(65537)
                        if trailer in (b"\r\n", b"\n", b""):
                            return
                remaining = size
                while remaining > 0:
                    data = self.rfile.read(min(remaining, _CHUNK))
                    if not data:
                        return
                    remaining -= len(data)
                    yield data
                self.rfile.readline(65537)  # CRLF after the chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                data = self.rfile.read(min(remaining, _CHUNK))
                if not data:
                    return
                remaining -= len(data)
                yield data

    def _dispatch(self):
        hub = self.hub
        req = _Request(self)
        entry = {"method": req.method, "path": req.path, "raw_path": req.raw_path, "query": req.raw_query,
                 "headers": _Headers(self.headers.items()), "status": None, "time": time.time()}
        hub.request_log.append(entry)
        streamed_put = req.method == "PUT" and req.segs[:1] == ["lfs-objects"]
        fault = hub._draw_fault(req.method, req.path)
        try:
            if fault is not None or not streamed_put:
                req.body = b"".join(self._iter_body())
            if fault == "drop":
                entry["status"] = 0
                entry["dropped"] = True
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault is not None:
                headers = {"Connection": "close"}
                if fault == 429:
                    headers["Retry-After"] = "0"
                resp = _json_response({"error": f"Injected fault ({fault})"}, fault, headers)
                resp.headers["X-Error-Message"] = f"Injected fault ({fault})"
                entry["fault"] = True
                self.close_connection = True
            else:
                try:
                    resp = hub._route(req)
                except HubError as err:
                    resp = _json_response(err.body if err.body is not None else {"error": err.message}, err.status)
                    if err.code:
                        resp.headers["X-Error-Code"] = err.code
                    resp.headers["X-Error-Message"] = err.message.splitlines()[0][:500]
                    resp.headers.update(err.headers)
                except Exception as err:  # pragma: no cover - bug in the server: answer 500, keep serving
                    import traceback

                    traceback.print_exc()
                    resp = _json_response({"error": f"Internal server error: {err!r}"}, 500)
            entry["status"] = resp.status
            self._send(req, resp)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
            if entry["status"] is None:
                entry["status"] = 0

    def _send(self, req: _Request, resp: _Response) -> None:
        length = resp.file[2] if resp.file is not None else len(resp.body)
        self.send_response(resp.status)
        headers = dict(resp.headers)
        headers.setdefault("Content-Length", str(length))
        if resp.file is None:
            headers["Content-Length"] = str(length)
        for key, value in headers.items():
            value = str(value)
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:  # header values must be latin-1: escape the rest
                value = value.encode("ascii", "backslashreplace").decode("ascii")
            self.send_header(key, value)
        if headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        self.end_headers()
        if req.method == "HEAD":
            return
        if resp.file is not None:
            path, start, count = resp.file
            with open(path, "rb") as f:
                f.seek(start)
                while count > 0:
                    data = f.read(min(count, _CHUNK))
                    if not data:
                        break
                    self.wfile.write(data)
                    count -= len(data)
        elif resp.body:
            self.wfile.write(resp.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


# ----------------------------------------------------------------------------------------------------------------
# The Hub
# ----------------------------------------------------------------------------------------------------------------
class HubServer:
    """A Hub-compatible HTTP server on ``host:port`` (port 0 picks a free one), storing repos under ``root``.

    Auth: with ``token=None`` every request is allowed (private repos included). With a token, write requests need
    ``Authorization: Bearer <token>``, private repos answer 401 to anonymous reads and 404 to other users, an unknown
    token answers 401, and gated repos refuse file downloads (401 anonymous / 403 other users, ``X-Error-Code:
    GatedRepo``) except to the owner and users granted with `grant_access`. Extra read-only users: `add_user`.
    """

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None, *,
                 username: str = "user", orgs: Iterable[str] = (), lfs_threshold: int = 10 * 1024 * 1024):
        self.root = Path(root)
        self.host = host
        self.port = port
        self.token = token
        self.username = username
        self.orgs = list(orgs)
        self.lfs_threshold = lfs_threshold
        self.list_page_size = 1000
        self.request_log: list[dict] = []
        self.store = _Store(self.root)
        self._users: dict[str, str] = {}  # token -> user name (read-only users)
        self._inference: dict[str, Callable] = {}  # URL path -> predict_fn
        self._secret = secrets.token_bytes(16)
        self._faults: dict | None = None
        self._fault_lock = threading.Lock()
        self._httpd: _Server | None = None
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{port}" if port else ""

    # -- lifecycle
    def start(self) -> "HubServer":
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._httpd = _Server((self.host, self.port), handler)
        self.port = self._httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"HubServer:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        for conn in list(self._connections):  # idle keep-alive connections would otherwise keep being served
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def serve_forever(self) -> None:
        """Run in the foreground (what `serve_main` does)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test controls
    def set_faults(self, *, error_rate: float = 0.0, drop_rate: float = 0.0,
                   statuses: Iterable[int] = (429, 500, 502, 503), seed: int = 0,
                   paths: tuple[str, ...] | None = None, methods: tuple[str, ...] | None = None,
                   max_faults: int | None = None) -> None:
        """Answer a fraction of requests with an error status (429 comes with ``Retry-After: 0``) or by closing the
        connection without an answer. Deterministic for a given seed and request order. ``paths`` keeps faults to
        URL paths starting with one of the prefixes (matched on the decoded path), ``methods`` to those methods,
        ``max_faults`` stops after that many faults. ``set_faults()`` with no argument turns faults off."""
        with self._fault_lock:
            if error_rate <= 0 and drop_rate <= 0:
                self._faults = None
                return
            self._faults = {
                "error_rate": float(error_rate), "drop_rate": float(drop_rate), "statuses": tuple(statuses),
                "rng": random.Random(seed), "paths": tuple(paths) if paths else None,
                "methods": tuple(m.upper() for m in methods) if methods else None,
                "left": max_faults,
            }

    def _draw_fault(self, method: str, path: str):
        """None, "drop" or an HTTP status, for a request that matches the fault filters."""
        with self._fault_lock:
            f = self._faults
            if f is None or f["left"] == 0:
                return None
            if f["paths"] is not None and not any(path.startswith(p) for p in f["paths"]):
                return None
            if f["methods"] is not None and method.upper() not in f["methods"]:
                return None
            r = f["rng"].random()
            if r < f["drop_rate"]:
                outcome = "drop"
            elif r < f["drop_rate"] + f["error_rate"]:
                outcome = f["rng"].choice(f["statuses"])
            else:
                return None
            if f["left"] is not None:
                f["left"] -= 1
            return outcome

    def add_user(self, token: str, name: str) -> None:
        """A read-only user (public repos, gated repos it was granted)."""
        self._users[token] = name

    def grant_access(self, repo_id: str, user: str, repo_type: str = "model") -> None:
        with self.store.lock:
            meta = self._meta_or_404(repo_type, repo_id)
            meta.setdefault("granted", [])
            if user not in meta["granted"]:
                meta["granted"].append(user)
            self.store.save_meta(repo_type, repo_id, meta)

    def set_gated(self, repo_id: str, repo_type: str = "model", gated: str | bool = "auto") -> None:
        """Make a repo gated (``"auto"``/``"manual"``) or not (``False``)."""
        self._update_meta(repo_type, repo_id, gated=gated or False)

    def set_private(self, repo_id: str, repo_type: str = "model", private: bool = True) -> None:
        self._update_meta(repo_type, repo_id, private=bool(private))

    def set_repo_stats(self, repo_id: str, repo_type: str = "model", *, downloads: int | None = None,
                       likes: int | None = None) -> None:
        changes = {k: v for k, v in (("downloads", downloads), ("likes", likes)) if v is not None}
        self._update_meta(repo_type, repo_id, **changes)

    def add_inference_model(self, repo_id: str, predict_fn: Callable) -> str:
        """Serve ``POST /models/<repo_id>`` and ``POST /endpoints/<repo_id>`` like an image-classification Inference
        Endpoint. ``predict_fn(image: PIL.Image, top_k: int) -> [{"label", "score"}, ...]`` (it may also take a
        ``function_to_apply`` keyword). A ``repo_id`` starting with "/" is taken as the URL path itself.
        Returns the URL path of the model (append it to `url`)."""
        if repo_id.startswith("/"):
            paths = [repo_id.rstrip("/")]
        else:
            paths = [f"/models/{repo_id}", f"/endpoints/{repo_id}"]
        for path in paths:
            self._inference[path] = predict_fn
        return paths[0]

    def inference_url(self, repo_id: str) -> str:
        return f"{self.url}/models/{repo_id}"

    def clear_log(self) -> None:
        self.request_log.clear()

    # -- helpers
    def _update_meta(self, repo_type: str, repo_id: str, **changes) -> None:
        with self.store.lock:
            meta = self._meta_or_404(repo_type, repo_id)
            meta.update(changes)
            self.store.save_meta(repo_type, repo_id, meta)

    def _meta_or_404(self, repo_type: str, repo_id: str) -> dict:
        meta = self.store.load_meta(repo_type, repo_id)
        if meta is None:
            raise HubError(404, f"Repository Not Found: {repo_type}s/{repo_id}", "RepoNotFound")
        return meta

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"

    def _user(self, req: _Request) -> tuple[str | None, bool]:
        """(user name or None for anonymous, is_owner)."""
        if self.token is None:
            return (self._users.get(req.token or "", self.username), req.token not in self._users)
        if req.token is None:
            return None, False
        if hmac.compare_digest(req.token, self.token):
            return self.username, True
        if req.token in self._users:
            return self._users[req.token], False
        raise HubError(401, "Invalid credentials in Authorization header", headers={"WWW-Authenticate": "Bearer"})

    def _readable(self, req: _Request, repo_type: str, repo_id: str) -> dict:
        meta = self.store.load_meta(repo_type, repo_id)
        user, owner = self._user(req)
        if meta is None:
            raise HubError(404, f"Repository Not Found for url: {repo_type}s/{repo_id}.", "RepoNotFound")
        if meta.get("private") and not owner:
            if user is None:
                raise HubError(401, "Invalid username or password.", "RepoNotFound")
            raise HubError(404, f"Repository Not Found for url: {repo_type}s/{repo_id}.", "RepoNotFound")
        return meta

    def _downloadable(self, req: _Request, repo_type: str, repo_id: str) -> dict:
        meta = self._readable(req, repo_type, repo_id)
        if meta.get("gated"):
            user, owner = self._user(req)
            if not owner and user not in meta.get("granted", []):
                if user is None:
                    raise HubError(401, f"Access to {repo_type} {repo_id} is restricted. You must have access to "
                                        "it and be authenticated to access it. Please log in.", "GatedRepo")
                raise HubError(403, f"Access to {repo_type} {repo_id} is restricted and you are not in the "
                                    "authorized list.", "GatedRepo")
        return meta

    def _writable(self, req: _Request, repo_type: str, repo_id: str) -> dict:
        user, owner = self._user(req)
        if not owner:
            if user is None:
                raise HubError(401, "You must be authenticated to write to the Hub (Authorization: Bearer <token>).")
            raise HubError(403, f"You don't have the rights to write to {repo_type}s/{repo_id}.")
        return self._meta_or_404(repo_type, repo_id)

    def _resolve_or_404(self, repo_type: str, repo_id: str, meta: dict, rev: str | None) -> str:
        sha = self.store.resolve(repo_type, repo_id, meta, rev)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha

    # ------------------------------------------------------------------------------------------------------------
    # routing
    # ------------------------------------------------------------------------------------------------------------
    def _route(self, req: _Request) -> _Response:
        segs, method = req.segs, req.method
        if method == "POST" and req.path in self._inference:
            return self._inference_call(req, self._inference[req.path])
        if not segs:
            return _json_response({"message": "k2v-hub local Hub"})
        if segs[0] == "api":
            return self._route_api(req, segs[1:])
        if segs[0] == "lfs-objects" and len(segs) == 2 and method == "PUT":
            return self._lfs_put(req, segs[1])
        if segs[0] == "lfs-verify" and len(segs) == 2 and method == "POST":
            return self._lfs_verify(req, segs[1])
        # repo pages: /<org>/<name>/..., /datasets/<org>/<name>/..., /spaces/<org>/<name>/...
        repo_type = "model"
        rest = segs
        if segs[0] in ("datasets", "spaces") and len(segs) >= 3:
            repo_type = _TYPE_FROM_PLURAL[segs[0]]
            rest = segs[1:]
        if len(rest) >= 2:
            org, name, tail = rest[0], rest[1], rest[2:]
            if name.endswith(".git") and tail == ["info", "lfs", "objects", "batch"] and method == "POST":
                return self._lfs_batch(req, repo_type, f"{org}/{name[:-4]}")
            if tail and tail[0] in ("resolve", "raw") and len(tail) >= 3 and method in ("GET", "HEAD"):
                rev, i = self._take_rev(tail, 1)
                path = "/".join(tail[i:])
                return self._resolve_file(req, repo_type, f"{org}/{name}", rev, path)
        raise HubError(404, f"Not found: {req.path}")

    @staticmethod
    def _take_rev(segs: list[str], i: int) -> tuple[str, int]:
        """Revision starting at segs[i]: one (URL-encoded) segment, or unencoded ``refs/<kind>/<name>``."""
        if i >= len(segs):
            return "main", i
        if segs[i] == "refs" and len(segs) >= i + 3:
            return "/".join(segs[i:i + 3]), i + 3
        return segs[i], i + 1

    def _route_api(self, req: _Request, segs: list[str]) -> _Response:
        method = req.method
        if not segs:
            raise HubError(404, "Not found")
        head = segs[0]
        if head == "whoami-v2" and method == "GET":
            return self._whoami(req)
        if head == "validate-yaml" and method == "POST":
            return self._validate_yaml(req)
        if head == "repos" and len(segs) == 2 and method in ("POST", "DELETE"):
            if segs[1] == "create":
                return self._create_repo(req)
            if segs[1] == "delete":
                return self._delete_repo(req)
            if segs[1] == "move":
                return self._move_repo(req)
        if head in _TYPE_FROM_PLURAL:
            repo_type = _TYPE_FROM_PLURAL[head]
            if len(segs) == 1 and method == "GET":
                return self._list_repos(req, repo_type)
            if len(segs) >= 3:
                repo_id = f"{segs[1]}/{segs[2]}"
                rest = segs[3:]
                return self._route_repo_api(req, repo_type, repo_id, rest)
        raise HubError(404, f"Not found: {req.path}")

    def _route_repo_api(self, req: _Request, repo_type: str, repo_id: str, rest: list[str]) -> _Response:
        method = req.method
        if not rest and method == "GET":
            return self._repo_info(req, repo_type, repo_id, None)
        if not rest:
            raise HubError(405, f"Method {method} not allowed")
        action = rest[0]
        if action == "revision" and method == "GET" and len(rest) >= 2:
            rev, _ = self._take_rev(rest, 1)
            return self._repo_info(req, repo_type, repo_id, rev)
        if action == "tree" and method == "GET":
            rev, i = self._take_rev(rest, 1)
            return self._tree(req, repo_type, repo_id, rev, "/".join(rest[i:]))
        if action == "paths-info" and method in ("POST", "GET"):
            rev, _ = self._take_rev(rest, 1)
            return self._paths_info(req, repo_type, repo_id, rev)
        if action == "refs" and method == "GET":
            return self._refs(req, repo_type, repo_id)
        if action == "commits" and method == "GET":
            rev, _ = self._take_rev(rest, 1)
            return self._commits(req, repo_type, repo_id, rev)
        if action == "preupload" and method == "POST":
            rev, _ = self._take_rev(rest, 1)
            return self._preupload(req, repo_type, repo_id, rev)
        if action == "commit" and method == "POST":
            rev, _ = self._take_rev(rest, 1)
            return self._commit(req, repo_type, repo_id, rev)
        if action == "branch" and len(rest) >= 2 and method in ("POST", "DELETE"):
            return self._branch(req, repo_type, repo_id, "/".join(rest[1:]))
        if action == "tag" and len(rest) >= 2 and method in ("POST", "DELETE"):
            rev, _ = self._take_rev(rest, 1)
            return self._tag(req, repo_type, repo_id, rev)
        if action == "settings" and method in ("PUT", "POST"):
            return self._settings(req, repo_type, repo_id)
        raise HubError(404, f"Not found: {req.path}")

    # ------------------------------------------------------------------------------------------------------------
    # account and repos
    # ------------------------------------------------------------------------------------------------------------
    def _whoami(self, req: _Request) -> _Response:
        user, owner = self._user(req)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        namespaces = set(self.orgs)
        if owner:
            for repo_type in ("model", "dataset", "space"):
                namespaces.update(r.split("/")[0] for r in self.store.list_repos(repo_type))
        namespaces.discard(user)
        orgs = [{"type": "org", "name": ns, "fullname": ns, "roleInOrg": "admin" if owner else "read",
                 "isEnterprise": False, "id": hashlib.sha1(ns.encode()).hexdigest()[:24]}
                for ns in sorted(namespaces)]
        return _json_response({
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user, "fullname": user,
            "email": f"{user}@localhost", "emailVerified": True, "canPay": False, "isPro": False,
            "periodEnd": None, "avatarUrl": "", "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": {"displayName": "local-hub",
                                                             "role": "write" if owner else "read",
                                                             "createdAt": _now_iso(0)}},
        })

    def _validate_yaml(self, req: _Request) -> _Response:
        data = req.json()
        try:
            _parse_card(str(data.get("content") or ""))
        except ValueError as err:
            return _json_response({"errors": [{"message": str(err)}], "warnings": []}, 400)
        return _json_response({"errors": [], "warnings": []})

    def _create_repo(self, req: _Request) -> _Response:
        user, owner = self._user(req)
        data = req.json()
        repo_type = data.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        name = data.get("name") or ""
        org = data.get("organization") or user or self.username
        if not owner:
            if user is None:
                raise HubError(401, "You must be authenticated to create a repo.")
            raise HubError(403, "You don't have the rights to create a repo here.")
        if not (_NAME_RE.match(name) and _NAME_RE.match(org)) or "--" in name or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name: {org}/{name}")
        repo_id = f"{org}/{name}"
        url = self._repo_url(repo_type, repo_id)
        private = data.get("visibility") == "private" or bool(data.get("private"))
        with self.store.lock:
            if self.store.exists(repo_type, repo_id):
                return _json_response({"error": "You already created this repo", "url": url}, 409)
            self.create_repo(repo_id, repo_type=repo_type, private=private, author=user or self.username)
        return _json_response({"url": url, "name": repo_id, "id": repo_id})

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False,
                    author: str | None = None) -> str:
        """Create a repo directly on disk (initial commit with the Hub's default `.gitattributes`); returns its URL
        path (``/datasets/org/name`` etc.). Existing repos are left alone."""
        with self.store.lock:
            if not self.store.exists(repo_type, repo_id):
                content = DEFAULT_GITATTRIBUTES.encode()
                sha256 = self.store.put_bytes(content)
                tree = {".gitattributes": self.store.make_entry(sha256, len(content), False, content)}
                commit = self.store.write_commit(repo_type, repo_id, [], tree, "initial commit", "",
                                                 author or self.username)
                meta = {"type": repo_type, "id": repo_id, "private": bool(private), "gated": False,
                        "createdAt": commit["date"], "branches": {"main": commit["id"]}, "tags": {}, "prs": {},
                        "nextDiscussion": 1, "downloads": None, "likes": None, "granted": []}
                self.store.save_meta(repo_type, repo_id, meta)
        return f"/{_URL_PREFIX[repo_type]}{repo_id}"

    def add_files(self, repo_id: str, files: dict[str, bytes | str | Path], *, repo_type: str = "model",
                  revision: str = "main", message: str = "Upload files", delete: Iterable[str] = ()) -> str:
        """Commit files straight to disk, without HTTP (to seed fixtures). Creates the repo if needed. Values are
        bytes, text or local paths; files the Hub would put in LFS are stored as LFS. Returns the commit sha."""
        self.create_repo(repo_id, repo_type=repo_type)
        with self.store.lock:
            meta = self.store.load_meta(repo_type, repo_id)
            base = meta["branches"].get(revision)
            if base is None:
                raise ValueError(f"No branch {revision!r} in {repo_type}s/{repo_id}")
            tree = dict(self.store.read_commit(repo_type, repo_id, base)["tree"])
            patterns = self._lfs_patterns(tree)
            for path, content in files.items():
                if isinstance(content, Path):
                    content = content.read_bytes()
                elif isinstance(content, str):
                    content = content.encode()
                path = path.strip("/")
                lfs = len(content) > 0 and (len(content) >= self.lfs_threshold or self._matches_lfs(path, patterns)
                                            or b"\x00" in content[:1024])
                sha256 = self.store.put_bytes(content)
                tree[path] = self.store.make_entry(sha256, len(content), lfs, content)
            for path in delete:
                tree.pop(path.strip("/"), None)
            commit = self.store.write_commit(repo_type, repo_id, [base], tree, message, "", self.username)
            meta["branches"][revision] = commit["id"]
            self.store.save_meta(repo_type, repo_id, meta)
        return commit["id"]

    def _delete_repo(self, req: _Request) -> _Response:
        user, _ = self._user(req)
        data = req.json()
        repo_type = data.get("type") or "model"
        repo_id = f"{data.get('organization') or user or self.username}/{data.get('name')}"
        with self.store.lock:
            self._writable(req, repo_type, repo_id)
            shutil.rmtree(self.store.repo_dir(repo_type, repo_id))
            self.store._commit_cache = {k: v for k, v in self.store._commit_cache.items()
                                        if k[:2] != (repo_type, repo_id)}
        return _json_response({})

    def _move_repo(self, req: _Request) -> _Response:
        data = req.json()
        repo_type = data.get("type") or "model"
        src, dst = data.get("fromRepo") or "", data.get("toRepo") or ""
        with self.store.lock:
            self._writable(req, repo_type, src)
            if self.store.exists(repo_type, dst):
                raise HubError(409, f"Repository {dst} already exists")
            target = self.store.repo_dir(repo_type, dst)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.store.repo_dir(repo_type, src), target)
            meta = self.store.load_meta(repo_type, dst)
            meta["id"] = dst
            self.store.save_meta(repo_type, dst, meta)
            self.store._commit_cache.clear()
        return _json_response({})

    def _settings(self, req: _Request, repo_type: str, repo_id: str) -> _Response:
        data = req.json()
        with self.store.lock:
            meta = self._writable(req, repo_type, repo_id)
            if "private" in data and data["private"] is not None:
                meta["private"] = bool(data["private"])
            if data.get("visibility") in ("private", "public"):
                meta["private"] = data["visibility"] == "private"
            if "gated" in data and data["gated"] is not None:
                meta["gated"] = data["gated"] or False
            self.store.save_meta(repo_type, repo_id, meta)
        return _json_response({})

    # ------------------------------------------------------------------------------------------------------------
    # repo info and listings
    # ------------------------------------------------------------------------------------------------------------
    def _card(self, repo_type: str, repo_id: str, commit: dict) -> dict | None:
        entry = commit["tree"].get("README.md")
        if entry is None:
            return None

        def parse():
            try:
                return _parse_card(self.store.file_bytes(entry).decode("utf-8", "replace"))
            except (ValueError, OSError):
                return None

        return self.store.derived(("card", entry["sha256"]), parse)

    def _config(self, commit: dict) -> dict | None:
        entry = commit["tree"].get("config.json")
        if entry is None or entry["size"] > 5 * 1024 * 1024:
            return None

        def parse():
            try:
                data = json.loads(self.store.file_bytes(entry))
            except (ValueError, OSError):
                return None
            return data if isinstance(data, dict) else None

        return self.store.derived(("config", entry["sha256"]), parse)

    def _info_dict(self, repo_type: str, repo_id: str, meta: dict, sha: str) -> dict:
        commit = self.store.read_commit(repo_type, repo_id, sha)
        tree = commit["tree"]
        card = self._card(repo_type, repo_id, commit)
        card_d = card or {}
        author = repo_id.split("/")[0]
        siblings = []
        for path in sorted(tree):
            e = tree[path]
            s = {"rfilename": path, "size": e["size"], "blobId": e["oid"]}
            if e["lfs"]:
                s["lfs"] = {"size": e["size"], "sha256": e["sha256"],
                            "pointerSize": len(_lfs_pointer(e["sha256"], e["size"]))}
            siblings.append(s)

        def stat(name):
            value = meta.get(name)
            if value is None:
                value = card_d.get(name)
            try:
                return int(value or 0)
            except (TypeError, ValueError):
                return 0

        info = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id, "author": author, "sha": sha, "lastModified": commit["date"],
            "createdAt": meta.get("createdAt"), "private": bool(meta.get("private")),
            "gated": meta.get("gated") or False, "disabled": False,
            "downloads": stat("downloads"), "likes": stat("likes"), "downloadsAllTime": stat("downloads"),
            "trendingScore": 0, "cardData": card, "siblings": siblings,
            "usedStorage": sum(e["size"] for e in tree.values()),
        }
        tags: list[str] = []

        def add_tag(t):
            if t and isinstance(t, str) and t not in tags:
                tags.append(t)

        if repo_type == "model":
            config = self._config(commit)
            pipeline_tag = card_d.get("pipeline_tag")
            archs = _as_list((config or {}).get("architectures"))
            if not pipeline_tag:
                for arch in archs:
                    for suffix, tag in _ARCH_TO_PIPELINE:
                        if isinstance(arch, str) and arch.endswith(suffix):
                            pipeline_tag = pipeline_tag or tag
            library_name = card_d.get("library_name")
            if not library_name and config is not None and (archs or config.get("model_type")):
                library_name = "transformers"
            add_tag(library_name)
            if any(p.endswith(".safetensors") for p in tree):
                add_tag("safetensors")
            if config is not None:
                add_tag(config.get("model_type"))
            for t in _as_list(card_d.get("tags")):
                add_tag(str(t))
            add_tag(pipeline_tag)
            for d in _as_list(card_d.get("datasets")):
                add_tag(f"dataset:{d}")
            for b in _as_list(card_d.get("base_model")):
                add_tag(f"base_model:{b}")
            for lang in _as_list(card_d.get("language")):
                add_tag(str(lang))
            for lic in _as_list(card_d.get("license")):
                add_tag(f"license:{lic}")
            info.update({"modelId": repo_id, "pipeline_tag": pipeline_tag, "library_name": library_name,
                         "spaces": [], "widgetData": None})
            if config is not None:
                info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
                if archs and library_name == "transformers":
                    info["transformersInfo"] = {"auto_model": "AutoModel" + (
                        "ForImageClassification" if pipeline_tag == "image-classification" else ""),
                        "pipeline_tag": pipeline_tag, "processor": None}
        else:
            for t in _as_list(card_d.get("tags")):
                add_tag(str(t))
            for key in ("task_categories", "task_ids", "language", "size_categories", "license",
                        "multilinguality", "language_creators"):
                for v in _as_list(card_d.get(key)):
                    add_tag(f"{key}:{v}")
            if any(p.endswith(".parquet") for p in tree):
                add_tag("format:parquet")
            info.update({"description": None, "citation": None, "paperswithcode_id": None,
                         "mainSize": info["usedStorage"]})
        info["tags"] = tags
        return info

    def _repo_info(self, req: _Request, repo_type: str, repo_id: str, rev: str | None) -> _Response:
        meta = self._readable(req, repo_type, repo_id)
        sha = self._resolve_or_404(repo_type, repo_id, meta, rev)
        info = self._info_dict(repo_type, repo_id, meta, sha)
        expand = req.qlist("expand", "expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in expand or k in ("id", "_id")}
        return _json_response(info)

    def _list_repos(self, req: _Request, repo_type: str) -> _Response:
        user, owner = self._user(req)
        author = req.q("author")
        searches = [s.lower() for s in req.qlist("search") if s]
        filters = req.qlist("filter")
        pipeline_tag = req.q("pipeline_tag")
        gated = req.q("gated")
        items = []
        for repo_id in self.store.list_repos(repo_type):
            if author and repo_id.split("/")[0] != author:
                continue
            if searches and not all(s in repo_id.lower() for s in searches):
                continue
            meta = self.store.load_meta(repo_type, repo_id)
            if meta is None or (meta.get("private") and not owner):
                continue
            sha = self.store.resolve(repo_type, repo_id, meta, "main")
            if sha is None:
                continue
            info = self._info_dict(repo_type, repo_id, meta, sha)
            if pipeline_tag and info.get("pipeline_tag") != pipeline_tag:
                continue
            if gated is not None and bool(info["gated"]) != _truthy(gated):
                continue
            searchable = set(info["tags"]) | {info.get("library_name"), info.get("pipeline_tag"), repo_id}
            if any(f not in searchable for f in filters):
                continue
            items.append(info)
        sort = req.q("sort")
        if sort:
            key = {"trending_score": "trendingScore", "last_modified": "lastModified",
                   "created_at": "createdAt"}.get(sort, sort)
            descending = req.q("direction", "-1") != "1"
            present = [i for i in items if i.get(key) is not None]
            missing = [i for i in items if i.get(key) is None]
            present.sort(key=lambda i: i[key], reverse=descending)
            items = present + missing
        # shape
        expand = req.qlist("expand", "expand[]")
        full = _truthy(req.q("full"))
        with_card = _truthy(req.q("cardData")) or full
        with_config = _truthy(req.q("config"))
        shaped = []
        for info in items:
            if expand:
                d = {k: v for k, v in info.items() if k in expand or k in ("id", "_id")}
            else:
                d = dict(info)
                if not full:
                    d.pop("siblings", None)
                if not with_card:
                    d.pop("cardData", None)
                if not with_config:
                    d.pop("config", None)
                    d.pop("transformersInfo", None)
            shaped.append(d)
        return self._paginated(req, shaped, req.q("limit"))

    def _paginated(self, req: _Request, items: list, limit: str | None) -> _Response:
        try:
            offset = max(0, int(req.q("cursor") or 0))
        except ValueError:
            offset = 0
        page = self.list_page_size
        if limit:
            try:
                page = max(1, min(page, int(limit)))
            except ValueError:
                pass
        chunk = items[offset:offset + page]
        headers = {}
        if offset + page < len(items):
            params = [(k, v) for k, vs in req.query.items() if k != "cursor" for v in vs]
            params.append(("cursor", str(offset + page)))
            headers["Link"] = f'<{self.url}{req.raw_path}?{urlencode(params)}>; rel="next"'
        return _json_response(chunk, headers=headers)

    # ------------------------------------------------------------------------------------------------------------
    # trees, paths-info, refs, commits
    # ------------------------------------------------------------------------------------------------------------
    def _file_json(self, path: str, e: dict) -> dict:
        d = {"type": "file", "oid": e["oid"], "size": e["size"], "path": path}
        if e["lfs"]:
            d["lfs"] = {"oid": e["sha256"], "size": e["size"],
                        "pointerSize": len(_lfs_pointer(e["sha256"], e["size"]))}
        return d

    @staticmethod
    def _dir_json(path: str, tree: dict) -> dict:
        prefix = path + "/"
        listing = sorted((p, e["oid"]) for p, e in tree.items() if p.startswith(prefix))
        oid = hashlib.sha1(json.dumps(listing).encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    def _last_commit(self, repo_type: str, repo_id: str, sha: str, path: str) -> dict:
        commit = self.store.read_commit(repo_type, repo_id, sha)
        entry = commit["tree"].get(path)
        while commit["parents"]:
            parent = self.store.read_commit(repo_type, repo_id, commit["parents"][0])
            if parent is None or parent["tree"].get(path) != entry or entry is None:
                break
            commit = parent
        return {"id": commit["id"], "title": commit["title"], "date": commit["date"]}

    def _tree(self, req: _Request, repo_type: str, repo_id: str, rev: str, path: str) -> _Response:
        meta = self._readable(req, repo_type, repo_id)
        sha = self._resolve_or_404(repo_type, repo_id, meta, rev)
        tree = self.store.read_commit(repo_type, repo_id, sha)["tree"]
        path = path.strip("/")
        recursive = _truthy(req.q("recursive"))
        expand = _truthy(req.q("expand"))
        prefix = path + "/" if path else ""
        if path and path in tree:
            raise HubError(404, f"{path} is a file, not a folder", "EntryNotFound", {"X-Repo-Commit": sha})
        files = sorted(p for p in tree if p.startswith(prefix))
        if path and not files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        out: list[dict] = []
        dirs_seen: set[str] = set()
        for p in files:
            rel = p[len(prefix):]
            parts = rel.split("/")
            # directories on the way to the file
            for depth in range(1, len(parts)):
                d = prefix + "/".join(parts[:depth])
                if d not in dirs_seen:
                    dirs_seen.add(d)
                    out.append(self._dir_json(d, tree))
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                out.append(self._file_json(p, tree[p]))
        if expand:
            for item in out:
                item["lastCommit"] = self._last_commit(repo_type, repo_id, sha, item["path"])
        return self._paginated(req, out, None)

    def _paths_info(self, req: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        meta = self._readable(req, repo_type, repo_id)
        sha = self._resolve_or_404(repo_type, repo_id, meta, rev)
        tree = self.store.read_commit(repo_type, repo_id, sha)["tree"]
        ctype = (req.headers.get("Content-Type") or "").lower()
        if "json" in ctype:
            data = req.json()
            paths = _as_list(data.get("paths"))
            expand = bool(data.get("expand"))
        else:
            form = parse_qs(req.body.decode(), keep_blank_values=True)
            paths = form.get("paths", []) + form.get("paths[]", [])
            expand = _truthy((form.get("expand") or ["false"])[-1])
            if not paths:
                paths = req.qlist("paths")
        out = []
        for p in paths:
            p = str(p).strip("/")
            if p in tree:
                item = self._file_json(p, tree[p])
            elif p == "" or any(k.startswith(p + "/") for k in tree):
                item = self._dir_json(p, tree)
            else:
                continue
            if expand:
                item["lastCommit"] = self._last_commit(repo_type, repo_id, sha, p)
            out.append(item)
        return _json_response(out)

    def _refs(self, req: _Request, repo_type: str, repo_id: str) -> _Response:
        meta = self._readable(req, repo_type, repo_id)
        data = {
            "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s}
                         for b, s in sorted(meta.get("branches", {}).items())],
            "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": s}
                     for t, s in sorted(meta.get("tags", {}).items())],
            "converts": [],
        }
        if _truthy(req.q("include_prs")):
            data["pullRequests"] = [{"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": pr["head"]}
                                    for n, pr in sorted(meta.get("prs", {}).items(), key=lambda kv: int(kv[0]))]
        return _json_response(data)

    def _commits(self, req: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        meta = self._readable(req, repo_type, repo_id)
        sha = self._resolve_or_404(repo_type, repo_id, meta, rev)
        out = []
        while sha:
            c = self.store.read_commit(repo_type, repo_id, sha)
            if c is None:
                break
            out.append({"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                        "authors": [{"user": a, "avatar": ""} for a in c["authors"]],
                        "formatted": {"title": c["title"], "message": c["message"]}})
            sha = c["parents"][0] if c["parents"] else None
        return self._paginated(req, out, None)

    # ------------------------------------------------------------------------------------------------------------
    # uploads
    # ------------------------------------------------------------------------------------------------------------
    def _lfs_patterns(self, tree: dict) -> list[str]:
        entry = tree.get(".gitattributes")
        text = DEFAULT_GITATTRIBUTES
        if entry is not None:
            try:
                text = self.store.file_bytes(entry).decode("utf-8", "replace")
            except OSError:
                pass
        patterns = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    @staticmethod
    def _matches_lfs(path: str, patterns: list[str]) -> bool:
        base = path.rsplit("/", 1)[-1]
        for pattern in patterns:
            if "/" in pattern:
                if fnmatch.fnmatch(path, pattern.replace("**/", "*")):
                    return True
            elif fnmatch.fnmatch(base, pattern):
                return True
        return False

    def _preupload(self, req: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        meta = self._writable(req, repo_type, repo_id)
        sha = self._resolve_or_404(repo_type, repo_id, meta, rev)
        tree = self.store.read_commit(repo_type, repo_id, sha)["tree"]
        patterns = self._lfs_patterns(tree)
        data = req.json()
        out = []
        for f in _as_list(data.get("files")):
            path = str(f.get("path"))
            size = int(f.get("size") or 0)
            try:
                sample = base64.b64decode(f.get("sample") or "")
            except ValueError:
                sample = b""
            lfs = size > 0 and (size >= self.lfs_threshold or self._matches_lfs(path, patterns) or b"\x00" in sample)
            existing = tree.get(path)
            oid = None
            if existing is not None:
                oid = existing["sha256"] if existing["lfs"] else existing["oid"]
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        return _json_response({"files": out, "commitOid": sha})

    def _upload_sig(self, oid: str) -> str:
        return hmac.new(self._secret, oid.encode(), hashlib.sha256).hexdigest()[:32]

    def _lfs_batch(self, req: _Request, repo_type: str, repo_id: str) -> _Response:
        self._writable(req, repo_type, repo_id)
        data = req.json()
        if data.get("operation", "upload") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported")
        objects = []
        for obj in _as_list(data.get("objects")):
            oid, size = str(obj.get("oid")), int(obj.get("size") or 0)
            item = {"oid": oid, "size": size, "authenticated": True}
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                item["error"] = {"code": 422, "message": "Invalid oid"}
            elif not self.store.has_blob(oid):
                item["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-objects/{oid}?size={size}&sig={self._upload_sig(oid)}",
                               "header": {}},
                    "verify": {"href": f"{self.url}/lfs-verify/{oid}", "header": {}},
                }
            objects.append(item)
        return _json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                              headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, req: _Request, oid: str) -> _Response:
        # No Authorization on this URL (like a signed storage URL): the signature comes from the batch answer.
        handler = req.handler
        if not hmac.compare_digest(req.q("sig") or "", self._upload_sig(oid)):
            for _ in handler._iter_body():
                pass
            raise HubError(403, "Invalid upload signature")
        tmp = self.root / "tmp" / f"upload-{oid}-{secrets.token_hex(4)}"
        h = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as f:
                for data in (handler._iter_body() if not req.body else [req.body]):
                    h.update(data)
                    size += len(data)
                    f.write(data)
            expected = req.q("size")
            if h.hexdigest() != oid or (expected is not None and int(expected) != size):
                raise HubError(400, f"Uploaded content does not match oid {oid} (got {h.hexdigest()}, {size} bytes)")
            self.store.put_file(tmp, oid)
        finally:
            if tmp.exists():
                tmp.unlink()
        return _Response(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, req: _Request, oid: str) -> _Response:
        data = req.json()
        if not self.store.has_blob(oid):
            raise HubError(404, f"LFS object {oid} not found")
        if "size" in data and int(data["size"]) != self.store.blob_path(oid).stat().st_size:
            raise HubError(400, f"LFS object {oid} has a different size")
        return _json_response({"message": "Object verified"})

    def _commit(self, req: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        user, _ = self._user(req)
        lines = []
        for raw in req.body.splitlines():
            if raw.strip():
                try:
                    lines.append(json.loads(raw))
                except ValueError as err:
                    raise HubError(400, f"Invalid NDJSON line: {err}") from err
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0].get("value") or {}
        create_pr = _truthy(req.q("create_pr"))
        with self.store.lock:
            meta = self._writable(req, repo_type, repo_id)
            pr_match = re.fullmatch(r"refs/pr/(\d+)", rev)
            if create_pr:
                base = self._resolve_or_404(repo_type, repo_id, meta, rev)
            elif rev in meta.get("branches", {}):
                base = meta["branches"][rev]
            elif pr_match and pr_match.group(1) in meta.get("prs", {}):
                base = meta["prs"][pr_match.group(1)]["head"]
            elif self.store.resolve(repo_type, repo_id, meta, rev) is not None:
                raise HubError(400, f"Cannot commit to {rev}: not a branch or a pull request ref")
            else:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent and parent != base:
                raise HubError(412, f"A commit has happened since. Please refresh and try again. "
                                    f"(parentCommit {parent} is not the head {base} of {rev})")
            tree = dict(self.store.read_commit(repo_type, repo_id, base)["tree"])
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value") or {}
                path = str(value.get("path") or "").strip("/")
                if key in ("file", "lfsFile", "deletedFile", "deletedFolder") and not path and key != "deletedFolder":
                    raise HubError(400, f"Missing path in '{key}' operation")
                if key == "file":
                    if value.get("encoding", "base64") == "base64":
                        try:
                            content = base64.b64decode(value.get("content") or "", validate=False)
                        except ValueError as err:
                            raise HubError(400, f"Invalid base64 content for {path}") from err
                    else:
                        content = str(value.get("content") or "").encode()
                    sha256 = self.store.put_bytes(content)
                    tree[path] = self.store.make_entry(sha256, len(content), False, content)
                elif key == "lfsFile":
                    oid = str(value.get("oid") or "")
                    if not self.store.has_blob(oid):
                        raise HubError(422, f"LFS object {oid} for {path} was not uploaded", "EntryNotFound")
                    size = self.store.blob_path(oid).stat().st_size
                    tree[path] = self.store.make_entry(oid, size, True)
                elif key == "deletedFile":
                    if path not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path]
                elif key == "deletedFolder":
                    prefix = path + "/" if path else ""
                    doomed = [p for p in tree if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
                else:
                    raise HubError(400, f"Unknown commit operation: {key}")
            title = str(header.get("summary") or "Update")
            commit = self.store.write_commit(repo_type, repo_id, [base], tree, title,
                                             str(header.get("description") or ""), user or self.username)
            pr_url = None
            if create_pr:
                num = int(meta.get("nextDiscussion", 1))
                meta["nextDiscussion"] = num + 1
                meta.setdefault("prs", {})[str(num)] = {"head": commit["id"], "base": rev, "title": title,
                                                        "status": "open", "author": user or self.username}
                pr_url = f"{self._repo_url(repo_type, repo_id)}/discussions/{num}"
            elif pr_match:
                meta["prs"][pr_match.group(1)]["head"] = commit["id"]
            else:
                meta["branches"][rev] = commit["id"]
            self.store.save_meta(repo_type, repo_id, meta)
        return _json_response({
            "success": True, "commitOid": commit["id"], "commitMessage": title,
            "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{commit['id']}",
            "pullRequestUrl": pr_url, "hookOutput": "",
        })

    def _branch(self, req: _Request, repo_type: str, repo_id: str, branch: str) -> _Response:
        data = req.json() if req.method == "POST" else {}
        with self.store.lock:
            meta = self._writable(req, repo_type, repo_id)
            if req.method == "DELETE":
                if branch not in meta["branches"] or branch == "main":
                    raise HubError(404 if branch != "main" else 403, f"Cannot delete branch {branch}",
                                   "RevisionNotFound" if branch != "main" else None)
                del meta["branches"][branch]
            else:
                if branch in meta["branches"]:
                    raise HubError(409, f"Branch {branch} already exists")
                start = self._resolve_or_404(repo_type, repo_id, meta, data.get("startingPoint") or "main")
                meta["branches"][branch] = start
            self.store.save_meta(repo_type, repo_id, meta)
        return _json_response({})

    def _tag(self, req: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        data = req.json() if req.method == "POST" else {}
        with self.store.lock:
            meta = self._writable(req, repo_type, repo_id)
            meta.setdefault("tags", {})
            if req.method == "DELETE":
                if rev not in meta["tags"]:
                    raise HubError(404, f"Tag {rev} not found", "RevisionNotFound")
                del meta["tags"][rev]
            else:
                tag = data.get("tag")
                if not tag:
                    raise HubError(400, "Missing 'tag'")
                if tag in meta["tags"]:
                    raise HubError(409, f"Tag {tag} already exists")
                meta["tags"][tag] = self._resolve_or_404(repo_type, repo_id, meta, rev)
            self.store.save_meta(repo_type, repo_id, meta)
        return _json_response({})

    # ------------------------------------------------------------------------------------------------------------
    # downloads
    # ------------------------------------------------------------------------------------------------------------
    def _resolve_file(self, req: _Request, repo_type: str, repo_id: str, rev: str, path: str) -> _Response:
        meta = self._downloadable(req, repo_type, repo_id)
        sha = self._resolve_or_404(repo_type, repo_id, meta, rev)
        tree = self.store.read_commit(repo_type, repo_id, sha)["tree"]
        entry = tree.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        size = entry["size"]
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {
            "X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}";',
            "Cache-Control": "private, max-age=0",
        }
        if entry["lfs"]:
            headers["X-Linked-Size"] = str(size)
            headers["X-Linked-Etag"] = f'"{entry["sha256"]}"'
        blob = self.store.blob_path(entry["sha256"])
        rng = req.headers.get("Range")
        if rng:
            m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                    end = size - 1
                end = min(end, size - 1)
                if start >= size or start > end:
                    raise HubError(416, "Requested range not satisfiable",
                                   headers={"Content-Range": f"bytes */{size}", "X-Repo-Commit": sha})
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                headers["Content-Length"] = str(end - start + 1)
                return _Response(206, None, headers, file=(blob, start, end - start + 1))
        headers["Content-Length"] = str(size)
        return _Response(200, None, headers, file=(blob, 0, size))

    # ------------------------------------------------------------------------------------------------------------
    # inference
    # ------------------------------------------------------------------------------------------------------------
    def _inference_call(self, req: _Request, predict_fn: Callable) -> _Response:
        if self.token is not None:
            user, _ = self._user(req)
            if user is None:
                raise HubError(401, "Authorization header is required for this endpoint")
        from PIL import Image

        ctype = (req.headers.get("Content-Type") or "").lower()
        parameters: dict = {}
        raw = req.body
        if "json" in ctype or raw[:1] == b"{":
            data = req.json()
            parameters = data.get("parameters") or {}
            inputs = data.get("inputs")
            if not isinstance(inputs, str):
                raise HubError(400, "'inputs' must be a base64-encoded image")
            try:
                raw = base64.b64decode(inputs.split(",", 1)[-1] if inputs.startswith("data:") else inputs)
            except ValueError as err:
                raise HubError(400, f"Invalid base64 image: {err}") from err
        try:
            image = Image.open(io.BytesIO(raw))
            image.load()
        except Exception as err:
            raise HubError(400, f"Could not read the image: {err}") from err
        top_k = parameters.get("top_k")
        top_k = 5 if top_k is None else int(top_k)
        kwargs = {}
        fta = parameters.get("function_to_apply")
        if fta is not None:
            try:
                sig = inspect.signature(predict_fn)
                if "function_to_apply" in sig.parameters or any(
                        p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                    kwargs["function_to_apply"] = fta
            except (TypeError, ValueError):
                pass
        preds = list(predict_fn(image, top_k, **kwargs))
        preds = [{"label": str(p["label"]), "score": float(p["score"])} for p in preds]
        preds.sort(key=lambda p: p["score"], reverse=True)
        return _json_response(preds[:top_k] if top_k > 0 else preds)


# ----------------------------------------------------------------------------------------------------------------
def serve_main(argv: list[str] | None = None) -> None:
    """`python -m k2v_hub.testing.hub_server --root DIR --port N [--token T]`: serve in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m k2v_hub.testing.hub_server", description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="storage folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="require this bearer token for writes and private repos")
    parser.add_argument("--username", default="user")
    args = parser.parse_args(argv)
    server = HubServer(args.root, host=args.host, port=args.port, token=args.token, username=args.username)
    server.start()
    print(f"Hub server on {server.url} (root {Path(args.root).resolve()}); use HF_ENDPOINT={server.url} "
          "HF_HUB_DISABLE_XET=1. Ctrl-C stops it.", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve_main()
