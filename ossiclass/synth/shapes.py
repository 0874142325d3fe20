"""Drawing primitives for dye maps: smooth noise, soft ellipses, bands. All sizes in pixels.

Every function is vectorised over its shapes (no per-cell Python loop), because the generator has
to paint well over 100 tiles a second on two cores.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import ndtri


def noise_weights(size: int, scale_px: float, offset: float) -> np.ndarray:
    """(size, grid) cubic B-spline weights that spread a grid of spacing `scale_px` over pixels.

    Rows are scaled so that unit white noise on the grid comes out with unit variance.
    """
    position = (np.arange(size, dtype=np.float32) + np.float32(offset)) / np.float32(scale_px)
    floor = np.floor(position)
    first, f = floor.astype(np.int32), position - floor
    basis = np.stack(
        [(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], axis=1
    ) / np.float32(6)
    weights = np.zeros((size, int(first[-1]) + 4), dtype=np.float32)
    np.put_along_axis(weights, first[:, None] + np.arange(4), basis, axis=1)
    return weights / np.sqrt((basis**2).sum(axis=1).mean())


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Smooth random field with features about `scale_px` across, zero mean, unit std.

    White noise on a coarse grid, interpolated with cubic B-splines as two small matrix
    products (much faster than `ndimage.zoom`). Returns (H, W) float32.
    """
    scale_px = max(float(scale_px), 1.0)
    along_y = noise_weights(shape[0], scale_px, rng.uniform(0, scale_px))
    along_x = noise_weights(shape[1], scale_px, rng.uniform(0, scale_px))
    coarse = rng.standard_normal((along_y.shape[1], along_x.shape[1]), dtype=np.float32)
    return along_y @ coarse @ along_x.T


@functools.lru_cache(maxsize=64)
def resize_matrix(size_out: int, size_in: int) -> np.ndarray:
    """(size_out, size_in) linear-interpolation weights between pixel-centre grids."""
    position = (np.arange(size_out, dtype=np.float32) + 0.5) * size_in / size_out - 0.5
    position = np.clip(position, 0, size_in - 1)
    return np.clip(1 - np.abs(position[:, None] - np.arange(size_in)[None, :]), 0, 1).astype(
        np.float32
    )


def ellipses(
    shape: tuple[int, int],
    centres: np.ndarray,
    radii: np.ndarray,
    angles: np.ndarray | float = 0.0,
    edge_px: float = 1.0,
) -> np.ndarray:
    """Sum of soft-edged filled ellipses.

    Parameters
    ----------
    shape : (H, W) of the canvas in pixels.
    centres : (N, 2) float (y, x) in pixels; ellipses may lie partly outside the canvas.
    radii : (N, 2) float semi-axes (along the angle, across it) in pixels.
    angles : (N,) or scalar, direction of the first semi-axis in radians from the x axis.
    edge_px : width of the soft edge in pixels.

    Returns
    -------
    (H, W) float32 coverage: 1 inside an ellipse, 0 outside, summed where ellipses overlap.
    """
    height, width = shape
    centres = np.asarray(centres, dtype=np.float32).reshape(-1, 2)
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float32).reshape(-1, 2), centres.shape)
    angles = np.broadcast_to(np.asarray(angles, dtype=np.float32), (len(centres),))
    if len(centres) == 0:
        return np.zeros(shape, dtype=np.float32)
    reach = int(np.ceil(radii.max() + edge_px + 1))
    near = (
        (centres[:, 0] > -reach)
        & (centres[:, 0] < height + reach)
        & (centres[:, 1] > -reach)
        & (centres[:, 1] < width + reach)
    )
    centres, radii, angles = centres[near], radii[near], angles[near]
    # Each ellipse is evaluated on its own (K, K) window; windows are summed with one bincount
    # into a canvas padded so that no window needs clipping.
    pad = 2 * reach + 1
    padded_width = width + 2 * pad
    offsets = np.arange(-reach, reach + 1, dtype=np.int32)
    base = np.floor(centres).astype(np.int32)
    within = offsets[None, :] + np.float32(0.5) - (centres - base)[:, :, None]  # (N, 2, K)
    dy, dx = within[:, 0, :, None], within[:, 1, None, :]
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    along = (dx * cos + dy * sin) / radii[:, 0, None, None]
    across = (dy * cos - dx * sin) / radii[:, 1, None, None]
    # 1 - r**2 ~ 2 (1 - r) near the outline: a soft edge of `edge_px` without a square root.
    coverage = 1.0 - (along * along + across * across)
    coverage *= (radii.mean(axis=1) / (2 * edge_px))[:, None, None]
    coverage += 0.5
    np.clip(coverage, 0.0, 1.0, out=coverage)
    rows = (base[:, 0] + pad)[:, None] + offsets
    cols = (base[:, 1] + pad)[:, None] + offsets
    flat = rows[:, :, None] * padded_width + cols[:, None, :]
    canvas = np.bincount(
        flat.ravel(), coverage.ravel(), minlength=(height + 2 * pad) * padded_width
    ).reshape(height + 2 * pad, padded_width)
    return canvas[pad:-pad, pad:-pad].astype(np.float32)


