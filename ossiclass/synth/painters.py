"""One painter per tissue class: morphology as dye-concentration maps, at physical scale.

A painter is `paint(rng, shape, mpp, orientation=None) -> (4, H, W) float32` (channels in
`stains.DYES`). `mpp` is µm per pixel, so a 40x canvas shows bigger structures than a 20x one.
`orientation` (radians from the x axis) aligns columns, lamellae and fibres along a slide's axis;
None draws it at random. Each painter follows its section of TISSUES.md and varies density,
size, orientation and proportions widely, so no two tiles look alike.

The six painters stay in this one file (about 470 lines) so that they can be read and tuned
side by side against TISSUES.md; their shared shapes and cells live in `shapes.py` and
`cells.py`, and the painters of tissues beyond the six (marrow, fat) in `extra_painters.py`,
which `paint` and `painter` reach by name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ossiclass.classes import CLASSES
from ossiclass.synth import cells
from ossiclass.synth.shapes import (
    bands,
    ellipses,
    jittered_grid,
    ridges,
    scatter,
    smooth_noise,
    soft_threshold,
)
from ossiclass.synth.stains import DYES, EOSIN, MATRIX_H, RBC

Painter = Callable[..., np.ndarray]


def blank_maps(shape: tuple[int, int]) -> np.ndarray:
    """Empty dye maps of a painter: (4, h, w) float32 zeros, one map per dye of `DYES`."""
    return np.zeros((len(DYES), *shape), dtype=np.float32)


def _angle(rng: np.random.Generator, orientation: float | None, spread: float = 0.15) -> float:
    base = rng.uniform(0, np.pi) if orientation is None else orientation
    return float(base + rng.normal(0.0, spread))


def _frame(shape: tuple[int, int], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in pixels along and across `angle`, with the origin at the canvas centre."""
    height, width = shape
    y = np.arange(height, dtype=np.float32)[:, None] - height / 2
    x = np.arange(width, dtype=np.float32)[None, :] - width / 2
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * cos + y * sin, -x * sin + y * cos


def paint_mesenchyme(rng, shape, mpp, orientation=None) -> np.ndarray:
    """Loose pale matrix with clear spaces, wispy fibres, stellate cells with thin processes,
    capillaries."""
    maps = blank_maps(shape)
    cloud = smooth_noise(rng, shape, 25 / mpp)
    loose = np.clip(1 + 0.8 * cloud, 0.0, None)  # thin matrix with clear spaces between
    maps[EOSIN] = rng.uniform(0.03, 0.15) * loose
    maps[MATRIX_H] = rng.uniform(0.01, 0.1) * loose
    fibres = ridges(smooth_noise(rng, shape, rng.uniform(6, 14) / mpp), rng.uniform(0.06, 0.15))
    maps[EOSIN] += rng.uniform(0.06, 0.25) * fibres
    condensation = rng.uniform(0.2, 1.0)
    density = np.clip(0.5 + 0.5 * condensation * smooth_noise(rng, shape, 40 / mpp), 0.05, 1)
    count = int(cells.field_count(shape, mpp, rng.uniform(15, 60) * (1 + condensation)))
    centres = scatter(rng, shape, count, density, margin_px=5 / mpp)
    count = len(centres)
    angles = rng.uniform(0, np.pi, count)
    process_angles = np.concatenate([angles, angles + rng.uniform(0.7, 2.4, count)])
    process_radii = np.stack([rng.uniform(6, 16, 2 * count), rng.uniform(0.7, 1.4, 2 * count)], 1)
    processes = ellipses(shape, np.tile(centres, (2, 1)), process_radii / mpp, process_angles)
    maps[EOSIN] += rng.uniform(0.1, 0.25) * np.clip(processes, 0, 1)
    radii = np.stack([rng.uniform(3.0, 5.0, count), rng.uniform(1.5, 2.5, count)], 1)
    cells.add_nuclei(maps, rng, centres, radii, angles, mpp, rng.uniform(0.9, 1.4))
    cells.add_capillaries(maps, rng, mpp, rng.poisson(cells.field_count(shape, mpp, 1.2)))
    return maps


