"""The clip family: every attribute combination once, captions that parse back to their clip."""

import pytest

from cogsample.models.builtin import parse_prompt
from cogsample.models.family import (
    FAMILY,
    FAMILY_BACKGROUNDS,
    FAMILY_COLORS,
    FAMILY_MOTIONS,
    FAMILY_SHAPES,
    allows,
    family_weights,
)


def test_family_is_the_product_less_the_excluded_pairs():
    pairs = sum(c != b for c in FAMILY_COLORS for b in FAMILY_BACKGROUNDS)
    shape_motion = len(FAMILY_SHAPES) * len(FAMILY_MOTIONS) - 2  # no turning circle or ring
    assert len(FAMILY) == pairs * shape_motion == 616
    keys = {(c.color, c.shape, c.motion, c.background) for c in FAMILY}
    assert len(keys) == len(FAMILY)
    assert len({c.caption for c in FAMILY}) == len(FAMILY)
    assert not any(c.color == c.background for c in FAMILY)


def test_every_caption_allows_exactly_its_own_clip():
    for k, clip in enumerate(FAMILY):
        w = family_weights(clip.caption)
        assert w[k] == 1.0, clip.caption
        assert allows(parse_prompt(clip.caption), clip)


@pytest.mark.parametrize(
    ("prompt", "count"),
    [
        ("a red ball on a black background", 5),  # 5 motions (a ball does not turn)
        ("a yellow square bouncing", 4),  # 4 backgrounds
        ("a white bar growing", 3),  # every background but white
        ("", 616),
        ("something rotating", 22 * 3),  # square, triangle, bar
    ],
)
def test_partial_prompts_allow_every_clip_that_has_what_they_name(prompt, count):
    w = family_weights(prompt)
    allowed = [x for x in w if x > 0]
    assert len(allowed) == count
    assert allowed == [1 / count] * count


def test_a_prompt_no_clip_has_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"prompt 'a white ball on a white background' .* matches no clip"):
        family_weights("a white ball on a white background")
