"""Turn a user's picture of a digit into an MNIST image, for both frameworks' ``predict``.

MNIST digits are light on a dark background, size-normalized to fit a 20x20 box keeping
their aspect ratio, anti-aliased, and centred by centre of mass in a 28x28 frame. A photo
or drawing of a digit is none of these, and the CNN has only seen MNIST, so the picture is
brought to the same form before the model sees it; the result is normalized with the
training statistics, exactly like the training images.

Photos are not clean scans, so the digit is found the way MNIST's own preparation isolated it:
the background's side from the picture's border (or the sheet of paper, photographed on a
desk), each pixel's ink against the paper around it (shadows, uneven light), a threshold from
the picture itself (Otsu), and the largest ink component with the pieces next to it (not ruled
lines, specks or noise). A picture in which nothing looks like a digit is refused, one line.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from mnist_common.config import IMAGE_SHAPE, MNIST_MEAN, MNIST_STD
from mnist_common.errors import ProjectError, shown_path
from mnist_common.paths import file_problem

#: The box MNIST fitted each digit into, inside the 28x28 frame.
DIGIT_BOX = 20
#: Once the strokes' core is 1, pixels above this belong to the digit (for its bounding box).
INK_THRESHOLD = 0.2

#: Pictures are analysed with their longer side between these (photos shrunk, small drawings enlarged); smaller
#: than MIN_PICTURE_SIDE on a side, a picture cannot hold a digit.
WORK_SIDE = 768
MIN_WORK_SIDE = 224
MIN_PICTURE_SIDE = 8
#: The most one side may exceed the other: a digit, even a 1, fills a squarish box, and a strip beyond this
#: (8x5000) shrinks to under `MIN_PICTURE_SIDE` pixels across at the working size, where no stroke survives.
MAX_ASPECT = 40
#: A light region is a sheet of paper on a dark desk when it covers this much of the picture and of its own box.
SHEET_MIN_AREA = 0.2
SHEET_MIN_FILL = 0.8
#: Blocks per side over which the paper's brightness (shadows, uneven light) is estimated.
PAPER_GRID = 8
#: No digit: the strongest ink (after 3x3 averaging) is under MIN_CONTRAST, or under NOISE_MARGIN background noises.
MIN_CONTRAST = 0.04
NOISE_MARGIN = 8.0
#: Ink is above the picture's Otsu threshold and at least INK_FRACTION of the strongest ink (faint ruled lines are not).
INK_FRACTION = 0.5
#: No digit either when ink covers more than MAX_INK_COVER of the picture, when the largest mark is smaller than
#: MIN_DIGIT_SIDE (its box's longer side) or MIN_DIGIT_AREA pixels at the working size, or holds less than
#: MIN_DOMINANCE of all the ink.
MAX_INK_COVER = 0.4
MIN_DIGIT_SIDE = 12
MIN_DIGIT_AREA = 60
MIN_DOMINANCE = 0.4
#: Other marks belong to the digit when they reach within NEAR_MARGIN of its box's longer side and hold MIN_PIECE
#: of its pixels (a 5's detached bar); farther or smaller ones are specks.
NEAR_MARGIN = 0.15
MIN_PIECE = 0.05
#: The strokes' soft edges reach this far beyond their thresholded core (of the digit's longer side; MNIST's: a
#: pixel of 20).
EDGE_MARGIN = 0.06

#: The most pixels (width x height) a picture may declare. The size is read from the file's header and checked
#: before a single pixel is decoded, because a few kilobytes of PNG can declare 20000x20000 pixels (400 MP, 1.6 GB
#: once decoded as RGBA): a decompression bomb. 50 MP admits what people photograph or scan digits with: a phone's
#: default photo (12 MP), the full-resolution mode of its 48-50 MP sensor (8160x6120 = 49.9 MP) and an A4 page
#: scanned at 600 dpi (35 MP). Reading a picture of the largest size admitted costs a fraction of the memory and
#: seconds that training takes, which any machine that trains can afford (measured: docs/design.md). Larger
#: pictures (108 and 200 MP phone modes) are refused with the advice to scale them down: the digit is shrunk to
#: 20x20 pixels anyway. PIL's own limits are looser (a warning above 89 MP,
#: silenced here; an error above 179 MP, raised while the header is read and reported in the same words as
#: this limit).
MAX_PIXELS = 50_000_000
#: The most bytes read from a pipe (``predict /dev/stdin``, ``<(cat x.png)``), which is read once into memory
#: since it cannot be seeked: an uncompressed 8-bit RGB picture of `MAX_PIXELS`. Files are read by PIL lazily.
MAX_PICTURE_BYTES = 3 * MAX_PIXELS

#: The formats predict opens. Pillow knows some forty; each is parsing code that an untrusted file can reach (EPS
#: even runs Ghostscript), while pictures of digits come as these ("JPEG" includes the MPO files many phones write;
#: TIFF and PPM carry 16-bit and floating-point pictures).
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "PPM")

#: Pixel modes read at 16 bits, and those whose transparency comes from an alpha channel (composited on white).
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")

_EXPECTED = "pass a PNG or JPEG picture of one digit"
_NO_DIGIT_ADVICE = (
    "pass a picture of one digit, dark on light paper or light on a dark background, "
    "at least a tenth of the picture's height"
)


class ImageError(ProjectError, RuntimeError):
    """The file is not an image with a digit in it; the message says which file and why."""


def _too_large(path: Path, declared: str) -> ImageError:
    return ImageError(
        f"{shown_path(path)} declares {declared}, more than the {MAX_PIXELS / 1e6:.0f} megapixels predict decodes "
        f"(a decompression bomb, or a picture to scale down); {_EXPECTED}, at most {MAX_PIXELS / 1e6:.0f} megapixels "
        f"(scaled down, or cropped to the digit)"
    )


def _refuse_if_too_large(size: tuple[int, int], path: Path) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise _too_large(path, f"{width}x{height} pixels ({width * height / 1e6:,.1f} megapixels)")


def _source(path: Path) -> Path | io.BytesIO:
    """What PIL opens: the path of a regular file, else the bytes of the pipe (`read_picture` admits nothing else),
    read once and at most `MAX_PICTURE_BYTES`, since PIL seeks and a pipe cannot be re-read."""
    if not stat.S_ISFIFO(os.stat(path).st_mode):
        return path
    with open(path, "rb") as stream:
        data = stream.read(MAX_PICTURE_BYTES + 1)
    if len(data) > MAX_PICTURE_BYTES:
        raise ImageError(
            f"{shown_path(path)} holds more than {MAX_PICTURE_BYTES / 1e6:.0f} MB, more than any picture predict "
            f"decodes; {_EXPECTED}, at most {MAX_PIXELS / 1e6:.0f} megapixels"
        )
    return io.BytesIO(data)


def _decode(path: Path) -> Image.Image:
    """The first frame, upright (photos: the orientation the camera recorded), decoded only if its declared size
    is within `MAX_PIXELS`. PIL's warnings are silenced here: its decompression bomb warning because the check
    below is stricter, the others (damaged EXIF or TIFF tags, which it skips) because the picture is then either
    decoded or refused with one line, and a warning would be a second line on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(_source(path), formats=FORMATS) as image:
            _refuse_if_too_large(image.size, path)  # Image.open only read the header: nothing is decoded yet
            upright = ImageOps.exif_transpose(image)  # decodes (a copy when there is nothing to turn)
            upright.load()
            _refuse_if_too_large(upright.size, path)  # a format that grew its picture while decoding
            return upright


