"""Image-to-video first frames as the references prepare them: the generation size CogVideoX 1.5
I2V takes from an image (short side 768 px, long side the nearest multiple of 16), the resize (and
centre crop) to a size, and the ``[-1, 1]`` tensor. Plain image arithmetic, no model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL import Image

Tensor = torch.Tensor

__all__ = ["i2v_size", "image_to_tensor", "load_image", "resize_image_for_i2v"]


def _nearest_multiple_of_16(n: float) -> float:
    lower = (n // 16) * 16
    upper = lower + 16
    # Ties go up, like the reference's helper.
    return lower if abs(n - lower) < abs(n - upper) else upper


def i2v_size(image_height: int, image_width: int, short_side: int = 768) -> tuple[int, int]:
    """CogVideoX 1.5 I2V's generation size ``(height, width)`` for an image of ``image_height x
    image_width`` px (the SAT reference's rule): the short side becomes ``short_side`` px (96
    latents), the long side the multiple of 16 nearest to keeping the aspect ratio (ties round
    up); a square image gives a ``short_side`` square."""
    if short_side % 16 or short_side < 16:
        raise ValueError(f"short_side must be a positive multiple of 16, got {short_side}")
    if image_width < 1 or image_height < 1:
        raise ValueError(f"image size must be positive, got {image_height} x {image_width} (height x width)")
    s = short_side // 8
    if image_height < image_width:
        h, w = s, int(_nearest_multiple_of_16(image_width / image_height * s * 8)) // 8
    else:
        w, h = s, int(_nearest_multiple_of_16(image_height / image_width * s * 8)) // 8
    return h * 8, w * 8


def resize_image_for_i2v(
    image: Image.Image, height: int | None = None, width: int | None = None, *, short_side: int = 768
) -> Image.Image:
    """Resize an RGB image for image-to-video.

    * ``height`` and ``width`` given (CogVideoX 1.0 I2V, fixed 480 x 720; or any chosen size):
      scale to cover the target with the aspect ratio kept (bicubic), then crop the centre, as
      the SAT reference's ``resize_for_rectangle_crop(..., "center")`` (which resizes the tensor
      with torchvision; PIL's bicubic may differ from it by a grey level);
    * neither (CogVideoX 1.5 I2V): :func:`i2v_size`'s size, resized without crop with
      Lanczos (the reference's ``TT.Resize(..., interpolation=1)``).
    """
    from PIL import Image as PILImage

    image = image.convert("RGB")
    img_w, img_h = image.size
    if (height is None) != (width is None):
        raise ValueError("give both height and width (resize and centre-crop) or neither (the 1.5 I2V rule)")
    if height is None or width is None:
        h, w = i2v_size(img_h, img_w, short_side)
        return image.resize((w, h), PILImage.Resampling.LANCZOS)
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height} x {width}")
    # max(): float rounding must not leave the covering size a pixel short of the crop.
    if img_w / img_h > width / height:
        size = (max(int(img_w * height / img_h), width), height)
    else:
        size = (width, max(int(img_h * width / img_w), height))
    image = image.resize(size, PILImage.Resampling.BICUBIC)
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    return image.crop((left, top, left + width, top + height))


def image_to_tensor(image: Image.Image) -> Tensor:
    """``(1, 3, H, W)`` float32 in [-1, 1] from an RGB image (uint8 / 255 * 2 - 1, as diffusers'
    ``VideoProcessor.preprocess`` and the reference's ``ToTensor() * 2 - 1``)."""
    import numpy as np

    array = np.asarray(image.convert("RGB")).astype(np.float32) / 255.0
    return 2.0 * torch.from_numpy(array).permute(2, 0, 1)[None] - 1.0


def load_image(path: Any) -> Image.Image:
    """An image file (or a PIL image) as RGB; ``ValueError`` naming it where it is missing or no image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(path, Image.Image):
        return path.convert("RGB")
    if not isinstance(path, (str, Path)):
        raise ValueError(f"image must be a file path or a PIL image, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"image {path!r} does not exist or is not a file")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {path!r} cannot be read as an image: {e}") from e
