"""Reference image preprocessing of the EfficientNet-Lite evaluation (Pillow 13).

The Rust server reimplements these steps, so they are spelled out exactly:

1. Decode with Pillow and apply ``ImageOps.exif_transpose`` (EXIF orientation).
2. Convert to 8-bit RGB:

   * ``RGB``: unchanged.
   * ``RGBA``, ``LA``, ``PA`` and ``P`` (palette, possibly with transparency):
     converted to ``RGBA`` by Pillow and alpha-composited onto opaque white
     with ``Image.alpha_composite``.
   * ``I;16*`` and ``I`` (16-bit and 32-bit integer grayscale): values clipped
     to 0..65535 and reduced to 8 bits by dropping the low byte (``v >> 8``),
     then used for all three channels.
   * any other mode (``L``, ``1``, ``CMYK``, ``YCbCr``, ...): ``Image.convert("RGB")``.

3. Crop the centred square of side ``crop = int(res / (res + 32) * min(w, h))``
   (float64 arithmetic, evaluated in that order), at
   ``top = (h - crop + 1) // 2`` and ``left = (w - crop + 1) // 2``.
4. Resize the crop to ``res x res`` with ``Image.resize(..., Image.BICUBIC)``:
   Pillow's separable convolution resampling with the cubic kernel a = -0.5,
   whose support is widened by the scale factor when downscaling, rounded and
   clamped to uint8 after each pass.
5. Convert to float32 ``(x - 127) / 128`` per channel, laid out CHW.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

CROP_PADDING = 32
RESIZE = "bicubic"
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)

_ALPHA_MODES = {"RGBA", "LA", "PA", "P"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB as described in the module docstring."""
    if image.mode == "RGB":
        return image
    if image.mode in _ALPHA_MODES:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode == "I" or image.mode.startswith("I;16"):
        values = np.asarray(image).astype(np.int64)
        gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    return image.convert("RGB")


def center_crop_box(width: int, height: int, resolution: int) -> tuple[int, int, int, int]:
    """Return the (left, top, right, bottom) box of the centred square crop."""
    crop = int(resolution / (resolution + CROP_PADDING) * min(width, height))
    top = (height - crop + 1) // 2
    left = (width - crop + 1) // 2
    return left, top, left + crop, top + crop


def resize_crop(image: Image.Image, resolution: int) -> Image.Image:
    """Apply steps 3 and 4: centred crop, then bicubic resize to ``resolution`` squared."""
    box = center_crop_box(image.width, image.height, resolution)
    return image.crop(box).resize((resolution, resolution), Image.BICUBIC)


def normalize(rgb: np.ndarray) -> np.ndarray:
    """Map an HWC uint8 RGB array to CHW float32 ``(x - mean) / std``."""
    mean = np.asarray(MEAN, dtype=np.float32)
    std = np.asarray(STD, dtype=np.float32)
    scaled = (rgb.astype(np.float32) - mean) / std
    return np.ascontiguousarray(scaled.transpose(2, 0, 1))


def preprocess_image(image: Image.Image, resolution: int) -> np.ndarray:
    """Run steps 1-5 on an already decoded image; returns float32 [3, R, R]."""
    image = ImageOps.exif_transpose(image)
    rgb = to_rgb(image)
    return normalize(np.asarray(resize_crop(rgb, resolution)))


def preprocess_file(path: str | Path, resolution: int) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        return preprocess_image(image, resolution)
