"""Stain normalisation: Macenko (stain vectors); Reinhard and histogram matching (CIELAB
statistics of the tissue); histogram matching of each stain's optical density.

Images are numpy `(H, W, 3)` or `(N, H, W, 3)` uint8. A batch is normalised in one call, its
tiles spread over threads. A tile whose stains cannot be estimated (blank glass, one stain, too
little tissue) passes through unchanged and is flagged, never turned into NaN.

Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI
2009; the settings (`io` 240, `alpha` 1 percentile, `beta` 0.15 OD) follow the reference
implementation that torchstain also follows. Reinhard et al., "Color transfer between images",
IEEE CG&A 2001. Ruifrok & Johnston, "Quantification of histochemical staining by color
deconvolution", Anal Quant Cytol Histol 2001 (the H, E and residual vectors of
`skimage.color.hed_from_rgb`).
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from skimage.color import hed_from_rgb, lab2rgb, rgb2lab, rgb_from_hed
from skimage.filters import gaussian
from skimage.morphology import remove_small_objects
from skimage.segmentation import clear_border

from ossiclass.preprocess.tissue import fill_small_holes

IO = 240.0
"""Transmitted light intensity: the glass white the optical density is measured against."""
MIN_TISSUE_PIXELS = 100
"""Fewer stained pixels than this among those sampled give no stain estimate."""
MIN_STAIN_ANGLE_DEG = 3.0
"""Two stain vectors closer than this are one stain: no H&E basis to normalise."""
MIN_GREY_ANGLE_DEG = 4.0
"""A "stain" vector closer than this to neutral grey is no dye but glass darker than `io`
(a dim scan's background offsets every pixel's OD along grey): no H&E basis. Real H&E keeps
its hematoxylin 8-15 degrees and its eosin 24-31 degrees from grey (measured on the reference
tiles in ../shared/reference-he)."""
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


@dataclass(frozen=True)
class MacenkoStains:
    """A stain basis: `vectors` (H, E) as unit OD vectors over (R, G, B), and the 99th
    percentile concentration of each stain. Plain data: `asdict` gives JSON."""

    vectors: tuple[tuple[float, float, float], tuple[float, float, float]]
    max_concentrations: tuple[float, float]

    def matrix(self) -> np.ndarray:
        """(3, 2) float32: columns are the H and E vectors."""
        return np.asarray(self.vectors, dtype=np.float32).T


TEXTBOOK_STAINS = MacenkoStains(((0.644, 0.717, 0.267), (0.093, 0.954, 0.283)), (1.0, 1.0))
"""Ruifrok & Johnston's H and E vectors: a starting reference before anything is fitted."""


def _od_table(io: float) -> np.ndarray:
    """Optical density of each 8-bit value: -ln((v + 1) / io), (256,) float32."""
    return (-np.log((np.arange(256, dtype=np.float64) + 1) / io)).astype(np.float32)


