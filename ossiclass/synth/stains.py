"""Stain domains ("labs") and Beer-Lambert rendering of dye maps into H&E RGB.

A painter draws morphology as a `(4, H, W)` float32 stack of dye concentrations (see `DYES`);
`render` turns it into RGB with a `StainDomain`: the lab's stain vectors, dye strengths,
decalcification, background white and the scanner's blur, noise and JPEG. Keeping morphology
and stain apart is what makes stain normalisation and augmentation measurable.
"""

from __future__ import annotations

import functools
import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from ossiclass.synth.shapes import resize_matrix

DYES = ("nuclei", "matrix_h", "eosin", "rbc")
"""Dye-map channels: hematoxylin in nuclei, hematoxylin in matrix, eosin, red-cell eosin."""
NUCLEI, MATRIX_H, EOSIN, RBC = range(len(DYES))

# Ruifrok & Johnston (2001) hematoxylin and eosin optical-density vectors (R, G, B).
HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN_VECTOR = np.array([0.07, 0.99, 0.11])
# Many labs' eosin is crimson rather than magenta (it absorbs more blue): see `sample_domain`.
CRIMSON_EOSIN = np.array([0.10, 0.85, 0.45])
# Red cells take eosin but look orange-red: more blue absorption than most labs' matrix eosin
# (the reddest labs' eosin comes close).
RED_CELL_VECTOR = np.array([0.05, 0.78, 0.62])


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


@dataclass(frozen=True)
class StainDomain:
    """One lab's staining and scanning. Plain data: `asdict` gives JSON.

    Attributes
    ----------
    stain_vectors : rows of unit OD vectors (R, G, B) for hematoxylin, eosin, red cells.
    strengths : concentration multipliers for hematoxylin, eosin, red cells: the lab's section
        thickness (0.8-1.3) times its overall dye strength (0.7-1.45), hematoxylin and eosin
        apart by a balance of 0.7-1.43 between them (red cells 0.6-1.6 on their own).
    decalcification : 0 (EDTA, crisp) to 1 (over-decalcified in acid: pale smudgy nuclei, a
        lilac tinge on bone matrix).
    background : RGB of empty glass, 228-252 with a colour cast (clipped to 200-255).
    blur_px : Gaussian blur sigma of the optics, in pixels.
    noise : sensor noise std in grey levels.
    jpeg_quality : JPEG quality of the scanner's compression, or None for lossless.
    vignetting : light lost towards an image's corners (0 for a scanner, up to 0.3 for a
        photograph through a microscope).
    """

    stain_vectors: tuple[tuple[float, float, float], ...]
    strengths: tuple[float, float, float]
    decalcification: float
    background: tuple[float, float, float]
    blur_px: float
    noise: float
    jpeg_quality: int | None
    vignetting: float

    def to_dict(self) -> dict:
        return asdict(self)


def _rotate_towards_random(vector: np.ndarray, rng: np.random.Generator, max_deg: float):
    """Rotate a unit vector by up to `max_deg` degrees in a random direction, staying positive."""
    direction = rng.standard_normal(3)
    direction -= direction.dot(vector) * vector
    direction /= np.linalg.norm(direction)
    angle = np.deg2rad(rng.uniform(0.0, max_deg))
    rotated = np.cos(angle) * vector + np.sin(angle) * direction
    return _unit(np.clip(rotated, 0.02, None))


def sample_domain(rng: np.random.Generator) -> StainDomain:
    """Draw one lab's stain domain from the ranges real H&E shows (see TISSUES.md)."""
    # Most real bone is pink to deep red: eosin nearer crimson than the textbook's magenta.
    eosin = _unit(EOSIN_VECTOR) + rng.uniform(0.35, 1.5) * (
        _unit(CRIMSON_EOSIN) - _unit(EOSIN_VECTOR)
    )
    vectors = tuple(
        tuple(float(v) for v in _rotate_towards_random(_unit(base), rng, max_deg))
        for base, max_deg in ((HEMATOXYLIN, 8.0), (eosin, 6.0), (RED_CELL_VECTOR, 6.0))
    )
    thickness = rng.uniform(0.8, 1.3)  # a lab's usual section thickness, 3-7 µm
    # Labs stain darker or paler as a whole; the balance of the two dyes varies less, so that
    # bone stays pink and cartilage purple in every lab (TISSUES.md).
    overall = thickness * np.exp(rng.uniform(np.log(0.7), np.log(1.45)))
    balance = np.exp(rng.uniform(np.log(0.7), np.log(1.43)))
    red_cells = thickness * np.exp(rng.uniform(np.log(0.6), np.log(1.6)))
    strengths = (float(overall * balance**0.5), float(overall / balance**0.5), float(red_cells))
    white = rng.uniform(228.0, 252.0)
    # Scanners are near-neutral; photographs through a microscope often carry a colour cast.
    tint = rng.normal(0.0, 7.0 if rng.random() < 0.3 else 3.0, 3)
    background = tuple(float(b) for b in np.clip(white + tint, 200.0, 255.0))
    return StainDomain(
        stain_vectors=vectors,
        strengths=strengths,
        decalcification=float(rng.uniform(0.0, 1.0) if rng.random() < 0.5 else 0.0),
        background=background,
        blur_px=float(rng.uniform(0.0, 1.2)),
        noise=float(rng.uniform(0.0, 4.0)),
        jpeg_quality=int(rng.integers(60, 96)) if rng.random() < 0.6 else None,
        vignetting=float(rng.uniform(0.05, 0.3) if rng.random() < 0.3 else 0.0),
    )


