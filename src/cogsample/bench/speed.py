"""Speed and memory: cogsample against diffusers on the same CogVideoX, and what cogsample adds.

Every function returns a JSON-ready dict (strings, bools, ints and finite floats; times in
seconds ``*_s`` or milliseconds ``*_ms``) and takes ``quick`` (a smaller run for tests):

* :func:`compare_diffusers`: diffusers' ``CogVideoXPipeline`` and cogsample's ``diffusers``
  profile on the same tiny random-weight folder and loaded modules, same prompt, size, steps,
  seed and generator: seconds per step and per video, transformer forwards, bit-identity;
* :func:`sampler_overhead`: the cogsample loop with the real transformer and with a stub that
  returns a precomputed output, so the difference is the network; also at CogVideoX-5B shapes;
* :func:`compile_effect`: the tiny transformer's step with and without ``torch.compile``;
* :func:`peak_memory`: peak memory of a whole generation, each library in a fresh process;
* :func:`gpu_5b`: a random-weight CogVideoX-5B transformer on CUDA (skipped without one);
* :func:`run_speed`: all of the above plus a description of the machine.

Timings are medians (and minima) of interleaved repeats after a warm-up
(:func:`~cogsample.bench.harness.interleaved`), so that slow drift and other processes on the
machine hit both sides alike; the minimum is the better estimate of the intrinsic cost on a busy
machine, the median of what a user sees.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..reference.profiles import COGVIDEOX_5B_SCHEDULER, diffusers_sampling, sat_sampling
from ..sampling.config import sample
from ..sampling.guidance import Conditioning
from ..sampling.noise import DiffusersNoise, GlobalNoise, latent_shape
from .harness import (
    BENCH_SIZE,
    BENCH_VIDEO,
    GUIDANCE_SCALE,
    PROMPT,
    SEED,
    device_info,
    interleaved,
    loadavg,
    non_finite,
    quiet,
    ratio,
    stats,
    step_times,
    sync,
    tiny_folder,
    tiny_model,
)

Tensor = torch.Tensor

__all__ = [
    "BENCH_SIZE",
    "BENCH_VIDEO",
    "COGVIDEOX_5B_TRANSFORMER",
    "compare_diffusers",
    "compile_effect",
    "cpu_2b",
    "device_info",
    "gpu_5b",
    "peak_memory",
    "run_speed",
    "sampler_overhead",
]

#: diffusers' ``transformer/config.json`` of CogVideoX-5B (THUDM/CogVideoX-5b).
COGVIDEOX_5B_TRANSFORMER: dict[str, Any] = {
    "num_attention_heads": 48,
    "attention_head_dim": 64,
    "in_channels": 16,
    "out_channels": 16,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "time_embed_dim": 512,
    "text_embed_dim": 4096,
    "num_layers": 42,
    "dropout": 0.0,
    "attention_bias": True,
    "sample_width": 90,
    "sample_height": 60,
    "sample_frames": 49,
    "patch_size": 2,
    "patch_size_t": None,
    "temporal_compression_ratio": 4,
    "max_text_seq_length": 226,
    "activation_fn": "gelu-approximate",
    "timestep_activation_fn": "silu",
    "norm_elementwise_affine": True,
    "norm_eps": 1e-5,
    "spatial_interpolation_scale": 1.875,
    "temporal_interpolation_scale": 1.0,
    "use_rotary_positional_embeddings": True,
    "use_learned_positional_embeddings": False,
}
#: diffusers' ``transformer/config.json`` of CogVideoX-2B (THUDM/CogVideoX-2b): 30 blocks of 30 x 64
#: heads, sinusoidal positions (no rotary).
COGVIDEOX_2B_TRANSFORMER: dict[str, Any] = {
    **COGVIDEOX_5B_TRANSFORMER,
    "num_attention_heads": 30,
    "num_layers": 30,
    "use_rotary_positional_embeddings": False,
}
#: A small video for the 2B-sized transformer on a CPU: 9 frames at 160 x 240 (3 x 20 x 30 latents).
VIDEO_2B_CPU = {"frames": 9, "height": 160, "width": 240}
#: CogVideoX-5B's generation size: 49 frames at 480 x 720 px (13 x 60 x 90 latents).
VIDEO_5B = {"frames": 49, "height": 480, "width": 720}


# ----------------------------------------------------------------------------------------------
# small helpers


def _scheduler_kwargs() -> dict[str, Any]:
    return {k: v for k, v in COGVIDEOX_5B_SCHEDULER.items() if not k.startswith("_")}


def _diffusers_sampler(steps: int, seed: int = SEED) -> dict[str, Any]:
    """diffusers' side of every comparison: ``steps`` steps of dynamic CFG at :data:`GUIDANCE_SCALE`,
    a fresh generator seeded ``seed`` (the same draws as cogsample's ``diffusers`` profile)."""
    return {
        "num_inference_steps": steps,
        "guidance_scale": GUIDANCE_SCALE,
        "use_dynamic_cfg": True,
        "generator": torch.Generator().manual_seed(seed),
    }


def _diffusers_size(video: dict[str, int]) -> dict[str, int]:
    """A video size as diffusers' pipeline takes it (``num_frames``, ``height``, ``width``)."""
    return {"num_frames" if k == "frames" else k: v for k, v in video.items()}


class _ForwardClock:
    """Counts a module's forward calls and stamps the start of the first one (a pre-hook)."""

    def __init__(self, module: nn.Module):
        self.handle = module.register_forward_pre_hook(self._pre)
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.first: float | None = None

    def _pre(self, _module: nn.Module, _args: Any) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.count += 1

    def remove(self) -> None:
        self.handle.remove()


def _diffusers_pipe(model: Any) -> Any:
    """diffusers' ``CogVideoXPipeline`` over the very modules of a loaded :class:`CogVideoXModel`."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler, CogVideoXPipeline

    config = {k: v for k, v in model.info.scheduler.items() if not k.startswith("_")}
    ddim = model.info.scheduler.get("_class_name") == "CogVideoXDDIMScheduler"
    scheduler = (CogVideoXDDIMScheduler if ddim else CogVideoXDPMScheduler)(**config)
    pipe = CogVideoXPipeline(
        tokenizer=model.tokenizer,
        text_encoder=model.text_encoder,
        vae=model.vae,
        transformer=model.transformer,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latent_pipe(transformer: nn.Module) -> Any:
    """diffusers' ``CogVideoXPipeline`` around ``transformer`` alone (no text encoder, no VAE: it
    takes prompt embeddings and returns latents), with CogVideoX-5B's scheduler."""
    from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline

    pipe = CogVideoXPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        transformer=transformer,
        scheduler=CogVideoXDPMScheduler(**_scheduler_kwargs()),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _diffusers_latents(pipe: Any, cond: Conditioning, video: dict[str, int], steps: int, **callback: Any) -> Tensor:
    """diffusers' loop of a :func:`_latent_pipe` at ``video``'s size: dynamic CFG, seeded generator."""
    with quiet():
        return pipe(
            prompt_embeds=cond.context,
            negative_prompt_embeds=cond.uncond_context,
            **_diffusers_sampler(steps),
            output_type="latent",
            **callback,
            **_diffusers_size(video),
        ).frames


