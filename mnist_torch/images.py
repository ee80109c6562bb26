"""Turn a user's picture of a digit into an MNIST image, for both frameworks' ``predict``.

MNIST digits are light on a dark background, size-normalized to fit a 20x20 box keeping
their aspect ratio, anti-aliased, and centred by centre of mass in a 28x28 frame. A photo
or drawing of a digit is none of these, and the CNN has only seen MNIST, so the picture is
brought to the same form before the model sees it; the result is normalized with the
training statistics, exactly like the training images.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mnist_torch.data import IMAGE_SHAPE, MNIST_MEAN, MNIST_STD

#: The box MNIST fitted each digit into, inside the 28x28 frame.
DIGIT_BOX = 20
#: After contrast stretching, pixels above this belong to the digit (for its bounding box).
INK_THRESHOLD = 0.2

#: The most pixels (width x height) a picture may declare. The size is read from the file's header and checked
#: before a single pixel is decoded, because a few kilobytes of PNG can declare 20000x20000 pixels (400 MP, 1.6 GB
#: once decoded as RGBA): a decompression bomb. 50 MP admits what people photograph or scan digits with: a phone's
#: default photo (12 MP), the full-resolution mode of its 48-50 MP sensor (8160x6120 = 49.9 MP) and an A4 page
#: scanned at 600 dpi (35 MP). Reading an 8160x6120 RGBA PNG adds 0.85 GB to the process at its peak and takes 4.6 s
#: on 2 CPU cores (a JPEG of that size: 0.46 GB, 2.6 s; measured 2026-11-26), which any machine that trains can
#: afford. Larger pictures (108 and 200 MP phone modes) are refused with the advice to scale them down: the digit
#: is shrunk to 20x20 pixels anyway. PIL's own limits are looser (a warning above 89 MP, silenced here; an error
#: above 179 MP, raised while the header is read and reported in the same words as this limit).
MAX_PIXELS = 50_000_000

#: The formats predict opens. Pillow knows some forty; each is parsing code that an untrusted file can reach (EPS
#: even runs Ghostscript), while pictures of digits come as these ("JPEG" includes the MPO files many phones write;
#: TIFF and PPM carry 16-bit and floating-point pictures).
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "PPM")

#: Pixel modes read at 16 bits, and those whose transparency comes from an alpha channel (composited on white).
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")

_EXPECTED = "pass a PNG or JPEG picture of one digit"


class ImageError(RuntimeError):
    """The file is not an image with a digit in it; the message says which file and why."""


def _too_large(path: Path, declared: str) -> ImageError:
    return ImageError(
        f"{path} declares {declared}, more than the {MAX_PIXELS / 1e6:.0f} megapixels predict decodes (a decompression "
        f"bomb, or a picture to scale down); {_EXPECTED}, at most {MAX_PIXELS / 1e6:.0f} megapixels (scaled down, "
        f"or cropped to the digit)"
    )


def _refuse_if_too_large(size: tuple[int, int], path: Path) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise _too_large(path, f"{width}x{height} pixels ({width * height / 1e6:,.1f} megapixels)")


def _decode(path: Path) -> Image.Image:
    """The first frame, upright (photos: the orientation the camera recorded), decoded only if its declared size
    is within `MAX_PIXELS`. PIL's warnings are silenced here: its decompression bomb warning because the check
    below is stricter, the others (damaged EXIF or TIFF tags, which it skips) because the picture is then either
    decoded or refused with one line, and a warning would be a second line on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path, formats=FORMATS) as image:
            _refuse_if_too_large(image.size, path)  # Image.open only read the header: nothing is decoded yet
            upright = ImageOps.exif_transpose(image)  # decodes (a copy when there is nothing to turn)
            upright.load()
            _refuse_if_too_large(upright.size, path)  # a format that grew its picture while decoding
            return upright


def _unit_range(image: Image.Image, path: Path) -> np.ndarray:
    """Grey levels in [0, 1] by the real range of the pixel mode: 8-bit modes through PIL's "L" (/255), 16-bit
    ones by 65535, so a faint digit in a 16-bit picture keeps its thousands of levels instead of being clipped
    to 8 bits. Modes "I" (32-bit integers) and "F" (floats) say nothing of their range: values in [0, 65535]
    ("I", as PIL reads 16-bit PPM) or [0, 1] ("F") are taken as such, other ones are stretched from their minimum
    to their maximum, which `to_light_on_dark` would do anyway. Transparent areas count as white paper."""
    transparency = image.info.get("transparency")
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        raw = np.asarray(image)
        if image.mode == "F" and not np.isfinite(raw).all():
            raise ImageError(f"{path} holds NaN or infinite pixel values; {_EXPECTED}")
        values = raw.astype(np.float64)
        low, high = (0.0, 65535.0) if image.mode != "F" else (0.0, 1.0)
        if values.min() < low or values.max() > high:
            low, high = values.min(), max(values.max(), values.min() + 1e-12)
        pixels = ((values - low) / (high - low)).astype(np.float32)
        if isinstance(transparency, (int, float)):
            pixels[raw == transparency] = 1.0
        return pixels
    if image.mode in _WITH_ALPHA or transparency is not None:
        paper = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    elif image.mode not in ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"):
        image = image.convert("RGB")  # LAB, ...: PIL has no direct way to "L"
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def read_grayscale(path: Path) -> np.ndarray:
    """Pixels in [0, 1], (H, W), at the picture's full depth. Transparent areas count as white paper (the usual
    for drawn digits). Whatever is wrong with the file, the result is an `ImageError` naming it, never another
    exception or a warning: the file may come from anyone."""
    try:
        image = _decode(path)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path} does not exist; pass the path of a PNG or JPEG picture of one digit") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a directory; {_EXPECTED}") from None
    except Image.DecompressionBombError as err:  # above PIL's own limit, raised while Image.open read the header
        declared = re.search(r"\((\d+) pixels\)", str(err))
        amount = f"{int(declared[1]) / 1e6:,.1f} megapixels" if declared else "more pixels than PIL reads"
        raise _too_large(path, amount) from None
    except MemoryError:
        raise ImageError(f"{path} needs more memory to decode than this machine has; {_EXPECTED}, "
                         f"scaled down") from None
    except Exception as err:  # noqa: BLE001 - PIL's decoders raise OSError, SyntaxError, ValueError, struct.error,
        # EOFError, IndexError... for a malformed file, and each means the same to the user: not a picture we can read
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise ImageError(f"{path} is not a readable image ({detail}); {_EXPECTED}") from None
    with image:
        try:
            return _unit_range(image, path)
        except ValueError as err:  # PIL has no conversion from this pixel mode (e.g. "La")
            raise ImageError(f"{path} has pixels of mode {image.mode}, which predict cannot read ({err}); "
                             f"{_EXPECTED}") from None


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
    """A picture of one digit (PNG or JPEG, or one of `FORMATS`; up to `MAX_PIXELS`, 8 or 16 bits, either polarity)
    as a normalized MNIST image, (28, 28) float32; `ImageError`, naming the file, for anything else."""
    path = Path(path)
    pixels = to_light_on_dark(read_grayscale(path))
    frame = centre_by_mass(fit_to_box(pixels, path))
    return ((frame - MNIST_MEAN) / MNIST_STD).astype(np.float32)
