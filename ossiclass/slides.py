"""Slide readers: a region of a large image at any pyramid level, without loading it whole.

`open_slide` reads tiled (pyramidal) TIFF tile by tile through tifffile, plain images (PNG, JPEG,
untiled TIFF) through `imageio.read_image`, and scanners' formats (SVS, NDPI, SCN, BIF) through
tiffslide, the optional `ossiclass[wsi]` extra. Locations are level-0 pixels (x, y), as in
OpenSlide; sizes are pixels at the level read.

Every input's µm per pixel follows one rule, `scale.resolve_mpp`: the value given, else what
the file records, else `scale.DEFAULT_MPP` with a note saying so.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import tifffile
import zarr

from ossiclass.errors import ImageReadError
from ossiclass.imageio import (
    JPEG_COMPRESSIONS,
    TIFF_SUFFIXES,
    read_image,
    tiff_colours,
    tiff_unreadable,
    to_rgb_uint8,
)
from ossiclass.scale import Scale, resolve_mpp


class Slide:
    """An image pyramid: level 0 is full resolution, each level a downsample of it; `scale`:
    its µm per pixel at level 0 and where that came from."""

    def __init__(self, path: Path, levels: list, scale: Scale, handle=None):
        self.path = path
        self._handle = handle  # an open file behind lazily read levels, closed by `close`
        self._levels = levels  # (H, W, 3)-indexable arrays, largest first
        self.scale = scale
        self.dimensions = (levels[0].shape[1], levels[0].shape[0])  # (width, height)
        self.level_downsamples = [self.dimensions[0] / level.shape[1] for level in levels]

    @property
    def mpp(self) -> float:
        """µm per pixel at level 0."""
        return self.scale.mpp

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """(height, width, 3) uint8 at `level`, its top-left at level-0 (x, y); glass-white
        where the region runs past the slide's edge."""
        array = self._levels[level]
        scale = self.level_downsamples[level]
        top, left = round(y / scale), round(x / scale)
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + height, array.shape[0]), min(left + width, array.shape[1])
        if y1 > y0 and x1 > x0:
            out[y0 - top : y1 - top, x0 - left : x1 - left] = self._decode(array, y0, y1, x0, x1)
        return out

    def _decode(self, array, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows y0:y1 and columns x0:x1 of a level as RGB uint8; damaged data is an
        `ImageReadError` naming the file."""
        try:
            return to_rgb_uint8(np.asarray(array[y0:y1, x0:x1]))
        except (tifffile.TiffFileError, ValueError, RuntimeError, OSError, KeyError) as error:
            reason = " ".join(str(error).split())[:160] or type(error).__name__
            raise ImageReadError(f"{self.path}: damaged image data ({reason})") from None

    def best_level(self, downsample: float) -> int:
        """The smallest level that still has at least the resolution of `downsample`."""
        usable = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * 1.01]
        return max(usable, key=lambda i: self.level_downsamples[i]) if usable else 0

    def thumbnail(self, max_size_px: int = 2048) -> tuple[np.ndarray, float]:
        """The whole slide from the smallest level whose longer side is at least
        `max_size_px` (or level 0): ((h, w, 3) uint8, its downsample from level 0)."""
        level = self.best_level(max(self.dimensions) / max_size_px)
        array = self._levels[level]
        whole = self._decode(array, 0, array.shape[0], 0, array.shape[1])
        return whole, self.level_downsamples[level]


class TiledLevel:
    """One level of a tiled TIFF as an (H, W, S) array sliced by `[y0:y1, x0:x1]`, decoded tile
    by tile with tifffile's own decoder. The last `cached` TIFF tiles stay decoded: model tiles
    that neighbour on the slide share TIFF tiles, so each is decoded about once."""

    def __init__(self, page: tifffile.TiffPage, cached: int = 128):
        self._page, self._cached = page, cached
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._jpeg = {}
        if page.compression in JPEG_COMPRESSIONS:  # shared tables live in the page
            self._jpeg = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader}
        self.shape = (page.imagelength, page.imagewidth, page.samplesperpixel)
        self.dtype = page.dtype
        self._tiles_across = -(-page.imagewidth // page.tilewidth)

    def _tile(self, row: int, column: int) -> np.ndarray:
        """(h, w, S): TIFF tile (row, column); zeros where the file stores none."""
        page = self._page
        index = row * self._tiles_across + column
        tile = self._cache.pop(index, None)
        if tile is None:
            data = None
            if page.databytecounts[index]:
                handle = page.parent.filehandle
                handle.seek(page.dataoffsets[index])
                data = handle.read(page.databytecounts[index])
            decoded, _, shape = page.decode(data, index, **self._jpeg)
            tile = np.zeros(shape[1:], self.dtype) if decoded is None else decoded[0]
            if len(self._cache) >= self._cached:
                self._cache.popitem(last=False)
        self._cache[index] = tile
        return tile

    def __getitem__(self, window: tuple[slice, slice]) -> np.ndarray:
        (y0, y1), (x0, x1) = ((s.start, s.stop) for s in window)
        out = np.empty((y1 - y0, x1 - x0, self.shape[2]), self.dtype)
        height, width = self._page.tilelength, self._page.tilewidth
        for row in range(y0 // height, (y1 - 1) // height + 1):
            for column in range(x0 // width, (x1 - 1) // width + 1):
                top, left = row * height, column * width
                a, b = max(y0, top), min(y1, top + height)
                c, d = max(x0, left), min(x1, left + width)
                tile = self._tile(row, column)
                out[a - y0 : b - y0, c - x0 : d - x0] = tile[a - top : b - top, c - left : d - left]
        return out


class ChannelsLast:
    """A channels-first (S, H, W) array sliced as (H, W, S) by `[y0:y1, x0:x1]`."""

    def __init__(self, array):
        self._array = array
        self.shape = (*array.shape[1:], array.shape[0])
        self.dtype = array.dtype

    def __getitem__(self, window: tuple[slice, slice]) -> np.ndarray:
        return np.moveaxis(np.asarray(self._array[(slice(None), *window)]), 0, -1)


def _tiff_levels(tif: tifffile.TiffFile, path: Path) -> list:
    """The pyramid of a tiled TIFF's first series, largest level first: `TiledLevel`s where each
    level is one interleaved RGB(A) page, else zarr arrays (planar or multi-page levels)."""
    series = tif.series[0]
    if series.axes not in ("YXS", "YX", "SYX"):
        raise ImageReadError(f"{path}: a TIFF of axes {series.axes}, not a grey or RGB image")
    pages = [level.pages[0] if len(level.pages) == 1 else None for level in series.levels]
    for page in (page for level in series.levels for page in level.pages):
        if not isinstance(page, tifffile.TiffPage):
            continue
        if colours := tiff_colours(page):
            raise ImageReadError(f"{path}: a tiled TIFF in {colours}: save it as RGB or grey")
        if problem := tiff_unreadable(page):
            raise ImageReadError(f"{path}: {problem}")
    if all(
        isinstance(page, tifffile.TiffPage) and page.is_tiled and page.planarconfig == 1
        and page.shaped[-1] in (3, 4) and page.imagedepth == 1
        for page in pages
    ):  # fmt: skip
        if any(_tile_table_cut_short(page) for page in pages):
            raise ImageReadError(f"{path}: damaged image data (its table of tiles is cut short)")
        return [TiledLevel(page) for page in pages]
    group = zarr.open(series.aszarr(), mode="r")
    levels = (
        [group[str(i)] for i in range(len(series.levels))]
        if isinstance(group, zarr.Group)
        else [group]
    )
    return [ChannelsLast(level) for level in levels] if series.axes == "SYX" else levels


def _tile_table_cut_short(page: tifffile.TiffPage) -> bool:
    """Whether a tiled page records fewer tiles' offsets or sizes than it has tiles (a file
    cut short in its header)."""
    tiles = -(-page.imagelength // page.tilelength) * -(-page.imagewidth // page.tilewidth)
    return min(len(page.dataoffsets), len(page.databytecounts)) < tiles


def _tiff_mpp(page: tifffile.TiffPage) -> float | None:
    """µm per pixel from a TIFF's resolution tags or JSON description, if recorded."""
    try:
        description = json.loads(page.description)
        if isinstance(description, dict) and description.get("mpp"):
            return float(description["mpp"])
    except (ValueError, TypeError, OverflowError):  # OverflowError: a whole number past float
        pass
    unit = page.tags.get("ResolutionUnit")
    resolution = page.tags.get("XResolution")
    if unit is None or resolution is None or unit.value not in (2, 3):
        return None
    numerator, denominator = resolution.value
    if numerator <= 0 or denominator <= 0:
        return None
    per_unit_um = 25_400.0 if unit.value == 2 else 10_000.0  # inch or centimetre
    return per_unit_um * denominator / numerator


