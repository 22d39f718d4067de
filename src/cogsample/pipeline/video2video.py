"""Video to video (``--video PATH --strength S``): the input video's first frames encoded by the
model's VAE, noised to the level the strength puts it at, and the rest of the grid denoised.

* planning: :func:`check_strength` and :func:`read_request` (before sizes: an I2V model without
  ``--image`` takes the video's first frame), :func:`truncate_sampling` (the sampler's grid cut to
  its last steps, :class:`~cogsample.sampling.schedules.TruncatedSchedule`), :func:`prepare`
  (the resized ``[-1, 1]`` frames, the checks that need the size);
* running: :func:`encode` (the clean latent), then :func:`noised` (the start of sampling).

The strength rule per profile: ``sat``: keep the grid's last ``ceil(strength x steps)`` steps and
start from ``x = alpha z0 + sqrt(1 - alpha^2) eps`` at the first kept level (float32; every sampler of
the profile takes its start in this variance-preserving form, a sigma-space one scales it by
``sqrt(1 + sigma^2)``); the VAE posterior (a CogVideoX folder's) is sampled from a CPU generator of
its own seeded with the video's seed, so torch's global stream (initial noise, in-loop draws) is the
text-to-video run's: on a zero-terminal-SNR grid (the reference's) ``strength 1`` is that run bit
for bit. ``diffusers``: ``CogVideoXVideoToVideoPipeline``: ``init = min(int(steps x strength),
steps)`` steps from ``steps - init`` on, the posterior sampled from the pipeline's generator, then
the noise drawn, then ``scheduler.add_noise`` at the first kept timestep (``alphas_cumprod`` in the
latents' dtype), DynamicCFG's ramp over ``init`` steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models import ModelInfo
from ..models.videos import read_video, video_digest, video_to_tensor
from ..sampling.config import SamplingConfig
from ..sampling.guidance import DynamicCFG
from ..sampling.noise import NoiseSource
from ..sampling.schedules import TruncatedSchedule

Tensor = torch.Tensor

__all__ = [
    "DEFAULT_STRENGTH",
    "RESIZE",
    "VideoInput",
    "check_strength",
    "encode",
    "noised",
    "prepare",
    "read_request",
    "truncate_sampling",
]

#: ``--strength`` when ``--video`` is given without one (diffusers' pipeline's default).
DEFAULT_STRENGTH = 0.8
#: How each profile resizes the frames (:mod:`cogsample.models.videos`).
RESIZE = {"diffusers": "stretch", "sat": "crop"}
#: What each profile's strength rule is called in :class:`TruncatedSchedule`.
RULE = {"diffusers": "diffusers", "sat": "ceil"}
#: Samplers that cannot start part-way: video_ddpm computes its network timesteps from its own
#: step count (``(S - i) 1000 // S``), which restarts at 1000 on a cut grid.
NO_START_PART_WAY = ("video_ddpm",)


@dataclass(frozen=True)
class VideoInput:
    """The checked input video of a plan: where it came from (``source``: the path as given, None
    for in-memory frames), its SHA-256 (a file's bytes, or the frames' pixels), the strength, the
    resize rule, the frames as read (RGB PIL images), and ``pixels``: ``(1, F, 3, H, W)`` float32 in
    [-1, 1] at the generation size (None until :func:`prepare`)."""

    source: str | None
    sha256: str
    strength: float
    resize: str
    frames: Sequence[Any]
    pixels: Tensor | None = None

    def describe(self) -> dict[str, Any]:
        """What the video's JSON records."""
        return {"path": self.source, "sha256": self.sha256, "strength": self.strength, "resize": self.resize}


def check_strength(video: Any, strength: Any) -> float | None:
    """The strength a request runs at: None without a video, :data:`DEFAULT_STRENGTH` when not
    given; ``ValueError`` naming ``--strength`` outside ``(0, 1]`` or without ``--video``."""
    if video is None:
        if strength is not None:
            raise ValueError(f"--strength {strength!r} sets how far --video is noised, and no --video is given")
        return None
    if strength is None:
        return DEFAULT_STRENGTH
    ok = not isinstance(strength, bool) and isinstance(strength, (int, float)) and math.isfinite(strength)
    if not ok or not 0 < strength <= 1:
        raise ValueError(
            f"--strength must be a number in (0, 1] (how far the video is noised: 1 all the way), got {strength!r}"
        )
    return float(strength)


