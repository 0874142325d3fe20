"""Refined maps: a class map finer than its tiles, its boundaries placed by the slide's own
colours.

A tile's class speaks for its whole field (128 µm for the default model), so where two classes
meet, the map's boundary can lie up to half a tile from the tissue's. Refinement moves it to
where the slide shows it, in cells of `CELL_UM`:

1. Each class's look on this slide (mean and spread of the optical density of each colour
   channel over a cell) is learnt, as a Gaussian, from the cells deep inside its regions: cells
   with no other class within half a tile (glass aside).
2. A cell may take a class found within half a tile of it, where that class explains the looks
   of it and of the cells around it (log-likelihoods smoothed over `SMOOTHING_CELLS`) better,
   by `MARGIN`, than its own class does.
3. Pieces under `MIN_PIECE_CELLS` cells that refinement made take the class most of the
   cells around them have; the tiles' own pieces stay.

Nothing is learnt across slides: each slide is its own reference, so a lab's stain shifts the
Gaussians, not the answer. Deep inside a region the network's call over a whole field stands.
So would its call of a mixture: a fracture callus's small cartilage and woven-bone islands,
which colour alone does not tell from its fibrous tissue. Where the model has a cell head
(`cell_head.py`), `split_callus` gives the callus's cells the classes it sees in them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from ossiclass.classes import BACKGROUND_LABEL, CALLUS_PARTS
from ossiclass.classmap import ClassMap, blend, tile_table
from ossiclass.preprocess.tissue import IO
from ossiclass.slides import open_slide

CELL_UM = 8.0
"""Side of a refined map's cell, in µm."""
FEATURE_UM = 2.0
"""µm per pixel of the slide image a cell's look is measured on."""
PIXELS_PER_CELL = 4
"""A cell's look is measured over this many pixels a side (at `FEATURE_UM`: 2 µm each)."""
MARGIN = 2.0
"""Log-likelihood by which another class must explain a cell better to take it (e² ≈ 7x)."""
SMOOTHING_CELLS = 1.0
"""Gaussian sigma, in cells, over which the log-likelihoods are averaged before deciding."""
FLOOR = 20.0
"""A class explains a cell at worst this much (log-likelihood) worse than the best class does:
one odd cell cannot outweigh its neighbours in the smoothing."""
MIN_CELLS = 50
"""A class with fewer interior cells than this is not learnt: its cells and those around keep
the tiles' answer."""
STRIP_PX = 2048
"""Rows of image pixels read at once (at least one row of cells): 4 mm of slide at 2 µm/px."""
MIN_PIECE_CELLS = 4
"""Pieces of a class smaller than this many cells (16 µm across) are specks, not tissue."""


def cell_features(image: np.ndarray, glass: np.ndarray | float, shape: tuple[int, int],
                  cell_px: float, top: float = 0.0) -> np.ndarray:  # fmt: skip
    """The look of each cell: mean and standard deviation of the optical density of each of
    R, G, B over the cell, the image resampled (box) to `PIXELS_PER_CELL` pixels a side.

    Parameters
    ----------
    image : (h, w, 3) uint8 RGB of the slide from its origin, at any scale.
    glass : the glass's RGB, one value or (3,): optical density 0.
    shape : the map's (rows, columns).
    cell_px : a cell's side in `image` pixels (need not be whole).
    top : the image row (need not be whole) where the first row of cells starts.

    Returns
    -------
    (rows, columns, 6) float32; cells past the image's edge read as glass.
    """
    rows, columns = shape
    side = PIXELS_PER_CELL
    height, width = int(np.ceil(top + rows * cell_px)), int(np.ceil(columns * cell_px))
    white = np.broadcast_to(np.asarray(glass, dtype=np.float32), (3,))
    levels = np.arange(256, dtype=np.float32)[:, None]
    density = -np.log((levels + 1.0) / (white + 1.0))  # (256, 3): each grey level's, per channel
    padded = np.zeros((max(height, image.shape[0]), max(width, image.shape[1]), 3), np.float32)
    for c in range(3):
        padded[: image.shape[0], : image.shape[1], c] = density[image[..., c], c]
    box = (0.0, top, columns * cell_px, top + rows * cell_px)
    size = (columns * side, rows * side)
    planes = [
        Image.fromarray(plane).resize(size, Image.BOX, box) for plane in padded.transpose(2, 0, 1)
    ]
    resampled = np.stack(planes, axis=-1).reshape(rows, side, columns, side, 3)
    mean = resampled.mean(axis=(1, 3))
    spread = resampled.std(axis=(1, 3))
    return np.concatenate([mean, spread], axis=-1).astype(np.float32)


