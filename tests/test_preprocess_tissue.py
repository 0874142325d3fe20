from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from ossiclass.preprocess.stain import STAIN_HISTOGRAM, stain_densities
from ossiclass.preprocess.tiling import slide_tissue_mask
from ossiclass.preprocess.tissue import (
    IO,
    MAX_HOLE_UM2,
    glass_colour,
    glass_mask,
    mean_glass,
    stained_mask,
    tissue_fraction,
    tissue_mask,
    white_balance,
)
from ossiclass.slides import open_slide
from ossiclass.synth.slides import SlideSettings, slide_domain, write_slide
from ossiclass.synth.stains import render, sample_domains
from ossiclass.synth.tiles import make_tile


@pytest.mark.parametrize(
    "layout",
    [
        "growth_plate",
        pytest.param("fracture_callus", marks=pytest.mark.slow),  # each slide ~3 s
        pytest.param("intramembranous", marks=pytest.mark.slow),
    ],
)
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


def test_pale_tissue_that_meets_denser_tissue_counts():
    thumbnail = np.full((100, 100, 3), 240, np.uint8)  # glass
    thumbnail[:, :40] = 120  # dense tissue
    # Loose mesenchyme: half its pixels (cells) at 0.2 summed optical density, half (ground
    # substance) at 0.08, under the pale-tissue threshold: alone they would be specks.
    thumbnail[:, 40:80] = np.where(np.indices((100, 40)).sum(axis=0) % 2, 224, 234)[..., None]
    mask = tissue_mask(thumbnail, mpp=8.0)
    assert mask[:, :80].all() and not mask[:, 80:].any()


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


def _lab_square(lightness: float, size: int = 100) -> np.ndarray:
    lab = np.zeros((size, size, 3))
    lab[..., 0] = lightness
    return lab


def test_glass_mask_counts_holes_in_tissue_as_tissue():
    mpp = 1.0
    hole_side = int(np.sqrt(MAX_HOLE_UM2)) - 2  # a square lacuna just under the largest hole
    lab = _lab_square(60.0)
    lab[10 : 10 + hole_side, 10 : 10 + hole_side, 0] = 95.0
    lab[55:95, 55:95, 0] = 95.0  # 40 x 40 µm inside the tissue: larger than any hole, so glass
    lab[:, 98:, 0] = 95.0  # a strip along the edge: 200 µm², but no hole in the tissue
    glass = glass_mask(lab, mpp)
    assert not glass[10 : 10 + hole_side, 10 : 10 + hole_side].any()
    assert glass[55:95, 55:95].all() and glass[:, 98:].all()
    assert glass.sum() == 40 * 40 + 2 * 100
    assert glass_mask(lab, mpp * 2)[10 : 10 + hole_side, 10 : 10 + hole_side].all()  # 4x larger


def test_glass_mask_finds_the_glass_of_a_dim_scan():
    lab = _lab_square(50.0)
    lab[50:, :, 0] = 85.0  # glass under L* 90: a dim scan's
    assert glass_mask(lab, 1.0)[50:].all() and not glass_mask(lab, 1.0)[:50].any()
    assert glass_mask(_lab_square(85.0), 1.0).all()  # blank glass: nothing to normalise


def test_stained_mask_keeps_a_weak_labs_faint_matrix_and_no_glass_noise():
    fitted = STAIN_HISTOGRAM.fit(
        make_tile("mesenchyme", 0, 0, sample_domains(0, 1), 256, 0.5)[0], mpp=0.5
    )
    lab = sample_domains(2, 8)[5]  # bright glass, and loose pale matrix between cells
    stained, bright = [], []
    for strength in (0.7, 1.0, 1.4):  # the same tissue, its dyes from weak to strong
        domain = replace(lab, strengths=tuple(s * strength for s in lab.strengths))
        tile = make_tile("mesenchyme", 1, 0, [domain], 256, 0.5)[0]
        stained.append(stained_mask(stain_densities(tile, 0.5), 0.5).mean())
        bright.append((~glass_mask(rgb2lab(tile), 0.5)).mean())
    # A threshold on lightness loses the faint matrix as the dyes weaken; ours keeps more of
    # it, at every strength, and loses less of it to a weaker stain.
    assert min(stained) > max(bright) and np.ptp(stained) < np.ptp(bright), (stained, bright)
    for domain in sample_domains(2, 8):  # glass alone, under each lab's noise and JPEG
        if domain.vignetting == 0:
            glass = render(np.zeros((4, 256, 256), np.float32), domain, np.random.default_rng(0))
            assert not stained_mask(stain_densities(glass, 0.5), 0.5).any()
            assert not fitted.normalize(glass)[1][0]


def test_stained_mask_keeps_lacunae_and_leaves_blur_and_specks_to_the_glass():
    image = np.full((128, 128, 3), 240, np.uint8)
    image[:, :64] = (215, 150, 190)  # eosin-pink tissue on the left, glass on the right
    image[:, 58:64] = (90, 40, 140)  # a row of nuclei along its edge, 3 µm wide at 0.5 µm/px
    image[40:70, 15:45] = 240  # a lacuna, 15 µm across
    image[100:104, 100:104] = (90, 40, 140)  # a speck of dust on the glass
    image[:4, 124:] = (90, 40, 140)  # and one that the image's edge cuts
    tissue = stained_mask(stain_densities(image, 0.5), 0.5)
    assert tissue[:, :64].all()  # the lacuna included
    assert tissue[:4, 124:].all()  # what the edge cuts may be more than a speck: kept
    assert not tissue[16:, 76:].any()  # the nuclei's blur stops within 6 µm (4 µm smoothing: 8)


def test_mean_glass_is_the_glass_and_neutral_where_none_shows():
    image = np.full((64, 64, 3), (231, 219, 236), np.uint8)
    image[:32] = (150, 60, 120)  # tissue over the top half, glass below
    np.testing.assert_array_equal(mean_glass(image, 1.0), (231, 219, 236))
    covered = np.full((64, 64, 3), (150, 60, 120), np.uint8)
    np.testing.assert_array_equal(mean_glass([covered, covered], 1.0), (IO, IO, IO))


@pytest.mark.parametrize("glass", [(238.8, 219.1, 227.4), (215.0, 221.0, 240.0)])
def test_white_balance_takes_a_tile_under_tinted_glass_to_neutral_glass(glass):
    domain = sample_domains(3, 1)[0]
    tinted, neutral = (
        make_tile("mesenchyme", 0, 0, [replace(domain, background=background)], 256, 0.5)[0]
        for background in (glass, (IO, IO, IO))
    )
    assert np.abs(tinted.astype(float) - neutral).mean() > 5
    balanced = white_balance(tinted, np.asarray(glass))
    assert np.abs(balanced.astype(float) - neutral).mean() < 0.5
    np.testing.assert_array_equal(white_balance(neutral, np.full(3, IO)), neutral)
