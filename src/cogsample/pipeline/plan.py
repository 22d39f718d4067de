"""A checked request, :class:`Plan`: every option resolved against the model (sizes, latent shape,
sampling config, image, initial noise), nothing loaded. :func:`cogsample.pipeline.planning.plan`
makes one; the pipeline runs it, :mod:`cogsample.pipeline.cost` prices it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models import ModelInfo
from ..sampling.config import SamplingConfig
from ..sampling.context_windows import ContextWindows
from .options import GenerateOptions, Uncond

Tensor = torch.Tensor

__all__ = ["Plan"]


@dataclass
class Plan:
    """A checked request: everything resolved, nothing loaded."""

    options: GenerateOptions
    info: ModelInfo
    frames: int
    height: int
    width: int
    shape: tuple[int, int, int, int, int]  # the sampled latent, padded for patch_size_t
    pad_frames: int  # leading latent frames dropped before decoding (CogVideoX 1.5)
    sampling: SamplingConfig
    uncond: Uncond
    negative_prompt: str | None
    dtype: torch.dtype
    device: torch.device
    out: Path
    fps: int
    image: Any = None  # PIL image, resized, for I2V
    keyframes: tuple[Any, ...] = ()  # checked keyframes (pipeline.keyframes.Keyframe), by frame
    loras: tuple[Any, ...] = ()  # checked LoRA files (models.lora.LoraFile), at their weights
    video: Any = None  # video to video: pipeline.video2video.VideoInput, frames resized
    text_len: int = 226  # prompt tokens the profile encodes for this model
    initial_noise: Tensor | None = None  # (B, T, C, H, W), B = 1 or one row per video, on the CPU
    warnings: list[str] = field(default_factory=list)

    @property
    def windows(self) -> ContextWindows | None:
        """The context windows the latent is sampled in (None: the network sees it whole)."""
        return self.sampling.context

    @property
    def forwards_per_call(self) -> int:
        """Network calls per branch per denoiser call: the number of context windows."""
        return 1 if self.windows is None else self.windows.count(self.shape[1])

    def noise_row(self, k: int) -> int:
        """The row of the ``--initial-noise`` file that video ``k`` starts from."""
        if self.initial_noise is not None and self.initial_noise.shape[0] == 1:
            return 0  # a one-row file: every video starts from it
        if self.options.initial_noise_row is not None:
            return self.options.initial_noise_row + k
        return k if self.initial_noise is not None and self.initial_noise.shape[0] > 1 else 0
