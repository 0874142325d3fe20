"""Tile data sets: tables of labelled tiles, loading, the synthetic stream, and grouped splits.

Tiles come from class folders (`ROOT/<class>/*.png`) or a manifest CSV (`path,label[,group]
[,mpp]`, paths relative to the manifest), optionally through a label map for public data sets.
A set's classes are the six unless a `classes.json` beside it lists its own (`classes.py`).
A manifest's `mpp` column records each tile's µm per pixel as stored; a set without one is at
the scale its user states. They are decoded and resized once to the model's input size and held
as one `(N, 3, S, S)` uint8 tensor: on two cores, decoding PNGs every epoch would cost more than
the training step. Or they are painted while training (`SyntheticStream`): an endless stream of
fresh synthetic tiles. Nothing here needs Lightning (`data.py` holds the DataModule).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import IterableDataset, TensorDataset, get_worker_info
from tqdm import tqdm

from ossiclass.classes import CLASSES, TissueClass, read_class_list, read_label_map_file
from ossiclass.errors import BadInputError
from ossiclass.imageio import IMAGE_SUFFIXES, read_image
from ossiclass.manifest import read_csv
from ossiclass.preprocess.tiling import resize
from ossiclass.synth.painters import paint
from ossiclass.synth.stains import render, sample_domain, sample_domains
from ossiclass.synth.tiles import make_tile

FIELD_TOLERANCE = 0.01
"""Tiles of one set may cover fields (µm/px x width) this much apart, relatively: rounding."""


@dataclass(frozen=True)
class TileTable:
    """Tiles of a data set: file paths, (N,) int64 indices into `classes`, groups (slide or
    source) for splits, and (N,) float64 µm per pixel as stored, or None where the set records
    none."""

    paths: list[Path]
    labels: np.ndarray
    groups: list[str]
    mpp: np.ndarray | None = None
    classes: tuple[TissueClass, ...] = ()


def read_tile_table(
    source: str | Path,
    label_map: str | Path | None = None,
    classes: tuple[TissueClass, ...] | None = None,
) -> TileTable:
    """Read a class-folder data set or a manifest CSV; errors name the file or line at fault.

    A label map is a JSON object from the data set's labels to class names, with null to drop a
    label. A manifest with an `mpp` column gives every tile's µm per pixel (a positive number a
    row). `classes` is the class list to index labels by (a model's): every label must be in
    it, and a class may have no tiles; by default the set's own list, every class with tiles.
    """
    source = Path(source)
    own = classes is None
    try:
        classes = read_class_list(source) if own else classes
    except ValueError as error:
        raise BadInputError(str(error)) from None
    names = [c.name for c in classes]
    mapping = read_label_map(label_map, names) if label_map else {name: name for name in names}
    if source.is_dir() and (source / "manifest.csv").exists():
        source = source / "manifest.csv"
    rows = _manifest_rows(source) if source.is_file() else _folder_rows(source)
    paths, labels, groups, scales = [], [], [], []
    for where, path, label, group, mpp in rows:
        if label not in mapping:
            known = "the label map" if label_map else f"the classes {', '.join(names)}"
            raise BadInputError(f"{where}: label {label!r} is not in {known}")
        if mapping[label] is None:
            continue
        if not path.is_file():
            raise BadInputError(f"{where}: {path} does not exist")
        paths.append(path)
        labels.append(names.index(mapping[label]))
        groups.append(group)
        scales.append(mpp)
    recorded = np.asarray(scales, dtype=np.float64) if scales and scales[0] is not None else None
    table = TileTable(paths, np.asarray(labels, dtype=np.int64), groups, recorded, classes)
    empty = [name for index, name in enumerate(names) if not (table.labels == index).any()]
    if empty and (own or len(empty) == len(names)):
        raise BadInputError(f"{source}: no tiles for {', '.join(empty)}")
    return table


def read_label_map(
    path: str | Path, names: tuple[str, ...] | list[str] = CLASSES
) -> dict[str, str | None]:
    """A JSON object from a data set's labels to class `names` (null: drop the label)."""
    try:
        mapping = read_label_map_file(path, "label: class or null")
    except ValueError as error:
        raise BadInputError(f"{path}: {error}") from None
    wrong = {k: v for k, v in mapping.items() if v is not None and v not in names}
    if wrong:
        raise BadInputError(f"{path}: maps to unknown classes {wrong}; ours are {', '.join(names)}")
    return mapping


def _manifest_rows(path: Path):
    columns, lines = read_csv(path)
    if not {"path", "label"} <= set(columns):
        raise BadInputError(f"{path}: a manifest needs the columns path and label")
    for line, row in lines:
        where = f"{path} line {line}"
        group = row.get("group") or row.get("slide") or row["path"]
        mpp = _positive(row["mpp"], where) if "mpp" in columns else None
        yield where, path.parent / row["path"], row["label"], group, mpp


def _positive(cell: str | None, where: str) -> float:
    """A manifest's µm per pixel cell as a number; anything else is an error naming the line."""
    try:
        value = float(cell or "")
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise BadInputError(f"{where}: mpp {cell or ''!r} is not a positive number of µm per pixel")
    return value


def _folder_rows(root: Path):
    if not root.is_dir():
        raise BadInputError(f"{root}: no such data set (a folder of class folders or a manifest)")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield str(path), path, folder.name, str(path), None


def read_tiles(
    table: TileTable, size_px: int, progress: bool = True
) -> tuple[torch.Tensor, np.ndarray]:
    """Decode every tile and resize it to (3, size_px, size_px).

    Returns one (N, 3, S, S) uint8 tensor and the tiles' (N,) int64 widths as stored, in px.
    An unreadable tile raises `ImageReadError` naming the file.
    """
    tiles = torch.empty((len(table.paths), 3, size_px, size_px), dtype=torch.uint8)
    widths = np.empty(len(table.paths), dtype=np.int64)
    for index, path in enumerate(
        tqdm(table.paths, desc="loading tiles", unit="tile", disable=not progress)
    ):
        image = read_image(path)
        widths[index] = image.shape[1]
        tiles[index] = _to_input(image, size_px)
    return tiles, widths


def field_um(
    table: TileTable,
    widths_px: np.ndarray,
    default_mpp: float,
    expected_um: float | None = None,
    expected_from: str = "the training tiles",
) -> float:
    """The width of tissue every tile covers, in µm: its µm per pixel (as recorded, else
    `default_mpp`) times its width in px (`read_tiles`).

    Tiles may differ in µm per pixel only where they cover the same field (within
    `FIELD_TOLERANCE`), and that of `expected_um` where it is given (what covers it:
    `expected_from`); else `BadInputError`.
    """
    mpp = table.mpp if table.mpp is not None else np.full(len(widths_px), float(default_mpp))
    fields = mpp * widths_px
    reference = fields[0] if expected_um is None else expected_um
    off = np.flatnonzero(np.abs(fields / reference - 1) > FIELD_TOLERANCE)
    if off.size:
        index = off[0]
        other = (
            f"{table.paths[0]} covers {fields[0]:g} µm"
            if expected_um is None
            else f"{expected_from} cover {expected_um:g} µm"
        )
        raise BadInputError(
            f"{table.paths[index]}: {widths_px[index]} px at {mpp[index]:g} µm/px cover "
            f"{fields[index]:g} µm, but {other}: the tiles must cover one field"
        )
    return float(fields[0])


def _to_input(image: np.ndarray, size_px: int) -> torch.Tensor:
    """An (H, W, 3) uint8 image as a (3, size_px, size_px) uint8 tensor (see `tiling.resize`)."""
    resized = np.require(resize(image, (size_px, size_px)), requirements="W")  # torch writes
    return torch.from_numpy(resized).permute(2, 0, 1)


def normalize_tiles(normalizer, tiles: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """Stain-normalise (N, 3, S, S) uint8 tiles with a fitted normaliser: (tiles, ok (N,))."""
    images, ok = normalizer.normalize(tiles.permute(0, 2, 3, 1).contiguous().numpy())
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), ok


def grouped_split(table: TileTable, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held out): about `fraction` of each class's groups held out (at least one
    where a class has several, none where `fraction` is 0), each group whole, so that tiles of
    one slide or source never straddle the split. A slide holds several classes: holding it out
    for one holds out its tiles of the others, and a group is kept for training where holding
    it out would leave one of its classes without training tiles."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(table.groups, dtype=object)
    classes_of: dict[str, set[int]] = {}
    for group, label in zip(table.groups, table.labels.tolist(), strict=True):
        classes_of.setdefault(group, set()).add(label)
    groups_of = {label: {g for g, labels in classes_of.items() if label in labels}
                 for label in np.unique(table.labels).tolist()}  # fmt: skip
    held_out: set[str] = set()
    training = {label: len(own) for label, own in groups_of.items()}  # groups left to train on
    for own in groups_of.values():
        count = max(1, round(fraction * len(own))) if len(own) > 1 and fraction > 0 else 0
        free = sorted(own - held_out)
        owed = min(count - len(own & held_out), len(free))
        for group in rng.choice(free, size=owed, replace=False) if owed > 0 else ():
            if all(training[c] > 1 for c in classes_of[group]):
                held_out.add(group)
                for c in classes_of[group]:
                    training[c] -= 1
    held = np.flatnonzero(np.isin(groups, list(held_out))).astype(np.int64)
    return np.setdiff1d(np.arange(len(table.labels)), held), held


