"""Elements that several tissues share: nuclei, red cells, capillaries, marrow, section artefacts.

Every function draws into a `(4, H, W)` float32 dye-map stack (channels in `stains.DYES`) in
place. Sizes are given in µm and converted with `mpp` (µm per pixel).
"""

from __future__ import annotations

import numpy as np

from ossiclass.synth.shapes import ellipses, ridges, scatter, smooth_noise, soft_threshold
from ossiclass.synth.stains import EOSIN, MATRIX_H, NUCLEI, RBC

RED_CELL_RADIUS_UM = 3.5


def field_count(shape: tuple[int, int], mpp: float, per_field: float) -> float:
    """Scale a count given per 128 x 128 µm field to a canvas of `shape` pixels."""
    return per_field * shape[0] * shape[1] * mpp * mpp / 128.0**2


def carve(maps: np.ndarray, coverage: np.ndarray, depth: float = 1.0) -> None:
    """Empty the tissue where `coverage` (H, W) is 1: lacunae, lumens, fat, cracks."""
    maps *= 1.0 - depth * np.clip(coverage, 0.0, 1.0)


def add_nuclei(
    maps: np.ndarray,
    rng: np.random.Generator,
    centres: np.ndarray,
    radii_um: np.ndarray,
    angles: np.ndarray | float,
    mpp: float,
    strength: float,
) -> None:
    """Hematoxylin-dark nuclei with grainy chromatin. `radii_um` is (N, 2) semi-axes in µm."""
    if len(centres) == 0:
        return
    coverage = np.clip(ellipses(maps.shape[1:], centres, np.asarray(radii_um) / mpp, angles), 0, 1)
    chromatin = rng.uniform(0.7, 1.15, coverage.shape).astype(np.float32)
    maps[NUCLEI] += strength * coverage * chromatin


def add_red_cells(maps: np.ndarray, centres: np.ndarray, mpp: float, strength: float = 1.4):
    """Red blood cells: anucleate discs about 7 µm across, paler in the middle (biconcave)."""
    if len(centres) == 0:
        return
    shape = maps.shape[1:]
    radius = RED_CELL_RADIUS_UM / mpp
    disc = np.clip(ellipses(shape, centres, (radius, radius)), 0, 1)
    pallor = np.clip(ellipses(shape, centres, (0.45 * radius, 0.45 * radius)), 0, 1)
    maps[RBC] += strength * (disc - 0.35 * pallor)


def points_in_ellipse(
    rng: np.random.Generator, centre: np.ndarray, radii_px: np.ndarray, angle: float, count: int
) -> np.ndarray:
    """`count` uniform random (y, x) points inside one ellipse (radii in pixels)."""
    radius = np.sqrt(rng.random(count))
    theta = rng.uniform(0, 2 * np.pi, count)
    along, across = radius * np.cos(theta) * radii_px[0], radius * np.sin(theta) * radii_px[1]
    x = centre[1] + along * np.cos(angle) - across * np.sin(angle)
    y = centre[0] + along * np.sin(angle) + across * np.cos(angle)
    return np.stack([y, x], axis=1).astype(np.float32)


def add_capillaries(
    maps: np.ndarray,
    rng: np.random.Generator,
    mpp: float,
    count: int,
    density: np.ndarray | None = None,
) -> None:
    """Thin-walled capillaries: a clear lumen, flat endothelial nuclei, red cells inside.
    `density` (H, W in [0, 1]) says where they run (default: anywhere)."""
    shape = maps.shape[1:]
    for centre in scatter(rng, shape, count, density, margin_px=10 / mpp):
        radii = rng.uniform([4.0, 3.0], [12.0, 8.0]) / mpp
        angle = rng.uniform(0, np.pi)
        lumen = np.clip(ellipses(shape, centre[None], radii, angle), 0, 1)
        wall = np.clip(ellipses(shape, centre[None], radii + 1.5 / mpp, angle), 0, 1) - lumen
        carve(maps, lumen)
        maps[EOSIN] += 0.25 * wall
        rim_angles = rng.uniform(0, 2 * np.pi, rng.integers(1, 4))
        rim = np.stack(
            [
                centre[0] + radii[1] * np.sin(rim_angles) * 1.1,
                centre[1] + radii[0] * np.cos(rim_angles) * 1.1,
            ],
            axis=1,
        )
        add_nuclei(maps, rng, rim, [[4.0, 1.1]] * len(rim), rim_angles + np.pi / 2, mpp, 1.2)
        cells = int(rng.integers(0, 2 + radii.prod() * mpp * mpp / 12))
        add_red_cells(maps, points_in_ellipse(rng, centre, radii * 0.8, angle, cells), mpp)