def _unit_range(image: Image.Image, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels in [0, 1] by the real range of the pixel mode: 8-bit modes through PIL's "L" (/255), 16-bit
    ones by 65535, so a faint digit in a 16-bit picture keeps its thousands of levels instead of being clipped
    to 8 bits. Modes "I" (32-bit integers) and "F" (floats) say nothing of their range: values in [0, 65535]
    ("I", as PIL reads 16-bit PPM) or [0, 1] ("F") are taken as such, other ones are stretched from their minimum
    to their maximum, which the contrast normalisation of `ink_of` would do anyway. Transparent areas count as
    white paper; the opacity in [0, 1] comes second (None for a picture without transparency)."""
    transparency = image.info.get("transparency")
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        raw = np.asarray(image)
        if image.mode == "F" and not np.isfinite(raw).all():
            raise ImageError(f"{shown_path(path)} holds NaN or infinite pixel values; {_EXPECTED}")
        values = raw.astype(np.float64)
        low, high = (0.0, 65535.0) if image.mode != "F" else (0.0, 1.0)
        if values.min() < low or values.max() > high:
            low, high = values.min(), max(values.max(), values.min() + 1e-12)
        pixels = ((values - low) / (high - low)).astype(np.float32)
        if isinstance(transparency, (int, float)):
            pixels[raw == transparency] = 1.0
            return pixels, (raw != transparency).astype(np.float32)
        return pixels, None
    if image.mode in _WITH_ALPHA or transparency is not None:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        paper = Image.new("RGBA", image.size, "white")
        composited = Image.alpha_composite(paper, rgba)
        return np.asarray(composited.convert("L"), dtype=np.float32) / 255.0, alpha
    if image.mode not in ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"):
        image = image.convert("RGB")  # LAB, ...: PIL has no direct way to "L"
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, None


def read_grayscale(path: Path) -> np.ndarray:
    """Pixels in [0, 1], (H, W), at the picture's full depth. Transparent areas count as white paper (the usual
    for drawn digits). Whatever is wrong with the file, the result is an `ImageError` naming it, never another
    exception or a warning: the file may come from anyone."""
    return read_picture(path)[0]


def read_picture(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """`read_grayscale`'s pixels and the picture's opacity in [0, 1] (None without transparency), for
    `load_digit` to see a digit drawn on a transparent canvas whatever its colour."""
    if (problem := file_problem(path, pipes=True)) is not None:
        raise ImageError(f"{shown_path(path)} {problem}; {_EXPECTED}")
    try:
        image = _decode(path)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:  # above PIL's own limit, raised while Image.open read the header
        declared = re.search(r"\((\d+) pixels\)", str(err))
        amount = f"{int(declared[1]) / 1e6:,.1f} megapixels" if declared else "more pixels than PIL reads"
        raise _too_large(path, amount) from None
    except MemoryError:
        raise ImageError(
            f"{shown_path(path)} needs more memory to decode than this machine has; {_EXPECTED}, scaled down"
        ) from None
    except Exception as err:  # noqa: BLE001 - PIL's decoders raise OSError, SyntaxError, ValueError, struct.error,
        # EOFError, IndexError... for a malformed file, and each means the same to the user: not a picture we can read
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise ImageError(f"{shown_path(path)} is not a readable image ({detail}); {_EXPECTED}") from None
    with image:
        try:
            return _unit_range(image, path)
        except ValueError as err:  # PIL has no conversion from this pixel mode (e.g. "La")
            raise ImageError(
                f"{shown_path(path)} has pixels of mode {image.mode}, which predict cannot read ({err}); {_EXPECTED}"
            ) from None


def _refuse(path: Path, why: str) -> ImageError:
    return ImageError(f"no digit found in {shown_path(path)}: {why}; {_NO_DIGIT_ADVICE}")


def _working_copy(grey: np.ndarray, path: Path) -> np.ndarray:
    """The picture at a size the analysis below handles quickly and alike: photos shrunk (area averaging) to
    `WORK_SIDE`, small pictures enlarged (bicubic) to `MIN_WORK_SIDE`, so that strokes are several pixels wide."""
    height, width = grey.shape
    if min(height, width) < MIN_PICTURE_SIDE:
        raise _refuse(
            path,
            f"the picture is only {width}x{height} pixels, too small to hold a digit "
            f"(at least {MIN_PICTURE_SIDE}x{MIN_PICTURE_SIDE}; MNIST's are 28x28)",
        )
    longest = max(height, width)
    if longest > MAX_ASPECT * min(height, width):
        raise _refuse(
            path,
            f"the picture is {width}x{height} pixels, a strip more than {MAX_ASPECT} times longer than it is wide "
            f"(a digit fills a squarish box; MNIST's are 28x28)",
        )
    scale = WORK_SIDE / longest if longest > WORK_SIDE else max(1.0, MIN_WORK_SIDE / longest)
    if scale == 1.0:
        return grey.astype(np.float32)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    return np.clip(np.asarray(Image.fromarray(grey.astype(np.float32), mode="F").resize(size, resample)), 0.0, 1.0)


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])


def otsu_threshold(values: np.ndarray) -> float:
    """The level that best splits `values` into two classes (Otsu, 1979): the picture's own threshold, not a fixed
    one."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        return high
    counts, edges = np.histogram(values, bins=256, range=(low, high))
    levels = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * levels)
    below, above = weight[:-1], weight[-1] - weight[:-1]
    valid = (below > 0) & (above > 0)
    mean_below = np.divide(mass[:-1], below, out=np.zeros_like(mass[:-1]), where=valid)
    mean_above = np.divide(mass[-1] - mass[:-1], above, out=np.zeros_like(mass[:-1]), where=valid)
    between = np.where(valid, below * above * (mean_below - mean_above) ** 2, -1.0)
    return float(edges[1:][np.argmax(between)])


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of `mask`: labels 1..count in the order of their first pixel (0 off the mask)."""
    return ndimage.label(mask, structure=np.ones((3, 3), bool))


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_to_sheet(grey: np.ndarray) -> np.ndarray:
    """A light sheet photographed on a darker desk: the sheet, slightly inset, so that its paper, not the desk
    at the picture's border, is the background. Other pictures come back whole."""
    threshold = otsu_threshold(grey)
    if np.median(_border(grey)) > threshold:
        return grey  # the border is light already: paper, or a light background
    labels, count = label_components(grey > threshold)
    if count == 0:
        return grey
    areas = np.bincount(labels.ravel())[1:]
    sheet = labels == np.argmax(areas) + 1
    top, bottom, left, right = _bounding_box(sheet)
    box_area = (bottom - top) * (right - left)
    if areas.max() < SHEET_MIN_AREA * grey.size or areas.max() < SHEET_MIN_FILL * box_area:
        return grey  # light strokes on a dark background, not a sheet of paper
    inset = max(1, round(0.03 * max(bottom - top, right - left)))
    return grey[top + inset : bottom - inset, left + inset : right - inset]


