"""Turn a user's picture of a digit into an MNIST image, for both frameworks' ``predict``.

MNIST digits are light on a dark background, size-normalized to fit a 20x20 box keeping
their aspect ratio, anti-aliased, and centred by centre of mass in a 28x28 frame. A photo
or drawing of a digit is none of these, and the CNN has only seen MNIST, so the picture is
brought to the same form before the model sees it; the result is normalized with the
training statistics, exactly like the training images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_torch.data import IMAGE_SHAPE, MNIST_MEAN, MNIST_STD

#: The box MNIST fitted each digit into, inside the 28x28 frame.
DIGIT_BOX = 20
#: After contrast stretching, pixels above this belong to the digit (for its bounding box).
INK_THRESHOLD = 0.2


class ImageError(RuntimeError):
    """The file is not an image with a digit in it; the message says which file and why."""


def read_grayscale(path: Path) -> np.ndarray:
    """Pixels in [0, 1], (H, W). Transparent areas count as white paper (the usual for drawn digits)."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # photos: the orientation the camera recorded
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                paper = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ImageError(f"{path} does not exist; pass the path of a PNG or JPEG picture of one digit") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"{path} is not a readable image ({err}); pass a PNG or JPEG picture of one digit") from None


def to_light_on_dark(pixels: np.ndarray) -> np.ndarray:
    """MNIST's polarity, judged from the border (the background): invert a light background, then stretch
    the contrast so the background is 0 and the strongest ink is 1, as in MNIST."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if np.median(border) > 0.5:
        pixels = 1.0 - pixels
        border = 1.0 - border
    background = np.median(border)
    ink = pixels.max() - background
    if ink < 0.1:
        return np.zeros_like(pixels)  # blank: no digit to find
    return np.clip((pixels - background) / ink, 0.0, 1.0)


def fit_to_box(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Crop to the digit's bounding box and scale its longer side to 20 pixels, keeping the aspect ratio."""
    rows = np.flatnonzero((pixels > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((pixels > INK_THRESHOLD).any(axis=0))
    if len(rows) == 0:
        raise ImageError(f"{path} shows no digit (no ink against its background); pass a picture of one digit")
    digit = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = DIGIT_BOX / max(digit.shape)
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))  # PIL: (width, height)
    resized = Image.fromarray(digit, mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste into a 28x28 frame so that the digit's centre of mass is the frame's centre, as MNIST did."""
    frame = np.zeros(IMAGE_SHAPE, np.float32)
    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    cy, cx = (ys * digit).sum() / mass, (xs * digit).sum() / mass
    top = int(np.clip(round(IMAGE_SHAPE[0] / 2 - cy), 0, IMAGE_SHAPE[0] - digit.shape[0]))
    left = int(np.clip(round(IMAGE_SHAPE[1] / 2 - cx), 0, IMAGE_SHAPE[1] - digit.shape[1]))
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return frame


def load_digit(path: Path | str) -> np.ndarray:
    """A picture of one digit (PNG or JPEG, any size, either polarity) as a normalized MNIST image, (28, 28) float32."""
    path = Path(path)
    pixels = to_light_on_dark(read_grayscale(path))
    frame = centre_by_mass(fit_to_box(pixels, path))
    return ((frame - MNIST_MEAN) / MNIST_STD).astype(np.float32)
