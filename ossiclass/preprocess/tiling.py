"""Tile grids over images and slides: level-0 boxes at a requested µm/px, read one at a time.

A box is in level-0 pixels, as WSInfer and QuPath write them; a tile is that box read at the
nearest pyramid level and resized to `tile_px`, so a 40x slide and a 20x slide give tiles of the
same physical size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ossiclass.preprocess.tissue import glass_colour, tissue_fraction, tissue_mask
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


def grid_px(input_mpp: float, model_mpp: float, tile_px: int, stride_px: int | None = None
            ) -> tuple[int, int]:  # fmt: skip
    """A grid's (box side, step) in level-0 pixels at `input_mpp` µm/px for tiles of `tile_px`
    pixels at `model_mpp` stepping `stride_px` pixels (default `tile_px`: no overlap)."""
    box = max(round(tile_px * model_mpp / input_mpp), 1)
    step = max(round((stride_px or tile_px) * model_mpp / input_mpp), 1)
    return box, step


def tissue_shares(
    mask: np.ndarray, size: tuple[int, int], x0: np.ndarray, y0: np.ndarray, x1: np.ndarray,
    y1: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The share of each level-0 box [x0, x1) x [y0, y1) that a boolean `mask` (any scale,
    covering the whole image of level-0 `size` (width, height)) covers, from a summed-area
    table: four lookups a box. Boxes broadcast as numpy arrays; returns float64 shares."""
    table = np.pad(mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    scale_y, scale_x = mask.shape[0] / size[1], mask.shape[1] / size[0]
    top, left = np.round(y0 * scale_y).astype(int), np.round(x0 * scale_x).astype(int)
    bottom = np.maximum(np.round(y1 * scale_y).astype(int), top + 1)
    right = np.maximum(np.round(x1 * scale_x).astype(int), left + 1)
    top, bottom = np.minimum(top, mask.shape[0] - 1), np.minimum(bottom, mask.shape[0])
    left, right = np.minimum(left, mask.shape[1] - 1), np.minimum(right, mask.shape[1])
    covered = table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]
    return covered / ((bottom - top) * (right - left))


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
    level-0 pixels), stepping `stride_px` pixels at `model_mpp` (default `tile_px`: no overlap;
    see `grid_px`). With a boolean `mask` (any scale, covering the whole image), boxes whose
    tissue share is below `min_tissue` are left out.
    """
    width, height = size
    box, step = grid_px(input_mpp, model_mpp, tile_px, stride_px)
    y, x = np.meshgrid(np.arange(0, height - box + 1, step), np.arange(0, width - box + 1, step),
                       indexing="ij")  # fmt: skip
    y, x = y.ravel(), x.ravel()
    tissue = np.ones(len(x)) if mask is None else tissue_shares(mask, size, x, y, x + box, y + box)
    for keep in np.flatnonzero(tissue >= min_tissue):
        yield TileBox(int(x[keep]), int(y[keep]), box, box, float(tissue[keep]))


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


def image_tiles(image: np.ndarray, tile_px: int) -> np.ndarray:
    """Cover an (H, W, 3) image with (K, tile_px, tile_px, 3) tiles, evenly spaced and
    overlapping where the size is not a multiple. Tiles that are mostly glass are left out
    unless all are."""
    height, width = image.shape[:2]

    def starts(length: int) -> list[int]:
        count = math.ceil(length / tile_px)
        return np.linspace(0, length - tile_px, count).round().astype(int).tolist()

    tiles = np.stack(
        [image[y : y + tile_px, x : x + tile_px] for y in starts(height) for x in starts(width)]
    )
    tissue = np.array([tissue_fraction(tile) >= 0.25 for tile in tiles])
    if tissue.any():
        tiles = tiles[tissue]
    return tiles
