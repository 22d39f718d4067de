import errno
import json
import os

import pytest

from cogsample.jobs.outdir import OutDir, WriteError


def _write(text: str):
    def writer(dest):
        from cogsample.jobs.outputs import atomic_path

        with atomic_path(dest) as tmp:
            tmp.write_text(text)

    return writer


def _meta(d: OutDir, stem: str):
    return _write(json.dumps({"files": {k: v.name for k, v in d.files(stem).items()}}))


def _all_writers(d: OutDir, stem: str):
    return [("meta", _meta(d, stem)), ("video", _write("v")), ("latents", _write("l")), ("sheet", _write("s"))]


def test_claims_are_exclusive_and_leave_no_lock_file(tmp_path):
    d = OutDir(tmp_path)
    a = d.try_claim("x")
    assert a is not None and (tmp_path / ".x.lock").exists()
    assert d.try_claim("x") is None  # another open file description: flock says no
    assert d.try_claim("y") is not None
    d.release(a)
    assert not (tmp_path / ".x.lock").exists()
    with d.claimed("x") as b:
        assert b is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".y.lock"]


def test_a_lock_on_a_removed_file_is_taken_anew(tmp_path):
    """A waiter that got the lock of the file its holder removed must not think it holds the name."""
    d = OutDir(tmp_path)
    held = d.try_claim("x")
    stale = os.open(tmp_path / ".x.lock", os.O_RDWR)  # what a waiter had opened before the release
    d.release(held)  # unlinks: the waiter's lock would be on an orphan inode
    import fcntl

    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # succeeds on the orphan
    c = d.try_claim("x")  # a new file, a new lock: the name is claimable, once
    assert c is not None and os.fstat(c.fd).st_ino != os.fstat(stale).st_ino
    assert d.try_claim("x") is None
    os.close(stale)
    d.release(c)


def test_finished_only_when_the_json_and_every_file_it_names_exist(tmp_path):
    d = OutDir(tmp_path)
    with d.claimed("v") as claim:
        files = d.commit(claim, _all_writers(d, "v"))
    assert d.finished("v") and set(files) == {"meta", "video", "latents", "sheet"}
    files["sheet"].unlink()
    assert not d.finished("v")  # a file it names is gone: to be made again
    (tmp_path / "w.json").write_text("not json")
    assert not d.finished("w") and not d.finished("nothing")


def test_commit_writes_the_json_last_and_names_the_file_that_failed(tmp_path):
    d = OutDir(tmp_path)
    order = []

    def spy(role, inner):
        def writer(dest):
            order.append(role)
            inner(dest)

        return writer

    def full(_dest):
        raise OSError(errno.ENOSPC, "No space left on device")

    with d.claimed("v") as claim:
        d.commit(claim, [(r, spy(r, w)) for r, w in _all_writers(d, "v")])
        assert order[-1] == "meta"
        with pytest.raises(WriteError) as e:
            d.commit(claim, [("latents", _write("l")), ("video", full), ("meta", _meta(d, "u"))])
    assert str(e.value) == f"cannot write {d.files('v')['video']}: No space left on device"
    assert e.value.errno == errno.ENOSPC
    # the failed commit removed what it had written (its latents replaced v's: v is no longer whole)
    assert not d.files("v")["latents"].exists() and not d.finished("v")


def test_clean_removes_leftovers_of_an_unfinished_video_only(tmp_path):
    d = OutDir(tmp_path)
    with d.claimed("done") as claim:
        d.commit(claim, _all_writers(d, "done"))
    # what a SIGKILL during writing leaves: renamed files without their JSON, and temporaries
    (tmp_path / "half.mp4").write_text("v")
    (tmp_path / "half.latents.safetensors").write_text("l")
    (tmp_path / ".half.png.abc123.part.png").write_text("")
    (tmp_path / ".done.mp4.zz.part.mp4").write_text("")  # a killed writer's, beside a finished video
    (tmp_path / "half-other.mp4").write_text("someone else's")
    with d.claimed("half") as claim:
        removed = {p.name for p in d.clean(claim)}
    assert removed == {"half.mp4", "half.latents.safetensors", ".half.png.abc123.part.png"}
    with d.claimed("done") as claim:
        assert {p.name for p in d.clean(claim)} == {".done.mp4.zz.part.mp4"}
    assert d.finished("done") and (tmp_path / "half-other.mp4").exists()


def test_remove_unfinishes_first(tmp_path):
    d = OutDir(tmp_path)
    with d.claimed("v") as claim:
        d.commit(claim, _all_writers(d, "v"))
        d.remove(claim)
    assert list(tmp_path.iterdir()) == []
