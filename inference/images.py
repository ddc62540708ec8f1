"""Images for a trained network: pictures (anything Pillow opens), folders of them, or IDX files
(``t10k-images-idx3-ubyte[.gz]``), made into its input. A picture is prepared as the dataset's own
images were made (`prepare`); an IDX file's images are taken as they are, of the network's size.
"""
import gzip
import warnings
import zlib
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy

from xpnn.data import DataError, read_idx
from xpnn.data.idx import GZIP_MAGIC

FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
BLANK_RANGE = 16          # levels of 255: less contrast than this is no image at all
BACKGROUND_GRID = 64      # pixels on the shorter side of the copy the background is estimated on
STROKE_LEVEL = 0.25       # of the strongest rise above pass 1's background: a stroke, not paper
INK_THRESHOLD = 0.2       # of the brightest level: fainter is background (paper texture, noise)
MAX_PIXELS = 25 * 10**6   # a picture larger than this (5,000 x 5,000) is refused before decoding


class ImageError(DataError):
    """An input for `predict` is missing, empty, not an image, blank or of the wrong size; the
    message names the file."""


# How a dataset's images were made: the box's longer side as a fraction of the field, and
# whether it is centred by its centre of mass (else by the box itself).
Preparation = namedtuple("Preparation", "box_fraction centre_of_mass")
PREPARATIONS = {
    "mnist": Preparation(box_fraction=20 / 28, centre_of_mass=True),  # LeCun et al.
    "fashion-mnist": Preparation(box_fraction=1.0, centre_of_mass=False),  # Zalando
}


@dataclass
class InputImage:
    """One image as the network will see it: `name`, the file (``file[i]`` in an IDX file);
    `pixels`, (H, W) uint8 light on dark; `inverted`, whether it was dark on light (None: IDX)."""
    name: str
    pixels: numpy.ndarray
    inverted: bool = None


def read_images(sources, size, preparation=PREPARATIONS["mnist"]):
    """The `InputImage`s of `sources` (files, and folders' image files by name), each (H, W) =
    `size`; `ImageError` naming the first source that is missing, empty, not an image, blank,
    an IDX file of other sizes, or a folder without images."""
    images = []
    for path in expand_folders(sources):
        start = _read_start(path)
        if start[:2] == b"\x00\x00" and len(start) >= 4:
            images += _idx_images(path, size)
        else:
            pixels, inverted = prepare(_open_picture(path), size, preparation, str(path))
            images.append(InputImage(str(path), pixels, inverted))
    return images


def expand_folders(sources):
    """`sources` with each folder replaced by its image files, sorted by name."""
    paths = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(path for path in source.iterdir()
                           if path.is_file() and path.suffix.lower() in FOLDER_SUFFIXES)
            if not found:
                raise ImageError(f"{source}: the folder holds no images (files ending in "
                                 f"{', '.join(FOLDER_SUFFIXES)})")
            paths += found
        elif source.exists():
            paths.append(source)
        else:
            raise ImageError(f"{source}: no such file or folder")
    return paths


def _float_image(levels):
    """`levels` (h, w) as a Pillow float32 image."""
    from PIL import Image
    return Image.fromarray(levels.astype(numpy.float32), mode="F")


def prepare(gray, size, preparation=PREPARATIONS["mnist"], name="image"):
    """(pixels (H, W) uint8 light on dark, inverted) of `gray`, (h, w) levels in [0, 255] of
    either polarity, for a network input of `size` (H, W), made as the dataset's images were:
    inverted if its border is light, median-filtered if at least twice `size`, the background
    taken out, stretched and thresholded at `INK_THRESHOLD`, its box scaled and placed as
    `preparation` says. `ImageError` if nothing stands out by `BLANK_RANGE` levels (blank).
    """
    from PIL import Image, ImageFilter
    levels = numpy.asarray(gray)
    # One float64 copy, worked on in place, so that a picture of `MAX_PIXELS` stays within memory.
    if min(levels.shape) >= 2 * max(size):
        gray = numpy.asarray(_float_image(levels).filter(ImageFilter.MedianFilter(3)),
                             dtype=numpy.float64)
    else:
        gray = numpy.array(levels, dtype=numpy.float64)
    del levels
    frame = max(1, min(gray.shape) // 20)
    border = numpy.concatenate([gray[:frame].ravel(), gray[-frame:].ravel(),
                                gray[:, :frame].ravel(), gray[:, -frame:].ravel()])
    inverted = bool(numpy.median(border) > 127.5)
    if inverted:
        numpy.subtract(255.0, gray, out=gray)
    lowest, highest = gray.min(), gray.max()
    background = background_levels(gray)
    ink = gray
    ink -= background
    if inverted:  # ink on paper: the share of the paper's light it takes, alike in a shadow
        numpy.subtract(255.0, background, out=background)
        numpy.maximum(background, BLANK_RANGE, out=background)
        numpy.divide(255.0, background, out=background)
        ink *= background
    del background
    peak = ink.max()
    if peak < BLANK_RANGE:
        raise ImageError(f"{name}: the image is blank: nothing stands out from its background "
                         f"(levels {lowest:.0f} to {highest:.0f} of 255)")
    ink /= peak  # at most 1: the clip below bounds what is left
    ink -= INK_THRESHOLD
    ink /= 1 - INK_THRESHOLD
    numpy.clip(ink, 0.0, 1.0, out=ink)
    rows, cols = numpy.flatnonzero(ink.any(axis=1)), numpy.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    box = max(1, round(preparation.box_fraction * min(size)))
    scale = box / max(ink.shape)
    shape = (max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale)))
    resized = _float_image(ink).resize((shape[1], shape[0]), Image.Resampling.LANCZOS)
    ink = numpy.clip(numpy.asarray(resized, dtype=numpy.float64), 0.0, 1.0)
    return _place(ink, size, preparation.centre_of_mass), inverted


