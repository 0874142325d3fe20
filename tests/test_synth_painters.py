import numpy as np
import pytest
from skimage.measure import label
from threadpoolctl import threadpool_limits

from ossiclass.classes import CLASSES
from ossiclass.synth.extra_painters import EXTRA_PAINTERS, PAINTED_CLASSES
from ossiclass.synth.painters import (
    PAINTERS,
    _fibrous_tissue,
    paint,
    paint_parts,
    paint_shape,
    painter,
)
from ossiclass.synth.stains import DYES, EOSIN, MATRIX_H, NUCLEI, RBC, render, sample_domains


@pytest.mark.parametrize("name", PAINTED_CLASSES)
def test_every_painter_gives_finite_non_negative_dye_maps(name):
    for seed in range(3):
        maps = paint(name, np.random.default_rng(seed), (128, 96), 0.5)
        assert maps.shape == (len(DYES), 64, 48) and maps.dtype == np.float32
        assert np.isfinite(maps).all() and maps.min() >= 0
        assert maps.max() > 0.1  # something was painted


def test_one_painter_per_class():
    assert tuple(PAINTERS) == CLASSES
    assert PAINTED_CLASSES == (*CLASSES, "marrow", "fat")
    assert painter("fat") is EXTRA_PAINTERS["fat"]
    with pytest.raises(ValueError, match="no painter for class 'muscle'"):
        painter("muscle")


def test_painting_resolution_is_at_most_halved():
    assert paint_shape((256, 256), 0.5) == ((128, 128), 1.0)
    assert paint_shape((256, 256), 0.25) == ((128, 128), 0.5)
    assert paint_shape((256, 256), 1.0) == ((256, 256), 1.0)


def _nucleus_count(name, mpp, seeds=range(6)):
    counts = []
    for seed in seeds:
        maps = paint(name, np.random.default_rng(seed), (256, 256), mpp, artefacts=False)
        counts.append(label(maps[NUCLEI] > 0.5).max())
    return np.mean(counts)


def test_structures_keep_their_physical_size():
    # A 256 px tile covers 128 µm at 0.5 µm/px but only 64 µm at 0.25: a quarter of the cells.
    ratio = _nucleus_count("mesenchyme", 0.5) / _nucleus_count("mesenchyme", 0.25)
    assert 2.5 < ratio < 6


def _island_fraction(maps):
    """Share of a field that is haemorrhage, cartilage or bone rather than fibrous tissue."""
    return ((maps[RBC] > 0.5) | (maps[MATRIX_H] > 0.08) | (maps[EOSIN] > 0.65)).mean()


def test_callus_is_granulation_tissue_with_islands_in_most_fields():
    # Every callus field holds fibrous tissue; most also islands of blood, cartilage or woven
    # bone, and about a quarter (soft callus) are granulation tissue alone.
    fractions = []
    for seed in range(32):
        maps = paint("callus", np.random.default_rng(seed), (256, 256), 0.5, artefacts=False)
        assert maps[NUCLEI].max() > 0.5
        fractions.append(_island_fraction(maps))
    assert 0.1 < np.mean(np.array(fractions) < 0.01) < 0.4
    fibrous = _fibrous_tissue(np.random.default_rng(0), (128, 128), 1.0)
    assert _island_fraction(fibrous) < 0.02


def test_a_callus_field_says_which_of_its_pixels_are_cartilage_and_woven_bone():
    """`paint_parts` draws the same field as `paint` and names its islands: cartilage where
    the matrix takes hematoxylin, woven bone where eosin is densest (between its marrow)."""
    seen = set()
    for seed in range(12):
        maps, parts = paint_parts("callus", np.random.default_rng(seed), (256, 256), 0.5)
        same = paint("callus", np.random.default_rng(seed), (256, 256), 0.5)
        np.testing.assert_array_equal(maps, same)
        assert parts.shape == maps.shape[1:] and set(np.unique(parts)) <= {0, 1, 2}
        seen |= set(np.unique(parts).tolist())
        fibrous = parts == 0
        if (parts == 1).mean() > 0.05:  # cartilage: hematoxylin in the matrix
            assert np.median(maps[MATRIX_H][parts == 1]) > np.median(maps[MATRIX_H][fibrous]) + 0.05
        if (parts == 2).mean() > 0.05:  # woven bone: its matrix denser in eosin than collagen
            assert np.percentile(maps[EOSIN][parts == 2], 90) > np.percentile(
                maps[EOSIN][fibrous], 90
            )
    assert seen == {0, 1, 2}
    assert paint_parts("woven_bone", np.random.default_rng(0), (64, 64), 0.5)[1] is None


