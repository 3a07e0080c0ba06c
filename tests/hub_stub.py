"""A loopback Hugging Face Hub: the endpoints `huggingface_hub` calls to create a dataset repo,
read path info and trees, and commit files over the LFS protocol (read from huggingface_hub 2.4's source:
`hf_api.create_repo`, `get_paths_info`, `list_repo_tree`, `_validate_yaml`, `_commit_api._fetch_upload_modes`,
`lfs.post_lfs_batch_info` / `lfs_upload` (basic transfer) and `_commit_api._send_commit`).

State lives in memory: repos -> {path: bytes}, and an LFS object store by sha256. Every request
is recorded (method, path, Authorization header) so tests can check what was sent. Xet storage
is not implemented: tests disable it (`constants.HF_HUB_DISABLE_XET`) so uploads use LFS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".parquet", ".png", ".mp4", ".arrow")
READ_ONLY = {("POST", "paths-info")}  # POSTs that change nothing


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None

    @property
    def is_write(self) -> bool:
        if self.method in ("GET", "HEAD"):
            return False
        return not any(self.method == m and f"/{kind}/" in self.path for m, kind in READ_ONLY)


@dataclass
class HubState:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # "datasets/ns/name" -> files
    private: dict[str, bool] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content
    lfs_paths: dict[str, set[str]] = field(default_factory=dict)  # repo -> paths stored as LFS
    requests: list[Request] = field(default_factory=list)
    commits: int = 0
    fail_commit_numbers: set[int] = field(default_factory=set)  # 1-based commit attempts to fail
    commit_attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet test output
        pass

    # --- plumbing -------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload=None, headers: dict[str, str] | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self, code: str = "RepoNotFound") -> None:
        self._send(404, {"error": "Repository not found"}, {"X-Error-Code": code,
                                                            "X-Error-Message": "Repository not found"})

    def _record(self) -> None:
        with self.state.lock:
            self.state.requests.append(Request(self.command, urlparse(self.path).path,
                                               self.headers.get("Authorization")))

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # --- routes -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._record()
        self._body()
        url = urlparse(self.path)
        match = re.fullmatch(r"/api/(datasets/[^/]+/[^/]+)/tree/([^/]+)(?:/(.+))?", url.path)
        if not match:
            self._send(404, {"error": "not implemented in the stub"})
            return
        repo, revision, folder = match.group(1), match.group(2), unquote(match.group(3) or "")
        files = self._repo(repo, revision)
        if files is None:
            return
        recursive = parse_qs(url.query).get("recursive", ["False"])[0].lower() == "true"
        prefix = f"{folder}/" if folder else ""
        inside = [p for p in sorted(files) if p.startswith(prefix)]
        if folder and not inside:
            self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        out = []
        for path in inside:
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                continue  # (folders are not listed: the upload only reads files)
            out.append(self._file_entry(repo, path))
        self._send(200, out)

    def _file_entry(self, repo: str, path: str) -> dict:
        data = self.state.repos[repo][path]
        entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
        if path in self.state.lfs_paths[repo]:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def do_PUT(self) -> None:
        self._record()
        path = urlparse(self.path).path
        data = self._body()
        match = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path)
        if not match or hashlib.sha256(data).hexdigest() != match.group(1):
            self._send(400, {"error": "bad LFS upload"})
            return
        with self.state.lock:
            self.state.lfs[match.group(1)] = data
        self._send(200, {})

    def do_POST(self) -> None:
        self._record()
        url = urlparse(self.path)
        path = unquote(url.path)
        body = self._body()
        routes = [
            (r"/api/repos/create", self._create_repo),
            (r"/api/validate-yaml", lambda body: self._send(200, {"errors": [], "warnings": []})),
            (r"/api/(datasets/[^/]+/[^/]+)/paths-info/([^/]+)", self._paths_info),
            (r"/api/(datasets/[^/]+/[^/]+)/preupload/([^/]+)", self._preupload),
            (r"/api/(datasets/[^/]+/[^/]+)/commit/([^/]+)", self._commit),
            (r"/(datasets/[^/]+/[^/]+)\.git/info/lfs/objects/batch", self._lfs_batch),
        ]
        for pattern, route in routes:
            match = re.fullmatch(pattern, path)
            if match:
                route(body, *match.groups())
                return
        self._send(404, {"error": f"no route {path}"})

    def _create_repo(self, body: bytes) -> None:
        data = json.loads(body)
        repo = f"{data['type']}s/{data['organization']}/{data['name']}"
        with self.state.lock:
            if repo in self.state.repos:
                # The Hub answers a conflict with the existing repo's url (create_repo reads it).
                self._send(409, {"error": "You already created this dataset repo", "url": f"{self.base}/{repo}"})
                return
            self.state.repos[repo] = {}
            self.state.private[repo] = data.get("visibility") == "private"
            self.state.lfs_paths[repo] = set()
        self._send(200, {"url": f"{self.base}/{repo}"})

    def _repo(self, repo: str, revision: str) -> dict[str, bytes] | None:
        if repo not in self.state.repos:
            self._not_found()
            return None
        if revision != "main":
            self._not_found("RevisionNotFound")
            return None
        return self.state.repos[repo]

    def _paths_info(self, body: bytes, repo: str, revision: str) -> None:
        files = self._repo(repo, revision)
        if files is None:
            return
        asked = parse_qs(body.decode()).get("paths", [])
        self._send(200, [self._file_entry(repo, path) for path in asked if path in files])

    def _preupload(self, body: bytes, repo: str, revision: str) -> None:
        files = self._repo(repo, revision)
        if files is None:
            return
        out = []
        for f in json.loads(body)["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 * 2**20
            existing = files.get(f["path"])
            oid = None
            if existing is not None:
                oid = hashlib.sha256(existing).hexdigest() if lfs else git_blob_sha1(existing)
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        self._send(200, {"files": out})

    def _lfs_batch(self, body: bytes, repo: str) -> None:
        if repo not in self.state.repos:
            self._not_found()
            return
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs:  # already stored: no actions, nothing to send
                entry["actions"] = {"upload": {"href": f"{self.base}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _commit(self, body: bytes, repo: str, revision: str) -> None:
        with self.state.lock:
            self.state.commit_attempts += 1
            attempt = self.state.commit_attempts
        if attempt in self.state.fail_commit_numbers:
            # Echoes the credentials, as a careless proxy might: the client must scrub them.
            auth = self.headers.get("Authorization")
            self._send(500, {"error": f"stub: commit failed on purpose (request had {auth})"})
            return
        files = self._repo(repo, revision)
        if files is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        staged: dict[str, bytes] = {}
        deleted: set[str] = set()
        lfs_paths = set()
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.state.lfs:
                    self._send(400, {"error": f"LFS object {value['oid']} was never uploaded"})
                    return
                staged[value["path"]] = self.state.lfs[value["oid"]]
                lfs_paths.add(value["path"])
            elif line["key"] == "deletedFile":
                if value["path"] not in files:
                    self._send(404, {"error": "A file with this name doesn't exist"},
                               {"X-Error-Code": "EntryNotFound"})
                    return
                deleted.add(value["path"])
        with self.state.lock:
            files.update(staged)
            for path in deleted:
                del files[path]
            self.state.lfs_paths[repo] = (self.state.lfs_paths[repo] - set(staged)) | lfs_paths
            self.state.commits += 1
            oid = hashlib.sha1(f"{repo}{self.state.commits}".encode()).hexdigest()
        self._send(200, {"commitUrl": f"{self.base}/{repo}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None})


class HubStub:
    """`with HubStub() as hub:` a running loopback Hub at `hub.endpoint`."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (HubHandler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def files(self, repo_id: str) -> dict[str, bytes]:
        return self.state.repos.get(f"datasets/{repo_id}", {})

    def writes(self) -> list[Request]:
        return [r for r in self.state.requests if r.is_write]

    def __enter__(self) -> HubStub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
