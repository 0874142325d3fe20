"""Macenko against torchstain on real H&E; degenerate tiles; slide-level and batched paths;
the statistics normalisers' glass and tissue; white balance."""

import json
from dataclasses import replace

import numpy as np
import pytest
from skimage.color import rgb2hed, rgb2lab
from skimage.data import immunohistochemistry

from ossiclass.imageio import read_image
from ossiclass.preprocess.stain import (
    IO,
    MAX_HOLE_UM2,
    HistogramNormalizer,
    MacenkoNormalizer,
    ReinhardNormalizer,
    StainHistogramNormalizer,
    glass_mask,
    normalizer_from_dict,
    stained_mask,
    white_balance,
)
from ossiclass.synth.stains import StainDomain, render, sample_domains
from ossiclass.synth.tiles import make_tile

STATISTICS_NORMALIZERS = (ReinhardNormalizer, HistogramNormalizer, StainHistogramNormalizer)

torchstain = pytest.importorskip("torchstain", reason="torchstain is a dev dependency")


def _real_images(folder):
    return [read_image(path) for path in sorted(folder.glob("*.jpg"))]


def _torchstain(reference, image):
    normalizer = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    normalizer.fit(reference)
    return normalizer.normalize(image, stains=False)[0]


def test_macenko_agrees_with_torchstain_on_real_he(reference_he):
    images = _real_images(reference_he) + [immunohistochemistry()]
    reference = images[2]  # trabecular bone with marrow
    ours = MacenkoNormalizer.fit(reference)
    for image in images:
        normalized, ok = ours.normalize(image)
        assert ok.all()
        difference = np.abs(normalized.astype(float) - _torchstain(reference, image)).mean()
        assert difference <= 2.0, difference


def test_macenko_agrees_with_torchstain_on_scikit_image_ihc():
    image = immunohistochemistry()
    reference = image[::-1, ::-1].copy()
    normalized, ok = MacenkoNormalizer.fit(reference[:256]).normalize(image)
    assert ok.all()
    assert np.abs(normalized.astype(float) - _torchstain(reference[:256], image)).mean() <= 2.0


@pytest.fixture(scope="module")
def normalizer():
    return MacenkoNormalizer.fit(make_tile("woven_bone", 3, 0, sample_domains(0, 8), 256, 0.5)[0])


def _degenerate_tiles():
    rng = np.random.default_rng(0)
    blank = np.full((64, 64, 3), 240, np.uint8)
    black = np.zeros((64, 64, 3), np.uint8)
    saturated = np.full((64, 64, 3), 255, np.uint8)
    speck = blank.copy()
    speck[30:33, 30:33] = (90, 40, 140)
    one_stain = np.clip(
        240 * np.exp(-np.outer(rng.random(64 * 64) * 2, [0.65, 0.70, 0.29])), 0, 255
    )
    one_stain = one_stain.reshape(64, 64, 3).astype(np.uint8)
    # Hypertrophic zone (purple matrix, empty lacunae, hardly any eosin) from a lab whose glass
    # scans at 213, below io: the glass's OD along grey once passed for a second stain.
    lab = StainDomain(
        stain_vectors=((0.667, 0.711, 0.224), (0.099, 0.920, 0.379), (0.055, 0.791, 0.610)),
        strengths=(0.917, 1.509, 1.808),
        decalcification=0.0,
        background=(213.5, 221.0, 220.9),
        blur_px=0.11,
        noise=1.83,
        jpeg_quality=62,
        vignetting=0.145,
    )
    dim_glass = make_tile("hypertrophic_zone", 3, 0, [lab], 256, 0.5)[0]
    return {
        "blank": blank,
        "black": black,
        "saturated": saturated,
        "speck": speck,
        "one stain": one_stain,
        "one stain on dim glass": dim_glass,
    }


