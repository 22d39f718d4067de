"""``cogsample serve``'s HTTP side: the page, the JSON API and the out folder's files, read-only.

Routes (JSON; an error is a 4xx with ``{"error": "..."}``):

* ``GET /`` the page, ``GET /static/NAME`` its files (from the package: no CDN, no build step);
* ``GET /api/config``: the model, the server's defaults, whether a token is needed;
* ``POST /api/jobs``: a job (a JSONL line's keys; images as ``data:`` URLs) -> 202 ``{"id", "name",
  "status"}``, on disk before the answer; 200 with its files when the video is finished already;
* ``GET /api/jobs``, ``GET /api/jobs/ID``: states; ``DELETE /api/jobs/ID``: cancel a queued job;
* ``GET /files/NAME``: a finished video's file (``NAME`` is a plain file name in the out folder).

With a token (``--token`` or ``COGSAMPLE_TOKEN``) the API and the files need
``Authorization: Bearer TOKEN`` (files also take ``?token=TOKEN``, for ``<video src>``)."""

from __future__ import annotations

import hmac
import json
import mimetypes
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..pipeline.options import GenerateOptions
from .jobqueue import Busy, Job, JobQueue
from .requests import RequestError, job_request
from .worker import Worker, plan_request

__all__ = ["App", "Handler", "make_server"]

#: A file the server hands out: a plain name in the out folder (no folder, no leading dot).
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
_STATIC = {"index.html", "app.js", "style.css"}


@dataclass
class App:
    """What the handler serves: the queue, the server's options, its worker, its limits."""

    queue: JobQueue
    base: GenerateOptions
    worker: Worker
    info: dict[str, Any]
    token: str | None = None
    max_body: int = 16 * 2**20
    files_prefix: str = "/files/"

    def job_json(self, job: Job) -> dict[str, Any]:
        st = self.queue.status(job)
        st["seed"] = job.request.get("seed", self.info["defaults"]["seed"])
        if "files" in st:
            st["files"] = {role: self.files_prefix + name for role, name in st["files"].items()}
        return st

    def submit(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        request = job_request(body, content_type, self.queue.out.path)
        try:
            item = plan_request(self.base, request, self.queue.out.path)
        except ValueError as e:
            raise RequestError(str(e)) from None
        job = self.queue.submit(item.stem, request)
        self.worker.wake.set()
        st = self.job_json(job)
        return (200 if st["status"] == "finished" else 202), st


class Handler(BaseHTTPRequestHandler):
    """One request: routed by method and path (see the module docstring)."""

    server_version = "cogsample"
    app: App  # set on the class made by make_server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per request would bury the jobs' lines

    # ------------------------------------------------------------------------------------------
    # answers

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        extra = {"Cache-Control": "no-store", **(extra or {})}
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        # a refused request's body may be unread: the connection cannot carry another request
        headers = {"Connection": "close"}
        self._send(status, json.dumps({"error": message}).encode(), "application/json", headers)

    # ------------------------------------------------------------------------------------------
    # routes

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _route(self, method: str) -> None:
        try:
            self._dispatch(method, urlsplit(self.path))
        except RequestError as e:
            self._error(e.status, str(e))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _dispatch(self, method: str, url: Any) -> None:
        path = url.path
        if path in ("/", "/index.html") or path.startswith("/static/"):
            return self._static(method, path)
        if not (path.startswith("/api/") or path.startswith("/files/")):
            raise RequestError(f"no such page: {path[:200]!r}", 404)
        self._authorize(url)
        if path.startswith("/files/"):
            return self._file(method, path[len("/files/") :])
        if path == "/api/config" and method == "GET":
            return self._json(200, self.app.info)
        if path == "/api/jobs":
            return self._jobs(method)
        if path.startswith("/api/jobs/"):
            return self._job(method, path[len("/api/jobs/") :])
        raise RequestError(f"no such API route: {method} {path[:200]!r}", 404)

    def _authorize(self, url: Any) -> None:
        token = self.app.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        given = given[7:] if given.startswith("Bearer ") else ""
        if not given and url.path.startswith("/files/"):
            given = (parse_qs(url.query).get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise RequestError("this server needs a token: send 'Authorization: Bearer TOKEN'", 401)

    def _static(self, method: str, path: str) -> None:
        if method != "GET":
            raise RequestError(f"{method} is not allowed on {path!r}", 405)
        name = "index.html" if path in ("/", "/index.html") else path[len("/static/") :]
        if name not in _STATIC:
            raise RequestError(f"no such page: {path[:200]!r}", 404)
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        self._send(200, body, mimetypes.guess_type(name)[0] or "application/octet-stream")

    def _jobs(self, method: str) -> None:
        if method == "GET":
            return self._json(200, {"jobs": [self.app.job_json(j) for j in self.app.queue.jobs()]})
        if method != "POST":
            raise RequestError(f"{method} is not allowed on /api/jobs (GET, POST)", 405)
        self._json(*self.app.submit(self._body(), self.headers.get("Content-Type", "")))

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("a request body needs a Content-Length", 411)
        n = int(length)
        if n > self.app.max_body:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise RequestError(f"the body is {n} bytes; at most {self.app.max_body} are taken", 413)
        return self.rfile.read(n)

    def _job(self, method: str, jid: str) -> None:
        job = self.app.queue.get(jid)
        if job is None:
            raise RequestError(f"no job {jid[:40]!r}", 404)
        if method == "GET":
            return self._json(200, self.app.job_json(job))
        if method != "DELETE":
            raise RequestError(f"{method} is not allowed on a job (GET, DELETE)", 405)
        try:
            self.app.queue.cancel(job)
        except Busy as e:
            raise RequestError(str(e), 409) from None
        self._json(200, self.app.job_json(job))

    def _file(self, method: str, name: str) -> None:
        if method != "GET":
            raise RequestError(f"{method} is not allowed on files", 405)
        out = self.app.queue.out.path.resolve()
        path = (out / name).resolve() if _FILE_NAME.match(name) else None
        if path is None or path.parent != out or not path.is_file():
            raise RequestError(f"no such file: {name[:200]!r}", 404)
        data = path.read_bytes()
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        extra = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
        span = _byte_range(self.headers.get("Range"), len(data))
        if span is None:
            return self._send(200, data, ctype, extra)
        a, b = span
        self._send(206, data[a : b + 1], ctype, {**extra, "Content-Range": f"bytes {a}-{b}/{len(data)}"})


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=A-B`` (or ``A-``, ``-N``) as inclusive ``(A, B)`` within ``size``; None for no
    header or one this server does not serve in part (several ranges): the whole file then. 416
    (:class:`RequestError`) for a range that starts beyond the end."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if m is None or m.group(1) == m.group(2) == "":
        return None
    if m.group(1) == "":
        n = int(m.group(2))
        return (max(size - n, 0), size - 1) if n > 0 and size > 0 else None
    a, b = int(m.group(1)), int(m.group(2) or size - 1)
    if a >= size or b < a:
        raise RequestError(f"range {header!r} is outside the file's {size} bytes", 416)
    return a, min(b, size - 1)


def make_server(app: App, host: str, port: int) -> ThreadingHTTPServer:
    """A threaded HTTP server for ``app`` on ``host:port`` (port 0: any free one)."""
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
