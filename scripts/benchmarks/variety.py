"""`variety`: the lowest pairwise mean absolute difference between tiles of one class (exact,
over all pairs): how close the generator comes to repeating itself."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import tiles
from ossiclass.classes import CLASSES
from ossiclass.synth.stains import sample_domains


def lowest_pairwise_mad(images: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Exact lowest mean absolute difference over all pairs of (N, H, W, 3) uint8 images, in
    grey levels, and the pair's indices.

    The MAD of 8 x 8 block means is a lower bound of the MAD of the images (the mean of absolute
    differences is at least the absolute difference of means), so pairs are checked exactly in
    order of that bound until the bound exceeds the best exact value: exact, without 500,000
    full-size comparisons.
    """
    stack = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    pooled = F.avg_pool2d(stack, 8).flatten(1)
    bounds = torch.cdist(pooled, pooled, p=1) / pooled.shape[1]
    bounds = bounds.triu(diagonal=1) + torch.tril(torch.full_like(bounds, float("inf")))
    order = torch.argsort(bounds.flatten())
    flat = stack.flatten(1)
    best, pair = float("inf"), (-1, -1)
    for index in order.tolist():
        i, j = divmod(index, len(images))
        if float(bounds[i, j]) >= best:
            break
        mad = float((flat[i] - flat[j]).abs().mean())
        if mad < best:
            best, pair = mad, (i, j)
    return best, pair


def run(*, per_class: int, domains: int, seed: int, workers: int) -> dict:
    """The closest pair among `per_class` 256 px tiles of each class from `seed`'s `domains`."""
    labs = sample_domains(seed, domains)
    closest = {}
    for name in CLASSES:
        images = tiles([(name, i) for i in range(per_class)], seed, labs, 256, workers)
        lowest, pair = lowest_pairwise_mad(images)
        closest[name] = {"tiles": len(images), "lowest_mad": lowest, "pair": list(pair)}
    return {
        "what": "lowest pairwise mean absolute difference within each class, in grey levels",
        "classes": closest,
    }


def report(figures: dict) -> str:
    """The figures of `run` as a line per class."""
    return "\n".join(
        f"variety {name}: {c['tiles']} tiles, lowest pairwise mean absolute difference "
        f"{c['lowest_mad']:.1f} grey levels (tiles {c['pair'][0]} and {c['pair'][1]})"
        for name, c in figures["classes"].items()
    )
