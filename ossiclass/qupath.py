"""QuPath's GeoJSON, both ways: annotations a lab drew (File > Export objects as GeoJSON) read
as class-named shapely geometries, and features written the way QuPath writes them.

QuPath writes a FeatureCollection, a bare list of features or a single Feature, depending on
its version and options. Coordinates are level-0 pixels of the image (x right, y down). A
feature's class is `properties.classification.name`, its colour `.color` ([r, g, b]) or, from
QuPath 0.2, `.colorRGB` (a packed Java int). Unclassified objects and classes named "Ignore..."
(QuPath's `Ignore*`) are no training labels; nor are objects other than annotations (detections,
cells, tiles).
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from ossiclass.classes import TissueClass
from ossiclass.errors import BadInputError

OBJECT_TYPES = ("annotation", "detection", "tile")
"""The QuPath `objectType`s an object may be written as (ossiclass writes tiles and
annotations)."""
AREA_TYPES = ("Polygon", "MultiPolygon")
"""The geometries of QuPath's area annotations: the only ones that label tiles."""
REPAIR_TOLERANCE = 0.01
"""A self-intersecting polygon is repaired when that changes its area by at most this share."""
IGNORE_PREFIX = "Ignore"


@dataclass(frozen=True)
class Annotation:
    """One classified area annotation.

    name : the class name as QuPath wrote it ("Cartilage", "Tumor: Positive").
    colour : its RGB colour, None where the file gives none.
    geometry : a valid shapely Polygon or MultiPolygon (holes kept), in level-0 pixels.
    id : the feature's id (QuPath writes a UUID), else "#<index in the file>".
    """

    name: str
    colour: tuple[int, int, int] | None
    geometry: BaseGeometry
    id: str


@dataclass(frozen=True)
class AnnotationFile:
    """What `read_annotations` found in one file: its annotations, the objects skipped (reason
    -> count) and warnings for the user (polygons repaired)."""

    path: Path
    annotations: list[Annotation]
    skipped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


def read_annotations(path: str | Path, classified_only: bool = True) -> AnnotationFile:
    """Read a QuPath GeoJSON export. Anything QuPath would not have written for a classified
    area, or cannot be used, is a `BadInputError` whose message starts with the file name.
    With `classified_only` False, unclassified annotations are kept too (named "")."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # nested deep
        raise BadInputError(f"{path}: not JSON ({_one_line(error)})") from None
    features = _features(content, path)
    if not features:
        raise BadInputError(f"{path}: no features (an empty export?)")
    result = AnnotationFile(path, [])
    for index, item in enumerate(features):
        if not isinstance(item, dict) or item.get("type") != "Feature":
            raise BadInputError(f"{path}: item {index} is not a GeoJSON Feature")
        reference = f"feature {index}" + (f" (id {item['id']})" if item.get("id") else "")
        properties = item.get("properties") or {}
        if not isinstance(properties, dict):
            raise BadInputError(f"{path}: {reference}: its properties are not an object")
        kind = properties.get("objectType", properties.get("object_type", "annotation"))
        name = _class_name(properties.get("classification"))
        if kind != "annotation":
            result.skipped[f"{kind} objects"] += 1
            continue
        if not name and classified_only:
            result.skipped["unclassified"] += 1
            continue
        if name and name.startswith(IGNORE_PREFIX):
            result.skipped[name] += 1
            continue
        geometry = _area(item.get("geometry"), f"{path}: {reference}", result.warnings)
        colour = _colour(properties.get("classification") or {})
        result.annotations.append(
            Annotation(name or "", colour, geometry, str(item.get("id") or f"#{index}"))
        )
    return result


@dataclass(frozen=True)
class Region:
    """A region a user outlined in QuPath (a callus, a growth plate) to measure in: the file
    and the union of its area annotations, classified or not (level-0 pixels)."""

    path: Path
    geometry: BaseGeometry


def read_region(path: str | Path) -> Region:
    """The `Region` of a QuPath GeoJSON export; a file without an area is a `BadInputError`."""
    annotations = read_annotations(path, classified_only=False).annotations
    if not annotations:
        raise BadInputError(f"{path}: no area annotation to measure in")
    geometry = shapely.union_all([annotation.geometry for annotation in annotations])
    return Region(Path(path).resolve(), geometry)


def _features(content, path: Path) -> list:
    """The features of a FeatureCollection, a bare list of them or a single Feature."""
    if isinstance(content, list):
        return content
    if isinstance(content, dict) and content.get("type") == "FeatureCollection":
        features = content.get("features")
        if not isinstance(features, list):
            raise BadInputError(f"{path}: a FeatureCollection without a list of features")
        return features
    if isinstance(content, dict) and content.get("type") == "Feature":
        return [content]
    found = content.get("type") if isinstance(content, dict) else type(content).__name__
    raise BadInputError(
        f"{path}: not a QuPath export (a FeatureCollection, a Feature or a list of them); "
        f"found {found!r}"
    )


def _class_name(classification) -> str | None:
    """The class name of a `classification` (`name`, or QuPath 0.5's `names` of a derived
    class joined as QuPath shows them), None where unclassified."""
    if not isinstance(classification, dict):
        return None
    name = classification.get("name")
    if not name and isinstance(classification.get("names"), list):
        name = ": ".join(str(part) for part in classification["names"])
    name = str(name or "").strip()
    return name or None


def _colour(classification: dict) -> tuple[int, int, int] | None:
    """[r, g, b] from `color`, or from `colorRGB`, a packed (A)RGB Java int; None where neither
    is given or either is malformed."""
    colour = classification.get("color")
    if (
        isinstance(colour, list)
        and len(colour) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in colour)
    ):
        return tuple(colour)
    packed = classification.get("colorRGB")
    if isinstance(packed, int) and not isinstance(packed, bool):
        return ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)
    return None


def _area(geometry, where: str, warnings: list[str]) -> BaseGeometry:
    """A GeoJSON geometry as a valid shapely (Multi)Polygon: repaired where that keeps its area
    within `REPAIR_TOLERANCE` (saying so in `warnings`), else a `BadInputError` starting
    `where`."""
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if kind not in AREA_TYPES:
        what = f"a {kind}" if kind else "no geometry"
        raise BadInputError(
            f"{where}: {what}, not a Polygon or MultiPolygon (only area annotations are read)"
        )
    try:
        with np.errstate(invalid="ignore"):  # NaN coordinates: refused below, in one line
            area = shape(geometry)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError,
            shapely.errors.ShapelyError) as error:  # fmt: skip
        raise BadInputError(f"{where}: malformed {kind} coordinates ({_one_line(error)})") from None
    if area.is_empty or not np.isfinite(shapely.get_coordinates(area)).all():
        raise BadInputError(f"{where}: an empty {kind} or one with coordinates that are no numbers")
    if area.is_valid:
        return area
    reason = shapely.is_valid_reason(area)
    repaired = _polygonal(shapely.make_valid(area))
    change = abs(repaired.area - area.area) / area.area if area.area > 0 else math.inf
    if repaired.is_empty or change > REPAIR_TOLERANCE:
        raise BadInputError(
            f"{where}: an invalid {kind} ({reason}); repairing it would change its area from "
            f"{area.area:.0f} to {repaired.area:.0f} px², so it is refused: redraw it in QuPath"
        )
    warnings.append(f"{where}: repaired an invalid {kind} ({reason}; area changed {change:.2%})")
    return repaired


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The polygons of a geometry (what `make_valid` returns can hold lines and points)."""
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, Polygon | MultiPolygon)]
    return shapely.union_all(parts) if parts else Polygon()


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:160] or type(error).__name__


