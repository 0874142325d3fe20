import csv
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile
from PIL import Image
from shapely.geometry import shape

from ossiclass.annotations import MANIFEST_COLUMNS, CutSettings, _pair, cut_annotated_tiles
from ossiclass.classes import CLASSES, EXTRA_TISSUES, TISSUE_CLASSES, read_class_list
from ossiclass.cli import main
from ossiclass.errors import BadInputError
from ossiclass.synth.annotate import draw_annotations, write_annotations
from ossiclass.synth.slides import SlideSettings, write_slide

# The fixtures' slides are 512 µm across: regions smaller than a person would draw on a whole
# section, tiles of 16 µm (16 px at 1 µm/px, 32 slide pixels).
DIAMETER_UM = (40.0, 120.0)
SETTINGS = CutSettings(model_mpp=1.0, tile_px=16)


@pytest.fixture(scope="module")
def fracture_slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("fracture") / "fracture_callus.tif"
    return write_slide(path, SlideSettings("fracture_callus", 1024, 1024, 0.5, 7), progress=False)


@pytest.fixture(scope="module")
def drawn(small_slide, fracture_slide, tmp_path_factory):
    """Each slide with its annotations from `synth annotations`, named after it."""
    folder = tmp_path_factory.mktemp("annotations")
    return [
        (slide, write_annotations(slide, folder / f"{slide.stem}.geojson", 3, 1, None,
                                  DIAMETER_UM).path)
        for slide in (small_slide, fracture_slide)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tile_set(drawn, tmp_path_factory):
    out = tmp_path_factory.mktemp("cut") / "tiles"
    slides, geojsons = zip(*drawn, strict=True)
    result = cut_annotated_tiles(slides, geojsons[::-1], out, SETTINGS, progress=False)
    return result, drawn  # the GeoJSONs given in the other order: paired by name


def manifest_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_synth_annotations_outline_regions_inside_their_class(small_slide, tmp_path):
    first = write_annotations(small_slide, tmp_path / "a.geojson", 3, 5, None, DIAMETER_UM)
    again = write_annotations(small_slide, tmp_path / "b.geojson", 3, 5, None, DIAMETER_UM)
    assert first.path.read_text() == again.path.read_text()  # deterministic, ids included
    other = write_annotations(small_slide, tmp_path / "c.geojson", 3, 6, None, DIAMETER_UM)
    assert other.path.read_text() != first.path.read_text()
    labels = np.asarray(Image.open(small_slide.with_suffix(".labels.png")))
    features = json.loads(first.path.read_text())["features"]
    by_name = {c.display_name: c for c in TISSUE_CLASSES}
    assert sum(first.regions.values()) == len(features) >= 5
    for item in features:
        tissue = by_name[item["properties"]["classification"]["name"]]
        assert item["properties"]["classification"]["color"] == list(tissue.colour)
        outline = shape(item["geometry"])
        assert outline.is_valid and item["properties"]["objectType"] == "annotation"
        assert 0.2 * 40**2 < outline.area * 0.25 < 1.2 * 120**2  # µm², at 0.5 µm/px
        inside = shapely.contains_xy(outline, *np.meshgrid(np.arange(1024) + 0.5,
                                                           np.arange(1024) + 0.5))  # fmt: skip
        assert (labels[inside] == tissue.index).all()  # no pixel of another class
    assert any("room for" in note for note in first.notes)  # the 512 µm slide is small


def test_synth_annotations_a_class_too_small_gets_fewer_regions():
    labels = np.full((400, 400), 255, np.uint8)
    labels[:, :300] = 0
    labels[:, 300:330] = 1  # a band of 15 µm: no room for a 40 µm region
    features, notes = draw_annotations(labels, 0.5, 2, 0, None, DIAMETER_UM)
    names = {f["properties"]["classification"]["name"] for f in features}
    assert names == {"Mesenchyme"} and len(features) == 2
    assert notes == ["Hyaline cartilage: room for 0 of 2 regions of at least 40 µm across"]
    only, notes = draw_annotations(labels, 0.5, 1, 0, ["callus"], DIAMETER_UM)
    assert only == [] and notes == ["Callus: not on this slide"]
    with pytest.raises(BadInputError, match="unknown classes marrow"):
        draw_annotations(labels, 0.5, 1, 0, ["marrow"], DIAMETER_UM)


def test_every_tile_lies_in_its_class_and_traces_back_to_its_polygon(tile_set):
    result, drawn = tile_set
    rows = manifest_rows(result.manifest)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert len(rows) == sum(result.tiles.values()) >= 100
    polygons = {}
    for slide, geojson in drawn:
        for item in json.loads(geojson.read_text())["features"]:
            polygons[item["id"]] = (slide, shape(item["geometry"]), item)
    masks = {slide: np.asarray(Image.open(slide.with_suffix(".labels.png"))) for slide, _ in drawn}
    names = {c.name: c for c in TISSUE_CLASSES}
    for row in rows:
        x, y, w, h = (int(row[k]) for k in ("minx", "miny", "width", "height"))
        assert w == h == 32 and float(row["mpp"]) == 1.0
        slide, outline, item = polygons[row["annotation"]]  # the polygon it came from
        assert row["slide"] == str(slide) and row["group"] == slide.stem
        tissue = names[row["label"]]
        assert item["properties"]["classification"]["name"] == tissue.display_name
        box = shapely.box(x, y, x + w, y + h)
        assert outline.intersection(box).area >= 0.9 * w * h
        under = masks[slide][y : y + h, x : x + w]
        assert (under == tissue.index).mean() >= SETTINGS.min_cover
        tile = Image.open(result.manifest.parent / row["path"])
        assert tile.size == (16, 16) and tile.mode == "RGB"
    assert {row["group"] for row in rows} == {"growth_plate", "fracture_callus"}


def test_the_tile_set_loads_for_training_with_its_class_list(tile_set):
    from ossiclass.datasets import read_tile_table

    result, _ = tile_set
    table = read_tile_table(result.manifest)
    assert len(table.paths) == len(manifest_rows(result.manifest))
    assert table.mpp is not None and (table.mpp == 1.0).all()
    assert set(table.groups) == {"growth_plate", "fracture_callus"}
    classes = read_class_list(result.manifest)
    assert classes == result.classes
    assert [c.name for c in classes] == [n for n in CLASSES if result.tiles[n]]  # the six's order
    for tissue in classes:
        known = TISSUE_CLASSES[CLASSES.index(tissue.name)]
        assert (tissue.display_name, tissue.colour) == (known.display_name, known.colour)


def rewrite(geojson, path, names: dict, colours: dict | None = None):
    """A copy of a GeoJSON export with classes renamed (and recoloured, or colour removed)."""
    content = json.loads(geojson.read_text())
    for item in content["features"]:
        classification = item["properties"]["classification"]
        old = classification["name"]
        classification["name"] = names.get(old, old)
        if colours is not None and old in colours:
            if colours[old] is None:
                del classification["color"]
            else:
                classification["color"] = colours[old]
    path.write_text(json.dumps(content))
    return path


def test_a_label_map_renames_and_drops_classes(drawn, tmp_path):
    (slide, geojson), _ = drawn
    label_map = {"Hyaline cartilage": None, "Woven bone": "bone", "Hypertrophic zone": "bone",
                 "Mesenchyme": "mesenchyme", "Lamellar bone": "lamellar_bone"}  # fmt: skip
    result = cut_annotated_tiles([slide], [geojson], tmp_path / "t", SETTINGS, label_map, False)
    rows = manifest_rows(result.manifest)
    assert {row["label"] for row in rows} == {"bone"}
    (bone,) = read_class_list(result.manifest)
    assert bone.name == "bone" and bone.index == 0
    assert bone.display_name in ("Woven bone", "Hypertrophic zone")  # the first one met
    assert result.skipped["Hyaline cartilage (dropped by the label map)"] == 3
    assert not (tmp_path / "t" / "hyaline_cartilage").exists()


@pytest.mark.parametrize(
    "text, message",
    [("{", "not a readable JSON label map"), ("[]", "a label map is a JSON object"),
     ('{"Bone": "Bone!"}', "'Bone!' is not a machine name")],
)  # fmt: skip
def test_a_label_map_file_that_cannot_be_one_is_refused(drawn, tmp_path, text, message):
    (slide, geojson), _ = drawn
    path = tmp_path / "map.json"
    path.write_text(text)
    with pytest.raises(BadInputError, match=f"{path}: {message}"):
        cut_annotated_tiles([slide], [geojson], tmp_path / "t", SETTINGS, path, False)


def test_the_labs_own_classes_keep_their_names_and_colours(drawn, tmp_path):
    (slide, geojson), _ = drawn
    renamed = rewrite(
        geojson, tmp_path / "lab.geojson",
        {"Woven bone": "Marrow", "Hyaline cartilage": "Fat", "Hypertrophic zone": "Bone (red)"},
        {"Woven bone": [10, 20, 30], "Hyaline cartilage": None, "Hypertrophic zone": None},
    )  # fmt: skip
    out = tmp_path / "t"
    result = cut_annotated_tiles([slide], [renamed], out, SETTINGS, progress=False)
    classes = {c.name: c for c in read_class_list(out)}
    assert classes["marrow"].display_name == "Marrow" and classes["marrow"].colour == (10, 20, 30)
    assert classes["fat"].colour == EXTRA_TISSUES["fat"][1]  # the lab gave none: the known one
    assert {row["label"] for row in manifest_rows(result.manifest)} == set(classes)
    # A rerun into the same folder replaces the set: no tile of the first run is left.
    first = {p.relative_to(out) for p in out.rglob("*.png")}
    cut_annotated_tiles([slide], [geojson], out, SETTINGS, progress=False)
    second = {p.relative_to(out) for p in out.rglob("*.png")}
    assert not {p for p in first if p.parts[0] in ("marrow", "fat")} & second
    assert second == {Path(row["path"]) for row in manifest_rows(out / "manifest.csv")}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_two_qupath_classes_that_make_one_name_are_refused_not_merged(drawn, tmp_path):
    (slide, geojson), _ = drawn
    renamed = rewrite(
        geojson, tmp_path / "lab.geojson", {"Woven bone": "骨", "Hyaline cartilage": "軟骨"}
    )
    with pytest.raises(BadInputError, match="'軟骨' and '骨' both make the class name 'class'"):
        cut_annotated_tiles([slide], [renamed], tmp_path / "t", SETTINGS, progress=False)
    label_map = {"骨": "bone", "軟骨": "cartilage", "Hypertrophic zone": None,
                 "Mesenchyme": None, "Lamellar bone": None}  # fmt: skip
    result = cut_annotated_tiles([slide], [renamed], tmp_path / "t", SETTINGS, label_map, False)
    assert {c.name for c in read_class_list(result.manifest)} == {"bone", "cartilage"}


def test_a_folder_of_other_files_is_not_replaced(drawn, tmp_path):
    (slide, geojson), _ = drawn
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(BadInputError, match="holds other files"):
        cut_annotated_tiles([slide], [geojson], tmp_path / "mine", SETTINGS, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_cli_takes_the_scale_from_a_model_and_notes_an_assumed_input_scale(
    drawn, tiny_model, tmp_path, capsys
):
    (slide, _), _ = drawn
    plain = tmp_path / "plain.png"  # records no µm/px
    Image.fromarray(tifffile.imread(slide)).save(plain)
    square = {"type": "Feature", "id": "a1", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [640, 0], [640, 640], [0, 640], [0, 0]]]},
        "properties": {"objectType": "annotation", "classification": {"name": "Bone"}}}  # fmt: skip
    geojson = tmp_path / "plain.geojson"
    geojson.write_text(json.dumps([square]))
    argv = ["annotations", str(plain), "--geojson", str(geojson), "--out", str(tmp_path / "t"),
            "--model", str(tiny_model), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "assumed 0.5" in captured.err and "give it with --input-mpp" in captured.err
    assert "wrote 25 tiles of 32 px at 2 µm/px (Bone 25)" in captured.out  # 128 px boxes
    rows = manifest_rows(tmp_path / "t" / "manifest.csv")
    assert {r["mpp"] for r in rows} == {"2.0"} and {r["annotation"] for r in rows} == {"a1"}
    assert Image.open(tmp_path / "t" / rows[0]["path"]).size == (32, 32)
    assert main(argv + ["--input-mpp", "0.25"]) == 0  # 256 px boxes now
    captured = capsys.readouterr()
    assert "assumed" not in captured.err and "wrote 4 tiles" in captured.out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mpp", "1"], "--mpp needs --tile-px"),
        (["--model", "m.pt", "--tile-px", "16"], "--tile-px goes with --mpp"),
    ],
)
def test_cli_scale_options_are_checked(drawn, tmp_path, capsys, extra, message):
    (slide, geojson), _ = drawn
    argv = ["annotations", str(slide), "--geojson", str(geojson), "--out", str(tmp_path / "t")]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_slides_and_geojsons_must_pair(drawn, tmp_path):
    (slide, geojson), (other, _) = drawn
    with pytest.raises(BadInputError, match="2 slides but 1 GeoJSON"):
        cut_annotated_tiles([slide, other], [geojson], tmp_path / "t", SETTINGS, progress=False)
    with pytest.raises(BadInputError, match="two slides named growth_plate"):
        cut_annotated_tiles([slide, slide], [geojson] * 2, tmp_path / "t", SETTINGS)
    link = tmp_path / "the_same.tif"
    link.symlink_to(slide)
    with pytest.raises(BadInputError, match=f"{slide} and {link} are one file"):
        cut_annotated_tiles([slide, link], [geojson] * 2, tmp_path / "t", SETTINGS)
    assert not (tmp_path / "t").exists()


