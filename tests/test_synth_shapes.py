import numpy as np
import pytest

from ossiclass.synth.shapes import (
    bands,
    ellipses,
    jittered_grid,
    resize_matrix,
    scatter,
    smooth_noise,
    soft_threshold,
)


def test_ellipse_area_matches_pi_a_b():
    coverage = ellipses((200, 200), np.array([[100.0, 100.0]]), np.array([[40.0, 15.0]]), 0.7)
    assert coverage.sum() == pytest.approx(np.pi * 40 * 15, rel=0.02)
    assert coverage.max() == 1.0


def test_ellipses_overlap_adds_and_far_ones_are_ignored():
    centres = np.array([[50.0, 50.0], [50.0, 50.0], [-500.0, 30.0]])
    coverage = ellipses((100, 100), centres, np.array([[10.0, 10.0]] * 3))
    assert coverage[50, 50] == 2.0
    assert coverage.sum() == pytest.approx(2 * np.pi * 100, rel=0.03)


def test_ellipse_cut_by_the_canvas_edge():
    coverage = ellipses((100, 100), np.array([[0.0, 50.0]]), np.array([[20.0, 20.0]]))
    assert coverage.sum() == pytest.approx(np.pi * 400 / 2, rel=0.05)


def test_smooth_noise_has_unit_variance_and_the_requested_scale():
    rng = np.random.default_rng(0)
    fine = np.stack([smooth_noise(rng, (128, 128), 4) for _ in range(20)])
    coarse = np.stack([smooth_noise(rng, (128, 128), 32) for _ in range(20)])
    assert fine.dtype == np.float32 and fine.shape == (20, 128, 128)
    assert fine.std() == pytest.approx(1.0, abs=0.1)
    assert coarse.std() == pytest.approx(1.0, abs=0.15)
    step = lambda field: np.abs(np.diff(field, axis=-1)).mean()  # noqa: E731
    assert step(coarse) < step(fine) / 4


def test_soft_threshold_covers_the_requested_fraction():
    field = smooth_noise(np.random.default_rng(1), (256, 256), 8)
    for fraction in (0.2, 0.6):
        assert soft_threshold(field, fraction, 4.0).mean() == pytest.approx(fraction, abs=0.08)


def test_bands_duty_cycle():
    stripes = bands(np.arange(1000, dtype=np.float32)[None, :], 20.0, duty=0.3, edge=0.01)
    assert stripes.mean() == pytest.approx(0.3, abs=0.03)


def test_resize_matrix_rows_sum_to_one():
    matrix = resize_matrix(256, 128)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)


def test_scatter_follows_density():
    rng = np.random.default_rng(2)
    density = np.zeros((100, 100), dtype=np.float32)
    density[:, :50] = 1.0
    points = scatter(rng, (100, 100), 500, density)
    assert len(points) == 500 and (points[:, 1] < 50).all()


def test_jittered_grid_spacing():
    points = jittered_grid(np.random.default_rng(3), (200, 200), 20.0, jitter=0.0)
    inside = points[(points >= 0).all(1) & (points < 200).all(1)]
    assert len(inside) == pytest.approx(100, abs=12)