def _chondrocytes(maps, rng, centres, radii_px, angles, mpp, capsule: float) -> None:
    """Lacunae carved in cartilage matrix, each with a dark capsule, a shrunken cell and nucleus."""
    shape = maps.shape[1:]
    lacunae = np.clip(ellipses(shape, centres, radii_px, angles), 0, 1)
    capsules = np.clip(ellipses(shape, centres, radii_px * 1.3 + 1.5 / mpp, angles), 0, 1)
    maps[MATRIX_H] += capsule * (capsules - lacunae)
    cells.carve(maps, lacunae)
    shrink = rng.uniform(0.6, 0.95, (len(centres), 1))  # the retraction halo
    cell = np.clip(ellipses(shape, centres, radii_px * shrink, angles), 0, 1)
    maps[EOSIN] += rng.uniform(0.04, 0.12) * cell
    maps[MATRIX_H] += rng.uniform(0.05, 0.15) * cell
    nucleus_um = rng.uniform(2.0, 3.5, (len(centres), 1)) * rng.uniform(0.8, 1.0, (len(centres), 2))
    jitter = rng.normal(0, 0.25, (len(centres), 2)) * radii_px * shrink
    cells.add_nuclei(maps, rng, centres + jitter, nucleus_um, angles, mpp, rng.uniform(0.9, 1.5))


def paint_hyaline_cartilage(rng, shape, mpp, orientation=None) -> np.ndarray:
    """Glassy lilac matrix; chondrocytes in lacunae, in isogenous groups or flattened columns."""
    maps = blank_maps(shape)
    glassy = 1 + 0.08 * smooth_noise(rng, shape, 30 / mpp)
    hematoxylin = rng.uniform(0.15, 0.6)
    maps[MATRIX_H] = hematoxylin * glassy
    maps[EOSIN] = hematoxylin * rng.uniform(0.8, 2.8) * glassy  # lilac to deep purple
    if rng.random() < 0.35:  # proliferative zone: flattened cells stacked like coins
        angle = _angle(rng, orientation)
        spacing = rng.uniform(18, 30)
        pitch = rng.uniform(6.5, 10)
        stack = int(rng.integers(3, 8))  # cells per column, with a gap of matrix between columns
        columns = jittered_grid(
            rng, shape, spacing / mpp, 0.15, angle, aspect=(stack + 1.5) * pitch / spacing
        )
        steps = np.arange(stack) - (stack - 1) / 2
        offsets = steps[:, None] * pitch / mpp * np.array([np.sin(angle), np.cos(angle)])
        centres = (columns[None] + offsets[:, None]).reshape(-1, 2)
        centres = centres[rng.random(len(centres)) > 0.15]
        radii = np.stack(
            [rng.uniform(6, 9, len(centres)), rng.uniform(2.2, 0.42 * pitch, len(centres))], 1
        )
        angles = np.full(len(centres), angle + np.pi / 2)
    else:  # resting cartilage: isogenous groups of 1-4 cells, in a real 128 µm field often
        # only one or two, in a great deal of matrix
        spacing_um = np.exp(rng.uniform(np.log(24), np.log(250)))
        groups = jittered_grid(rng, shape, spacing_um / mpp, 0.4, rng.uniform(0, np.pi))
        sizes = rng.integers(1, 5, len(groups))
        centres = np.repeat(groups, sizes, axis=0)
        count = len(centres)
        radius_um = rng.uniform(5, 9.5, count)
        direction = rng.uniform(0, 2 * np.pi, count)
        spread = np.where(np.repeat(sizes, sizes) > 1, radius_um * 1.15, 0.0) / mpp
        centres = centres + spread[:, None] * np.stack([np.sin(direction), np.cos(direction)], 1)
        radii = np.stack([radius_um, radius_um * rng.uniform(0.7, 1.0, count)], 1)
        angles = rng.uniform(0, np.pi, count)
    _chondrocytes(maps, rng, centres, radii / mpp, angles, mpp, rng.uniform(0.15, 0.5))
    return maps