def test_geojsons_pair_with_slides_by_name_or_else_by_order(tmp_path):
    a, b = tmp_path / "a.ome.tif", tmp_path / "b.svs"
    named = _pair([a, b], [Path("b.svs.geojson"), Path("in/a.geojson")])
    assert named == [(a, Path("in/a.geojson")), (b, Path("b.svs.geojson"))]
    in_order = _pair([a, b], [Path("export1.geojson"), Path("export2.geojson")])
    assert in_order == [(a, Path("export1.geojson")), (b, Path("export2.geojson"))]
    with pytest.raises(BadInputError, match="but export.geojson is named after none"):
        _pair([a, b], [Path("b.geojson"), Path("export.geojson")])  # not quietly in order
    with pytest.raises(
        BadInputError, match=f"a.geojson and a.ome.tif.geojson are both named after {a}"
    ):
        _pair([a, b], [Path("a.geojson"), Path("a.ome.tif.geojson")])


def test_cli_synth_annotations_then_tiles(small_slide, tmp_path, capsys):
    geojson = tmp_path / "drawn.geojson"
    argv = ["synth", "annotations", str(small_slide), "--regions", "2", "--out", str(geojson),
            "--seed", "3", "--diameter-um", "40", "120", "--classes", "woven_bone"]  # fmt: skip
    assert main(argv) == 0
    assert "wrote 2 annotations (Woven bone 2)" in capsys.readouterr().out
    out = tmp_path / "tiles"
    argv = ["annotations", str(small_slide), "--geojson", str(geojson), "--out", str(out),
            "--mpp", "1", "--tile-px", "16", "--stride", "8", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    rows = manifest_rows(out / "manifest.csv")
    assert {r["label"] for r in rows} == {"woven_bone"}
    assert len({int(r["minx"]) % 32 for r in rows}) == 2  # steps of 16 slide px: overlapping
    assert main(["synth", "annotations", str(tmp_path / "none.tif"), "--regions", "1", "--out",
                 str(geojson)]) == 2  # fmt: skip
    assert "labels.png beside it" in capsys.readouterr().err