def feature(
    geometry: BaseGeometry,
    name: str,
    colour: Sequence[int],
    object_type: str,
    measurements: dict[str, float] | None = None,
    id: str | None = None,
    extra: dict | None = None,
) -> dict:
    """A GeoJSON Feature as QuPath writes one.

    Parameters
    ----------
    geometry : shapely geometry in level-0 pixels.
    name, colour : the class's name as QuPath shows it and its (r, g, b) colour, 0-255.
    object_type : "annotation", "detection" or "tile".
    measurements : name -> finite number, shown in QuPath's measurement table.
    id : the feature's id; a new random UUID where None (QuPath's own objects have one).
    extra : more properties, kept beside QuPath's (e.g. ossiclass's machine class name).
    """
    if object_type not in OBJECT_TYPES:
        raise ValueError(
            f"object_type must be one of {', '.join(OBJECT_TYPES)}, got {object_type!r}"
        )
    properties = {
        "objectType": object_type,
        "classification": {"name": name, "color": [int(v) for v in colour]},
        **(extra or {}),
    }
    if measurements:
        values = {str(key): float(value) for key, value in measurements.items()}
        wrong = [key for key, value in values.items() if not math.isfinite(value)]
        if wrong:
            raise ValueError(f"measurements must be finite numbers: {', '.join(wrong)}")
        properties["measurements"] = values
    return {
        "type": "Feature",
        "id": id or str(uuid.uuid4()),
        "geometry": json.loads(shapely.to_geojson(geometry)),
        "properties": properties,
    }


def feature_collection(features: Iterable[dict]) -> dict:
    """A FeatureCollection of features (QuPath: File > Import objects, or drag and drop)."""
    return {"type": "FeatureCollection", "features": list(features)}


def merged_regions(
    boxes: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[TissueClass],
    mpp: float | None = None,
    cells: np.ndarray | None = None,
) -> list[dict]:
    """One annotation feature per class: the union of its tiles' boxes, a Polygon or
    MultiPolygon with holes, named and coloured as the class is displayed, with its count of
    tiles (or of cells) as a measurement.

    Parameters
    ----------
    boxes : (N, 4) level-0 pixels (minx, miny, width, height) of tiles that do not overlap
        (where tiles overlap, give each its own cell of the grid).
    labels : (N,) each tile's class machine name, one of `classes`.
    classes : the class list, in the order the features are written.
    mpp : µm per level-0 pixel; where given, each region measures its area in mm².
    cells : (N,) where the boxes are runs of a class map's cells, how many cells each merges;
        each region then counts `cells` rather than `tiles`.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels)
    if len(labels) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    known = {c.name for c in classes}
    unknown = sorted(set(labels.tolist()) - known)
    if unknown:
        raise ValueError(f"labels not in the class list: {', '.join(unknown)}")
    x, y, width, height = boxes.T
    tiles = shapely.box(x, y, x + width, y + height)
    features = []
    for tissue in classes:
        mine = labels == tissue.name
        if not mine.any():
            continue
        region = shapely.union_all(tiles[mine])
        measurements = (
            {"tiles": int(mine.sum())} if cells is None else {"cells": int(np.sum(cells[mine]))}
        )
        if mpp is not None:
            measurements["area_mm2"] = region.area * mpp * mpp / 1e6
        features.append(
            feature(region, tissue.display_name, tissue.colour, "annotation", measurements)
        )
    return features
