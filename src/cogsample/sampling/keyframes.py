"""Keyframes: latent frames held to known clean latents while the rest is sampled.

The SAT reference's ``fixed_frames`` (the first F latent frames reset before every step) made
general: any latent frames, any sampler, any guidance, no retraining. :class:`Keyframes` names the
clean latents ``z`` of some latent frames (optionally only some of their channels: a VAE whose
latent frame packs several video frames side by side on the channel axis, as the built-in
BlockVAE does, holds only the given frame's channels). :class:`KeyframedModel` wraps the
``model(x, level)`` a sampler calls; before every call it replaces x's held entries by the
keyframe noised to the call's level, in the sampler's own coordinates::

    alpha space (VP):  x_k = alpha z + sqrt(1 - alpha^2) eps
    sigma space (VE):  x_k = z + sigma eps

with ``eps`` fixed per video: the initial noise's own held entries (the run stays deterministic
and a keyframe costs no draw). Its output at the held entries is replaced by ``z`` (x0 samplers)
or by the v that makes the solver's x0 ``z`` (``v = (alpha x - z) / sigma`` with the sampler's own
x, samplers that consume v), so each step lands on the keyframe; :meth:`Keyframes.finish` writes ``z`` into the final
latents exactly. The wrapper sits *above* guidance: one replacement per call, both CFG branches
see the same held input, and the guided output is overwritten (what the branches predicted
there does not matter). Samplers never know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .denoiser import Level, to_space

Tensor = torch.Tensor

__all__ = ["KeyframedModel", "Keyframes", "latent_frame"]

#: video frames per latent frame after the first (CogVideoX's causal VAE)
TEMPORAL = 4


def latent_frame(frame: int) -> int:
    """The latent frame holding video frame ``frame``: 0 -> 0, F > 0 -> (F - 1) // 4 + 1."""
    return 0 if frame == 0 else (frame - 1) // TEMPORAL + 1


@dataclass(frozen=True)
class Keyframes:
    """Clean latents ``latents (1, K, C, h, w)`` for latent frames ``frames`` (K distinct indices),
    the same for every row of the sampled batch (or ``(B, K, C, h, w)``: row b's own); ``mask``:
    None (every channel held) or a bool ``(1, K, C, 1, 1)`` (or broadcastable) naming the held
    channels of each; ``noise``: the unit ``eps`` the held entries are noised with, of the latents'
    shape (None: the initial latent's own entries, right where sampling starts from pure noise; a
    start that already holds signal, as video-to-video's, passes its own)."""

    latents: Tensor
    frames: tuple[int, ...]
    mask: Tensor | None = None
    noise: Tensor | None = None

    def __post_init__(self) -> None:
        z, f = self.latents, tuple(self.frames)
        object.__setattr__(self, "frames", f)
        if not isinstance(z, torch.Tensor) or z.ndim != 5:
            raise ValueError(f"keyframe latents must be a tensor (1, K, C, h, w), got {getattr(z, 'shape', z)!r}")
        if len(f) != z.shape[1] or len(set(f)) != len(f):
            raise ValueError(f"keyframes need {z.shape[1]} distinct latent frame indices, got {f!r}")
        for i in f:
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise ValueError(f"keyframe latent frame indices must be integers >= 0, got {f!r}")
        if self.mask is not None:
            m = self.mask
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.ndim != 5:
                raise ValueError("keyframe mask must be a bool tensor (1, K, C, 1, 1)")
            torch.broadcast_shapes(m.shape, z.shape)  # names a shape that does not fit

    def check(self, x: Tensor) -> None:
        """``ValueError`` unless these keyframes fit latents ``x (B, T, C, h, w)``."""
        t = x.shape[1]
        if self.latents.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"keyframe latents have {self.latents.shape[0]} rows for a batch of {x.shape[0]}")
        if max(self.frames) >= t:
            raise ValueError(f"keyframe latent frame {max(self.frames)} is outside the latent's {t} frames")
        want = (x.shape[2], x.shape[3], x.shape[4])
        if tuple(self.latents.shape[2:]) != want:
            raise ValueError(f"keyframe latents {tuple(self.latents.shape)} do not fit latents {tuple(x.shape)}")

    def _index(self, x: Tensor) -> Tensor:
        return torch.tensor(self.frames, device=x.device)

    def put(self, x: Tensor, values: Tensor) -> Tensor:
        """``x`` with ``values (B or 1, K, C, h, w)`` written at the held entries (a new tensor; a
        batch of several rows per keyframe row, as CFG's branches, takes them in turn)."""
        out = x.clone()
        idx = self._index(x)
        values = values.to(dtype=x.dtype, device=x.device)
        if values.shape[0] != x.shape[0]:
            values = values.repeat(x.shape[0] // values.shape[0], 1, 1, 1, 1)
        if self.mask is not None:
            values = torch.where(self.mask.to(x.device), values, x.index_select(1, idx))
        out[:, idx] = values
        return out

    def finish(self, latents: Tensor) -> Tensor:
        """The sampled ``latents`` with the keyframes' clean latents at their entries, exactly."""
        return self.put(latents, self.latents)

    def wrap(self, model: Any, x: Tensor, output: str = "x0") -> KeyframedModel:
        """``model`` holding these keyframes, the noise ``eps`` taken from the initial latent ``x``."""
        self.check(x)
        eps = x.index_select(1, self._index(x)).clone() if self.noise is None else self.noise.to(x.device)
        return KeyframedModel(model, self, eps, output)


class KeyframedModel:
    """``model(x, level)`` with the keyframes held (see the module). Everything else (``forwards``,
    ``windows``, ``prediction``'s siblings) is the wrapped model's."""

    def __init__(self, model: Any, keyframes: Keyframes, eps: Tensor, output: str = "x0"):
        if output not in ("x0", "v"):
            raise ValueError(f"output must be 'x0' or 'v', got {output!r}")
        self.model = model
        self.keyframes = keyframes
        self.eps = eps
        self.output = output

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["model"], name)

    def _coefficients(self, level: Level, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, s)`` with ``x_k = a z + s eps`` in the level's coordinates (VP or VE)."""
        value = level.value.to(device=like.device, dtype=torch.float64).reshape(-1)[:1]
        if level.space == "alpha":
            return value, (1 - value**2) ** 0.5
        return torch.ones_like(value), value

    def noised(self, level: Level, like: Tensor) -> Tensor:
        """The keyframes' entries of x at ``level``: ``a z + s eps`` (in x's dtype)."""
        a, s = self._coefficients(level, like)
        z = self.keyframes.latents.to(device=like.device, dtype=torch.float64)
        eps = self.eps.to(dtype=torch.float64)
        return (a * z + s * eps).to(like.dtype)

    def __call__(self, x: Tensor, level: Level) -> Tensor:
        out = self.model(self.keyframes.put(x, self.noised(level, x)), level)
        z = self.keyframes.latents
        if self.output == "v":
            # the sampler turns v into x0 = alpha x - sigma v with its own x (VP coordinates):
            # v = (alpha x - z) / sigma makes that x0 the keyframe
            alpha = to_space(level.value.to(torch.float64), level.space, "alpha").reshape(-1)[:1].to(x.device)
            sigma = (1 - alpha**2) ** 0.5
            own = x.index_select(1, self.keyframes._index(x)).to(torch.float64)
            z = (alpha * own - z.to(device=x.device, dtype=torch.float64)) / sigma
        return self.keyframes.put(out, z)
