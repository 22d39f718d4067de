"""A built-in, weight-free text-to-video (and image-to-video) model whose network is *exact*.

The "data" are procedural clips (coloured shapes moving on plain backgrounds), each with a
caption. A fixed linear "VAE" with CogVideoX's compression maps a clip to a latent ``mu_k``; the
data distribution is the Gaussian mixture ``sum_k w_k N(mu_k, tau^2 I)``, with the weights ``w``
chosen by the prompt. For that distribution the ideal denoiser has a closed form, so the network
returns the true posterior mean (as a v-prediction) and any sampler that works converges to a
sample of the mixture: a rendering of a clip the prompt names, plus ``tau``-sized latent noise.

Pieces, each usable alone:

* :data:`CLIPS` / :func:`captions` / :func:`match_prompt`: the clip library and prompt matching;
* :class:`BlockVAE`: the linear encoder (8x8 block means, 4 frames -> 16 channels) and its
  least-squares pseudo-inverse as the decoder;
* :func:`posterior_mean`: ``E[x0 | x_t]`` for an isotropic Gaussian mixture;
* :class:`MixtureNetwork`: the network in the core's protocol;
* :class:`BuiltinModel`: the three parts as a :class:`~cogsample.models.base.VideoModel`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..reference.profiles import COGVIDEOX_5B_SCHEDULER
from ..sampling.noise import LATENT_CHANNELS, SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION, latent_shape
from ..sampling.schedules import Schedule, ZeroSNRDDPM
from .base import ModelInfo, VideoModel

Tensor = torch.Tensor

__all__ = [
    "CLIPS",
    "DEFAULT_TAU",
    "MOTIONS",
    "SCHEDULER_CONFIG",
    "BlockVAE",
    "BlockVAEModel",
    "BuiltinModel",
    "Clip",
    "MixtureNetwork",
    "builtin_info",
    "captions",
    "match_prompt",
    "parse_prompt",
    "posterior_mean",
    "posterior_mean_given_first",
]

#: Per-element standard deviation of each mixture component around its clip latent. Small enough
#: that a sample decodes to a clean clip (pixel noise below tau / 2, ~1% mean abs error), large
#: enough that the components stay smooth Gaussians at the table's lowest noise (sigma ~ 0.03).
DEFAULT_TAU = 0.05

#: Native size (the CLI's defaults): CogVideoX's 49 frames (13 latent frames) at half its 480x720
#: (240x368, the nearest multiple of 16 to 1.5:1): 50 steps with CFG take about 2 s on two CPU
#: cores (480x720 works too, about 15 s).
NATIVE_FRAMES, NATIVE_HEIGHT, NATIVE_WIDTH = 49, 240, 368

#: CogVideoX-5B's diffusers ``scheduler/scheduler_config.json``: the built-in model is trained
#: (exactly) on the SAT ZeroSNR DDPM table with shift 1, which this config describes.
SCHEDULER_CONFIG: dict[str, object] = COGVIDEOX_5B_SCHEDULER

# ----------------------------------------------------------------------------------------------
# the clip library

#: RGB in [0, 1]. Mid grey is not exactly 0.5 so that no clip's latent is a zero vector.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.15, 0.70, 0.25),
    "blue": (0.12, 0.30, 0.85),
    "yellow": (0.98, 0.85, 0.15),
    "orange": (1.00, 0.55, 0.08),
    "purple": (0.50, 0.20, 0.70),
    "pink": (0.98, 0.45, 0.70),
    "cyan": (0.15, 0.80, 0.85),
    "white": (0.96, 0.96, 0.96),
    "black": (0.06, 0.06, 0.08),
    "gray": (0.50, 0.50, 0.53),
}

#: A motion maps normalized time t in [0, 1] (a tensor) and the frame's aspect ratio W/H to the
#: shape's centre (X, Y), a size multiplier and a rotation angle. Coordinates are in units of the
#: frame height (X in [0, W/H], Y in [0, 1], Y down), so shapes stay round at any aspect ratio.
Motion = Callable[[Tensor, float], tuple[Tensor, Tensor, Tensor, Tensor]]


def _still(t: Tensor, asp: float) -> tuple[Tensor, Tensor]:
    return torch.full_like(t, asp / 2), torch.full_like(t, 0.5)


def _bounce(t: Tensor, asp: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # |cos| gives a parabola-like bounce: top at t=0, floor at t=1/3 and t=1, top again at t=2/3
    x = asp * (0.30 + 0.40 * t)
    y = 0.75 - 0.45 * torch.cos(1.5 * math.pi * t).abs()
    return x, y, torch.ones_like(t), torch.zeros_like(t)


def _rotate(t: Tensor, asp: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y = _still(t, asp)
    return x, y, torch.ones_like(t), math.pi * 0.75 * t


def _grow(t: Tensor, asp: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y = _still(t, asp)
    return x, y, 0.25 + 0.95 * t, torch.zeros_like(t)


def _shrink(t: Tensor, asp: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y = _still(t, asp)
    return x, y, 1.2 - 0.95 * t, torch.zeros_like(t)


def _pulse(t: Tensor, asp: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y = _still(t, asp)
    return x, y, 0.85 + 0.3 * torch.sin(4 * math.pi * t), torch.zeros_like(t)


def _orbit(t: Tensor, asp: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    phase = 2 * math.pi * t
    return asp / 2 + 0.27 * torch.cos(phase), 0.5 + 0.27 * torch.sin(phase), torch.ones_like(t), phase


def _slide(dx: float, dy: float) -> Motion:
    """Straight line through the centre, from ``-(dx, dy)`` to ``+(dx, dy)`` (fractions of W, H)."""

    def motion(t: Tensor, asp: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        u = 2 * t - 1
        return asp * (0.5 + dx * u), 0.5 + dy * u, torch.ones_like(t), torch.zeros_like(t)

    return motion


#: The named motions: canonical name -> (the motion words a prompt names it by, its path, the
#: phrase a caption uses). The clip library below and :mod:`cogsample.models.family` draw on it.
MOTIONS: dict[str, tuple[tuple[str, ...], Motion, str]] = {
    "bounce": (("bounce",), _bounce, "bouncing"),
    "rotate": (("rotate",), _rotate, "rotating"),
    "grow": (("grow",), _grow, "growing"),
    "shrink": (("shrink",), _shrink, "shrinking"),
    "pulse": (("pulse",), _pulse, "pulsing"),
    "orbit": (("orbit",), _orbit, "circling"),
    "right": (("move", "right"), _slide(0.33, 0.0), "moving from left to right"),
    "left": (("move", "left"), _slide(-0.33, 0.0), "moving from right to left"),
    "down": (("move", "down"), _slide(0.0, 0.32), "sliding down"),
    "up": (("move", "up"), _slide(0.0, -0.3), "rising"),
}


def _sd_box(px: Tensor, py: Tensor, hx: Tensor, hy: Tensor) -> Tensor:
    """Signed distance to an axis-aligned box of half extents (hx, hy), centred at the origin."""
    qx, qy = px.abs() - hx, py.abs() - hy
    outside = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2)
    return outside + torch.maximum(qx, qy).clamp_max(0)


def _sd_shape(kind: str, px: Tensor, py: Tensor, r: Tensor, angle: Tensor) -> Tensor:
    """Signed distance (negative inside, height units) to ``kind`` of radius ``r`` turned by ``angle``."""
    c, s = torch.cos(angle), torch.sin(angle)
    qx, qy = c * px + s * py, -s * px + c * py  # the point in the shape's own (unrotated) frame
    if kind == "circle":
        return torch.sqrt(px * px + py * py) - r
    if kind == "ring":
        return (torch.sqrt(px * px + py * py) - r).abs() - 0.22 * r
    if kind == "square":
        return _sd_box(qx, qy, 0.8 * r, 0.8 * r)
    if kind == "bar":
        return _sd_box(qx, qy, 1.4 * r, 0.22 * r)
    if kind == "cross":
        return torch.minimum(_sd_box(qx, qy, r, 0.3 * r), _sd_box(qx, qy, 0.3 * r, r))
    if kind == "triangle":
        # intersection of three half planes; outward normals point away from the vertices, the
        # top vertex at -pi/2 (image y points down), inradius r/2 for circumradius r
        d = None
        for i in range(3):
            phi = math.pi / 2 + 2 * math.pi * i / 3
            e = qx * math.cos(phi) + qy * math.sin(phi) - 0.5 * r
            d = e if d is None else torch.maximum(d, e)
        return d
    if kind == "star":
        # five points, tip up: fold the angle into one half-spike wedge [0, pi/5], where the star
        # is the side of the edge (tip (r, 0) -> inner corner (0.45 r, pi/5)) facing the centre
        rho = torch.sqrt(qx * qx + qy * qy)
        wedge = 2 * math.pi / 5
        phi = torch.remainder(torch.atan2(qy, qx) + math.pi / 2 + wedge / 2, wedge) - wedge / 2
        fx, fy = rho * torch.cos(phi), rho * torch.sin(phi).abs()
        ix, iy = 0.45 * math.cos(wedge / 2), 0.45 * math.sin(wedge / 2)
        ex, ey = ix - 1.0, iy  # edge direction (unit radius); its outward normal is (ey, -ex) / |e|
        norm = math.hypot(ex, ey)
        return ((fx - r) * ey - fy * ex) / norm
    raise ValueError(f"unknown shape kind {kind!r}")


@dataclass(frozen=True)
class Clip:
    """A procedural clip: a ``color`` ``shape`` doing ``motion`` on a ``background``, with a caption.

    ``render`` draws it at any size from normalized coordinates and normalized time, so the
    same clip exists at every resolution and frame count.
    """

    caption: str
    color: str
    shape: str
    motion: tuple[str, ...]
    background: str
    size: float
    path: Motion

    def render_times(self, times: Tensor, height: int, width: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """Frames at normalized times ``times (n,)`` in [0, 1]: ``(n, 3, height, width)`` in [0, 1]."""
        dev = times.device
        # per-pixel work in float32 unless float64 is asked for (half the memory traffic)
        work = torch.float64 if dtype == torch.float64 else torch.float32
        asp = width / height
        cx, cy, scale, angle = (v.to(work).view(-1, 1, 1) for v in self.path(times.to(torch.float64), asp))
        # pixel centres in height units
        ys = ((torch.arange(height, device=dev, dtype=work) + 0.5) / height).view(1, -1, 1)
        xs = ((torch.arange(width, device=dev, dtype=work) + 0.5) / height).view(1, 1, -1)
        sd = _sd_shape(self.shape, xs - cx, ys - cy, self.size * scale, angle)
        # coverage with a one-pixel linear ramp across the outline (anti-aliasing at any size)
        cover = (0.5 - sd * height).clamp(0, 1).unsqueeze(1)
        fg = torch.tensor(COLORS[self.color], device=dev, dtype=work).view(1, 3, 1, 1)
        bg = torch.tensor(COLORS[self.background], device=dev, dtype=work).view(1, 3, 1, 1)
        return (bg + cover * (fg - bg)).to(dtype)

    def render(
        self,
        frames: int,
        height: int,
        width: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """The whole clip, ``(frames, 3, height, width)`` in [0, 1]; frame f is at time f / (frames - 1)."""
        return self.render_times(_times(frames, device), height, width, dtype=dtype)


def _times(frames: int, device: torch.device | str | None = None) -> Tensor:
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames!r}")
    return torch.arange(frames, device=device, dtype=torch.float64) / max(frames - 1, 1)


#: The library. Every clip has a distinct (colour, background) pair so that first frames differ
#: (image-to-video picks the clip by its first frame).
CLIPS: tuple[Clip, ...] = (
    Clip("a red ball bouncing on a blue background", "red", "circle", ("bounce",), "blue", 0.13, _bounce),
    Clip("a yellow square rotating on a black background", "yellow", "square", ("rotate",), "black", 0.24, _rotate),
    Clip(
        "a green triangle moving from left to right on a white background",
        "green",
        "triangle",
        ("move", "right"),
        "white",
        0.2,
        _slide(0.33, 0.0),
    ),
    Clip("a white ring growing on a purple background", "white", "ring", ("grow",), "purple", 0.3, _grow),
    Clip(
        "an orange bar sliding down on a gray background",
        "orange",
        "bar",
        ("move", "down"),
        "gray",
        0.2,
        _slide(0.0, 0.32),
    ),
    Clip("a blue circle shrinking on a yellow background", "blue", "circle", ("shrink",), "yellow", 0.3, _shrink),
    Clip("a pink square circling on a green background", "pink", "square", ("orbit",), "green", 0.11, _orbit),
    Clip("a cyan triangle spinning on a red background", "cyan", "triangle", ("rotate",), "red", 0.3, _rotate),
    Clip("a white bar rotating on a black background", "white", "bar", ("rotate",), "black", 0.24, _rotate),
    Clip(
        "a green ball moving from right to left on a pink background",
        "green",
        "circle",
        ("move", "left"),
        "pink",
        0.14,
        _slide(-0.33, 0.0),
    ),
    Clip("a purple ring shrinking on a white background", "purple", "ring", ("shrink",), "white", 0.3, _shrink),
    Clip("a white square bouncing on a cyan background", "white", "square", ("bounce",), "cyan", 0.13, _bounce),
    Clip("a yellow star spinning on a blue background", "yellow", "star", ("rotate",), "blue", 0.3, _rotate),
    Clip("a red cross pulsing on a white background", "red", "cross", ("pulse",), "white", 0.26, _pulse),
    Clip(
        "an orange ball rising on a black background",
        "orange",
        "circle",
        ("move", "up"),
        "black",
        0.13,
        _slide(0.0, -0.3),
    ),
    Clip("a blue triangle bouncing on an orange background", "blue", "triangle", ("bounce",), "orange", 0.15, _bounce),
)


def captions() -> list[str]:
    """The captions of :data:`CLIPS`, in order (entry k of a context row weighs clip k)."""
    return [c.caption for c in CLIPS]


# ----------------------------------------------------------------------------------------------
# prompt matching


def _vocab(groups: dict[str, str]) -> dict[str, frozenset[str]]:
    """``{"canonical": "word word ..."}`` -> ``{word: {canonical}}`` (a word may name several)."""
    out: dict[str, set[str]] = {}
    for canon, words in groups.items():
        for w in words.split():
            out.setdefault(w, set()).add(canon)
    return {w: frozenset(c) for w, c in out.items()}


_COLOR_WORDS = _vocab(
    {
        "red": "red crimson scarlet",
        "green": "green lime emerald",
        "blue": "blue azure navy",
        "yellow": "yellow gold golden",
        "orange": "orange amber",
        "purple": "purple violet lilac lavender",
        "pink": "pink magenta rose fuchsia",
        "cyan": "cyan teal turquoise aqua",
        "white": "white",
        "black": "black",
        "gray": "gray grey silver",
    }
)
_SHAPE_WORDS = _vocab(
    {
        "circle": "ball circle disc disk dot sphere orb",
        "square": "square box cube block",
        "triangle": "triangle pyramid",
        "ring": "ring donut doughnut hoop annulus",
        "bar": "bar stick rod line beam stripe plank",
        "star": "star",
        "cross": "cross plus",
    }
)
_MOTION_WORDS = _vocab(
    {
        "bounce": "bounce bouncing bouncy jump jumping hop hopping",
        "rotate": "rotate rotating rotation spin spinning turn turning twirl twirling",
        "grow": "grow growing expand expanding enlarge enlarging bigger larger swell swelling inflate inflating",
        "shrink": "shrink shrinking contract contracting smaller deflate deflating",
        "pulse": "pulse pulsing pulsate pulsating throb throbbing beat beating",
        "orbit": "orbit orbiting circling",
        "move": (
            "move moving slide sliding glide gliding drift drifting travel travelling traveling cross crossing "
            "roll rolling fall falling drop dropping descend descending sink sinking rise rising ascend ascending "
            "float floating"
        ),
        "left": "left leftward leftwards",
        "right": "right rightward rightwards",
        "up": "up upward upwards rise rising ascend ascending float floating",
        "down": "down downward downwards fall falling drop dropping descend descending sink sinking",
    }
)
_BACKGROUND_WORDS = frozenset({"background", "backdrop", "bg", "backgrounds"})
_FILLERS = frozenset({"a", "an", "the", "plain", "solid", "dark", "light", "bright", "pale", "deep", "flat"})
# "left to right" names one direction, not both
_PHRASES = (
    (re.compile(r"\b(?:from\s+)?left\s+to\s+(?:the\s+)?right\b"), " rightward "),
    (re.compile(r"\b(?:from\s+)?right\s+to\s+(?:the\s+)?left\b"), " leftward "),
    (re.compile(r"\b(?:from\s+)?top\s+to\s+(?:the\s+)?bottom\b"), " downward "),
    (re.compile(r"\b(?:from\s+)?bottom\s+to\s+(?:the\s+)?top\b"), " upward "),
)


def _lookup(word: str, vocab: dict[str, frozenset[str]]) -> frozenset[str]:
    """A word's canonical names, trying simple plural forms (balls, boxes) too."""
    if word in vocab:
        return vocab[word]
    for cut in ("es", "s"):
        if word.endswith(cut) and word[: -len(cut)] in vocab:
            return vocab[word[: -len(cut)]]
    return frozenset()


