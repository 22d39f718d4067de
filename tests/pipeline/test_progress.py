"""The display's lines stay whole when ranks share a stream."""

import io
import os
import subprocess
import sys

from cogsample.pipeline.progress import say


class Calls(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, s):
        self.writes.append(s)
        return super().write(s)


def test_say_writes_a_line_in_one_call():
    stream = Calls()
    say("outputs/a.mp4", stream)
    assert stream.writes == ["outputs/a.mp4\n"]


def test_unbuffered_processes_sharing_a_pipe_never_join_lines():
    # what torchrun's ranks do with the video paths: several unbuffered processes, one stdout pipe
    code = (
        "import sys\nfrom cogsample.pipeline.progress import say\n"
        "for k in range(3000): say(f'/tmp/out/rank{sys.argv[1]}-video-{k:05d}-' + 'x' * 60, sys.stdout)\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r, w = os.pipe()
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], stdout=w, env=env) for n in range(4)]
    os.close(w)
    with os.fdopen(r) as pipe:
        lines = pipe.read().splitlines()
    for p in procs:
        assert p.wait(timeout=60) == 0
    assert len(lines) == 4 * 3000
    assert all(
        line.startswith("/tmp/out/rank") and line.endswith("x" * 60) and line.count("/tmp") == 1 for line in lines
    )
