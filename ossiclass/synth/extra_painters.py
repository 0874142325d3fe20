"""Painters of tissues beyond the six (`classes.EXTRA_TISSUES`): marrow and fat.

Same signature as the six in `painters.py`: `paint_x(rng, shape, mpp, orientation=None) ->
(4, H, W) float32` dye maps (channels in `stains.DYES`), sizes in µm converted with `mpp` (µm per
pixel). Both tissues are isotropic, so `orientation` is accepted and not used. `painters.paint`
paints any class here by name; `PAINTED_CLASSES` lists every class the generator can paint.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ossiclass.classes import CLASSES, EXTRA_TISSUES
from ossiclass.synth import cells
from ossiclass.synth.painters import Painter, blank_maps
from ossiclass.synth.shapes import (
    ellipses,
    jittered_grid,
    ridges,
    scatter,
    smooth_noise,
    soft_threshold,
)
from ossiclass.synth.stains import EOSIN, MATRIX_H


def paint_marrow(rng, shape, mpp, orientation=None) -> np.ndarray:
    """Haematopoietic marrow: small round nuclei of many sizes packed in purple-pink cytoplasm,
    sinusoids full of red cells, a megakaryocyte now and then, scattered fat cells."""
    maps = blank_maps(shape)
    cytoplasm = 1 + 0.3 * smooth_noise(rng, shape, 5 / mpp)
    maps[EOSIN] = rng.uniform(0.12, 0.28) * cytoplasm
    maps[MATRIX_H] = rng.uniform(0.04, 0.12) * cytoplasm
    # Cells 6.5-9.5 µm apart: erythroid precursors (small, round, the darkest), myeloid cells and
    # lymphocytes (larger, paler, some oval or bean-shaped), in proportions that vary.
    centres = jittered_grid(rng, shape, rng.uniform(6.5, 9.5) / mpp, 0.45, rng.uniform(0, np.pi))
    centres = centres[rng.random(len(centres)) < rng.uniform(0.65, 0.95)]
    erythroid = rng.random(len(centres)) < rng.uniform(0.25, 0.6)
    for chosen, size_um, aspect, strength in (
        (erythroid, (2.0, 3.0), (0.85, 1.0), rng.uniform(1.6, 2.2)),
        (~erythroid, (2.8, 4.8), (0.6, 1.0), rng.uniform(0.9, 1.3)),
    ):
        count = int(chosen.sum())
        radius = rng.uniform(*size_um, count)
        radii = np.stack([radius, radius * rng.uniform(*aspect, count)], 1)
        angles = rng.uniform(0, np.pi, count)
        cells.add_nuclei(maps, rng, centres[chosen], radii, angles, mpp, strength)
    granules = np.clip(ellipses(shape, centres[~erythroid], (4.0 / mpp, 4.0 / mpp)), 0, 1)
    maps[EOSIN] += rng.uniform(0.0, 0.12) * granules  # myeloid cytoplasm, pinker
    _add_sinusoids(maps, rng, mpp)
    _add_megakaryocytes(
        maps, rng, mpp, rng.poisson(cells.field_count(shape, mpp, rng.uniform(0.1, 0.4)))
    )
    cells.add_fat_vacuoles(maps, rng, np.ones(shape, np.float32), mpp, rng.uniform(0.0, 2.5))
    return maps


def _add_sinusoids(maps: np.ndarray, rng: np.random.Generator, mpp: float) -> None:
    """Marrow sinusoids: wandering thin-walled channels 5-20 µm wide, packed with red cells,
    flat endothelial nuclei along their walls."""
    shape = maps.shape[1:]
    course = smooth_noise(rng, shape, rng.uniform(40, 90) / mpp)
    width = rng.uniform(0.2, 0.5)
    present = soft_threshold(smooth_noise(rng, shape, 60 / mpp), rng.uniform(0.25, 0.6), 3.0)
    lumen = np.clip(2 * ridges(course, width), 0, 1) * present
    wall = np.clip(2 * ridges(course, 1.5 * width), 0, 1) * present - lumen
    cells.carve(maps, lumen)
    maps[EOSIN] += 0.2 * wall
    spacing = 2 * cells.RED_CELL_RADIUS_UM * rng.uniform(0.95, 1.3) / mpp
    packed = jittered_grid(rng, shape, spacing, 0.35, rng.uniform(0, np.pi))
    iy = np.clip(packed[:, 0].astype(np.intp), 0, shape[0] - 1)
    ix = np.clip(packed[:, 1].astype(np.intp), 0, shape[1] - 1)
    full = rng.random(len(packed)) < rng.uniform(0.4, 0.9) * lumen[iy, ix]
    cells.add_red_cells(maps, packed[full], mpp)
    lining = scatter(rng, shape, int(cells.field_count(shape, mpp, 12)), density=wall)
    iy, ix = (np.clip(lining[:, i].astype(np.intp), 0, shape[i] - 1) for i in (0, 1))
    gradient_y, gradient_x = np.gradient(course)
    along = np.arctan2(gradient_y, gradient_x)[iy, ix] + np.pi / 2
    cells.add_nuclei(maps, rng, lining, [[4.0, 1.0]] * len(lining), along, mpp, 1.2)


def _add_megakaryocytes(maps: np.ndarray, rng: np.random.Generator, mpp: float, count: int) -> None:
    """Megakaryocytes: cells 25-50 µm across with pink granular cytoplasm and one lobulated
    nucleus, pushing the small cells aside."""
    shape = maps.shape[1:]
    centres = scatter(rng, shape, count, margin_px=10 / mpp)
    radii = rng.uniform(12, 25, (count, 1)) * rng.uniform(0.75, 1.0, (count, 2)) / mpp
    body = np.clip(ellipses(shape, centres, radii, rng.uniform(0, np.pi, count)), 0, 1)
    cells.carve(maps, body)
    granular = 1 + 0.25 * smooth_noise(rng, shape, 1.5 / mpp)
    maps[EOSIN] += rng.uniform(0.35, 0.6) * body * granular
    maps[MATRIX_H] += 0.06 * body
    lobes = rng.integers(3, 7, count)
    lobe_centres = np.repeat(centres, lobes, axis=0) + rng.normal(
        0, 0.2, (lobes.sum(), 2)
    ) * np.repeat(radii, lobes, axis=0)
    lobe_radii = rng.uniform(2.5, 4.5, (lobes.sum(), 2))
    angles = rng.uniform(0, np.pi, lobes.sum())
    cells.add_nuclei(maps, rng, lobe_centres, lobe_radii, angles, mpp, rng.uniform(1.1, 1.5))


def paint_fat(rng, shape, mpp, orientation=None) -> np.ndarray:
    """Adipose tissue: large empty polygonal adipocytes 50-150 µm across with thin pink
    membranes, a flat nucleus pressed against one now and then, few capillaries."""
    maps = blank_maps(shape)
    size_um = np.exp(rng.uniform(np.log(50), np.log(150)))
    sites = jittered_grid(rng, shape, size_um / mpp, 0.4, rng.uniform(0, np.pi))
    sites = sites[rng.random(len(sites)) > rng.uniform(0.0, 0.25)]  # some cells larger
    wavy_px = rng.uniform(1, 5) / mpp
    yy, xx = (np.arange(size, dtype=np.float32) + np.float32(0.5) for size in shape)
    yy = yy[:, None] + wavy_px * smooth_noise(rng, shape, 30 / mpp)
    xx = xx[None, :] + wavy_px * smooth_noise(rng, shape, 30 / mpp)
    distance_px, normal = _cell_walls(sites, yy, xx)
    half_width = rng.uniform(0.5, 1.2) / mpp
    membrane = np.clip(half_width + 0.5 - distance_px, 0, 1)
    # Processing tears a few membranes.
    membrane *= soft_threshold(smooth_noise(rng, shape, 25 / mpp), rng.uniform(0.9, 1.0), 3.0)
    maps[EOSIN] = rng.uniform(0.25, 0.5) * membrane
    maps[MATRIX_H] = rng.uniform(0.0, 0.04) * membrane
    if rng.random() < 0.3:  # a fibrovascular septum between lobules
        septum = ridges(smooth_noise(rng, shape, 90 / mpp), rng.uniform(0.02, 0.05))
        maps[EOSIN] += rng.uniform(0.2, 0.4) * septum
        count = int(cells.field_count(shape, mpp, rng.uniform(4, 12)))
        fibroblasts = scatter(rng, shape, count, density=septum)  # fewer where it is thin
        radii = np.stack(
            [rng.uniform(4, 7, len(fibroblasts)), rng.uniform(1.0, 1.6, len(fibroblasts))], 1
        )
        cells.add_nuclei(
            maps, rng, fibroblasts, radii, rng.uniform(0, np.pi, len(fibroblasts)), mpp, 1.1
        )
        membrane = np.maximum(membrane, septum)
    inside = ((sites >= 0) & (sites < np.asarray(shape))).all(1).sum()
    flat = scatter(rng, shape, int(max(inside, 1) * rng.uniform(0.15, 0.5)), density=membrane)
    iy, ix = (np.clip(flat[:, i].astype(np.intp), 0, shape[i] - 1) for i in (0, 1))
    along = np.arctan2(normal[0][iy, ix], normal[1][iy, ix]) + np.pi / 2
    radii = np.stack([rng.uniform(4, 7, len(flat)), rng.uniform(0.8, 1.4, len(flat))], 1)
    cells.add_nuclei(maps, rng, flat, radii, along, mpp, rng.uniform(1.0, 1.4))
    capillaries = rng.poisson(cells.field_count(shape, mpp, rng.uniform(0.2, 1.5)))
    cells.add_capillaries(maps, rng, mpp, capillaries, density=membrane)
    return maps


def _cell_walls(sites: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The walls of the cells around (N, 2) `sites` (y, x), a Voronoi tessellation, seen at
    pixels whose (H, W) coordinates are `yy`, `xx` (warped to make the walls wavy).

    Returns (H, W) float32 distance in pixels from each pixel to the wall between its two
    nearest sites, and that wall's normal (2, H, W) (y, x), not normalised.
    """
    shape = yy.shape
    pixels = np.stack([yy.ravel(), xx.ravel()], 1)
    distances, nearest = cKDTree(sites).query(pixels, k=2)
    normal = sites[nearest[:, 1]] - sites[nearest[:, 0]]
    length = np.maximum(np.hypot(normal[:, 0], normal[:, 1]), 1e-6)
    wall = (distances[:, 1] ** 2 - distances[:, 0] ** 2) / (2 * length)
    return wall.reshape(shape).astype(np.float32), normal.T.reshape(2, *shape)


EXTRA_PAINTERS: dict[str, Painter] = {"marrow": paint_marrow, "fat": paint_fat}
assert tuple(EXTRA_PAINTERS) == tuple(n for n in EXTRA_TISSUES if n in EXTRA_PAINTERS), (
    "extra painters follow EXTRA_TISSUES"
)

PAINTED_CLASSES: tuple[str, ...] = (*CLASSES, *EXTRA_PAINTERS)
"""Every class the generator paints: the six in class order, then the extra tissues."""
