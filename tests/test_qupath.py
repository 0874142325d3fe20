import json
import uuid

import numpy as np
import pytest
import shapely
from conftest import check_qupath_geojson
from shapely.geometry import MultiPolygon, Polygon

from ossiclass.classes import TISSUE_CLASSES
from ossiclass.cli import main
from ossiclass.errors import BadInputError
from ossiclass.qupath import feature, feature_collection, merged_regions, read_annotations

SQUARE = [[100, 100], [700, 100], [700, 700], [100, 700], [100, 100]]
HOLE = [[300, 300], [300, 400], [400, 400], [400, 300], [300, 300]]


def qupath_feature(geometry, name=None, colour=None, object_type="annotation", **extra):
    """A feature the way QuPath 0.4+ exports it."""
    properties = {"objectType": object_type, "isLocked": False}
    if name is not None:
        properties["classification"] = {"name": name, **({"color": colour} if colour else {})}
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry,
            "properties": {**properties, **extra}}  # fmt: skip


def polygon(*rings):
    return {"type": "Polygon", "coordinates": list(rings)}


def write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_reads_holes_multipolygons_and_skips_what_is_no_label(tmp_path):
    features = [
        qupath_feature(polygon(SQUARE, HOLE), "Cartilage", [10, 20, 30]),
        qupath_feature(
            {
                "type": "MultiPolygon",
                "coordinates": [[SQUARE], [[[800, 800], [900, 800], [900, 900], [800, 800]]]],
            },
            "Bone",
        ),  # fmt: skip
        qupath_feature(polygon(SQUARE), "Ignore*", [180, 180, 180]),
        qupath_feature(polygon(SQUARE), "Ignore artefact"),
        qupath_feature(polygon(SQUARE)),  # unclassified
        qupath_feature({"type": "Point", "coordinates": [5, 5]}, "Cell", object_type="detection"),
    ]
    # QuPath 0.2: no id, `object_type`, the colour packed into a Java int (ARGB).
    old = {"type": "Feature", "geometry": polygon(SQUARE),
           "properties": {"object_type": "annotation",
                          "classification": {"name": "Marrow", "colorRGB": -3670016}}}  # fmt: skip
    path = write(
        tmp_path / "a.geojson", {"type": "FeatureCollection", "features": [*features, old]}
    )
    found = read_annotations(path)
    names = [a.name for a in found.annotations]
    assert names == ["Cartilage", "Bone", "Marrow"]
    cartilage, bone, marrow = found.annotations
    assert cartilage.geometry.area == 600 * 600 - 100 * 100  # the hole is kept
    assert len(cartilage.geometry.interiors) == 1
    assert isinstance(bone.geometry, MultiPolygon) and len(bone.geometry.geoms) == 2
    assert cartilage.colour == (10, 20, 30) and bone.colour is None
    assert marrow.colour == (200, 0, 0)  # 0xFFC80000
    assert cartilage.id == features[0]["id"] and marrow.id == "#6"
    assert found.skipped == {"Ignore*": 1, "Ignore artefact": 1, "unclassified": 1,
                             "detection objects": 1}  # fmt: skip
    assert found.warnings == []


def test_a_single_feature_and_a_bare_list_read_as_a_collection(tmp_path):
    features = [qupath_feature(polygon(SQUARE), "Bone", [1, 2, 3]),
                qupath_feature(polygon(SQUARE, HOLE), "Marrow")]  # fmt: skip
    listed = read_annotations(write(tmp_path / "list.geojson", features)).annotations
    single = read_annotations(write(tmp_path / "one.geojson", features[0])).annotations
    assert [a.name for a in listed] == ["Bone", "Marrow"]
    assert single == listed[:1]


def test_a_small_self_intersection_is_repaired_with_a_warning(tmp_path):
    spike = [[100, 100], [700, 100], [700, 700], [400, 700], [400, 705], [401, 700],
             [100, 700], [100, 100]]  # fmt: skip
    found = read_annotations(write(tmp_path / "a.geojson", [qupath_feature(polygon(spike), "B")]))
    (annotation,) = found.annotations
    assert annotation.geometry.is_valid
    assert abs(annotation.geometry.area - 360_000) < 0.01 * 360_000
    assert len(found.warnings) == 1 and "repaired" in found.warnings[0]
    assert "Self-intersection" in found.warnings[0]


def test_a_bow_tie_is_refused_naming_the_feature(tmp_path):
    bow_tie = [[100, 100], [700, 700], [700, 100], [100, 700], [100, 100]]
    item = qupath_feature(polygon(bow_tie), "B")
    with pytest.raises(BadInputError, match="Self-intersection") as error:
        read_annotations(write(tmp_path / "a.geojson", [item]))
    assert item["id"] in str(error.value) and str(error.value).startswith(str(tmp_path))


