import numpy as np
import pytest
import tifffile

from ossiclass.preprocess.tiling import TileBox, read_tile, tile_grid
from ossiclass.slides import open_slide
from ossiclass.synth.slides import SlideSettings, write_slide


def test_grid_boxes_are_level0_and_scale_with_mpp():
    boxes = list(tile_grid((1000, 600), input_mpp=0.25, model_mpp=0.5, tile_px=100))
    assert all(b.width == b.height == 200 for b in boxes)  # 100 px at 0.5 µm/px = 200 at 0.25
    assert len(boxes) == 5 * 3
    assert (boxes[1].x, boxes[1].y) == (200, 0)


def test_grid_stride_overlap():
    boxes = list(tile_grid((400, 200), input_mpp=0.5, model_mpp=0.5, tile_px=200, stride_px=100))
    assert [b.x for b in boxes] == [0, 100, 200]


def test_grid_keeps_boxes_with_enough_tissue():
    mask = np.zeros((10, 20), bool)
    mask[:, :10] = True  # left half of a 2000 x 1000 image
    boxes = list(
        tile_grid(
            (2000, 1000), input_mpp=0.5, model_mpp=0.5, tile_px=500, mask=mask, min_tissue=0.5
        )
    )
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


def test_one_tile_reaches_the_network_alike_in_training_predict_and_classify(tmp_path):
    """A 128 px tile at 0.5 µm/px, for a model of 64 px at 1 µm/px, becomes the same
    (3, 64, 64) uint8 tensor in training's loader, in `predict` (the bundle's preprocessing,
    the µm/px read from the file) and as `classify` reads a slide holding it (its source)."""
    import torch

    from ossiclass.datasets import TileTable, read_tiles
    from ossiclass.imageio import read_image
    from ossiclass.preprocess.tiling import image_tiles
    from ossiclass.preprocessing import Preprocessing
    from ossiclass.slides import image_mpp
    from ossiclass.sources import open_source
    from ossiclass.synth.stains import sample_domains
    from ossiclass.synth.tiles import make_tile

    tile = make_tile("hyaline_cartilage", 0, 0, sample_domains(0, 1), 128, 0.5)[0]
    path = tmp_path / "tile.tif"
    tifffile.imwrite(
        path, tile, photometric="rgb", tile=(64, 64), resolution=(1e4 / 0.5, 1e4 / 0.5),
        resolutionunit="CENTIMETER",
    )  # fmt: skip
    table = TileTable([path], np.array([1]), ["field"])
    trained = read_tiles(table, 64, progress=False)[0][0]

    prep = Preprocessing(model_mpp=1.0, input_px=64)
    served = image_tiles(prep.to_model_scale(read_image(path), image_mpp(path)), 64)
    assert len(served) == 1

    source = open_source(path, prep, input_mpp=None, stride_px=None, min_tissue=0.0)
    with source.open() as slide:
        (read,) = source.read(slide, 0, prep)

    as_tensor = lambda image: torch.from_numpy(np.array(image)).permute(2, 0, 1)  # noqa: E731
    assert torch.equal(trained, as_tensor(served[0]))
    assert torch.equal(trained, as_tensor(read))
