"""The class map of a slide: a grid of cells, each labelled with the class its tiles' blended
probabilities favour, written as `classmap.tif` and merged into class regions.

A map is built after a run from the per-tile probabilities of `tiles.csv` (so resuming and
DDP never see it). Every tile spreads its probabilities over the cells whose centres it covers,
weighted by a separable triangular window: 1 at the tile's centre, falling linearly to 0 at
its edges. Why a tent: a tile's answer speaks for its centre more than for its edges (the
network's effective receptive field is centred), and with tiles every half or quarter tile
the tent makes the blend the bilinear interpolation of the tile probabilities between tile
centres: no parameter to tune, a boundary placed where the interpolated probabilities cross
rather than where a tile's edge lies, and already smooth (no further smoothing is applied).
With the default stride a cell is a tile and the map is the tile grid itself.

Cells the tissue mask covers less than `min_tissue` of, or that no tile covers, are
`NO_TISSUE` (255).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ossiclass.classes import (
    BACKGROUND_LABEL,
    TissueClass,
    class_list_from_dict,
    class_list_to_dict,
)
from ossiclass.errors import BadInputError
from ossiclass.files import partial_path
from ossiclass.preprocess.tiling import BOX_COLUMNS, SlideTissue, tissue_shares

NO_TISSUE = BACKGROUND_LABEL
"""The label of a cell without (enough) tissue or without a tile over it."""
FORMAT = "ossiclass classmap"
"""What the description of a `classmap.tif` says it is."""
WINDOWS = ("triangular", "uniform")
"""How a tile weighs the cells it covers: a tent peaking at its centre, or all alike (mean)."""


@dataclass(frozen=True)
class ClassMap:
    """A slide's class map.

    labels : (rows, columns) uint8, a class index into `classes` per cell, `NO_TISSUE` = 255.
    cell_px : a cell's side in level-0 pixels; cell (i, j) covers x from j * cell_px, y from
        i * cell_px (the grid starts at the slide's origin, as the tile grid does).
    slide_px : the slide's level-0 (width, height); the last row and column may reach past it.
    input_mpp : µm per level-0 pixel.
    classes : the model's class list.
    window : the blending window (one of `WINDOWS`).
    refined : True where the boundaries were moved within tiles (`refine.refine_map`).
    callus_cells : True where the callus's cells took the cell head's classes
        (`refine.split_callus`).
    """

    labels: np.ndarray
    cell_px: int
    slide_px: tuple[int, int]
    input_mpp: float
    classes: tuple[TissueClass, ...]
    window: str = "triangular"
    refined: bool = False
    callus_cells: bool = False

    @property
    def mpp(self) -> float:
        """µm per map pixel (per cell)."""
        return self.cell_px * self.input_mpp

    def metadata(self) -> dict:
        """What the map is, as plain data (the TIFF's description and summary.json hold it)."""
        return {
            "mpp": self.mpp,
            "cell_px": self.cell_px,
            "origin_px": [0, 0],
            "slide_px": list(self.slide_px),
            "level0_mpp": self.input_mpp,
            "shape": list(self.labels.shape),
            "no_tissue": NO_TISSUE,
            "window": self.window,
            "refined": self.refined,
            "callus_cells": self.callus_cells,
        }


def tile_table(rows: list[dict], classes: tuple[TissueClass, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Tiles' boxes and probabilities from rows of `tiles.csv` (read as text or as written):
    ((N, 4) float64 level-0 (minx, miny, width, height), (N, K) float64, K = len(classes))."""
    boxes = np.array([[float(row[k]) for k in BOX_COLUMNS] for row in rows]).reshape(-1, 4)
    columns = [f"prob_{c.name}" for c in classes]
    probabilities = np.array([[float(row[k]) for k in columns] for row in rows])
    return boxes, probabilities.reshape(-1, len(classes))


def blend(
    boxes: np.ndarray, probabilities: np.ndarray, shape: tuple[int, int], cell_px: float,
    window: str = "triangular",
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Tiles' probabilities spread over a grid of cells and summed with their window's weights.

    Parameters
    ----------
    boxes : (N, 4) level-0 (minx, miny, width, height) of the tiles.
    probabilities : (N, K) per tile.
    shape : the grid's (rows, columns); cell (i, j) is centred at ((j + 0.5), (i + 0.5)) *
        `cell_px` level-0 pixels, and a tile covers the cells whose centres lie in its box.
    cell_px : a cell's side in level-0 pixels (the stride, or less).
    window : "triangular" (1 at the tile's centre, 0 at its edges, separable) or "uniform".

    Returns
    -------
    (rows, columns, K) float64 probabilities (the weighted mean; 0 where no tile covers a
    cell) and (rows, columns) float64 the weight summed per cell (0: no tile).
    """
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(len(boxes), -1)
    rows, columns = shape
    row_start, row_weights = _cover(boxes[:, 1], boxes[:, 3], cell_px, window)
    column_start, column_weights = _cover(boxes[:, 0], boxes[:, 2], cell_px, window)
    row = row_start[:, None] + np.arange(row_weights.shape[1])
    column = column_start[:, None] + np.arange(column_weights.shape[1])
    # Cells past the grid (a tile over its last row or column) weigh nothing.
    row_weights = np.where(row < rows, row_weights, 0.0)
    column_weights = np.where(column < columns, column_weights, 0.0)
    row, column = np.minimum(row, rows - 1), np.minimum(column, columns - 1)
    cell = row[:, :, None] * columns + column[:, None, :]  # (N, a tile's rows, its columns)
    weight = row_weights[:, :, None] * column_weights[:, None, :]
    total = np.bincount(cell.ravel(), weight.ravel(), rows * columns)
    sums = np.stack(
        [np.bincount(cell.ravel(), (weight * p[:, None, None]).ravel(), rows * columns)
         for p in probabilities.T], axis=-1,
    )  # fmt: skip
    mean = sums / np.maximum(total, np.finfo(np.float64).tiny)[:, None]
    return mean.reshape(rows, columns, -1), total.reshape(rows, columns)


def _cover(start: np.ndarray, side: np.ndarray, cell_px: float, window: str):
    """Along one axis, the first cell each tile covers (N,) int and the weights of the cells
    from there (N, most cells a tile covers), 0 past a tile's last cell."""
    first = np.ceil(start / cell_px - 0.5).astype(np.int64)
    last = np.ceil((start + side) / cell_px - 0.5).astype(np.int64)  # exclusive
    cells = first[:, None] + np.arange(max(int((last - first).max(initial=0)), 1))
    centre = (cells + 0.5) * cell_px
    inside = cells < last[:, None]
    if window == "uniform":
        return first, inside.astype(np.float64)
    half = side[:, None] / 2
    tent = np.clip(1 - np.abs(centre - (start[:, None] + half)) / half, 0.0, 1.0)
    return first, np.where(inside, tent, 0.0)


def class_map(
    rows: list[dict],
    classes: tuple[TissueClass, ...],
    slide_px: tuple[int, int],
    cell_px: int,
    input_mpp: float,
    tissue: SlideTissue | None = None,
    min_tissue: float = 0.5,
    window: str = "triangular",
) -> ClassMap:
    """The class map of a slide from its `tiles.csv` rows (see `blend`).

    slide_px : level-0 (width, height); the grid has ceil(height / cell_px) rows and
        ceil(width / cell_px) columns.
    cell_px : a cell's side in level-0 pixels: the tile grid's step (`tiling.grid_px`), or a
        finer cell.
    tissue : the slide's tissue mask; a cell it covers less than `min_tissue` of is
        `NO_TISSUE`. None: every cell a tile covers is tissue.
    """
    if len(classes) >= NO_TISSUE:
        raise ValueError(f"a class map holds at most {NO_TISSUE} classes, got {len(classes)}")
    width, height = slide_px
    shape = (-(-height // cell_px), -(-width // cell_px))
    boxes, probabilities = tile_table(rows, classes)
    mean, weight = blend(boxes, probabilities, shape, cell_px, window)
    labels = np.where(weight > 0, mean.argmax(axis=-1), NO_TISSUE).astype(np.uint8)
    if tissue is not None:
        edges = np.arange(max(shape) + 1) * cell_px
        y, x = np.meshgrid(edges[: shape[0]], edges[: shape[1]], indexing="ij")
        shares = tissue_shares(tissue.mask, slide_px, x, y, np.minimum(x + cell_px, width),
                               np.minimum(y + cell_px, height))  # fmt: skip
        labels[shares < min_tissue] = NO_TISSUE
    return ClassMap(labels, int(cell_px), (int(width), int(height)), float(input_mpp),
                    tuple(classes), window)  # fmt: skip


def cells(classmap: ClassMap, runs: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled cells as level-0 boxes, clipped to the slide: with `runs`, the cells of one
    class next to each other along a row merged into one box. Returns ((R, 4) float64 (minx,
    miny, width, height), (R,) int class index, (R,) int cells per box), in row-major order."""
    labels = classmap.labels
    rows, columns = labels.shape
    starts = np.ones(labels.shape, dtype=bool)
    if runs:
        starts[:, 1:] = labels[:, 1:] != labels[:, :-1]
    row, column = np.nonzero(starts)
    first = row * columns + column
    count = np.diff(first, append=rows * columns)  # every row starts a run: none crosses a row
    label = labels[row, column].astype(np.int64)
    keep = label != NO_TISSUE
    row, column, count, label = row[keep], column[keep], count[keep], label[keep]
    side, (width, height) = classmap.cell_px, classmap.slide_px
    x, y = column * side, row * side
    x1, y1 = np.minimum((column + count) * side, width), np.minimum((row + 1) * side, height)
    boxes = np.stack([x, y, x1 - x, y1 - y], axis=1).astype(np.float64).reshape(-1, 4)
    return boxes, label, count


def regions(classmap: ClassMap) -> dict:
    """The map's cells merged per class into QuPath annotations (`qupath.merged_regions`:
    (Multi)Polygons with holes), each with its count of cells and its area in mm²."""
    from ossiclass import qupath

    boxes, label, count = cells(classmap)
    names = [classmap.classes[i].name for i in label]
    return qupath.feature_collection(
        qupath.merged_regions(boxes, names, classmap.classes, classmap.input_mpp, cells=count)
    )


def region_mask(classmap: ClassMap, region) -> np.ndarray:
    """The cells whose centres lie in `region` (a shapely geometry in level-0 pixels, such as
    `qupath.read_region` gives): (rows, columns) bool, the map's shape. A region that covers no
    tissue cell is a `BadInputError`."""
    import shapely

    rows, columns = classmap.labels.shape
    y, x = (np.mgrid[:rows, :columns] + 0.5) * classmap.cell_px
    inside = shapely.contains_xy(region, x, y)
    if not (inside & (classmap.labels != NO_TISSUE)).any():
        bounds = ", ".join(f"{v:.0f}" for v in region.bounds)
        raise BadInputError(
            f"the region to measure in (x, y from {bounds} px) covers no tissue of the map"
        )
    return inside


def write_classmap(path: str | Path, classmap: ClassMap) -> Path:
    """`classmap.tif`: the labels as a uint8 greyscale TIFF (zlib), its µm per pixel in the
    resolution tags (pixels per centimetre) and, as JSON in the description, `FORMAT`, the
    class list and `ClassMap.metadata` (cell size and origin in level-0 pixels). Atomic."""
    path = Path(path)
    per_cm = 1e4 / classmap.mpp
    description = {
        "format": FORMAT,
        **classmap.metadata(),
        "classes": class_list_to_dict(classmap.classes),
    }
    partial = partial_path(path)
    tifffile.imwrite(
        partial, classmap.labels, photometric="minisblack", compression="zlib",
        resolution=(per_cm, per_cm), resolutionunit="CENTIMETER",
        description=json.dumps(description), metadata=None,
    )  # fmt: skip
    os.replace(partial, path)
    return path


def load_classmap(path: str | Path) -> ClassMap:
    """A `classmap.tif` as written by `write_classmap`; anything else is a `BadInputError`."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            labels, text = page.asarray(), page.description
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as error:
        raise BadInputError(f"{path}: not a readable TIFF ({error})") from None
    try:
        description = json.loads(text)
        if description.get("format") != FORMAT:
            raise ValueError
        classes = class_list_from_dict(description["classes"])
        width, height = description["slide_px"]
        cell_px, input_mpp = int(description["cell_px"]), float(description["level0_mpp"])
        slide_px = (int(width), int(height))
        window, refined = description["window"], bool(description.get("refined", False))
        callus_cells = bool(description.get("callus_cells", False))
        classmap = ClassMap(labels, cell_px, slide_px, input_mpp, classes, window, refined,
                            callus_cells)  # fmt: skip
    except (ValueError, TypeError, KeyError, AttributeError):
        raise BadInputError(f"{path}: not an ossiclass class map (classmap.tif)") from None
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise BadInputError(f"{path}: expected (rows, columns) uint8 labels, got {labels.dtype} "
                            f"{labels.shape}")  # fmt: skip
    return classmap


def read_classmap(path: str | Path) -> tuple[np.ndarray, float, tuple[TissueClass, ...]]:
    """A `classmap.tif`: ((rows, columns) uint8 class indices, `NO_TISSUE` = 255; µm per map
    pixel; the class list the indices index). `load_classmap` gives the cell size too."""
    classmap = load_classmap(path)
    return classmap.labels, classmap.mpp, classmap.classes
