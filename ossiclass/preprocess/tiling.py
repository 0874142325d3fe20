"""Tile grids over images and slides: level-0 boxes at a requested µm/px, read one at a time.

A box is in level-0 pixels, as WSInfer and QuPath write them; a tile is that box read at the
nearest pyramid level and resized to `tile_px`, so a 40x slide and a 20x slide give tiles of the
same physical size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ossiclass.preprocess.tissue import glass_colour, tissue_mask
from ossiclass.slides import Slide


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 image resized to `size` (width, height) px: averaged over each output
    pixel's area when it shrinks (as a scanner's lower magnification does), Lanczos when it
    grows. The one resampling of training, `predict`, `classify` and data-set conversion."""
    if size == (image.shape[1], image.shape[0]):
        return image
    grows = size[0] > image.shape[1] or size[1] > image.shape[0]
    filter_ = Image.Resampling.LANCZOS if grows else Image.Resampling.BOX
    return np.asarray(Image.fromarray(image).resize(size, filter_))


THUMBNAIL_MPP = 8.0
"""Tissue is detected on a thumbnail of about this many µm per pixel."""


BOX_COLUMNS = ("minx", "miny", "width", "height")
"""A box's columns in tables, in level-0 pixels, as WSInfer writes them."""


@dataclass(frozen=True)
class TileBox:
    """A tile's box in level-0 pixels, and the share of it the tissue mask covers."""

    x: int
    y: int
    width: int
    height: int
    tissue: float


def tile_grid(
    size: tuple[int, int],
    *,
    input_mpp: float,
    model_mpp: float,
    tile_px: int,
    stride_px: int | None = None,
    mask: np.ndarray | None = None,
    min_tissue: float = 0.0,
) -> Iterator[TileBox]:
    """Boxes of a grid over an image of level-0 `size` (width, height) at `input_mpp` µm/px.

    Each box covers `tile_px` pixels at `model_mpp` (so `tile_px * model_mpp / input_mpp`
    level-0 pixels), stepping `stride_px` pixels at `model_mpp` (default `tile_px`: no overlap).
    With a boolean `mask` (any scale, covering the whole image), boxes whose tissue share is
    below `min_tissue` are left out.
    """
    width, height = size
    box = max(round(tile_px * model_mpp / input_mpp), 1)
    step = max(round((stride_px or tile_px) * model_mpp / input_mpp), 1)
    if mask is not None:
        # Summed-area table: the tissue share of any box in four lookups.
        table = np.pad(mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        scale_y, scale_x = mask.shape[0] / height, mask.shape[1] / width
    for y in range(0, height - box + 1, step):
        for x in range(0, width - box + 1, step):
            tissue = 1.0
            if mask is not None:
                y0, y1 = round(y * scale_y), max(round((y + box) * scale_y), round(y * scale_y) + 1)
                x0, x1 = round(x * scale_x), max(round((x + box) * scale_x), round(x * scale_x) + 1)
                covered = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
                tissue = float(covered / ((y1 - y0) * (x1 - x0)))
            if tissue >= min_tissue:
                yield TileBox(x, y, box, box, tissue)


def read_tile(slide: Slide, box: TileBox, tile_px: int) -> np.ndarray:
    """A box read at the nearest pyramid level and resized to (tile_px, tile_px, 3) uint8."""
    level = slide.best_level(box.width / tile_px)
    scale = slide.level_downsamples[level]
    region = slide.read_region(
        box.x, box.y, round(box.width / scale), round(box.height / scale), level
    )
    return resize(region, (tile_px, tile_px))


@dataclass(frozen=True)
class SlideTissue:
    """What a slide's thumbnail shows: where the tissue lies and the colour of its glass."""

    mask: np.ndarray
    """(h, w) bool, True on tissue."""
    mpp: float
    """µm per mask pixel (about THUMBNAIL_MPP)."""
    glass: np.ndarray | None
    """(3,) float32 RGB of the bare glass (see `glass_colour`), None where too little shows."""


def slide_tissue_mask(slide: Slide) -> SlideTissue:
    """Tissue mask and glass colour of a whole slide, from a thumbnail at about THUMBNAIL_MPP."""
    mpp = slide.mpp
    longest = max(slide.dimensions)
    thumbnail, downsample = slide.thumbnail(max(int(longest * mpp / THUMBNAIL_MPP), 64))
    factor = max(round(THUMBNAIL_MPP / (mpp * downsample)), 1)
    if factor > 1:
        small = (max(thumbnail.shape[1] // factor, 1), max(thumbnail.shape[0] // factor, 1))
        thumbnail = np.asarray(Image.fromarray(thumbnail).resize(small, Image.Resampling.BOX))
    thumbnail_mpp = mpp * slide.dimensions[0] / thumbnail.shape[1]
    mask = tissue_mask(thumbnail, thumbnail_mpp)
    return SlideTissue(mask, thumbnail_mpp, glass_colour(thumbnail, mask))
