"""Where this process stands among others started together (``torchrun``): its rank, the world
size, and the device that goes with its local rank. Data parallel needs no process group: each
rank makes its share of a batch alone, and the out folder's claims keep them apart."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Launch", "record_error"]

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """``rank`` of ``world_size`` processes, ``local_rank`` on this node (all 0 / 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch:
        """From torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (alone when unset);
        ``ValueError`` naming a variable that is set but wrong."""
        env = os.environ if env is None else env
        values = {}
        for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", None)):
            text = env.get(name)
            if text is None or text == "":
                values[name] = default
                continue
            try:
                values[name] = int(text)
            except ValueError:
                raise ValueError(f"environment variable {name}={text!r} must be an integer") from None
        rank, world = values["RANK"], values["WORLD_SIZE"]
        local = values["LOCAL_RANK"] if values["LOCAL_RANK"] is not None else rank
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ValueError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}: need 0 <= RANK < WORLD_SIZE")
        return cls(rank, world, local)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items: ``r``, ``r + W``, ``r + 2W``, ... of the list."""
        return list(items[self.rank :: self.world_size])

    def device(self, requested: str | None, cuda_available: bool) -> str | None:
        """The device for this rank: ``cuda`` (asked for, or the default where there is one)
        becomes ``cuda:LOCAL_RANK``; anything else, and everything when alone, as asked."""
        if not self.distributed:
            return requested
        if requested == "cuda" or (requested is None and cuda_available):
            return f"cuda:{self.local_rank}"
        return requested

    def record(self) -> dict[str, object]:
        """What each video's JSON says of it."""
        return {"engine": "torchrun" if self.distributed else "local", "rank": self.rank, "world_size": self.world_size}


def record_error(message: str) -> bool:
    """Leave ``message`` as this process's error for its torchrun launcher, which names the first
    failed rank's in its summary ("Root Cause ... traceback :"); True if there was a place for it.

    torch's :class:`~torch.distributed.elastic.multiprocessing.errors.ErrorHandler` writes a
    failure to the file ``TORCHELASTIC_ERROR_FILE`` names, in the launcher's JSON, with the
    exception's Python traceback as the part the summary shows; the handler here (its documented
    extension point, ``record_exception``) gives that part the one-line message instead, since a
    usage error has no traceback worth reading."""
    try:
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler
    except ImportError:  # pragma: no cover - torch without distributed
        return False

    class OneLine(ErrorHandler):
        def record_exception(self, e: BaseException) -> None:
            import json
            import time

            file = self._get_error_file_path()
            if file:
                data = {
                    "message": {
                        "message": str(e),
                        "extraInfo": {"py_callstack": str(e), "timestamp": str(int(time.time()))},
                    }
                }
                self._write_error_file(file, json.dumps(data))

    handler = OneLine()
    if not handler._get_error_file_path():
        return False
    handler.record_exception(UsageError(message))
    return True


class UsageError(ValueError):
    """A request that cannot run, as told to the user (one line)."""
