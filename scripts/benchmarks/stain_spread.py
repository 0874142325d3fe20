"""`stain-spread`: the spread of mean H and E across 8 stain domains, before and after each
normaliser.

Each domain renders the same tiles (the generator keeps morphology and stain apart), so the
spread before is the labs' stain differences alone, and after, what normalisation left.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2hed

from benchmarks.common import MPP
from ossiclass.classes import CLASSES
from ossiclass.preprocess.stain import NORMALIZERS
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import make_tile

DOMAINS = 8
MODES = ("per tile", "per domain")


def spread(groups: list[list[np.ndarray]] | list[np.ndarray]) -> np.ndarray:
    """(2,) standard deviation across groups (domains) of the groups' mean H and E (rgb2hed)
    of their (H, W, 3) uint8 tiles."""
    means = np.array([[rgb2hed(t)[..., :2].mean(axis=(0, 1)) for t in g] for g in groups])
    return means.mean(axis=1).std(axis=0)


def run(*, tiles: int, seed: int) -> dict:
    """Per class: the spread of `tiles` 256 px tiles rendered in each of `seed`'s 8 domains,
    and each normaliser's spread after / before, fitted to a 512 px tile of seed + 1, with
    stains estimated per tile and per domain (from all of a lab's tiles, as for a slide)."""
    domains = sample_domains(seed, DOMAINS)
    classes = {}
    for tissue in CLASSES:
        reference = make_tile(tissue, 0, seed + 1, sample_domains(seed + 1, 1), 512, MPP)[0]
        groups = [
            [make_tile(tissue, i, seed, [domain], 256, MPP)[0] for i in range(tiles)]
            for domain in domains
        ]
        before = spread(groups)
        methods = {}
        for method in NORMALIZERS.values():
            try:
                fitted = method.fit(reference, mpp=MPP)
            except ValueError as error:  # e.g. Macenko on a reference of nearly one stain
                methods[method.method] = {"error": str(error)}
                continue
            methods[method.method] = _after_over_before(fitted, groups, before)
        classes[tissue] = {"before": before.tolist(), "after_over_before": methods}
    return {
        "what": f"standard deviation across {DOMAINS} stain domains of the mean H and E "
        "(rgb2hed) of the same tiles; each normaliser's after / before, [H, E]",
        "seed": seed,
        "tiles": tiles,
        "classes": classes,
    }


def _after_over_before(fitted, groups: list[list[np.ndarray]], before: np.ndarray) -> dict:
    """A fitted normaliser's spread after / before per mode, [H, E]; per domain, one stain
    estimate from all of a lab's tiles, as for a slide."""
    ratios = {}
    for mode in MODES:
        normalised = [
            fitted.normalize(np.stack(g), fitted.estimate(g) if mode == "per domain" else None)[0]
            for g in groups
        ]
        ratios[mode] = (spread(normalised) / before).tolist()
    return ratios


def report(figures: dict) -> str:
    """The figures of `run` as a line per class."""
    lines = [
        f"spread across {DOMAINS} stain domains (seed {figures['seed']}) of the mean H and E "
        f"(rgb2hed) of {figures['tiles']} tiles each, the same tiles in every domain; "
        "after / before:"
    ]
    for tissue, spreads in figures["classes"].items():
        before = spreads["before"]
        cells = [f"before H {before[0]:.4f} E {before[1]:.4f}"]
        for method, ratios in spreads["after_over_before"].items():
            if "error" in ratios:
                cells.append(f"{method}: no reference ({ratios['error']})")
                continue
            cells += [f"{method} {mode} H {ratios[mode][0]:.2f} E {ratios[mode][1]:.2f}"
                      for mode in MODES]  # fmt: skip
        lines.append(f"  {tissue}: " + "; ".join(cells))
    return "\n".join(lines)