@pytest.mark.parametrize("name", list(_degenerate_tiles()))
def test_degenerate_tiles_pass_through_flagged(normalizer, name):
    tile = _degenerate_tiles()[name]
    out, ok = normalizer.normalize(tile)
    assert not ok[0]
    np.testing.assert_array_equal(out, tile)
    assert normalizer.estimate(tile) is None


@pytest.mark.parametrize("name", list(_degenerate_tiles()))
def test_degenerate_tiles_and_the_statistics_normalisers(name):
    reference = make_tile("woven_bone", 3, 0, sample_domains(0, 8), 256, 0.5)[0]
    tile = _degenerate_tiles()[name]
    for method in STATISTICS_NORMALIZERS:
        normalizer = method.fit(reference, mpp=0.5)
        out, ok = normalizer.normalize(tile)
        if name.startswith("one stain"):  # no basis to unmix, but tissue to match all the same
            assert ok[0] and (out != tile).any()
        else:
            assert not ok[0] and normalizer.estimate(tile) is None
            np.testing.assert_array_equal(out, tile)


def test_degenerate_tiles_do_not_spoil_a_batch(normalizer):
    good = make_tile("lamellar_bone", 1, 0, sample_domains(0, 8), 64, 0.5)[0]
    batch = np.stack([good, _degenerate_tiles()["blank"], good])
    out, ok = normalizer.normalize(batch)
    assert ok.tolist() == [True, False, True]
    assert np.isfinite(out.astype(float)).all()
    np.testing.assert_array_equal(out[0], out[2])


def test_a_slide_level_estimate_maps_each_tile_as_its_own_estimate_would(normalizer):
    domains = sample_domains(7, 1)
    tiles = np.stack([make_tile("callus", i, 7, domains, 96, 0.5)[0] for i in range(4)])
    stains = normalizer.estimate(list(tiles))
    assert stains is not None
    out, ok = normalizer.normalize(tiles, stains)
    assert ok.all() and (out != tiles).any()
    # One tile's own estimate, given as the slide's, maps it as the per-tile path does.
    np.testing.assert_array_equal(
        normalizer.normalize(tiles[1], normalizer.estimate(tiles[1]))[0],
        normalizer.normalize(tiles[1])[0],
    )


def test_reference_round_trips_through_json(normalizer):
    data = json.loads(json.dumps(normalizer.to_dict()))
    again = normalizer_from_dict(data)
    tile = make_tile("callus", 0, 1, sample_domains(1, 1), 64, 0.5)[0]
    np.testing.assert_array_equal(again.normalize(tile)[0], normalizer.normalize(tile)[0])
    with pytest.raises(ValueError, match="unknown stain normaliser"):
        normalizer_from_dict({"method": "vahadane"})


def _hed_spread(tiles_by_domain):
    means = np.array(
        [[rgb2hed(t)[..., :2].mean(axis=(0, 1)) for t in tiles] for tiles in tiles_by_domain]
    )
    return means.mean(axis=1).std(axis=0).sum()  # spread of the domains' mean H and E


@pytest.mark.parametrize("method", [MacenkoNormalizer, *STATISTICS_NORMALIZERS])
def test_normalisation_shrinks_the_spread_between_labs(method):
    domains = sample_domains(11, 8)
    tiles = [
        [make_tile("hyaline_cartilage", d + 8 * i, 11, domains, 128, 0.5)[0] for i in range(3)]
        for d in range(8)
    ]
    fitted = method.fit(make_tile("hyaline_cartilage", 0, 99, sample_domains(99, 1), 256, 0.5)[0])
    after = [[fitted.normalize(t)[0] for t in domain_tiles] for domain_tiles in tiles]
    assert _hed_spread(after) <= _hed_spread(tiles) / 2


