"""The I2V first-frame helpers (cogsample.models.images): the reference's sizes, resize and tensor."""

from __future__ import annotations

import pytest
import torch

from cogsample.models.images import i2v_size, image_to_tensor, resize_image_for_i2v


def test_i2v_image_sizes() -> None:
    Image = pytest.importorskip("PIL.Image")

    assert i2v_size(480, 832) == (768, 1328)  # 1331.2 -> 1328
    assert i2v_size(768, 1336) == (768, 1344)  # a tie rounds up, as the reference
    assert i2v_size(100, 100) == (768, 768)
    assert i2v_size(1000, 500) == (1536, 768)
    assert i2v_size(100, 200, short_side=64) == (64, 128)
    with pytest.raises(ValueError, match="short_side must be a positive multiple of 16"):
        i2v_size(100, 200, short_side=60)
    img = Image.new("RGB", (100, 50), (255, 0, 0))
    assert resize_image_for_i2v(img).size == (1536, 768)  # PIL sizes are (width, height)
    cropped = resize_image_for_i2v(img, 32, 48)
    assert cropped.size == (48, 32)
    x = image_to_tensor(cropped)
    assert x.shape == (1, 3, 32, 48) and x.dtype == torch.float32
    assert torch.allclose(x[0, :, 5, 5], torch.tensor([1.0, -1.0, -1.0]))
    with pytest.raises(ValueError, match="both height and width"):
        resize_image_for_i2v(img, 32)


def test_the_cogvideox_module_re_exports_them() -> None:
    from cogsample.models import cogvideox

    for name in ("i2v_size", "image_to_tensor", "resize_image_for_i2v"):
        assert getattr(cogvideox, name) is globals()[name] and name in cogvideox.__all__
