import pytest

from cogsample.jobs.distributed import Launch


def test_alone_without_torchrun_variables():
    assert Launch.from_env({}) == Launch(0, 1, 0) and not Launch.from_env({}).distributed


def test_torchrun_variables_share_and_device():
    launch = Launch.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert launch.share(list(range(10))) == [3, 7]
    assert launch.device(None, cuda_available=True) == "cuda:1" and launch.device("cuda", True) == "cuda:1"
    assert launch.device(None, cuda_available=False) is None and launch.device("cpu", True) == "cpu"
    assert launch.record() == {"engine": "torchrun", "rank": 3, "world_size": 4}


@pytest.mark.parametrize(
    "env, match",
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' must be an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK < WORLD_SIZE"),
    ],
)
def test_bad_variables_are_named(env, match):
    with pytest.raises(ValueError, match=match):
        Launch.from_env(env)


def test_a_usage_error_is_the_launchers_root_cause(tmp_path, monkeypatch):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from cogsample.jobs.distributed import record_error

    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    assert record_error("cogsample generate: error: x") is False  # not under torchrun: nowhere to write
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    line = "cogsample generate: error: --parallel ulysses=2 shards a transformer's attention over ranks"
    assert record_error(line) is True
    # torchrun reads the file with torch's own ProcessFailure and shows it in its summary
    failure = ProcessFailure(local_rank=0, pid=1, exitcode=2, error_file=str(error_file))
    summary = ChildFailedError("cogsample", {0: failure}).format_msg()
    assert f"traceback : {line}\n" in summary and "To enable traceback" not in summary
