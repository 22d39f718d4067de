"""Names in the out folder: a slug of the prompt, the seed, and a digest of what defines the video."""

from cogsample.jobs.naming import slug


def test_slug():
    assert slug("A red Ball, bouncing!") == "a-red-ball-bouncing"
    assert slug("!!!") == "video"
    assert len(slug("x" * 200)) <= 48
