"""Macenko against torchstain on real H&E; a batch, the slide-level path and threads."""

import numpy as np
import pytest
from skimage.data import immunohistochemistry

from ossiclass.imageio import read_image
from ossiclass.preprocess.macenko import MacenkoNormalizer, estimate_macenko
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import make_tile


def _torchstain(reference, image):
    torchstain = pytest.importorskip("torchstain", reason="torchstain is a dev dependency")
    normalizer = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    normalizer.fit(reference)
    return normalizer.normalize(image, stains=False)[0]


@pytest.mark.slow  # torchstain on all twenty fields: ~10 s
def test_macenko_agrees_with_torchstain_on_real_he(reference_he):
    images = [read_image(path) for path in sorted(reference_he.glob("*.jpg"))]
    images.append(immunohistochemistry())
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


def test_a_reference_without_h_and_e_is_refused():
    with pytest.raises(ValueError, match="too little H&E"):
        MacenkoNormalizer.fit(np.full((64, 64, 3), 240, np.uint8))
    assert estimate_macenko(np.zeros((500, 3), np.float32)) is None  # glass: no stain at all


def test_degenerate_tiles_do_not_spoil_a_batch(normalizer):
    good = make_tile("lamellar_bone", 1, 0, sample_domains(0, 8), 64, 0.5)[0]
    batch = np.stack([good, np.full((64, 64, 3), 240, np.uint8), good])
    out, ok = normalizer.normalize(batch)
    assert ok.tolist() == [True, False, True]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], batch[1])


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


@pytest.mark.parametrize("slide_level", [False, True])
def test_threads_change_nothing_but_the_speed(normalizer, slide_level):
    tiles = np.stack(
        [make_tile(c, 0, 4, sample_domains(4, 1), 64, 0.5)[0] for c in ("callus", "woven_bone")] * 3
    )
    stains = normalizer.estimate(list(tiles)) if slide_level else None
    saved = normalizer.to_dict()
    one, three = (MacenkoNormalizer.from_dict(saved, threads=n) for n in (1, 3))
    assert (one.threads, three.threads) == (1, 3)
    out_one, ok_one = one.normalize(tiles, stains)
    out_three, ok_three = three.normalize(tiles, stains)
    np.testing.assert_array_equal(out_one, out_three)
    np.testing.assert_array_equal(ok_one, ok_three)
