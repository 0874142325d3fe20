"""The geometry of a growth plate's heights: the plate as the largest piece of a class, its
centre line, and the lines normal to it along which the zones are crossed, in map pixels ((x, y)
from the map's top-left corner, a pixel's centre at +0.5). `histomorphometry` takes the
heights from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ossiclass.classes import BACKGROUND_LABEL

TRIM = 0.1
"""Share of the plate's length left unmeasured at each end, where the zones end obliquely."""
STEP_PX = 0.25
"""Sampling step along a normal line, in map pixels."""


def largest_piece(mask: np.ndarray, bridge_px: float) -> np.ndarray:
    """The pixels of `mask` in its largest piece, pieces `bridge_px` apart counted as one."""
    if not mask.any():
        return mask
    pieces, _ = ndi.label(ndi.distance_transform_edt(~mask) <= bridge_px / 2)
    pieces[~mask] = 0
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    return pieces == sizes.argmax()


def principal_axis(points: np.ndarray) -> np.ndarray:
    """Unit vector (x, y) along which (N, 2) points spread most."""
    _, vectors = np.linalg.eigh(np.cov(points, rowvar=False))
    return vectors[:, -1]


def places_along(first: float, last: float, spacing: float) -> np.ndarray:
    """Positions every `spacing` along [first, last] less `TRIM` of it at each end, centred."""
    margin = TRIM * (last - first)
    span = last - first - 2 * margin
    count = int(span // spacing) + 1
    return first + margin + (span - (count - 1) * spacing) / 2 + spacing * np.arange(count)


@dataclass(frozen=True)
class Across:
    """The zones on one line normal to the plate: the line (centre and unit normal, (x, y) in
    map pixels), the hypertrophic run from `start` to `stop` (map pixels along the normal from
    the centre), and the lengths of hyaline cartilage touching it before `start` and after
    `stop` (map pixels, 0 where none)."""

    centre: np.ndarray
    normal: np.ndarray
    start: float
    stop: float
    before: float
    after: float

    def point(self, position: float) -> tuple[float, float]:
        x, y = self.centre + position * self.normal
        return float(x), float(y)


class CentreLine:
    """The plate's centre line: the mean offset of its pixels across the principal `axis` at
    each map pixel along it, smoothed by a Gaussian of twice the plate's `thickness` (so that
    the steps of a tile map do not tilt it), gaps bridged linearly."""

    def __init__(self, points: np.ndarray, axis: np.ndarray, along: np.ndarray, thickness: float):
        self.origin, self.axis = points.mean(axis=0), axis
        self.normal = np.array([-axis[1], axis[0]])
        self.start = along.min()
        bins = np.floor(along - self.start).astype(np.intp)
        counts = np.bincount(bins)
        sums = np.bincount(bins, weights=(points - self.origin) @ self.normal)
        filled = np.flatnonzero(counts)
        offsets = np.interp(np.arange(len(counts)), filled, sums[filled] / counts[filled])
        self.offsets = ndi.gaussian_filter1d(offsets, max(2 * thickness, 1.0), mode="nearest")
        self.slopes = np.gradient(self.offsets) if len(self.offsets) > 1 else np.zeros(1)

    def at(self, place: float) -> tuple[np.ndarray, np.ndarray]:
        """The centre line's point and unit direction (x, y) at `place` along the axis."""
        index = np.arange(len(self.offsets))
        offset = np.interp(place - self.start - 0.5, index, self.offsets)
        slope = np.interp(place - self.start - 0.5, index, self.slopes)
        direction = self.axis + slope * self.normal
        centre = self.origin + place * self.axis + offset * self.normal
        return centre, direction / np.hypot(*direction)


def zones_across(
    labels: np.ndarray,
    centre: np.ndarray,
    direction: np.ndarray,
    hypertrophic: int,
    hyaline: int,
    thickness: float,
) -> Across | None:
    """The zones along the normal to the plate's `direction` through `centre` ((x, y) in map
    pixels); None where the line meets no hypertrophic zone within `thickness` of it."""
    normal = np.array([-direction[1], direction[0]])
    reach = int(np.hypot(*labels.shape) / STEP_PX)
    values = _sample(labels, centre + STEP_PX * np.arange(-reach, reach + 1)[:, None] * normal)
    inside = np.flatnonzero(values == hypertrophic)
    if not len(inside):
        return None
    nearest = inside[np.abs(inside - reach).argmin()]
    if abs(nearest - reach) * STEP_PX > thickness:
        return None
    first, stop = _run(values, nearest)
    before = first - _run(values, first - 1)[0] if values[first - 1] == hyaline else 0
    after = _run(values, stop)[1] - stop if values[stop] == hyaline else 0
    position = STEP_PX * (np.array([first, stop]) - reach - 0.5)
    return Across(centre, normal, *map(float, position), before * STEP_PX, after * STEP_PX)


def _run(values: np.ndarray, index: int) -> tuple[int, int]:
    """The run of equal values through `index`: (its first index, the index after its last)."""
    value = values[index]
    later = np.flatnonzero(values[index:] != value)
    earlier = np.flatnonzero(values[:index] != value)
    return (
        int(earlier[-1]) + 1 if len(earlier) else 0,
        index + int(later[0]) if len(later) else len(values),
    )


def _sample(labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Labels at (N, 2) points (x, y) in map pixels, nearest pixel; 255 off the map."""
    cols, rows = np.floor(points[:, 0]).astype(np.intp), np.floor(points[:, 1]).astype(np.intp)
    inside = (rows >= 0) & (rows < labels.shape[0]) & (cols >= 0) & (cols < labels.shape[1])
    values = np.full(len(points), BACKGROUND_LABEL, dtype=np.uint8)
    values[inside] = labels[rows[inside], cols[inside]]
    return values
