"""Synthetic slides: tissue layouts (`layouts.py`) painted, with label masks, and written as
tiled pyramidal TIFF.

A layout maps slide coordinates to a class per pixel, with boundaries made irregular by smooth
random fields that span the whole slide. The slide is painted chunk by chunk (each class painted
where the layout puts it) and streamed to the TIFF strip by strip, so a 16384 x 16384 slide is
made in well under 2 GB of memory.

Files for `OUT.tif`: `OUT.tif` (RGB, 256 px tiles, zlib, a pyramid down to about 1024 px, µm/px
in the resolution tags and the description), `OUT.labels.png` (one byte per pixel: class index,
255 = background) and `OUT.tissue.png` (255 on tissue, 0 on glass).

`OUT.truth.json` holds the slide's true measures (`histomorphometry.measure_slide` on its label
mask): `{"measures": [{"name", "symbol", "value", "unit"}, ...], "mpp", "measured_mpp",
"layout", "settings"}`. The mask is measured at `measured_mpp`: mode-downsampled to at most
`TRUTH_MPP` µm/px but no coarser than `TRUTH_MIN_PX` px on its longer side (an 8192 px slide at
0.5 µm/px: 1024 px at 4 µm/px; fractions move by well under 0.01 and heights by under 1% against
full resolution, see docs/histomorphometry.md).

Label indices are positions in `layouts.SLIDE_CLASSES`: the six (0-5, as in
`classes.TISSUE_CLASSES`), then marrow (6) and fat (7). A layout that holds marrow or fat
(`marrow_cavity`) also writes `OUT.classes.json` (`{"classes": [...]}`, as
`classes.class_list_to_dict` writes them), so that tools know what 6 and 7 mean; a mask without
one holds the six only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tifffile
from PIL import Image
from tqdm import tqdm

from ossiclass.classes import (
    BACKGROUND_LABEL,
    CALLUS_PARTS,
    TISSUE_CLASSES,
    TissueClass,
    class_index,
    class_list_to_dict,
    read_class_list_file,
)
from ossiclass.errors import BadInputError
from ossiclass.files import check_output, partial_path, save_png, write_text_atomic
from ossiclass.histomorphometry import measure_slide, mode_downsample
from ossiclass.synth.layouts import (
    ALL_LAYOUTS,
    ORIENTATIONS,
    SLIDE_CLASSES,
    TissueAmounts,
    layout_classes,
)
from ossiclass.synth.painters import paint_parts, paint_shape
from ossiclass.synth.shapes import noise_weights
from ossiclass.synth.stains import DYES, StainDomain, render, sample_domains
from ossiclass.synth.tiles import worker_pool

CHUNK_PX = 1024
"""A slide is painted in square chunks of this many px a side, each from its own draws."""
TIFF_TILE_PX = 256
PYRAMID_MIN_PX = 1024
TRUTH_MPP = 4.0
TRUTH_MIN_PX = 1024
AMOUNT_MAX = 3.0
"""The most `cartilage` and `plate_height` may be (shares of the layout's amount)."""


@dataclass(frozen=True)
class SlideSettings:
    """A synthetic slide: layout name, size in pixels, µm per pixel, seed, the seed of its
    lab (stain domain): None draws the lab from `seed`, as a slide of its own lab; and the
    tissue amounts a study varies between groups (`layouts.TissueAmounts`; 1 = the layout as
    drawn): the cartilage left in a fracture callus, a growth plate's hypertrophic zone height."""

    layout: str = "growth_plate"
    width: int = 8192
    height: int = 8192
    mpp: float = 0.5
    seed: int = 0
    lab: int | None = None
    cartilage: float = 1.0
    plate_height: float = 1.0

    def validate(self) -> None:
        if self.layout not in ALL_LAYOUTS:
            raise BadInputError(
                f"unknown layout {self.layout!r}; expected one of {', '.join(ALL_LAYOUTS)}"
            )
        for name, size in (("width", self.width), ("height", self.height)):
            if not 1024 <= size <= 131072:
                raise BadInputError(f"{name} must be between 1024 and 131072 px, got {size}")
        if not 0.1 <= self.mpp <= 4.0:
            raise BadInputError(f"mpp must be between 0.1 and 4 µm/px, got {self.mpp}")
        for name, seed in (("seed", self.seed), ("lab", self.lab)):
            if seed is not None and seed < 0:
                raise BadInputError(f"{name} must be 0 or more, got {seed}")
        high = AMOUNT_MAX
        if not 0 <= self.cartilage <= high:
            raise BadInputError(f"cartilage must be between 0 and {high:g}, got {self.cartilage}")
        if not 0 < self.plate_height <= high:
            raise BadInputError(
                f"plate height must be above 0 and at most {high:g}, got {self.plate_height}"
            )


class SlideFields:
    """Smooth random fields over the whole slide, evaluated on any window without seams.

    Each field is unit-variance noise on a coarse grid, spread with B-spline weights; a window
    costs two small matrix products.
    """

    def __init__(self, settings: SlideSettings, scales_px: tuple[float, ...]):
        rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 0x51DE]))
        self.rows = [noise_weights(settings.height, s, 0.0) for s in scales_px]
        self.cols = [noise_weights(settings.width, s, 0.0) for s in scales_px]
        self.grids = [
            rng.standard_normal((r.shape[1], c.shape[1]), dtype=np.float32)
            for r, c in zip(self.rows, self.cols, strict=True)
        ]

    def window(self, index: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """Field `index` on rows top..top+height and columns left..left+width: (h, w) float32."""
        rows = self.rows[index][top : top + height]
        cols = self.cols[index][left : left + width]
        return rows @ self.grids[index] @ cols.T


_SIZE_ARGUMENT = {
    "uniform": 2, "normal": 2, "integers": 2, "poisson": 1, "choice": 1, "random": 0,
    "standard_normal": 0,
}  # fmt: skip


class RegionRandom:
    """The random draws for one class region of a slide, painted chunk by chunk.

    Painters take one numpy Generator. Here its scalar draws (a tissue's style: densities, sizes,
    stain levels, orientation, which variant) come from `style`, shared by every chunk of the
    region so that the region looks like one tissue; its array draws (where each cell lies)
    come from `placement`, the chunk's own stream.
    """

    def __init__(self, style: np.random.Generator, placement: np.random.Generator):
        self._style, self._placement = style, placement

    def __getattr__(self, name: str):
        if name not in _SIZE_ARGUMENT:
            raise AttributeError(name)
        position = _SIZE_ARGUMENT[name]

        def draw(*args, **kwargs):
            size = kwargs.get("size", args[position] if len(args) > position else None)
            return getattr(self._style if size is None else self._placement, name)(*args, **kwargs)

        return draw


def region_random(seed: int, label: int, top: int, left: int) -> RegionRandom:
    """The draws of class `label`'s region of the slide of `seed`, in the chunk at (`top`,
    `left`) px: the region's one style, the chunk's own placement."""
    return RegionRandom(
        style=np.random.default_rng(np.random.SeedSequence([seed, label])),
        placement=np.random.default_rng(np.random.SeedSequence([seed, top, left, label])),
    )


def scanner_random(seed: int, top: int, left: int) -> np.random.Generator:
    """The scanner's draws (sensor noise, uneven light) over the chunk at (`top`, `left`) px of
    the slide of `seed`."""
    return np.random.default_rng(np.random.SeedSequence([seed, top, left, 0xC0]))


def _fields(settings: SlideSettings) -> SlideFields:
    coarse = 0.15 * min(settings.width, settings.height)
    return SlideFields(settings, (coarse, coarse * 1.3, 150 / settings.mpp))


ISLAND_LABELS = np.array([class_index(name) for name in CALLUS_PARTS], dtype=np.uint8)
"""The label of each of `classes.CALLUS_PARTS`, by its number there."""


def label_window(
    settings: SlideSettings, fields: SlideFields, top: int, left: int, height: int, width: int
) -> np.ndarray:
    """Class labels of a window of the slide: (height, width) uint8, 255 = background."""
    y = ((np.arange(top, top + height, dtype=np.float32) + 0.5) / settings.height)[:, None]
    x = ((np.arange(left, left + width, dtype=np.float32) + 0.5) / settings.width)[None, :]
    y, x = np.broadcast_arrays(y, x)
    values = [fields.window(i, top, left, height, width) for i in range(len(fields.grids))]
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 0x1A]))
    amounts = TissueAmounts(settings.cartilage, settings.plate_height)
    return ALL_LAYOUTS[settings.layout](y, x, values, rng, amounts)


