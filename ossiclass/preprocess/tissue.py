"""Tissue detection: which parts of a slide and of a tile hold tissue worth classifying.

`tissue_mask` works on a thumbnail (a few µm per pixel); sizes are given in µm so the same
settings hold at any thumbnail scale.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_objects

MIN_OPTICAL_DENSITY = 0.05
"""Below this summed optical density a pixel is glass, whatever Otsu says (blank slides)."""
MAX_THRESHOLD = 0.15
"""Above this summed optical density a pixel is tissue, whatever Otsu says (pale tissue)."""
MIN_GLASS_SHARE = 0.01
"""A thumbnail with less bare glass than this share shows no glass colour worth trusting."""
MIN_GLASS_LEVEL = 160
"""Glass darker than this in any channel (of 255) is no glass but a dark background or ink."""


def optical_density(rgb: np.ndarray, white: np.ndarray | float = 255.0) -> np.ndarray:
    """Summed optical density of an (H, W, 3) uint8 image against the glass `white` (a value
    or one per channel): (H, W) float32, 0 on glass."""
    values = np.asarray(rgb, dtype=np.float32)
    density = -np.log((values + 1.0) / (np.asarray(white, dtype=np.float32) + 1.0))
    return density.sum(axis=-1).clip(min=0.0)


def glass_white(thumbnail: np.ndarray) -> np.ndarray:
    """The colour of bare glass: each channel's 99th percentile. (3,) float32.

    Scanners and cameras rarely show glass as 255: it is tinted and dimmer. Holes in tissue
    (fat, lacunae) are as bright as glass, so even a slide covered in tissue shows it.
    """
    return np.percentile(thumbnail.reshape(-1, 3), 99, axis=0).astype(np.float32)


def glass_colour(thumbnail: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The median colour of the bare glass around the tissue: (3,) float32, or None where
    under `MIN_GLASS_SHARE` of the thumbnail is glass or what lies around the tissue is too
    dark for glass (under `MIN_GLASS_LEVEL` in a channel: a dark background, pen).

    `mask` is the thumbnail's `tissue_mask`. The median ignores dust and a scanner's padding
    while they cover less than the glass does.
    """
    pixels = thumbnail[~mask]
    if len(pixels) < max(MIN_GLASS_SHARE * mask.size, 1):
        return None
    glass = np.median(pixels, axis=0).astype(np.float32)
    return glass if glass.min() >= MIN_GLASS_LEVEL else None


def tissue_mask(
    thumbnail: np.ndarray,
    mpp: float,
    min_tissue_um2: float = 50_000.0,
    max_hole_um2: float = 100_000.0,
) -> np.ndarray:
    """Tissue versus glass on a slide thumbnail.

    Parameters
    ----------
    thumbnail : (H, W, 3) uint8 RGB.
    mpp : µm per thumbnail pixel.
    min_tissue_um2 : specks of tissue smaller than this (dust, debris) are dropped.
    max_hole_um2 : holes smaller than this (fat, lacunae, vessels) are filled.

    Returns
    -------
    (H, W) bool, True on tissue: optical density against the glass's own white, thresholded
    by Otsu but kept between `MIN_OPTICAL_DENSITY` and `MAX_THRESHOLD` so that pale tissue
    (loose mesenchyme) counts and an empty slide gives an empty mask.
    """
    if thumbnail.ndim != 3 or thumbnail.shape[-1] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {thumbnail.shape}")
    density = optical_density(thumbnail, glass_white(thumbnail))
    threshold = MIN_OPTICAL_DENSITY
    if np.ptp(density) > MIN_OPTICAL_DENSITY:
        threshold = float(np.clip(threshold_otsu(density), MIN_OPTICAL_DENSITY, MAX_THRESHOLD))
    mask = density > threshold
    pixel_um2 = mpp * mpp
    mask = remove_small_objects(mask, max_size=max(int(min_tissue_um2 / pixel_um2), 1))
    return fill_small_holes(mask, mpp, max_hole_um2)


def fill_small_holes(mask: np.ndarray, mpp: float, max_hole_um2: float) -> np.ndarray:
    """(H, W) bool `mask` of tissue with its holes filled: those it encloses (glass reaching
    the border is no hole) of at most `max_hole_um2` at `mpp` µm per pixel."""
    holes = ndi.binary_fill_holes(mask) & ~mask
    large_holes = remove_small_objects(holes, max_size=max(int(max_hole_um2 / mpp**2), 1))
    return mask | (holes & ~large_holes)


def tissue_fraction(tile: np.ndarray, white: np.ndarray | float = 255.0) -> float:
    """Share of an (H, W, 3) uint8 tile's pixels that hold stain, against the glass `white`
    (the slide's `glass_white`; 255 when unknown)."""
    return float((optical_density(tile, white) > 3 * MIN_OPTICAL_DENSITY).mean())