def image_mpp(path: str | Path) -> float | None:
    """µm per pixel recorded in an image file (TIFF resolution tags or description), or None."""
    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            return _tiff_mpp(tif.pages[0])
    except (tifffile.TiffFileError, IndexError, ValueError, OSError):
        return None  # reading the image itself reports what is wrong with it


WSI_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif")
"""Scanner formats read through tiffslide."""


def _open_with_tiffslide(path: Path, mpp: float | None) -> Slide:
    try:
        import tiffslide
    except ImportError:
        raise ImageReadError(
            f"{path}: {path.suffix} slides need the optional extra: pip install 'ossiclass[wsi]'"
        ) from None
    try:
        slide = tiffslide.TiffSlide(path)
        group = slide.zarr_group
        levels = [group[str(i)] for i in range(slide.level_count)]
        recorded = slide.properties.get(tiffslide.PROPERTY_NAME_MPP_X)
    except (tifffile.TiffFileError, KeyError, ValueError, OSError) as error:
        raise ImageReadError(f"{path}: corrupt or unsupported slide ({error})") from None
    if levels[0].ndim != 3 or levels[0].shape[2] not in (3, 4):
        slide.close()
        raise ImageReadError(f"{path}: not an RGB slide (level 0 is {levels[0].shape})")
    scale = resolve_mpp(mpp, float(recorded) if recorded else None)
    return Slide(path, levels, scale, handle=slide)


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open a tiled TIFF pyramid, a scanner's slide or a plain image as a `Slide`.

    `mpp` (µm per pixel) overrides what the file records (see `resolve_mpp`).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.suffix.lower() in WSI_SUFFIXES:
        return _open_with_tiffslide(path, mpp)
    if path.suffix.lower() in TIFF_SUFFIXES:
        with ExitStack() as opened:  # closes the file on any error, and when it is not tiled
            try:
                tif = opened.enter_context(tifffile.TiffFile(path))
                page = tif.pages[0]
                scale = resolve_mpp(mpp, _tiff_mpp(page))
                if page.is_tiled:
                    levels = _tiff_levels(tif, path)
                    opened.pop_all()  # the slide reads from the open file until closed
                    return Slide(path, levels, scale, handle=tif)
            except ImageReadError:  # an OSError, already saying what is wrong
                raise
            except (tifffile.TiffFileError, IndexError, KeyError, ValueError, OSError) as error:
                raise ImageReadError(f"{path}: corrupt or not a TIFF file ({error})") from None
        return Slide(path, [read_image(path)], scale)
    return Slide(path, [read_image(path)], resolve_mpp(mpp, None))