@pytest.mark.parametrize("method", STATISTICS_NORMALIZERS)
def test_statistics_normalisers_degenerate_and_round_trip(method):
    fitted = method.fit(make_tile("mesenchyme", 0, 0, sample_domains(0, 1), 128, 0.5)[0], mpp=1.0)
    for degenerate in (np.full((32, 32, 3), 250, np.uint8), np.full((32, 32, 3), 120, np.uint8)):
        out, ok = fitted.normalize(degenerate)  # glass alone; one flat colour
        assert not ok[0] and (out == degenerate).all()
    saved = json.loads(json.dumps(fitted.to_dict()))
    again = normalizer_from_dict(saved)
    assert isinstance(again, method) and again.mpp == 1.0 and again.reference == fitted.reference
    assert again.to_dict() == fitted.to_dict()
    tile = make_tile("callus", 0, 0, sample_domains(0, 1), 64, 0.5)[0]
    np.testing.assert_array_equal(again.normalize(tile)[0], fitted.normalize(tile)[0])
    older = {key: value for key, value in saved.items() if key != "mpp"}  # saved before mpp
    assert normalizer_from_dict(older, mpp=2.0).mpp == 2.0


def _saved_histogram(**changes) -> dict:
    tile = make_tile("mesenchyme", 0, 0, sample_domains(0, 1), 128, 0.5)[0]
    return {**HistogramNormalizer.fit(tile, mpp=0.5).to_dict(), **changes}


@pytest.mark.parametrize(
    "saved",
    [
        _saved_histogram(mpp=0),
        _saved_histogram(mpp=None),
        _saved_histogram(reference={"levels": [[0.0] * 101] * 2}),
        _saved_histogram(reference={"levels": [list(range(101, 0, -1))] * 3}),
        {"method": "reinhard", "reference": {"mean": [50, 0], "std": [1, 1, 1]}, "mpp": 0.5},
        {"method": "reinhard", "reference": {"mean": [50, 0, 0], "std": [1, 0, 1]}, "mpp": 0.5},
        {**_saved_histogram(), "method": "stain-histogram", "glass": [240, 240]},
        {**_saved_histogram(), "method": "stain-histogram", "glass": [240, -1, 240]},
    ],
)
def test_a_broken_saved_reference_is_refused(saved):
    with pytest.raises(ValueError):
        normalizer_from_dict(saved)


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


def test_statistics_normalisers_normalise_holes_and_treat_glass_as_glass():
    pink, reference_pink = (200, 120, 170), (170, 90, 150)
    image = np.empty((64, 64, 3), np.uint8)
    image[:] = pink
    image[:40, :40] = (235, 235, 235)  # 40 x 40 px at 1 µm/px: larger than a hole, glass
    image[44:50, 44:50] = (235, 235, 235)  # 6 x 6 px: a lacuna
    image[52:62, 5:30] = (150, 60, 120)  # some darker tissue, so the tissue varies
    reference = np.empty_like(image)
    reference[:] = reference_pink
    reference[52:62, 5:30] = (120, 40, 100)
    for method in STATISTICS_NORMALIZERS:
        fitted = method.fit(reference, mpp=1.0)
        out, ok = fitted.normalize(image)
        assert ok[0]
        # The CIELAB methods leave the glass; the stain densities give it the reference's,
        # neutral where the reference shows none (its edge, within the smoothing, is tissue).
        if method == StainHistogramNormalizer:
            assert (out[:36, :36] == IO).all()
        else:
            np.testing.assert_array_equal(out[:40, :40], image[:40, :40])
        assert (out[44:50, 44:50] != image[44:50, 44:50]).any()
        assert np.abs(out[20, 55].astype(int) - reference_pink).max() <= 3


def test_bad_arrays_are_refused(normalizer):
    reference = make_tile("mesenchyme", 0, 0, sample_domains(0, 1), 64, 0.5)[0]
    for fitted in (normalizer, *(method.fit(reference) for method in STATISTICS_NORMALIZERS)):
        with pytest.raises(ValueError, match="uint8"):
            fitted.normalize(np.zeros((8, 8, 3), np.float32))


