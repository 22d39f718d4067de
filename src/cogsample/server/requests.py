"""An HTTP request's body turned into a job: the same keys, types and messages as a JSONL line
(:func:`~cogsample.jobs.batch.entry_options`), then the server's own limits: a bounded prompt,
images as uploads only, and no key that would make the server read a file the request names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..jobs.batch import entry_options
from .uploads import UploadError, store_image

__all__ = ["MAX_PROMPT", "RequestError", "job_request"]

#: The longest prompt taken (characters); CogVideoX's T5 reads 226 tokens, about 1,000 characters.
MAX_PROMPT = 4000
#: Keys that name a file on the server's disk: not taken over HTTP (why, in the message).
_FILE_KEYS = {
    "video": "video to video is not offered by the server (give --video to cogsample generate)",
    "initial_noise": "the server reads no noise file a request names",
    "lora": "LoRAs are fixed per server: start it with --lora PATH[:WEIGHT]",
}


class RequestError(ValueError):
    """A request that is refused: ``status`` is its HTTP status, the message says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def job_request(body: bytes, content_type: str, out: Path) -> dict[str, Any]:
    """The request object of ``POST /api/jobs`` (``application/json``), checked; images are
    stored as uploads and replaced by their paths. :class:`RequestError` says what is wrong."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise RequestError(f"Content-Type must be application/json, got {content_type or 'none'!r}", 415)
    try:
        obj = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("the body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise RequestError(f"the body is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(obj, dict):
        raise RequestError(f'the body must be a JSON object such as {{"prompt": "..."}}, got {type(obj).__name__}')
    obj = {str(k).replace("-", "_"): v for k, v in obj.items()}
    _check_server_limits(obj)
    try:
        _store_images(obj, out)
        entry_options(obj, out)  # the JSONL checks, to refuse now what would fail later
    except ValueError as e:
        raise RequestError(str(e)) from None
    return obj


def _check_server_limits(obj: dict[str, Any]) -> None:
    prompt = obj.get("prompt")
    if isinstance(prompt, str) and len(prompt) > MAX_PROMPT:
        raise RequestError(f"prompt is {len(prompt)} characters long; at most {MAX_PROMPT} are taken", 413)
    if isinstance(prompt, str) and not prompt.strip():
        raise RequestError("prompt is empty")
    for key, why in _FILE_KEYS.items():
        if obj.get(key) is not None:
            raise RequestError(f"{key} is not taken over HTTP: {why}")
    cfg = obj.get("sampler_config")
    if isinstance(cfg, str) and ("/" in cfg or "\\" in cfg or cfg.endswith((".yaml", ".yml"))):
        raise RequestError(f"sampler_config over HTTP must be a shipped name (cogvideox-5b, ...), not a path: {cfg!r}")


def _store_images(obj: dict[str, Any], out: Path) -> None:
    """``image``, ``last_image`` and each keyframe's image: data URLs replaced by stored paths."""
    for key in ("image", "last_image"):
        if isinstance(obj.get(key), str):
            obj[key] = store_image(key, obj[key], out)
    frames = obj.get("keyframes")
    if isinstance(frames, dict):
        obj["keyframes"] = {f: _keyframe(f"keyframes[{f}]", v, out) for f, v in frames.items()}
    elif isinstance(frames, list):
        obj["keyframes"] = [_keyframe_text(i, v, out) for i, v in enumerate(frames)]


def _keyframe(field: str, value: Any, out: Path) -> Any:
    if not isinstance(value, str):
        raise UploadError(f"{field} must be an uploaded image (a data: URL), got {json.dumps(value)}")
    return store_image(field, value, out)


def _keyframe_text(i: int, value: Any, out: Path) -> Any:
    if not isinstance(value, str) or "=" not in value:
        raise UploadError(f'keyframes[{i}] must be "FRAME=data:image/...", got {json.dumps(value)[:80]}')
    frame, _, url = value.partition("=")
    return f"{frame}={store_image(f'keyframes[{i}]', url, out)}"
