"""Tissue detection: which parts of a slide and of a tile hold tissue, and what is glass.

`tissue_mask` works on a thumbnail (a few µm per pixel); `glass_mask` and `stained_mask` on
tiles, for the stain normalisers that match statistics of the tissue alone. Sizes are given in
µm so the same settings hold at any scale. White balance (`white_balance`) scales a slide's
channels so that its glass reads `IO`, the white the stain maths assumes.

Images are numpy `(H, W, 3)` uint8.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2lab
from skimage.filters import apply_hysteresis_threshold, gaussian, threshold_otsu
from skimage.morphology import remove_small_objects
from skimage.segmentation import clear_border

from ossiclass.preprocess.batches import image_list

MIN_OPTICAL_DENSITY = 0.05
"""Below this summed optical density a pixel is glass, whatever Otsu says (blank slides)."""
MAX_THRESHOLD = 0.15
"""Above this summed optical density a pixel is tissue, whatever Otsu says (pale tissue)."""
MIN_GLASS_SHARE = 0.01
"""A thumbnail with less bare glass than this share shows no glass colour worth trusting."""
MIN_GLASS_LEVEL = 160
"""Glass darker than this in any channel (of 255) is no glass but a dark background or ink."""
IO = 240.0
"""Transmitted light intensity: the glass white the optical density is measured against."""
MIN_TISSUE_PIXELS = 100
"""Fewer pixels than this (stained ones, tissue or glass) are too few to estimate from."""
GLASS_LIGHTNESS = 90.0
"""CIELAB L* from which a pixel may be glass, left out of the LAB statistics and left as it is
(see `glass_mask`)."""
DIM_GLASS_MARGIN = 4.0
"""On a dim scan, pixels within this many L* of the image's brightest 1% may be glass."""
MIN_GLASS_LIGHTNESS = 80.0
"""CIELAB L* under which nothing is glass, however dim the scan: grey 198 of 255."""
MAX_HOLE_UM2 = 1250.0
"""Bright areas up to this size (µm²) are holes in tissue, not glass: a lacuna up to 40 µm
across, the largest in the hypertrophic zone (see TISSUES.md)."""
STAIN_SMOOTHING_UM = (2.0, 4.0)
"""Gaussian sigmas (µm) over which stain densities are averaged to tell tissue from glass close
to a pixel and around it: stain extends over tissue, sensor noise and JPEG's 8-pixel blocks do
not."""
RELATIVE_STAIN = 0.1
"""A pixel holds stain when its smoothed H and E densities, each over the image's 90th
percentile of that stain, sum to this or more (see `stained_mask`)."""
MAX_SPECK_UM2 = 100.0
"""Stained areas up to this size (µm²: a cell, blurred by `STAIN_SMOOTHING_UM`) alone on glass
are dust, or too little tissue to match: glass."""
MIN_STAIN_SCALE = 0.15
"""Optical density under which an image's 90th percentile of a stain is taken for glass noise,
not stain: at this floor, tissue needs 0.015 of H and E together, 2-3 grey levels under the
glass, where smoothed noise and JPEG blocks stay below."""


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
    (H, W) bool, True on tissue: optical density against the glass's own white over a
    threshold by Otsu, kept between `MIN_OPTICAL_DENSITY` and `MAX_THRESHOLD` so that an empty
    slide gives an empty mask, and with it the paler pixels, down to `MIN_OPTICAL_DENSITY`,
    that join it (hysteresis): loose mesenchyme, half of whose pixels may lie under any
    threshold that glass stays under, counts where it meets denser tissue.
    """
    if thumbnail.ndim != 3 or thumbnail.shape[-1] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {thumbnail.shape}")
    density = optical_density(thumbnail, glass_white(thumbnail))
    threshold = MIN_OPTICAL_DENSITY
    if np.ptp(density) > MIN_OPTICAL_DENSITY:
        threshold = float(np.clip(threshold_otsu(density), MIN_OPTICAL_DENSITY, MAX_THRESHOLD))
    mask = apply_hysteresis_threshold(density, MIN_OPTICAL_DENSITY, threshold)
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


def glass_mask(lab: np.ndarray, mpp: float) -> np.ndarray:
    """(H, W) bool: the glass of an (H, W, 3) CIELAB image at `mpp` µm per pixel.

    Glass is bright: L* `GLASS_LIGHTNESS` or more (on a dim scan, within `DIM_GLASS_MARGIN` of
    the image's brightest 1%, but never under `MIN_GLASS_LIGHTNESS`). Bright areas that tissue
    encloses and that are no larger than `MAX_HOLE_UM2` are holes in it, such as lacunae: a
    weak stain leaves them as pale as glass and a strong one does not, so only counted as
    tissue are they normalised alike in every lab. What reaches the image's edge is glass.
    """
    lightness = lab[..., 0]
    brightest = float(np.percentile(lightness, 99))
    cut = np.clip(brightest - DIM_GLASS_MARGIN, MIN_GLASS_LIGHTNESS, GLASS_LIGHTNESS)
    return ~fill_small_holes(lightness < cut, mpp, MAX_HOLE_UM2)


def stained_mask(densities: np.ndarray, mpp: float) -> np.ndarray:
    """(H, W) bool: the tissue of an (H, W, 3) image of H, E and residual optical densities
    (`stain.stain_densities`) at `mpp` µm per pixel.

    Tissue holds a tenth (`RELATIVE_STAIN`) of the image's own strong staining: its H and E,
    smoothed close by and around it (`STAIN_SMOOTHING_UM`), each over the 90th percentile of
    that stain smoothed around (never under `MIN_STAIN_SCALE`), sum to 0.1 or more at both
    scales: noise and JPEG blocks on glass are no stain, nor is the blur around a nucleus. A
    lab whose dyes come out weak thus keeps its faint matrix as tissue, where a fixed threshold
    would call it glass in one lab and tissue in the next. Specks up to `MAX_SPECK_UM2` alone
    on glass (not cut by the image's edge) are glass; enclosed holes up to `MAX_HOLE_UM2` are
    tissue, as in `glass_mask`. Uneven light (vignetting) darkens glass as stain would and is
    taken for tissue.
    """
    near, around = (
        gaussian(densities[..., :2], sigma / mpp, channel_axis=-1) for sigma in STAIN_SMOOTHING_UM
    )
    scale = np.maximum(np.percentile(around.reshape(-1, 2), 90, axis=0), MIN_STAIN_SCALE)
    near_stained, around_stained = (
        (np.maximum(stain, 0) / scale).sum(axis=-1) >= RELATIVE_STAIN for stain in (near, around)
    )
    stained = near_stained & around_stained
    small = stained & ~remove_small_objects(stained, max_size=max(int(MAX_SPECK_UM2 / mpp**2), 1))
    return fill_small_holes(stained & ~clear_border(small), mpp, MAX_HOLE_UM2)


def mean_glass(images: np.ndarray | list[np.ndarray], mpp: float) -> np.ndarray:
    """(3,) float32 mean RGB of the glass (`glass_mask`) of one image or several at `mpp` µm
    per pixel. Where they show too little, neutral `IO`: the white the stain maths assumes, and
    what `classify` balances a slide's glass to (a tile covered with tissue then matches as
    measured against it, its glass's tint an offset in every density, which the matching takes
    out)."""
    glass = np.concatenate([image[glass_mask(rgb2lab(image), mpp)] for image in image_list(images)])
    if len(glass) < MIN_TISSUE_PIXELS:
        return np.full(3, IO, dtype=np.float32)
    return glass.mean(axis=0).astype(np.float32)


def white_balance_gains(glass: np.ndarray, white: float = IO) -> np.ndarray:
    """Per-channel gains (3,) float32 that make glass of colour `glass` (3,) read `white` in all
    three: a scanner's white calibration after the fact (von Kries). A tinted or dim glass
    otherwise reads as stain."""
    return (white / np.maximum(np.asarray(glass, dtype=np.float32), 1.0)).astype(np.float32)


def white_balance(images: np.ndarray, glass: np.ndarray, white: float = IO) -> np.ndarray:
    """(..., 3) uint8 images with each channel scaled by `white_balance_gains`, rounded."""
    return scale_channels(images, white_balance_gains(glass, white))


def scale_channels(images: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 images with channel c multiplied by `gains[c]`, rounded and clipped, by
    one lookup per value."""
    gains = np.asarray(gains, dtype=np.float32)
    tables = np.clip(np.arange(256, dtype=np.float32) * gains[:, None] + 0.5, 0, 255)
    tables = tables.astype(np.uint8)
    out = np.empty_like(images)
    for c in range(3):
        np.take(tables[c], images[..., c], out=out[..., c], mode="clip")  # clip: no check
    return out