def pixels_of(images: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """All pixels of an (H, W, 3) image, an (N, H, W, 3) batch or a list of images: (P, 3) uint8."""
    if isinstance(images, list | tuple):
        return np.concatenate([pixels_of(image) for image in images])
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(
            f"expected (H, W, 3) or (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}"
        )
    return images.reshape(-1, 3)


def _percentiles(values: np.ndarray, q: list[float]) -> list[float]:
    """np.percentile's linear interpolation over a 1-D array we own, partitioned in place
    (np.percentile would copy it first)."""
    positions = [p / 100 * (len(values) - 1) for p in q]
    lows = [int(np.floor(p)) for p in positions]
    values.partition(sorted({i for low in lows for i in (low, min(low + 1, len(values) - 1))}))
    return [
        float(values[low] + (values[min(low + 1, len(values) - 1)] - values[low]) * (p - low))
        for p, low in zip(positions, lows, strict=True)
    ]


def estimate_macenko(
    od: np.ndarray, alpha: float = 1.0, beta: float = 0.15
) -> tuple[np.ndarray, np.ndarray] | None:
    """Macenko stain estimate from (P, 3) float32 optical densities.

    Returns ((3, 2) stain matrix of unit columns, H first; (2,) 99th-percentile concentrations),
    or None where the pixels hold too little stain, only one stain, or a grey "stain" (see
    `MIN_GREY_ANGLE_DEG`), to estimate a basis.
    """
    stained = od[(od >= beta).all(axis=1)]  # pixels with some stain on every channel
    if len(stained) < MIN_TISSUE_PIXELS:
        return None
    _, eigenvectors = np.linalg.eigh(np.cov(stained.T))
    plane = eigenvectors[:, 1:3].astype(np.float32)  # the two largest directions
    # Point both plane axes into the stained octant so that angles never wrap around +-pi.
    plane *= np.where(plane.sum(axis=0) < 0, -1, 1).astype(np.float32)
    projected = stained @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = _percentiles(angles, [alpha, 100 - alpha])
    v_low = plane @ np.array([np.cos(low), np.sin(low)], dtype=np.float32)
    v_high = plane @ np.array([np.cos(high), np.sin(high)], dtype=np.float32)
    # Hematoxylin absorbs more red than eosin: the vector with the larger R is H.
    matrix = np.stack([v_low, v_high] if v_low[0] > v_high[0] else [v_high, v_low], axis=1)
    grey = (matrix.sum(axis=0) / np.sqrt(3)).max()  # unit vectors: cosine of the greyest
    if (
        not np.isfinite(matrix).all()
        or matrix[:, 0] @ matrix[:, 1] > np.cos(np.deg2rad(MIN_STAIN_ANGLE_DEG))
        or grey > np.cos(np.deg2rad(MIN_GREY_ANGLE_DEG))
    ):
        return None
    concentrations = np.linalg.pinv(matrix) @ od.T  # least squares, (2, P)
    max_concentrations = np.array([_percentiles(row, [99])[0] for row in concentrations])
    if (max_concentrations < 1e-3).any():
        return None
    return matrix, max_concentrations.astype(np.float32)


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


class MacenkoNormalizer:
    """Maps H&E images onto a reference stain basis (Macenko et al. 2009).

    Fit once on reference images; then either estimate each tile's stains (`normalize`), or
    estimate a slide's stains once from pixels sampled across it (`estimate`) and normalise every
    tile with them, which is faster and steadier than per-tile estimates.
    """

    method = "macenko"
    per_slide = True
    """`classify` estimates a slide's stains once: a stain basis maps colours alike in every
    tile, and leaves what tells one tile from another as it is."""

    def __init__(
        self,
        reference: MacenkoStains,
        alpha: float = 1.0,
        beta: float = 0.15,
        io: float = IO,
        sample_every: int = 4,
    ):
        self.reference, self.alpha, self.beta, self.io = reference, alpha, beta, io
        self.sample_every = sample_every  # estimates use every n-th pixel: percentiles barely move
        self._od = _od_table(io)

    @classmethod
    def fit(
        cls, images: np.ndarray | list[np.ndarray], mpp: float | None = None, **settings
    ) -> MacenkoNormalizer:
        """Fit the reference basis on one image or on the pooled pixels of several. `mpp` is
        ignored (optical density tells glass at any scale); it is there so that every
        normaliser fits alike."""
        normalizer = cls(TEXTBOOK_STAINS, **settings)
        stains = normalizer.estimate(images)
        if stains is None:
            raise ValueError("the reference images show too little H&E to fit a stain basis")
        normalizer.reference = stains
        return normalizer

    def estimate(self, images: np.ndarray | list[np.ndarray]) -> MacenkoStains | None:
        """One stain basis from the pooled pixels of `images` (tiles sampled across a slide, or
        its thumbnail); None where they show no usable H&E."""
        pixels = pixels_of(images)[:: self.sample_every]
        found = estimate_macenko(self._od[pixels], self.alpha, self.beta)
        if found is None:
            return None
        matrix, max_concentrations = found
        vectors = tuple(tuple(float(v) for v in column) for column in matrix.T)
        return MacenkoStains(vectors, tuple(float(c) for c in max_concentrations))

    def mixing(self, stains: MacenkoStains) -> np.ndarray:
        """(3, 3) float32 M with OD_out = M @ OD_in: unmix with `stains`, rescale the
        concentrations to the reference's, remix with the reference vectors."""
        scale = np.asarray(self.reference.max_concentrations) / np.asarray(
            stains.max_concentrations
        )
        mixing = (self.reference.matrix() * scale) @ np.linalg.pinv(stains.matrix())
        return mixing.astype(np.float32)

    def tables(self, mixing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lookup tables that apply OD mixing `mixing` (see `apply`): ((3, 65536) float32
        io x red factor x green factor, (3, 256) float32 blue factor)."""
        exponent = np.minimum(-mixing[:, :, None] * self._od[None, None, :], 20.0)
        factors = np.exp(exponent).astype(np.float32)  # (out, in, 256), capped: no overflow
        red_green = np.float32(self.io) * factors[:, 0, :, None] * factors[:, 1, None, :]
        return red_green.reshape(3, -1), factors[:, 2]

    def apply(self, images: np.ndarray, mixing: np.ndarray | tuple) -> np.ndarray:
        """Map (..., 3) uint8 pixels through OD mixing M (or its `tables`): io * exp(-M @ OD).

        exp(-M @ OD) is a product of one factor per input channel, so each output channel is
        a lookup in a (red, green) table of 65536 products times a lookup in a blue table:
        two lookups and a product per value instead of a matrix product and three exps.
        """
        tables = self.tables(mixing) if isinstance(mixing, np.ndarray) else mixing
        red_green_tables, blue_tables = tables
        red_green = images[..., 0].astype(np.uint16) << 8 | images[..., 1]
        blue = images[..., 2]
        out = np.empty(images.shape, dtype=np.uint8)
        for c in range(3):
            value = red_green_tables[c][red_green]
            value *= blue_tables[c][blue]
            np.minimum(value, 255.0, out=value)
            value += 0.5  # round on the cast below
            out[..., c] = value
        return out

    def normalize(
        self, images: np.ndarray, stains: MacenkoStains | None = None, threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalise (H, W, 3) or (N, H, W, 3) uint8 images, each with its own estimate or all
        with `stains` (a slide-level estimate). Returns (images, ok (N,) bool); an image whose
        stains cannot be estimated comes back unchanged with ok False.

        A batch is split over `threads` threads (default: all cores; numpy releases the GIL
        in the lookups and partitions). Use 1 inside DataLoader workers.
        """
        batch = np.asarray(images)[None] if np.ndim(images) == 3 else np.asarray(images)
        out, ok = np.empty_like(batch), np.zeros(len(batch), dtype=bool)
        shared = None if stains is None else self.tables(self.mixing(stains))

        def run(indices: np.ndarray) -> None:
            for index in indices:
                own = self.estimate(batch[index]) if shared is None else None
                if shared is None and own is None:
                    out[index] = batch[index]
                    continue
                mixing = shared if own is None else self.mixing(own)
                out[index], ok[index] = self.apply(batch[index], mixing), True

        threads = min(threads or os.cpu_count() or 1, len(batch))
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(run, np.array_split(np.arange(len(batch)), threads)))
        else:
            run(np.arange(len(batch)))
        return out.reshape(np.shape(images)), ok

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "reference": asdict(self.reference),
            "alpha": self.alpha,
            "beta": self.beta,
            "io": self.io,
            "sample_every": self.sample_every,
        }

    @classmethod
    def from_dict(cls, data: dict) -> MacenkoNormalizer:
        reference = data["reference"]
        stains = MacenkoStains(
            tuple(tuple(v) for v in reference["vectors"]), tuple(reference["max_concentrations"])
        )
        return cls(stains, data["alpha"], data["beta"], data["io"], data["sample_every"])


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
    (`StainHistogramNormalizer.densities`) at `mpp` µm per pixel.

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


