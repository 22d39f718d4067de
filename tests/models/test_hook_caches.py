"""Step caches through diffusers' hooks (cogsample.models.hook_caches) on the trained built-in model:
every kind through the CLI, a JSONL line and the API (the same name each way, another name than
without a cache), under context windows and CFG-parallel ranks, or refused before any work."""

import importlib.util
import json

import pytest
import torch

pytest.importorskip("diffusers")

import cogsample
from cogsample.cli.main import main
from cogsample.models.hook_caches import HOOK_KINDS, KINDS, HookCachedNetwork, check_cache, parse_cache
from cogsample.sampling.cache import CacheConfig

PROMPT = "a red ball bouncing on a black background"
SMALL = ["--frames", "9", "--height", "64", "--width", "96", "--steps", "6"]
MODEL = ["--model", "builtin-trained"]
#: each kind at settings that reuse something within 6 steps
SPECS = {
    "output": "output:threshold=0.5",
    "first-block": "first-block:threshold=0.3",
    "faster": "faster:attn_below=1000,uncond_below=1000",
    "pab": "pab:above=0,below=1000",
    "mag": "mag:threshold=0.5,retention=0",
    "taylorseer": "taylorseer:warmup=1,interval=2",
    "sea": "sea:threshold=1.0,retention=0,end=0",
}
#: cache-dit's DBCache, where the optional extra is installed
DBCACHE = "dbcache:threshold=0.3,warmup=2"
if importlib.util.find_spec("cache_dit") is not None:
    SPECS["dbcache"] = DBCACHE
assert set(SPECS) | {"dbcache"} == set(KINDS)


