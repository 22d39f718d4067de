"""A signal that falls inside a step which must stay whole (a claim taken, a temporary file made)
acts at the step's end, and leaves no lock or temporary file behind."""

import os
import signal
import tempfile

import pytest

from cogsample.jobs import outputs
from cogsample.jobs.batch import Interrupted, signals_raise
from cogsample.jobs.interrupts import uninterrupted
from cogsample.jobs.outdir import OutDir


def test_a_signal_inside_a_step_acts_at_its_end():
    reached = []
    with pytest.raises(Interrupted) as e, signals_raise():
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("after the signal")
        reached.append("after the step")
    assert reached == ["after the signal"] and e.value.exit_code == 130


def test_a_signal_right_after_the_claim_is_taken_releases_it(tmp_path, monkeypatch):
    d = OutDir(tmp_path)
    take = OutDir.try_claim

    def taken_then_signalled(self, stem):
        claim = take(self, stem)
        os.kill(os.getpid(), signal.SIGTERM)  # the worst moment: held, not yet inside the with block
        return claim

    monkeypatch.setattr(OutDir, "try_claim", taken_then_signalled)
    with pytest.raises(Interrupted), signals_raise():
        with d.claimed("video"):
            pytest.fail("the signal acts before the block")
    assert list(tmp_path.iterdir()) == []  # no lock file left


def test_a_signal_right_after_the_temporary_file_is_made_removes_it(tmp_path, monkeypatch):
    make = tempfile.mkstemp

    def made_then_signalled(*a, **k):
        made = make(*a, **k)
        os.kill(os.getpid(), signal.SIGINT)
        return made

    monkeypatch.setattr(outputs.tempfile, "mkstemp", made_then_signalled)
    with pytest.raises(Interrupted), signals_raise():
        with outputs.atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
    assert list(tmp_path.iterdir()) == []
