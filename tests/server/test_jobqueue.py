"""The queue's files: a job is on disk once accepted, its state read from the out folder (claims,
markers, a live process's progress), ids never become paths."""

import json
import os
import subprocess
import sys

import pytest

from cogsample.jobs.outdir import OutDir
from cogsample.server.jobqueue import Busy, JobQueue, job_id

NAME = "a-ball-s1-0123456789"


@pytest.fixture
def queue(tmp_path):
    return JobQueue(OutDir(tmp_path))


def test_an_accepted_job_is_a_file_and_asking_again_is_the_same_job(queue):
    job = queue.submit(NAME, {"prompt": "a ball", "seed": 1})
    assert job.id == job_id(NAME) == "0123456789"
    on_disk = json.loads((queue.path / "0123456789.json").read_text())
    assert on_disk["name"] == NAME and on_disk["request"] == {"prompt": "a ball", "seed": 1}
    assert queue.submit(NAME, {"prompt": "a ball", "seed": 1}).accepted == job.accepted
    assert [j.id for j in JobQueue(queue.out).jobs()] == [job.id]  # another process sees it
    assert queue.status(job)["status"] == "queued"


def test_ids_that_are_not_a_jobs_hash_find_nothing(queue):
    queue.submit(NAME, {"prompt": "a ball"})
    for jid in ("../0123456789", "0123456789/..", "", "0123456789.json", "ABCDEF0123", "x" * 10):
        assert queue.get(jid) is None


def test_cancel_needs_the_claim_and_a_resubmission_queues_again(queue):
    job = queue.submit(NAME, {"prompt": "a ball"})
    claim = queue.out.try_claim(NAME)  # a process making it
    with pytest.raises(Busy, match="running"):
        queue.cancel(job)
    queue.out.release(claim)
    queue.cancel(job)
    assert queue.status(job)["status"] == "cancelled" and not queue.wanted(NAME)
    queue.submit(NAME, {"prompt": "a ball"})
    assert queue.status(job)["status"] == "queued" and queue.wanted(NAME)


def test_failed_keeps_the_reason_until_submitted_again(queue):
    job = queue.submit(NAME, {"prompt": "a ball"})
    queue.fail(job, "RuntimeError: out of memory")
    assert queue.status(job) | {"accepted": 0} == {
        "id": job.id,
        "name": NAME,
        "prompt": "a ball",
        "accepted": 0,
        "status": "failed",
        "error": "RuntimeError: out of memory",
    }
    queue.submit(NAME, {"prompt": "a ball"})
    assert queue.status(job)["status"] == "queued"


def test_running_is_a_live_processes_progress_and_a_dead_ones_is_queued(queue):
    job = queue.submit(NAME, {"prompt": "a ball"})
    queue.progress(job, step=3, steps=8, forwards=6)
    st = queue.status(job)
    assert (st["status"], st["step"], st["steps"], st["forwards"]) == ("running", 3, 8, 6)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = queue.path / f"{job.id}.progress.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "pid": int(dead.stdout)}))
    assert queue.status(job)["status"] == "queued"
    queue.done(job)
    assert not path.exists() and os.listdir(queue.path) == [f"{job.id}.json"]