def _stems(out):
    return sorted(p.name.split(".")[0] for p in out.glob("*.mp4"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    assert main(["generate", *MODEL, "--prompt", PROMPT, *SMALL, "--out", str(out), "--quiet"]) == 0
    return _stems(out)[0]


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    """One batch, a line per kind: ``{kind: stem}``."""
    out = tmp_path_factory.mktemp("jsonl")
    lines = out / "v.jsonl"
    lines.write_text("".join(json.dumps({"prompt": PROMPT, "cache": SPECS[k], "seed": 42}) + "\n" for k in SPECS))
    assert main(["generate", *MODEL, "--prompts-file", str(lines), *SMALL, "--out", str(out / "o"), "--quiet"]) == 0
    kinds = {}
    for meta in (out / "o").glob("*.json"):
        kinds[json.loads(meta.read_text())["sampling"]["cache"]["kind"]] = meta.name.split(".")[0]
    return kinds


@pytest.fixture(scope="module")
def pipe():
    return cogsample.Pipeline.load("builtin-trained", device="cpu")


@pytest.mark.parametrize("kind", list(SPECS))
def test_each_kind_through_cli_jsonl_and_api_names_the_video_alike(tmp_path, plain, jsonl, pipe, kind):
    spec = SPECS[kind]
    cli = tmp_path / "cli"
    assert main(["generate", *MODEL, "--prompt", PROMPT, *SMALL, "--cache", spec, "--out", str(cli), "--quiet"]) == 0
    (stem,) = _stems(cli)
    assert stem != plain  # a cache changes what the video is
    meta = json.loads((cli / f"{stem}.json").read_text())
    config = CacheConfig.from_dict(meta["sampling"]["cache"])
    assert config.kind == kind and config == parse_cache(spec, "builtin-trained")
    # NAME.json's command gives the same config back, hence the same name
    assert meta["command"][meta["command"].index("--cache") + 1] == config.spec()
    assert parse_cache(config.spec(), "builtin-trained") == config
    assert jsonl[kind] == stem
    result = pipe(PROMPT, frames=9, height=64, width=96, steps=6, cache=spec)
    assert result.stem == stem and torch.isfinite(result.latents).all()


@pytest.fixture(scope="module")
def trained():
    from cogsample.models import load

    return load("builtin-trained", device=torch.device("cpu"), dtype=torch.float32)


#: settings that reuse within 8 deterministic steps
GENEROUS = {**SPECS, "first-block": "first-block:threshold=2.0", "dbcache": "dbcache:threshold=2.0,warmup=1"}


@pytest.mark.parametrize("kind", [k for k in HOOK_KINDS if k in SPECS])
def test_hooks_reuse_count_blocks_and_come_off(trained, kind):
    from cogsample.sampling.config import SamplingConfig, sample
    from cogsample.sampling.guidance import Conditioning
    from cogsample.sampling.noise import SeededNoise, latent_shape

    model = trained
    net = model.network
    config = SamplingConfig(steps=8, sampler="vpode_dpmpp_2m", cache=parse_cache(GENEROUS[kind], "builtin-trained"))
    cond = Conditioning(model.encode_prompts([PROMPT]))
    noise = SeededNoise([1])
    seen = {}

    def keep(cached):
        seen.update(calls=cached.calls, blocks=cached.blocks, attention=cached.attention, reused=cached.reused)

    from cogsample.sampling import config as sampling_config

    real = sampling_config.release

    def release(m):
        keep(m.owned_cache)
        real(m)

    sampling_config.release = release
    try:
        x = sample(net, noise.initial(latent_shape(1, 9, 64, 96)), cond, config, noise=noise)
    finally:
        sampling_config.release = real
    n = len(model.transformer.transformer_blocks)
    assert torch.isfinite(x).all() and seen["calls"] == 8
    # something was reused: fewer blocks or attentions evaluated than calls x blocks
    assert min(seen["blocks"], seen["attention"]) < 8 * n, seen
    assert not model.transformer.is_cache_enabled  # released after the video
    assert all(not b.norm1._forward_hooks for b in model.transformer.transformer_blocks)


def test_parse_refuses_with_the_parameter_value_and_what_is_allowed():
    cases = [
        ("first-block:thresh=0.1", "--cache first-block has no setting 'thresh'; allowed: threshold"),
        ("first-block:threshold=-1", "--cache first-block: threshold must be a finite number > 0, got '-1'"),
        ("taylorseer:lite=maybe", "--cache taylorseer: lite must be true or false, got 'maybe'"),
        ("sea:order=2", "--cache sea: order must be one of 0, 1, got '2'"),
        (
            "teacache",
            "--cache kind must be one of output, first-block, faster, pab, mag, taylorseer, sea, dbcache, got 'tea",
        ),
        ("layer-skip", "--cache 'layer-skip' is not a step cache: diffusers' LayerSkipConfig drops blocks"),
        ("pab:attn", "--cache 'pab:attn': settings go as key=value, got 'attn'"),
        ("output", "--cache output needs a threshold"),
    ]
    for spec, message in cases:
        with pytest.raises(ValueError) as e:
            parse_cache(spec, "builtin-trained")
        assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(ValueError, match=r"model 'builtin' has none .*use --cache output:threshold=T"):
        parse_cache("taylorseer", "builtin", exact=True)
    with pytest.raises(ValueError, match="--cache mag needs residual magnitude ratios calibrated on model '/m'"):
        parse_cache("mag", "/m")
    assert parse_cache(0.2, "builtin", exact=True) == CacheConfig.output(0.2)
    assert parse_cache(0.2, "/m") == CacheConfig("first-block", {"threshold": 0.2})


def test_context_windows_keep_one_cache_context_per_window(tmp_path, capsys):
    lines = tmp_path / "w.jsonl"
    kinds = [k for k in HOOK_KINDS if KINDS[k].keyed and k in SPECS]
    lines.write_text("".join(json.dumps({"prompt": PROMPT, "cache": SPECS[k]}) + "\n" for k in kinds))
    out = tmp_path / "o"
    argv = ["generate", *MODEL, "--prompts-file", str(lines), "--frames", "2x", "--steps", "3", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    assert len(_stems(out)) == len(kinds)
    for k in ("faster", "pab"):  # one state per layer: refused before any work
        rc = main(["generate", *MODEL, "--prompt", PROMPT, "--frames", "2x", "--cache", k, "--out", str(tmp_path / k)])
        assert rc != 0 and "not one per cache context: under context windows" in capsys.readouterr().err
        assert not (tmp_path / k).exists()


def test_windows_and_rows_get_their_own_contexts(trained):
    from cogsample.sampling.calls import network_call

    model = trained
    net = HookCachedNetwork(model.network, parse_cache("first-block", "builtin-trained"), calls=4)
    x, ctx = torch.randn(2, 3, 16, 8, 12), model.encode_prompts(["", PROMPT])
    try:
        for window in (0, 1):
            with network_call(window=window):
                net(x, torch.full((2,), 500.0), ctx)
        net(x[:1], torch.full((1,), 500.0), ctx[1:])
        assert net._contexts == {"window0:rows2": 1, "window1:rows2": 1, "window0:rows1": 1}
    finally:
        net.detach()


def test_cfg_parallel_ranks_run_every_kind_that_can_and_refuse_faster(tmp_path):
    from processes import run_bounded, torchrun

    lines = tmp_path / "p.jsonl"
    kinds = [k for k in SPECS if not KINDS[k].batched_cfg]
    lines.write_text("".join(json.dumps({"prompt": PROMPT, "cache": SPECS[k]}) + "\n" for k in kinds))
    out = tmp_path / "par"
    args = ["-m", "cogsample", "generate", *MODEL, "--prompts-file", str(lines), *SMALL, "--out", str(out), "--quiet"]
    rc, _, err = run_bounded([*torchrun(2, *args), "--parallel", "cfg=2"], timeout=150)
    assert rc == 0, err[-3000:]
    assert len(_stems(out)) == len(kinds)
    for meta in out.glob("*.json"):
        assert json.loads(meta.read_text())["parallel"] == {"cfg": 2, "ulysses": 1}
    # what cannot run on CFG-parallel or Ulysses ranks is refused while planning (cli.generate_plan)
    with pytest.raises(ValueError, match="each rank runs one branch"):
        check_cache(parse_cache("faster", "builtin-trained"), cfg_parallel=True)
    for kind in ("first-block", "sea"):
        with pytest.raises(ValueError, match="ranks would skip differently and their collectives deadlock"):
            check_cache(parse_cache(kind, "builtin-trained"), ulysses=True)
    for kind in ("pab", "mag", "taylorseer"):
        check_cache(parse_cache(kind, "builtin-trained"), ulysses=True, cfg_parallel=True)


def test_dbcache_is_cache_dits_and_optional():
    if importlib.util.find_spec("cache_dit") is None:
        with pytest.raises(ValueError, match=r"pip install 'cogsample\[cachedit\]'"):
            parse_cache(DBCACHE, "builtin-trained")
    else:
        assert parse_cache(DBCACHE, "builtin-trained").params == {"threshold": 0.3, "fn": 1, "bn": 0, "warmup": 2}


def test_python_api_refuses_before_any_network_call(pipe):
    with pytest.raises(ValueError, match="--cache faster approximates the unconditional rows"):
        pipe(PROMPT, frames=9, height=64, width=96, steps=4, cache="faster", guidance="none")
