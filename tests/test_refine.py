"""Tests of boundary refinement: a class map's boundaries moved within tiles by the slide's
own colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from ossiclass.classes import BACKGROUND_LABEL
from ossiclass.refine import cell_features, refine

LOOKS = np.array([[0.2, 0.3, 0.1, 0.05, 0.05, 0.05], [0.5, 0.6, 0.3, 0.1, 0.1, 0.1]])
"""The mean look of two classes (six features, as `cell_features` gives)."""


def _features(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each cell looks like its true class, with noise a fifth of the classes' distance."""
    rng = np.random.default_rng(seed)
    looks = LOOKS[np.minimum(truth, 1)]
    return (looks + rng.normal(0, 0.05, looks.shape)).astype(np.float32)


def _halves(boundary: int, size: int = 64) -> np.ndarray:
    labels = np.zeros((size, size), dtype=np.uint8)
    labels[:, boundary:] = 1
    return labels


@pytest.mark.parametrize("tiles_at", [24, 36])
def test_a_boundary_off_by_under_half_a_tile_moves_to_where_the_looks_change(tiles_at):
    truth, tiles = _halves(30), _halves(tiles_at)
    refined = refine(tiles, _features(truth), band_cells=8)
    assert (tiles != truth).mean() > 0.09
    assert (refined != truth).mean() < 0.005


def test_what_lies_deeper_than_half_a_tile_keeps_the_tiles_class():
    """A patch that looks like the other class stays as the tiles put it unless it lies
    within half a tile of that class: the tiles' call over a whole field stands inside it
    (neither class is a mixture)."""
    truth = _halves(48)
    truth[10:16, 10:16] = 1  # 32 cells from class 1: an island inside class 0's field
    truth[40:46, 41:45] = 1  # 3 to 7 cells from class 1
    refined = refine(_halves(48), _features(truth), band_cells=8)
    assert (refined[10:16, 10:16] == 0).all()
    assert (refined[40:46, 41:45] == 1).mean() > 0.8  # its corners rounded by the smoothing


def test_no_tissue_stays_no_tissue_and_tissue_stays_tissue():
    truth = _halves(30)
    tiles = _halves(36)
    tiles[:, 50:] = BACKGROUND_LABEL
    tiles[:8, :] = BACKGROUND_LABEL
    refined = refine(tiles, _features(truth), band_cells=8)
    assert ((refined == BACKGROUND_LABEL) == (tiles == BACKGROUND_LABEL)).all()
    assert (refined[8:, 30:36] == 1).all()


def test_a_class_too_small_to_learn_is_left_where_the_tiles_put_it():
    truth = _halves(10, size=20)
    tiles = _halves(14, size=20)  # class 1 has no cell 8 cells from class 0: nothing to learn
    refined = refine(tiles, _features(truth), band_cells=8)
    assert (tiles != truth).any() and (refined == tiles).all()


def test_no_cell_takes_a_class_from_farther_than_half_a_tile():
    """Blocks of three classes whose true boundaries lie 3 cells off the tiles': whatever
    moves, each cell's new class lies within half a tile (4 cells) of it on the tiles' map;
    a tiny piece the tiles made (a lone cell deep inside a region) stays."""
    rng = np.random.default_rng(3)
    tiles = np.repeat(np.repeat(rng.integers(0, 3, (6, 6)), 16, 0), 16, 1).astype(np.uint8)
    truth = np.roll(tiles, (3, 3), axis=(0, 1))
    tiles[20, 20] = 3  # a piece of one cell, the tiles' own
    looks = np.array([[0.2, 0.3, 0.1], [0.5, 0.6, 0.3], [0.9, 0.4, 0.6]])
    features = np.concatenate([looks[truth], np.full((*truth.shape, 3), 0.05)], axis=-1)
    features = (features + rng.normal(0, 0.05, features.shape)).astype(np.float32)
    refined = refine(tiles, features, band_cells=4)
    assert (refined != tiles).mean() > 0.02
    for k in np.unique(refined):
        near = ndi.maximum_filter(tiles == k, 9, mode="constant")  # within 4 cells
        assert near[refined == k].all()
    assert refined[20, 20] == 3


