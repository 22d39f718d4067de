"""Images sent to the server: ``data:`` URLs, bounded in size and type, decoded before they are
kept, and kept by their bytes' hash in ``OUT/.uploads/`` (never under a name from the request)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from pathlib import Path

from ..jobs.outputs import atomic_path

__all__ = ["IMAGE_TYPES", "MAX_PIXELS", "UploadError", "store_image"]

#: What an upload may be: its leading bytes, and the extension it is kept under.
IMAGE_TYPES = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8\xff",), "webp": (b"RIFF",)}
#: The most pixels an uploaded image may have (a 4096 x 4096 image), checked from its header
#: before it is decoded, so a small file that claims a huge size is refused unread.
MAX_PIXELS = 4096 * 4096
UPLOADS = ".uploads"


class UploadError(ValueError):
    """An upload that is refused: the message names the field, what it was and what is allowed."""


def store_image(field: str, value: str, out: Path) -> str:
    """Decode ``value`` (``data:image/...;base64,...``), check it is a whole PNG, JPEG or WebP
    image of at most :data:`MAX_PIXELS`, keep it as ``OUT/.uploads/<sha256>.<type>``; its path."""
    data = _data_url_bytes(field, value)
    kind = _image_type(field, data)
    _check_decodes(field, data)
    folder = out / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.{kind}"
    if not dest.is_file():
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
    return str(dest.resolve())


def _data_url_bytes(field: str, value: str) -> bytes:
    head, sep, payload = value.partition(",")
    if not (sep and head.startswith("data:") and head.endswith(";base64")):
        raise UploadError(
            f"{field} must be an uploaded image, a data: URL (data:image/png;base64,...), got "
            f"{_shown(value)}: the server reads no file a request names"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UploadError(f"{field} is not valid base64 after 'data:...;base64,'") from None


def _image_type(field: str, data: bytes) -> str:
    for kind, magics in IMAGE_TYPES.items():
        if any(data.startswith(m) for m in magics) and (kind != "webp" or data[8:12] == b"WEBP"):
            return kind
    raise UploadError(f"{field} is not a PNG, JPEG or WebP image (its first bytes: {data[:8].hex() or 'none'})")


def _check_decodes(field: str, data: bytes) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise UploadError(f"{field} is {w}x{h} pixels; at most {MAX_PIXELS} pixels (4096x4096) are taken")
            img.load()
    except UploadError:
        raise
    except Exception as e:  # PIL raises many kinds for a damaged file; each is a refusal, not a crash
        raise UploadError(f"{field} could not be decoded as an image: {type(e).__name__}: {e}") from None


def _shown(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")