def read_request(video: Any, strength: Any, frames: int, profile: str) -> VideoInput | None:
    """Check ``strength`` and read ``video``'s first ``frames`` frames (None without a video)."""
    s = check_strength(video, strength)
    if s is None:
        return None
    got = read_video(video, frames)
    source = str(video) if isinstance(video, (str, Path)) else None
    return VideoInput(source, video_digest(video), s, RESIZE.get(profile, "crop"), tuple(got))


def truncate_sampling(sampling: SamplingConfig, strength: float | None, profile: str) -> SamplingConfig:
    """``sampling`` with its grid cut to where ``strength`` starts (a no-op without a video); the
    ``diffusers`` profile's DynamicCFG ramps over the kept steps, as the pipeline's. ``ValueError``
    for a sampler that cannot start part-way and for a strength that keeps no step."""
    if strength is None:
        return sampling
    if sampling.sampler in NO_START_PART_WAY and strength < 1:
        raise ValueError(
            f"sampler {sampling.sampler!r} cannot start part-way (its network timesteps restart with its step "
            "count): use another sampler with --video, or --strength 1"
        )
    rule = RULE.get(profile, "ceil")
    schedule = TruncatedSchedule(sampling.schedule, strength, rule)  # type: ignore[arg-type]
    kept, _ = schedule.kept(sampling.steps)  # names a strength that keeps no step
    changes: dict[str, Any] = {"schedule": schedule}
    if rule == "diffusers" and isinstance(sampling.guidance, DynamicCFG):
        init = sampling.steps - kept
        changes["guidance"] = dataclasses.replace(sampling.guidance, num_steps=init)
    return dataclasses.replace(sampling, **changes)


def prepare(video: VideoInput, info: ModelInfo, pad_frames: int, height: int, width: int) -> VideoInput:
    """The frames at ``height x width`` in [-1, 1]; ``ValueError`` where the sampled latent is padded
    (CogVideoX 1.5 at a latent length not a multiple of its temporal patch, which diffusers'
    video-to-video pipeline refuses too)."""
    if pad_frames:
        t = (len(video.frames) - 1) // 4 + 1
        p = info.patch_size_t or 1
        ok = [4 * (n - 1) + 1 for n in (t - t % p, t - t % p + p) if n > 0]
        raise ValueError(
            f"--video on {info.name!r}: {len(video.frames)} frames make {t} latent frames, not a multiple of its "
            f"temporal patch {p} (the latent would be padded); give --frames {' or '.join(map(str, ok))}"
        )
    pixels = video_to_tensor(video.frames, height, width, video.resize)
    return dataclasses.replace(video, pixels=pixels)


def encode(video: VideoInput, model: Any, noise: NoiseSource, seed: int, profile: str, dtype: torch.dtype) -> Tensor:
    """The clean latent ``(1, T, C, h, w)``: the ``diffusers`` profile samples the VAE posterior
    from the pipeline's generator (before the initial noise is drawn); ``sat`` from a CPU generator
    of its own seeded with ``seed`` (torch's global stream untouched)."""
    assert video.pixels is not None, "prepare() the video first"
    if profile == "diffusers":
        generator = getattr(noise, "generator", None)
    else:
        generator = torch.Generator("cpu").manual_seed(seed)
    with torch.inference_mode():
        return model.encode_video(video.pixels.to(device=model.device, dtype=dtype), generator)


def noised(sampling: SamplingConfig, clean: Tensor, eps: Tensor, profile: str) -> Tensor:
    """The start of sampling from the clean latent and the drawn (or given) noise ``eps``, at the
    first level of the cut grid: ``diffusers``: ``scheduler.add_noise`` (``alphas_cumprod[t]`` cast to
    the latents' dtype, ``sqrt(ac) z0 + sqrt(1 - ac) eps``); ``sat``: ``alpha z0 + sqrt(1 - alpha^2)
    eps`` with the grid's float32 alpha, in eps's dtype (float32)."""
    grid = sampling.grid()
    clean = clean.to(device=eps.device, dtype=eps.dtype)
    if profile == "diffusers":
        ac = grid.ddpm_steps().alphas_cumprod[0].to(device=eps.device, dtype=eps.dtype)
        return ac**0.5 * clean + (1 - ac) ** 0.5 * eps
    a = grid.alphas()[0].to(device=eps.device, dtype=torch.float32)
    return (a * clean + (1 - a * a) ** 0.5 * eps).to(eps.dtype)
