"""The speed benchmark's structure (not its figures, which depend on the machine): one quick run
of :func:`run_speed`, every number finite, and the comparison's exactness checks."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from cogsample.bench import speed


def _numbers(obj, where="result"):
    """Every (path, number) in a JSON-like tree; fails on anything that is not plain JSON."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str), where
            yield from _numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{where}[{i}]")
    elif isinstance(obj, (bool, str)):
        return
    else:
        assert isinstance(obj, (int, float)), f"{where} is a {type(obj).__name__}"
        yield where, obj


@pytest.fixture(scope="module")
def result() -> dict:
    return speed.run_speed(quick=True)


def test_every_figure_is_finite_json(result) -> None:
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    numbers = list(_numbers(result))
    assert len(numbers) > 30
    bad = [(where, v) for where, v in numbers if not math.isfinite(v)]
    assert not bad
    sections = {"compare_diffusers", "sampler_overhead", "compile", "peak_memory", "gpu_5b"}
    assert set(result) == {"quick", "device", "wall_s", *sections}
    assert result["quick"] is True
    assert {"cpu", "cpu_count", "torch", "cuda_device"} <= set(result["device"])


def test_cogsample_and_diffusers_do_the_same_work(result) -> None:
    cmp = result["compare_diffusers"]
    assert cmp["forwards_equal"] and cmp["cogsample"]["forwards"] == cmp["setup"]["steps"]
    assert cmp["latents_identical"] and cmp["video_identical"]
    for side in ("cogsample", "diffusers"):
        for key in ("loop_s_per_step", "video_s", "encode_s", "decode_s"):
            assert set(cmp[side][key]) == {"median", "min"} and cmp[side][key]["min"] > 0
    assert set(cmp["ratio_cogsample_over_diffusers"]) == {"loop", "loop_min", "video", "video_min"}
    assert {"encode_s", "loop_s", "decode_s", "rest_s", "gc_collect_s"} == set(cmp["difference_by_phase"])


def test_overhead_compile_memory_and_gpu_sections(result) -> None:
    over = result["sampler_overhead"]
    for profile in ("diffusers", "sat"):
        tiny = over["tiny"][profile]
        assert tiny["overhead_ms"]["median"] > 0 and tiny["real_step_ms"]["median"] > 0
        assert over["cogvideox_5b_shapes"][profile]["overhead_ms"]["median"] > 0
    for shapes in ("tiny", "cogvideox_5b_shapes"):
        assert over[shapes]["diffusers_overhead_ms"]["median"] > 0  # diffusers' own loop, for scale
    assert over["cogvideox_5b_shapes"]["latent_shape"] == [1, 13, 16, 60, 90]
    assert result["compile"] == {"skipped": "quick"}
    for library in ("cogsample", "diffusers"):
        mem = result["peak_memory"][library]
        assert "error" not in mem, mem
        assert mem["peak_rss_generation_mib"] >= mem["rss_after_load_mib"] > 0
        assert mem["peak_rss_load_mib"] >= mem["rss_after_load_mib"]
    if not torch.cuda.is_available():
        assert result["gpu_5b"] == {"skipped": "no CUDA device"}


def test_the_gpu_comparison_runs_on_a_tiny_config_on_the_cpu() -> None:
    """gpu_5b's code path, on a transformer small enough for the CPU."""
    config = dict(
        speed.COGVIDEOX_5B_TRANSFORMER,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        text_embed_dim=32,
        max_text_seq_length=16,
        time_embed_dim=16,
        sample_height=4,
        sample_width=6,
        sample_frames=9,
    )
    out = speed._loop_compare(
        config, speed.BENCH_VIDEO, device="cpu", dtype=torch.float32, steps=2, repeats=1, compile=False
    )
    assert out["latents_identical"] and out["latent_shape"] == [1, 3, 16, 4, 6]
    assert out["cogsample"]["s_per_step"]["median"] > 0 and out["diffusers"]["s_per_step"]["median"] > 0
    assert out["compile"] == {"skipped": "quick"}
    assert all(math.isfinite(v) for _, v in _numbers(out))