def paint_hypertrophic_zone(rng, shape, mpp, orientation=None) -> np.ndarray:
    """Swollen pale lacunae in columns; dark calcified longitudinal septa, thin transverse ones."""
    maps = blank_maps(shape)
    angle = _angle(rng, orientation)
    along, across = _frame(shape, angle)
    spacing = rng.uniform(22, 46) / mpp  # smaller near the proliferative zone
    septum = rng.uniform(3, 12) / mpp
    maps[MATRIX_H] = rng.uniform(0.25, 0.55)
    maps[EOSIN] = rng.uniform(0.03, 0.2)
    longitudinal = bands(across + spacing / 2, spacing, duty=0.25)
    maps[MATRIX_H] += (
        rng.uniform(0.2, 0.6) * longitudinal * (1 + 0.2 * smooth_noise(rng, shape, 8 / mpp))
    )
    column_count = int(np.hypot(*shape) / spacing) + 3
    pitches = rng.uniform(18, 42, column_count) / mpp
    cell_rows = int(np.hypot(*shape) / pitches.min()) + 3
    k = np.arange(cell_rows) - cell_rows // 2
    u = k[None, :] * pitches[:, None] + rng.uniform(0, 1, (column_count, 1)) * pitches[:, None]
    u = u + rng.normal(0, 0.05, u.shape) * pitches[:, None]
    v = (np.arange(column_count) - column_count // 2)[:, None] * spacing + rng.normal(
        0, 0.04, (column_count, 1)
    ) * spacing
    v = np.broadcast_to(v, u.shape)
    cos, sin = np.cos(angle), np.sin(angle)
    centres = np.stack(
        [shape[0] / 2 + u * sin + v * cos, shape[1] / 2 + u * cos - v * sin], -1
    ).reshape(-1, 2)
    radii = np.stack(
        [
            np.broadcast_to((pitches[:, None] - rng.uniform(1.5, 3) / mpp) / 2, u.shape).ravel(),
            np.full(u.size, (spacing - septum) / 2),
        ],
        1,
    )
    inside = (
        (centres > -spacing).all(1)
        & (centres[:, 0] < shape[0] + spacing)
        & (centres[:, 1] < shape[1] + spacing)
    )
    centres, radii = centres[inside], radii[inside] * rng.uniform(0.88, 1.0, (inside.sum(), 1))
    lacunae = np.clip(ellipses(shape, centres, radii, angle), 0, 1)
    cells.carve(maps, lacunae)
    # Swollen cells: some lacunae look empty, others keep pale vacuolated cytoplasm.
    vacuoles = np.clip(1 + 0.6 * smooth_noise(rng, shape, 3 / mpp), 0, None)
    maps[EOSIN] += rng.uniform(0.0, 0.15) * lacunae * vacuoles
    maps[MATRIX_H] += rng.uniform(0.0, 0.1) * lacunae * vacuoles
    pyknotic = rng.random(len(centres)) < rng.uniform(0.3, 0.8)
    offsets = rng.normal(0, 0.3, (len(centres), 2)) * radii
    nuclei_um = rng.uniform(1.3, 2.5, (int(pyknotic.sum()), 1)) * np.ones((1, 2))
    cells.add_nuclei(
        maps, rng, (centres + offsets)[pyknotic], nuclei_um, 0.0, mpp, rng.uniform(1.4, 2.0)
    )
    if rng.random() < 0.3:  # vascular invasion from the bone side: red cells in the last lacunae
        depth = centres[:, 0] * sin + centres[:, 1] * cos
        invaded = depth > np.quantile(depth, rng.uniform(0.6, 0.85))
        for centre, radius in zip(centres[invaded], radii[invaded], strict=True):
            count = int(rng.integers(2, 10))
            cells.add_red_cells(
                maps, cells.points_in_ellipse(rng, centre, radius * 0.7, angle, count), mpp
            )
    return maps