def bands(phase_px: np.ndarray, period_px: float, duty: float = 0.5, edge: float = 0.15):
    """Soft stripes along a phase field: 1 on a fraction `duty` of each period, else 0, with
    edges `edge` periods wide.

    `phase_px` is a (H, W) distance-like field in pixels (a projection for parallel stripes, a
    radius for rings). Returns (H, W) float32 in [0, 1].
    """
    position = np.mod(phase_px / period_px, 1.0)  # 0..1 within each period
    inside = 0.5 * duty - np.abs(position - 0.5)  # > 0 on the stripe, in periods
    return np.clip(inside / edge + 0.5, 0.0, 1.0).astype(np.float32)


def soft_threshold(
    field: np.ndarray, fraction: float, sharpness: float, per_canvas: bool = True
) -> np.ndarray:
    """A (H, W) float32 mask in [0, 1] over the `fraction` of `field` with the highest values.

    With `per_canvas`, the threshold is the field's own quantile, so the fraction holds in every
    canvas, also where the field's features are larger than the canvas. Without, it is the
    quantile of the unit normal that `smooth_noise` follows: the fraction holds on average, and
    a canvas varies as a crop of a larger field does (some hold none). `sharpness` is the
    mask's slope per unit of the field (larger: crisper edges).
    """
    if per_canvas:
        threshold = np.float32(np.quantile(field, 1.0 - fraction))
    else:
        threshold = np.float32(ndtri(1.0 - fraction))
    return np.clip((field - threshold) * np.float32(sharpness) + 0.5, 0.0, 1.0, dtype=np.float32)


def ridges(noise: np.ndarray, width: float) -> np.ndarray:
    """Thin wandering lines where `noise` crosses zero, about `width` (in noise units) wide.

    Returns (H, W) float32 in [0, 1].
    """
    return np.clip(1.0 - np.abs(noise) / width, 0.0, 1.0).astype(np.float32)


def scatter(
    rng: np.random.Generator,
    shape: tuple[int, int],
    count: int,
    density: np.ndarray | None = None,
    margin_px: float = 0.0,
) -> np.ndarray:
    """`count` random (y, x) points in pixels, optionally following a (H, W) density in [0, 1].

    Points may fall up to `margin_px` outside the canvas so shapes are cut by its edge, as in a
    section. Returns (count, 2) float32.
    """
    height, width = shape
    if density is None:
        points = rng.random((count, 2), dtype=np.float32)
        points[:, 0] = points[:, 0] * (height + 2 * margin_px) - margin_px
        points[:, 1] = points[:, 1] * (width + 2 * margin_px) - margin_px
        return points
    # Rejection sampling against the density map, drawn in one vectorised batch.
    candidates = scatter(rng, shape, count * 4 + 8, None, 0.0)
    iy = np.clip(candidates[:, 0].astype(np.int32), 0, height - 1)
    ix = np.clip(candidates[:, 1].astype(np.int32), 0, width - 1)
    keep = rng.random(len(candidates), dtype=np.float32) < density[iy, ix]
    return candidates[keep][:count]


def jittered_grid(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing_px: float,
    jitter: float = 0.35,
    angle: float = 0.0,
    aspect: float = 1.0,
) -> np.ndarray:
    """Evenly spread (y, x) points on a rotated, jittered grid: `spacing_px` apart across
    `angle` and `aspect` times that along it.

    Points cover the canvas plus one spacing of margin. Returns (N, 2) float32.
    """
    height, width = shape
    half = 0.5 * np.hypot(height, width) + spacing_px * max(aspect, 1.0)
    across = np.arange(-half, half + spacing_px, spacing_px, dtype=np.float32)
    along = np.arange(-half, half + spacing_px * aspect, spacing_px * aspect, dtype=np.float32)
    u, v = np.meshgrid(along, across)
    u = u + rng.uniform(-jitter, jitter, u.shape).astype(np.float32) * spacing_px * aspect
    v = v + rng.uniform(-jitter, jitter, v.shape).astype(np.float32) * spacing_px
    cos, sin = np.cos(angle), np.sin(angle)
    x = width / 2 + u * cos - v * sin
    y = height / 2 + u * sin + v * cos
    keep = (
        (y > -spacing_px) & (y < height + spacing_px) & (x > -spacing_px) & (x < width + spacing_px)
    )
    return np.stack([y[keep], x[keep]], axis=1).astype(np.float32)