def test_a_callus_keeps_as_much_of_its_cartilage_islands_as_a_study_paints():
    shares = []
    for cartilage in (0.0, 0.5, 1.0, 2.0):
        parts = [
            paint_parts(
                "callus", np.random.default_rng(seed), (128, 128), 1.0, None, True, cartilage
            )[1]  # fmt: skip
            for seed in range(24)
        ]
        shares.append(np.mean([(p == 1).mean() for p in parts]))
    assert shares[0] == 0 and shares[0] < shares[1] < shares[2] < shares[3]


def _clear_share(maps):
    """Share of a field with almost no matrix: the clear space of loose tissue."""
    return (maps[EOSIN] < 0.03).mean()


def test_mesenchyme_is_loose_where_granulation_tissue_is_dense():
    # TISSUES.md: mesenchyme has plenty of clear space; fibrous callus is packed with collagen.
    loose = [
        _clear_share(paint("mesenchyme", np.random.default_rng(seed), (256, 256), 0.5, None, False))
        for seed in range(8)
    ]
    dense = [
        _clear_share(_fibrous_tissue(np.random.default_rng(seed), (128, 128), 1.0))
        for seed in range(8)
    ]
    assert np.mean(loose) > 0.1 and np.mean(dense) < 0.02


def test_tiles_of_one_class_differ():
    first = paint("lamellar_bone", np.random.default_rng(0), (128, 128), 0.5)
    second = paint("lamellar_bone", np.random.default_rng(1), (128, 128), 0.5)
    assert np.abs(first - second).mean() > 0.05


@pytest.mark.parametrize("seed", range(3))
def test_orientation_turns_the_hypertrophic_columns(seed):
    # Same draws, columns turned from along x to along y: the same picture turned by 90 degrees.
    along_y = paint(
        "hypertrophic_zone", np.random.default_rng(seed), (256, 256), 0.5, np.pi / 2, False
    )
    along_x = paint("hypertrophic_zone", np.random.default_rng(seed), (256, 256), 0.5, 0.0, False)
    correlation = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    assert correlation(along_y[1], np.rot90(along_x[1], -1)) > 0.8
    assert abs(correlation(along_y[1], along_x[1])) < 0.3


def _statistics(name, seeds=range(6), size=(192, 192)):
    """Per tile of `name`: share of unstained dye map, nuclear coverage, share of pixels as
    white as the lab's glass once rendered (a lab per tile)."""
    labs = sample_domains(0, len(seeds))
    clear, nuclei, white = [], [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        maps = paint(name, rng, size, 0.5)
        clear.append((maps.sum(axis=0) < 0.05).mean())
        nuclei.append((maps[NUCLEI] > 0.5).mean())
        lab = labs[seed % len(labs)]
        image = render(maps, lab, rng, size).astype(float)
        white.append((np.abs(image - lab.background).max(axis=-1) < 20).mean())
    return np.array(clear), np.array(nuclei), np.array(white)


@pytest.fixture(scope="module")
def statistics():
    with threadpool_limits(1):  # BLAS threads slow painting's small products down many times
        return {name: _statistics(name) for name in PAINTED_CLASSES}


def test_fat_is_mostly_empty_glass_unlike_any_of_the_six(statistics):
    # TISSUES.md: fat is large empty spaces with thin membranes, almost no nuclei; the six,
    # hypertrophic lacunae and mesenchyme's clear space included, are mostly stained.
    clear, nuclei, white = statistics["fat"]
    assert clear.min() > 0.8 and nuclei.mean() < 0.005 and white.mean() > 0.7
    for name in CLASSES:
        assert statistics[name][2].mean() < 0.35, name
        assert statistics[name][0].mean() < 0.3, name


def test_marrow_is_packed_with_nuclei_beyond_any_of_the_six(statistics):
    # Haematopoietic marrow: dense small nuclei, more than mesenchyme's condensations, callus'
    # fibroblasts, the hypertrophic zone's few pyknotic nuclei, or woven bone's marrow spaces.
    marrow = statistics["marrow"][1]
    assert marrow.min() > 0.08
    for name in CLASSES:
        assert marrow.mean() > 1.5 * statistics[name][1].mean(), name


def test_marrow_sinusoids_hold_red_cells():
    fields = [
        paint("marrow", np.random.default_rng(seed), (512, 512), 0.5, None, False)
        for seed in range(8)
    ]
    assert sum((maps[RBC] > 0.5).mean() > 0.005 for maps in fields) >= 6