def paint_woven_bone(rng, shape, mpp, orientation=None) -> np.ndarray:
    """Irregular pink trabeculae, mottled, with many plump osteocytes, osteoblast rims, marrow."""
    maps = blank_maps(shape)
    scale_px = rng.uniform(18, 45) / mpp
    field = smooth_noise(rng, shape, scale_px)
    fraction = rng.uniform(0.25, 0.9)
    bone = soft_threshold(field, fraction, scale_px / 3)
    mottle = (
        1
        + 0.3 * smooth_noise(rng, shape, 4 / mpp)
        + 0.15 * ridges(smooth_noise(rng, shape, 3 / mpp), 0.2)
    )
    maps[EOSIN] = bone * rng.uniform(0.4, 0.85) * mottle
    maps[MATRIX_H] = bone * rng.uniform(0.0, 0.1)
    if rng.random() < 0.3:  # primary spongiosa: a blue core of calcified cartilage
        core = soft_threshold(field, fraction * rng.uniform(0.3, 0.6), scale_px / 3)
        maps[MATRIX_H] += core * rng.uniform(0.25, 0.5)
        maps[EOSIN] *= 1 - 0.5 * core
    cells.add_marrow(maps, rng, 1.0 - bone, mpp)
    count = int(cells.field_count(shape, mpp, rng.uniform(25, 55) * fraction))
    centres = scatter(rng, shape, count, density=bone)
    radii = rng.uniform([4.0, 2.5], [6.5, 4.5], (len(centres), 2))
    angles = rng.uniform(0, np.pi, len(centres))
    lacunae = ellipses(shape, centres, radii / mpp, angles)
    cells.carve(maps, lacunae, depth=0.85)
    cells.add_nuclei(maps, rng, centres, radii * 0.7, angles, mpp, rng.uniform(0.9, 1.4))
    # Osteoblasts line the surfaces: a thin band just outside the bone.
    rim = soft_threshold(field, min(fraction + 0.08, 0.98), scale_px / 3) * (1 - bone)
    rim_count = int(cells.field_count(shape, mpp, rng.uniform(0, 45)))
    osteoblasts = scatter(rng, shape, rim_count, density=rim)
    blast_radii = rng.uniform([4.0, 3.5], [6.0, 5.0], (len(osteoblasts), 2))
    blast_angles = rng.uniform(0, np.pi, len(osteoblasts))
    cytoplasm = np.clip(ellipses(shape, osteoblasts, blast_radii / mpp, blast_angles), 0, 1)
    maps[MATRIX_H] += 0.3 * cytoplasm
    maps[EOSIN] += 0.1 * cytoplasm
    eccentric = osteoblasts + rng.normal(0, 1.5 / mpp, osteoblasts.shape)
    cells.add_nuclei(maps, rng, eccentric, blast_radii * 0.55, blast_angles, mpp, 1.2)
    if rng.random() < 0.25 and rim.any():  # an osteoclast in its pit
        site = scatter(rng, shape, 1, density=rim)
        if len(site):
            size = rng.uniform([14, 8], [22, 12]) / mpp
            clast = np.clip(ellipses(shape, site, size, rng.uniform(0, np.pi)), 0, 1)
            cells.carve(maps, clast)
            maps[EOSIN] += 0.4 * clast
            count = int(rng.integers(4, 10))
            nuclei = cells.points_in_ellipse(rng, site[0], size * 0.6, 0.0, count)
            cells.add_nuclei(maps, rng, nuclei, [[2.5, 2.0]] * count, 0.0, mpp, 1.2)
    return maps


