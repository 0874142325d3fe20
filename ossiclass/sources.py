"""What `classify` reads: one protocol, `TileSource`, for a slide (or a large plain image) and
for a folder of tile images, so that classifying, writing and resuming never ask which kind.

`open_source` opens an input and plans its tiles: for a slide, the tissue mask and the colour of
its glass from a thumbnail, and the grid of tissue boxes at the model's µm/px; for a folder, its
image files, each at its own µm/px. Scales follow `scale.resolve_mpp` for every kind.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Protocol

import numpy as np

from ossiclass.errors import BadInputError
from ossiclass.imageio import IMAGE_SUFFIXES, read_image
from ossiclass.preprocess.tiling import (
    BOX_COLUMNS,
    SlideTissue,
    TileBox,
    image_tiles,
    read_tile,
    slide_tissue_mask,
    tile_grid,
)
from ossiclass.preprocessing import Preprocessing
from ossiclass.scale import Scale, assumed_note, resolve_mpp
from ossiclass.slides import Slide, image_mpp, open_slide


class TileSource(Protocol):
    """Items to classify, each read as one or more model tiles (their probabilities averaged).

    kind : "slide" or "tile folder", as the summary names it.
    path : the input.
    key_columns : the columns of `tiles.csv` that name an item (its box, or its file).
    has_boxes : True where items are level-0 boxes (then GeoJSON and a map are written).
    glass : (3,) RGB of the bare glass to white-balance against, None where none is known.
    cpu_workers : DataLoader workers worth having on a CPU (reading vs the forward pass).
    """

    kind: str
    path: Path
    key_columns: tuple[str, ...]
    has_boxes: bool
    glass: np.ndarray | None
    cpu_workers: int

    def __len__(self) -> int: ...

    def open(self) -> Slide | None:
        """A handle for `read`, opened once per DataLoader worker."""

    def read(self, handle: Slide | None, index: int, prep: Preprocessing) -> np.ndarray:
        """(T, S, S, 3) uint8: item `index` as model tiles, at the model's µm/px, as scanned."""

    def key(self, index: int) -> dict:
        """The key columns of item `index`."""

    def scales(self) -> dict:
        """For the summary: `input_mpp` (one value, or the distinct ones of a folder),
        `mpp_from` ("given", "file", "assumed", or a folder's count of each) and `notes`
        where a scale was assumed."""


class SlideSource:
    """The tissue tiles of a slide or a large plain image: one item per box, in level-0 px.
    `tissue` and `size` (level-0 width, height) are what the class map is drawn over."""

    kind, key_columns, has_boxes, cpu_workers = "slide", BOX_COLUMNS, True, 0

    def __init__(
        self, path: Path, scale: Scale, boxes: list[TileBox], glass: np.ndarray | None,
        tissue: SlideTissue | None = None, size: tuple[int, int] | None = None,
    ):  # fmt: skip
        self.path, self.scale, self.tile_boxes, self.glass = path, scale, boxes, glass
        self.tissue, self.size = tissue, size

    def __len__(self) -> int:
        return len(self.tile_boxes)

    def open(self) -> Slide:
        return open_slide(self.path, self.scale.mpp)

    def read(self, handle: Slide, index: int, prep: Preprocessing) -> np.ndarray:
        return read_tile(handle, self.tile_boxes[index], prep.input_px)[None]

    def key(self, index: int) -> dict:
        box = self.tile_boxes[index]
        return dict(zip(BOX_COLUMNS, (box.x, box.y, box.width, box.height), strict=True))

    def scales(self) -> dict:
        note = self.scale.note(self.path.name)
        notes = [note] if note else []
        return {"input_mpp": self.scale.mpp, "mpp_from": self.scale.source, "notes": notes}


class FolderSource:
    """A folder of tile images: one item per file, each at its own µm/px; a file larger than
    the model's field is cut into tiles whose probabilities are averaged."""

    kind, key_columns, has_boxes, cpu_workers = "tile folder", ("path",), False, 2
    glass = None  # a tile alone shows too little glass to white-balance against

    def __init__(self, path: Path, files: list[Path], scales: list[Scale]):
        self.path, self.files, self.file_scales = path, files, scales

    def __len__(self) -> int:
        return len(self.files)

    def open(self) -> None:
        return None

    def read(self, handle: None, index: int, prep: Preprocessing) -> np.ndarray:
        image = prep.to_model_scale(read_image(self.files[index]), self.file_scales[index].mpp)
        return image_tiles(image, prep.input_px)

    def key(self, index: int) -> dict:
        return {"path": self.files[index].relative_to(self.path).as_posix()}

    def scales(self) -> dict:
        values = sorted({scale.mpp for scale in self.file_scales})
        sources = Counter(scale.source for scale in self.file_scales)
        assumed = sources.get("assumed", 0)
        notes = [assumed_note(f"{assumed} of {len(self.files)} images")] if assumed else []
        return {
            "input_mpp": values[0] if len(values) == 1 else values,
            "mpp_from": ", ".join(
                source if len(sources) == 1 else f"{source} {count}"
                for source, count in sorted(sources.items())
            ),
            "notes": notes,
        }


def open_source(
    path: Path, prep: Preprocessing, input_mpp: float | None, stride_px: int | None,
    min_tissue: float,
) -> TileSource:  # fmt: skip
    """Open and plan a slide, a plain image or a folder of tiles. `input_mpp` overrides the
    files' own scale; `stride_px` (pixels at the model's µm/px) and `min_tissue` (share of a
    box on tissue) plan a slide's grid."""
    if not path.exists():
        raise BadInputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadInputError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return FolderSource(path, files, [resolve_mpp(input_mpp, image_mpp(f)) for f in files])
    with open_slide(path, input_mpp) as slide:
        tissue = slide_tissue_mask(slide)
        boxes = list(
            tile_grid(slide.dimensions, input_mpp=slide.mpp, model_mpp=prep.model_mpp,
                      tile_px=prep.input_px, stride_px=stride_px, mask=tissue.mask,
                      min_tissue=min_tissue)
        )  # fmt: skip
    if not boxes:
        raise BadInputError(f"{path}: no tile holds {min_tissue:.0%} tissue")
    return SlideSource(path, slide.scale, boxes, tissue.glass, tissue, slide.dimensions)