@dataclass(frozen=True)
class PromptAttributes:
    """What a prompt names: object colours, shapes, motion words, background colours."""

    colors: frozenset[str]
    shapes: frozenset[str]
    motions: frozenset[str]
    backgrounds: frozenset[str]

    def score(self, clip: Clip) -> int:
        """Number of the clip's attributes the prompt names (0 to 3 + number of motion words)."""
        return (
            (clip.color in self.colors)
            + (clip.shape in self.shapes)
            + sum(m in self.motions for m in clip.motion)
            + (clip.background in self.backgrounds)
        )


def parse_prompt(prompt: str) -> PromptAttributes:
    """Tokenize and classify: a colour is a background colour when the next word (after fillers)
    is "background", or when it follows "on"/"against" and no shape word follows it."""
    text = prompt.lower()
    for pattern, repl in _PHRASES:
        text = pattern.sub(repl, text)
    words = [w for w in re.findall(r"[a-z]+", text) if w not in _FILLERS]
    colors: set[str] = set()
    backgrounds: set[str] = set()
    shapes: set[str] = set()
    motions: set[str] = set()
    for i, w in enumerate(words):
        col = _lookup(w, _COLOR_WORDS)
        shp = _lookup(w, _SHAPE_WORDS)
        mot = _lookup(w, _MOTION_WORDS)
        if col:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            prev = words[i - 1] if i > 0 else ""
            is_bg = nxt in _BACKGROUND_WORDS or (prev in ("on", "against", "over") and not _lookup(nxt, _SHAPE_WORDS))
            (backgrounds if is_bg else colors).update(col)
        elif shp:  # before motions: "cross" is a shape here, "crossing" a motion
            shapes.update(shp)
        elif mot:
            motions.update(mot)
    return PromptAttributes(frozenset(colors), frozenset(shapes), frozenset(motions), frozenset(backgrounds))


