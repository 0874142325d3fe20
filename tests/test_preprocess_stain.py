"""The one interface every normaliser in NORMALIZERS keeps; degenerate tiles; the statistics
normalisers' saved references, glass and tissue."""

import json

import numpy as np
import pytest
from skimage.color import rgb2hed, rgb2lab

from ossiclass.preprocess.stain import (
    HISTOGRAM,
    NORMALIZERS,
    STAIN_HISTOGRAM,
    StatisticsNormalizer,
    normalizer_from_dict,
    stain_densities,
)
from ossiclass.preprocess.tissue import IO, glass_mask, stained_mask
from ossiclass.synth.stains import StainDomain, sample_domains
from ossiclass.synth.tiles import make_tile

STATISTICS = [name for name in NORMALIZERS if name != "macenko"]


@pytest.fixture(scope="module")
def reference():
    return make_tile("woven_bone", 3, 0, sample_domains(0, 8), 256, 0.5)[0]


@pytest.fixture(scope="module")
def fitted(reference):
    return {name: method.fit(reference, mpp=0.5) for name, method in NORMALIZERS.items()}


@pytest.mark.parametrize("name", list(NORMALIZERS))
def test_every_normaliser_keeps_the_one_interface(fitted, name):
    normalizer = fitted[name]
    assert NORMALIZERS[name].method == normalizer.method == name
    assert isinstance(normalizer.per_slide, bool)
    domains = sample_domains(9, 2)
    batch = np.stack([make_tile(c, 0, 9, domains, 64, 0.5)[0] for c in ("callus", "woven_bone")])
    for images, stains in ((batch, None), (batch[0], None), (batch, normalizer.estimate(batch))):
        out, ok = normalizer.normalize(images, stains)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert ok.shape == (len(batch) if images.ndim == 4 else 1,) and ok.dtype == bool
        assert ok.all() and (out != images).any()
    saved = json.loads(json.dumps(normalizer.to_dict()))  # plain data, as bundles keep it
    again = normalizer_from_dict(saved, mpp=0.5, threads=1)
    assert type(again) is type(normalizer) and again.to_dict() == normalizer.to_dict()
    assert again.threads == 1 and normalizer.threads is None
    for stains in (None, normalizer.estimate(batch)):
        ours, theirs = normalizer.normalize(batch, stains), again.normalize(batch, stains)
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown stain normaliser 'vahadane'"):
        normalizer_from_dict({"method": "vahadane"})


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


@pytest.mark.parametrize("tile_name", list(_degenerate_tiles()))
@pytest.mark.parametrize("name", list(NORMALIZERS))
def test_degenerate_tiles_pass_through_flagged(fitted, name, tile_name):
    tile = _degenerate_tiles()[tile_name]
    normalizer = fitted[name]
    out, ok = normalizer.normalize(tile)
    if tile_name.startswith("one stain") and name != "macenko":
        # No basis to unmix, but tissue to match all the same.
        assert ok[0] and (out != tile).any()
    else:
        assert not ok[0] and normalizer.estimate(tile) is None
        np.testing.assert_array_equal(out, tile)


def _hed_spread(tiles_by_domain):
    means = np.array(
        [[rgb2hed(t)[..., :2].mean(axis=(0, 1)) for t in tiles] for tiles in tiles_by_domain]
    )
    return means.mean(axis=1).std(axis=0).sum()  # spread of the domains' mean H and E


@pytest.mark.parametrize("name", list(NORMALIZERS))
def test_normalisation_shrinks_the_spread_between_labs(name):
    domains = sample_domains(11, 8)
    tiles = [
        [make_tile("hyaline_cartilage", d + 8 * i, 11, domains, 128, 0.5)[0] for i in range(3)]
        for d in range(8)
    ]
    reference = make_tile("hyaline_cartilage", 0, 99, sample_domains(99, 1), 256, 0.5)[0]
    fitted = NORMALIZERS[name].fit(reference, mpp=0.5)
    after = [[fitted.normalize(t)[0] for t in domain_tiles] for domain_tiles in tiles]
    assert _hed_spread(after) <= _hed_spread(tiles) / 2


@pytest.mark.parametrize("name", STATISTICS)
def test_statistics_normalisers_degenerate_and_round_trip(name):
    tile = make_tile("mesenchyme", 0, 0, sample_domains(0, 1), 128, 0.5)[0]
    fitted = NORMALIZERS[name].fit(tile, mpp=1.0)
    for degenerate in (np.full((32, 32, 3), 250, np.uint8), np.full((32, 32, 3), 120, np.uint8)):
        out, ok = fitted.normalize(degenerate)  # glass alone; one flat colour
        assert not ok[0] and (out == degenerate).all()
    saved = json.loads(json.dumps(fitted.to_dict()))
    again = normalizer_from_dict(saved)
    assert isinstance(again, StatisticsNormalizer) and again.method == name
    assert again.mpp == 1.0 and again.reference == fitted.reference
    assert again.to_dict() == fitted.to_dict()
    np.testing.assert_array_equal(again.normalize(tile)[0], fitted.normalize(tile)[0])
    older = {key: value for key, value in saved.items() if key != "mpp"}  # saved before mpp
    assert normalizer_from_dict(older, mpp=2.0).mpp == 2.0


def _saved_histogram(**changes) -> dict:
    tile = make_tile("mesenchyme", 0, 0, sample_domains(0, 1), 128, 0.5)[0]
    return {**HISTOGRAM.fit(tile, mpp=0.5).to_dict(), **changes}


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
    for name in STATISTICS:
        out, ok = NORMALIZERS[name].fit(reference, mpp=1.0).normalize(image)
        assert ok[0]
        # The CIELAB methods leave the glass; the stain densities give it the reference's,
        # neutral where the reference shows none (its edge, within the smoothing, is tissue).
        if name == "stain-histogram":
            assert (out[:36, :36] == IO).all()
        else:
            np.testing.assert_array_equal(out[:40, :40], image[:40, :40])
        assert (out[44:50, 44:50] != image[44:50, 44:50]).any()
        assert np.abs(out[20, 55].astype(int) - reference_pink).max() <= 3


@pytest.mark.parametrize("name", list(NORMALIZERS))
def test_bad_arrays_are_refused(fitted, name):
    with pytest.raises(ValueError, match="uint8"):
        fitted[name].normalize(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        fitted[name].estimate(np.zeros((8, 8), np.uint8))


def test_stain_histogram_matches_each_stain_and_gives_the_references_glass():
    reference = make_tile("woven_bone", 0, 1, sample_domains(1, 1), 256, 0.5)[0]
    fitted = STAIN_HISTOGRAM.fit(reference, mpp=0.5)
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
        densities = stain_densities(image, 0.5)
        return np.percentile(densities[stained_mask(densities, 0.5)], [10, 50, 90], axis=0)

    before = np.abs(tissue_percentiles(tile) - tissue_percentiles(reference)).max()
    after = np.abs(tissue_percentiles(out) - tissue_percentiles(reference)).max()
    assert after < 0.05 < before, (after, before)
    glass = ~stained_mask(stain_densities(tile, 0.5), 0.5)  # what it took for glass
    assert glass.mean() > 0.01
    np.testing.assert_allclose(out[glass].mean(axis=0), fitted.glass, atol=2)
