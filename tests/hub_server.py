# A loopback fake of the Hugging Face Hub for tests: in-memory model and dataset repos served in the hub's URL layout
# (repo info, tree, paths-info, resolve with ETag / X-Repo-Commit / ranges), so the real client runs unmodified.
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DATE = "2024-01-01T00:00:00.000Z"


def git_blob_id(data: bytes) -> str:
    """The git object id the hub reports as a file's `oid` (and as the ETag of a non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    repo_type: str  # "model" | "dataset"
    files: dict[str, bytes]
    sha: str = ""

    def __post_init__(self):
        if not self.sha:
            digest = hashlib.sha1(self.repo_id.encode())
            for path in sorted(self.files):
                digest.update(path.encode() + b"\0" + git_blob_id(self.files[path]).encode())
            self.sha = digest.hexdigest()

    @property
    def card_data(self) -> dict | None:
        """The README's YAML front matter, which the hub returns as `cardData`."""
        text = self.files.get("README.md", b"").decode()
        if not text.startswith("---\n") or "\n---" not in text[3:]:
            return None
        return yaml.safe_load(text[4: text.index("\n---", 3)])

    def entry(self, path: str) -> dict | None:
        if path in self.files:
            data = self.files[path]
            return {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path,
                    "lastCommit": {"id": self.sha, "title": "upload", "date": DATE}}
        if any(f.startswith(path + "/") for f in self.files):
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path,
                    "lastCommit": {"id": self.sha, "title": "upload", "date": DATE}}
        return None

    def tree(self, folder: str, recursive: bool) -> list[dict]:
        prefix = folder + "/" if folder else ""
        names: set[str] = set()
        for path in self.files:
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):].split("/")
            names.update(prefix + "/".join(rest[: i + 1]) for i in range(len(rest) if recursive else 1))
        return [self.entry(name) for name in sorted(names)]


@dataclass
class FakeHub:
    """Serve `repos` on 127.0.0.1 (random port) while used as a context manager; `requests` logs (method, path)."""

    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def add(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> Repo:
        repo = Repo(repo_id, repo_type, dict(files))
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def add_folder(self, repo_id: str, folder: str | Path, repo_type: str = "model") -> Repo:
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add(repo_id, files, repo_type)

    @property
    def url(self) -> str:
        assert self._server is not None, "the server is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def downloads(self) -> list[str]:
        """Paths of file contents served (GET on resolve URLs), in order."""
        return [p for m, p in self.requests if m == "GET" and "/resolve/" in p]

    def __enter__(self) -> "FakeHub":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- routing ---------------------------------------------------------------------------------------------------

    def find(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # a stuck client cannot hold a server thread for long

        def log_message(self, *args) -> None:  # quiet: pytest shows failures, not access logs
            pass

        def do_GET(self) -> None:
            self._route("GET")

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.requests.append((method, path))
            query = parse_qs(url.query)
            parts = url.path.strip("/").split("/")  # still quoted: a revision may hold an encoded '/'
            if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in ("models", "datasets"):
                repo = hub.find(parts[1][:-1], f"{parts[2]}/{parts[3]}")
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
                return self._api(method, repo, [unquote(p) for p in parts[4:]], query)
            repo_type = "model"
            if parts[:1] == ["datasets"]:
                repo_type, parts = "dataset", parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve":
                repo = hub.find(repo_type, f"{parts[0]}/{parts[1]}")
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
                return self._resolve(method, repo, unquote(parts[3]), unquote("/".join(parts[4:])))
            self._error(404, None, f"no route for {path}")

        # -- /api/... ------------------------------------------------------------------------------------------

        def _api(self, method: str, repo: Repo, rest: list[str], query: dict) -> None:
            if not rest or rest[0] == "revision":
                if rest and not self._revision_ok(repo, rest[1]):
                    return
                blobs = query.get("blobs", [""])[0].lower() == "true"
                siblings = [{"rfilename": p, **({"size": len(d), "blobId": git_blob_id(d)} if blobs else {})}
                            for p, d in sorted(repo.files.items())]
                info = {"id": repo.repo_id, "sha": repo.sha, "private": False, "disabled": False, "gated": False,
                        "lastModified": DATE, "tags": [], "siblings": siblings}
                if repo.card_data is not None:
                    info["cardData"] = repo.card_data
                return self._json(info)
            if rest[0] == "tree" and len(rest) >= 2:
                if not self._revision_ok(repo, rest[1]):
                    return
                folder = "/".join(rest[2:])
                if folder and repo.entry(folder) is None:
                    return self._error(404, "EntryNotFound", f"{folder} does not exist")
                recursive = query.get("recursive", [""])[0].lower() == "true"
                return self._json(repo.tree(folder, recursive))
            if rest[0] == "paths-info" and len(rest) >= 2 and method == "POST":
                if not self._revision_ok(repo, rest[1]):
                    return
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                paths = form.get("paths", [])
                return self._json([e for e in (repo.entry(p.strip("/")) for p in paths) if e is not None])
            self._error(404, None, f"unsupported api call {'/'.join(rest)}")

        def _revision_ok(self, repo: Repo, revision: str) -> bool:
            if revision in ("main", repo.sha):
                return True
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return False

        # -- /{repo}/resolve/{revision}/{file} -----------------------------------------------------------------

        def _resolve(self, method: str, repo: Repo, revision: str, filename: str) -> None:
            if not self._revision_ok(repo, revision):
                return
            data = repo.files.get(filename)
            if data is None:
                return self._error(404, "EntryNotFound", f"{filename} not found", commit=repo.sha)
            status, body, extra = 200, data, {}
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes="):].partition("-")
                start = int(first) if first else max(0, len(data) - int(last))
                end = int(last) if first and last else len(data) - 1
                end = min(end, len(data) - 1)
                if start >= len(data):
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, method)
                status, body = 206, data[start: end + 1]
                extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            headers = {"ETag": f'"{git_blob_id(data)}"', "X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream", **extra}
            self._send(status, body, headers, method)

        # -- responses -----------------------------------------------------------------------------------------

        def _json(self, payload) -> None:
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, "GET")

        def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(status, json.dumps({"error": message}).encode(), headers, self.command)

        def _send(self, status: int, body: bytes, headers: dict, method: str) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

    return Handler
