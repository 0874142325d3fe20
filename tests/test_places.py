import json

import numpy as np
import pytest
import shapely
from conftest import check_qupath_geojson
from PIL import Image

from ossiclass.classes import TISSUE_CLASSES
from ossiclass.classmap import NO_TISSUE, ClassMap, region_mask
from ossiclass.errors import BadInputError
from ossiclass.histomorphometry import HYPERTROPHIC, RESTING, Measure, Measured
from ossiclass.places import CALLUS, LENGTH, REGION, draw_places, places
from ossiclass.qupath import feature, feature_collection, read_region

CELL_PX = 64
MPP = 0.5


def _map(rows: int = 10, columns: int = 12) -> ClassMap:
    labels = np.full((rows, columns), 5, dtype=np.uint8)
    labels[0] = NO_TISSUE
    return ClassMap(labels, CELL_PX, (columns * CELL_PX, rows * CELL_PX), MPP, TISSUE_CLASSES)


def test_places_are_qupath_annotations_in_slide_pixels_with_their_measures():
    classmap = _map()
    callus = np.zeros(classmap.labels.shape, dtype=bool)
    callus[2:6, 3:9] = True  # 4 x 6 cells
    callus[3:5, 5:7] = False  # with a hole of 2 x 2
    measured = Measured(
        [
            Measure("Total callus area", "Cl.Ar", 1.5, "mm2"),
            Measure("Woven bone fraction of callus", "Wo.B.Ar/Cl.Ar", 0.25, "1"),
            Measure("Callus fraction", None, 0.9, "1"),
        ],
        callus=callus,
        heights={HYPERTROPHIC: [((1.0, 2.0), (1.0, 6.0))], RESTING: [((1.0, 6.0), (4.0, 10.0))]},
    )
    region = shapely.box(0, 0, 500, 400)
    content = places(measured, classmap, region)
    check_qupath_geojson(content)
    json.dumps(content, allow_nan=False)
    outline, *lines = content["features"][1:]
    assert content["features"][0]["properties"]["classification"]["name"] == REGION[0]
    assert outline["properties"]["classification"]["name"] == CALLUS[0]
    assert shapely.geometry.shape(outline["geometry"]).area == (24 - 4) * CELL_PX**2
    assert outline["properties"]["measurements"] == {"Cl.Ar": 1.5, "Wo.B.Ar/Cl.Ar": 0.25}
    heights = [(f["properties"]["classification"]["name"], f["properties"]["measurements"][LENGTH])
               for f in lines]  # fmt: skip
    assert heights == [
        (f"{HYPERTROPHIC} height", pytest.approx(4 * CELL_PX * MPP)),
        (f"{RESTING} height", pytest.approx(5 * CELL_PX * MPP)),
    ]
    assert lines[0]["geometry"]["coordinates"] == [[64.0, 128.0], [64.0, 384.0]]


def test_nothing_measured_places_nothing():
    assert places(Measured([]), _map())["features"] == []


def test_places_are_drawn_where_they_lie():
    classmap = _map()
    line = ((2.0, 1.0), (2.0, 9.0))  # map pixels: a vertical line at x = 128 px
    content = places(Measured([], heights={HYPERTROPHIC: [line]}), classmap)
    blank = Image.new("RGB", (384, 320), "white")  # 2 level-0 px per image px
    drawn = np.asarray(draw_places(blank, 2.0, content))
    changed = np.argwhere((drawn != 255).any(axis=2))
    assert changed.size and abs(changed[:, 1].mean() - 64) < 2
    assert changed[:, 0].min() <= 33 and changed[:, 0].max() >= 287
    assert (np.asarray(blank) == 255).all()  # a copy


def test_a_region_covers_the_cells_whose_centres_it_holds():
    classmap = _map()
    inside = region_mask(classmap, shapely.box(0, 0, 3 * CELL_PX, 2 * CELL_PX + 40))
    assert inside.shape == classmap.labels.shape
    assert inside.sum() == 3 * 3 and inside[:3, :3].all()


def test_a_region_without_tissue_is_refused():
    with pytest.raises(BadInputError, match="covers no tissue"):
        region_mask(_map(), shapely.box(0, 0, 500, 60))  # only the row without tissue


def test_a_region_file_is_the_union_of_its_areas_classified_or_not(tmp_path):
    path = tmp_path / "roi.geojson"
    drawn = [
        feature(shapely.box(0, 0, 100, 100), "Callus", (0, 0, 0), "annotation"),
        feature(shapely.box(100, 0, 200, 100), "", (0, 0, 0), "annotation"),
    ]
    drawn[1]["properties"].pop("classification")  # as QuPath writes an unclassified one
    path.write_text(json.dumps(feature_collection(drawn)))
    region = read_region(path)
    assert region.geometry.area == 200 * 100 and region.path == path.resolve()
    path.write_text(json.dumps(feature_collection([])))
    with pytest.raises(BadInputError, match="no features"):
        read_region(path)
    line = feature(shapely.LineString([(0, 0), (5, 5)]), "Callus", (0, 0, 0), "annotation")
    path.write_text(json.dumps(feature_collection([line])))
    with pytest.raises(BadInputError, match="LineString, not a Polygon"):
        read_region(path)