def paint_chunk(
    window: tuple[int, int, int, int], settings: SlideSettings, fields: SlideFields, domain
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one window of the slide: ((h, w, 3) uint8 RGB, (h, w) uint8 labels)."""
    top, left, height, width = window
    labels = label_window(settings, fields, top, left, height, width)
    work_shape, _ = paint_shape((height, width), settings.mpp)
    rows = ((np.arange(work_shape[0]) + 0.5) * height / work_shape[0]).astype(np.intp)
    cols = ((np.arange(work_shape[1]) + 0.5) * width / work_shape[1]).astype(np.intp)
    work_labels = labels[rows][:, cols]
    # Each label pixel's painting pixel (the nearest), to label what a painter drew.
    full_rows = np.minimum((np.arange(height) + 0.5) * work_shape[0] / height, work_shape[0] - 1)
    full_cols = np.minimum((np.arange(width) + 0.5) * work_shape[1] / width, work_shape[1] - 1)
    full_rows, full_cols = full_rows.astype(np.intp), full_cols.astype(np.intp)
    maps = np.zeros((len(DYES), *work_shape), dtype=np.float32)
    orientations = ORIENTATIONS[settings.layout]
    for label in np.unique(work_labels):
        if label == BACKGROUND_LABEL:
            continue
        rng = region_random(settings.seed, int(label), top, left)
        where = work_labels == label
        name = SLIDE_CLASSES[label].name
        orientation = orientations.get(label)
        painted, parts = paint_parts(name, rng, (height, width), settings.mpp, orientation,
                                     False, settings.cartilage)  # fmt: skip
        maps[:, where] = painted[:, where]
        if parts is not None:  # the callus's islands: labelled as the tissue they hold
            full = ISLAND_LABELS[parts[full_rows][:, full_cols]]
            labels = np.where(labels == label, full, labels)
    return render(maps, domain, scanner_random(settings.seed, top, left), (height, width)), labels


def _paint_strips(
    settings: SlideSettings, workers: int, progress: bool
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Paint the slide a strip of chunks at a time, top to bottom.

    Yields (top row in px, (h, W, 3) uint8 RGB, (h, W) uint8 labels) with h = CHUNK_PX but at
    the bottom edge.
    """
    task = partial(
        paint_chunk, settings=settings, fields=_fields(settings), domain=slide_domain(settings)
    )
    tops = range(0, settings.height, CHUNK_PX)
    lefts = range(0, settings.width, CHUNK_PX)
    with (
        worker_pool(workers) as pool,
        tqdm(
            total=len(tops) * len(lefts), desc="synth slide", unit="chunk", disable=not progress
        ) as bar,
    ):
        for top in tops:
            height = min(CHUNK_PX, settings.height - top)
            windows = [(top, left, height, min(CHUNK_PX, settings.width - left)) for left in lefts]
            chunks = []
            for chunk in pool.imap(task, windows) if pool else map(task, windows):
                chunks.append(chunk)
                bar.update()
            rgb, labels = (np.concatenate(parts, axis=1) for parts in zip(*chunks, strict=True))
            yield top, rgb, labels


def slide_domain(settings: SlideSettings) -> StainDomain:
    """The one stain domain ("lab") a slide is rendered with, drawn from its `lab` seed, else
    from its own seed: slides of one `lab` share it whatever their seeds and layouts, and
    `lab=s` is the lab of the slide with `seed=s`. A slide scanner does not vignette (a camera
    on a microscope does): no vignetting here."""
    seed = settings.seed if settings.lab is None else settings.lab
    return replace(sample_domains(seed, 1)[0], vignetting=0.0)


def _halve(image: np.ndarray) -> np.ndarray:
    """2 x 2 mean of an (H, W, 3) uint8 image (odd edges dropped), with one small temporary."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    total = image[0:h:2, 0:w:2].astype(np.uint16)
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        total += image[dy:h:2, dx:w:2]
    total += 2
    total >>= 2
    return total.astype(np.uint8)


def _tiles(strip: np.ndarray) -> Iterator[np.ndarray]:
    for top in range(0, strip.shape[0], TIFF_TILE_PX):
        for left in range(0, strip.shape[1], TIFF_TILE_PX):
            yield strip[top : top + TIFF_TILE_PX, left : left + TIFF_TILE_PX]


def write_slide(
    out: str | Path, settings: SlideSettings, workers: int = 1, progress: bool = True
) -> Path:
    """Paint a synthetic slide and write `out` (.tif), its labels and tissue masks and its true
    measures (`OUT.truth.json`) beside it, and its class list (`OUT.classes.json`) where the
    layout holds classes beyond the six.

    Memory: the label mask (1 byte/px), the first pyramid level (3/4 byte/px) and a strip.
    Returns the TIFF path.
    """
    settings.validate()
    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise BadInputError(f"{out}: a synthetic slide is written as .tif")
    label_path, tissue_path, truth_path, class_path = files_beside(out)
    for path in (out, label_path, tissue_path, truth_path, class_path):
        check_output(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = np.empty((settings.height, settings.width), dtype=np.uint8)
    level1 = np.empty((settings.height // 2, settings.width // 2, 3), dtype=np.uint8)
    strips = _paint_strips(settings, workers, progress)
    _write_pyramid(partial_path(out), _level0_tiles(strips, labels, level1), level1, settings)
    del level1
    truth = json.dumps(slide_truth(labels, settings), indent=1, ensure_ascii=False)
    write_text_atomic(truth_path, truth + "\n")
    label_image = Image.fromarray(labels)
    del labels
    save_png(label_image, label_path, runs=True)
    tissue = label_image.point(lambda value: 0 if value == BACKGROUND_LABEL else 255)
    save_png(tissue, tissue_path, runs=True)
    classes = layout_classes(settings.layout)
    if classes != TISSUE_CLASSES:
        text = json.dumps({"classes": class_list_to_dict(classes)}, indent=1)
        write_text_atomic(class_path, text + "\n")
    else:  # a class list left by an earlier slide of this name would misname its labels
        class_path.unlink(missing_ok=True)
    partial_path(out).replace(out)
    return out


class SlideFiles(NamedTuple):
    """The files `write_slide` writes beside `OUT.tif`: its label mask, tissue mask, true
    measures and class list (the last only where the layout holds classes beyond the six)."""

    labels: Path
    tissue: Path
    truth: Path
    classes: Path


def files_beside(out: Path) -> SlideFiles:
    """The `SlideFiles` of the slide `out` (.tif)."""
    suffixes = (".labels.png", ".tissue.png", ".truth.json", ".classes.json")
    return SlideFiles(*(out.with_suffix(suffix) for suffix in suffixes))


def read_label_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 class index per pixel of a synthetic slide's `OUT.labels.png`."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the generator's own file
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except OSError as error:
        raise BadInputError(f"{path}: not a readable label mask ({error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def mask_classes(label_mask: str | Path) -> tuple[TissueClass, ...]:
    """The class list a synthetic slide's label mask `OUT.labels.png` indexes: the
    `OUT.classes.json` written beside it for layouts with extra tissues, else the six."""
    try:
        return read_class_list_file(Path(label_mask).with_suffix("").with_suffix(".classes.json"))
    except ValueError as error:
        raise BadInputError(str(error)) from None


def slide_truth(labels: np.ndarray, settings: SlideSettings) -> dict:
    """The true measures of a slide from its (H, W) uint8 label mask, as `OUT.truth.json`
    holds them (the module's docstring says at what resolution they are taken)."""
    factor = max(1, min(round(TRUTH_MPP / settings.mpp), max(labels.shape) // TRUTH_MIN_PX))
    measured_mpp = settings.mpp * factor
    measured = measure_slide(
        mode_downsample(labels, factor), measured_mpp, layout_classes(settings.layout)
    )
    return {
        "measures": [m.to_dict() for m in measured.measures],
        "mpp": settings.mpp,
        "measured_mpp": measured_mpp,
        "layout": settings.layout,
        "settings": asdict(settings),
    }


def _level0_tiles(
    strips: Iterator[tuple[int, np.ndarray, np.ndarray]], labels: np.ndarray, level1: np.ndarray
) -> Iterator[np.ndarray]:
    """TIFF tiles of painted strips, in order; fills `labels` and `level1` on the way."""
    for top, rgb, strip_labels in strips:
        labels[top : top + len(strip_labels)] = strip_labels
        half = _halve(rgb)
        level1[top // 2 : top // 2 + len(half), : half.shape[1]] = half
        yield from _tiles(rgb)


def _write_pyramid(
    path: Path, level0_tiles: Iterator[np.ndarray], level1: np.ndarray, settings: SlideSettings
) -> None:
    """Write a tiled pyramidal TIFF: level 0 streamed from tiles (filling `level1` as it goes),
    then halved levels as sub-IFDs until the longer side is at most PYRAMID_MIN_PX."""
    levels, size = 1, max(settings.width, settings.height)
    while size > PYRAMID_MIN_PX:
        size //= 2
        levels += 1
    description = {
        "ossiclass": "synthetic slide",
        **asdict(settings),
        "stain_domain": slide_domain(settings).to_dict(),
    }
    options = dict(
        tile=(TIFF_TILE_PX, TIFF_TILE_PX),
        photometric="rgb",
        compression="zlib",
        compressionargs={"level": 4},
        resolutionunit="CENTIMETER",
    )
    pixels_per_cm = 1e4 / settings.mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            level0_tiles,
            shape=(settings.height, settings.width, 3),
            dtype=np.uint8,
            subifds=levels - 1,
            resolution=(pixels_per_cm, pixels_per_cm),
            description=json.dumps(description),
            metadata=None,
            **options,
        )
        level = level1
        for index in range(1, levels):
            scale = pixels_per_cm / 2**index
            tif.write(level, subfiletype=1, resolution=(scale, scale), **options)
            level = _halve(level)
