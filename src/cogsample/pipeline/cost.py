"""What a planned video costs, from its shapes alone, before anything is loaded or run.

* :func:`memory_need`: the memory a video needs *at least* (what the run certainly holds at once:
  the sampler's latents, the network's working set where the model tells it, the VAE decode, the
  decoded frames as float32 and their uint8 conversion), per place (the device, and the host
  where the device is a GPU); :func:`check_memory` refuses, in one line, a video that cannot fit
  in what :func:`free_bytes` says is available. A lower bound on purpose: what it refuses cannot
  run; what it lets through may still not fit (model weights, for one, are not counted).
* :func:`forwards`: the network forwards a video makes (each context window and each CFG branch
  counts), as the progress lines and the video's JSON count them.
* :func:`seconds`: a rough CPU time for the built-in models, said up front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..models import BUILTIN, EXACT, untiled_decode_estimate

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..sampling.config import SamplingConfig
    from .plan import Plan

__all__ = [
    "MemoryNeed",
    "check_memory",
    "cond_only_calls",
    "describe",
    "forwards",
    "free_bytes",
    "memory_need",
    "seconds",
]

#: Rough CPU time of the built-in models per unit of work, calibrated so that the default video of
#: the exact model (49 frames at 368x240, 50 steps with CFG: 100 forwards) takes the README's 3 s
#: on a 2-core CPU; their ratios were measured (one forward's latent element, rendering one clip
#: pixel, one pixel of the output through decode, uint8, mp4 and contact sheet; the trained
#: model's transformer per forward of one window and branch, which its small size makes a constant).
S_PER_FORWARD_ELEMENT = 47e-9
S_PER_CLIP_PIXEL = 21e-9
S_PER_OUTPUT_PIXEL = 38e-9
TRAINED_S_PER_FORWARD = 6.5e-3


def free_bytes(device: torch.device | str) -> int | None:
    """Bytes free for new tensors on ``device`` (CUDA: the driver's free memory plus what torch's
    allocator holds unused; CPU: the kernel's MemAvailable), None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    return _meminfo("MemAvailable")


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _esize(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


@dataclass(frozen=True)
class MemoryNeed:
    """At least ``device_bytes`` on the plan's device and ``host_bytes`` of host memory (on a CPU
    device one memory: ``host_bytes`` is 0 and everything is in ``device_bytes``); ``device_parts``
    and ``host_parts``: what each peak is made of, ``(what, bytes)`` largest first."""

    device: torch.device
    device_bytes: int
    host_bytes: int
    device_parts: tuple[tuple[str, int], ...]
    host_parts: tuple[tuple[str, int], ...] = ()


def _kind(p: Plan) -> str:
    model = p.options.model
    return "exact" if model in EXACT else "trained" if model in BUILTIN else "folder"


def memory_need(p: Plan) -> MemoryNeed:
    """The memory video ``p`` needs at least, from its shapes (see the module docstring)."""
    kind = _kind(p)
    _, t, c, h, w = p.shape
    t_net = t if p.windows is None else p.windows.frames  # what the network sees at once
    latent = t * c * h * w
    pixels = p.frames * p.height * p.width  # the decoded video, per channel
    state_esize = _esize(torch.float32 if p.options.profile == "sat" else p.dtype)
    # kept through the run: the sampled latents; the exact model's clip latents (float64 where the
    # device has it), rendered for the whole latent (and for a window, when there are windows)
    resident = {"the sampled latents": latent * state_esize}
    network = 0
    if kind == "exact":
        compute = 4 if p.device.type == "mps" else 8
        clips = int(p.info.extra.get("clips", 16))
        frames = t + (t_net if t_net != t else 0)
        resident["the built-in model's clip latents"] = clips * frames * c * h * w * compute
        network = 2 * t_net * c * h * w * compute  # the posterior mean's input and output, one row
    elif p.info.attention_head_dim is not None:  # a transformer: its tokens and width (ModelInfo)
        info = p.info
        patch, patch_t = info.patch_size or 2, info.patch_size_t or 1
        tokens = math.ceil(t_net / patch_t) * (h // patch) * (w // patch) + p.text_len
        inner = (info.attention_heads or 30) * info.attention_head_dim
        network = 4 * tokens * inner * _esize(p.dtype)  # hidden states, q, k, v of one row
    video = 3 * pixels * 4  # the decoded video in float32
    if kind == "folder":
        esize = _esize(p.dtype)
        decode = video + 3 * pixels * esize  # the VAE's output, and it in float32
        if p.options.vae_tiling == "off":
            # the estimate --vae-tiling auto decides with, measured on the released VAE (None: another VAE)
            clean = (1, t - p.pad_frames, c, h, w)
            untiled = untiled_decode_estimate(p.info, clean, p.options.profile, esize)
            decode = decode if untiled is None else untiled + video
    else:
        decode = 2 * video  # the block VAE's upsampled video and its clamped copy
    # one after the other: sampling, decoding, the uint8 conversion (which holds the float32 video
    # and two float32 intermediates, 255 x and rounded), on the host for a GPU
    phases = [
        {"the sampler's latents": 2 * latent * state_esize, "the network's working set": network},
        {"the VAE decode": decode},
    ]
    convert = {f"the decoded video, {p.frames} x {p.height} x {p.width} x 3 in float32 then uint8": 3 * video}
    host = 0
    if p.device.type == "cpu":
        phases.append(convert)
    else:
        host = sum(convert.values())
    peak = max(phases, key=lambda ph: sum(ph.values()))
    total = sum(resident.values()) + sum(peak.values())
    return MemoryNeed(p.device, total, host, _largest({**resident, **peak}), _largest(convert if host else {}))


def _largest(parts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(((k, v) for k, v in parts.items() if v > 0), key=lambda kv: -kv[1]))


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def _available(device: torch.device) -> tuple[int | None, str]:
    """Bytes available on ``device`` for the check, and how they were read. On the CPU, swap
    counts too: a run that fits in RAM and swap together runs (slowly), and is not refused."""
    free = free_bytes(device)
    if device.type != "cpu" or free is None:
        return free, "free" if device.type == "cuda" else "available"
    swap = _meminfo("SwapFree") or 0
    return free + swap, "available (MemAvailable + SwapFree)" if swap else "available (MemAvailable)"


def check_memory(p: Plan) -> MemoryNeed:
    """``ValueError`` in one line (the size parameters and their values, the estimate, what is
    available) when video ``p`` cannot fit: :func:`memory_need` exceeds what the device, or the host
    for a GPU's decoded video, has available. Unknown availability is not refused."""
    need = memory_need(p)
    sizes = f"frames={p.frames}, height={p.height}, width={p.width}"
    if p.windows is not None:
        sizes += f", context_frames={p.windows.frames}"
    checks = [(p.device, need.device_bytes, need.device_parts)]
    if need.host_bytes:
        checks.append((torch.device("cpu"), need.host_bytes, need.host_parts))
    for device, bytes_, parts in checks:
        free, how = _available(device)
        if free is None or bytes_ <= free:
            continue
        where = "memory" if device.type == "cpu" else f"memory on {device}"
        if device.type == "cpu" and p.device.type != "cpu":
            where = "host memory"
        biggest = "; ".join(f"{_bytes(n)} for {name}" for name, n in parts[:2])
        raise ValueError(
            f"{sizes}: this video needs at least {_bytes(bytes_)} of {where} ({biggest}), but {_bytes(free)} is "
            f"{how}: ask for fewer frames or a smaller height and width"
        )
    return need


def forwards(p: Plan) -> tuple[int, bool]:
    """``(n, exact)``: the network forwards video ``p`` makes, counted as its progress lines and
    JSON count them (a CFG step 2, a conditional-only step 1, times the context windows); ``exact``
    False where the sampler's second call per step may be skipped (then ``n`` is the most)."""
    from ..sampling.guidance import guidance_scales

    s = p.sampling
    grid = s.grid()
    scales = guidance_scales(s.guidance, grid.timesteps, grid.num_steps, grid.requested_steps)
    per_step = [1 if v is None or (s.skip_unit_cfg and v == 1.0) else 2 for v in scales]
    if s.guider is not None:  # CFG-Zero*'s zeroed steps call nothing; PAG's and SLG's one more call
        g = s.guider
        steps = grid.requested_steps or grid.num_steps
        per_step = [0 if i < g.zero_steps else n + g.perturbs(i, steps) for i, n in enumerate(per_step)]
    calls = s.spec.calls_per_step
    return sum(per_step) * calls * p.forwards_per_call, calls == 1


def cond_only_calls(s: SamplingConfig) -> bool:
    """Whether some network calls of ``s`` hold the conditional rows only (no guidance on that step:
    ``--guidance none``, outside a guidance interval, or a unit scale under ``--skip-unit-cfg``)."""
    from ..sampling.guidance import guidance_scales

    grid = s.grid()
    scales = guidance_scales(s.guidance, grid.timesteps, grid.num_steps, grid.requested_steps)
    return any(v is None or (s.skip_unit_cfg and v == 1.0) for v in scales)


def seconds(p: Plan, n_forwards: int | None = None) -> float | None:
    """A rough CPU time for video ``p`` on a built-in model (see :data:`S_PER_FORWARD_ELEMENT`);
    None for other models and devices."""
    kind = _kind(p)
    if kind == "folder" or p.device.type != "cpu":
        return None
    n = forwards(p)[0] if n_forwards is None else n_forwards
    _, t, c, h, w = p.shape
    out = p.frames * p.height * p.width * S_PER_OUTPUT_PIXEL
    if kind == "trained":
        return n * TRAINED_S_PER_FORWARD + out
    t_net = t if p.windows is None else p.windows.frames
    clips = int(p.info.extra.get("clips", 16))
    rendered = 4 * (t - 1) + 1 + (4 * (t_net - 1) + 1 if t_net != t else 0)
    render = clips * rendered * p.height * p.width * S_PER_CLIP_PIXEL
    return n * t_net * c * h * w * S_PER_FORWARD_ELEMENT + render + out


def describe(plans: list[Plan]) -> str:
    """``"N forwards"`` for these videos together (``"at most"`` where not exact), and on the
    built-in models on a CPU ``", roughly T on a 2-core CPU"``: what the log says up front."""
    total, exact, time = 0, True, 0.0
    for p in plans:
        n, e = forwards(p)
        total, exact = total + n, exact and e
        s = seconds(p, n)
        time = math.nan if s is None else time + s
    text = f"{'' if exact else 'at most '}{total} network forwards" + (" in all" if len(plans) > 1 else "")
    if plans and math.isfinite(time):
        text += f", roughly {_duration(time)} on a 2-core CPU"
    return text


def _duration(s: float) -> str:
    if s < 90:
        return f"{max(1, round(s))} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    if s < 48 * 3600:
        return f"{s / 3600:.2g} h"
    return f"{s / 86400:.2g} days"
