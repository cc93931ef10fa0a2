"""A small server that speaks the Hugging Face Hub's HTTP protocol, for the tests (standard library only).

The real `huggingface_hub` / `transformers` clients talk to it unchanged through `HF_ENDPOINT`. It implements the
endpoints those clients use to create a repo, commit files (NDJSON, content inline: every file is "regular"), make a
branch, list a tree, read a repo's info and download files, and it rejects what the Hub rejects that our code could
get wrong (no token, unknown repo / revision / file, malformed commits, stale parent commits, invalid card metadata).

Repos live in a folder: content-addressed blobs (git blob ids), one JSON file per commit, and a refs file replaced
atomically, so a commit becomes visible all at once or not at all.

Fault injection: `server.fail_commits(n)` answers the next n commits with a 500 before applying anything;
`server.download_faults(path, "drop", "fail", ...)` cuts the connection mid-file ("drop") or answers 500 ("fail") on
the next GETs of that file.

    server = HubServer(tmp_path).start()   # http://127.0.0.1:<ephemeral port>
    ...
    server.stop()
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

TOKEN = "hf_test_token_0123456789"  # the one valid token; it belongs to USER
USER = "tester"
NAME_RE = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
BRANCH_RE = re.compile(r"^(?!refs/)(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
PIPELINE_TAGS = {
    "image-classification",
    "image-feature-extraction",
    "feature-extraction",
    "zero-shot-image-classification",
}
# the Hub's licence ids, as its metadata validation lists them in its error message
LICENSES = set(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
    cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
    cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
    cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0
    lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl
    openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
    fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 grok2-community gemma unknown
    other""".split()
)
BASE_MODEL_RELATIONS = {"adapter", "merge", "quantized", "finetune"}


