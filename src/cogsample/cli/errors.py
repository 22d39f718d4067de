"""Usage errors: one line on stderr and exit code 2, under torchrun once for all ranks."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from ..pipeline.progress import say

if TYPE_CHECKING:
    from ..jobs.distributed import Launch

#: Seconds a rank other than 0 waits, silent, before it exits with a usage error under torchrun:
#: rank 0 says the same error meanwhile and exits first, so the launcher names its message as the
#: root cause and ends the others (a rank whose error rank 0 does not share exits after the wait).
RANK0_GRACE_S = 5.0


def usage_error(line: str, launch: Launch | None) -> int:
    """Report a usage error (exit 2): one line on stderr. Under torchrun every rank finds the same
    error, so rank 0 alone prints it, and every rank leaves it in its torchelastic error file
    (:func:`cogsample.jobs.distributed.record_error`), which torchrun's summary shows as the root cause."""
    if launch is None or not launch.distributed:
        say(line)
        return 2
    from ..jobs.distributed import record_error

    record_error(line)
    if launch.rank == 0:
        say(line)
    else:
        time.sleep(RANK0_GRACE_S)
    return 2


def command_error(command: str, message: str) -> int:
    """``cogsample COMMAND: error: MESSAGE`` on stderr; the usage error's exit code, 2."""
    print(f"cogsample {command}: error: {message}", file=sys.stderr)
    return 2


def missing_extra(command: str, error: ModuleNotFoundError) -> int | None:
    """An optional dependency missing where no check caught it first: one line naming its extra
    (exit 2); None when no extra provides the module (the caller re-raises)."""
    from ..models import extra_for

    extra = extra_for(error.name or "")
    if extra is None:
        return None
    module = error.name.split(".")[0]
    return command_error(command, f"needs {module}, which is not installed: pip install 'cogsample[{extra}]'")
