"""The class map: tiles' probabilities blended into cells, classmap.tif both ways, the map's
merged regions, and classify writing them with overlapping tiles."""

import csv
import json

import numpy as np
import pytest
import shapely
import tifffile
from conftest import check_qupath_geojson

from ossiclass.classes import CLASSES, TISSUE_CLASSES, class_list_from_dict
from ossiclass.classify import Running, Tiling, classify
from ossiclass.classmap import (
    NO_TISSUE,
    ClassMap,
    blend,
    cells,
    class_map,
    load_classmap,
    read_classmap,
    regions,
    write_classmap,
)
from ossiclass.errors import BadInputError
from ossiclass.preprocess.tiling import SlideTissue
from ossiclass.slides import image_mpp

FAST = Running(batch_size=64, workers=0)


def _row(x: float, y: float, side: float, probabilities) -> dict:
    """A tiles.csv row (as written, numbers) of a tile of the six classes."""
    return {
        "minx": x, "miny": y, "width": side, "height": side,
        **{f"prob_{name}": p for name, p in zip(CLASSES, probabilities, strict=True)},
    }  # fmt: skip


def _halves(boundary: float, side: float = 40, step: float = 10, width: float = 160):
    """Tiles every `step` px over a `width` x `side` strip whose left of x = `boundary` is
    mesenchyme (0) and right hyaline cartilage (1): each tile's probabilities are the shares
    of its box on either side (what a good model's are, near enough)."""
    rows = []
    for x in np.arange(0, width - side + 1, step):
        left = float(np.clip((boundary - x) / side, 0, 1))
        rows.append(_row(x, 0, side, [left, 1 - left, 0, 0, 0, 0]))
    return rows


@pytest.mark.parametrize("window", ["triangular", "uniform"])
def test_two_halves_meet_at_the_cell_of_their_boundary(window):
    # 40 px tiles every 10 px, cells of 10 px; the boundary at x = 80 is cell 8's left edge.
    classmap = class_map(_halves(80), TISSUE_CLASSES, (160, 40), 10, 0.5, window=window)
    assert classmap.labels.shape == (4, 16)
    assert (classmap.labels[:, :8] == 0).all() and (classmap.labels[:, 8:] == 1).all()
    # At 74 px instead, cell 7 (70-80 px) lies mostly right of it: one cell further left.
    shifted = class_map(_halves(74), TISSUE_CLASSES, (160, 40), 10, 0.5, window=window)
    assert (shifted.labels[:, :7] == 0).all() and (shifted.labels[:, 7:] == 1).all()
    # The tile grid alone (40 px cells) can only put it at a tile's edge.
    coarse = class_map(_halves(74, step=40), TISSUE_CLASSES, (160, 40), 40, 0.5, window=window)
    assert coarse.labels.tolist() == [[0, 0, 1, 1]]


def test_the_tent_weighs_a_tile_s_centre_most_and_interpolates_between_centres():
    # One row of cells, tiles one cell high: along x their centres are 20 and 40 px.
    boxes = np.array([[0, 0, 40, 10], [20, 0, 40, 10]], dtype=float)
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0]])
    mean, weight = blend(boxes, probabilities, (1, 6), 10)
    # Cell centres 5..55: the first tile alone over 5 and 15, both over 25 and 35, then the second.
    assert weight[0].tolist() == pytest.approx([0.25, 0.75, 0.75 + 0.25, 0.25 + 0.75, 0.75, 0.25])
    assert mean[0, :, 0].tolist() == pytest.approx([1, 1, 0.75, 0.25, 0, 0])
    uniform, counts = blend(boxes, probabilities, (1, 6), 10, "uniform")
    assert counts[0].tolist() == [1, 1, 2, 2, 1, 1]
    assert uniform[0, :, 0].tolist() == [1, 1, 0.5, 0.5, 0, 0]
    with pytest.raises(ValueError, match="window"):
        blend(boxes, probabilities, (1, 6), 10, "gaussian")


