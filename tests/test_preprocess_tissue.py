import numpy as np
import pytest
from PIL import Image

from ossiclass.preprocess.tiling import slide_tissue_mask
from ossiclass.preprocess.tissue import (
    glass_colour,
    tissue_fraction,
    tissue_mask,
)
from ossiclass.slides import open_slide
from ossiclass.synth.slides import SlideSettings, slide_domain, write_slide
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import make_tile


@pytest.mark.parametrize("layout", ["growth_plate", "fracture_callus", "intramembranous"])
def test_tissue_mask_matches_the_generator(tmp_path, layout):
    path = write_slide(
        tmp_path / "s.tif", SlideSettings(layout, 3072, 2048, 0.5, 21), progress=False
    )
    slide = open_slide(path)
    tissue = slide_tissue_mask(slide)
    mask = tissue.mask
    assert tissue.mpp == pytest.approx(8.0, rel=0.05)
    truth = Image.open(path.with_suffix(".tissue.png")).resize(
        mask.shape[::-1], Image.Resampling.BOX
    )
    truth = np.asarray(truth) > 127
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou >= 0.95, iou
    glass = slide_domain(SlideSettings(layout, 3072, 2048, 0.5, 21)).background
    np.testing.assert_allclose(tissue.glass, glass, atol=2.0)


def test_glass_colour_is_the_bare_glass_and_needs_enough_of_it():
    thumbnail = np.full((100, 100, 3), 120, np.uint8)  # tissue
    thumbnail[:, 60:] = (238, 219, 227)  # tinted glass
    thumbnail[:50, 99] = 255  # a sliver of the scanner's padding
    thumbnail[10:12, 70:72] = 90  # dust
    mask = tissue_mask(thumbnail, mpp=8.0)
    np.testing.assert_array_equal(glass_colour(thumbnail, mask), (238, 219, 227))
    covered = np.ones((100, 100), bool)
    covered[:50, 0] = False  # glass on half a percent of the thumbnail: too little to go by
    assert glass_colour(thumbnail, covered) is None
    dark = thumbnail.copy()
    dark[:, 60:] = (40, 40, 40)  # a dark background around the tissue is no glass
    assert glass_colour(dark, np.arange(100)[None, :].repeat(100, 0) < 60) is None


def test_blank_and_uniform_thumbnails_give_no_tissue():
    for value in (255, 225):
        assert not tissue_mask(np.full((64, 64, 3), value, np.uint8), mpp=8.0).any()


def test_glass_along_the_border_is_not_a_hole():
    thumbnail = np.full((100, 100, 3), 150, np.uint8)
    thumbnail[:, 95:] = 235  # a thin strip of glass at the edge
    assert not tissue_mask(thumbnail, mpp=8.0)[:, 96:].any()


def test_specks_are_dropped_and_holes_filled():
    thumbnail = np.full((100, 100, 3), 235, np.uint8)
    thumbnail[20:80, 20:80] = (150, 90, 160)  # tissue, 480 µm square at 8 µm/px
    thumbnail[45:50, 45:50] = 235  # a 40 µm hole: fat
    thumbnail[5:7, 90:92] = (60, 30, 90)  # a 16 µm speck: dust
    mask = tissue_mask(thumbnail, mpp=8.0)
    assert mask[47, 47] and not mask[6, 91]
    assert mask.sum() == 60 * 60


def test_tissue_fraction_sees_glass():
    tile = make_tile("mesenchyme", 0, 0, sample_domains(0, 1), 128, 0.5)[0]
    glass = np.full_like(tile, 240)
    assert tissue_fraction(tile, 240) > 0.5 and tissue_fraction(glass, 240) == 0.0
