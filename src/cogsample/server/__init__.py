"""``cogsample serve``: a page and a JSON API over the batch engine, with a queue that survives
restarts (``jobqueue``), requests checked as JSONL lines are (``requests``, ``uploads``), the
thread that makes the jobs (``worker``) and the HTTP side (``app``); :func:`serve` runs them."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from ..jobs.batch import batch_options, plan_jobs
from ..jobs.outdir import OutDir
from ..pipeline.options import GenerateOptions, inspect_model
from .app import App, make_server
from .jobqueue import JobQueue
from .worker import Worker

__all__ = ["TOKEN_ENV", "build_app", "is_loopback", "serve"]

#: The environment variable that holds the API's bearer token when ``--token`` is not given.
TOKEN_ENV = "COGSAMPLE_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds to this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(
    base: GenerateOptions, *, token: str | None = None, max_body: int = 16 * 2**20, log: Callable[[str], None] = print
) -> App:
    """The server's state for ``base`` (the model and defaults, fixed): its queue in ``base.out``
    and a worker (not started)."""
    out = OutDir(base.out)
    out.check_writable()
    info = inspect_model(base.model)
    _check_options(base, info.i2v)
    queue = JobQueue(out)
    defaults = {k: getattr(base, k) for k in ("steps", "seed", "scale", "frames", "height", "width", "guidance")}
    config: dict[str, Any] = {
        "model": base.model,
        "i2v": info.i2v,
        "token_required": token is not None,
        "max_upload_bytes": max_body,
        "defaults": {**defaults, "native": {"frames": info.frames, "height": info.height, "width": info.width}},
    }
    return App(queue, base, Worker(queue, base, log=log), config, token, max_body)


def _check_options(base: GenerateOptions, i2v: bool) -> None:
    """Plan one video with the server's options, so that bad ones are refused before it listens."""
    from PIL import Image

    image = Image.new("RGB", (base.width or 64, base.height or 64)) if i2v and base.image is None else base.image
    plan_jobs(batch_options(base, [("", {"prompt": "a check of the server's options", "image": image})]))


def serve(app: App, host: str, port: int, *, log: Callable[[str], None] = print, ready: Any = None) -> int:
    """Serve ``app`` until SIGINT or SIGTERM; the job being made then stays queued (its partial
    files removed). ``ready(url)`` is called once the socket listens. Returns 0."""
    server = make_server(app, host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{server.server_address[1]}/"
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            log(f"stopping ({signal.Signals(signum).name}): the job being made stays queued")
            threading.Thread(target=server.shutdown, daemon=True).start()

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    app.worker.start()
    log(f"serving {url} (model {app.base.model}, out {app.queue.out.path}, pid {os.getpid()})")
    if ready is not None:
        ready(url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        app.worker.stop()
        app.worker.join(timeout=60)
        server.server_close()
        for s, h in old.items():
            signal.signal(s, h)
    return 0