def _mean_glass(images: np.ndarray | list[np.ndarray], mpp: float) -> np.ndarray:
    """(3,) float32 mean RGB of the glass (`glass_mask`) of one image or several. Where they
    show too little, neutral `IO`: the white the stain maths assumes, and what `classify`
    balances a slide's glass to (a tile covered with tissue then matches as measured against
    it, its glass's tint an offset in every density, which the matching takes out)."""
    glass = np.concatenate(
        [image[glass_mask(rgb2lab(image), mpp)] for image in _image_list(images)]
    )
    if len(glass) < MIN_TISSUE_PIXELS:
        return np.full(3, IO, dtype=np.float32)
    return glass.mean(axis=0).astype(np.float32)


def _image_list(images: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """The (H, W, 3) images of an image, an (N, H, W, 3) batch or a list, checked as
    `pixels_of` checks them."""
    if isinstance(images, list | tuple):
        return [image for item in images for image in _image_list(item)]
    pixels_of(images)  # raises ValueError for anything but uint8 RGB
    return list(images) if images.ndim == 4 else [images]


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB of a CIELAB image; colours outside sRGB are clipped, silently."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Conversion from CIE-LAB", UserWarning)
        rgb = lab2rgb(lab)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def _enough_tissue(tissue: np.ndarray) -> bool:
    """Whether (P, 3) tissue pixels are enough, and varied enough, to match."""
    return len(tissue) >= MIN_TISSUE_PIXELS and bool((tissue.std(axis=0) >= 1e-3).all())


