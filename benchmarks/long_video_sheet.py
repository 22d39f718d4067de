"""The contact sheet of a 4x-length video in docs/long-videos.md: the trained built-in model at 45 frames.

Four rows of 16 evenly spaced frames (of 45): the true long clip the prompt names, the model on the
whole length at once (``--context off``, what the CLI refuses for this model), in context windows
(the default: 3 latent frames, overlap 1) and in windows with ``--noise-repeat``. The windowed rows
are exactly ``cogsample generate --model builtin-trained --frames 4x [--noise-repeat]``; the seed is
the CLI's default (42), not picked.

    python benchmarks/long_video_sheet.py docs/bench/long_video_sheet.png
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import torch
from PIL import Image, ImageDraw

from cogsample import Conditioning, sample
from cogsample.jobs.outputs import contact_sheet
from cogsample.models.family import FAMILY
from cogsample.pipeline.pipeline import Pipeline, to_uint8
from cogsample.sampling.noise import GlobalNoise

PROMPT = "a yellow square moving from left to right on a blue background"
SEED = 42
SCALE = 1  # frames at their 96 x 64


def _row(video: torch.Tensor) -> Any:
    """``(F, 3, H, W)`` in [0, 1] -> one contact-sheet row of 16 frames (uint8)."""
    return contact_sheet(to_uint8(video), columns=16, max_frames=16)


def main(path: str) -> None:
    pipe = Pipeline.load("builtin-trained")
    windows = pipe(PROMPT, frames="4x", seed=SEED)
    repeated = pipe(PROMPT, frames="4x", seed=SEED, noise_repeat=True)
    # the whole length at once: the same plan without windows, through the library
    p = pipe.plan(PROMPT, frames="4x", seed=SEED)
    torch.manual_seed(SEED)
    noise = GlobalNoise()
    x = noise.initial(p.shape)
    cond = Conditioning(pipe.context(PROMPT, p.text_len))
    whole = sample(pipe.model.network, x, cond, dataclasses.replace(p.sampling, context=None), noise=noise)
    clip = next(c for c in FAMILY if c.caption == PROMPT)
    rows = [
        ("true long clip", clip.render(p.frames, p.height, p.width)),
        ("whole at once", pipe.model.decode(whole)[0]),
        ("windows 3 / overlap 1", windows.video),
        ("+ --noise-repeat", repeated.video),
    ]
    label_w = 140
    tiles = [_row(v) for _, v in rows]
    h, w = tiles[0].shape[0] * SCALE, tiles[0].shape[1] * SCALE
    sheet = Image.new("RGB", (label_w + w, len(rows) * (h + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, ((name, _), tile) in enumerate(zip(rows, tiles, strict=True)):
        y = i * (h + 4)
        sheet.paste(Image.fromarray(tile).resize((w, h), Image.NEAREST), (label_w, y))
        draw.text((6, y + h // 2 - 6), name, fill="black")
    sheet.save(path)
    print(f"{path}: {PROMPT!r}, seed {SEED}, {p.frames} frames; windows {windows.forwards} forwards, "
          f"whole at once {p.sampling.steps * 2}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "long_video_sheet.png")
