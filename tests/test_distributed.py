import pytest

from cogsample.distributed import Launch


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
