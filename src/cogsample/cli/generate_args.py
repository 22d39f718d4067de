"""``cogsample generate``'s options, declared by topic in the order ``--help`` lists them."""

from __future__ import annotations

import argparse


def declare(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``generate`` parser with all its options."""
    g = sub.add_parser(
        "generate",
        help="prompt (and image) to video: mp4, latents, JSON and a contact sheet",
        description="Generate videos. With no --model, the built-in exact model (no weights).",
    )
    _model(g)
    _prompts(g)
    _size(g)
    _sampling(g)
    _run_and_outputs(g)
    _context_windows(g)
    _processes(g)
    _fewer_forwards(g)
    return g


def declare_serve(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``serve`` parser: ``generate``'s options (the server's fixed model and each job's
    defaults) without prompts or engines, and the server's own."""
    g = sub.add_parser(
        "serve",
        help="a page and a JSON API to make videos on, with a queue that survives restarts",
        description="Serve a page and an API; jobs are made in --out, each once, across restarts.",
    )
    s = g.add_argument_group("the server")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free one)")
    s.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on the API (default: $COGSAMPLE_TOKEN)")
    s.add_argument("--max-upload-mb", type=float, default=16.0, help="largest request body, MiB (default 16)")
    _model(g)
    _size(g)
    _sampling(g)
    _run_and_outputs(g)
    _context_windows(g)
    _fewer_forwards(g)
    return g


def _prompts(g: argparse.ArgumentParser) -> None:
    """The videos to make: prompts, or a file of them."""
    g.add_argument("--prompt", action="append", help="a prompt (repeat for several videos)")
    g.add_argument(
        "--prompts-file",
        help="one prompt a line, or JSONL (.jsonl, or lines starting with '{'): one object a line with 'prompt' and "
        "any per-video option (image, seed, negative_prompt, frames, height, width, steps, scale, ...); the "
        "command line's options are the defaults",
    )


def _model(g: argparse.ArgumentParser) -> None:
    """What to sample with and from: the model, its LoRAs, the unconditional branch, the images."""
    from ..pipeline.options import UNCOND

    g.add_argument(
        "--model",
        default="builtin",
        help="builtin (default), builtin-i2v, builtin-trained, builtin-trained-i2v, or a local diffusers-format "
        "CogVideoX folder",
    )
    g.add_argument(
        "--lora",
        action="append",
        metavar="PATH[:WEIGHT]",
        help="a LoRA of the transformer (diffusers/peft safetensors; repeat to combine): each module becomes "
        "W + WEIGHT * (alpha / rank) * B @ A (alpha = rank where the file has none; WEIGHT 1 by default, 0: off)",
    )
    g.add_argument(
        "--lora-fuse",
        action="store_true",
        help="merge the --lora files into the weights once (no per-call cost; one LoRA set for the whole run)",
    )
    g.add_argument("--negative-prompt", help="the unconditional branch's prompt (implies --uncond negative-prompt)")
    g.add_argument(
        "--uncond",
        choices=UNCOND,
        help="unconditional branch: zero embedding (sat default) or the encoded negative prompt (diffusers default)",
    )
    g.add_argument("--image", help="first frame for an image-to-video model")
    g.add_argument(
        "--video",
        metavar="PATH",
        help="video to video: start from this video's first --frames frames (resized to the size), encoded and "
        "noised to --strength (any model; an I2V model without --image takes its first frame as the image)",
    )
    g.add_argument(
        "--strength",
        type=float,
        help="with --video: how far it is noised, in (0, 1]: the share of the sampler's steps run (default 0.8; "
        "1: from pure noise)",
    )
    g.add_argument("--last-image", metavar="PATH", help="the video's last frame, held while sampling (any model)")
    g.add_argument(
        "--keyframe",
        action="append",
        metavar="FRAME=PATH",
        help="video frame FRAME (0 .. frames-1) given as an image, held while sampling (repeatable; any model; "
        "one per latent frame: frames 4j-3..4j share one)",
    )


def _size(g: argparse.ArgumentParser) -> None:
    """The video's length and size."""
    g.add_argument(
        "--frames",
        type=_frames,
        help="frames, 4k+1, or NX: N times the model's native length (4x: 4x its latent frames); default: the "
        "model's. Beyond its native length a trained model samples in context windows (see --context)",
    )
    g.add_argument("--height", type=int, help="pixels, a multiple of 16 (default: the model's)")
    g.add_argument("--width", type=int, help="pixels, a multiple of 16 (default: the model's)")