def background_levels(gray):
    """A smooth estimate of the background's level at each pixel of `gray` (h, w), light on dark,
    made on a copy shrunk to about `BACKGROUND_GRID` pixels on its shorter side: pass 1, each
    window's lower quartile, blurred; pass 2, the mean of the pixels pass 1 calls background."""
    from PIL import Image, ImageFilter
    height, width = gray.shape
    factor = max(1.0, min(height, width) / BACKGROUND_GRID)
    small_size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = _float_image(gray).resize(small_size, Image.Resampling.BOX)
    levels = numpy.asarray(small, dtype=numpy.float64)
    window = max(3, min(small_size) // 4) | 1
    quartile = small.filter(ImageFilter.RankFilter(window, window * window // 4))
    first = _box_blurred(numpy.asarray(quartile, dtype=numpy.float64), window // 2)
    rise = levels - first
    calm = (rise < STROKE_LEVEL * rise.max()).astype(numpy.float64)
    paper = (_box_blurred(calm, 1) > 1 - 1e-9).astype(numpy.float64)
    weight = _box_blurred(paper, window // 2)
    second = numpy.where(weight > 0.05, _box_blurred(levels * paper, window // 2)
                         / numpy.maximum(weight, 1e-9), first)
    enlarged = _float_image(second).resize((width, height), Image.Resampling.BILINEAR)
    return numpy.asarray(enlarged, dtype=numpy.float64)


def _box_blurred(levels, radius):
    """The mean of each (2 radius + 1)^2 window of `levels`, edges repeated."""
    padded = numpy.pad(levels, radius, mode="edge")
    for axis in (0, 1):
        sums = numpy.cumsum(padded, axis=axis)
        sums = numpy.concatenate([numpy.zeros_like(sums.take([0], axis=axis)), sums], axis=axis)
        count = padded.shape[axis] - 2 * radius
        padded = (sums.take(numpy.arange(2 * radius + 1, 2 * radius + 1 + count), axis=axis)
                  - sums.take(numpy.arange(count), axis=axis)) / (2 * radius + 1)
    return padded


def _place(ink, size, centre_of_mass):
    """`ink` as uint8 levels in a zero (H, W) field, centred by its centre of mass or its box
    and wholly inside."""
    field = numpy.zeros(size)
    offsets = []
    for axis, (extent, room) in enumerate(zip(ink.shape, size)):
        if centre_of_mass:
            profile = ink.sum(axis=1 - axis)
            shift = room / 2 - (profile * numpy.arange(extent)).sum() / profile.sum()
        else:
            shift = (room - 1) / 2 - (extent - 1) / 2
        offsets.append(min(max(round(shift), 0), room - extent))
    top, left = offsets
    field[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return numpy.round(field * 255).astype(numpy.uint8)


def _read_start(path):
    """The first 4 bytes of the file at `path` (gunzipped), to tell an IDX file from a picture."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
            if start[:2] == GZIP_MAGIC:
                handle.seek(0)
                try:
                    with gzip.GzipFile(fileobj=handle) as stream:
                        return stream.read(4)
                except (OSError, EOFError, zlib.error):
                    return b""  # not IDX; Pillow will say it is no picture either
    except OSError as error:
        raise ImageError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if not start:
        raise ImageError(f"{path}: the file is empty")
    return start


def _idx_images(path, size):
    array = read_idx(path)  # the header checked against the file before the payload is read
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ImageError(f"{path}: an IDX file of shape {array.shape} holds no images; give one "
                         f"of images (count, rows, columns), e.g. t10k-images-idx3-ubyte")
    if tuple(array.shape[1:]) != tuple(size):
        raise ImageError(f"{path}: its images are {array.shape[1]} x {array.shape[2]} but the "
                         f"network takes {size[0]} x {size[1]}")
    return [InputImage(f"{path}[{index}]", image) for index, image in enumerate(array)]


def _open_picture(path):
    """The picture at `path` as (h, w) uint8 levels, either polarity (an image with transparency:
    its alpha channel, opaque = ink); its size is checked against `MAX_PIXELS` before decoding,
    Pillow's own limit (which would warn or raise first) lifted for the lazy `Image.open`."""
    try:
        from PIL import Image
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on damaged files: the result says
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
            with image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"{path}: {width} x {height} pixels is more than the "
                        f"{MAX_PIXELS // 10**6} megapixels xpnn reads; shrink the picture first "
                        f"(a digit needs a few hundred pixels across at most)")
                image.load()
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    alpha = numpy.asarray(image.convert("RGBA").getchannel("A"))
                    if alpha.min() < 255:
                        return alpha
                return numpy.asarray(image.convert("L"))
    except ImageError:
        raise
    except Exception as error:  # Pillow's decoders raise many kinds of error on damaged files
        raise ImageError(f"{path}: not an image Pillow can read ({' '.join(str(error).split())}); "
                         f"give PNG or JPEG files, folders of them, or IDX files") from None
