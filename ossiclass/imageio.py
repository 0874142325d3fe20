"""Reading image files safely: every format, mode and bit depth comes back as RGB uint8.

This is the one way the project reads an image file. Problems the user can cause (a missing,
empty, corrupt or over-large file, or one that is not an image) raise `ImageReadError` with a
one-line message that names the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from ossiclass.errors import ImageReadError

MAX_IMAGE_PIXELS = 2**28
"""Default limit on width x height (a 16384 x 16384 image); larger files are slides, not images."""

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *TIFF_SUFFIXES, ".bmp", ".gif", ".webp")
"""What a folder of tiles is searched for."""


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as RGB.

    Parameters
    ----------
    path : PNG, JPEG, TIFF (8 or 16 bit, grey, RGB or RGBA) or anything else Pillow opens.
    max_pixels : refuse images with more than this many pixels (width x height).

    Returns
    -------
    (H, W, 3) uint8 array. Grey is repeated to three channels, transparency is composited on
    white, 16-bit and float data are scaled to 0-255, EXIF orientation is applied, and an
    animated image gives its first frame.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        array = _read_tiff(path, max_pixels)
        if array is not None:
            return array
    return _read_with_pillow(path, max_pixels)


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert a (H, W), (H, W, 1|2|3|4) or planar (1..4, H, W) array of any dtype to RGB uint8.

    Integer data wider than 8 bits is scaled by its type's range (65535 -> 255); float data in
    [0, 1] is scaled by 255, other float data is clipped to [0, 255]. Alpha composites on white.
    """
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
        return np.ascontiguousarray(array)
    planar = array.ndim == 3 and array.shape[0] in (1, 2, 3, 4) and min(array.shape[1:]) > 4
    if planar:
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected a grey, RGB or RGBA image, got an array of shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).any():
        raise ValueError("the image holds no finite values (all NaN or infinite)")
    values = _scale_to_unit(array)
    if values.shape[-1] in (2, 4):  # grey+alpha or RGB+alpha: composite on white
        alpha = values[..., -1:]
        values = values[..., :-1] * alpha + (1.0 - alpha)
    if values.shape[-1] == 1:
        values = np.repeat(values, 3, axis=-1)
    return np.ascontiguousarray(np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8))


def _scale_to_unit(array: np.ndarray) -> np.ndarray:
    """Scale image data to float32 in [0, 1] by its dtype's range."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0
        top = 65535.0 if array.max(initial=0) > 255 or array.dtype == np.uint16 else 255.0
        return np.clip(array.astype(np.float32) / top, 0.0, 1.0)
    values = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return values if values.max(initial=0.0) <= 1.0 else np.clip(values / 255.0, 0.0, 1.0)


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise ImageReadError(f"{path}: image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ImageReadError(
            f"{path}: image is {width} x {height} px, over the limit of {max_pixels} pixels "
            "(a decompression bomb, or a whole slide: use `ossiclass classify` for slides)"
        )


TIFF_COLOURS = {
    tifffile.PHOTOMETRIC.MINISWHITE: "white-is-zero grey",
    tifffile.PHOTOMETRIC.PALETTE: "palette colours",
    tifffile.PHOTOMETRIC.SEPARATED: "CMYK",
    tifffile.PHOTOMETRIC.YCBCR: "YCbCr",
    tifffile.PHOTOMETRIC.CIELAB: "CIELab",
}
"""Names of the colour spaces whose samples are not grey or RGB values as stored."""
JPEG_COMPRESSIONS = (6, 7, 33007, 34892)
"""TIFF compressions that are JPEG (old, new and their variants): tifffile decodes their YCbCr
to RGB, and a tiled page keeps their shared tables."""


def tiff_colours(page: tifffile.TiffPage) -> str | None:
    """The colour space of a TIFF page whose samples are not grey or RGB values as stored (CMYK,
    CIELab, palette indices, white-is-zero grey, YCbCr that no JPEG codec decodes), or None;
    a page that does not name its colour space is taken as its values."""
    photometric = page.photometric
    if 262 not in page.tags or photometric in (tifffile.PHOTOMETRIC.MINISBLACK,
                                               tifffile.PHOTOMETRIC.RGB):  # fmt: skip
        return None
    if photometric == tifffile.PHOTOMETRIC.YCBCR and page.compression in JPEG_COMPRESSIONS:
        return None
    return TIFF_COLOURS.get(photometric, getattr(photometric, "name", f"photometric {photometric}"))


def tiff_unreadable(page: tifffile.TiffPage) -> str | None:
    """Why a TIFF page's pixels cannot be read as an image (signed samples, or data past the
    end of its file: cut short), or None."""
    if page.dtype is not None and page.dtype.kind == "i":
        return f"signed {page.dtype} samples (an image's are unsigned)"
    ends = np.asarray(page.dataoffsets, np.int64) + np.asarray(page.databytecounts, np.int64)
    if ends.max(initial=0) > page.parent.filehandle.size:
        return "damaged image data (the file ends before its pixels do: cut short?)"
    return None


def _read_tiff(path: Path, max_pixels: int) -> np.ndarray | None:
    """Read level 0 of a TIFF with tifffile; None where tifffile cannot decode it or its
    colours are not grey or RGB (Pillow converts CMYK, palettes and the like)."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            shape = dict(zip(axes, series.shape, strict=True))
            _check_size(path, shape.get("X", 0), shape.get("Y", 0), max_pixels)
            pages = [page for page in series.pages if isinstance(page, tifffile.TiffPage)]
            problems = [tiff_unreadable(page) for page in pages]
            if any(problems):
                raise ImageReadError(f"{path}: {next(p for p in problems if p)}")
            if any(tiff_colours(page) for page in pages):
                return None
            array = series.asarray()
    except ImageReadError:
        raise
    except tifffile.TiffFileError as error:
        raise ImageReadError(f"{path}: corrupt or not a TIFF file ({error})") from None
    except (
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        NotImplementedError,
        RuntimeError,
        OSError,
    ):
        # a codec tifffile lacks (e.g. JPEG without imagecodecs): let Pillow try
        return None
    while array.ndim > 3:  # pages, z or time: the first plane
        array = array[0]
    try:
        return to_rgb_uint8(array)
    except ValueError as error:
        raise ImageReadError(f"{path}: {error}") from None


def _read_with_pillow(path: Path, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # e.g. corrupt EXIF: we raise or read
            with Image.open(path) as image:
                _check_size(path, image.width, image.height, max_pixels)
                image.seek(0)
                image = ImageOps.exif_transpose(image)
                return _pillow_to_rgb(image)
    except ImageReadError:
        raise
    except Image.DecompressionBombError:
        raise ImageReadError(
            f"{path}: image is too large to open safely (decompression bomb check)"
        ) from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image, or a format that cannot be read") from None
    except ValueError as error:
        raise ImageReadError(f"{path}: {error}") from None
    except (OSError, SyntaxError, EOFError) as error:
        raise ImageReadError(f"{path}: corrupt or truncated image ({error})") from None


def _pillow_to_rgb(image: Image.Image) -> np.ndarray:
    """Decode a Pillow image of any mode to (H, W, 3) uint8."""
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
        image = image.convert("RGB")
    if image.mode.startswith("I;16"):
        array = np.asarray(image).astype(np.uint16)
    else:
        array = np.asarray(image)
    return to_rgb_uint8(array)