def _sampling(g: argparse.ArgumentParser) -> None:
    """The sampler, its steps and guidance, the profile reproduced, the seed."""
    from ..pipeline.options import GUIDANCE, GUIDANCE_RULES, PROFILES

    g.add_argument(
        "--steps",
        type=int,
        help="sampler steps; they also set DynamicCFG's num_steps, so the guidance ramp spans the run, with or "
        "without --sampler-config (default: the yaml's own counts as written, else 50; with --fast, its count)",
    )
    g.add_argument("--sampler", help="a sampler name (cogsample samplers); default: the profile's")
    g.add_argument(
        "--guidance",
        default="dynamic",
        metavar="RULE[:key=value,...]",
        help=f"classifier-free guidance: {', '.join(GUIDANCE)} (default dynamic), or a combine rule of diffusers' "
        f"guiders ({', '.join(GUIDANCE_RULES)}) on DynamicCFG's scales (schedule=constant: --scale throughout), "
        "e.g. apg:eta=0,momentum=-0.5 (docs/guiders.md)",
    )
    g.add_argument("--scale", type=float, default=6.0, help="guidance scale (default 6)")
    g.add_argument(
        "--sampler-config",
        help="a SAT model yaml whose sampler_config/denoiser_config to use: a path, or a shipped name "
        "(cogvideox-2b, cogvideox-5b, cogvideox-5b-i2v, cogvideox1.5-5b, cogvideox1.5-5b-i2v)",
    )
    g.add_argument(
        "--profile",
        choices=PROFILES,
        default="sat",
        help="reproduce the SAT reference (default) or diffusers' pipeline, bit for bit",
    )
    g.add_argument("--seed", type=int, default=42, help="seed of the first video; video k uses seed + k")


def _run_and_outputs(g: argparse.ArgumentParser) -> None:
    """Where the videos go, the device and dtype, the initial noise, what is printed and redone."""
    from ..pipeline.options import DTYPES, VAE_TILING

    g.add_argument("--out", default="outputs", help="output directory (default ./outputs)")
    g.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        help="model dtype (default: float32 on the CPU; on a GPU what the release runs in: float16 for 2B, "
        "else bfloat16)",
    )
    g.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    g.add_argument("--fps", type=int, help="frames per second of the mp4 (default: the model's, 8 for CogVideoX 1.0)")
    g.add_argument(
        "--vae-tiling",
        choices=VAE_TILING,
        default="auto",
        help="decode in spatial tiles: on, off (as SAT and diffusers' pipelines), or auto (default): tiled only "
        "when an untiled decode would not fit the device's free memory; recorded in each video's JSON",
    )
    g.add_argument(
        "--initial-noise",
        metavar="FILE",
        help="start from this noise instead of drawing it: a .safetensors or .pt tensor of the sampled latent "
        "shape (1 or one row per video, T, 16, H/8, W/8), e.g. what a SAT or diffusers run drew",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only the video paths (one a line, as each is finished; warnings still go to stderr)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="make every video again (default: videos already finished in --out are skipped, unfinished ones redone)",
    )


def _context_windows(g: argparse.ArgumentParser) -> None:
    """Videos beyond the model's native length."""
    from ..pipeline.options import CONTEXT, CONTEXT_OVERLAP_SHARE

    c = g.add_argument_group("videos longer than the model's native length: temporal context windows")
    c.add_argument(
        "--context",
        choices=CONTEXT,
        default="auto",
        help="auto (default): a latent longer than a window is denoised in overlapping windows blended every "
        "step (for the built-in exact model only with --context-frames); off: the whole length at once",
    )
    c.add_argument(
        "--context-frames",
        type=int,
        metavar="N",
        help="latent frames per window (default: the model's native latent length, 13 for 49 frames)",
    )
    c.add_argument(
        "--context-overlap",
        type=int,
        metavar="N",
        help=f"latent frames neighbouring windows share (default: {CONTEXT_OVERLAP_SHARE:.2g} of a window, rounded)",
    )
    c.add_argument(
        "--noise-repeat",
        action="store_true",
        help="FreeNoise-style noise: after the first window, the initial noise and every in-loop draw are a "
        "shuffled repeat of the first window's (the shuffle seeded by --seed)",
    )


