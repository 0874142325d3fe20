"""Histomorphometry: the measures a bone study reports, taken from a class map.

A class map is an (H, W) uint8 array of indices into a class list (255 = no tissue) at a
stated µm per pixel: a classified slide's map, or a synthetic slide's label mask (its truth).
Measures are named as the ASBMR nomenclature names them where it has a symbol (Dempster et
al., J Bone Miner Res 2013;28:2-17) and as labs name them where it has none; each measure and
how it is taken is described in docs/histomorphometry.md.

Classes are recognised by machine name: cartilage is `hyaline_cartilage` and
`hypertrophic_zone`, bone is `woven_bone` and `lamellar_bone`, the fibrous tissue of a
fracture callus is `callus`. A measure whose classes are not in the class list is not taken.

Where measures were taken is returned in map pixels: (x, y) from the map's top-left corner,
a pixel's centre at +0.5 (multiply by map µm/px over slide µm/px for slide pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import remove_small_objects

from ossiclass.classes import BACKGROUND_LABEL, TissueClass
from ossiclass.errors import BadInputError
from ossiclass.plate_lines import (
    CentreLine,
    largest_piece,
    places_along,
    principal_axis,
    zones_across,
)

Segment = tuple[tuple[float, float], tuple[float, float]]
"""A line segment ((x0, y0), (x1, y1)) in map pixels."""

CARTILAGE = ("hyaline_cartilage", "hypertrophic_zone")
BONE = ("woven_bone", "lamellar_bone")
CALLUS_TISSUES = ("callus", *CARTILAGE, "woven_bone")
"""What a fracture callus is made of: fibrous tissue, cartilage and woven bone."""
DESCRIPTORS = {"woven_bone": "Wo.B", "lamellar_bone": "Lm.B", "marrow": "Ma", "fat": "Ad"}
"""ASBMR descriptors of the classes that have one (the others' measures have no symbol)."""

CLOSING_UM = 300.0
"""A callus outline spans gaps and bays in its fibrous tissue up to twice this wide, in µm."""
MIN_CALLUS_MM2 = 0.05
"""Less callus than this (mm²) is no callus: a few misread tiles."""
MIN_PLATE_MM2 = 0.02
"""Less hypertrophic zone than this (mm²) is no growth plate."""
BRIDGE_UM = 50.0
"""Pieces of hypertrophic zone this close (µm) are one plate."""
SPACING_UM = 100.0
"""Distance between the places a growth plate's heights are measured, along it, in µm."""


HYPERTROPHIC, RESTING, PLATE = (
    "Hypertrophic zone",
    "Resting and proliferative zone",
    "Growth plate",
)


@dataclass(frozen=True)
class Measure:
    """One measure: its name, ASBMR symbol (None where there is none), value and unit
    ("mm2", "µm", "1" for fractions, "" for counts)."""

    name: str
    symbol: str | None
    value: float
    unit: str

    def to_dict(self) -> dict:
        return {"name": self.name, "symbol": self.symbol, "value": self.value, "unit": self.unit}


@dataclass(frozen=True)
class Measured:
    """Measures and where they were taken: the callus region measured ((H, W) bool, None
    without one) and the normal segments of each growth-plate zone's heights (zone name ->
    segments in map pixels)."""

    measures: list[Measure]
    callus: np.ndarray | None = None
    heights: dict[str, list[Segment]] = field(default_factory=dict)


def measure_slide(
    labels: np.ndarray,
    mpp: float,
    classes: tuple[TissueClass, ...],
    roi: np.ndarray | None = None,
) -> Measured:
    """Every measure a class map holds: its tissue composition always, the callus measures
    where there is a callus, the growth-plate heights where there is a plate.

    Parameters
    ----------
    labels : (H, W) uint8 class indices into `classes`, 255 = no tissue.
    mpp : µm per pixel of `labels`.
    classes : the class list `labels` indexes.
    roi : optional (H, W) bool region to measure in (a drawn annotation, rasterised).
    """
    callus = callus_measures(labels, mpp, classes, roi)
    plate = growth_plate_heights(labels, mpp, classes, roi)
    return Measured(
        measure_map(labels, mpp, classes, roi) + callus.measures + plate.measures,
        callus.callus,
        plate.heights,
    )


def measure_map(
    labels: np.ndarray,
    mpp: float,
    classes: tuple[TissueClass, ...],
    roi: np.ndarray | None = None,
) -> list[Measure]:
    """Tissue composition: tissue area T.Ar (mm²); each class's area (mm²) and fraction of
    tissue; cartilage (Cg.Ar, hyaline + hypertrophic) and bone (B.Ar, woven + lamellar) area
    and fraction. Fractions of an empty map are 0. Arguments as `measure_slide`."""
    labels = _in_region(labels, mpp, classes, roi)
    counts = np.bincount(labels.ravel(), minlength=256)
    tissue = int(counts[:BACKGROUND_LABEL].sum())
    px_mm2 = (mpp / 1000) ** 2
    measures = [Measure("Tissue area", "T.Ar", tissue * px_mm2, "mm2")]
    groups = [(c.display_name, DESCRIPTORS.get(c.name), [c.index]) for c in classes]
    groups += [
        (name, descriptor, indices)
        for name, descriptor, members in (("Cartilage", "Cg", CARTILAGE), ("Bone", "B", BONE))
        if (indices := _indices(classes, members))
    ]
    for name, descriptor, indices in groups:
        pixels = int(counts[indices].sum())
        area = f"{descriptor}.Ar" if descriptor else None
        measures += [
            Measure(f"{name} area", area, pixels * px_mm2, "mm2"),
            Measure(f"{name} fraction", area and f"{area}/T.Ar", _share(pixels, tissue), "1"),
        ]
    return measures


def callus_measures(
    labels: np.ndarray,
    mpp: float,
    classes: tuple[TissueClass, ...],
    roi: np.ndarray | None = None,
    closing_um: float = CLOSING_UM,
    min_area_mm2: float = MIN_CALLUS_MM2,
) -> Measured:
    """A fracture callus: its area Cl.Ar (mm²) and the fractions of it that are cartilage
    (hyaline + hypertrophic, Cg.Ar/Cl.Ar), woven bone (Wo.B.Ar/Cl.Ar) and fibrous tissue (the
    callus class, Fb.Ar/Cl.Ar); the three add up to 1.

    The callus region is its callus tissues (fibrous tissue, cartilage, woven bone) within the
    region's outline: `roi` where given (a callus outline drawn by hand), else the outline of
    the map's fibrous callus, closed over gaps and bays up to 2 x `closing_um` wide and filled,
    each piece of it at least `min_area_mm2`. Old cortical (lamellar) bone and tissue outside
    the callus family are never part of it. No measures (and `callus` None) with less than
    `min_area_mm2` of fibrous callus in the region. Other arguments as `measure_slide`.
    """
    labels = _in_region(labels, mpp, classes, roi)
    fibrous_index = _indices(classes, ("callus",))
    if not fibrous_index:
        return Measured([])
    fibrous = labels == fibrous_index[0]
    px_mm2 = (mpp / 1000) ** 2
    min_px = min_area_mm2 / px_mm2
    if fibrous.sum() < min_px:
        return Measured([])
    outline = labels != BACKGROUND_LABEL if roi is not None else _outline(fibrous, closing_um / mpp)
    callus = outline & np.isin(labels, _indices(classes, CALLUS_TISSUES))
    region = remove_small_objects(callus, max_size=math.ceil(min_px) - 1)  # keeps >= min_px
    if (region & fibrous).sum() < min_px:
        return Measured([])
    total = int(region.sum())
    parts = (
        ("Cartilage", "Cg", CARTILAGE),
        ("Woven bone", "Wo.B", ("woven_bone",)),
        ("Fibrous tissue", "Fb", ("callus",)),
    )
    measures = [Measure("Total callus area", "Cl.Ar", total * px_mm2, "mm2")]
    for name, descriptor, members in parts:
        pixels = int((region & np.isin(labels, _indices(classes, members))).sum())
        measures.append(
            Measure(f"{name} fraction of callus", f"{descriptor}.Ar/Cl.Ar", pixels / total, "1")
        )
    return Measured(measures, callus=region)


def growth_plate_heights(
    labels: np.ndarray,
    mpp: float,
    classes: tuple[TissueClass, ...],
    roi: np.ndarray | None = None,
    spacing_um: float = SPACING_UM,
    min_area_mm2: float = MIN_PLATE_MM2,
) -> Measured:
    """Heights of a growth plate's zones, measured normal to the plate along its length.

    The plate is the largest piece of hypertrophic zone (pieces within `BRIDGE_UM` joined). Its
    direction is the principal axis of its pixels, and its centre line the mean of its pixels
    across that axis, smoothed over twice the plate's height; every `spacing_um` along it (its
    ends, a `plate_lines.TRIM` share of its length each, left out), a line normal to the centre
    line crosses the zones. On each line: the hypertrophic zone's height is the run of
    hypertrophic zone through the plate; the resting and proliferative zone's height is the run
    of hyaline cartilage that touches that run, on the side of the plate where most lines find
    it (so articular cartilage and an ossification centre, beyond other tissue, never count);
    the growth plate's height is their sum, on lines where both were measured.

    Returns mean, SD (µm) and the number of lines measured for each zone, and each zone's
    segments; no measures where the hypertrophic zone covers less than `min_area_mm2` or is not
    a band (its length under three times its height). Other arguments as `measure_slide`.
    """
    labels = _in_region(labels, mpp, classes, roi)
    hypertrophic = _indices(classes, ("hypertrophic_zone",))
    hyaline = _indices(classes, ("hyaline_cartilage",))
    if not hypertrophic or not hyaline:
        return Measured([])
    plate = largest_piece(labels == hypertrophic[0], BRIDGE_UM / mpp)
    if plate.sum() * (mpp / 1000) ** 2 < min_area_mm2:
        return Measured([])
    rows, cols = np.nonzero(plate)
    points = np.column_stack([cols + 0.5, rows + 0.5])
    axis = principal_axis(points)
    along = (points - points.mean(axis=0)) @ axis
    length = float(np.ptp(along)) + 1.0
    thickness = len(points) / length
    if length < 3 * thickness:
        return Measured([])
    centre_line = CentreLine(points, axis, along, thickness)
    lines = []
    for place in places_along(along.min(), along.max(), spacing_um / mpp):
        centre, direction = centre_line.at(place)
        line = zones_across(labels, centre, direction, hypertrophic[0], hyaline[0], thickness)
        if line is not None:
            lines.append(line)
    if not lines:
        return Measured([])
    after = sum(line.after > 0 for line in lines) >= sum(line.before > 0 for line in lines)
    heights: dict[str, list[float]] = {HYPERTROPHIC: [], RESTING: [], PLATE: []}
    segments: dict[str, list[Segment]] = {HYPERTROPHIC: [], RESTING: []}
    for line in lines:
        run = line.stop - line.start
        heights[HYPERTROPHIC].append(run * mpp)
        segments[HYPERTROPHIC].append((line.point(line.start), line.point(line.stop)))
        resting = line.after if after else line.before
        if resting > 0:
            heights[RESTING].append(resting * mpp)
            heights[PLATE].append((run + resting) * mpp)
            edge = line.stop if after else line.start
            far = edge + resting if after else edge - resting
            segments[RESTING].append((line.point(edge), line.point(far)))
    measures = [m for zone, values in heights.items() for m in _summary(zone, values)]
    return Measured(measures, heights={k: v for k, v in segments.items() if v})


def mode_downsample(labels: np.ndarray, factor: int) -> np.ndarray:
    """A class map `factor` times coarser: each block of factor x factor pixels gets its most
    frequent label (ties to the lower label; tissue before 255). Edges are padded with 255.

    (H, W) uint8 -> (ceil(H / factor), ceil(W / factor)) uint8.
    """
    if factor == 1:
        return labels
    height, width = -(-labels.shape[0] // factor), -(-labels.shape[1] // factor)
    pad = ((0, height * factor - labels.shape[0]), (0, width * factor - labels.shape[1]))
    if any(after for _, after in pad):
        labels = np.pad(labels, pad, constant_values=BACKGROUND_LABEL)
    best = np.full((height, width), BACKGROUND_LABEL, dtype=np.uint8)
    best_count = np.zeros((height, width), dtype=np.int32)
    for label in np.flatnonzero(np.bincount(labels.ravel(), minlength=256)):
        count = (labels == label).reshape(height, factor, width, factor).sum(axis=(1, 3))
        better = count > best_count
        best[better], best_count[better] = label, count[better]
    return best


def _in_region(
    labels: np.ndarray, mpp: float, classes: tuple[TissueClass, ...], roi: np.ndarray | None
) -> np.ndarray:
    """`labels` checked, with 255 outside `roi`."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise BadInputError(
            f"expected an (H, W) uint8 class map, got shape {labels.shape} of {labels.dtype}"
        )
    if not mpp > 0:
        raise BadInputError(f"a class map's µm per pixel must be positive, got {mpp}")
    highest = int(labels[labels != BACKGROUND_LABEL].max(initial=0))
    if labels.size and highest >= len(classes) and highest != BACKGROUND_LABEL:
        raise BadInputError(f"class index {highest} in the map, beyond its {len(classes)} classes")
    if roi is None:
        return labels
    roi = np.asarray(roi)
    if roi.shape != labels.shape or roi.dtype != bool:
        raise BadInputError(
            f"expected a region of interest of shape {labels.shape} (bool), got {roi.shape} "
            f"of {roi.dtype}"
        )
    return np.where(roi, labels, np.uint8(BACKGROUND_LABEL))


def _indices(classes: tuple[TissueClass, ...], names: tuple[str, ...]) -> list[int]:
    return [c.index for c in classes if c.name in names]


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _summary(zone: str, values: list[float]) -> list[Measure]:
    """Mean, SD (ddof 1; 0 for one value) and number of a zone's heights, none without any."""
    if not values:
        return []
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return [
        Measure(f"{zone} height", None, float(np.mean(values)), "µm"),
        Measure(f"{zone} height SD", None, spread, "µm"),
        Measure(f"{zone} height n", None, float(len(values)), ""),
    ]


def _outline(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """`mask` closed by a disc of `radius_px` (distance transforms: any radius, one cost) and
    its holes filled. The image edge does not erode."""
    grown = ndi.distance_transform_edt(~mask) <= radius_px
    return ndi.binary_fill_holes(ndi.distance_transform_edt(grown) > radius_px)