def test_cells_without_tissue_or_tiles_are_no_tissue():
    # A 4 x 4 grid of 10 px tiles on a 40 x 40 px slide; the mask (at 4 px a mask pixel) has
    # glass over the right column, and the bottom right tile is missing.
    rows = [_row(x, y, 10, np.eye(6)[(x + y) // 10 % 6]) for y in range(0, 40, 10)
            for x in range(0, 40, 10) if (x, y) != (30, 30)]  # fmt: skip
    mask = np.ones((10, 10), dtype=bool)
    mask[:, 8:] = False
    tissue = SlideTissue(mask, 2.0, None)
    classmap = class_map(rows, TISSUE_CLASSES, (40, 40), 10, 0.5, tissue, min_tissue=0.5)
    expected = (np.add.outer(np.arange(4), np.arange(4)) % 6).astype(np.uint8)
    expected[:, 3] = NO_TISSUE
    assert classmap.labels.tolist() == expected.tolist()
    # Without a mask the glass column keeps its tiles' labels; the missing tile stays empty.
    bare = class_map(rows, TISSUE_CLASSES, (40, 40), 10, 0.5)
    assert bare.labels[0, 3] == 3 and bare.labels[3, 3] == NO_TISSUE
    assert classmap.mpp == 5.0


def _ring() -> ClassMap:
    """A 5 x 5 map of 10 px cells over a 48 x 45 px slide: woven bone (3) around a callus (5)
    centre, a glass corner."""
    labels = np.full((5, 5), 3, dtype=np.uint8)
    labels[1:4, 1:4] = 5
    labels[2, 2] = 3  # an island of bone within the callus
    labels[0, 0] = NO_TISSUE
    return ClassMap(labels, 10, (48, 45), 0.5, TISSUE_CLASSES)


def test_runs_of_cells_merge_along_rows_and_stop_at_the_slide_s_edge():
    boxes, label, count = cells(_ring())
    assert label.tolist() == [3, 3, 5, 3, 3, 5, 3, 5, 3, 3, 5, 3, 3]
    assert count.tolist() == [4, 1, 3, 1, 1, 1, 1, 1, 1, 1, 3, 1, 5]
    assert boxes[0].tolist() == [10, 0, 38, 10]  # the last column clipped at x = 48
    assert boxes[-1].tolist() == [0, 40, 48, 5]  # the last row clipped at y = 45
    single, _, ones = cells(_ring(), runs=False)
    assert len(single) == 24 and (ones == 1).all()


def test_the_map_s_regions_are_qupath_annotations_with_holes():
    collection = regions(_ring())
    check_qupath_geojson(collection)
    bone, callus = collection["features"]
    assert bone["properties"]["classification"]["name"] == "Woven bone"
    shape = shapely.geometry.shape(bone["geometry"])  # the frame and the island inside it
    assert shape.geom_type == "MultiPolygon" and shape.area == 48 * 45 - 100 - 8 * 100
    frame = max(shape.geoms, key=lambda part: part.area)
    assert len(frame.interiors) == 1  # the callus's hole
    assert bone["properties"]["measurements"]["cells"] == 16
    assert callus["properties"]["measurements"] == {
        "cells": 8.0,
        "area_mm2": pytest.approx(800 * 0.25 / 1e6),
    }


def test_classmap_tif_round_trip(tmp_path):
    classes = class_list_from_dict([*CLASSES, "marrow"])
    labels = np.random.default_rng(0).integers(0, 7, (30, 50)).astype(np.uint8)
    labels[:3] = NO_TISSUE
    written = ClassMap(labels, 64, (3200, 1900), 0.25, classes, "triangular")
    path = write_classmap(tmp_path / "classmap.tif", written)
    read, mpp, read_classes = read_classmap(path)
    assert read.dtype == np.uint8 and np.array_equal(read, labels)
    assert mpp == 16.0 and read_classes == classes
    assert load_classmap(path).metadata() == written.metadata()
    assert image_mpp(path) == 16.0
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        numerator, denominator = tags["XResolution"].value
        assert tags["ResolutionUnit"].value == 3  # centimetre
        assert 1e4 * denominator / numerator == pytest.approx(16.0)  # what a viewer reads
    assert not list(tmp_path.glob(".*partial"))


def test_only_a_class_map_is_read_as_one(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        read_classmap(tmp_path / "none.tif")
    tifffile.imwrite(tmp_path / "other.tif", np.zeros((4, 4), np.uint8), description="{}")
    with pytest.raises(BadInputError, match="not an ossiclass class map"):
        read_classmap(tmp_path / "other.tif")
    (tmp_path / "text.tif").write_text("no TIFF")
    with pytest.raises(BadInputError, match="not a readable TIFF"):
        read_classmap(tmp_path / "text.tif")


def test_classify_with_a_stride_writes_a_finer_map_and_its_regions(
    tiny_model, small_slide, tmp_path
):
    # The tiny model's tiles: 32 px at 2 µm/px, 128 level-0 px; a stride of 16 px: 64 px cells.
    out = tmp_path / "out"
    summary = classify(small_slide, tiny_model, out, Tiling(stride_px=16), FAST, progress=False)
    labels, mpp, classes = read_classmap(out / "classmap.tif")
    assert labels.shape == (1024 // 64, 1024 // 64) and mpp == 64 * 0.5 == 32.0
    assert classes == TISSUE_CLASSES
    assert summary["classmap"]["cell_px"] == 64 and summary["classmap"]["shape"] == [16, 16]
    tissue = labels != NO_TISSUE
    assert 0.2 < tissue.mean() < 1 and len(np.unique(labels[tissue])) > 1
    with open(out / "tiles.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary["tiles"]["classified"] > 2 * 8 * 8 * 0.2
    collection = json.loads((out / "regions.geojson").read_text())
    check_qupath_geojson(collection)
    counts = np.bincount(labels[tissue], minlength=len(CLASSES))
    by_name = {c.display_name: i for i, c in enumerate(TISSUE_CLASSES)}
    for feature in collection["features"]:
        index = by_name[feature["properties"]["classification"]["name"]]
        assert feature["properties"]["measurements"]["cells"] == counts[index]
        area = shapely.geometry.shape(feature["geometry"]).area
        assert area == pytest.approx(counts[index] * 64 * 64)  # no cell reaches past 1024 px
    assert sum(counts > 0) == len(collection["features"])


def test_classify_refine_writes_a_map_of_8_um_cells_and_its_regions(
    tiny_model, small_slide, tmp_path
):
    """The refined map's cells are 16 level-0 px (8 µm at 0.5 µm/px); it says it is refined;
    its tissue is the unrefined map's; its regions hold every cell of it. (Which cells move
    is `test_refine.py`'s.)"""
    from ossiclass.refine import cell_px

    out = tmp_path / "out"
    summary = classify(small_slide, tiny_model, out, Tiling(refine=True), FAST, progress=False)
    refined = load_classmap(out / "classmap.tif")
    assert refined.refined and summary["classmap"]["refined"] is True
    assert refined.cell_px == cell_px(0.5) == 16 and refined.labels.shape == (64, 64)
    with open(out / "tiles.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    tissue = slide_tissue_mask_of(small_slide)
    tiles = class_map(rows, refined.classes, refined.slide_px, 16, 0.5, tissue).labels
    assert ((tiles == NO_TISSUE) == (refined.labels == NO_TISSUE)).all()
    collection = json.loads((out / "regions.geojson").read_text())
    check_qupath_geojson(collection)
    area = sum(shapely.geometry.shape(f["geometry"]).area for f in collection["features"])
    assert area == pytest.approx((refined.labels != NO_TISSUE).sum() * 16 * 16)


def slide_tissue_mask_of(path):
    from ossiclass.preprocess.tiling import slide_tissue_mask
    from ossiclass.slides import open_slide

    with open_slide(path) as slide:
        return slide_tissue_mask(slide)


def test_refining_a_tile_folder_is_refused(tiny_model, tile_set, tmp_path):
    with pytest.raises(BadInputError, match="refining a map is for slides"):
        classify(tile_set(1), tiny_model, tmp_path / "out", Tiling(refine=True), FAST,
                 progress=False)  # fmt: skip