def test_a_cell_s_features_are_the_mean_and_spread_of_its_optical_density():
    """Cells of 4 pixels over glass and, from the seventh column, grey 88: a cell half on
    each has half the grey's optical density as its mean, and as its spread; past the image's
    edge is glass."""
    image = np.full((16, 20, 3), 240, dtype=np.uint8)
    image[:, 6:] = 88
    features = cell_features(image, 240.0, (4, 6), 4.0)
    dark = -np.log(89 / 241)
    assert features.shape == (4, 6, 6)
    np.testing.assert_allclose(features[:, 0], 0.0, atol=1e-5)
    np.testing.assert_allclose(features[:, 1], dark / 2, rtol=1e-4)
    np.testing.assert_allclose(features[:, 2, :3], dark, rtol=1e-4)
    np.testing.assert_allclose(features[:, 2, 3:], 0.0, atol=1e-4)
    np.testing.assert_allclose(features[:, 5], 0.0, atol=1e-5)  # past the edge: glass


def test_cells_of_a_fraction_of_a_pixel_more_or_less_read_the_same_look():
    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    image[:, 32:] = 100
    whole = cell_features(image, 240.0, (8, 8), 8.0)
    part = cell_features(image, 240.0, (8, 8), 7.9)
    np.testing.assert_allclose(part[:, [0, 1, 2, 5, 6, 7], :3], whole[:, [0, 1, 2, 5, 6, 7], :3],
                               rtol=1e-4)  # fmt: skip


@pytest.fixture(scope="module")
def callus_slide(tmp_path_factory) -> Path:
    """A 1024 x 1024 px fracture-callus slide at 2 µm/px (2 mm), with its label mask."""
    from ossiclass.synth.slides import SlideSettings, write_slide

    path = tmp_path_factory.mktemp("callus") / "callus.tif"
    return write_slide(path, SlideSettings("fracture_callus", 1024, 1024, 2.0, 5), progress=False)


@pytest.mark.slow  # painting the slide: about 10 s
def test_a_slide_s_tile_map_refined_agrees_better_with_its_label_mask(callus_slide):
    """Tiles of 128 µm labelled with the mask's majority class (a perfect tile classifier),
    refined from the painted slide: more 8 µm cells of the map take their true class."""
    from PIL import Image

    from ossiclass.classmap import class_map
    from ossiclass.histomorphometry import mode_downsample
    from ossiclass.preprocess.tiling import slide_tissue_mask
    from ossiclass.refine import cell_px, refine_map
    from ossiclass.slides import open_slide
    from ossiclass.synth.layouts import SLIDE_CLASSES

    mask = np.asarray(Image.open(callus_slide.with_suffix(".labels.png")))
    box, rows = 64, []
    for y in range(0, mask.shape[0], box):
        for x in range(0, mask.shape[1], box):
            counts = np.bincount(mask[y : y + box, x : x + box].ravel(), minlength=256)
            if counts[BACKGROUND_LABEL] < box * box / 2:
                majority = counts[: len(SLIDE_CLASSES)].argmax()
                rows.append({"minx": x, "miny": y, "width": box, "height": box} | {
                    f"prob_{c.name}": float(i == majority) for i, c in enumerate(SLIDE_CLASSES)
                })  # fmt: skip
    with open_slide(callus_slide) as slide:
        tissue = slide_tissue_mask(slide)
    cell = cell_px(2.0)
    tiles = class_map(rows, SLIDE_CLASSES, (1024, 1024), cell, 2.0, tissue)
    refined = refine_map(tiles, callus_slide, tissue.glass, box)
    truth = mode_downsample(mask, cell)
    tissue_cells = truth != BACKGROUND_LABEL

    def agreement(labels):
        return ((labels == truth) & tissue_cells).sum() / tissue_cells.sum()

    assert refined.refined and refined.cell_px == cell == 4
    assert agreement(refined.labels) > agreement(tiles.labels) + 0.03


def test_a_slide_read_in_strips_gives_the_map_read_whole(small_slide, monkeypatch):
    from ossiclass import refine as module
    from ossiclass.classes import TISSUE_CLASSES
    from ossiclass.classmap import ClassMap

    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[:, 30:] = 3
    labels[:5] = BACKGROUND_LABEL
    classmap = ClassMap(labels, 16, (1024, 1024), 0.5, TISSUE_CLASSES)
    whole = module.refine_map(classmap, small_slide, None, 128).labels
    monkeypatch.setattr(module, "STRIP_PX", 9)  # strips of two rows of 4-pixel cells
    np.testing.assert_array_equal(module.refine_map(classmap, small_slide, None, 128).labels, whole)
