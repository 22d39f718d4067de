"""``cogsample serve``'s command line: bad options refused before the socket opens (exit 2, one
line naming the option); what binds beyond loopback."""

import pytest

from cogsample.cli.main import main
from cogsample.server import is_loopback


@pytest.mark.parametrize(
    "args, words",
    [
        (["--port", "70000"], "--port must be 0..65535"),
        (["--overwrite"], "--overwrite does not go with serve"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
        (["--steps", "0"], "steps"),
        (["--frames", "10"], "frames"),
        (["--model", "/no/such/model"], "/no/such/model"),
    ],
)
def test_bad_options_are_refused_before_listening(tmp_path, capsys, args, words):
    assert main(["serve", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cogsample serve: error:") and words in err, err


def test_only_loopback_addresses_count_as_this_machine():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.2", "example.org"]))
