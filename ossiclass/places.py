"""Where a slide's measures were taken, for QuPath and for people.

`places` turns what `histomorphometry.measure_slide` returns into QuPath annotations in level-0
pixels (`measures.geojson`): the region a user gave, the callus region measured (an area, with
its measures) and each height of a growth-plate zone (a line, with its length). `draw_places`
draws them over the tissue map (`measures.png`, shown in the slide's report).
"""

from __future__ import annotations

import numpy as np
import shapely
from PIL import Image, ImageDraw
from shapely.geometry import LineString

from ossiclass import qupath
from ossiclass.classmap import ClassMap
from ossiclass.histomorphometry import HYPERTROPHIC, RESTING, Measured

REGION = ("Region measured", (255, 221, 0))
CALLUS = ("Callus measured", (0, 0, 0))
HEIGHT_COLOURS = {HYPERTROPHIC: (0, 0, 0), RESTING: (255, 255, 255)}
"""Names and colours of the places, chosen to show over every class's colour."""
LENGTH = "Length µm"


def places(measured: Measured, classmap: ClassMap, region=None) -> dict:
    """A FeatureCollection of where `measured` (taken from `classmap`) was taken: the
    user's `region` (shapely, level-0 pixels; None: the whole map), the callus region with its
    Cl.Ar and fractions as measurements, and a line per height with its length (µm)."""
    features = []
    if region is not None:
        features.append(qupath.feature(region, *REGION, "annotation"))
    if measured.callus is not None:
        values = {m.symbol: m.value for m in measured.measures if _of_callus(m.symbol)}
        outline = _cells(measured.callus, classmap.cell_px)
        features.append(qupath.feature(outline, *CALLUS, "annotation", values))
    for zone, segments in measured.heights.items():
        for start, stop in segments:
            line = LineString(np.array([start, stop]) * classmap.cell_px)
            length = {LENGTH: line.length * classmap.input_mpp}
            features.append(
                qupath.feature(line, f"{zone} height", HEIGHT_COLOURS[zone], "annotation", length)
            )
    return qupath.feature_collection(features)


def draw_places(image: Image.Image, downsample: float, collection: dict) -> Image.Image:
    """`image` (a tissue map whose top-left is the slide's, `downsample` level-0 pixels per
    image pixel) with the outlines and lines of `collection` drawn over it; a copy."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    width = max(2, round(image.width / 400))
    for item in collection["features"]:
        colour = tuple(item["properties"]["classification"]["color"])
        geometry = shapely.geometry.shape(item["geometry"])
        for line in _lines(geometry):
            points = (np.asarray(line.coords) / downsample).ravel().tolist()
            draw.line(points, fill=colour, width=width if line.is_ring else max(1, width // 2))
    return image


def _of_callus(symbol: str | None) -> bool:
    return symbol is not None and (symbol == "Cl.Ar" or symbol.endswith("/Cl.Ar"))


def _cells(mask: np.ndarray, cell_px: int):
    """The union of a map's cells where `mask` (rows, columns) is True, in level-0 pixels."""
    rows, columns = np.nonzero(mask)
    x, y = columns * cell_px, rows * cell_px
    return shapely.union_all(shapely.box(x, y, x + cell_px, y + cell_px))


def _lines(geometry) -> list:
    """The rings of (Multi)Polygons (holes included) and the LineStrings of a geometry."""
    lines = []
    for part in shapely.get_parts(geometry):
        if part.geom_type == "Polygon":
            lines += [part.exterior, *part.interiors]
        else:
            lines.append(part)
    return lines