class _StatisticsNormalizer:
    """The common part of the normalisers that map statistics of an image's tissue onto a
    reference's. A subclass says in which colour space (`_decompose`, `_compose`), which
    statistics (`statistics_type`, with its `of`) and how they map (`_map`)."""

    method: str
    statistics_type: type
    per_slide = False
    """`classify` matches each tile by its own statistics, as training did: the model learnt
    tiles whose colour distribution is the reference's, which a slide's pooled statistics do
    not give a tile."""

    def __init__(self, reference, mpp: float = 0.5):
        if not (isinstance(mpp, int | float) and math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"mpp: expected a positive number of µm per pixel, got {mpp!r}")
        self.reference, self.mpp = reference, float(mpp)

    @classmethod
    def fit(cls, images: np.ndarray | list[np.ndarray], mpp: float = 0.5):
        """Fit the reference on one image or on the pooled tissue of several, at `mpp` µm/px:
        the scale of the tiles it will normalise."""
        normalizer = cls(None, mpp)
        normalizer.reference = normalizer.estimate(images)
        if normalizer.reference is None:
            raise ValueError("the reference images show too little tissue to fit statistics")
        return normalizer

    def estimate(self, images: np.ndarray | list[np.ndarray]):
        """Statistics of the pooled tissue pixels of `images` (a lab's or a slide's tiles);
        None where there is too little tissue."""
        tissue = []
        for image in _image_list(images):
            values, is_tissue = self._decompose(image)
            tissue.append(values[is_tissue])
        return self._statistics(np.concatenate(tissue))

    def _statistics(self, tissue: np.ndarray):
        """Statistics of (P, 3) tissue pixels; None where too few or too uniform."""
        return self.statistics_type.of(tissue) if _enough_tissue(tissue) else None

    def _decompose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An (H, W, 3) uint8 image in the working colour space, and its (H, W) bool tissue."""
        raise NotImplementedError

    def _compose(self, values: np.ndarray, image: np.ndarray, tissue: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 of `values` in the working space: the image normalised."""
        raise NotImplementedError

    def normalize(self, images: np.ndarray, stats=None) -> tuple[np.ndarray, np.ndarray]:
        """Normalise (H, W, 3) or (N, H, W, 3) uint8 images, each with its own statistics or
        with `stats` from `estimate`; returns (images, ok (N,) bool)."""
        images = np.asarray(images)
        pixels_of(images)  # raises ValueError for anything but uint8 RGB
        batch = images[None] if images.ndim == 3 else images
        out, ok = batch.copy(), np.zeros(len(batch), dtype=bool)
        for index, image in enumerate(batch):
            values, tissue = self._decompose(image)
            source = stats or self._statistics(values[tissue])
            if source is None:
                continue
            mapped = np.where(tissue[..., None], self._map(values, source), values)
            out[index] = self._compose(mapped, image, tissue)
            ok[index] = True
        return out.reshape(images.shape), ok

    def to_dict(self) -> dict:
        return {"method": self.method, "reference": asdict(self.reference), "mpp": self.mpp}

    @classmethod
    def from_dict(cls, data: dict):
        return cls(cls.statistics_type(**data["reference"]), data.get("mpp", 0.5))