def _paper_level(paper_side: np.ndarray) -> np.ndarray:
    """The paper's brightness at every pixel, shadows and uneven light included: a bright percentile per block
    of an 8x8 grid, blocks darkened by ink replaced by a robust quadratic fit, then smoothly interpolated."""
    height, width = paper_side.shape
    rows = np.linspace(0, height, PAPER_GRID + 1).round().astype(int)
    cols = np.linspace(0, width, PAPER_GRID + 1).round().astype(int)
    blocks = np.array(
        [
            [np.percentile(paper_side[rows[i] : rows[i + 1], cols[j] : cols[j + 1]], 75) for j in range(PAPER_GRID)]
            for i in range(PAPER_GRID)
        ]
    )
    y, x = np.meshgrid(np.linspace(-1, 1, PAPER_GRID), np.linspace(-1, 1, PAPER_GRID), indexing="ij")
    design = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6)
    values, kept = blocks.ravel(), np.ones(blocks.size, bool)
    low, high = np.percentile(paper_side, [0.1, 99.9])
    least_spread = 0.02 * max(float(high - low), 1e-3)  # a faint digit's ink is judged by its own contrast
    for _ in range(5):  # blocks below the fitted paper hold ink: fit again without them
        coefficients = np.linalg.lstsq(design[kept], values[kept], rcond=None)[0]
        fitted = design @ coefficients
        residual = values - fitted
        spread = max(least_spread, 3 * 1.4826 * np.median(np.abs(residual[kept] - np.median(residual[kept]))))
        kept = residual > -spread
    paper = np.where(kept, values, fitted).reshape(blocks.shape).astype(np.float32)
    level = Image.fromarray(paper, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.maximum(np.asarray(level), 1e-3)


def _box_mean(pixels: np.ndarray, radius: int = 1) -> np.ndarray:
    """The mean over a (2 radius + 1)-pixel square around each pixel (edges repeated): less noise, same strokes."""
    return ndimage.uniform_filter(pixels, size=2 * radius + 1, mode="nearest")


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` grown by `radius` pixels in every direction (a square), so that the strokes' soft edges are kept."""
    return ndimage.maximum_filter(mask, size=2 * radius + 1, mode="constant", cval=False)


def ink_of(grey: np.ndarray, opacity: np.ndarray | None) -> np.ndarray:
    """How much ink each pixel holds, 0 (background) to about 1, whatever the polarity and the lighting: the
    background's side is read from the border, and each pixel is compared with the paper around it (a shadow
    darkens paper and ink alike). On a transparent canvas the ink is what is opaque, whatever its colour."""
    if opacity is not None and np.median(_border(opacity)) < 0.5:
        grey = 1.0 - opacity  # ink = opaque pixels, shown dark on white paper
    grey = crop_to_sheet(grey)
    paper_side = grey if np.median(_border(grey)) >= otsu_threshold(grey) else 1.0 - grey
    return 1.0 - paper_side / _paper_level(paper_side)


def _noise_level(ink: np.ndarray) -> float:
    """The background's noise (robust standard deviation): sensor noise, paper texture, JPEG artefacts."""
    return float(1.4826 * np.median(np.abs(ink - np.median(ink))))


def digit_mask(ink: np.ndarray, path: Path) -> np.ndarray:
    """The pixels of the digit: a threshold adapted to the picture, then its largest ink component and the pieces
    close to it (a 5's detached bar); far-off specks, faint ruled lines and shadows are left out. `ImageError` when
    nothing there looks like a digit."""
    smooth = _box_mean(ink)
    strongest, noise = float(smooth.max()), _noise_level(ink)
    if strongest < MIN_CONTRAST or strongest < NOISE_MARGIN * noise:
        what = "a blank page" if strongest < MIN_CONTRAST else f"noise (contrast {strongest:.2f}, noise {noise:.2f})"
        raise _refuse(path, f"nothing stands out from the background; it looks like {what}")
    above = smooth[smooth > 0.05 * strongest]
    threshold = max(otsu_threshold(above), INK_FRACTION * strongest)
    mask = smooth > threshold
    if mask.mean() > MAX_INK_COVER:
        raise _refuse(path, f"{100 * mask.mean():.0f}% of the picture is ink, scattered (noise or texture?)")
    labels, count = label_components(mask)
    if count == 0:
        raise _refuse(path, "nothing stands out from the background; it looks like a blank page")
    areas = np.bincount(labels.ravel())[1:]
    main = int(np.argmax(areas)) + 1
    top, bottom, left, right = _bounding_box(labels == main)
    if max(bottom - top, right - left) < MIN_DIGIT_SIDE or areas[main - 1] < MIN_DIGIT_AREA:
        raise _refuse(
            path,
            f"its largest mark is only {right - left}x{bottom - top} pixels (at "
            f"{ink.shape[1]}x{ink.shape[0]}), too small to be a digit",
        )
    if areas[main - 1] < MIN_DOMINANCE * mask.sum():
        raise _refuse(path, f"its ink is scattered over {count} marks, none of them standing out as the digit")
    margin = round(NEAR_MARGIN * max(bottom - top, right - left))
    near = np.zeros_like(mask)
    near[max(0, top - margin) : bottom + margin, max(0, left - margin) : right + margin] = True
    pieces = [
        label
        for label in range(1, count + 1)
        if areas[label - 1] >= MIN_PIECE * areas[main - 1] and (near & (labels == label)).any()
    ]
    return np.isin(labels, pieces)


def fit_to_box(digit: np.ndarray) -> np.ndarray:
    """Crop to the digit's bounding box and scale its longer side to 20 pixels, keeping the aspect ratio."""
    top, bottom, left, right = _bounding_box(digit > INK_THRESHOLD)
    digit = digit[top:bottom, left:right]
    scale = DIGIT_BOX / max(digit.shape)
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))  # PIL: (width, height)
    resized = Image.fromarray(digit.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
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


def isolate_digit(ink: np.ndarray, path: Path) -> np.ndarray:
    """The digit alone, light on black like MNIST: its ink (anti-aliased edges kept) scaled so that the core of
    its strokes is 1, everything else 0."""
    mask = digit_mask(ink, path)
    core = float(np.percentile(ink[mask], 90))
    top, bottom, left, right = _bounding_box(mask)
    edges = _dilate(mask, max(1, round(EDGE_MARGIN * max(bottom - top, right - left))))
    return np.where(edges, np.clip(ink / core, 0.0, 1.0), 0.0).astype(np.float32)


def load_digit(path: Path | str) -> np.ndarray:
    """A picture of one digit (PNG or JPEG, or one of `FORMATS`; up to `MAX_PIXELS`, 8 or 16 bits, either polarity,
    a photo of paper, lined paper, in shadow, or a transparent canvas) as a normalized MNIST image, (28, 28) float32;
    `ImageError`, naming the file, for anything else and for a picture in which no digit is found."""
    path = Path(path)
    grey, opacity = read_picture(path)
    opacity = None if opacity is None else _working_copy(opacity, path)
    ink = ink_of(_working_copy(grey, path), opacity)
    frame = centre_by_mass(fit_to_box(isolate_digit(ink, path)))
    return ((frame - MNIST_MEAN) / MNIST_STD).astype(np.float32)


def load_digits(paths: Sequence[Path | str]) -> tuple[np.ndarray, dict[int, str]]:
    """Every picture `load_digit` prepares, stacked (N, 28, 28) in order, and the one-line error of each that it
    refuses, by position in `paths`: one bad picture does not cost the others their answer."""
    digits, errors = [], {}
    for position, path in enumerate(paths):
        try:
            digits.append(load_digit(path))
        except ImageError as err:
            errors[position] = str(err)
        except Exception as err:  # noqa: BLE001 - a case the analysis missed costs this picture only, in one line
            detail = " ".join(str(err).split())[:200] or type(err).__name__
            errors[position] = (
                f"{shown_path(path)} could not be read as a digit ({type(err).__name__}: {detail}); {_EXPECTED}"
            )
    return np.stack(digits) if digits else np.zeros((0, *IMAGE_SHAPE), np.float32), errors
