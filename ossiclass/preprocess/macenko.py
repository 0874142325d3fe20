"""Macenko stain normalisation: estimate an image's H and E vectors from its optical densities
and remix them onto a reference's.

Images are numpy `(H, W, 3)` or `(N, H, W, 3)` uint8. `MacenkoNormalizer` keeps the interface
every normaliser keeps (see `stain`); a slide's stains can be estimated once (`estimate`) and
applied to each of its tiles, which is faster and steadier than per-tile estimates. A tile whose
stains cannot be estimated (blank glass, one stain, too little tissue) passes through unchanged
and is flagged, never turned into NaN.

Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI
2009; the settings (`io` 240, `alpha` 1 percentile, `beta` 0.15 OD) follow the reference
implementation that torchstain also follows. The textbook vectors are Ruifrok & Johnston's,
"Quantification of histochemical staining by color deconvolution", Anal Quant Cytol Histol 2001.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ossiclass.preprocess.batches import map_images, pixels_of
from ossiclass.preprocess.checks import checked_numbers
from ossiclass.preprocess.tissue import IO, MIN_TISSUE_PIXELS

MIN_STAIN_ANGLE_DEG = 3.0
"""Two stain vectors closer than this are one stain: no H&E basis to normalise."""
MIN_GREY_ANGLE_DEG = 4.0
"""A "stain" vector closer than this to neutral grey is no dye but glass darker than `io`
(a dim scan's background offsets every pixel's OD along grey): no H&E basis. Real H&E keeps
its hematoxylin 8-15 degrees and its eosin 24-31 degrees from grey (measured on the reference
tiles in ../shared/reference-he)."""


@dataclass(frozen=True)
class MacenkoStains:
    """A stain basis: `vectors` (H, E) as unit OD vectors over (R, G, B), and the 99th
    percentile concentration of each stain. Plain data: `asdict` gives JSON."""

    vectors: tuple[tuple[float, float, float], tuple[float, float, float]]
    max_concentrations: tuple[float, float]

    def __post_init__(self):
        object.__setattr__(self, "vectors", checked_numbers(self.vectors, (2, 3), "vectors"))
        concentrations = checked_numbers(self.max_concentrations, (2,), "max_concentrations")
        if min(concentrations) <= 0:
            raise ValueError("max_concentrations: expected positive numbers")
        object.__setattr__(self, "max_concentrations", concentrations)

    def matrix(self) -> np.ndarray:
        """(3, 2) float32: columns are the H and E vectors."""
        return np.asarray(self.vectors, dtype=np.float32).T


TEXTBOOK_STAINS = MacenkoStains(((0.644, 0.717, 0.267), (0.093, 0.954, 0.283)), (1.0, 1.0))
"""Ruifrok & Johnston's H and E vectors: a starting reference before anything is fitted."""


def _od_table(io: float) -> np.ndarray:
    """Optical density of each 8-bit value: -ln((v + 1) / io), (256,) float32."""
    return (-np.log((np.arange(256, dtype=np.float64) + 1) / io)).astype(np.float32)


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


class MacenkoNormalizer:
    """Maps H&E images onto a reference stain basis (Macenko et al. 2009).

    reference : the stain basis images are mapped onto.
    alpha, beta : the angle percentile and the OD under which a pixel is no stain.
    io : the glass intensity optical density is measured against.
    sample_every : estimates use every n-th pixel (percentiles barely move).
    threads : how many threads `normalize` spreads a batch over (None: all cores; numpy
        releases the GIL in the lookups and partitions); 1 inside DataLoader workers. A run-time
        setting: not saved by `to_dict`.
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
        threads: int | None = None,
    ):
        alpha, beta, io = checked_numbers((alpha, beta, io), (3,), "alpha, beta and io")
        if not (0 < alpha < 50 and beta >= 0 and 0 < io <= 255):
            raise ValueError(f"alpha {alpha:g}, beta {beta:g} or io {io:g} out of range")
        if not (isinstance(sample_every, int) and sample_every >= 1):
            raise ValueError(f"sample_every: expected a whole number over 0, got {sample_every!r}")
        self.reference, self.alpha, self.beta, self.io = reference, alpha, beta, io
        self.sample_every, self.threads = sample_every, threads
        self._od = _od_table(io)

    @classmethod
    def fit(cls, images: np.ndarray | list[np.ndarray], *, mpp: float = 0.5) -> MacenkoNormalizer:
        """Fit the reference basis on one image or on the pooled pixels of several. `mpp` is
        not used (optical density tells glass at any scale); it is there so that every
        normaliser fits alike."""
        normalizer = cls(TEXTBOOK_STAINS)
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
        self, images: np.ndarray, stains: MacenkoStains | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalise (H, W, 3) or (N, H, W, 3) uint8 images, each with its own estimate or all
        with `stains` (a slide-level estimate), over `threads` threads. Returns (images, ok
        (N,) bool); an image whose stains cannot be estimated comes back unchanged, ok False."""
        shared = None if stains is None else self.tables(self.mixing(stains))

        def normalize_one(image: np.ndarray) -> np.ndarray | None:
            if shared is not None:
                return self.apply(image, shared)
            own = self.estimate(image)
            return None if own is None else self.apply(image, self.mixing(own))

        return map_images(images, normalize_one, self.threads)

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
    def from_dict(
        cls, data: dict, mpp: float = 0.5, threads: int | None = None
    ) -> MacenkoNormalizer:
        """Rebuild from `to_dict()`; `mpp` is not used (see `fit`)."""
        reference = data["reference"]
        stains = MacenkoStains(
            tuple(tuple(v) for v in reference["vectors"]), tuple(reference["max_concentrations"])
        )
        settings = (data["alpha"], data["beta"], data["io"], data["sample_every"])
        return cls(stains, *settings, threads=threads)