@dataclass(frozen=True)
class SyntheticStream:
    """Synthetic tiles painted while training, instead of a data set on disk.

    seed : picks the K labs (see `domains`) and the fixed validation set. The training tiles
        come from the seeds PyTorch gives each worker, so `seed_everything` repeats them.
    domains : 0 draws a fresh stain domain ("lab") for every tile; K spreads the tiles over
        the K labs that `ossiclass synth tiles --seed SEED --domains K` uses.
    tiles_per_epoch : how many tiles make an epoch (the stream itself never ends).
    val_per_class : size of the fixed validation set, painted once from `seed`.
    tile_px, input_mpp : tiles are painted at tile_px pixels a side and input_mpp µm per pixel,
        then resized to the model's input, as tiles on disk are.
    """

    seed: int = 0
    domains: int = 0
    tiles_per_epoch: int = 4096
    val_per_class: int = 50
    tile_px: int = 256
    input_mpp: float = 0.5

    @property
    def field_um(self) -> float:
        """The width of tissue a tile covers, in µm."""
        return self.input_mpp * self.tile_px

    def labs(self) -> list:
        return sample_domains(self.seed, self.domains or 8)

    def validation(self, size_px: int) -> TensorDataset:
        """The fixed validation set: tiles the stream never yields (other tile seeds)."""
        labs, tiles, labels = self.labs(), [], []
        for label, name in enumerate(CLASSES):
            for index in range(self.val_per_class):
                image, _ = make_tile(
                    name, 10**9 + index, self.seed, labs, self.tile_px, self.input_mpp
                )
                tiles.append(_to_input(image, size_px))
                labels.append(label)
        return TensorDataset(torch.stack(tiles), torch.tensor(labels))