class _LabNormalizer(_StatisticsNormalizer):
    """The CIELAB normalisers' common part: the tissue is what `glass_mask` leaves, and glass
    is left as it is."""

    def _decompose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lab = rgb2lab(image)
        return lab, ~glass_mask(lab, self.mpp)

    def _compose(self, values: np.ndarray, image: np.ndarray, tissue: np.ndarray) -> np.ndarray:
        return np.where(tissue[..., None], _lab_to_rgb(values), image)


def _checked(values, shape: tuple[int, ...], name: str) -> tuple:
    """`values` as nested tuples of floats of `shape`; ValueError unless finite and of it."""
    array = np.asarray(values, dtype=float)
    if array.shape != shape or not np.isfinite(array).all():
        raise ValueError(f"{name}: expected {shape} finite numbers")
    return tuple(map(float, array)) if len(shape) == 1 else tuple(map(tuple, array.tolist()))


@dataclass(frozen=True)
class LabStatistics:
    """Mean and standard deviation of L*, a*, b* over an image's tissue pixels."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self):  # also what from_dict reads from JSON
        object.__setattr__(self, "mean", _checked(self.mean, (3,), "mean"))
        object.__setattr__(self, "std", _checked(self.std, (3,), "std"))
        if min(self.std) <= 0:
            raise ValueError("std: expected positive spreads")

    @classmethod
    def of(cls, tissue: np.ndarray) -> LabStatistics:
        return cls(tissue.mean(0), tissue.std(0))


class ReinhardNormalizer(_LabNormalizer):
    """Matches the mean and spread of each CIELAB channel of the tissue to a reference's
    (Reinhard et al. 2001)."""

    method = "reinhard"
    statistics_type = LabStatistics

    def _map(self, lab: np.ndarray, source: LabStatistics) -> np.ndarray:
        reference = self.reference
        return (lab - source.mean) / np.asarray(source.std) * reference.std + reference.mean


@dataclass(frozen=True)
class ChannelQuantiles:
    """The 0th to 100th percentiles of each of three colour channels (L*, a*, b*; or H, E and
    residual optical density) over an image's tissue pixels: (3, 101)."""

    levels: tuple[tuple[float, ...], ...]

    def __post_init__(self):  # also what from_dict reads from JSON
        object.__setattr__(self, "levels", _checked(self.levels, (3, 101), "levels"))
        if (np.diff(self.levels, axis=1) < 0).any():
            raise ValueError("levels: expected percentiles that never decrease")

    @classmethod
    def of(cls, tissue: np.ndarray) -> ChannelQuantiles:
        return cls(np.percentile(tissue, np.arange(101), axis=0).T)


class _QuantileMatching:
    """Histogram specification: each channel mapped from the image's tissue percentiles onto
    the reference's."""

    statistics_type = ChannelQuantiles

    def _map(self, values: np.ndarray, source: ChannelQuantiles) -> np.ndarray:
        pairs = zip(source.levels, self.reference.levels, strict=True)
        return np.stack(
            [np.interp(values[..., c], ours, theirs) for c, (ours, theirs) in enumerate(pairs)],
            -1,
        )


