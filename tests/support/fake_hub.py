"""A loopback Hugging Face Hub for tests: a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) in a thread,
speaking the endpoints that ``Dataset.push_to_hub`` and ``HfApi.upload_file`` call, with the files of every
commit kept in memory.

Endpoints (read off huggingface_hub 2.4 / datasets 5.2 and checked against the request log, ``hub.requests``):

- ``GET /api/whoami-v2``; ``POST /api/repos/create``; ``POST /api/validate-yaml``
- ``GET /api/{type}s/{repo}`` and ``.../revision/{rev}`` (repo info: ``sha``, ``siblings``)
- ``POST /api/{type}s/{repo}/preupload/{rev}``: ``.parquet``/``.arrow`` and files over 10 MB are ``lfs``, the
  rest ``regular`` (base64 in the commit)
- ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` (basic transfer) and ``PUT /__lfs/{oid}`` (the upload href)
- ``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON: header, file, lfsFile, deletedFile, deletedFolder;
  ``parentCommit`` is enforced with 412, as the Hub does)
- ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]``, ``POST .../paths-info/{rev}``
- ``GET``/``HEAD /{prefix}{repo}/resolve/{rev}/{path}`` (with ``Range``)

Xet is not spoken (``.../xet-write-token/...`` answers 501): huggingface_hub uploads through Xet whenever the
``hf_xet`` package is importable, so clients of this server must run with ``HF_HUB_DISABLE_XET=1`` (the
documented switch), which sends them down the LFS path above.

Auth: every request must carry ``Authorization: Bearer <token>`` with a token in ``hub.tokens``, else 401.
Faults: ``hub.fail_next(status, count, match, after)`` answers ``status`` to ``count`` requests whose
``"METHOD /path"`` contains ``match``, after letting ``after`` of them through. huggingface_hub retries 5xx
on preupload, LFS batch and upload (about 30 s of backoff) but not on the commit endpoint: aim a 5xx test at
``match="/commit/"`` to keep it fast. ``hub.stall_next(count, match)``: accept the request and never answer
(a silent server; released when the hub closes). ``hub.reply_next(body, count, match)``: answer 200 with
``body`` (JSON) instead, e.g. ``{}`` for a reply that lacks every field. ``hub.trickle_next(interval, count,
match, body_only)``: send the reply one byte per ``interval`` seconds (the status line and headers too, unless
``body_only``). ``hub.huge_next(size, count, match)``: answer 200 with ``size`` bytes and no Content-Length
(the body ends when the connection closes).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors")
LFS_MIN_SIZE = 10 * 1024 * 1024
_PREFIX = {"dataset": "datasets/", "space": "spaces/", "model": ""}
_TYPE_OF_PREFIX = {"datasets/": "dataset", "spaces/": "space", None: "model"}
_API_REPO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?$")
_LFS_BATCH = re.compile(r"^/(datasets/|spaces/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_RESOLVE = re.compile(r"^/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    status: int
    body: bytes = b""


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    # oid -> {path: bytes}; heads are oids, history keeps every commit so pinned revisions resolve.
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    lfs_paths: dict[str, set[str]] = field(default_factory=dict)
    head: str = ""

    def files(self, rev: str = "main") -> dict[str, bytes] | None:
        return self.commits.get(self.head if rev == "main" else rev)


class _RawReply(Exception):
    """A fault the handler writes itself (trickled or endless replies)."""

    def __init__(self, fault: tuple):
        super().__init__(fault[0])
        self.fault = fault


class _HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.error_code = status, error_code


class FakeHub:
    def __init__(self, tokens: tuple[str, ...] = ("hf_test_token",), user: str = "tester"):
        self.tokens = set(tokens)
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[Recorded] = []
        self._faults: list[list] = []  # [status | "stall" | ("reply", body), remaining, match, to skip first]
        self._lock = threading.Lock()
        self._released = threading.Event()  # ends stalled requests
        self._server: ThreadingHTTPServer | None = None

    # ---- control -------------------------------------------------------------------------------------
    def __enter__(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, status: int, count: int = 1, match: str = "", after: int = 0) -> None:
        """Answer ``status`` to ``count`` requests whose "METHOD /path" contains ``match``, once ``after`` such
        requests have been served normally."""
        with self._lock:
            self._faults.append([status, count, match, after])

    def stall_next(self, count: int = 1, match: str = "", after: int = 0) -> None:
        """Never answer ``count`` matching requests (until the hub closes): a silent server."""
        with self._lock:
            self._faults.append(["stall", count, match, after])

    def reply_next(self, body, count: int = 1, match: str = "", after: int = 0) -> None:
        """Answer ``count`` matching requests with 200 and the JSON ``body`` instead of the real reply."""
        with self._lock:
            self._faults.append([("reply", json.dumps(body).encode()), count, match, after])

    def trickle_next(self, interval: float, count: int = 1, match: str = "", body_only: bool = False) -> None:
        """Send ``count`` matching replies one byte per ``interval`` seconds: a server that is never silent
        long enough for a per-read timeout, yet never finishes."""
        with self._lock:
            self._faults.append([("trickle", interval, body_only), count, match, 0])

    def huge_next(self, size: int, count: int = 1, match: str = "") -> None:
        """Answer ``count`` matching requests with 200 and ``size`` bytes, without a Content-Length."""
        with self._lock:
            self._faults.append([("huge", size), count, match, 0])

    def files(self, repo_id: str, repo_type: str = "dataset") -> dict[str, bytes]:
        repo = self.repos.get((repo_type, repo_id))
        return dict(repo.files() or {}) if repo else {}

    # ---- dispatch ------------------------------------------------------------------------------------
    def _take_fault(self, line: str):
        with self._lock:
            for fault in self._faults:
                if fault[1] > 0 and fault[2] in line:
                    if fault[3] > 0:
                        fault[3] -= 1
                        continue
                    fault[1] -= 1
                    return fault[0]
        return None

    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, bytes]:
        status = self._take_fault(f"{method} {path}")
        if status == "stall":
            self._released.wait(300)  # bounded, so a forgotten hub cannot hang a test run for ever
            return 504, {}, b"{}"
        if isinstance(status, tuple) and status[0] in ("trickle", "huge"):
            raise _RawReply(status)
        if isinstance(status, tuple):
            return 200, {"Content-Type": "application/json"}, status[1]
        if status is not None:
            return status, {}, json.dumps({"error": f"injected {status}"}).encode()
        if path == "/api/agent-harnesses":  # public registry huggingface_hub fetches for its user agent
            return _json({"standardEnvVars": [], "harnesses": {}})
        if not path.startswith("/__lfs/"):  # upload hrefs are pre-signed, like S3 URLs
            auth = headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[len("Bearer ") :] not in self.tokens:
                return 401, {}, json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
        if path == "/api/whoami-v2":
            return _json({"type": "user", "name": self.user, "auth": {"accessToken": {"role": "write"}}})
        if path == "/api/validate-yaml":
            return _json({"errors": [], "warnings": []})
        if path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        if path.startswith("/__lfs/"):
            return self._lfs_put(path.rsplit("/", 1)[1], body)
        if m := _LFS_BATCH.match(path):
            return self._lfs_batch(self._repo(_TYPE_OF_PREFIX[m.group(1)], m.group(2)), json.loads(body))
        if m := _RESOLVE.match(path):
            repo = self._repo(_TYPE_OF_PREFIX[m.group(1)], m.group(2))
            return self._resolve(repo, unquote(m.group(3)), unquote(m.group(4)), method, headers)
        if m := _API_REPO.match(path):
            repo = self._repo(m.group(1)[:-1], m.group(2))
            rest = m.group(3) or ""
            action, _, tail = rest.partition("/")
            if action in ("", "revision"):
                return self._repo_info(repo, unquote(tail) if action else "main")
            rev, _, sub = tail.partition("/")
            rev = unquote(rev)
            if action == "preupload":
                return self._preupload(json.loads(body))
            if action == "commit":
                return self._commit(repo, rev, body)
            if action == "tree":
                return self._tree(repo, rev, unquote(sub), query.get("recursive", ["False"])[0].lower() == "true")
            if action == "paths-info":
                return self._paths_info(repo, rev, body, headers)
            if action == "xet-write-token":
                raise _HubError(501, "this fake Hub speaks LFS only: set HF_HUB_DISABLE_XET=1")
        raise _HubError(404, f"fake Hub: no route for {method} {path}")

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _files_at(self, repo: Repo, rev: str) -> dict[str, bytes]:
        files = repo.files(rev)
        if files is None:
            raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return files

    # ---- endpoints -----------------------------------------------------------------------------------
    def _create_repo(self, payload: dict) -> tuple[int, dict, bytes]:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise _HubError(409, "You already created this repo")
            repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private")
            first = _oid(f"init {repo_type} {repo_id}".encode())
            repo.commits[first] = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}
            repo.head = first
            self.repos[(repo_type, repo_id)] = repo
        return _json({"url": f"{self.endpoint}/{_PREFIX[repo_type]}{repo_id}", "name": repo_id, "id": repo_id})

    def _repo_info(self, repo: Repo, rev: str) -> tuple[int, dict, bytes]:
        files = self._files_at(repo, rev)
        sha = repo.head if rev == "main" else rev
        return _json(
            {
                "id": repo.repo_id,
                "sha": sha,
                "private": repo.private,
                "author": repo.repo_id.split("/")[0],
                "siblings": [{"rfilename": p} for p in sorted(files)],
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "disabled": False,
                "gated": False,
            }
        )

    def _preupload(self, payload: dict) -> tuple[int, dict, bytes]:
        out = [
            {
                "path": f["path"],
                "shouldIgnore": False,
                "oid": None,
                "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE else "regular",
            }
            for f in payload["files"]
        ]
        return _json({"files": out, "commitOid": None})

    def _lfs_batch(self, repo: Repo, payload: dict) -> tuple[int, dict, bytes]:
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/__lfs/{obj['oid']}", "header": {}}}
            objects.append(entry)
        return (
            200,
            {"Content-Type": "application/vnd.git-lfs+json"},
            json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode(),
        )

    def _lfs_put(self, oid: str, body: bytes) -> tuple[int, dict, bytes]:
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HubError(400, "uploaded content does not match its sha256")
        with self._lock:
            self.lfs_objects[oid] = body
        return 200, {}, b""

    def _commit(self, repo: Repo, rev: str, body: bytes) -> tuple[int, dict, bytes]:
        if rev != "main":
            raise _HubError(400, "fake Hub: commits go to main only")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
        with self._lock:
            if header.get("parentCommit") and not repo.head.startswith(header["parentCommit"]):
                raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commits[repo.head])
            lfs_paths = set(repo.lfs_paths.get(repo.head, set()))
            for item in lines[1:]:
                value = item["value"]
                if item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                    lfs_paths.discard(value["path"])
                elif item["key"] == "lfsFile":
                    if value["oid"] not in self.lfs_objects:
                        raise _HubError(400, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = self.lfs_objects[value["oid"]]
                    lfs_paths.add(value["path"])
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
                elif item["key"] == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: b for p, b in files.items() if not p.startswith(prefix)}
                else:
                    raise _HubError(400, f"fake Hub: unsupported commit operation {item['key']}")
            oid = _oid(repo.head.encode() + body)
            repo.commits[oid] = files
            repo.lfs_paths[oid] = lfs_paths
            repo.head = oid
        url = f"{self.endpoint}/{_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}"
        return _json({"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    def _entry(self, repo: Repo, rev: str, files: dict[str, bytes], path: str) -> dict | None:
        if path in files:
            entry = {"type": "file", "path": path, "size": len(files[path]), "oid": _git_blob_oid(files[path])}
            if path in repo.lfs_paths.get(repo.head if rev == "main" else rev, set()):
                entry["lfs"] = {
                    "oid": hashlib.sha256(files[path]).hexdigest(),
                    "size": len(files[path]),
                    "pointerSize": 134,
                }
            return entry
        if any(p.startswith(path + "/") for p in files):
            return {"type": "directory", "path": path, "oid": _oid(path.encode())}
        return None

    def _tree(self, repo: Repo, rev: str, path: str, recursive: bool) -> tuple[int, dict, bytes]:
        files = self._files_at(repo, rev)
        path = path.strip("/")
        prefix = path + "/" if path else ""
        if path and path in files or (path and not any(p.startswith(prefix) for p in files)):
            raise _HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        names: set[str] = set()
        for p in files:
            if p.startswith(prefix):
                parts = p[len(prefix) :].split("/")
                names.update(
                    prefix + "/".join(parts[:i]) for i in range(1, len(parts) + 1)
                ) if recursive else names.add(prefix + parts[0])
        return _json([self._entry(repo, rev, files, name) for name in sorted(names)])

    def _paths_info(self, repo: Repo, rev: str, body: bytes, headers) -> tuple[int, dict, bytes]:
        files = self._files_at(repo, rev)
        if "json" in headers.get("Content-Type", ""):
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        entries = [self._entry(repo, rev, files, p.strip("/")) for p in paths]
        return _json([e for e in entries if e is not None])

    def _resolve(self, repo: Repo, rev: str, path: str, method: str, headers) -> tuple[int, dict, bytes]:
        files = self._files_at(repo, rev)
        if path not in files:
            raise _HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        content = files[path]
        sha = repo.head if rev == "main" else rev
        out = {
            "ETag": f'"{_git_blob_oid(content)}"',
            "X-Repo-Commit": sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        status = 200
        if m := re.match(r"bytes=(\d+)-(\d*)", headers.get("Range", "")):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(content) - 1
            out["Content-Range"] = f"bytes {start}-{min(end, len(content) - 1)}/{len(content)}"
            content, status = content[start : end + 1], 206
        if method == "HEAD":
            out["Content-Length"] = str(len(content))
            return status, out, b""
        return status, out, content


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean; hub.requests is the log
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, headers, payload = self.hub.handle(self.command, url.path, parse_qs(url.query), self.headers, body)
        except _RawReply as raw:
            self.hub.requests.append(Recorded(self.command, url.path, url.query, 200, body))
            self._raw(raw.fault)
            return
        except _HubError as e:
            status, payload = e.status, json.dumps({"error": str(e)}).encode()
            headers = {"X-Error-Code": e.error_code} if e.error_code else {}
            headers["X-Error-Message"] = str(e)
        self.hub.requests.append(Recorded(self.command, url.path, url.query, status, body))
        self.send_response(status)
        headers.setdefault("Content-Type", "application/json")
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _raw(self, fault: tuple) -> None:
        self.close_connection = True
        if fault[0] == "huge":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
            block = b" " * 65536
            with contextlib.suppress(OSError):
                for sent in range(0, fault[1], len(block)):
                    self.wfile.write(block[: fault[1] - sent])
            return
        _, interval, body_only = fault
        payload = json.dumps({"name": "tester", "type": "user"}).encode() * 1000
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        if body_only:
            self.wfile.write(head.encode())
            self.wfile.flush()
        data = payload if body_only else head.encode() + payload
        with contextlib.suppress(OSError):  # the client hangs up at its deadline
            for i in range(len(data)):
                if self.hub._released.wait(interval):
                    return
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve


def _json(obj) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def _oid(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