BAD_FILES = {
    "not json": ("{'type': 'FeatureCollection'", "not JSON"),
    "nested too deep": ("[" * 100_000 + "]" * 100_000, "not JSON"),
    "not geojson": ({"type": "Polygon", "coordinates": [SQUARE]}, "found 'Polygon'"),
    "a number": (3, "found 'int'"),
    "empty": ({"type": "FeatureCollection", "features": []}, "no features"),
    "point": ([qupath_feature({"type": "Point", "coordinates": [1, 2]}, "B")], "a Point"),
    "line": (
        [qupath_feature({"type": "LineString", "coordinates": [[1, 2], [3, 4]]}, "B")],
        "a LineString",
    ),
    "collection": (
        [qupath_feature({"type": "GeometryCollection", "geometries": []}, "B")],
        "a GeometryCollection",
    ),
    "bow tie": (
        [
            qupath_feature(
                polygon([[100, 100], [700, 700], [700, 100], [100, 700], [100, 100]]), "B"
            )
        ],
        "Self-intersection",
    ),  # fmt: skip
    "bad coordinates": ([qupath_feature(polygon([[1, "a"], [2]]), "B")], "coordinates"),
    "a number too large for a float": (
        [qupath_feature(polygon([[10**400, 1], [2, 2], [1, 3], [10**400, 1]]), "B")],
        "coordinates",
    ),
    "NaN coordinates (JSON that Python writes)": (
        [qupath_feature(polygon([[0, 0], [float("nan"), 0], [900, 900], [0, 0]]), "B")],
        "coordinates that are no numbers",
    ),
    "outside": (
        [qupath_feature(polygon([[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]]), "B")],
        "lies outside",
    ),
    "no tile inside": (
        [
            qupath_feature(
                polygon([[100, 100], [120, 100], [120, 120], [100, 120], [100, 100]]), "B"
            )
        ],
        "1 polygons",
    ),  # fmt: skip
    "only ignored": ([qupath_feature(polygon(SQUARE), "Ignore*")], "no classified annotations"),
    "not in the label map": ([qupath_feature(polygon(SQUARE), "Fat")], "'Fat' is not in"),
}


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a command line would print it
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_give_one_line_and_exit_2(tmp_path, small_slide, capsys, case):
    content, message = BAD_FILES[case]
    path = write(tmp_path / "bad.geojson", content)
    label_map = write(tmp_path / "map.json", {"B": "bone"})
    argv = ["annotations", str(small_slide), "--geojson", str(path), "--out",
            str(tmp_path / "tiles"), "--mpp", "1", "--tile-px", "16", "--quiet"]  # fmt: skip
    status = main(
        argv + (["--label-map", str(label_map)] if case == "not in the label map" else [])
    )
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith(f"ossiclass: error: {path}") and message in error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "tiles").exists()


def test_the_cli_warns_of_a_repaired_polygon_on_one_line(tmp_path, small_slide, capsys):
    spike = [[100, 100], [700, 100], [700, 700], [400, 700], [400, 705], [401, 700],
             [100, 700], [100, 100]]  # fmt: skip
    path = write(tmp_path / "a.geojson", [qupath_feature(polygon(spike), "Bone")])
    argv = ["annotations", str(small_slide), "--geojson", str(path), "--out",
            str(tmp_path / "tiles"), "--mpp", "1", "--tile-px", "16", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "repaired" in warnings[0] and str(path) in warnings[0]
    assert "wrote 289 tiles" in captured.out  # 17 x 17 boxes of 32 px, x and y 128 to 640


def test_features_written_back_pass_the_schema_and_read_back(tmp_path):
    shape = Polygon(SQUARE, [HOLE])
    features = [
        feature(shape, "Cartilage", (1, 2, 3), "annotation"),
        feature(
            MultiPolygon([shape, shapely.box(800, 800, 900, 900)]),
            "Bone",
            np.array([4, 5, 6]),
            "detection",
            {"confidence": np.float32(0.5), "tiles": 3},
        ),  # fmt: skip
        feature(shapely.box(0, 0, 10, 10), "Callus", (7, 8, 9), "tile", id=str(uuid.UUID(int=7))),
    ]
    content = feature_collection(features)
    check_qupath_geojson(content)
    assert features[1]["properties"]["measurements"] == {"confidence": 0.5, "tiles": 3.0}
    assert features[2]["id"] == str(uuid.UUID(int=7)) and features[0]["id"] != features[1]["id"]
    path = write(tmp_path / "back.geojson", content)
    (cartilage,) = read_annotations(path).annotations  # detections and tiles are no labels
    assert cartilage.name == "Cartilage" and cartilage.colour == (1, 2, 3)
    assert cartilage.geometry.equals(shape)


def test_feature_refuses_what_qupath_cannot_read():
    with pytest.raises(ValueError, match="object_type"):
        feature(shapely.box(0, 0, 1, 1), "A", (1, 2, 3), "cell")
    with pytest.raises(ValueError, match="finite"):
        feature(shapely.box(0, 0, 1, 1), "A", (1, 2, 3), "tile", {"p": float("nan")})


def test_merged_regions_are_class_unions_with_holes(tmp_path):
    # A 3 x 3 grid of 10 px tiles, the centre one another class.
    boxes = [(x, y, 10, 10) for y in (0, 10, 20) for x in (0, 10, 20)]
    labels = ["woven_bone"] * 9
    labels[4] = "callus"
    regions = merged_regions(np.array(boxes), labels, TISSUE_CLASSES, mpp=0.5)
    check_qupath_geojson(feature_collection(regions))
    bone, callus = regions
    assert bone["properties"]["classification"] == {"name": "Woven bone", "color": [251, 154, 153]}
    assert bone["properties"]["objectType"] == "annotation"
    assert bone["geometry"]["type"] == "Polygon" and len(bone["geometry"]["coordinates"]) == 2
    assert bone["properties"]["measurements"] == {"tiles": 8.0, "area_mm2": 800 * 0.25 / 1e6}
    assert callus["properties"]["classification"]["name"] == "Callus"
    found = read_annotations(write(tmp_path / "regions.geojson", feature_collection(regions)))
    assert [round(a.geometry.area) for a in found.annotations] == [800, 100]
    apart = merged_regions(np.array([(0, 0, 10, 10), (50, 0, 10, 10)]), ["callus"] * 2,
                           TISSUE_CLASSES)  # fmt: skip
    assert apart[0]["geometry"]["type"] == "MultiPolygon"
    with pytest.raises(ValueError, match="not in the class list"):
        merged_regions(np.array(boxes[:1]), ["marrow"], TISSUE_CLASSES)
