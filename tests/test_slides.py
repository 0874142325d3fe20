import numpy as np
import pytest
import tifffile
from PIL import Image

from ossiclass.errors import ImageReadError
from ossiclass.slides import open_slide


def test_tiled_pyramid_regions_levels_and_mpp(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            image,
            tile=(256, 256),
            subifds=1,
            resolution=(1e4 / 0.25, 1e4 / 0.25),
            resolutionunit="CENTIMETER",
            photometric="rgb",
        )
        tif.write(image[::2, ::2], tile=(256, 256), subfiletype=1, photometric="rgb")
    slide = open_slide(path)
    assert slide.dimensions == (800, 600)
    assert slide.mpp == pytest.approx(0.25)
    assert slide.level_downsamples == [1.0, 2.0]
    np.testing.assert_array_equal(slide.read_region(100, 50, 30, 20), image[50:70, 100:130])
    np.testing.assert_array_equal(
        slide.read_region(100, 50, 10, 10, level=1), image[::2, ::2][25:35, 50:60]
    )
    edge = slide.read_region(790, 590, 20, 20)  # runs past the corner: glass-white there
    np.testing.assert_array_equal(edge[:10, :10], image[590:, 790:])
    assert (edge[10:, :] == 255).all()
    thumbnail, downsample = slide.thumbnail(400)
    assert thumbnail.shape == (300, 400, 3) and downsample == 2.0
    assert open_slide(path, mpp=0.5).mpp == 0.5


def test_plain_images_are_one_level_slides(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(path)
    slide = open_slide(path, mpp=0.5)
    assert slide.dimensions == (50, 40) and slide.level_downsamples == [1.0]
    assert slide.read_region(45, 0, 10, 5).shape == (5, 10, 3)


def test_missing_and_corrupt_slides(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        open_slide(tmp_path / "none.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError):
        open_slide(bad)


def test_a_slide_cut_short_in_its_table_of_tiles_is_refused_when_opened(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.zeros((256, 256, 3), np.uint8), tile=(16, 16))  # 256 tiles
    path.write_bytes(path.read_bytes()[:600])  # the offsets of most tiles are gone
    with pytest.raises(ImageReadError, match=r"^\S+cut.tif: damaged image data \(its table"):
        open_slide(path)


def test_a_tiff_that_is_no_image_is_named_so_once(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((4, 64, 64, 3), np.uint8), tile=(16, 16))
    with pytest.raises(ImageReadError) as refused:
        open_slide(path)
    assert str(refused.value) == f"{path}: a TIFF of axes QYXS, not a grey or RGB image"


def test_an_aperio_svs_opens_through_tiffslide(tmp_path):
    pytest.importorskip("tiffslide", reason="the optional wsi extra is not installed")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (512, 768, 3), dtype=np.uint8)
    path = tmp_path / "scan.svs"
    description = "Aperio Image Library v12.0.0\n768x512 (256x256) RAW|AppMag = 40|MPP = 0.2520"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), photometric="rgb", description=description)
        tif.write(image[::4, ::4], tile=(64, 64), photometric="rgb", description="Aperio level")
    slide = open_slide(path)
    assert slide.dimensions == (768, 512)
    assert slide.mpp == pytest.approx(0.252)
    np.testing.assert_array_equal(slide.read_region(300, 100, 40, 30), image[100:130, 300:340])
    slide.close()


def test_a_scanner_format_without_the_extra_is_one_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tiffslide", None)  # as if not installed
    path = tmp_path / "scan.ndpi"
    path.write_bytes(b"II*\x00")
    with pytest.raises(ImageReadError, match=r"pip install 'ossiclass\[wsi\]'"):
        open_slide(path)


@pytest.mark.parametrize("compression", ["zlib", "jpeg"])
def test_tiled_levels_read_what_tifffile_reads(tmp_path, compression):
    """Windows that cross TIFF tiles and the image's edge, read tile by tile (with the decoded
    tile cache), equal tifffile's own reading of the level, for deflate and JPEG tiles."""
    image = np.asarray(Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 40, 3),
                       dtype=np.uint8)).resize((700, 530)))  # fmt: skip
    path = tmp_path / f"{compression}.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(64, 128), compression=compression, photometric="rgb", subifds=1)
        tif.write(image[::2, ::2], tile=(64, 64), compression=compression, photometric="rgb",
                  subfiletype=1)  # fmt: skip
    expected = [page.asarray() for page in tifffile.TiffFile(path).series[0].levels]
    rng = np.random.default_rng(3)
    with open_slide(path, mpp=0.5) as slide:
        assert type(slide._levels[0]).__name__ == "TiledLevel"
        for level, truth in enumerate(expected):
            height, width = truth.shape[:2]
            for _ in range(40):
                y0, x0 = rng.integers(0, height), rng.integers(0, width)
                y1, x1 = rng.integers(y0 + 1, height + 1), rng.integers(x0 + 1, width + 1)
                np.testing.assert_array_equal(slide._levels[level][y0:y1, x0:x1],
                                              truth[y0:y1, x0:x1])  # fmt: skip


def test_planar_tiffs_are_read_through_zarr(tmp_path):
    image = np.random.default_rng(4).integers(0, 256, (3, 300, 260), dtype=np.uint8)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, image, tile=(128, 128), photometric="rgb", planarconfig="separate")
    with open_slide(path, mpp=0.5) as slide:
        assert type(slide._levels[0]).__name__ != "TiledLevel"
        np.testing.assert_array_equal(
            slide.read_region(10, 20, 200, 150), np.moveaxis(image, 0, -1)[20:170, 10:210]
        )


@pytest.mark.parametrize("recorded", ["1" + "0" * 400, '"0.5 um"', "null", "-1"])
def test_a_description_recording_no_usable_mpp_reads_as_no_scale(tmp_path, recorded):
    path = tmp_path / "described.tif"
    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    tifffile.imwrite(path, image, photometric="rgb", description=f'{{"mpp": {recorded}}}',
                     metadata=None)  # fmt: skip
    slide = open_slide(path)
    assert slide.scale.source == "assumed" and slide.mpp == 0.5


def test_a_tiled_slide_not_in_rgb_or_cut_short_is_refused_in_one_line(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (512, 512, 4), dtype=np.uint8)
    cmyk = tmp_path / "cmyk.tif"
    tifffile.imwrite(cmyk, image, tile=(256, 256), photometric="separated")
    with pytest.raises(ImageReadError, match="a tiled TIFF in CMYK: save it as RGB or grey"):
        open_slide(cmyk)
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, image[..., :3], tile=(128, 128), compression="jpeg", photometric="rgb")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[:-3000])
    with pytest.raises(ImageReadError, match="the file ends before its pixels do") as caught:
        open_slide(cut)
    assert "\n" not in str(caught.value)