def add_marrow(maps: np.ndarray, rng: np.random.Generator, space: np.ndarray, mpp: float) -> None:
    """Fill `space` (H, W in [0, 1]) with marrow: fibrovascular, haematopoietic and fat, mixed."""
    shape = maps.shape[1:]
    loose = smooth_noise(rng, shape, 12 / mpp)
    maps[EOSIN] += space * rng.uniform(0.05, 0.14) * (1 + 0.4 * loose)
    maps[EOSIN] += space * rng.uniform(0.0, 0.2) * ridges(loose, 0.1)
    cellularity = rng.uniform(0.0, 1.0)
    count = int(field_count(shape, mpp, 15 + 220 * cellularity))
    centres = scatter(rng, shape, count, density=space)
    radii = rng.uniform([1.8, 1.5], [3.5, 2.8], (len(centres), 2))
    add_nuclei(maps, rng, centres, radii, rng.uniform(0, np.pi, len(centres)), mpp, 1.3)
    add_red_cells(
        maps, scatter(rng, shape, int(field_count(shape, mpp, rng.uniform(3, 40))), space), mpp
    )
    if rng.random() < 0.5:
        add_fat_vacuoles(maps, rng, space, mpp, rng.uniform(1, 8))


def add_fat_vacuoles(
    maps: np.ndarray, rng: np.random.Generator, space: np.ndarray, mpp: float, per_field: float
) -> None:
    """Carve fat cells of marrow into `space` (H, W in [0, 1]): large empty round spaces
    30-100 µm across, `per_field` of them per 128 µm field."""
    shape = maps.shape[1:]
    centres = scatter(rng, shape, int(field_count(shape, mpp, per_field)), density=space)
    radii = rng.uniform(15, 50, (len(centres), 1)) * rng.uniform(0.8, 1.0, (len(centres), 2))
    fat = ellipses(shape, centres, radii / mpp, rng.uniform(0, np.pi, len(centres)))
    carve(maps, np.clip(fat, 0, 1) * space)


def add_section_artefacts(maps: np.ndarray, rng: np.random.Generator, mpp: float) -> None:
    """What real bone sections add at random: uneven thickness and staining, the section's edge
    or tears, retraction cracks, folds, dust."""
    shape = maps.shape[1:]
    # Thickness and staining vary a little within a lab's sections, each dye on its own.
    maps[[NUCLEI, MATRIX_H]] *= rng.uniform(0.85, 1.15)
    maps[[EOSIN, RBC]] *= rng.uniform(0.85, 1.15)
    if rng.random() < 0.2:  # the section's edge, a tear or retraction: bare glass in the tile
        scale_px = rng.uniform(40, 120) / mpp
        carve(
            maps,
            soft_threshold(
                smooth_noise(rng, shape, scale_px), rng.uniform(0.05, 0.3), scale_px / 3
            ),
        )
    if rng.random() < 0.15:  # retraction crack or chatter
        crack = ridges(
            smooth_noise(rng, shape, rng.uniform(40, 120) / mpp), rng.uniform(0.02, 0.06)
        )
        carve(maps, crack)
    if rng.random() < 0.04:  # a fold: the section doubled over in a band
        height, width = shape
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        offset = (xx - width / 2) * np.cos(angle) + (yy - height / 2) * np.sin(angle)
        band = np.abs(offset - rng.uniform(-0.4, 0.4) * width) < rng.uniform(10, 30) / mpp
        maps[:, band] *= 1.8
    if rng.random() < 0.05:  # dust: small dark specks above the section
        specks = scatter(rng, shape, int(rng.integers(1, 6)))
        dust = np.clip(ellipses(shape, specks, rng.uniform(1, 4, (len(specks), 2)) / mpp), 0, 1)
        maps[NUCLEI] += 1.5 * dust
        maps[MATRIX_H] += 0.5 * dust