def test_stained_mask_keeps_a_weak_labs_faint_matrix_and_no_glass_noise():
    fitted = StainHistogramNormalizer.fit(
        make_tile("mesenchyme", 0, 0, sample_domains(0, 1), 256, 0.5)[0]
    )
    lab = sample_domains(2, 8)[5]  # bright glass, and loose pale matrix between cells
    stained, bright = [], []
    for strength in (0.7, 1.0, 1.4):  # the same tissue, its dyes from weak to strong
        domain = replace(lab, strengths=tuple(s * strength for s in lab.strengths))
        tile = make_tile("mesenchyme", 1, 0, [domain], 256, 0.5)[0]
        stained.append(stained_mask(fitted.densities(tile), 0.5).mean())
        bright.append((~glass_mask(rgb2lab(tile), 0.5)).mean())
    # A threshold on lightness loses the faint matrix as the dyes weaken; ours keeps more of
    # it, at every strength, and loses less of it to a weaker stain.
    assert min(stained) > max(bright) and np.ptp(stained) < np.ptp(bright), (stained, bright)
    for domain in sample_domains(2, 8):  # glass alone, under each lab's noise and JPEG
        if domain.vignetting == 0:
            glass = render(np.zeros((4, 256, 256), np.float32), domain, np.random.default_rng(0))
            assert not stained_mask(fitted.densities(glass), 0.5).any()
            assert not fitted.normalize(glass)[1][0]


def test_stained_mask_keeps_lacunae_and_leaves_blur_and_specks_to_the_glass():
    image = np.full((128, 128, 3), 240, np.uint8)
    image[:, :64] = (215, 150, 190)  # eosin-pink tissue on the left, glass on the right
    image[:, 58:64] = (90, 40, 140)  # a row of nuclei along its edge, 3 µm wide at 0.5 µm/px
    image[40:70, 15:45] = 240  # a lacuna, 15 µm across
    image[100:104, 100:104] = (90, 40, 140)  # a speck of dust on the glass
    image[:4, 124:] = (90, 40, 140)  # and one that the image's edge cuts
    tissue = stained_mask(StainHistogramNormalizer(None).densities(image), 0.5)
    assert tissue[:, :64].all()  # the lacuna included
    assert tissue[:4, 124:].all()  # what the edge cuts may be more than a speck: kept
    assert not tissue[16:, 76:].any()  # the nuclei's blur stops within 6 µm (4 µm smoothing: 8)


def test_stain_histogram_matches_each_stain_and_gives_the_references_glass():
    reference = make_tile("woven_bone", 0, 1, sample_domains(1, 1), 256, 0.5)[0]
    fitted = StainHistogramNormalizer.fit(reference)
    reference_glass = reference[glass_mask(rgb2lab(reference), 0.5)]
    np.testing.assert_allclose(fitted.glass, reference_glass.mean(axis=0), atol=0.01)
    np.testing.assert_array_equal(fitted.normalize(reference)[0], reference)  # nothing to do
    covered = make_tile("lamellar_bone", 2, 0, sample_domains(0, 8), 128, 0.5)[0]
    out, ok = fitted.normalize(covered)  # tissue from edge to edge: no glass to measure against
    assert ok[0] and np.abs(out.astype(int) - covered).mean() > 5
    tile = make_tile("woven_bone", 5, 0, sample_domains(0, 8), 256, 0.5)[0]
    out, ok = fitted.normalize(tile)
    assert ok[0]

    def tissue_percentiles(image):
        densities = fitted.densities(image)
        return np.percentile(densities[stained_mask(densities, 0.5)], [10, 50, 90], axis=0)

    before = np.abs(tissue_percentiles(tile) - tissue_percentiles(reference)).max()
    after = np.abs(tissue_percentiles(out) - tissue_percentiles(reference)).max()
    assert after < 0.05 < before, (after, before)
    glass = ~stained_mask(fitted.densities(tile), 0.5)  # what it took for glass
    assert glass.mean() > 0.01
    np.testing.assert_allclose(out[glass].mean(axis=0), fitted.glass, atol=2)


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
