"""``cogsample serve``: the page and the JSON API (:mod:`cogsample.server`) on one model, with
``generate``'s options as the server's fixed model options and each job's defaults."""

from __future__ import annotations

import argparse
import os

from ..pipeline.progress import say
from .errors import command_error
from .generate_args import declare_serve


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``serve`` and its options, run by :func:`run`."""
    declare_serve(sub).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM (0); a usage error (2) before the socket opens."""
    from ..models import check_installed
    from ..server import TOKEN_ENV, build_app, is_loopback, serve
    from .generate_plan import base_options

    if args.overwrite:
        return command_error("serve", "--overwrite does not go with serve: a finished video is served as it is")
    if not 0 <= args.port <= 65535:
        return command_error("serve", f"--port must be 0..65535, got {args.port}")
    if not args.max_upload_mb > 0:
        return command_error("serve", f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        base = base_options(args, args.device)
        check_installed(base.model, base.profile)
        app = build_app(base, token=token, max_body=int(args.max_upload_mb * 2**20), log=say)
    except ValueError as e:
        return command_error("serve", str(e))
    if not is_loopback(args.host):
        say(
            f"cogsample serve: warning: --host {args.host} takes requests from other machines"
            + ("" if token else f"; anyone who reaches it can queue jobs (set --token or {TOKEN_ENV})")
        )
    try:
        return serve(app, args.host, args.port, log=say)
    except OSError as e:
        return command_error("serve", f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