def blob_id(data: bytes) -> str:
    """The git blob id, which the Hub uses as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class RepoStore:
    """Repos under `root/<namespace>/<name>/`: blobs/<oid>, commits/<oid>.json, refs.json, meta.json."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def path(self, repo_id: str) -> Path:
        return self.root / repo_id

    def exists(self, repo_id: str) -> bool:
        return (self.path(repo_id) / "refs.json").exists()

    def meta(self, repo_id: str) -> dict:
        return json.loads((self.path(repo_id) / "meta.json").read_text())

    def refs(self, repo_id: str) -> dict[str, str]:
        return json.loads((self.path(repo_id) / "refs.json").read_text())

    def commit(self, repo_id: str, oid: str) -> dict:
        return json.loads((self.path(repo_id) / "commits" / f"{oid}.json").read_text())

    def blob(self, repo_id: str, oid: str) -> bytes:
        return (self.path(repo_id) / "blobs" / oid).read_bytes()

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def put_blob(self, repo_id: str, data: bytes) -> str:
        oid = blob_id(data)
        target = self.path(repo_id) / "blobs" / oid
        if not target.exists():
            self._write_atomic(target, data)
        return oid

    def put_commit(self, repo_id: str, parent: str | None, tree: dict[str, str], title: str, description: str) -> str:
        record = {
            "parent": parent,
            "tree": dict(sorted(tree.items())),
            "title": title,
            "message": description,
            "date": _now(),
        }
        data = json.dumps(record, sort_keys=True).encode()
        oid = hashlib.sha1(b"commit %d\0" % len(data) + data).hexdigest()
        self._write_atomic(self.path(repo_id) / "commits" / f"{oid}.json", data)
        return oid

    def set_ref(self, repo_id: str, branch: str, oid: str) -> None:
        refs = self.refs(repo_id)
        refs[branch] = oid
        self._write_atomic(self.path(repo_id) / "refs.json", json.dumps(refs).encode())

    def create(self, repo_id: str, private: bool) -> None:
        base = self.path(repo_id)
        (base / "blobs").mkdir(parents=True, exist_ok=True)
        (base / "commits").mkdir(exist_ok=True)
        (base / "meta.json").write_text(json.dumps({"private": private, "createdAt": _now()}))
        tree = {".gitattributes": self.put_blob(repo_id, GITATTRIBUTES)}
        oid = self.put_commit(repo_id, None, tree, "initial commit", "")
        (base / "refs.json").write_text(json.dumps({"main": oid}))  # last: the repo exists once this is written

    def resolve(self, repo_id: str, revision: str) -> str:
        """A branch name or a full commit id of this repo -> commit id; else 404 RevisionNotFound."""
        refs = self.refs(repo_id)
        if revision in refs:
            return refs[revision]
        if COMMIT_RE.fullmatch(revision) and (self.path(repo_id) / "commits" / f"{revision}.json").exists():
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.store = RepoStore(Path(root) / "repos")
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self._faults_lock = threading.Lock()
        self._commit_failures = 0
        self._downloads: dict[str, list[str | None]] = {}  # path in repo -> actions for its next GETs
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    # fault injection
    def fail_commits(self, times: int = 1) -> None:
        """Answer the next `times` commits with a 500, before applying anything."""
        with self._faults_lock:
            self._commit_failures = times

    def download_faults(self, path_in_repo: str, *actions: str | None) -> None:
        """What the next GETs of `path_in_repo` get, one action each: "drop" (the connection is cut after half the
        body it announced), "fail" (a 500), or None (served normally). Later GETs are served normally."""
        assert all(a in ("drop", "fail", None) for a in actions), actions
        with self._faults_lock:
            self._downloads[path_in_repo] = list(actions)

    def drop_downloads(self, path_in_repo: str, times: int = 1) -> None:
        self.download_faults(path_in_repo, *["drop"] * times)

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._commit_failures = 0
            self._downloads.clear()

    def _take_commit_failure(self) -> bool:
        with self._faults_lock:
            if self._commit_failures > 0:
                self._commit_failures -= 1
                return True
            return False

    def _take_download_fault(self, path_in_repo: str) -> str | None:
        with self._faults_lock:
            queue = self._downloads.get(path_in_repo)
            return queue.pop(0) if queue else None

    # inspection helpers for the tests
    def head(self, repo_id: str, branch: str = "main") -> str:
        return self.store.refs(repo_id)[branch]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        tree = self.store.commit(repo_id, self.store.resolve(repo_id, revision))["tree"]
        return {path: self.store.blob(repo_id, oid) for path, oid in tree.items()}

    def history(self, repo_id: str, branch: str = "main") -> list[str]:
        oid, titles = self.store.refs(repo_id)[branch], []
        while oid:
            commit = self.store.commit(repo_id, oid)
            titles.append(commit["title"])
            oid = commit["parent"]
        return titles


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # plumbing
    def _send(
        self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json"
    ):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, err: HubError):
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json(err.status, {"error": err.message}, headers)

    def _body(self) -> bytes:
        return self._raw_body

    def _json_body(self) -> dict:
        try:
            payload = json.loads(self._body() or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from None
        if not isinstance(payload, dict):
            raise HubError(400, "JSON body must be an object")
        return payload

    def _authenticated(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return False
        if auth != f"Bearer {TOKEN}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _require_auth(self) -> None:
        if not self._authenticated():
            raise HubError(401, "You must be authenticated to do this (no token in the Authorization header)")

    def _repo(self, namespace: str, name: str, write: bool = False) -> str:
        repo_id = f"{namespace}/{name}"
        store = self.server.store
        if write:
            self._require_auth()
        authed = self._authenticated()
        if not store.exists(repo_id) or (store.meta(repo_id)["private"] and not authed):
            # the Hub does not tell a private repo from a missing one
            raise HubError(401 if not authed else 404, "Repository not found", "RepoNotFound")
        return repo_id

    def _dispatch(self):
        self.server.requests.append((self.command, self.path))
        # read the whole request body first, so that an early error answer leaves the connection usable
        length = int(self.headers.get("Content-Length") or 0)
        self._raw_body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")  # split before unquoting: revisions arrive %2F-quoted
        query = parse_qs(url.query)
        try:
            self._route([unquote(p) for p in parts], query)
        except HubError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _route(self, p: list[str], query: dict):
        method = self.command
        if p[:1] == ["api"]:
            if p[1:] == ["whoami-v2"] and method == "GET":
                self._require_auth()
                return self._json(
                    200,
                    {
                        "type": "user",
                        "name": USER,
                        "orgs": [],
                        "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
                    },
                )
            if p[1:] == ["agent-harnesses"] and method == "GET":  # huggingface_hub's user-agent registry
                return self._json(200, {"standardEnvVars": [], "harnesses": {}})
            if p[1:] == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if p[1:] == ["validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if len(p) >= 4 and p[1] in ("datasets", "spaces"):
                raise HubError(404, f"This test server only has model repos, not {p[1]}", "RepoNotFound")
            if len(p) >= 4 and p[1] == "models":
                repo_parts, rest = p[2:4], p[4:]
                if not rest and method == "GET":
                    return self._model_info(*repo_parts, "main", query)
                if rest[:1] == ["revision"] and len(rest) == 2 and method == "GET":
                    return self._model_info(*repo_parts, rest[1], query)
                if rest[:1] == ["preupload"] and len(rest) == 2 and method == "POST":
                    return self._preupload(*repo_parts, rest[1])
                if rest[:1] == ["commit"] and len(rest) == 2 and method == "POST":
                    return self._commit(*repo_parts, rest[1], query)
                if rest[:1] == ["tree"] and len(rest) >= 2 and method == "GET":
                    return self._tree(*repo_parts, rest[1], "/".join(rest[2:]), query)
                if rest[:1] == ["branch"] and len(rest) == 2 and method == "POST":
                    return self._create_branch(*repo_parts, rest[1])
                if rest == ["refs"] and method == "GET":
                    return self._refs(*repo_parts)
            raise HubError(404, f"Not found: {method} {self.path}")
        if len(p) >= 5 and p[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(p[0], p[1], p[3], "/".join(p[4:]))
        raise HubError(404, f"Not found: {method} {self.path}")

    # endpoints
    def _create_repo(self):
        self._require_auth()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        if repo_type != "model":
            raise HubError(400, f"This test server only creates model repos, not {repo_type!r}")
        name, namespace = body.get("name"), body.get("organization") or USER
        for label, value in (("name", name), ("namespace", namespace)):
            if not isinstance(value, str) or not NAME_RE.fullmatch(value):
                raise HubError(400, f"Invalid repo {label}: {value!r} (alphanumeric, '-', '_' or '.'; up to 96 chars)")
        visibility = body.get("visibility")
        private = bool(body.get("private")) or visibility == "private"
        repo_id = f"{namespace}/{name}"
        url = f"{self.server.url}/{repo_id}"
        with self.server.store.lock:
            if self.server.store.exists(
                repo_id
            ):  # the Hub names the existing repo's url (create_repo(exist_ok=True) reads it)
                message = "You already created this model repo"
                return self._json(409, {"error": message, "url": url}, {"X-Error-Message": message})
            self.server.store.create(repo_id, private)
        return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _model_info(self, namespace: str, name: str, revision: str, query: dict):
        repo_id = self._repo(namespace, name)
        store = self.server.store
        oid = store.resolve(repo_id, revision)
        commit = store.commit(repo_id, oid)
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, blob in commit["tree"].items():
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=len(store.blob(repo_id, blob)), blobId=blob)
            siblings.append(sibling)
        card = {}
        if "README.md" in commit["tree"]:
            card = _front_matter(store.blob(repo_id, commit["tree"]["README.md"]).decode("utf-8", "replace"))[0] or {}
        config = {}
        if "config.json" in commit["tree"]:
            try:
                full = json.loads(store.blob(repo_id, commit["tree"]["config.json"]))
                config = {k: full[k] for k in ("architectures", "model_type", "auto_map") if k in full}
            except ValueError:
                pass
        meta = store.meta(repo_id)
        return self._json(
            200,
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": namespace,
                "sha": oid,
                "lastModified": commit["date"],
                "createdAt": meta["createdAt"],
                "private": meta["private"],
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": card.get("tags", []),
                "pipeline_tag": card.get("pipeline_tag"),
                "library_name": card.get("library_name"),
                "cardData": card or None,
                "config": config or None,
                "siblings": siblings,
            },
        )

    def _preupload(self, namespace: str, name: str, revision: str):
        repo_id = self._repo(namespace, name, write=True)
        tree = self.server.store.commit(repo_id, self.server.store.resolve(repo_id, revision))["tree"]
        files = self._json_body().get("files")
        if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) for f in files
        ):
            raise HubError(400, "Expected {'files': [{'path', 'sample', 'size'}, ...]}")
        # every file is "regular": its content comes inline (base64) in the commit, no LFS or Xet service needed
        return self._json(
            200,
            {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": tree.get(f["path"])}
                    for f in files
                ]
            },
        )

    def _commit(self, namespace: str, name: str, revision: str, query: dict):
        repo_id = self._repo(namespace, name, write=True)
        store = self.server.store
        body = self._body()
        if query.get("create_pr", ["0"])[0] in ("1", "true"):
            raise HubError(400, "This test server does not do pull requests")
        if revision not in store.refs(repo_id):
            if COMMIT_RE.fullmatch(revision):
                raise HubError(400, f"Can only commit to a branch, not to the commit {revision}")
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if not self.headers.get("Content-Type", "").startswith("application/x-ndjson"):
            raise HubError(400, "Commit payload must be application/x-ndjson")
        if self.server._take_commit_failure():
            raise HubError(500, "Internal Error (injected by the test server)")
        header, additions, deletions = _parse_commit(body)
        for path, data in additions:  # as the Hub: a model card whose metadata it would not accept is refused
            if path == "README.md":
                metadata, errors = _front_matter(data.decode("utf-8", "replace"))
                errors += _metadata_errors(metadata or {})
                if errors:
                    raise HubError(400, "Invalid metadata in README.md.\n" + "\n".join(f"- {e}" for e in errors))
        with store.lock:
            head = store.refs(repo_id)[revision]
            parent = header.get("parentCommit")
            if parent is not None and parent != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(store.commit(repo_id, head)["tree"])
            for path, is_folder in deletions:
                if is_folder:
                    gone = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del tree[p]
                elif tree.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            for path, data in additions:
                tree[path] = store.put_blob(repo_id, data)
            oid = store.put_commit(repo_id, head, tree, header["summary"], header.get("description") or "")
            store.set_ref(repo_id, revision, oid)  # the single atomic step that makes the commit visible
        return self._json(
            200,
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{self.server.url}/{repo_id}/commit/{oid}",
                "pullRequestUrl": None,
            },
        )

    def _tree(self, namespace: str, name: str, revision: str, path: str, query: dict):
        repo_id = self._repo(namespace, name)
        store = self.server.store
        tree = store.commit(repo_id, store.resolve(repo_id, revision))["tree"]
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and path.strip("/") in tree:
            raise HubError(400, f"{path} is a file, not a folder")
        under = [p for p in tree if p.startswith(prefix)]
        if prefix and not under:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        entries, folders = [], set()
        for p in sorted(under):
            rest = p[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                folder = prefix + "/".join(rest[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append(
                        {
                            "type": "directory",
                            "oid": hashlib.sha1(folder.encode()).hexdigest(),
                            "size": 0,
                            "path": folder,
                        }
                    )
            if recursive or len(rest) == 1:
                blob = tree[p]
                entries.append({"type": "file", "oid": blob, "size": len(store.blob(repo_id, blob)), "path": p})
        return self._json(200, entries)

    def _create_branch(self, namespace: str, name: str, branch: str):
        repo_id = self._repo(namespace, name, write=True)
        store = self.server.store
        if not BRANCH_RE.fullmatch(branch) or COMMIT_RE.fullmatch(branch):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        start = self._json_body().get("startingPoint") or "main"
        with store.lock:
            if branch in store.refs(repo_id):
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            store.set_ref(repo_id, branch, store.resolve(repo_id, start))
        return self._json(200, {})

    def _refs(self, namespace: str, name: str):
        repo_id = self._repo(namespace, name)
        refs = self.server.store.refs(repo_id)
        return self._json(
            200,
            {
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in refs.items()],
                "converts": [],
                "tags": [],
            },
        )

    def _validate_yaml(self):
        body = self._json_body()
        if (body.get("repoType") or "model") != "model":
            raise HubError(400, "This test server only validates model cards")
        metadata, errors = _front_matter(body.get("content") or "")
        if metadata is None and not errors:
            return self._json(200, {"warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
        errors += _metadata_errors(metadata or {})
        if errors:
            return self._json(
                400, {"errors": [{"message": e} for e in errors]}, {"X-Error-Message": "Invalid metadata"}
            )
        return self._json(200, {"warnings": []})

    def _resolve(self, namespace: str, name: str, revision: str, path: str):
        repo_id = self._repo(namespace, name)
        store = self.server.store
        oid = store.resolve(repo_id, revision)
        tree = store.commit(repo_id, oid)["tree"]
        if path not in tree:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": oid})
        data = store.blob(repo_id, tree[path])
        headers = {"X-Repo-Commit": oid, "ETag": f'"{tree[path]}"', "Accept-Ranges": "bytes"}
        status, start = 200, 0
        ranges = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranges:
            start = int(ranges.group(1))
            end = int(ranges.group(2)) if ranges.group(2) else len(data) - 1
            if start >= len(data) or end < start:
                raise HubError(
                    416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"}
                )
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{len(data)}"
            data = data[start : end + 1]
        fault = self.server._take_download_fault(path) if self.command == "GET" else None
        if fault == "fail":
            raise HubError(500, "Internal Error (injected by the test server)")
        if fault is None:
            return self._send(status, data, headers, "application/octet-stream")
        # "drop": announce the whole body, send half of it, then cut the connection
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def _front_matter(content: str) -> tuple[dict | None, list[str]]:
    """(metadata, errors) of a README's YAML header, as the Hub reads it."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if not match:
        return None, []
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return None, [f"Invalid YAML in the metadata: {err}"]
    if metadata is None:
        return None, []
    if not isinstance(metadata, dict):
        return None, ["The metadata must be a YAML mapping"]
    return metadata, []


def _metadata_errors(meta: dict) -> list[str]:
    """A subset of the Hub's model-card metadata schema: the fields hf_vit writes."""
    errors = []

    def strings(key):
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            errors.append(f'"{key}" must be a string or an array of strings')

    for key in ("tags", "datasets", "language", "metrics", "base_model"):
        strings(key)
    for key in ("license_name", "license_link"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    bases = meta.get("base_model")
    for base in [bases] if isinstance(bases, str) else bases if isinstance(bases, list) else []:
        if (
            not isinstance(base, str)
            or not all(NAME_RE.fullmatch(part) for part in base.split("/"))
            or base.count("/") > 1
        ):
            errors.append(f'"base_model" must be model ids (NAMESPACE/NAME), got {base!r}')
    if "base_model_relation" in meta:
        if meta["base_model_relation"] not in BASE_MODEL_RELATIONS:
            errors.append(
                f'"base_model_relation" must be one of {sorted(BASE_MODEL_RELATIONS)}, '
                f"got {meta['base_model_relation']!r}"
            )
        if not bases:
            errors.append('"base_model_relation" needs a "base_model"')
    if "license" in meta and meta["license"] not in LICENSES:
        errors.append(f'"license" must be one of the Hub\'s license ids, got {meta["license"]!r}')
    if "library_name" in meta and not isinstance(meta["library_name"], str):
        errors.append('"library_name" must be a string')
    if "pipeline_tag" in meta and meta["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be a known task, got {meta["pipeline_tag"]!r}')
    index = meta.get("model-index")
    if index is not None:
        if not isinstance(index, list) or not index:
            return errors + ['"model-index" must be a non-empty array']
        for entry in index:
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("name"), str)
                or not isinstance(entry.get("results"), list)
            ):
                errors.append('"model-index[]" needs a "name" (string) and "results" (array)')
                continue
            for result in entry["results"]:
                task, dataset, metrics = (
                    (result or {}).get("task"),
                    (result or {}).get("dataset"),
                    (result or {}).get("metrics"),
                )
                if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                    errors.append('"model-index[].results[].task.type" must be a string')
                if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("type", "name")):
                    errors.append('"model-index[].results[].dataset" needs "type" and "name" strings')
                elif any(k in dataset and not isinstance(dataset[k], str) for k in ("split", "config", "revision")):
                    errors.append('"model-index[].results[].dataset" "split", "config", "revision" must be strings')
                if (
                    not isinstance(metrics, list)
                    or not metrics
                    or not all(isinstance(m, dict) and isinstance(m.get("type"), str) and "value" in m for m in metrics)
                ):
                    errors.append('"model-index[].results[].metrics" must be a non-empty array of {type, value}')
                elif any("name" in m and not isinstance(m["name"], str) for m in metrics):
                    errors.append('"model-index[].results[].metrics[].name" must be a string')
    return errors


def _parse_commit(body: bytes) -> tuple[dict, list[tuple[str, bytes]], list[tuple[str, bool]]]:
    """The NDJSON commit payload -> (header, additions, deletions); 400 for anything malformed."""
    try:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    except ValueError as err:
        raise HubError(400, f"Malformed NDJSON commit payload: {err}") from None
    if not lines or not isinstance(lines[0], dict) or lines[0].get("key") != "header":
        raise HubError(400, "The first line of a commit payload must be its header")
    header = lines[0].get("value")
    if not isinstance(header, dict) or not isinstance(header.get("summary"), str) or not header["summary"].strip():
        raise HubError(400, "The commit header needs a non-empty summary")
    additions, deletions, seen = [], [], set()
    for line in lines[1:]:
        key, value = (line.get("key"), line.get("value")) if isinstance(line, dict) else (None, None)
        if not isinstance(value, dict) or not isinstance(value.get("path"), str):
            raise HubError(400, f"Malformed commit operation: {str(line)[:200]}")
        path = value["path"]
        if (
            path.startswith("/")
            or path.endswith("/")
            and key != "deletedFolder"
            or any(part in ("", ".", "..", ".git") for part in path.rstrip("/").split("/"))
        ):
            raise HubError(400, f"Invalid path in commit: {path!r}")
        if key == "file":
            if value.get("encoding") != "base64" or not isinstance(value.get("content"), str):
                raise HubError(400, f"File {path}: content must be base64 with encoding 'base64'")
            try:
                data = base64.b64decode(value["content"], validate=True)
            except binascii.Error:
                raise HubError(400, f"File {path}: content is not valid base64") from None
            if path in seen:
                raise HubError(400, f"File {path} appears twice in the commit")
            seen.add(path)
            additions.append((path, data))
        elif key == "lfsFile":
            # preupload never answered "lfs", so no LFS object can have been uploaded for this file
            raise HubError(422, f"LFS file {path}: no uploaded LFS object with oid {value.get('oid')}")
        elif key in ("deletedFile", "deletedFolder"):
            deletions.append((path, key == "deletedFolder"))
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")
    if not additions and not deletions:
        raise HubError(400, "Empty commit: no operation")
    return header, additions, deletions


if __name__ == "__main__":  # by hand: python tests/hub_server.py [FOLDER] -> serves until Ctrl-C
    import sys
    import tempfile

    server = HubServer(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="hub-"))
    print(f"HF_ENDPOINT={server.url} HF_TOKEN={TOKEN}  (repos in {server.store.root})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