def paint_lamellar_bone(rng, shape, mpp, orientation=None) -> np.ndarray:
    """Dense pink bone in lamellae (plates, osteons or trabeculae with marrow between), cement
    lines, canals, few flat osteocytes."""
    maps = blank_maps(shape)
    angle = _angle(rng, orientation, spread=0.3)
    along, across = _frame(shape, angle)
    warp = smooth_noise(rng, shape, 60 / mpp) * rng.uniform(3, 12) / mpp
    phase = across + warp
    tangent = np.full(shape, angle, dtype=np.float32)
    osteon = np.zeros(shape, dtype=np.float32)
    centres = np.empty((0, 2), dtype=np.float32)
    if rng.random() < 0.65:  # osteons 150-250 µm across, often cut by the tile edge
        centres = scatter(rng, shape, int(rng.integers(1, 4)), margin_px=60 / mpp)
        radii = rng.uniform(75, 125, len(centres)) / mpp
        yy = np.arange(shape[0], dtype=np.float32)[:, None]
        xx = np.arange(shape[1], dtype=np.float32)[None, :]
        for centre, radius in zip(centres, radii, strict=True):
            distance = np.hypot(yy - centre[0], xx - centre[1]) + 0.5 * warp
            inside = distance < radius
            phase = np.where(inside, distance, phase)
            tangent = np.where(
                inside, np.arctan2(yy - centre[0], xx - centre[1]) + np.pi / 2, tangent
            )
            osteon = np.maximum(osteon, inside)
            maps[MATRIX_H] += rng.uniform(0.4, 0.9) * ridges((distance - radius) * mpp, 0.8)
    bone = None
    if not len(centres) and rng.random() < 0.5:  # mature trabeculae: lamellae follow the surface
        scale_px = rng.uniform(30, 60) / mpp
        field = smooth_noise(rng, shape, scale_px)
        bone = soft_threshold(field, rng.uniform(0.35, 0.85), scale_px / 3)
        phase = field * scale_px / 2.5 + 0.3 * warp
        gradient_y, gradient_x = np.gradient(field)
        tangent = np.arctan2(gradient_y, gradient_x) + np.pi / 2
    lamella_um = rng.uniform(3, 7)
    lamellae = bands(phase, 2 * lamella_um / mpp, duty=0.5, edge=0.4)
    maps[EOSIN] = rng.uniform(0.6, 1.4) * (1 - rng.uniform(0.1, 0.25) * lamellae)
    maps[EOSIN] *= 1 + 0.06 * smooth_noise(rng, shape, 10 / mpp)
    if rng.random() < 0.5:  # reversal lines between generations of interstitial bone
        maps[MATRIX_H] += 0.5 * ridges(smooth_noise(rng, shape, 80 / mpp), 0.03) * (1 - osteon)
    count = int(cells.field_count(shape, mpp, rng.uniform(4, 14)))
    sites = scatter(rng, shape, count, density=bone)
    count = len(sites)
    iy = np.clip(sites[:, 0].astype(int), 0, shape[0] - 1)
    ix = np.clip(sites[:, 1].astype(int), 0, shape[1] - 1)
    radii = rng.uniform([4.0, 1.0], [6.5, 1.8], (count, 2))
    directions = tangent[iy, ix]
    cells.carve(maps, ellipses(shape, sites, radii / mpp, directions), depth=0.8)
    cells.add_nuclei(maps, rng, sites, radii * [0.8, 0.6], directions, mpp, 1.1)
    for centre in centres:  # Haversian canals: clear, with a little loose tissue or a vessel
        radius = rng.uniform(10, 25) / mpp
        canal = np.clip(ellipses(shape, centre[None], (radius, radius * rng.uniform(0.7, 1))), 0, 1)
        cells.carve(maps, canal)
        maps[EOSIN] += rng.uniform(0.0, 0.1) * canal
        count = int(rng.integers(0, 4))
        inner = cells.points_in_ellipse(rng, centre, np.array([radius, radius]) * 0.7, 0.0, count)
        cells.add_nuclei(
            maps, rng, inner, [[3.0, 1.5]] * count, rng.uniform(0, np.pi, count), mpp, 1.1
        )
        if rng.random() < 0.5:
            red = cells.points_in_ellipse(
                rng, centre, np.array([radius, radius]) * 0.6, 0.0, int(rng.integers(1, 6))
            )
            cells.add_red_cells(maps, red, mpp)
    if bone is not None:
        maps *= bone
        cells.add_marrow(maps, rng, 1.0 - bone, mpp)
    return maps


