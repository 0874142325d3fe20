import numpy as np
import pytest
import tifffile

from ossiclass.preprocess.tiling import TileBox, read_tile, tile_grid
from ossiclass.slides import open_slide
from ossiclass.synth.slides import SlideSettings, write_slide


def test_grid_boxes_are_level0_and_scale_with_mpp():
    boxes = list(tile_grid((1000, 600), mpp=0.25, tile_px=100, target_mpp=0.5))
    assert all(b.width == b.height == 200 for b in boxes)  # 100 px at 0.5 µm/px = 200 at 0.25
    assert len(boxes) == 5 * 3
    assert (boxes[1].x, boxes[1].y) == (200, 0)


def test_grid_stride_overlap():
    boxes = list(tile_grid((400, 200), mpp=0.5, tile_px=200, target_mpp=0.5, stride_px=100))
    assert [b.x for b in boxes] == [0, 100, 200]


def test_grid_keeps_boxes_with_enough_tissue():
    mask = np.zeros((10, 20), bool)
    mask[:, :10] = True  # left half of a 2000 x 1000 image
    boxes = list(tile_grid((2000, 1000), 0.5, 500, 0.5, mask=mask, min_tissue=0.5))
    assert [b.x for b in boxes] == [0, 500, 0, 500]
    assert all(b.tissue == 1.0 for b in boxes)


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("slide") / "gp.tif"
    return write_slide(path, SlideSettings("growth_plate", 2048, 2048, 0.5, 5), progress=False)


def test_tiles_read_at_another_scale_match_the_pixels(slide_path):
    slide = open_slide(slide_path)
    level0 = tifffile.imread(slide_path)
    box = TileBox(512, 768, 256, 256, 1.0)
    np.testing.assert_array_equal(read_tile(slide, box, 256), level0[768:1024, 512:768])
    half = read_tile(slide, box, 128)  # 1 µm/px: read from level 1, no resizing
    assert half.shape == (128, 128, 3)
    assert np.abs(half.astype(float).mean() - level0[768:1024, 512:768].mean()) < 2