class SyntheticTiles(IterableDataset):
    """Batches `((B, 3, S, S) uint8, (B,) int64)` of freshly painted tiles, each class equally
    likely.

    Each DataLoader worker paints its own share of an epoch from the seed PyTorch gives it, so
    `seed_everything` makes the stream repeatable and every epoch sees new tiles.
    `normalize` maps a batch of tiles to stain-normalised tiles (run in the worker).
    """

    def __init__(self, stream: SyntheticStream, size_px: int, batch_size: int, normalize):
        self.stream, self.size_px, self.batch_size = stream, size_px, batch_size
        self.normalize = normalize
        self.labs = stream.labs() if stream.domains else None

    def __len__(self) -> int:
        return self.stream.tiles_per_epoch // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        seed = info.seed if info else int(torch.randint(2**62, ()).item())
        rng = np.random.default_rng(seed)
        for _ in range(worker, len(self), workers):
            labels = rng.integers(0, len(CLASSES), self.batch_size)
            with threadpool_limits(1):  # BLAS threads slow painting's small products 5x
                tiles = torch.stack([self._paint(CLASSES[label], rng) for label in labels])
            yield self.normalize(tiles), torch.from_numpy(labels)

    def _paint(self, name: str, rng: np.random.Generator) -> torch.Tensor:
        lab = self.labs[rng.integers(len(self.labs))] if self.labs else sample_domain(rng)
        shape = (self.stream.tile_px, self.stream.tile_px)
        image = render(paint(name, rng, shape, self.stream.input_mpp), lab, rng, shape)
        return _to_input(image, self.size_px)