class HistogramNormalizer(_QuantileMatching, _LabNormalizer):
    """Matches the whole distribution of each CIELAB channel of the tissue to a reference's
    (histogram specification at every percentile): where Reinhard matches a mean and a spread,
    this also matches the skew that pale lacunae or dense bone give a tile."""

    method = "histogram"


class StainHistogramNormalizer(_QuantileMatching, _StatisticsNormalizer):
    """Matches the whole distribution of each stain's optical density in the tissue to a
    reference's: colour deconvolution into hematoxylin, eosin and a residual (Ruifrok &
    Johnston's vectors) against the image's own glass, histogram specification of each, and
    Beer-Lambert again under the reference's glass.

    Densities add up where CIELAB values do not, so matching their distributions matches what
    a stain measurement reads: a dye that comes out stronger or weaker, red cells that take
    eosin more or less than matrix, acid decalcification moving eosin into hematoxylin, and the
    glass's tint. Tissue is told from glass relative to the image's own staining
    (`stained_mask`); glass keeps its densities, so it takes the reference's glass colour.
    """

    method = "stain-histogram"

    def __init__(self, reference, mpp: float = 0.5, glass=(IO, IO, IO)):
        super().__init__(reference, mpp)
        self.glass = np.asarray(_checked(glass, (3,), "glass"), dtype=np.float32)
        if (self.glass < 0).any() or (self.glass > 255).any():
            raise ValueError("glass: expected an RGB colour of 0-255")

    @classmethod
    def fit(cls, images: np.ndarray | list[np.ndarray], mpp: float = 0.5):
        """Fit the reference's stain densities, and its glass colour, on one image or several."""
        return cls(super().fit(images, mpp).reference, mpp, _mean_glass(images, mpp))

    def densities(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) float32 H, E and residual optical densities of an (H, W, 3) uint8 image,
        against its own glass (`_mean_glass`)."""
        glass = _mean_glass(image, self.mpp)
        od = -np.log((image.astype(np.float32) + 1) / (glass + 1))
        return od @ hed_from_rgb.astype(np.float32)

    def _decompose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        densities = self.densities(image)
        return densities, stained_mask(densities, self.mpp)

    def _compose(self, values: np.ndarray, image: np.ndarray, tissue: np.ndarray) -> np.ndarray:
        od = values @ rgb_from_hed.astype(np.float32)
        np.maximum(od, -1.0, out=od)  # brighter than glass by e at most: no overflow
        rgb = (self.glass + 1) * np.exp(-od) - 0.5  # -1 undoes the +1 of `densities`; round
        return np.clip(rgb, 0, 255).astype(np.uint8)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "glass": [float(g) for g in self.glass]}

    @classmethod
    def from_dict(cls, data: dict):
        reference = cls.statistics_type(**data["reference"])
        return cls(reference, data.get("mpp", 0.5), data["glass"])


NORMALIZERS = {
    "macenko": MacenkoNormalizer,
    "reinhard": ReinhardNormalizer,
    "histogram": HistogramNormalizer,
    "stain-histogram": StainHistogramNormalizer,
}


def normalizer_from_dict(data: dict, mpp: float = 0.5) -> MacenkoNormalizer | _StatisticsNormalizer:
    """Rebuild a fitted normaliser from its `to_dict()` (as stored in a model bundle). `mpp`:
    the µm/px of the tiles it normalises, where `data` predates the CIELAB normalisers
    recording theirs."""
    if data.get("method") not in NORMALIZERS:
        raise ValueError(
            f"unknown stain normaliser {data.get('method')!r}; "
            f"expected one of {sorted(NORMALIZERS)}"
        )
    return NORMALIZERS[data["method"]].from_dict({"mpp": mpp, **data})