def refine(labels: np.ndarray, features: np.ndarray, band_cells: int) -> np.ndarray:
    """A class map with its boundaries placed where the cells' looks put them (see the
    module's docstring).

    Parameters
    ----------
    labels : (rows, columns) uint8 class indices, `BACKGROUND_LABEL` = no tissue.
    features : (rows, columns, F) float, each cell's look (`cell_features`).
    band_cells : half a tile, in cells: how far a boundary may move, and how far from other
        classes a cell must lie to be learnt from.

    Returns
    -------
    (rows, columns) uint8; no-tissue cells stay so and no cell becomes no tissue.
    """
    side = 2 * band_cells + 1
    tissue = labels != BACKGROUND_LABEL
    present = [int(k) for k in np.unique(labels[tissue])]
    if not present:
        return labels.copy()
    scores = np.full((len(present), *labels.shape), -np.inf, dtype=np.float32)
    learnt = np.zeros(len(present), dtype=bool)
    looks = features[tissue]
    for i, k in enumerate(present):
        mine = labels == k
        interior = ndi.minimum_filter(mine | ~tissue, side, mode="constant", cval=True) & mine
        if interior.sum() >= MIN_CELLS:
            scores[i][tissue] = _log_likelihood(looks, features[interior])
            learnt[i] = True
    scores = _smoothed(scores, tissue, learnt)
    allowed = np.zeros(scores.shape, dtype=bool)
    for i, k in enumerate(present):
        allowed[i] = ndi.maximum_filter(labels == k, side, mode="constant") & tissue
    allowed &= learnt[:, None, None]
    own = np.searchsorted(present, np.where(tissue, labels, present[0]))
    own_score = np.take_along_axis(scores, own[None], 0)[0]
    best = np.where(allowed, scores, -np.inf).argmax(axis=0)
    best_score = np.take_along_axis(scores, best[None], 0)[0]
    move = tissue & learnt[own] & (best_score > own_score + MARGIN)
    refined = labels.copy()
    refined[move] = np.asarray(present, dtype=np.uint8)[best[move]]
    return _without_specks(refined, moved=refined != labels)


def _smoothed(scores: np.ndarray, tissue: np.ndarray, learnt: np.ndarray) -> np.ndarray:
    """Learnt classes' log-likelihoods relative to the best (floored at -`FLOOR`), averaged
    over the tissue cells around each cell with a Gaussian of `SMOOTHING_CELLS`."""
    if not learnt.any():
        return scores
    known = np.where(tissue, scores[learnt], 0.0)
    relative = np.where(tissue, np.maximum(known - known.max(axis=0), -FLOOR), 0.0)
    weight = ndi.gaussian_filter(tissue.astype(np.float32), SMOOTHING_CELLS)
    smoothed = scores.copy()
    smoothed[learnt] = np.stack([
        ndi.gaussian_filter(plane, SMOOTHING_CELLS) / np.maximum(weight, 1e-6)
        for plane in relative
    ])  # fmt: skip
    return smoothed