def _fibrous_tissue(rng, shape, mpp) -> np.ndarray:
    """Granulation tissue: wavy collagen bundles, spindle fibroblasts, inflammatory cells."""
    maps = blank_maps(shape)
    angle = _angle(rng, None)
    along, across = _frame(shape, angle)
    wavy = across + smooth_noise(rng, shape, 30 / mpp) * rng.uniform(6, 20) / mpp
    bundles = bands(wavy, rng.uniform(5, 12) / mpp, duty=rng.uniform(0.5, 0.8), edge=0.6)
    # Bundles fray, merge and fade: their contrast wanders across the field.
    bundles *= np.clip(0.6 + 0.6 * smooth_noise(rng, shape, 20 / mpp), 0.0, 1.0)
    maps[EOSIN] = rng.uniform(0.14, 0.28) + rng.uniform(0.12, 0.35) * bundles
    count = int(cells.field_count(shape, mpp, rng.uniform(20, 60)))
    centres = scatter(rng, shape, count, margin_px=8 / mpp)
    radii = np.stack([rng.uniform(5, 8, count), rng.uniform(1.0, 1.8, count)], 1)
    cells.add_nuclei(maps, rng, centres, radii, angle + rng.normal(0, 0.25, count), mpp, 1.2)
    count = int(cells.field_count(shape, mpp, rng.uniform(5, 40)))
    inflammatory = scatter(rng, shape, count)
    cells.add_nuclei(
        maps, rng, inflammatory, rng.uniform(2.0, 3.0, (count, 1)) * [1, 0.9], 0.0, mpp, 1.6
    )
    cells.add_capillaries(maps, rng, mpp, rng.poisson(cells.field_count(shape, mpp, 1.5)))
    return maps


def _haemorrhage(rng, shape, mpp) -> np.ndarray:
    """Densely packed red blood cells in a thin fibrin background."""
    maps = blank_maps(shape)
    maps[EOSIN] = rng.uniform(0.03, 0.12)
    spacing = 2 * cells.RED_CELL_RADIUS_UM * rng.uniform(0.85, 1.2) / mpp
    cells.add_red_cells(maps, jittered_grid(rng, shape, spacing, 0.3, rng.uniform(0, np.pi)), mpp)
    maps[RBC] = np.minimum(maps[RBC], 1.6)
    return maps


