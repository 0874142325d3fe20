"""QuPath annotations drawn from a synthetic slide's label mask, the way a person outlines a few
regions of each tissue: blobs of 150-600 µm placed well inside their class, traced, simplified
and kept clear of the class's boundary.

The mask is worked at about `WORK_MPP` µm per pixel (it is one byte per slide pixel); outlines
come back in level-0 pixels, as QuPath writes them.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from scipy import ndimage as ndi
from shapely.geometry import Polygon
from skimage.measure import approximate_polygon, find_contours

from ossiclass.classes import CLASSES, TISSUE_CLASSES
from ossiclass.errors import BadInputError
from ossiclass.files import check_output, write_text_atomic
from ossiclass.qupath import feature, feature_collection
from ossiclass.slides import image_mpp
from ossiclass.synth.slides import read_label_mask

DIAMETER_UM = (150.0, 600.0)
"""Range of a region's size across, in µm: what a person outlines at a glance."""
MARGIN_UM = 15.0
"""Outlines keep at least this far inside their class (at least two working pixels)."""
MIN_DIAMETER_PX = 5
"""The smallest region drawn, in working pixels across (measured: at 3 a few traced to nothing)."""
WORK_MPP = 2.0
"""µm per pixel at which the mask is worked."""
MAX_WORK_PX = 4096
"""The working mask's longer side at most, in pixels (larger slides are worked coarser)."""
ROUGHNESS = 0.12
"""Largest amplitude of each of a blob outline's low harmonics, as a share of its radius."""
CENTRE_DEPTH = 0.6
"""A region's centre lies at least this share of its radius inside the class (past the
margin): most of it falls inside, and what does not is cut off."""
HARMONICS = np.arange(2, 5)
"""The harmonics that make a blob's outline wobble (2: oval, 3 and 4: lobes)."""


@dataclass(frozen=True)
class DrawnAnnotations:
    """What `write_annotations` wrote: the GeoJSON file, regions per class display name, and
    notes (classes with room for fewer regions than asked, or absent)."""

    path: Path
    regions: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def draw_annotations(
    labels: np.ndarray,
    mpp: float,
    regions: int,
    seed: int,
    classes: Sequence[str] | None = None,
    diameter_um: tuple[float, float] = DIAMETER_UM,
) -> tuple[list[dict], list[str]]:
    """Outline up to `regions` regions of each class on a label mask.

    Parameters
    ----------
    labels : (H, W) uint8 class index per level-0 pixel (of `TISSUE_CLASSES`; 255 background).
    mpp : µm per level-0 pixel.
    regions : regions per class.
    seed : the same seed draws the same outlines (and feature ids).
    classes : machine names to outline (default: every class on the mask).
    diameter_um : (smallest, largest) region size across, in µm; the smallest at least
        `MIN_DIAMETER_PX` working pixels.

    Returns
    -------
    QuPath annotation features (Polygon, level-0 pixels, the class's display name and colour)
    and notes for classes with room for fewer regions than asked.
    """
    if regions < 1 or not 0 < diameter_um[0] <= diameter_um[1]:
        raise BadInputError(
            f"regions must be positive and 0 < smallest <= largest diameter, got {regions} and "
            f"{diameter_um[0]:g}-{diameter_um[1]:g} µm"
        )
    unknown = sorted(set(classes or ()) - set(CLASSES))
    if unknown:
        raise BadInputError(f"unknown classes {', '.join(unknown)}; ours are {', '.join(CLASSES)}")
    factor = max(round(WORK_MPP / mpp), math.ceil(max(labels.shape) / MAX_WORK_PX), 1)
    work = labels[factor // 2 :: factor, factor // 2 :: factor]
    work_mpp = mpp * factor
    if diameter_um[0] < MIN_DIAMETER_PX * work_mpp:
        raise BadInputError(
            f"regions {diameter_um[0]:g} µm across are too small to draw on this slide: at least "
            f"{MIN_DIAMETER_PX * work_mpp:g} µm ({MIN_DIAMETER_PX} px at the {work_mpp:g} µm/px "
            "it is outlined at)"
        )
    margin_px = max(MARGIN_UM / work_mpp, 2.0)
    rng = np.random.default_rng(seed)
    features, notes = [], []
    for tissue in TISSUE_CLASSES:
        if classes and tissue.name not in classes:
            continue
        region = work == tissue.index
        if not region.any():
            if classes:
                notes.append(f"{tissue.display_name}: not on this slide")
            continue
        radii_px = [d / 2 / work_mpp for d in diameter_um]
        blobs = _blobs(region, regions, radii_px, margin_px, rng)
        for top, left, blob in blobs:
            outline = _outline(top, left, blob, factor)
            identifier = str(uuid.UUID(bytes=rng.bytes(16), version=4))
            features.append(
                feature(outline, tissue.display_name, tissue.colour, "annotation", id=identifier)
            )
        if len(blobs) < regions:
            notes.append(
                f"{tissue.display_name}: room for {len(blobs)} of {regions} regions of at least "
                f"{diameter_um[0]:g} µm across"
            )
    return features, notes


def _blobs(
    region: np.ndarray, count: int, radii_px: list[float], margin_px: float,
    rng: np.random.Generator,
) -> list[tuple[int, int, np.ndarray]]:  # fmt: skip
    """Up to `count` disjoint blobs inside `region`, each at least `margin_px` from its edge,
    as (top, left, (h, w) bool mask of its window); radii drawn from `radii_px` (smallest,
    largest), shrunk to fit."""
    depth = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]  # the slide's edge bounds
    inside = depth > margin_px
    used = np.zeros_like(region)
    ys, xs = np.nonzero(inside)
    depths = depth[ys, xs] - margin_px
    free = np.ones(len(ys), bool)
    blobs = []
    for _ in range(3 * count):  # a blob cut to nothing by earlier ones is drawn again
        if len(blobs) == count or not free.any():
            break
        need = min(CENTRE_DEPTH * rng.uniform(*radii_px), depths[free].max())
        radius = need / CENTRE_DEPTH
        if radius < radii_px[0]:
            break  # no room left for the smallest region
        candidates = np.flatnonzero(free & (depths >= need))
        pick = candidates[rng.integers(len(candidates))]
        cy, cx = int(ys[pick]), int(xs[pick])
        reach = math.ceil(radius * (1 + ROUGHNESS * len(HARMONICS)) + margin_px) + 1
        window = np.s_[max(cy - reach, 0) : cy + reach + 1, max(cx - reach, 0) : cx + reach + 1]
        top, left = window[0].start, window[1].start
        blob = _blob(inside[window].shape, cy - top, cx - left, radius, rng)
        blob = _largest_component(blob & inside[window] & ~used[window])
        free &= (ys - cy) ** 2 + (xs - cx) ** 2 > (radius + margin_px) ** 2
        if blob.sum() < 0.25 * math.pi * radii_px[0] ** 2:
            continue
        used[window] |= ndi.binary_dilation(blob, iterations=max(round(margin_px), 1))
        blobs.append((top, left, blob))
    return blobs


