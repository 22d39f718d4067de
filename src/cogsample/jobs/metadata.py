"""What a video's JSON says: how it was made (the resolved plan, the model, the sampling, the
timings, the versions installed), where its files are, and the ``cogsample generate`` command
that makes it again."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..pipeline.options import UINT8
from ..pipeline.pipeline import VideoResult
from ..pipeline.plan import Plan

__all__ = ["command", "metadata", "versions"]


def versions() -> dict[str, str]:
    """The versions of Python and of the packages a video depends on, as installed."""
    out = {"python": platform.python_version()}
    for name in ("cogsample", "torch", "diffusers", "transformers", "av", "numpy", "torchao"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _image_path(image: Any) -> str | None:
    return str(image) if isinstance(image, (str, Path)) else None


def metadata(r: VideoResult, files: dict[str, Path], run: dict[str, Any]) -> dict[str, Any]:
    """Video ``r``'s JSON: what it was made from and with (its plan resolved), its ``files`` by
    role, ``run`` (engine, rank, world size, worker, ...), the command that makes it again."""
    p, prompt, seed, latents, opts = r.plan, r.prompt, r.seed, r.latents, r.plan.options
    windows = p.sampling.context  # Plan.windows, read as data: writing calls nothing of the pipeline
    return {
        "prompt": prompt,
        "negative_prompt": p.negative_prompt,
        "uncond": p.uncond,
        "seed": seed,
        "profile": opts.profile,
        # none, cfg, dynamic, or a combine rule RULE[:key=value,...] (resolved in sampling.guider)
        "guidance": opts.guidance,
        "model": {
            "name": p.info.name,
            "path": opts.model,
            "i2v": p.info.i2v,
            "uses_ofs": p.info.uses_ofs,
            "patch_size_t": p.info.patch_size_t,
        },
        "image": _image_path(opts.image),
        **({"keyframes": [kf.describe() for kf in p.keyframes]} if p.keyframes else {}),
        # video to video, only where set: the input's path, SHA-256, strength, resize rule, steps run
        **({"video": {**p.video.describe(), "steps_run": p.sampling.grid().num_steps}} if p.video is not None else {}),
        "frames": p.frames,
        "height": p.height,
        "width": p.width,
        "fps": p.fps,
        "latent_shape": list(latents.shape),
        "pad_frames": p.pad_frames,
        "text_len": p.text_len,
        "initial_noise": opts.initial_noise,
        "noise_repeat": opts.noise_repeat,
        "context_windows": None
        if windows is None
        else {**windows.to_dict(), "spans": [list(ab) for ab in windows.spans(p.shape[1])]},
        "forwards": r.forwards,
        "uint8": UINT8[opts.profile],
        "steps": p.sampling.steps,
        "sampling": p.sampling.to_dict(),
        "dtype": str(p.dtype).removeprefix("torch."),
        "quantize": opts.quantize,
        "lora": [x.record() for x in p.loras],
        "lora_fuse": bool(p.loras and opts.lora_fuse),
        "device": str(p.device),
        "files": {k: v.name for k, v in files.items()},
        "versions": versions(),
        "timings_s": r.timings,
        "vae_tiling": r.vae_tiling,
        **run,
        "command": command(p, prompt, seed),
        "argv": sys.argv,
    }


def command(p: Plan, prompt: str, seed: int) -> list[str]:
    """The ``cogsample generate`` arguments that reproduce this one video."""
    o, windows = p.options, p.sampling.context  # Plan.windows, read as data
    cmd = [
        "cogsample",
        "generate",
        "--model",
        o.model,
        "--prompt",
        prompt,
        "--seed",
        str(seed),
        "--profile",
        o.profile,
        "--frames",
        str(p.frames),
        "--height",
        str(p.height),
        "--width",
        str(p.width),
        "--guidance",
        o.guidance,
        "--scale",
        repr(o.scale),
        "--dtype",
        str(p.dtype).removeprefix("torch."),
        "--uncond",
        p.uncond,
    ]
    if o.steps is not None:
        cmd += ["--steps", str(o.steps)]
    if o.sampler_config:
        cmd += ["--sampler-config", o.sampler_config]
    if o.sampler:
        cmd += ["--sampler", o.sampler]
    if p.negative_prompt is not None:
        cmd += ["--negative-prompt", p.negative_prompt]
    if _image_path(o.image):
        cmd += ["--image", _image_path(o.image)]
    if p.video is not None and p.video.source:
        cmd += ["--video", p.video.source, "--strength", repr(p.video.strength)]
    for kf in p.keyframes:
        cmd += ["--keyframe", f"{kf.frame}={kf.source}"] if kf.source else []
    if o.grid != "reference":
        cmd += ["--grid", o.grid]
    if o.cfg_index != "reference":
        cmd += ["--cfg-index", o.cfg_index]
    if o.cfg_interval is not None:
        cmd += ["--cfg-interval", f"{o.cfg_interval[0]!r}:{o.cfg_interval[1]!r}"]
    if o.skip_unit_cfg:
        cmd.append("--skip-unit-cfg")
    if p.sampling.cache is not None:
        cmd += ["--cache", p.sampling.cache.spec()]
    if o.offload != "none":
        cmd += ["--offload", o.offload]
    if o.quantize != "none":
        cmd += ["--quantize", o.quantize]
    for x in p.loras:
        cmd += ["--lora", f"{x.path}:{x.weight!r}"]
    if p.loras and o.lora_fuse:
        cmd.append("--lora-fuse")
    if o.vae_tiling != "auto":
        cmd += ["--vae-tiling", o.vae_tiling]
    if o.initial_noise is not None:
        cmd += ["--initial-noise", o.initial_noise]
    if windows is not None:
        cmd += ["--context-frames", str(windows.frames), "--context-overlap", str(windows.overlap)]
    elif o.context != "auto":
        cmd += ["--context", o.context]
    if o.noise_repeat:
        cmd.append("--noise-repeat")
    return cmd