def paint_callus_parts(rng, shape, mpp, cartilage: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fracture repair: fibrous granulation tissue with haemorrhage, cartilage and woven bone
    islands, often several side by side in one field. The islands' share varies from field to
    field as it does across a slide's callus: a quarter of fields (soft callus) are granulation
    tissue alone, dense collagen with no clear space, unlike mesenchyme.

    `cartilage` scales the share of the field a cartilage island covers (at most 0.9): the
    cartilage left in a study's callus (`layouts.TissueAmounts`).

    Returns the dye maps and (H, W) uint8 what each pixel is, an index into `CALLUS_PARTS`
    (the tissue an island holds where its soft mask is over half, else 0): what a slide's
    label mask records inside its callus."""
    maps = _fibrous_tissue(rng, shape, mpp)
    parts = np.zeros(shape, dtype=np.uint8)
    elements = [_haemorrhage, paint_hyaline_cartilage, paint_woven_bone]
    chosen = rng.choice(len(elements), size=int(rng.integers(0, 4)), replace=False)
    for index in chosen:
        field, share = smooth_noise(rng, shape, rng.uniform(25, 60) / mpp), rng.uniform(0.15, 0.4)
        share = min(share * cartilage, 0.9) if index == 1 else share
        island = soft_threshold(field, share, 3.0, per_canvas=False)
        maps = maps * (1 - island) + elements[index](rng, shape, mpp) * island
        parts[island > 0.5] = index
    return maps, parts


def paint_callus(rng, shape, mpp, orientation=None) -> np.ndarray:
    """A callus field's dye maps (see `paint_callus_parts`)."""
    return paint_callus_parts(rng, shape, mpp)[0]


PAINTERS: dict[str, Painter] = {
    "mesenchyme": paint_mesenchyme,
    "hyaline_cartilage": paint_hyaline_cartilage,
    "hypertrophic_zone": paint_hypertrophic_zone,
    "woven_bone": paint_woven_bone,
    "lamellar_bone": paint_lamellar_bone,
    "callus": paint_callus,
}
assert tuple(PAINTERS) == CLASSES, "one painter per class, in class order"


def painter(name: str) -> Painter:
    """The painter of class `name`: one of the six here, or an extra tissue of
    `extra_painters` (imported here, as it builds on this module). Raises ValueError for a
    class without one."""
    if name in PAINTERS:
        return PAINTERS[name]
    from ossiclass.synth.extra_painters import EXTRA_PAINTERS, PAINTED_CLASSES

    if name not in EXTRA_PAINTERS:
        raise ValueError(f"no painter for class {name!r}; painted: {', '.join(PAINTED_CLASSES)}")
    return EXTRA_PAINTERS[name]


PAINT_MPP = 1.0
"""Painters work at up to this many µm per pixel (never coarser than half the output's
resolution); `stains.render` resizes to the output. Four times cheaper at 20x, and finer than the
optics' blur that rendering adds anyway."""


def paint_shape(shape: tuple[int, int], mpp: float) -> tuple[tuple[int, int], float]:
    """The canvas a painter works on for an output of `shape` px at `mpp`: (shape, µm/px)."""
    paint_mpp = max(mpp, min(2 * mpp, PAINT_MPP))
    scale = mpp / paint_mpp
    return (max(round(shape[0] * scale), 1), max(round(shape[1] * scale), 1)), paint_mpp


def paint(
    name: str,
    rng: np.random.Generator,
    shape: tuple[int, int],
    mpp: float,
    orientation: float | None = None,
    artefacts: bool = True,
) -> np.ndarray:
    """Paint class `name` (one of the six or an extra tissue with a painter) at `mpp` µm/px:
    (4, h, w) float32 dye maps.

    The maps are at painting resolution (see `paint_shape`); pass `shape` to `stains.render`.
    `artefacts` adds the section artefacts of `cells.add_section_artefacts`.
    """
    return paint_parts(name, rng, shape, mpp, orientation, artefacts)[0]


def paint_parts(
    name: str,
    rng: np.random.Generator,
    shape: tuple[int, int],
    mpp: float,
    orientation: float | None = None,
    artefacts: bool = True,
    cartilage: float = 1.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """`paint`'s dye maps and, for the callus, what each of their pixels is
    (`paint_callus_parts`, at painting resolution, its cartilage islands scaled by
    `cartilage`); None for the other classes."""
    work_shape, paint_mpp = paint_shape(shape, mpp)
    if name == "callus":
        maps, parts = paint_callus_parts(rng, work_shape, paint_mpp, cartilage)
    else:
        maps, parts = painter(name)(rng, work_shape, paint_mpp, orientation), None
    np.maximum(maps, 0.0, out=maps)
    # The fine grain of fixed tissue: no matrix is perfectly smooth under the objective.
    grain = 1 + rng.uniform(0.03, 0.12) * smooth_noise(rng, work_shape, 1.5 / paint_mpp)
    maps[[MATRIX_H, EOSIN]] *= grain
    if artefacts:
        cells.add_section_artefacts(maps, rng, paint_mpp)
    return maps, parts