def _blob(shape: tuple[int, int], cy: int, cx: int, radius: float, rng) -> np.ndarray:
    """(h, w) bool: a round blob centred at (cy, cx) whose outline wobbles with random low
    harmonics."""
    amplitudes = rng.uniform(0, ROUGHNESS, len(HARMONICS))[:, None, None]
    phases = rng.uniform(0, 2 * math.pi, len(HARMONICS))[:, None, None]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + (amplitudes * np.cos(HARMONICS[:, None, None] * angle + phases)).sum(axis=0)
    return np.hypot(yy - cy, xx - cx) <= radius * wobble


def _largest_component(mask: np.ndarray) -> np.ndarray:
    components, count = ndi.label(mask)
    if count <= 1:
        return mask
    return components == 1 + int(np.bincount(components.ravel())[1:].argmax())


def _outline(top: int, left: int, blob: np.ndarray, factor: int) -> Polygon:
    """A blob's outline (holes kept) traced and simplified to about a working pixel, in level-0
    pixels: (top, left) is its window's place in the working mask, each working pixel `factor`
    level-0 pixels."""
    shape = Polygon()
    for contour in find_contours(np.pad(blob, 1).astype(np.float32), 0.5):
        ring = approximate_polygon(contour, tolerance=0.7)
        if len(ring) < 4:
            continue
        xy = (np.column_stack([ring[:, 1] + left, ring[:, 0] + top]) - 0.5) * factor
        shape = shape.symmetric_difference(shapely.make_valid(Polygon(xy)))
    parts = [p for p in shapely.get_parts(shapely.make_valid(shape)) if isinstance(p, Polygon)]
    return max(parts, key=lambda p: p.area)


def write_annotations(
    slide: str | Path,
    out: str | Path,
    regions: int,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    diameter_um: tuple[float, float] = DIAMETER_UM,
) -> DrawnAnnotations:
    """Draw annotations on a synthetic slide (`SLIDE.labels.png` beside it, its µm/px in its
    TIFF tags) and write them to `out` as a QuPath GeoJSON FeatureCollection."""
    slide, out = Path(slide), Path(out)
    masks = slide.with_suffix(".labels.png")
    if not slide.is_file() or not masks.is_file():
        raise BadInputError(f"{slide}: a synthetic slide with {masks.name} beside it is needed")
    check_output(out)
    mpp = image_mpp(slide)
    if mpp is None:
        raise BadInputError(f"{slide}: records no µm per pixel (not a synthetic slide?)")
    features, notes = draw_annotations(
        read_label_mask(masks), mpp, regions, seed, classes, diameter_um
    )
    if not features:
        raise BadInputError(f"{slide}: no class has room for a region {diameter_um[0]:g} µm across")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(feature_collection(features)) + "\n")
    drawn = Counter(f["properties"]["classification"]["name"] for f in features)
    return DrawnAnnotations(out, drawn, notes)
