"""A server for tests: in this process (a thread, port 0 on loopback) or as a real process whose
log is a file; an HTTP client with bounded waits."""

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from cogsample.pipeline.options import GenerateOptions
from cogsample.server import build_app
from cogsample.server.app import make_server

#: A small video of the built-in model: each job takes a second or two.
SMALL = ["--frames", "9", "--height", "64", "--width", "96", "--steps", "8"]
TIMEOUT = 120


def call(url, method="GET", body=None, headers=None, timeout=30):
    """``(status, decoded JSON or bytes)`` of one request; ``body``: an object (sent as JSON) or bytes."""
    headers = dict(headers or {})
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, data, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, (json.loads(data) if ctype.startswith("application/json") else data)


def wait_for(check, timeout=TIMEOUT, every=0.05, what="the condition"):
    """Poll ``check()`` until it returns a truthy value (returned), or fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def png_bytes(size=(96, 64), color=(200, 30, 30)):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data, kind="png"):
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def png_data_url(size=(96, 64), color=(200, 30, 30)):
    return data_url(png_bytes(size, color))


@contextmanager
def in_process(out, *, start_worker=True, token=None, max_body=16 * 2**20, **options):
    """A server in this process: yields ``(base_url, app)``; stopped at the end."""
    opts = {"frames": 9, "height": 64, "width": 96, "steps": 8, **options}
    base = GenerateOptions(prompts=(), out=str(out), **opts)
    app = build_app(base, token=token, max_body=max_body, log=lambda _m: None)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    if start_worker:
        app.worker.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", app
    finally:
        server.shutdown()
        server.server_close()
        if start_worker:
            app.worker.stop()
            app.worker.join(timeout=TIMEOUT)


class ServerProcess:
    """``cogsample serve`` as a real process in its own session, its output in ``log``."""

    def __init__(self, out, log, *args):
        self.log = Path(log)
        self.stream = open(self.log, "a")
        cmd = [sys.executable, "-m", "cogsample", "serve", "--port", "0", "--out", str(out), *args]
        self.proc = subprocess.Popen(cmd, stdout=self.stream, stderr=subprocess.STDOUT, start_new_session=True)
        found = wait_for(self._url, what=f"the server to listen (log: {self.log})")
        self.url = found.rstrip("/")

    def _url(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
        m = re.findall(r"serving (http://\S+) \(", self.log.read_text())
        return m[-1] if m else None

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=TIMEOUT)
        self.stream.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