def _random_text(config: dict[str, Any], g: torch.Generator, device: Any, dtype: torch.dtype) -> Conditioning:
    """Random prompt and negative-prompt embeddings of a transformer ``config``'s text size, drawn from ``g``."""
    text = torch.randn(2, config["max_text_seq_length"], config["text_embed_dim"], generator=g).to(device, dtype)
    return Conditioning(text[:1], uncond_context=text[1:])


def _tiny_inputs(model: Any) -> tuple[Tensor, Conditioning]:
    """The tiny runs' start: unit noise of :data:`BENCH_VIDEO` (seed 0), :data:`PROMPT` and the empty prompt."""
    x = torch.randn(latent_shape(1, **BENCH_VIDEO), generator=torch.Generator().manual_seed(0))
    return x, Conditioning(model.encode_prompts([PROMPT]), uncond_context=model.encode_prompts([""]))


def _cfg_batch(x: Tensor, cond: Conditioning) -> tuple[Tensor, Tensor, Tensor]:
    """One network call's inputs for both CFG branches at the first step (t = 999)."""
    return torch.cat([x, x]), torch.full((2,), 999.0), torch.cat([cond.context, cond.context])


def _params_m(module: nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


# ----------------------------------------------------------------------------------------------
# a. cogsample against diffusers

#: One whole video's figures (forwards, ``steps_s``, ``video_s``, ``encode_s``, ``decode_s``),
#: final latents and decoded frames.
Video = tuple[dict[str, Any], Tensor, Tensor]


def compare_diffusers(
    quick: bool = False, *, steps: int | None = None, repeats: int | None = None, seed: int = SEED
) -> dict[str, Any]:
    """Wall time of a whole video and of the denoising loop, cogsample's ``diffusers`` profile
    (:func:`~cogsample.jobs.batch.run_plan`) against ``CogVideoXPipeline`` on the same modules.

    * ``loop_s_per_step``: each step's duration, from one step's end to the next (step callbacks
      on both sides; the first step from the start of the first transformer forward), over every
      step of every repeat: the same clock for both;
    * ``video_s``: the whole generation in memory: diffusers' call (``output_type="pt"``);
      cogsample's :func:`run_plan` minus writing its files (``save_s``), i.e. encode, noise,
      sample, decode; ``encode_s`` / ``decode_s``: those phases alone (cogsample: ``Result.timings``;
      diffusers: ``encode_prompt`` and after the last step);
    * ``forwards``: transformer forward calls per video (a hook; ``forwards_equal``: the same
      count on both sides in every run), ``latents_identical`` / ``video_identical``: the final
      latents and decoded frames compared bit for bit;
    * ``difference_by_phase``: where the whole-video difference goes (medians, cogsample minus
      diffusers), and ``gc_collect_s``: one ``gc.collect()`` in this process, which cogsample's
      ``run_plan`` pays per call (``release_text_encoder``) and diffusers does not.
    """
    steps = steps or (4 if quick else 20)
    repeats = repeats or (2 if quick else 5)
    with tiny_model() as (folder, model), tempfile.TemporaryDirectory(prefix="cogsample-speed-out-") as out:
        pipe = _diffusers_pipe(model)
        p = _plan(folder, out, steps, seed)
        clock = _ForwardClock(model.transformer)
        runners = {
            "cogsample": _cogsample_video(model, p, clock),
            "diffusers": _diffusers_video(pipe, model.info.max_text_len, clock, steps, seed),
        }
        # The warm-up run (first-call allocations, lazy imports) is also the one whose outputs are compared.
        warm, runs = interleaved(runners, repeats, keep=lambda video: video[0])
        clock.remove()
        params_m = _params_m(model.transformer)
        gc_s = _gc_collect_s()
    cog, dif = (_video_summary(warm[name], runs[name]) for name in ("cogsample", "diffusers"))
    (_, lat_c, vid_c), (_, lat_d, vid_d) = warm["cogsample"], warm["diffusers"]
    counts = {
        figures["forwards"] for figures in [w[0] for w in warm.values()] + [r for rs in runs.values() for r in rs]
    }
    setup = {
        "transformer": asdict(BENCH_SIZE),
        "transformer_params_m": params_m,
        **BENCH_VIDEO,
        "latent_shape": list(p.shape),
        "steps": steps,
        "repeats": repeats,
        "scheduler": str(model.info.scheduler.get("_class_name")),
        "cogsample_sampler": p.sampling.sampler,
        "guidance": f"dynamic CFG {GUIDANCE_SCALE:g} (batch 2)",
        "dtype": "float32",
        "seed": seed,
    }
    return {
        "setup": setup,
        "cogsample": cog,
        "diffusers": dif,
        "ratio_cogsample_over_diffusers": _video_ratios(cog, dif),
        "difference_by_phase": {**_by_phase(cog, dif, steps), "gc_collect_s": gc_s},
        "forwards_equal": len(counts) == 1,
        "latents_identical": _identical(lat_c, lat_d),
        "video_identical": _identical(vid_c, vid_d),
    }


def _identical(a: Tensor, b: Tensor) -> bool:
    """Bit for bit the same (shape and values)."""
    return bool(a.shape == b.shape and torch.equal(a, b))


def _plan(folder: Path, out: str, steps: int, seed: int) -> Any:
    """cogsample's plan of the compared video: the ``diffusers`` profile, dynamic CFG, float32 on the CPU."""
    from ..pipeline.options import GenerateOptions
    from ..pipeline.planning import plan

    opts = GenerateOptions(
        prompts=(PROMPT,),
        model=str(folder),
        out=out,
        profile="diffusers",
        steps=steps,
        guidance="dynamic",
        scale=GUIDANCE_SCALE,
        seed=seed,
        dtype="float32",
        device="cpu",
        **BENCH_VIDEO,
    )
    with quiet():
        return plan(opts)


def _cogsample_video(model: Any, p: Any, clock: _ForwardClock) -> Callable[[], Video]:
    """One whole video by cogsample's ``run_plan`` of ``p`` on the loaded ``model``."""
    from ..jobs.batch import run_plan

    def run() -> Video:
        text_encoder = model.text_encoder
        ends: list[float] = []
        clock.reset()
        t0 = time.perf_counter()
        with quiet():
            (res,) = run_plan(p, model=model, overwrite=True, progress=lambda _event: ends.append(time.perf_counter()))
        wall = time.perf_counter() - t0
        model.text_encoder = text_encoder  # run_plan released it; the next run needs it
        t = res.timings
        figures = {
            "forwards": clock.count,
            "steps_s": step_times(clock.first, ends),
            "video_s": wall - t["save_s"],
            "encode_s": t["encode_s"],
            "decode_s": t["decode_s"],
        }
        return figures, res.latents, res.video

    return run


def _diffusers_video(pipe: Any, text_len: int, clock: _ForwardClock, steps: int, seed: int) -> Callable[[], Video]:
    """One whole video by diffusers' ``pipe`` (:func:`_diffusers_pipe`), frames out in memory;
    ``encode_s`` from its ``encode_prompt``, wrapped for the call; prompts padded to ``text_len``."""

    def run() -> Video:
        ends: list[float] = []
        final: dict[str, Tensor] = {}
        encode: list[float] = []
        original = pipe.encode_prompt

        def timed_encode(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            encode.append(time.perf_counter() - t0)
            return out

        def on_step(_pipe: Any, _i: int, _t: Any, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
            ends.append(time.perf_counter())
            final["latents"] = tensors["latents"]
            return {}

        pipe.encode_prompt = timed_encode  # an instance attribute over the method, removed below
        clock.reset()
        try:
            t0 = time.perf_counter()
            with quiet():
                frames = pipe(
                    prompt=PROMPT,
                    negative_prompt="",
                    **_diffusers_sampler(steps, seed),
                    output_type="pt",
                    max_sequence_length=text_len,
                    callback_on_step_end=on_step,
                    callback_on_step_end_tensor_inputs=["latents"],
                    **_diffusers_size(BENCH_VIDEO),
                ).frames
            end = time.perf_counter()
        finally:
            del pipe.__dict__["encode_prompt"]
        figures = {
            "forwards": clock.count,
            "steps_s": step_times(clock.first, ends),
            "video_s": end - t0,
            "encode_s": encode[0],
            "decode_s": end - ends[-1],
        }
        return figures, final["latents"], frames[0]

    return run


def _gc_collect_s() -> float:
    """Seconds of one ``gc.collect()`` here: ``run_plan``'s ``release_text_encoder()`` runs one, whose
    time grows with the objects alive (torch, diffusers, transformers)."""
    t0 = time.perf_counter()
    gc.collect()
    return time.perf_counter() - t0


def _video_summary(warm: Video, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One side's figures over its repeats: median and minimum seconds, forwards of the warm-up."""
    return {
        # every step of every repeat: many samples, so the median resists a busy machine
        "loop_s_per_step": stats([s for r in runs for s in r["steps_s"]]),
        "video_s": stats([r["video_s"] for r in runs]),
        "encode_s": stats([r["encode_s"] for r in runs]),
        "decode_s": stats([r["decode_s"] for r in runs]),
        "forwards": int(warm[0]["forwards"]),
    }


def _video_ratios(cog: dict[str, Any], dif: dict[str, Any]) -> dict[str, float]:
    """cogsample over diffusers: loop step and whole video, medians and minima."""
    return {
        f"{what}{suffix}": ratio(cog[key][stat], dif[key][stat])
        for what, key in (("loop", "loop_s_per_step"), ("video", "video_s"))
        for suffix, stat in (("", "median"), ("_min", "min"))
    }


def _by_phase(cog: dict[str, Any], dif: dict[str, Any], steps: int) -> dict[str, float]:
    """Where the whole-video difference goes (medians, cogsample minus diffusers, seconds)."""
    phases = {
        "encode_s": cog["encode_s"]["median"] - dif["encode_s"]["median"],
        "loop_s": (cog["loop_s_per_step"]["median"] - dif["loop_s_per_step"]["median"]) * steps,
        "decode_s": cog["decode_s"]["median"] - dif["decode_s"]["median"],
    }
    phases["rest_s"] = cog["video_s"]["median"] - dif["video_s"]["median"] - sum(phases.values())
    return phases


# ----------------------------------------------------------------------------------------------
# b. sampler overhead


class _StubTransformer(nn.Module):
    """Stands in for ``CogVideoXTransformer3DModel``: its config, one precomputed output, no work.

    Stubbing the transformer (not the whole network) keeps cogsample's adapter (input checks,
    casts, rotary-table lookup) in the measured overhead, where it belongs; the attributes
    diffusers' pipeline reads (``device``, ``dtype``, ``cache_context``) let it drive one too.
    """

    def __init__(self, config: Any, output: Tensor):
        super().__init__()
        self.config = config
        self.output = output
        # The adapter reads the dtype from the parameters.
        self.anchor = nn.Parameter(torch.zeros((), dtype=output.dtype, device=output.device), requires_grad=False)

    @property
    def device(self) -> torch.device:
        return self.output.device

    @property
    def dtype(self) -> torch.dtype:
        return self.output.dtype

    def cache_context(self, _name: str) -> Any:
        return nullcontext()

    def forward(self, **_inputs: Any) -> tuple[Tensor]:
        return (self.output,)


def _profiles(steps: int) -> dict[str, Any]:
    """The two profiles' sampling configs at ``steps``, each with its noise-source factory."""
    return {
        "diffusers": (
            diffusers_sampling(COGVIDEOX_5B_SCHEDULER, steps=steps, guidance_scale=GUIDANCE_SCALE),
            lambda: DiffusersNoise(torch.Generator().manual_seed(SEED)),
        ),
        "sat": (sat_sampling(steps=steps, guidance_scale=GUIDANCE_SCALE), GlobalNoise),
    }


def _intervals(ends: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(ends)]


def _ms_per_step(network: Any, x: Tensor, cond: Conditioning, config: Any, noise: Callable[[], Any], repeats: int):
    """Median and min milliseconds of one step of ``sample``: the intervals between consecutive
    step ends (steady state: per-video set-up is not a step's cost), after a warm-up run."""
    times: list[float] = []
    for r in range(repeats + 1):
        torch.manual_seed(SEED)
        ends: list[float] = []

        def stamp(_i: int, x_i: Tensor, _d: Tensor, ends: list[float] = ends) -> None:
            sync(x_i.device)
            ends.append(time.perf_counter())

        with quiet():
            sample(network, x, cond, config, noise=noise(), callback=stamp)
        if r:  # r == 0 is the warm-up
            times += _intervals(ends)
    return stats(times, 1e3)


def _diffusers_ms_per_step(stub: _StubTransformer, cond: Conditioning, video: dict[str, int], steps: int, repeats: int):
    """:func:`_ms_per_step` for diffusers' own loop (``CogVideoXPipeline``, prompt embeddings
    given, latents out) driving the stub transformer: diffusers' overhead at the same shapes."""
    pipe = _latent_pipe(stub)
    times: list[float] = []
    for r in range(repeats + 1):
        ends: list[float] = []

        def stamp(_pipe: Any, _i: int, _t: Any, tensors: dict[str, Tensor], ends: list[float] = ends) -> dict:
            sync(tensors["latents"].device)
            ends.append(time.perf_counter())
            return {}

        _diffusers_latents(
            pipe, cond, video, steps, callback_on_step_end=stamp, callback_on_step_end_tensor_inputs=["latents"]
        )
        if r:
            times += _intervals(ends)
    return stats(times, 1e3)


def sampler_overhead(quick: bool = False) -> dict[str, Any]:
    """Milliseconds per step of everything but the transformer (steady state), both profiles.

    ``tiny``: the benchmark's tiny transformer (:data:`BENCH_SIZE`) against a stub returning a
    precomputed output of the same shape: ``overhead_ms`` is the stub's step, also as a
    percentage of the real step. ``cogvideox_5b_shapes``: the stub alone at CogVideoX-5B's
    latents (13 x 16 x 60 x 90, CFG batch 2, 226 x 4096 text) in float32 on this machine's
    device; the real 5B transformer cannot run here, so only the absolute overhead is reported.
    Both also give ``diffusers_overhead_ms``: diffusers' own pipeline loop on the same stub (the
    same algorithm as the ``diffusers`` profile), for scale.
    """
    return {"tiny": _tiny_overhead(quick), "cogvideox_5b_shapes": _overhead_at_5b_shapes(quick)}


def _tiny_overhead(quick: bool) -> dict[str, Any]:
    """:func:`sampler_overhead` on the tiny transformer: its real step and the stub's."""
    from ..models.cogvideox import CogVideoXTransformerNetwork

    steps = 5 if quick else 20
    repeats = 1 if quick else 3
    with tiny_model() as (_, model):
        x, cond = _tiny_inputs(model)
        out = model.network(*_cfg_batch(x, cond))
        stub_transformer = _StubTransformer(model.transformer.config, out.clone())
        stub = CogVideoXTransformerNetwork(stub_transformer)
        tiny: dict[str, Any] = {"latent_shape": list(x.shape), "steps": steps, "repeats": repeats}
        for name, (config, noise) in _profiles(steps).items():
            real = _ms_per_step(model.network, x, cond, config, noise, repeats)
            over = _ms_per_step(stub, x, cond, config, noise, repeats)
            tiny[name] = {
                "real_step_ms": real,
                "overhead_ms": over,
                "overhead_pct_of_real_step": 100 * ratio(over["median"], real["median"]),
            }
        tiny["diffusers_overhead_ms"] = _diffusers_ms_per_step(stub_transformer, cond, BENCH_VIDEO, steps, repeats)
    return tiny


def _overhead_at_5b_shapes(quick: bool) -> dict[str, Any]:
    """:func:`sampler_overhead` of the stub alone at CogVideoX-5B's shapes."""
    from ..models.cogvideox import CogVideoXTransformerNetwork

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    c = COGVIDEOX_5B_TRANSFORMER
    shape = latent_shape(1, **VIDEO_5B)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device)
    cond = _random_text(c, g, device, torch.float32)
    stub_transformer = _StubTransformer(SimpleNamespace(**c), torch.randn((2, *shape[1:]), generator=g).to(device))
    stub = CogVideoXTransformerNetwork(stub_transformer)
    big: dict[str, Any] = {
        "latent_shape": list(shape),
        "cfg_batch": 2,
        "dtype": "float32",
        "device": str(device),
        "steps": 3 if quick else 10,
        "repeats": 1 if quick else 3,
    }
    for name, (config, noise) in _profiles(big["steps"]).items():
        big[name] = {"overhead_ms": _ms_per_step(stub, x, cond, config, noise, big["repeats"])}
    big["diffusers_overhead_ms"] = _diffusers_ms_per_step(
        stub_transformer, cond, VIDEO_5B, big["steps"], big["repeats"]
    )
    return big


# ----------------------------------------------------------------------------------------------
# c. torch.compile


def _fresh_inductor_cache() -> tuple[Any, str]:
    """A context with an empty inductor cache (so the first compile is a true first compile),
    or a no-op where this torch has no such helper (then a cache may make compiling look fast)."""
    try:
        from torch._inductor.utils import fresh_cache
    except ImportError:
        return nullcontext(), "default"
    return fresh_cache(), "fresh"


def compile_effect(quick: bool = False) -> dict[str, Any]:
    """Milliseconds per step (``diffusers`` profile, CFG batch 2) of the tiny transformer eager
    and under ``torch.compile`` (inductor); compile time (first compiled call minus an eager
    step) with an empty inductor cache (``compile_s_cold``) and again with the cache that compile
    left (``compile_s_warm``, what a later process pays); the largest difference of a compiled
    forward from the eager one. A failure is recorded as ``error``, not raised; ``quick`` skips
    it (compiling takes long)."""
    if quick:
        return {"skipped": "quick"}
    from torch import _dynamo

    from ..models.cogvideox import CogVideoXTransformerNetwork

    steps, repeats = 10, 3
    config, noise = _profiles(steps)["diffusers"]
    cache, cache_kind = _fresh_inductor_cache()
    result: dict[str, Any] = {"backend": "inductor", "cache": cache_kind, "steps": steps, "repeats": repeats}
    with tiny_model() as (_, model):
        x, cond = _tiny_inputs(model)
        x2, t2, ctx2 = _cfg_batch(x, cond)
        eager = _ms_per_step(model.network, x, cond, config, noise, repeats)
        result["eager_ms_per_step"] = eager

        def compile_once() -> tuple[float, Any, Tensor]:
            _dynamo.reset()  # forget earlier compiled code: this call compiles again
            network = CogVideoXTransformerNetwork(torch.compile(model.transformer), vae_scale_factor_spatial=8)
            t0 = time.perf_counter()
            first = network(x2, t2, ctx2)
            return max(time.perf_counter() - t0 - eager["median"] / 1e3, 0.0), network, first

        try:
            with cache:
                result["compile_s_cold"], _, _ = compile_once()
                result["compile_s_warm"], compiled, first = compile_once()
                result["max_abs_diff_vs_eager"] = float((first - model.network(x2, t2, ctx2)).abs().max())
                result["compiled_ms_per_step"] = _ms_per_step(compiled, x, cond, config, noise, repeats)
            result["speedup"] = ratio(eager["median"], result["compiled_ms_per_step"]["median"])
        except Exception as e:  # an environment without a working compiler: record why
            result["error"] = f"{type(e).__name__}: {e}"[:500]
        finally:
            _dynamo.reset()
    return result


# ----------------------------------------------------------------------------------------------
# d. peak memory, each library in a fresh process


def _status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_rss_mib() -> float:
    """Peak RSS of this process's address space. Not ``ru_maxrss``: Linux carries the parent's
    peak into a child across fork and exec, so a child of a big benchmark process would report
    the parent's peak; ``VmHWM`` belongs to the fresh address space (``ru_maxrss`` off Linux)."""
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _reset_peak_rss() -> bool:
    """Restart the ``VmHWM`` peak from the current RSS (Linux >= 4.0); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _memory_child(library: str, folder: str, steps: int, out: str) -> dict[str, Any]:
    """One whole generation (encode, sample, decode) by ``library`` in this process; prints and
    returns its memory figures. Run by :func:`peak_memory` in a fresh interpreter."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with quiet():
        if library == "cogsample":
            from ..jobs.batch import run_plan
            from ..models.cogvideox import load_cogvideox
            from ..pipeline.options import GenerateOptions
            from ..pipeline.planning import plan

            try:  # run_plan writes an mp4 with PyAV: its libraries are not generation memory
                import av  # noqa: F401
            except ImportError:
                pass
            model = load_cogvideox(folder, dtype=torch.float32, device=device)
            opts = GenerateOptions(
                prompts=(PROMPT,),
                model=folder,
                out=out,
                profile="diffusers",
                steps=steps,
                seed=SEED,
                dtype="float32",
                device=str(device),
                **BENCH_VIDEO,
            )

            def generate() -> None:
                run_plan(plan(opts), model=model, overwrite=True)
        else:
            from diffusers import CogVideoXPipeline

            pipe = CogVideoXPipeline.from_pretrained(folder, torch_dtype=torch.float32, local_files_only=True)
            pipe.set_progress_bar_config(disable=True)
            pipe.to(device)

            def generate() -> None:
                pipe(
                    prompt=PROMPT,
                    **_diffusers_sampler(steps),
                    output_type="pt",
                    max_sequence_length=BENCH_SIZE.text_len,
                    **_diffusers_size(BENCH_VIDEO),
                )

        figures: dict[str, Any] = {
            "library": library,
            "device": str(device),
            "rss_after_load_mib": _status_mib("VmRSS") or 0.0,
            "peak_rss_load_mib": _peak_rss_mib(),  # imports and loading
            # True: the generation peak below is the generation's own; False: the whole process's
            "peak_reset_after_load": _reset_peak_rss(),
        }
        if device.type == "cuda":
            torch.cuda.synchronize()
            figures["cuda_allocated_after_load_mib"] = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        generate()
        if device.type == "cuda":
            torch.cuda.synchronize()
            figures["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    figures["peak_rss_generation_mib"] = _peak_rss_mib()
    # What the generation added on top of the loaded process.
    figures["generation_above_loaded_mib"] = max(
        figures["peak_rss_generation_mib"] - figures["rss_after_load_mib"], 0.0
    )
    print(json.dumps(figures))
    return figures


def peak_memory(quick: bool = False, *, timeout_s: float = 300.0) -> dict[str, Any]:
    """Peak memory of one whole generation (encode, sample, decode) of the tiny benchmark model,
    cogsample (``run_plan``, which also writes its four files) and diffusers (in memory), each in
    a fresh interpreter: the RSS after imports and loading, the peak RSS of loading and of the
    generation alone (``VmHWM``, reset after loading; see :func:`_peak_rss_mib` for why not
    ``ru_maxrss``), and on CUDA ``max_memory_allocated`` during the generation. The two
    processes run side by side (memory is per process; no timing is taken)."""
    steps = 2 if quick else 4
    with tiny_folder() as folder, tempfile.TemporaryDirectory(prefix="cogsample-mem-") as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        procs = {}
        for library in ("cogsample", "diffusers"):
            out = Path(tmp) / f"out-{library}"
            code = (
                "from cogsample.bench.speed import _memory_child; "
                f"_memory_child({library!r}, {str(folder)!r}, {steps}, {str(out)!r})"
            )
            procs[library] = subprocess.Popen(
                [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        result: dict[str, Any] = {"steps": steps, **BENCH_VIDEO}
        for library, proc in procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                result[library] = {"error": f"timed out after {timeout_s:g} s"}
                continue
            lines = stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                result[library] = {"error": f"exit {proc.returncode}: {stderr.strip()[-500:]}"}
                continue
            result[library] = json.loads(lines[-1])
    return result


# ----------------------------------------------------------------------------------------------
# e. CogVideoX-5B on a GPU


def _loop_compare(
    config: dict[str, Any],
    video: dict[str, int],
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    steps: int,
    repeats: int,
    compile: bool,
) -> dict[str, Any]:
    """Seconds per step of cogsample's ``diffusers``-profile loop and diffusers' pipeline loop
    (``output_type="latent"``, prompt embeddings given: no text encoder, no VAE) on one
    random-weight transformer of ``config``; peak memory of each; optionally ``torch.compile``."""
    from ..models.cogvideox import CogVideoXTransformerNetwork

    device = torch.device(device)
    transformer = _random_transformer(config, device, dtype)
    shape = latent_shape(1, **video)
    cond = _random_text(config, torch.Generator().manual_seed(0), device, dtype)
    pipe = _latent_pipe(transformer)
    sampling = diffusers_sampling(COGVIDEOX_5B_SCHEDULER, steps=steps, guidance_scale=GUIDANCE_SCALE)
    network = CogVideoXTransformerNetwork(transformer, device=device)
    runs = {
        "cogsample": _cogsample_latents(network, shape, cond, sampling, dtype, device),
        "diffusers": lambda: _diffusers_latents(pipe, cond, video, steps),
    }
    runners = {name: _per_step_timer(run, device, steps) for name, run in runs.items()}
    warm, per_step = interleaved(runners, repeats, keep=lambda timed: timed[0])
    result: dict[str, Any] = {
        "transformer_params_m": _params_m(transformer),
        "latent_shape": list(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "steps": steps,
        "repeats": repeats,
        "latents_identical": _identical(warm["cogsample"][2], warm["diffusers"][2]),
    }
    for name in runners:
        result[name] = {"s_per_step": stats(per_step[name]), "peak_allocated_mib": warm[name][1]}
    eager = result["cogsample"]["s_per_step"]["median"]
    result["ratio_cogsample_over_diffusers"] = ratio(eager, result["diffusers"]["s_per_step"]["median"])
    if not compile:
        result["compile"] = {"skipped": "quick"}
        return result

    def compiled() -> Callable[[], tuple[float, float, Tensor]]:
        network = CogVideoXTransformerNetwork(torch.compile(transformer), device=device)
        return _per_step_timer(_cogsample_latents(network, shape, cond, sampling, dtype, device), device, steps)

    result["compile"] = _compiled_figures(compiled, eager, repeats, steps)
    return result


def _random_transformer(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> nn.Module:
    """diffusers' CogVideoX transformer of ``config``, random weights from seed 0, in eval mode."""
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a CPU init of 5B weights takes minutes
        transformer = CogVideoXTransformer3DModel(**config)
    return transformer.to(dtype).eval().requires_grad_(False)


def _cogsample_latents(
    network: Any, shape: Sequence[int], cond: Conditioning, sampling: Any, dtype: torch.dtype, device: torch.device
) -> Callable[[], Tensor]:
    """cogsample's loop from diffusers' initial noise (seed :data:`SEED`) to latents."""

    def run() -> Tensor:
        noise = DiffusersNoise(torch.Generator().manual_seed(SEED))
        x = noise.initial(shape, dtype=dtype, device=device)
        with quiet():
            return sample(network, x, cond, sampling, noise=noise)

    return run


def _per_step_timer(
    run: Callable[[], Tensor], device: torch.device, steps: int
) -> Callable[[], tuple[float, float, Tensor]]:
    """``run`` timed: (seconds per step, peak MiB allocated on CUDA (0 elsewhere), latents)."""

    def timed() -> tuple[float, float, Tensor]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        latents = run()
        sync(device)
        per_step = (time.perf_counter() - t0) / steps
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
        return per_step, peak, latents

    return timed


def _compiled_figures(
    build: Callable[[], Callable[[], tuple[float, float, Tensor]]], eager_s: float, repeats: int, steps: int
) -> dict[str, Any]:
    """The compiled loop (``build()``: its :func:`_per_step_timer`): seconds per step, compile time
    (first call minus a compiled step), speed-up over the eager ``eager_s``; a failure recorded as
    ``error``, not raised."""
    from torch import _dynamo

    try:
        timed = build()
        first, _, _ = timed()  # includes compiling
        compiled = [timed()[0] for _ in range(max(repeats, 1))]
        return {
            "compile_s": max((first - statistics.median(compiled)) * steps, 0.0),
            "s_per_step": stats(compiled),
            "speedup": ratio(eager_s, statistics.median(compiled)),
        }
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"[:500]}
    finally:
        _dynamo.reset()


def gpu_5b(quick: bool = False) -> dict[str, Any]:
    """A random-weight CogVideoX-5B transformer (:data:`COGVIDEOX_5B_TRANSFORMER`) at 49 frames of
    480 x 720 in bfloat16 on CUDA: seconds per step of cogsample and of diffusers at equal steps,
    peak memory, ``torch.compile``. ``{"skipped": "no CUDA device"}`` without CUDA."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    return _loop_compare(
        COGVIDEOX_5B_TRANSFORMER,
        VIDEO_5B,
        device="cuda",
        dtype=torch.bfloat16,
        steps=2 if quick else 5,
        repeats=1 if quick else 2,
        compile=not quick,
    )


def cpu_2b(quick: bool = False) -> dict[str, Any]:
    """A random-weight CogVideoX-2B transformer (:data:`COGVIDEOX_2B_TRANSFORMER`, bfloat16) at
    :data:`VIDEO_2B_CPU` on the CPU, where a forward costs what it costs: seconds per step of
    cogsample's loop and diffusers' ``CogVideoXPipeline`` at equal forwards, paired in one run
    (:func:`_loop_compare`), and cogsample's overhead per step outside the transformer (the same
    loop on a stub returning a precomputed output, :func:`_ms_per_step`) as a share of the real
    step. ``quick`` skips it (a step takes about a minute on 2 cores)."""
    if quick:
        return {"skipped": "quick"}
    from ..models.cogvideox import CogVideoXTransformerNetwork

    config_2b, bf16 = COGVIDEOX_2B_TRANSFORMER, torch.bfloat16
    result = _loop_compare(config_2b, VIDEO_2B_CPU, device="cpu", dtype=bf16, steps=3, repeats=1, compile=False)
    shape = latent_shape(1, **VIDEO_2B_CPU)
    g = torch.Generator().manual_seed(0)
    cond = _random_text(COGVIDEOX_2B_TRANSFORMER, g, "cpu", torch.bfloat16)
    out = torch.randn((2, *shape[1:]), generator=g).to(torch.bfloat16)
    stub = CogVideoXTransformerNetwork(_StubTransformer(SimpleNamespace(**COGVIDEOX_2B_TRANSFORMER), out))
    config, noise = _profiles(10)["diffusers"]
    x = torch.randn(shape, generator=g).to(torch.bfloat16)
    over = _ms_per_step(stub, x, cond, config, noise, 3)
    step_ms = 1e3 * result["cogsample"]["s_per_step"]["median"]
    result["video"] = dict(VIDEO_2B_CPU)
    result["overhead_ms"] = over
    result["overhead_pct_of_step"] = 100 * ratio(over["median"], step_ms)
    return result


# ----------------------------------------------------------------------------------------------
# f. everything


def run_speed(quick: bool = False, *, threads: int | None = None) -> dict[str, Any]:
    """:func:`compare_diffusers`, :func:`sampler_overhead`, :func:`compile_effect`,
    :func:`peak_memory` and :func:`gpu_5b`, with :func:`device_info` and each part's wall time.

    ``threads``: torch's intra-op threads for the run (restored after; None: as they are). On a
    machine shared with other busy processes, one thread per process gives far steadier figures:
    a multi-threaded op waits for its slowest thread, and a thread whose core is taken waits a
    whole scheduler slice.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_speed(quick)
    finally:
        torch.set_num_threads(previous)


def _run_speed(quick: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    result: dict[str, Any] = {"quick": quick, "device": device_info()}
    wall: dict[str, float] = {}
    parts: dict[str, Callable[[bool], dict[str, Any]]] = {
        "compare_diffusers": compare_diffusers,
        "sampler_overhead": sampler_overhead,
        "compile": compile_effect,
        "peak_memory": peak_memory,
        "gpu_5b": gpu_5b,
    }
    for name, fn in parts.items():
        t0 = time.perf_counter()
        result[name] = fn(quick)
        wall[name] = time.perf_counter() - t0
    wall["total"] = time.perf_counter() - t_start
    result["wall_s"] = wall
    result["device"]["loadavg_1min_end"] = loadavg()
    _check_finite(result)
    return result


def _check_finite(obj: Any, where: str = "result") -> None:
    """``ValueError`` naming the first NaN or infinite number (the result must be plain JSON)."""
    bad = non_finite(obj, where)
    if bad:
        path, value = bad[0]
        raise ValueError(f"{path} is {value}")