def sample_domains(seed: int, count: int) -> list[StainDomain]:
    """`count` stain domains drawn from `seed`; another seed gives other labs."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x57A1]))
    return [sample_domain(rng) for _ in range(count)]


def optical_density(maps: np.ndarray, domain: StainDomain) -> np.ndarray:
    """Per-pixel optical density (natural log units) of dye maps under a domain.

    Parameters
    ----------
    maps : (4, h, w) float32 dye concentrations, channels as in `DYES`.

    Returns
    -------
    (3, h, w) float32 OD for R, G, B (channels first, as the optics resize them).
    """
    nuclei = maps[NUCLEI]
    decal = domain.decalcification
    if decal > 0.05:  # acid smudges and weakens nuclear chromatin
        nuclei = ndi.gaussian_filter(nuclei, 0.3 + 0.8 * decal, truncate=2.5)
    h_strength, e_strength, r_strength = domain.strengths
    # Acid gives eosinophilic matrix a lilac tinge, never as purple as the lab's cartilage.
    hematoxylin = h_strength * (
        (1.0 - 0.5 * decal) * nuclei + maps[MATRIX_H] + 0.08 * decal * maps[EOSIN]
    )
    eosin = e_strength * (1.0 - 0.15 * decal) * maps[EOSIN]
    red_cells = r_strength * maps[RBC]
    concentrations = np.stack([hematoxylin, eosin, red_cells]).reshape(3, -1)
    vectors = np.asarray(domain.stain_vectors, dtype=np.float32)
    return (vectors.T @ concentrations).reshape(3, *maps.shape[1:]).astype(np.float32, copy=False)


def render(
    maps: np.ndarray,
    domain: StainDomain,
    rng: np.random.Generator,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Render (4, h, w) dye maps to an (H, W, 3) uint8 H&E image through the domain's scanner.

    The optical density is resized to `shape` (default: the maps' own) and blurred by the optics
    in one separable linear step; then Beer-Lambert, sensor noise and JPEG.
    """
    od = optical_density(maps, domain)
    height, width = shape or od.shape[1:]
    rows = optics_matrix(height, od.shape[1], round(domain.blur_px, 2))
    cols = optics_matrix(width, od.shape[2], round(domain.blur_px, 2))
    od = rows @ od @ cols.T
    np.negative(od, out=od)
    rgb = np.exp(od, out=od)
    rgb *= np.asarray(domain.background, dtype=np.float32)[:, None, None]
    if domain.vignetting > 0:  # uneven light, darker away from a centre near the middle
        centre = rng.uniform(0.3, 0.7, 2)
        y = np.linspace(0, 1, height, dtype=np.float32)[:, None] - np.float32(centre[0])
        x = np.linspace(0, 1, width, dtype=np.float32)[None, :] - np.float32(centre[1])
        rgb *= 1 - np.float32(domain.vignetting) * (y * y + x * x) * 2
    if domain.noise > 0:
        rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(domain.noise)
    np.clip(rgb, 0.0, 254.5, out=rgb)
    rgb += 0.5  # round half up on the cast below
    image = np.ascontiguousarray(rgb.astype(np.uint8).transpose(1, 2, 0))
    if domain.jpeg_quality is not None:
        image = jpeg_roundtrip(image, domain.jpeg_quality)
    return image


@functools.lru_cache(maxsize=128)
def optics_matrix(size_out: int, size_in: int, blur_px: float) -> np.ndarray:
    """(size_out, size_in) weights: linear resize, then a Gaussian blur of `blur_px` sigma."""
    resize = resize_matrix(size_out, size_in)
    if blur_px < 0.3:
        return resize
    offsets = np.arange(size_out, dtype=np.float32)
    blur = np.exp(-0.5 * ((offsets[:, None] - offsets[None, :]) / blur_px) ** 2)
    blur /= blur.sum(axis=1, keepdims=True)
    return (blur @ resize).astype(np.float32)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Compress and decompress an (H, W, 3) uint8 image as JPEG, adding its artefacts."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"))
