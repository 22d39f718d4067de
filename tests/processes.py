"""Real processes for tests: each in its own session, killed by its process group id when the
test ends (whatever happened), every wait bounded."""

import os
import signal
import subprocess
import sys
from contextlib import contextmanager

TIMEOUT = 120


@contextmanager
def started(cmd, timeout=TIMEOUT, **kw):
    """A process in its own session; killed (the whole group) if still running at the end."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
        for stream in (proc.stdout, proc.stderr):
            stream.close()


def torchrun(nproc, *args):
    """``torchrun --standalone --nproc-per-node N ARGS`` (loopback rendezvous) as a command line."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]


def run_bounded(cmd, timeout=TIMEOUT, **kw):
    """Run ``cmd`` to its end within ``timeout`` s: ``(returncode, stdout, stderr)``."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", **kw.pop("env", {})}
    with started(cmd, timeout=timeout, env=env, **kw) as proc:
        stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stdout, stderr
