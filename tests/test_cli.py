"""The command line entry points."""

import subprocess
import sys

from cogsample.cli import main
from cogsample.samplers import SAMPLERS


def test_samplers_lists_every_sampler_with_its_sat_name(capsys):
    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    for spec in SAMPLERS.values():
        assert spec.name in out and spec.reference[0] in out
    assert "s_churn=0.0" in out


def test_module_entry_point_and_usage_errors():
    ok = subprocess.run([sys.executable, "-m", "cogsample", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "golden" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "cogsample", "golden"], capture_output=True, text=True)
    assert bad.returncode == 2 and "DIR" in bad.stderr