def _processes(g: argparse.ArgumentParser) -> None:
    """torchrun, Ray and several ranks per video."""
    r = g.add_argument_group("many processes and machines (torchrun; Ray: pip install 'cogsample[ray]')")
    r.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the batch on a Ray cluster (ADDRESS, e.g. ray://head:10001 or auto; none: a local cluster); "
        "--out must be a folder every worker sees",
    )
    r.add_argument(
        "--workers",
        type=int,
        help="Ray workers, each with one GPU (default: one per GPU of the cluster; 1 on a cluster without GPUs)",
    )
    r.add_argument(
        "--parallel",
        metavar="cfg=2,ulysses=U",
        help="make each video on several ranks (under torchrun, 2U of them or a multiple): cfg=2 puts the two CFG "
        "branches on two ranks, ulysses=U shards the transformer's video tokens over U ranks (U divides the heads); "
        "rank 0 of each group writes; every rank holds the whole model",
    )


def _cache(text: str) -> float | str:
    """``--cache``: a threshold number (the old form) or ``KIND[:key=value,...]``, checked later."""
    try:
        return float(text)
    except ValueError:
        return text


def _fewer_forwards(g: argparse.ArgumentParser) -> None:
    """The speed options, off by default."""
    from ..models.quantize import QUANTIZE
    from ..pipeline.options import CACHE_KINDS, CFG_INDEX, FAST, FAST_MEASURED, GRIDS, OFFLOAD

    f = g.add_argument_group("fewer forwards (off by default; measured by `cogsample bench`)")
    f.add_argument(
        "--fast",
        action="store_true",
        help=f"the preset chosen by rule (sat profile): --sampler {FAST['sampler']} --grid {FAST['grid']} "
        f"--cfg-index {FAST['cfg_index']} --steps {FAST['steps']}, {2 * FAST['steps']} forwards against the "
        f"reference default's 100, the same guidance; {FAST_MEASURED}",
    )
    f.add_argument("--grid", choices=GRIDS, default="reference", help="timestep grid (sat): reference = trailing")
    f.add_argument(
        "--cfg-index",
        choices=CFG_INDEX,
        default="reference",
        help="DynamicCFG's step index: reference (as shipped), loop (the loop counter), level (the 50-step "
        "reference's scales carried to any grid by noise level: the same guidance at any step count)",
    )
    f.add_argument(
        "--cfg-interval",
        type=_interval,
        metavar="START:END",
        help="guide only steps with START <= i/steps < END (fractions); conditional-only elsewhere",
    )
    f.add_argument("--skip-unit-cfg", action="store_true", help="no uncond forward where the scale is exactly 1")
    f.add_argument(
        "--cache",
        type=_cache,
        metavar="KIND[:key=value,...]",
        help="step cache: output (own; any model), first-block, faster, pab, mag, taylorseer, sea (diffusers' "
        "hooks, in a transformer), e.g. first-block:threshold=0.1; a bare number is a threshold of --cache-kind",
    )
    f.add_argument(
        "--cache-kind", choices=CACHE_KINDS, help="with --cache NUMBER: output (exact default) or first-block, ..."
    )
    f.add_argument("--offload", choices=OFFLOAD, default="none", help="CPU offload of a CogVideoX model's parts")
    f.add_argument(
        "--quantize",
        choices=QUANTIZE,
        default="none",
        help="the transformer's Linear weights through torchao: int8 (weight-only), int8-dynamic (int8 "
        "activations too), fp8 (CUDA, compute capability >= 8.9); needs pip install 'cogsample[quantize]'",
    )


def _frames(text: str) -> int | str:
    """``--frames``: an integer, or ``NX`` (checked against the model by the plan)."""
    t = text.strip()
    if t.lower().endswith("x"):
        return t.lower()
    try:
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected frames (4k+1) or a multiple of the native length such as 4x, got {text!r}"
        ) from None


def _interval(text: str) -> tuple[float, float]:
    """``--cfg-interval``: ``START:END`` fractions (END defaults to 1)."""
    try:
        start, _, end = text.partition(":")
        return float(start), float(end) if end else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END fractions such as 0.4:1, got {text!r}") from None
