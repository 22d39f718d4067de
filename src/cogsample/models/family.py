"""The clip family the trained built-in model learns: every colour x shape x motion x background.

:data:`FAMILY` holds 616 procedural clips (:class:`~cogsample.models.builtin.Clip`), captions
composed from their attributes ("a red ball bouncing on a black background"). Their data
distribution, as for the exact built-in model, is the Gaussian mixture ``sum_k w_k N(mu_k, tau^2 I)``
around the clips' :class:`~cogsample.models.builtin.BlockVAE` latents, so a sample can be scored
exactly however it was made. A prompt names some attributes; the clips it allows are those that
have every attribute it names, and its true conditional weights are uniform over them
(:func:`family_weights`): what training with attribute dropout teaches (see
:mod:`cogsample.models.trained`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .builtin import MOTIONS, Clip, PromptAttributes, parse_prompt

__all__ = [
    "FAMILY",
    "FAMILY_BACKGROUNDS",
    "FAMILY_COLORS",
    "FAMILY_MOTIONS",
    "FAMILY_SHAPES",
    "allows",
    "family_weights",
]

FAMILY_COLORS = ("red", "green", "blue", "yellow", "white", "purple")
#: shape -> (caption word, radius in frame heights): sizes that read at 64x96 px (8x12 latents)
FAMILY_SHAPES = {"circle": ("ball", 0.2), "square": ("square", 0.22), "triangle": ("triangle", 0.28),
                 "ring": ("ring", 0.3), "bar": ("bar", 0.24)}  # fmt: skip
FAMILY_MOTIONS = ("bounce", "rotate", "grow", "shrink", "right", "left")
FAMILY_BACKGROUNDS = ("black", "white", "gray", "blue")
# a circle or ring turning looks like one standing still: no such clip
_UNSEEN = {("circle", "rotate"), ("ring", "rotate")}


def _family() -> tuple[Clip, ...]:
    clips = []
    for bg in FAMILY_BACKGROUNDS:
        for color in FAMILY_COLORS:
            if color == bg:
                continue
            for shape, (word, size) in FAMILY_SHAPES.items():
                for motion in FAMILY_MOTIONS:
                    if (shape, motion) in _UNSEEN:
                        continue
                    words, path, phrase = MOTIONS[motion]
                    caption = f"a {color} {word} {phrase} on a {bg} background"
                    clips.append(Clip(caption, color, shape, words, bg, size, path))
    return tuple(clips)


#: 616 clips: 22 (colour, background) pairs (no colour on itself) x 28 (shape, motion) pairs, in the
#: order background, colour, shape, motion.
FAMILY: tuple[Clip, ...] = _family()


def allows(attrs: PromptAttributes, clip: Clip) -> bool:
    """Whether ``clip`` has every attribute the prompt names (an attribute it leaves out is free)."""
    return (
        (not attrs.colors or clip.color in attrs.colors)
        and (not attrs.shapes or clip.shape in attrs.shapes)
        and attrs.motions <= set(clip.motion)
        and (not attrs.backgrounds or clip.background in attrs.backgrounds)
    )


def family_weights(prompt: str, clips: Sequence[Clip] = FAMILY) -> list[float]:
    """The true conditional mixture weights of ``prompt``: uniform over the clips it allows
    (all clips for an empty prompt). ``ValueError`` when it allows none, naming what it asked for."""
    if not prompt.strip():
        return [1.0 / len(clips)] * len(clips)
    attrs = parse_prompt(prompt)
    keep = [allows(attrs, c) for c in clips]
    if not any(keep):
        named = {k: sorted(v) for k, v in vars(attrs).items() if v}
        raise ValueError(f"prompt {prompt!r} ({named}) matches no clip of the family of {len(clips)}")
    return [k / sum(keep) for k in keep]
