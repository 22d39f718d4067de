"""Keyframes against the truth: the trained built-in models with and without ``--last-image`` /
``--keyframe`` (:mod:`cogsample.sampling.keyframes`), on full captions whose one true clip is known.

For each caption of :data:`~cogsample.bench.truth.CAPTIONS` and each seed, the keyframe images are
frames of the caption's own true clip (rendered, rounded to uint8 as a PNG would hold them), so
every decoded frame has a known target. Per condition (no keyframe; the last frame, 8 of 9; frames
4 and 8; for the I2V model the first frame is its ``--image`` throughout):

* ``keyframe_error``: mean absolute error in [0, 255] of the decoded keyframe against the given
  image, per keyframe frame (``vae_floor``: the same for the true clip's own BlockVAE round trip,
  the least any latent can reach: the VAE averages 8x8 blocks);
* ``between_error``: the same over the frames no keyframe gives (1 .. 7 without frame 4 where held),
  against the true clip: what the motion between the keyframes looks like;
* ``adherence``: :func:`cogsample.bench.truth.adherence` of the latents (nearest true clip: colour,
  shape, motion, background, exact clip; ``[mean, lo, hi]``) and the hit ``counts``.

Sampling: CogVideoX-5B's shipped sampler as ``generate`` runs it on these models (VPSDEDPMPP2M,
50 steps, DynamicCFG 6), the whole batch in one call of :func:`cogsample.sampling.config.sample`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..models.builtin import DEFAULT_TAU, MixtureNetwork
from ..models.family import FAMILY
from ..pipeline.options import GenerateOptions, resolve_sampling
from ..sampling.config import SamplingConfig, sample
from ..sampling.guidance import Conditioning
from ..sampling.keyframes import Keyframes, latent_frame
from .harness import initial_noise, sample_noise
from .truth import ATTRIBUTES, CAPTIONS, adherence

Tensor = torch.Tensor

__all__ = ["CONDITIONS", "keyframes_bench", "write"]

FRAMES, HEIGHT, WIDTH = 9, 64, 96
#: condition name -> the video frames given as keyframes
CONDITIONS: dict[str, tuple[int, ...]] = {"none": (), "last": (8,), "mid+last": (4, 8)}


def _truth(captions: Sequence[str]) -> tuple[Tensor, list[int]]:
    """The true clips of ``captions`` as uint8-rounded videos ``(N, 9, 3, 64, 96)`` in [0, 1], and their indices."""
    index = {c.caption: k for k, c in enumerate(FAMILY)}
    ks = [index[c] for c in captions]
    video = torch.stack([FAMILY[k].render(FRAMES, HEIGHT, WIDTH) for k in ks])
    return (video * 255).round() / 255, ks


def _keyframes(model: Any, video: Tensor, frames: tuple[int, ...]) -> Keyframes | None:
    """Each row's keyframes (its own true clip's frames), encoded by the model as the pipeline does."""
    if not frames:
        return None
    rows, mask = [], None
    for v in video:
        zs, masks = zip(*(model.encode_keyframe(v[f][None] * 2 - 1, f) for f in frames), strict=True)
        rows.append(torch.cat(zs, dim=1))
        if masks[0] is not None:
            mask = torch.cat(masks, dim=1)
    return Keyframes(torch.cat(rows).float(), tuple(latent_frame(f) for f in frames), mask)


def _errors(decoded: Tensor, truth: Tensor, frames: tuple[int, ...]) -> dict[str, Any]:
    """Mean absolute pixel errors in [0, 255]: per keyframe frame, and over the frames between."""
    err = (decoded - truth).abs().mul(255).mean(dim=(2, 3, 4))  # (N, F)
    between = [f for f in range(1, FRAMES - 1) if f not in frames]
    return {
        "frame_error": {str(f): float(err[:, f].mean()) for f in range(FRAMES)},
        "keyframe_error": {str(f): float(err[:, f].mean()) for f in frames},
        "between_error": float(err[:, between].mean()),
        "between_frames": between,
    }


def _inputs(model: Any, captions: Sequence[str], seeds: int, seed: int, video: Tensor) -> tuple[Tensor, Conditioning]:
    n = len(captions) * seeds
    x = initial_noise(seed, (n, latent_frame(FRAMES - 1) + 1, 16, HEIGHT // 8, WIDTH // 8))
    context = model.encode_prompts([c for c in captions for _ in range(seeds)])
    image_latents = ofs = None
    if model.info.i2v:
        first = torch.cat([model.encode_image(v[0][None] * 2 - 1) for v in video])
        image_latents = torch.cat([first, first.new_zeros(n, x.shape[1] - 1, *first.shape[2:])], dim=1)
        ofs = torch.full((1,), 2.0)
    return x, Conditioning(context=context, image_latents=image_latents, ofs=ofs)


def keyframes_bench(
    models: Sequence[str] = ("builtin-trained", "builtin-trained-i2v"),
    captions: Sequence[str] = CAPTIONS[::3],
    seeds: int = 2,
    seed: int = 1234,
    steps: int | None = None,
    conditions: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, Any]:
    """The section's figures (see the module) for each of ``models`` and ``conditions``:
    ``len(captions) x seeds`` samples each (default 16 x 2 = 32), the same noise in every condition."""
    from ..models.trained import TrainedModel

    conditions = CONDITIONS if conditions is None else conditions
    truth, ks = _truth(captions)
    video = truth.repeat_interleave(seeds, dim=0)
    wanted = torch.tensor(ks).repeat_interleave(seeds)
    mu = MixtureNetwork(FAMILY, DEFAULT_TAU).means(3, HEIGHT // 8, WIDTH // 8).mu
    log_w = torch.full((len(wanted), len(FAMILY)), float("-inf"), dtype=torch.float64)
    log_w[torch.arange(len(wanted)), wanted] = 0.0
    env = SimpleNamespace(mu=mu, log_w=log_w, setup=SimpleNamespace(tau=DEFAULT_TAU))
    out: dict[str, Any] = {"samples": len(wanted), "captions": list(captions), "seeds": seeds, "seed": seed}
    for name in models:
        model = TrainedModel(i2v=name.endswith("-i2v"))
        config = _config(name, steps)
        floor = model.vae.decode(model.vae.encode(video.double()))  # BlockVAE: [0, 1] in and out
        x, cond = _inputs(model, captions, seeds, seed, video)
        rows: dict[str, Any] = {"vae_floor": _errors(floor, video, ())["frame_error"], "sampling": config.to_dict()}
        for cname, frames in conditions.items():
            kf = _keyframes(model, video, frames)
            t0 = time.perf_counter()
            with torch.inference_mode():
                lat = sample(model.network, x, cond, config, noise=sample_noise(seed, len(x)), keyframes=kf)
                decoded = model.decode(lat)
            adh = adherence(env, lat)
            print(f"{name} {cname}: {time.perf_counter() - t0:.0f} s", flush=True)
            counts = {a: round(adh[a][0] * len(x)) for a in (*ATTRIBUTES, "exact_clip")}
            rows[cname] = {"keyframes": list(frames), **_errors(decoded, video, frames), "adherence": adh,
                           "counts": counts, "seconds": time.perf_counter() - t0}  # fmt: skip
        out[name] = rows
    return out


def _config(model: str, steps: int | None) -> SamplingConfig:
    """What ``generate`` samples ``model`` with (``steps``: another step count)."""
    from ..models import inspect

    return resolve_sampling(GenerateOptions(prompts=("x",), model=model, steps=steps), inspect(model))


def table(result: dict[str, Any]) -> str:
    """The markdown table of docs/inputs.md's Keyframes section."""
    n = result["samples"]
    head = ("| model | keyframes | err frame 4 | err frame 8 | err between | colour | shape | motion | background "
            "| exact clip |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    for model in (k for k in result if k.startswith("builtin")):
        rows = result[model]
        floor = rows["vae_floor"]
        for cname in (k for k in rows if k not in ("vae_floor", "sampling")):
            r = rows[cname]
            fe = r["frame_error"]
            err = [f"{fe[f]:.1f}" + (" (held)" if int(f) in r["keyframes"] else "") for f in ("4", "8")]
            c = r["counts"]
            adh = " | ".join(f"{c[a]}/{n}" for a in (*ATTRIBUTES, "exact_clip"))
            lines.append(f"| {model} | {cname} | {err[0]} | {err[1]} | {r['between_error']:.1f} | {adh} |")
        lines.append(f"| {model} | VAE round trip of the true clip | {floor['4']:.1f} | {floor['8']:.1f} | | | | | | |")
    return "\n".join(lines)


def write(path: str | Path = "docs/bench/keyframes.json", **kwargs: Any) -> dict[str, Any]:
    """Run :func:`keyframes_bench` and write its figures to ``path`` (JSON); returns them."""
    result = keyframes_bench(**kwargs)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(table(write(steps=int(sys.argv[1]) if len(sys.argv) > 1 else None)))