def match_prompt(prompt: str, clips: Sequence[Clip] = CLIPS) -> list[float]:
    """Mixture weights over ``clips`` for ``prompt``: uniform over the clips with the most matched
    attributes. An empty prompt is unconditional (uniform over all clips, no warning); a prompt that
    matches nothing warns and also gets all clips."""
    n = len(clips)
    if not prompt.strip():
        return [1.0 / n] * n
    attrs = parse_prompt(prompt)
    scores = [attrs.score(c) for c in clips]
    best = max(scores)
    if best == 0:
        examples = "; ".join(repr(c.caption) for c in clips[:4])
        warnings.warn(
            f"prompt {prompt!r} names no colour, shape or motion of the built-in model's {n} clips, so it "
            f"samples from all of them; try e.g. {examples} (all captions: cogsample.models.builtin.captions())",
            UserWarning,
            stacklevel=3,
        )
        return [1.0 / n] * n
    keep = [s == best for s in scores]
    return [k / sum(keep) for k in keep]


# ----------------------------------------------------------------------------------------------
# the linear "VAE"


class BlockVAE:
    """A fixed linear autoencoder with CogVideoX's 8x spatial and 4x causal temporal compression.

    Encoder: pixel ``p`` in [0, 1] -> ``c = 2 p - 1``, averaged over 8x8 blocks; latent frame 0
    encodes pixel frame 0 (fed four times, as the causal VAE pads it), latent frame ``j >= 1``
    encodes pixel frames ``4j-3 .. 4j``. Per latent pixel ``z = A [c_1; c_2; c_3; c_4]`` with
    ``A = [I_12; L]`` (channels ``3i + rgb`` the colours of frame ``i``, channels ``12 + i`` its
    luma), so latents lie in [-1, 1]. Decoder: the pseudo-inverse, ``pinv(A)`` (``pinv(A R)`` for
    frame 0, R the 4x repetition) then nearest 8x upsampling, the pseudo-inverse of block
    averaging; ``encode(decode(z)) = z`` for every ``z`` in the encoder's range.
    """

    def __init__(self) -> None:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
        a = torch.zeros(LATENT_CHANNELS, 4 * 3, dtype=torch.float64)
        a[:12] = torch.eye(12, dtype=torch.float64)
        for i in range(4):
            a[12 + i, 3 * i : 3 * i + 3] = luma
        rep = torch.cat([torch.eye(3, dtype=torch.float64)] * 4)  # (12, 3): frame 0 fed 4 times
        self.enc = a  # (16, 12)
        self.enc0 = a @ rep  # (16, 3)
        self.dec = torch.linalg.pinv(self.enc)  # (12, 16)
        self.dec0 = torch.linalg.pinv(self.enc0)  # (3, 16)

    @staticmethod
    def _blocks(video: Tensor) -> Tensor:
        """(..., 3, H, W) in [0, 1] -> 8x8 block means of ``2 p - 1``, (..., 3, H/8, W/8)."""
        lead = video.shape[:-3]
        flat = video.reshape(-1, *video.shape[-3:])
        pooled = torch.nn.functional.avg_pool2d(flat, SPATIAL_COMPRESSION)
        return (2 * pooled - 1).reshape(*lead, *pooled.shape[-3:])

    def encode(self, video: Tensor) -> Tensor:
        """``(B, F, 3, H, W)`` in [0, 1], F = 4k+1 -> latents ``(B, k+1, 16, H/8, W/8)`` (float64 maps,
        video's dtype out)."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be (B, F, 3, H, W), got {tuple(video.shape)}")
        b, f, _, h, w = video.shape
        if (f - 1) % TEMPORAL_COMPRESSION:
            raise ValueError(f"video frames must be 4k+1, got {f}")
        if h % SPATIAL_COMPRESSION or w % SPATIAL_COMPRESSION:
            raise ValueError(f"video height and width must be multiples of 8, got {h}x{w}")
        c = self._blocks(video.to(torch.float64))  # (B, F, 3, h, w)
        enc, enc0 = self.enc.to(c.device), self.enc0.to(c.device)
        first = torch.einsum("oc,bchw->bohw", enc0, c[:, 0]).unsqueeze(1)
        rest = c[:, 1:].reshape(b, (f - 1) // 4, 12, h // 8, w // 8)
        rest = torch.einsum("oc,btchw->btohw", enc, rest)
        return torch.cat([first, rest], dim=1).to(video.dtype)

    def encode_frame(self, frame: Tensor) -> Tensor:
        """One frame ``(B, 3, H, W)`` in [0, 1] -> ``(B, 1, 16, H/8, W/8)`` (latent frame 0)."""
        return self.encode(frame.unsqueeze(1))

    def decode(self, latents: Tensor) -> Tensor:
        """Least-squares inverse: ``(B, T, 16, h, w)`` -> ``(B, 4(T-1)+1, 3, 8h, 8w)`` float32 in [0, 1]."""
        if latents.ndim != 5 or latents.shape[2] != LATENT_CHANNELS:
            raise ValueError(f"latents must be (B, T, 16, h, w), got {tuple(latents.shape)}")
        b, t, _, h, w = latents.shape
        z = latents.to(torch.float64)
        dec, dec0 = self.dec.to(z.device), self.dec0.to(z.device)
        first = torch.einsum("co,bohw->bchw", dec0, z[:, 0]).unsqueeze(1)
        rest = torch.einsum("co,btohw->btchw", dec, z[:, 1:]).reshape(b, 4 * (t - 1), 3, h, w)
        c = torch.cat([first, rest], dim=1)
        pix = ((c + 1) / 2).to(torch.float32)
        pix = pix.repeat_interleave(SPATIAL_COMPRESSION, dim=-2).repeat_interleave(SPATIAL_COMPRESSION, dim=-1)
        return pix.clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# the exact network


def posterior_mean(x: Tensor, alpha: Tensor, mu: Tensor, log_w: Tensor, tau: float) -> Tensor:
    """``E[x0 | x_t]`` for ``x0 ~ sum_k w_k N(mu_k, tau^2 I)``, ``x_t = a x0 + s eps`` (``s^2 = 1 - a^2``).

    With ``v = a^2 tau^2 + s^2`` and ``g = a tau^2 / v``: ``E = g x + (1 - a g) sum_k r_k mu_k``,
    ``r = softmax(log w_k - |x - a mu_k|^2 / 2v)``. Shapes: ``x (N, d)``, ``alpha (N,)``,
    ``mu (K, d)``, ``log_w (N, K)`` (``-inf`` drops a component); computed in x's dtype (use float64).
    """
    a = alpha.to(x.dtype).view(-1, 1)
    var = a * a * tau**2 + (1 - a * a)
    # |x - a mu_k|^2 expanded: one (N, d) x (d, K) product instead of N K differences of length d
    sq = (x * x).sum(1, keepdim=True) - 2 * a * (x @ mu.T) + a * a * (mu * mu).sum(1).view(1, -1)
    r = torch.softmax(log_w - sq / (2 * var), dim=1)
    g = a * tau**2 / var
    return g * x + (1 - a * g) * (r @ mu)


def posterior_mean_given_first(
    x_rest: Tensor, y: Tensor, alpha: Tensor, mu0: Tensor, mu_rest: Tensor, log_w: Tensor, tau: float
) -> Tensor:
    """``E[x0[1:] | x_t, x0[0] = y]`` for the same mixture (image-to-video): x0's first frame is known.

    Given ``y``, ``x_t[0] = a y + s eps`` says nothing more about the component, and within a
    component the frames are independent (isotropic), so this is :func:`posterior_mean` on frames
    ``1..`` with the weights reweighted by the first frame's likelihood, ``log w_k - |y - mu_k[0]|^2 / 2 tau^2``.
    Shapes: ``x_rest (N, d')``, ``y (N, d0)``, ``mu0 (K, d0)``, ``mu_rest (K, d')``, ``log_w (N, K)``.
    """
    dist = (y * y).sum(1, keepdim=True) - 2 * (y @ mu0.T) + (mu0 * mu0).sum(1).view(1, -1)
    log_w = log_w - dist / (2 * tau**2)
    if x_rest.shape[1] == 0:
        return x_rest
    return posterior_mean(x_rest, alpha, mu_rest, log_w, tau)


@dataclass
class _Means:
    """The clip latents at one latent size, flattened: all frames, frame 0, frames 1..T-1."""

    mu: Tensor  # (K, T*16*h*w)
    mu0: Tensor  # (K, 16*h*w)
    rest: Tensor  # (K, (T-1)*16*h*w)


class MixtureNetwork:
    """The exact v-prediction network for the clip mixture, in the core's protocol.

    ``net(x (N, T, Cin, h, w), t (N,), context (N, L, K), ofs=None) -> (N, T, 16, h, w)``: ``t`` is
    the DDPM timestep, read as ``a = table[round(t)]``; ``context`` rows are mixture weights over
    :data:`CLIPS` (an all-zero row: uniform); returns ``v = (a x_t - E[x0 | x_t]) / s`` so that
    VideoScaling's ``a x_t - s v`` is the posterior mean. I2V (``Cin = 32``): the last 16 channels
    of frame 0 are the image latent ``y``; then ``x0[0] = y`` exactly and the components are
    reweighted by ``N(y; mu_k[0], tau^2 I)``. ``ofs`` is ignored.
    """

    def __init__(
        self,
        clips: Sequence[Clip] = CLIPS,
        tau: float = DEFAULT_TAU,
        schedule: Schedule | None = None,
        i2v: bool = False,
        vae: BlockVAE | None = None,
        cache_size: int = 4,
    ):
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
        self.clips = tuple(clips)
        self.tau = float(tau)
        self.schedule = schedule if schedule is not None else ZeroSNRDDPM(1.0)
        self.alphas = self.schedule.table(1000).to(torch.float64)
        if self.schedule.space != "alpha":
            raise ValueError(f"the schedule must be an alpha-space DDPM table, got {type(self.schedule).__name__}")
        self.i2v = i2v
        self.vae = vae or BlockVAE()
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, _Means] = OrderedDict()
        self._tables: dict[tuple, Tensor] = {}

    @staticmethod
    def compute_dtype(device: torch.device) -> torch.dtype:
        # the logits are ~d/2 in size and their differences must be exact to O(1): float64 where
        # the device has it (MPS does not)
        return torch.float32 if device.type == "mps" else torch.float64

    def means(
        self,
        t: int,
        h: int,
        w: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        progress: Callable[[int, int, str], None] | None = None,
    ):
        """Clip latents ``mu_k`` for latent size ``(t, h, w)``, rendered at ``(4(t-1)+1, 8h, 8w)``;
        cached. ``progress(done, total, what)`` is told of each clip rendered."""
        device = torch.device(device)
        key = (t, h, w, str(device), dtype)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        frames, height, width = 4 * (t - 1) + 1, 8 * h, 8 * w
        # render where the network runs (float32), encode in float64 where the device has it
        where = device if self.compute_dtype(device) == torch.float64 else torch.device("cpu")
        times = _times(frames, where)
        enc, enc0 = self.vae.enc.to(where), self.vae.enc0.to(where)
        # latent frames rendered together in chunks of ~1.6 MB float32 tensors: small enough to stay
        # in cache (larger chunks are slower), large enough that tiny sizes take few ops
        step = max(1, 400_000 // (4 * height * width))
        rows = []
        what = f"rendering the built-in model's clips at {frames}x{height}x{width}"
        for n, clip in enumerate(self.clips):
            if progress is not None:
                progress(n, len(self.clips), what)
            # block means in float32 (error ~1e-7), then the small pooled tensor to float64
            c = self.vae._blocks(clip.render_times(times[:1], height, width)).double()
            lat = [torch.einsum("oc,bchw->bohw", enc0, c).unsqueeze(1)]
            for j0 in range(1, t, step):
                j1 = min(t, j0 + step)
                # latent frame j encodes pixel frames 4j-3 .. 4j
                video = clip.render_times(times[4 * j0 - 3 : 4 * j1 - 3], height, width)
                c = self.vae._blocks(video).double().reshape(j1 - j0, 12, h, w)
                lat.append(torch.einsum("oc,bchw->bohw", enc, c).unsqueeze(0))
            rows.append(torch.cat(lat, dim=1).reshape(-1))
        if progress is not None:
            progress(len(self.clips), len(self.clips), what)
        mu = torch.stack(rows).to(device=device, dtype=dtype)
        d0 = LATENT_CHANNELS * h * w
        means = _Means(mu, mu[:, :d0], mu[:, d0:])
        self._cache[key] = means
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return means

    def log_weights(self, context: Tensor, dtype: torch.dtype) -> Tensor:
        """``(N, L, K)`` context -> ``(N, K)`` log mixture weights; an all-zero row is uniform."""
        k = len(self.clips)
        if context.ndim != 3 or context.shape[-1] != k:
            raise ValueError(
                f"the built-in model's context is (N, L, {k}) clip weights (from its encode_prompts), "
                f"got {tuple(context.shape)}"
            )
        w = context.to(dtype).clamp_min(0).mean(dim=1)
        total = w.sum(1, keepdim=True)
        w = torch.where(total > 0, w / total.clamp_min(torch.finfo(dtype).tiny), torch.full_like(w, 1.0 / k))
        return w.log()

    def alpha_at(self, t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
        """sqrt(alphas_cumprod) at the DDPM timesteps ``t`` (rounded, clamped to the table)."""
        key = (str(device), dtype)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = self.alphas.to(device=device, dtype=dtype)
        # indexed where t lives: no host round trip (and no device sync) per call
        idx = t.detach().to(device=device, dtype=dtype).round().clamp(0, table.numel() - 1).long()
        return table[idx]

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor:
        want = 2 * LATENT_CHANNELS if self.i2v else LATENT_CHANNELS
        if x.ndim != 5 or x.shape[2] != want:
            kind = "image-to-video (16 latent + 16 image channels)" if self.i2v else "text-to-video"
            raise ValueError(f"the built-in {kind} network takes (N, T, {want}, h, w), got {tuple(x.shape)}")
        n, frames, _, h, w = x.shape
        if t.numel() not in (1, n) or context.shape[0] != n:
            raise ValueError(f"t {tuple(t.shape)} and context {tuple(context.shape)} must have N={n} rows")
        cdt = self.compute_dtype(x.device)
        m = self.means(frames, h, w, x.device, cdt)
        a = self.alpha_at(t.reshape(-1), x.device, cdt).expand(n)
        s = (1 - a * a).clamp_min(0).sqrt().clamp_min(1e-12).view(n, 1)
        log_w = self.log_weights(context, cdt)
        xt = x[:, :, :LATENT_CHANNELS].to(cdt)
        flat = xt.reshape(n, -1)
        if not self.i2v:
            x0 = posterior_mean(flat, a, m.mu, log_w, self.tau)
        else:
            y = x[:, 0, LATENT_CHANNELS:].to(cdt).reshape(n, -1)
            rest = posterior_mean_given_first(xt[:, 1:].reshape(n, -1), y, a, m.mu0, m.rest, log_w, self.tau)
            x0 = torch.cat([y, rest], dim=1)
        v = (a.view(n, 1) * flat - x0) / s
        return v.reshape(n, frames, LATENT_CHANNELS, h, w).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# the model


def builtin_info(i2v: bool = False) -> ModelInfo:
    """The built-in model's facts: no weights, a 16-wide one-token "text embedding"."""
    return ModelInfo(
        name="builtin-i2v" if i2v else "builtin",
        i2v=i2v,
        max_text_len=1,
        frames=NATIVE_FRAMES,
        height=NATIVE_HEIGHT,
        width=NATIVE_WIDTH,
        scheduler=None,
        extra={"fps": 8, "clips": len(CLIPS), "context_dim": len(CLIPS), "tau": DEFAULT_TAU},
        context_windows=False,  # the exact posterior mean at every length: nothing to window
    )


