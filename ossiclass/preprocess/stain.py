"""Stain normalisation: the one interface every normaliser keeps, the normalisers that match
statistics of an image's tissue to a reference's, and the registry of all of them.

The interface (`StainNormalizer`, made by a `StainMethod` from `NORMALIZERS`):

- `NORMALIZERS[name].fit(images, *, mpp)`: a normaliser fitted on reference images (an
  (H, W, 3) uint8 image, an (N, H, W, 3) batch or a list) at `mpp` µm per pixel, the scale of
  the tiles it will normalise; ValueError where they show too little to fit.
- `normalizer.estimate(images)`: stains (or statistics) of the pooled images, a slide-level
  estimate; None where they show too little.
- `normalizer.normalize(images, stains=None) -> (images, ok)`: (H, W, 3) or (N, H, W, 3) uint8
  in and out, ok (N,) bool; each image by its own estimate, or all by `stains`. An image that
  cannot be normalised comes back unchanged with ok False, never as NaN.
- `normalizer.per_slide`: whether `classify` estimates a slide once (`estimate`) or each tile
  by itself.
- `normalizer.threads`: how many threads `normalize` spreads a batch over (None: all cores; 1
  inside DataLoader workers). A run-time setting, not saved.
- `normalizer.to_dict()`, plain JSON data kept in model bundles, and
  `normalizer_from_dict(data, mpp, threads)` to rebuild it.

Macenko is in `macenko`. Here, Reinhard (mean and spread of each CIELAB channel), histogram
(every percentile of each CIELAB channel) and stain-histogram (every percentile of each stain's
optical density) are one `StatisticsNormalizer` whose `Matching` names the colour space
(`Cielab`, `StainDensities`) and the statistics (`LabStatistics`, `ChannelQuantiles`).

Reinhard et al., "Color transfer between images", IEEE CG&A 2001. Ruifrok & Johnston,
"Quantification of histochemical staining by color deconvolution", Anal Quant Cytol Histol
2001 (the H, E and residual vectors of `skimage.color.hed_from_rgb`).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
from skimage.color import hed_from_rgb, lab2rgb, rgb2lab, rgb_from_hed

from ossiclass.preprocess.batches import image_list, map_images
from ossiclass.preprocess.checks import checked_mean_std, checked_mpp, checked_numbers
from ossiclass.preprocess.macenko import MacenkoNormalizer
from ossiclass.preprocess.tissue import (
    MIN_TISSUE_PIXELS,
    glass_mask,
    mean_glass,
    stained_mask,
)

Images = np.ndarray | list[np.ndarray]
"""An (H, W, 3) uint8 image, an (N, H, W, 3) batch, or a list of either."""


class StainNormalizer(Protocol):
    """A fitted stain normaliser (see the module's docstring)."""

    method: str
    per_slide: bool
    threads: int | None

    def estimate(self, images: Images) -> object | None: ...

    def normalize(self, images: np.ndarray, stains=None) -> tuple[np.ndarray, np.ndarray]: ...

    def to_dict(self) -> dict: ...


class StainMethod(Protocol):
    """What `NORMALIZERS` holds: a method that fits a normaliser or rebuilds a saved one."""

    method: str

    def fit(self, images: Images, *, mpp: float = 0.5) -> StainNormalizer: ...

    def from_dict(
        self, data: dict, mpp: float = 0.5, threads: int | None = None
    ) -> StainNormalizer: ...


@dataclass(frozen=True)
class LabStatistics:
    """Mean and standard deviation of L*, a*, b* over an image's tissue pixels; matched as
    Reinhard et al. match them."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self):  # also what from_dict reads from JSON
        checked_mean_std(self)

    @classmethod
    def of(cls, tissue: np.ndarray) -> LabStatistics:
        """The statistics of (P, 3) tissue pixels."""
        return cls(tissue.mean(0), tissue.std(0))

    def match(self, values: np.ndarray, source: LabStatistics) -> np.ndarray:
        """(..., 3) `values` whose tissue has statistics `source`, mapped onto these."""
        return (values - source.mean) / np.asarray(source.std) * self.std + self.mean


@dataclass(frozen=True)
class ChannelQuantiles:
    """The 0th to 100th percentiles of each of three colour channels (L*, a*, b*; or H, E and
    residual optical density) over an image's tissue pixels: (3, 101). Matched by histogram
    specification: each channel mapped from one set of percentiles onto the other."""

    levels: tuple[tuple[float, ...], ...]

    def __post_init__(self):  # also what from_dict reads from JSON
        object.__setattr__(self, "levels", checked_numbers(self.levels, (3, 101), "levels"))
        if (np.diff(self.levels, axis=1) < 0).any():
            raise ValueError("levels: expected percentiles that never decrease")

    @classmethod
    def of(cls, tissue: np.ndarray) -> ChannelQuantiles:
        """The statistics of (P, 3) tissue pixels."""
        return cls(np.percentile(tissue, np.arange(101), axis=0).T)

    def match(self, values: np.ndarray, source: ChannelQuantiles) -> np.ndarray:
        """(..., 3) `values` whose tissue has percentiles `source`, mapped onto these."""
        pairs = zip(source.levels, self.levels, strict=True)
        return np.stack(
            [np.interp(values[..., c], ours, theirs) for c, (ours, theirs) in enumerate(pairs)],
            -1,
        )


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB of a CIELAB image; colours outside sRGB are clipped (lab2rgb warns
    of it: `StatisticsNormalizer.normalize` silences that)."""
    return np.clip(lab2rgb(lab) * 255 + 0.5, 0, 255).astype(np.uint8)


class Cielab:
    """CIELAB as the colour space to match in: the tissue is what `glass_mask` leaves, and
    glass is left as it is."""

    fits_glass = False

    def decompose(self, image: np.ndarray, mpp: float) -> tuple[np.ndarray, np.ndarray]:
        """An (H, W, 3) uint8 image at `mpp` µm/px as (H, W, 3) L*a*b*, and its (H, W) tissue."""
        lab = rgb2lab(image)
        return lab, ~glass_mask(lab, mpp)

    def compose(
        self, values: np.ndarray, image: np.ndarray, tissue: np.ndarray, glass
    ) -> np.ndarray:
        """(H, W, 3) uint8: `image` with its `tissue` turned into the L*a*b* `values`."""
        return np.where(tissue[..., None], _lab_to_rgb(values), image)


def stain_densities(image: np.ndarray, mpp: float) -> np.ndarray:
    """(H, W, 3) float32 H, E and residual optical densities of an (H, W, 3) uint8 image at
    `mpp` µm per pixel, against its own glass (`mean_glass`)."""
    glass = mean_glass(image, mpp)
    od = -np.log((image.astype(np.float32) + 1) / (glass + 1))
    return od @ hed_from_rgb.astype(np.float32)


class StainDensities:
    """Each stain's optical density as the colour space to match in: colour deconvolution into
    hematoxylin, eosin and a residual (Ruifrok & Johnston's vectors) against the image's own
    glass, and Beer-Lambert again under the reference's glass.

    Densities add up where CIELAB values do not, so matching their distributions matches what
    a stain measurement reads: a dye that comes out stronger or weaker, red cells that take
    eosin more or less than matrix, acid decalcification moving eosin into hematoxylin, and the
    glass's tint. Tissue is told from glass relative to the image's own staining
    (`stained_mask`); glass keeps its densities, so it takes the reference's glass colour.
    """

    fits_glass = True

    def decompose(self, image: np.ndarray, mpp: float) -> tuple[np.ndarray, np.ndarray]:
        """An (H, W, 3) uint8 image at `mpp` µm/px as (H, W, 3) densities, and its tissue."""
        densities = stain_densities(image, mpp)
        return densities, stained_mask(densities, mpp)

    def compose(
        self, values: np.ndarray, image: np.ndarray, tissue: np.ndarray, glass
    ) -> np.ndarray:
        """(H, W, 3) uint8 of the densities `values` under glass of RGB `glass` (3,)."""
        od = values @ rgb_from_hed.astype(np.float32)
        np.maximum(od, -1.0, out=od)  # brighter than glass by e at most: no overflow
        rgb = (glass + 1) * np.exp(-od) - 0.5  # -1 undoes the +1 of `stain_densities`; round
        return np.clip(rgb, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Matching:
    """A statistics-matching method: its name, the colour space in which it matches, and the
    statistics of the tissue it matches. `fit` and `from_dict` make its normaliser.

    A colour space (`Cielab`, `StainDensities`) `decompose`s an (H, W, 3) uint8 image into
    (H, W, 3) values and (H, W) bool tissue, and `compose`s matched values back into uint8,
    from the image, its tissue and the reference's glass (each space takes what it needs)."""

    method: str
    space: Cielab | StainDensities
    statistics: type[LabStatistics] | type[ChannelQuantiles]

    def fit(self, images: Images, *, mpp: float = 0.5) -> StatisticsNormalizer:
        """Fit the reference on one image or on the pooled tissue of several, at `mpp` µm/px:
        the scale of the tiles it will normalise (and, in stain densities, the reference's glass
        colour)."""
        mpp = checked_mpp(mpp)
        reference = self.statistics_of(images, mpp)
        if reference is None:
            raise ValueError("the reference images show too little tissue to fit statistics")
        glass = mean_glass(images, mpp) if self.space.fits_glass else None
        return StatisticsNormalizer(self, reference, mpp, glass)

    def statistics_of(self, images: Images, mpp: float):
        """Statistics of the pooled tissue pixels of `images` at `mpp` µm/px; None where too
        few or too uniform."""
        tissue = []
        for image in image_list(images):
            values, is_tissue = self.space.decompose(image, mpp)
            tissue.append(values[is_tissue])
        return self.tissue_statistics(np.concatenate(tissue))

    def tissue_statistics(self, tissue: np.ndarray):
        """Statistics of (P, 3) tissue pixels; None where too few or too uniform."""
        enough = len(tissue) >= MIN_TISSUE_PIXELS and bool((tissue.std(axis=0) >= 1e-3).all())
        return self.statistics.of(tissue) if enough else None

    def from_dict(
        self, data: dict, mpp: float = 0.5, threads: int | None = None
    ) -> StatisticsNormalizer:
        """Rebuild from `to_dict()`; `mpp`: the tiles' µm/px where `data` predates recording it."""
        reference = self.statistics(**data["reference"])
        glass = data["glass"] if self.space.fits_glass else None
        return StatisticsNormalizer(self, reference, data.get("mpp", mpp), glass, threads)


class StatisticsNormalizer:
    """Maps statistics of each image's tissue onto a reference's, in a colour space, as its
    `Matching` says; what is not tissue is left as it is (CIELAB) or given the reference's
    glass (stain densities).

    matching : the method (see `REINHARD`, `HISTOGRAM`, `STAIN_HISTOGRAM`).
    reference : the reference's statistics, of `matching.statistics`.
    mpp : µm per pixel of the tiles it normalises (holes and specks are measured in µm²).
    glass : (3,) RGB of the reference's glass, for a matching that fits it; else None.
    threads : see `StainNormalizer`.
    """

    per_slide = False
    """`classify` matches each tile by its own statistics, as training did: the model learnt
    tiles whose colour distribution is the reference's, which a slide's pooled statistics do
    not give a tile."""

    def __init__(self, matching: Matching, reference, mpp: float = 0.5, glass=None, threads=None):
        self.matching, self.reference, self.mpp = matching, reference, checked_mpp(mpp)
        self.threads = threads
        self.glass = None
        if matching.space.fits_glass:
            self.glass = np.asarray(checked_numbers(glass, (3,), "glass"), dtype=np.float32)
            if (self.glass < 0).any() or (self.glass > 255).any():
                raise ValueError("glass: expected an RGB colour of 0-255")

    @property
    def method(self) -> str:
        return self.matching.method

    def estimate(self, images: Images):
        """Statistics of the pooled tissue of `images` (a lab's or a slide's tiles); None where
        there is too little tissue."""
        return self.matching.statistics_of(images, self.mpp)

    def normalize(self, images: np.ndarray, stats=None) -> tuple[np.ndarray, np.ndarray]:
        """Normalise (H, W, 3) or (N, H, W, 3) uint8 images, each with its own statistics or
        with `stats` from `estimate`, over `threads` threads; returns (images, ok (N,) bool)."""
        space = self.matching.space

        def normalize_one(image: np.ndarray) -> np.ndarray | None:
            values, tissue = space.decompose(image, self.mpp)
            source = stats or self.matching.tissue_statistics(values[tissue])
            if source is None:
                return None
            mapped = np.where(tissue[..., None], self.reference.match(values, source), values)
            return space.compose(mapped, image, tissue, self.glass)

        # Colours matched outside sRGB are clipped, as they should be: lab2rgb's warning is
        # silenced for the whole batch here, since warning filters are global to its threads.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Conversion from CIE-LAB", UserWarning)
            return map_images(images, normalize_one, self.threads)

    def to_dict(self) -> dict:
        data = {"method": self.method, "reference": asdict(self.reference), "mpp": self.mpp}
        return data if self.glass is None else {**data, "glass": [float(g) for g in self.glass]}


REINHARD = Matching("reinhard", Cielab(), LabStatistics)
"""Reinhard et al. 2001: the mean and spread of each CIELAB channel of the tissue."""
HISTOGRAM = Matching("histogram", Cielab(), ChannelQuantiles)
"""Every percentile of each CIELAB channel of the tissue: where Reinhard matches a mean and a
spread, this also matches the skew that pale lacunae or dense bone give a tile."""
STAIN_HISTOGRAM = Matching("stain-histogram", StainDensities(), ChannelQuantiles)
"""Every percentile of each stain's optical density in the tissue (see `StainDensities`)."""

NORMALIZERS: dict[str, StainMethod] = {
    "macenko": MacenkoNormalizer,
    "reinhard": REINHARD,
    "histogram": HISTOGRAM,
    "stain-histogram": STAIN_HISTOGRAM,
}


def normalizer_from_dict(
    data: dict, mpp: float = 0.5, threads: int | None = None
) -> StainNormalizer:
    """Rebuild a fitted normaliser from its `to_dict()` (as stored in a model bundle). `mpp`:
    the µm/px of the tiles it normalises, where `data` predates the statistics normalisers
    recording theirs; `threads`: see `StainNormalizer` (1 inside DataLoader workers)."""
    if not isinstance(data, dict):
        raise ValueError(f"a stain normaliser is a JSON object, got {type(data).__name__}")
    if data.get("method") not in NORMALIZERS:
        raise ValueError(
            f"unknown stain normaliser {data.get('method')!r}; "
            f"expected one of {sorted(NORMALIZERS)}"
        )
    return NORMALIZERS[data["method"]].from_dict(data, mpp, threads)