def _without_specks(labels: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """Pieces (8-connected) of one class under `MIN_PIECE_CELLS` cells that refinement made
    (holding a `moved` cell, or left behind where all around moved) take the class most tissue
    cells around them have; the tiles' own pieces stay."""
    cleaned = labels.copy()
    ring = np.ones((3, 3), dtype=bool)
    for k in np.unique(labels[labels != BACKGROUND_LABEL]):
        pieces, count = ndi.label(labels == k, ring)
        sizes = np.bincount(pieces.ravel(), minlength=count + 1)
        for piece, where in enumerate(ndi.find_objects(pieces), start=1):
            if sizes[piece] >= MIN_PIECE_CELLS:
                continue
            window = tuple(
                slice(max(axis.start - 1, 0), min(axis.stop + 1, size))
                for axis, size in zip(where, labels.shape, strict=True)
            )
            inside = pieces[window] == piece
            ring_cells = ndi.binary_dilation(inside, ring) & ~inside
            if not (moved[window] & (inside | ring_cells)).any():
                continue
            around = labels[window][ring_cells]
            around = around[around != BACKGROUND_LABEL]
            if len(around):
                cleaned[window][inside] = np.bincount(around).argmax()
    return cleaned


def _log_likelihood(x: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Log-density of rows of `x` (N, F) under a Gaussian fitted to `sample` (M, F), its
    covariance shrunk a little towards its diagonal so that a uniform region stays proper."""
    mean = sample.mean(axis=0)
    covariance = np.cov(sample, rowvar=False) + 1e-6 * np.eye(sample.shape[1])
    covariance = 0.9 * covariance + 0.1 * np.diag(np.diag(covariance))
    _, log_det = np.linalg.slogdet(covariance)
    centred = x - mean
    distance = np.einsum("nf,fg,ng->n", centred, np.linalg.inv(covariance), centred)
    return -0.5 * (distance + log_det)


def cell_px(input_mpp: float) -> int:
    """A refined map's cell side in level-0 pixels at `input_mpp` µm/px (about `CELL_UM`)."""
    return max(round(CELL_UM / input_mpp), 1)


def refine_map(classmap: ClassMap, slide_path: Path, glass: np.ndarray | None,
               tile_px: int) -> ClassMap:  # fmt: skip
    """`classmap` (cells of `cell_px`) refined from the slide's level closest to `FEATURE_UM`
    µm/px, read in strips of about `STRIP_PX` rows; `glass` is its glass RGB (None:
    `IO`); `tile_px` a tile's side in level-0 pixels, half of which is how far a boundary may
    move."""
    rows, columns = classmap.labels.shape
    white = IO if glass is None else glass
    with open_slide(slide_path, classmap.input_mpp) as slide:
        level = slide.best_level(FEATURE_UM / classmap.input_mpp)
        downsample = slide.level_downsamples[level]
        width, height = (round(side / downsample) for side in slide.dimensions)
        cell = classmap.cell_px / downsample  # in pixels of the level
        strip_cells = max(int(STRIP_PX // cell), 1)
        strips = []
        for first in range(0, rows, strip_cells):
            count = min(strip_cells, rows - first)
            y0 = min(int(first * cell), height - 1)
            y1 = min(int(np.ceil((first + count) * cell)), height)
            image = slide.read_region(0, round(y0 * downsample), width, max(y1 - y0, 1), level)
            strips.append(cell_features(image, white, (count, columns), cell, first * cell - y0))
    band = max(round(tile_px / 2 / classmap.cell_px), 1)
    refined = refine(classmap.labels, np.concatenate(strips), band)
    return replace(classmap, labels=refined, refined=True)


def split_callus(classmap: ClassMap, rows: list[dict]) -> ClassMap:
    """`classmap` with each cell of its fibrous callus given the tissue of a callus
    (`classes.CALLUS_PARTS`: fibrous tissue, hyaline cartilage, woven bone) that the tiles'
    cell heads find most probable there (their `cells`, see `cell_head.encode`; tiles
    overlapping a cell averaged). What a callus is made of is decided inside it; where it ends
    is the tiles' and the colours' call."""
    from ossiclass import cell_head

    classes = classmap.classes
    names = [c.name for c in classes]
    if "callus" not in names or not rows:
        return classmap

    tissues = np.array([names.index(name) for name in CALLUS_PARTS if name in names])
    boxes, _ = tile_table(rows, classes)
    cells = np.stack([cell_head.decode(row["cells"], len(classes)) for row in rows])
    across, down = cells.shape[-1], cells.shape[-2]  # (N, K, down, across) per tile
    shape = (len(boxes), down, across)
    left, top, width, height = (boxes[:, k, None, None] for k in range(4))
    x = np.broadcast_to(left + np.arange(across)[None, None, :] / across * width, shape)
    y = np.broadcast_to(top + np.arange(down)[None, :, None] / down * height, shape)
    width, height = np.broadcast_to(width / across, shape), np.broadcast_to(height / down, shape)
    sub = np.stack([x, y, width, height], axis=-1).reshape(-1, 4)  # a box per cell
    probabilities = cells.transpose(0, 2, 3, 1).reshape(-1, len(classes))
    mean, weight = blend(sub, probabilities, classmap.labels.shape, classmap.cell_px, "uniform")
    labels = classmap.labels.copy()
    fibrous = (labels == names.index("callus")) & (weight > 0)
    labels[fibrous] = tissues[mean[..., tissues].argmax(axis=-1)][fibrous]
    return replace(classmap, labels=labels, callus_cells=True)
