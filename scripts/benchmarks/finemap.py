"""`finemap`: class maps finer than a tile (overlapping tiles, their probabilities blended; or
refined, `classify --refine`) against the ground-truth masks of synthetic slides of seeds training
never saw, one per layout: the maps of `MAPS`, their agreement overall and near true class
boundaries, their boundary F-score, and the seconds per slide against the tile grid's.

Each finer map that is not refined is scored twice: as `classify` blends it (the triangular
window) and with the tiles' plain mean (rebuilt from the same `tiles.csv`): the window's worth
measured, not assumed.

Every map is scored on one evaluation grid of `eval_um` µm cells, so that a coarse map is not
judged against a coarse truth: a cell's true class is the mask's majority over it (glass, 255,
included: a cell mostly glass is no tissue), and a map's class is that of the map cell under
the evaluation cell's centre. Over the cells the truth calls tissue and the map labels:

- accuracy: the share whose map class is the true class;
- band accuracy: the same within `band_um` µm of a true class boundary (a cell with a 4-neighbour
  of another tissue class), where a tile grid's blocky edges cost most;
- boundary F-score at `tolerance_um` µm (as BSDS scores contours): precision, the share of the
  map's boundary cells within the tolerance of a true boundary cell; recall, the share of true
  boundary cells within it of a map boundary cell; F = 2PR / (P + R). Boundaries are between two
  tissue classes only (the outline of the tissue is the tissue mask's, the same for every map);
- coverage: the share of true tissue cells the map labels at all.

Seconds are those of `classify` end to end (the map included), each stride's against the tile
grid's on the same slide in the same run.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import distance_transform_edt

from benchmarks.common import MPP, layout_slides
from ossiclass.bundle import load_bundle
from ossiclass.classes import CLASSES, TissueClass
from ossiclass.classify import Running, Tiling, classify
from ossiclass.classmap import NO_TISSUE, class_map, load_classmap

MAPS = ((1, False), (2, False), (4, False), (1, True), (2, True))
"""The maps scored, as (tile over stride, refined): the tile grid, half a tile, a quarter, and
the tile grid and half a tile with their boundaries refined (`classify --refine`)."""
FOREIGN = 254
"""A map class the generator never paints (a model's extra class): it never agrees."""


def run(
    *,
    model: str | Path,
    size: int,
    seed: int,
    workers: int,
    keep: str | Path | None,
    eval_um: float,
    band_um: float,
    tolerance_um: float,
) -> dict:
    """Classify one `size` x `size` px slide per layout (seeds `seed`, `seed` + 1, ...) with
    `model` for each map of `MAPS` and score each class map (see the module's
    docstring); slides made afresh unless `keep` (a folder kept with slides and outputs)
    holds them."""
    _, settings = load_bundle(model)
    tile_px = settings.preprocessing.input_px
    eval_px = max(round(eval_um / MPP), 1)
    running = Running(workers=workers)
    slides = []
    with nullcontext(keep) if keep else tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for layout, slide_seed, path in layout_slides(root, seed, size, workers):
            truth = truth_grid(_read_mask(path.with_suffix(".labels.png")), eval_px)
            name = root / f"{layout}-{slide_seed}"
            maps = [
                _scored_map(path, model, name, tile_px // division, refine, running, truth,
                            eval_px, band_um, tolerance_um)
                for division, refine in MAPS
            ]  # fmt: skip
            for found in maps:
                found["seconds_vs_tile_grid"] = round(found["seconds"] / maps[0]["seconds"], 2)
            slides.append({"layout": layout, "seed": slide_seed, "maps": maps})
    return {
        "what": "class maps of the tile grid, of strides of 1/2 and 1/4 tile and refined, "
        "against the label mask on a common grid: accuracy, accuracy near true class "
        "boundaries, boundary F-score, coverage; seconds of classify per slide and against the "
        "tile grid's",
        "model": str(model),
        "tile_px": tile_px,
        "size_px": size,
        "eval_um": eval_px * MPP,
        "band_um": band_um,
        "tolerance_um": tolerance_um,
        "slides": slides,
    }


def _scored_map(
    path: Path, model: str | Path, name: Path, stride: int, refine: bool, running: Running,
    truth: np.ndarray, eval_px: int, band_um: float, tolerance_um: float,
) -> dict:  # fmt: skip
    """Classify the slide at `path` with `stride` (and `refine`) into `name`-stride<stride>
    and score its class map against `truth` (on cells of `eval_px` level-0 px)."""
    out = name.with_name(f"{name.name}-stride{stride}{'-refined' * refine}")
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    tiling = Tiling(stride_px=stride, refine=refine)
    summary = classify(path, model, out, tiling, running, progress=False)
    seconds = time.perf_counter() - start
    classmap = load_classmap(out / "classmap.tif")
    with open(out / "tiles.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    maps = {"triangular": classmap.labels}
    if not refine:
        # The same tiles blended with equal weights (the plain mean) instead of the tent:
        # rebuilt from tiles.csv at no cost in classifying, over the same cells.
        uniform = class_map(rows, classmap.classes, classmap.slide_px, classmap.cell_px,
                            classmap.input_mpp, window="uniform").labels  # fmt: skip
        uniform[classmap.labels == NO_TISSUE] = NO_TISSUE
        maps["uniform"] = uniform
    scored = {}
    for window, labels in maps.items():
        predicted = on_grid(labels, classmap.cell_px, truth.shape, eval_px)
        predicted = _as_truth_indices(predicted, classmap.classes)
        scored[window] = scores(truth, predicted, eval_px * MPP, band_um, tolerance_um)
    return {
        "stride_px": stride,
        "refined": refine,
        "cell_um": classmap.mpp,
        "tiles": summary["tiles"]["classified"],
        **scored["triangular"],
        "uniform_window": scored.get("uniform"),
        "seconds": round(seconds, 2),
    }


def _read_mask(path: Path) -> np.ndarray:
    """A synthetic slide's label mask, (H, W) uint8 (the generator's own file: no size limit)."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def truth_grid(mask: np.ndarray, cell_px: int) -> np.ndarray:
    """(H // cell_px, W // cell_px) uint8: the majority value of `mask` over each cell (glass,
    255, counted as a value: a cell mostly glass is glass)."""
    rows, columns = mask.shape[0] // cell_px, mask.shape[1] // cell_px
    blocks = mask[: rows * cell_px, : columns * cell_px].reshape(rows, cell_px, columns, cell_px)
    values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    counts = np.stack([(blocks == v).sum(axis=(1, 3)) for v in values], axis=-1)
    return values[counts.argmax(axis=-1)].astype(np.uint8)


def on_grid(labels: np.ndarray, cell_px: float, shape: tuple[int, int], eval_px: float
            ) -> np.ndarray:  # fmt: skip
    """A map of `cell_px` level-0 px cells read at the centres of a `shape` grid of `eval_px`
    cells (both starting at the slide's origin): (rows, columns) uint8."""
    row = np.minimum(((np.arange(shape[0]) + 0.5) * eval_px // cell_px).astype(int),
                     labels.shape[0] - 1)  # fmt: skip
    column = np.minimum(((np.arange(shape[1]) + 0.5) * eval_px // cell_px).astype(int),
                        labels.shape[1] - 1)  # fmt: skip
    return labels[np.ix_(row, column)]


def _as_truth_indices(labels: np.ndarray, classes: tuple[TissueClass, ...]) -> np.ndarray:
    """A map's class indices (into the model's `classes`) as the generator's, by name."""
    lookup = np.full(256, NO_TISSUE, dtype=np.uint8)
    for index, tissue in enumerate(classes):
        lookup[index] = CLASSES.index(tissue.name) if tissue.name in CLASSES else FOREIGN
    return lookup[labels]


def class_boundaries(grid: np.ndarray) -> np.ndarray:
    """(rows, columns) bool: cells with a 4-neighbour of another class, both tissue."""
    tissue = grid != NO_TISSUE
    edge = np.zeros(grid.shape, dtype=bool)
    across = (grid[:, 1:] != grid[:, :-1]) & tissue[:, 1:] & tissue[:, :-1]
    down = (grid[1:] != grid[:-1]) & tissue[1:] & tissue[:-1]
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    edge[1:] |= down
    edge[:-1] |= down
    return edge


def _distance_um(edge: np.ndarray, cell_um: float) -> np.ndarray:
    """Each cell's distance in µm to the nearest `edge` cell (inf where there is none)."""
    if not edge.any():
        return np.full(edge.shape, np.inf)
    return distance_transform_edt(~edge) * cell_um


def scores(truth: np.ndarray, predicted: np.ndarray, cell_um: float, band_um: float,
           tolerance_um: float) -> dict:  # fmt: skip
    """Accuracy, band accuracy, boundary precision, recall and F-score, and coverage of a map
    `predicted` against `truth`, both (rows, columns) uint8 on one grid of `cell_um` µm cells
    (see the module's docstring). A share of nothing is None."""
    tissue = truth != NO_TISSUE
    labelled = tissue & (predicted != NO_TISSUE)
    true_edge, map_edge = class_boundaries(truth), class_boundaries(predicted)
    to_true, to_map = _distance_um(true_edge, cell_um), _distance_um(map_edge, cell_um)
    near = labelled & (to_true <= band_um)
    precision = _share(to_true[map_edge] <= tolerance_um)
    recall = _share(to_map[true_edge] <= tolerance_um)
    f_score = (
        None if precision is None or recall is None or precision + recall == 0
        else 2 * precision * recall / (precision + recall)
    )  # fmt: skip
    return {
        "accuracy": _share(predicted[labelled] == truth[labelled]),
        "band_accuracy": _share(predicted[near] == truth[near]),
        "band_cells": int(near.sum()),
        "boundary_precision": precision,
        "boundary_recall": recall,
        "boundary_f": None if f_score is None else round(f_score, 4),
        "coverage": _share(labelled[tissue]),
    }


def _share(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if hits.size else None


def report(figures: dict) -> str:
    """The figures of `run`: a heading line, then a line per slide and map."""
    lines = [
        f"model {figures['model']} ({figures['tile_px']} px tiles); slides {figures['size_px']} "
        f"x {figures['size_px']} at {MPP} µm/px, scored on {figures['eval_um']:g} µm cells; "
        f"band {figures['band_um']:g} µm around true class boundaries, boundary F at "
        f"{figures['tolerance_um']:g} µm"
    ]
    for slide in figures["slides"]:
        lines.append(f"  {slide['layout']} (seed {slide['seed']}):")
        for found in slide["maps"]:
            lines.append(
                f"    stride {found['stride_px']} px{', refined' * found.get('refined', False)} "
                f"({found['cell_um']:g} µm cells, "
                f"{found['tiles']} tiles): accuracy {_text(found['accuracy'])}, near boundaries "
                f"{_text(found['band_accuracy'])} ({found['band_cells']} cells), boundary F "
                f"{_text(found['boundary_f'])} (P {_text(found['boundary_precision'])}, R "
                f"{_text(found['boundary_recall'])}), coverage {_text(found['coverage'])}; "
                f"{found['seconds']:.1f} s, {found['seconds_vs_tile_grid']:.2f}x the tile grid"
            )
            if found["uniform_window"] and found["stride_px"] < figures["tile_px"]:
                mean = found["uniform_window"]
                lines.append(
                    f"      the plain mean instead of the tent: accuracy {_text(mean['accuracy'])}"
                    f", near boundaries {_text(mean['band_accuracy'])}, boundary F "
                    f"{_text(mean['boundary_f'])}"
                )
    return "\n".join(lines)


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
