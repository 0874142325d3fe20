"""`styles`: how often the model names a tissue right when a whole slide region of it is
painted in one style: for each of `count` slide seeds from `seed`, the tissue gets the style
that slide draws for its region and that slide's lab, painted as a slide paints its chunks on
`canvases` fresh canvases of a chunk's size (`slides.CHUNK_PX`) at 0.5 µm/px, and the share of
their tiles named right is reported per seed.

A tile set draws a new style for every tile, so a style the model misreads costs it a tile
here and there; a slide keeps one style for a whole region, so the same style misreads the
region. The seeds named right on fewer than `bound` of their tiles are the slides of unseen
labs whose region would be misread that way.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import MPP
from benchmarks.real import tile_probabilities
from ossiclass.classes import class_index
from ossiclass.errors import BadInputError
from ossiclass.predict import Predictor
from ossiclass.synth.painters import paint_parts
from ossiclass.synth.slides import (
    CHUNK_PX,
    SlideSettings,
    region_random,
    scanner_random,
    slide_domain,
)
from ossiclass.synth.stains import render


def region_tiles(predictor: Predictor, tissue: str, seed: int, canvases: int) -> np.ndarray:
    """(N, S, S, 3) uint8 tiles at the model's scale of `tissue` painted in the style and lab
    of the slide of `seed`: `canvases` canvases, as the chunks of a column of that slide."""
    prep, side = predictor.preprocessing, predictor.preprocessing.input_px
    domain = slide_domain(SlideSettings(seed=seed))
    tiles = []
    for top in range(0, canvases * CHUNK_PX, CHUNK_PX):
        rng = region_random(seed, class_index(tissue), top, 0)
        maps, _ = paint_parts(tissue, rng, (CHUNK_PX, CHUNK_PX), MPP, artefacts=False)
        scanned = render(maps, domain, scanner_random(seed, top, 0), (CHUNK_PX, CHUNK_PX))
        image = prep.to_model_scale(scanned, MPP)
        rows, columns = image.shape[0] // side, image.shape[1] // side
        tiles += [image[r * side : (r + 1) * side, c * side : (c + 1) * side]
                  for r in range(rows) for c in range(columns)]  # fmt: skip
    return np.stack(tiles)


def run(*, model: str, tissue: str, seed: int, count: int, canvases: int, bound: float) -> dict:
    """Per seed, the share of `tissue`'s tiles named right and what the others were called."""
    predictor = Predictor(model)
    names = [c.name for c in predictor.classes]
    if tissue not in names:
        raise BadInputError(f"{model} has no class {tissue!r}; it has {', '.join(names)}")
    per_seed = []
    for slide_seed in range(seed, seed + count):
        called = tile_probabilities(predictor, region_tiles(predictor, tissue, slide_seed,
                                                            canvases)).argmax(1)  # fmt: skip
        found = {names[k]: int(n) for k, n in zip(*np.unique(called, return_counts=True),
                                                  strict=True)}  # fmt: skip
        per_seed.append({"seed": slide_seed, "tiles": len(called),
                         "right": found.get(tissue, 0) / len(called), "called": found})  # fmt: skip
    return {"what": f"share of {tissue}'s tiles named right, per slide seed's style and lab",
            "model": model, "tissue": tissue, "canvases": canvases, "canvas_px": CHUNK_PX,
            "bound": bound, "seeds": per_seed}  # fmt: skip


def report(figures: dict) -> str:
    """A line per seed, then the seeds under the bound."""
    tissue, seeds = figures["tissue"], figures["seeds"]
    lines = [
        f"model {figures['model']}: {tissue} regions painted in each slide seed's style and lab,"
        f" {figures['canvases']} canvases of {figures['canvas_px']} px each"
    ]
    lines += [f"  seed {s['seed']}: {s['right']:.2f} of {s['tiles']} tiles right; called "
              f"{s['called']}" for s in seeds]  # fmt: skip
    low = [s["seed"] for s in seeds if s["right"] < figures["bound"]]
    lines.append(f"seeds named right on fewer than {figures['bound']:.0%} of their tiles: "
                 f"{len(low)} of {len(seeds)} {low}")  # fmt: skip
    return "\n".join(lines)
