"""The queue survives: real ``cogsample serve`` processes killed with SIGKILL in the middle of a
job and started again finish every accepted job exactly once; two servers on one out folder share
its jobs, each made by one of them."""

import re
import signal
from collections import Counter

from cogsample.jobs.outdir import OutDir
from tests.server.serving import ServerProcess, call, wait_for

#: The built-in model at its native size: a job takes a few seconds, long enough to be killed in.
ARGS = ["--steps", "30"]
N = 5


def statuses(url):
    status, listing = call(f"{url}/api/jobs")
    assert status == 200, listing
    return {j["id"]: j for j in listing["jobs"]}


def running_at(url, step):
    """A job running at ``step`` or later (None if none is)."""
    return next((j for j in statuses(url).values() if j["status"] == "running" and j.get("step", 0) >= step), None)


def finished_lines(*logs):
    """How many times each job id was logged as finished, over the logs of every start."""
    return Counter(m for log in logs for m in re.findall(r"job (\w+) finished", log.read_text()))


def test_killed_twice_mid_job_every_accepted_job_is_finished_once(tmp_path):
    out, logs = tmp_path / "out", [tmp_path / f"serve{i}.log" for i in range(3)]
    with ServerProcess(out, logs[0], *ARGS) as first:
        ids = []
        for seed in range(N):
            status, job = call(f"{first.url}/api/jobs", "POST", {"prompt": "a ball", "seed": seed})
            assert status == 202, job
            ids.append(job["id"])
        killed = wait_for(lambda: running_at(first.url, 2), what="a job to be mid-way")
        assert first.kill(signal.SIGKILL) == -signal.SIGKILL
    with ServerProcess(out, logs[1], *ARGS) as second:
        # the job killed mid-way is queued again, not reported as running by a dead process
        assert statuses(second.url)[killed["id"]]["status"] in ("queued", "running", "finished")
        done_before = sum(j["status"] == "finished" for j in statuses(second.url).values())

        def next_one_mid_way():
            st = statuses(second.url)
            mid = running_at(second.url, 2)
            return mid if mid and sum(j["status"] == "finished" for j in st.values()) > done_before else None

        wait_for(next_one_mid_way, what="another job to finish and one to be mid-way")
        assert second.kill(signal.SIGKILL) == -signal.SIGKILL
    with ServerProcess(out, logs[2], *ARGS) as third:
        final = wait_for(
            lambda: (st := statuses(third.url)) and all(j["status"] == "finished" for j in st.values()) and st,
            timeout=300,
            what="every job to finish",
        )
    assert sorted(final) == sorted(ids)
    assert finished_lines(*logs) == Counter(ids)  # each made once: none made twice, none lost
    d = OutDir(out)
    assert all(d.finished(j["name"]) for j in final.values())
    assert len(list(out.glob("*.mp4"))) == N
    assert list(out.glob(".*.part*")) == []  # what the kills left was cleaned up


def test_two_servers_on_one_out_folder_make_each_job_once(tmp_path):
    out, logs = tmp_path / "out", [tmp_path / "a.log", tmp_path / "b.log"]
    with ServerProcess(out, logs[0], *ARGS) as a, ServerProcess(out, logs[1], *ARGS) as b:
        ids = [call(f"{a.url}/api/jobs", "POST", {"prompt": "a square", "seed": s})[1]["id"] for s in range(4)]
        # b sees a's jobs: the queue is the out folder's
        assert sorted(statuses(b.url)) == sorted(ids)
        wait_for(
            lambda: all(j["status"] == "finished" for j in statuses(b.url).values()),
            timeout=300,
            what="every job to finish",
        )
    counts = finished_lines(*logs)
    assert counts == Counter(ids)
    per_server = [finished_lines(log) for log in logs]
    assert all(sum(c.values()) > 0 for c in per_server), per_server  # both took part


def test_sigterm_stops_at_once_and_the_job_being_made_stays_queued(tmp_path):
    out = tmp_path / "out"
    with ServerProcess(out, tmp_path / "a.log", *ARGS) as a:
        jid = call(f"{a.url}/api/jobs", "POST", {"prompt": "a ball", "seed": 9})[1]["id"]
        wait_for(lambda: running_at(a.url, 2), what="the job to be mid-way")
        assert a.kill(signal.SIGTERM) == 0
    log = (tmp_path / "a.log").read_text()
    assert "stopping (SIGTERM)" in log and f"job {jid} finished" not in log
    assert list(out.glob(".*.part*")) == [] and list(out.glob("*.mp4")) == []
    with ServerProcess(out, tmp_path / "b.log", *ARGS) as b:
        assert wait_for(lambda: statuses(b.url)[jid]["status"] == "finished", what="the job after the restart")