class BlockVAEModel(VideoModel):
    """A :class:`VideoModel` whose VAE is :class:`BlockVAE` (``self.vae``): the built-in models'
    shared image encoding and decoding."""

    vae: BlockVAE

    def encode_image(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> latent frame 0, ``(B, 1, 16, H/8, W/8)``. The encoder is
        deterministic: ``generator`` is accepted for the pipeline's sake and never drawn from."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        z = self.vae.encode_frame((images.to(torch.float64) + 1) / 2)
        return z.to(device=self.device, dtype=self.dtype)

    def encode_keyframe(self, image: Tensor, frame: int) -> tuple[Tensor, Tensor | None]:
        """Frame 0: latent frame 0 (:meth:`encode_image`), every channel. Frame ``F > 0`` sits in
        latent frame ``(F-1)//4 + 1`` as its ``i = (F-1) % 4``-th frame: BlockVAE keeps each of the
        four frames on its own channels (colours ``3i .. 3i+2``, luma ``12 + i``), so the image
        fixes those four channels exactly and leaves the other three frames' channels free."""
        if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise ValueError(f"a keyframe image must be (1, 3, H, W) in [-1, 1], got {tuple(image.shape)}")
        if frame == 0:
            return self.encode_image(image), None
        pix = ((image.to(torch.float64) + 1) / 2).unsqueeze(1).expand(1, 5, *image.shape[1:])
        z = self.vae.encode(pix)[:, 1:2]
        i = (frame - 1) % TEMPORAL_COMPRESSION
        mask = torch.zeros(1, 1, LATENT_CHANNELS, 1, 1, dtype=torch.bool, device=self.device)
        mask[:, :, 3 * i : 3 * i + 3] = True
        mask[:, :, 12 + i] = True
        return z.to(device=self.device, dtype=self.dtype), mask

    def encode_video(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, F, 3, H, W)`` in [-1, 1] -> ``(B, T, 16, H/8, W/8)`` (as :meth:`encode_image`, whose
        latent is this one's frame 0). Deterministic: ``generator`` is never drawn from."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be (B, F, 3, H, W) in [-1, 1], got {tuple(video.shape)}")
        z = self.vae.encode((video.to(torch.float64) + 1) / 2)
        return z.to(device=self.device, dtype=self.dtype)

    def latents_for_vae(self, latents: Tensor) -> Tensor:
        """The identity: :meth:`decode` takes the sampler's latents unchanged."""
        return latents

    def decode(self, latents: Tensor, *, tiling: bool = False, reference: str = "diffusers") -> Tensor:
        """``(B, T, 16, h, w)`` -> ``(B, 4(T-1)+1, 3, 8h, 8w)`` float32 in [0, 1]; a linear map, the
        same for every ``reference``, with nothing to tile."""
        return self.vae.decode(latents)


class BuiltinModel(BlockVAEModel):
    """The exact clip-mixture model as a :class:`VideoModel` (see the module docstring).

    ``encode_prompts`` gives ``(B, 1, K)`` mixture weights over :data:`CLIPS`; ``encode_image`` and
    ``decode`` are :class:`BlockVAE`; ``latents_for_vae`` is the identity (the VAE's scale is part
    of its encoder matrix, so the decoder takes the sampler's latents as they are).
    """

    def __init__(
        self,
        i2v: bool = False,
        tau: float = DEFAULT_TAU,
        schedule: Schedule | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.info = builtin_info(i2v)
        if tau != DEFAULT_TAU:
            self.info = dataclasses.replace(self.info, extra={**self.info.extra, "tau": float(tau)})
        self.device = torch.device(device)
        self.dtype = dtype
        self.vae = BlockVAE()
        self.network = MixtureNetwork(CLIPS, tau, schedule, i2v, self.vae)
        self.clips = CLIPS

    def captions(self) -> list[str]:
        return captions()

    def encode_prompts(self, prompts: Sequence[str], max_length: int | None = None) -> Tensor:
        """``(B, 1, K)``: row b is :func:`match_prompt` of prompt b (weights summing to 1); one
        "token" whatever ``max_length``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        rows = []
        for p in prompts:  # a loop, not a comprehension, so the warning names our caller's line
            rows.append(match_prompt(p, self.clips))
        return torch.tensor(rows, dtype=self.dtype, device=self.device).unsqueeze(1)

    def prepare(self, shape: Sequence[int], progress: Callable[[int, int, str], None] | None = None) -> None:
        """Render the clips' latents for ``shape`` now (the first step would), telling ``progress``."""
        device = torch.empty(0, device=self.device).device  # "cuda" -> "cuda:0", as the network's inputs say
        self.network.means(shape[1], shape[3], shape[4], device, self.network.compute_dtype(device), progress)

    def check_size(self, frames: int, height: int, width: int, window: int | None = None) -> None:
        """Any 4k+1 frames and multiples of 16 (the clips render at every size), in windows or not."""
        latent_shape(1, frames, height, width)

    def render(self, clip: int | str, frames: int, height: int, width: int) -> Tensor:
        """Clip ``clip`` (index or caption) as ``(frames, 3, height, width)`` in [0, 1], float32."""
        c = self.clips[clip if isinstance(clip, int) else captions().index(clip)]
        return c.render(frames, height, width)
