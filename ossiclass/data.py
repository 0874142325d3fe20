"""Tile data sets and the LightningDataModule that feeds training, validation and testing.

Tiles come from class folders (`ROOT/<class>/*.png`) or a manifest CSV (`path,label[,group]`,
paths relative to the manifest), optionally through a label map for public data sets. They are
decoded and resized once to the model's input size and held as one `(N, 3, S, S)` uint8 tensor:
on two cores, decoding PNGs every epoch would cost more than the training step. Or they are
painted while training (`SyntheticStream`): an endless stream of fresh synthetic tiles, with a
fixed validation set. Augmentation runs on whole batches after they reach the device
(`on_after_batch_transfer`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_fabric.utilities.seed import pl_worker_init_function
from pytorch_lightning.utilities import rank_zero_warn
from threadpoolctl import threadpool_limits
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    TensorDataset,
    WeightedRandomSampler,
    default_collate,
    get_worker_info,
)
from tqdm import tqdm

from ossiclass.classes import CLASSES
from ossiclass.errors import BadInputError
from ossiclass.imageio import IMAGE_SUFFIXES, read_image
from ossiclass.preprocess.augment import HEDJitter, RandomStainDomain
from ossiclass.preprocess.stain import NORMALIZERS
from ossiclass.preprocess.tiling import resize
from ossiclass.synth.painters import paint
from ossiclass.synth.stains import render, sample_domain, sample_domains
from ossiclass.synth.tiles import make_tile


@dataclass(frozen=True)
class TileTable:
    """Tiles of a data set: file paths, class indices, and groups (slide or source) for splits."""

    paths: list[Path]
    labels: np.ndarray
    groups: list[str]


def read_tile_table(source: str | Path, label_map: str | Path | None = None) -> TileTable:
    """Read a class-folder data set or a manifest CSV; errors name the file or line at fault.

    A label map is a JSON object from the data set's labels to ours, with null to drop a label.
    """
    source = Path(source)
    mapping = read_label_map(label_map) if label_map else {name: name for name in CLASSES}
    if source.is_dir() and (source / "manifest.csv").exists():
        source = source / "manifest.csv"
    rows = _manifest_rows(source) if source.is_file() else _folder_rows(source)
    paths, labels, groups = [], [], []
    for where, path, label, group in rows:
        if label not in mapping:
            raise BadInputError(f"{where}: label {label!r} is not in the label map")
        if mapping[label] is None:
            continue
        if not path.is_file():
            raise BadInputError(f"{where}: {path} does not exist")
        paths.append(path)
        labels.append(CLASSES.index(mapping[label]))
        groups.append(group)
    table = TileTable(paths, np.asarray(labels, dtype=np.int64), groups)
    empty = [name for index, name in enumerate(CLASSES) if not (table.labels == index).any()]
    if empty:
        raise BadInputError(f"{source}: no tiles for {', '.join(empty)}")
    return table


def read_label_map(path: str | Path) -> dict[str, str | None]:
    """A JSON object from a data set's labels to ours (null: drop the label)."""
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise BadInputError(f"{path}: not a readable JSON label map ({error})") from None
    if not isinstance(mapping, dict):
        raise BadInputError(f"{path}: a label map is a JSON object {{label: class or null}}")
    wrong = {k: v for k, v in mapping.items() if v is not None and v not in CLASSES}
    if wrong:
        raise BadInputError(
            f"{path}: maps to unknown classes {wrong}; ours are {', '.join(CLASSES)}"
        )
    return mapping


def _manifest_rows(path: Path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise BadInputError(f"{path}: a manifest needs the columns path and label")
        for line, row in enumerate(reader, start=2):
            group = row.get("group") or row.get("slide") or row["path"]
            yield f"{path}:{line}", path.parent / row["path"], row["label"], group


def _folder_rows(root: Path):
    if not root.is_dir():
        raise BadInputError(f"{root}: no such data set (a folder of class folders or a manifest)")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield str(path), path, folder.name, str(path)


def load_tiles(table: TileTable, size_px: int, progress: bool = True) -> torch.Tensor:
    """Decode every tile and resize it to (3, size_px, size_px): one (N, 3, S, S) uint8 tensor.

    An unreadable tile raises `ImageReadError` naming the file.
    """
    tiles = torch.empty((len(table.paths), 3, size_px, size_px), dtype=torch.uint8)
    for index, path in enumerate(
        tqdm(table.paths, desc="loading tiles", unit="tile", disable=not progress)
    ):
        tiles[index] = _to_input(read_image(path), size_px)
    return tiles


def _to_input(image: np.ndarray, size_px: int) -> torch.Tensor:
    """An (H, W, 3) uint8 image as a (3, size_px, size_px) uint8 tensor (see `tiling.resize`)."""
    resized = np.require(resize(image, (size_px, size_px)), requirements="W")  # torch writes
    return torch.from_numpy(resized).permute(2, 0, 1)


@dataclass(frozen=True)
class SyntheticStream:
    """Synthetic tiles painted while training, instead of a data set on disk.

    seed : picks the K labs (see `domains`) and the fixed validation set. The training tiles
        come from the seeds PyTorch gives each worker, so `seed_everything` repeats them.
    domains : 0 draws a fresh stain domain ("lab") for every tile; K spreads the tiles over
        the K labs that `ossiclass synth tiles --seed SEED --domains K` uses.
    tiles_per_epoch : how many tiles make an epoch (the stream itself never ends).
    val_per_class : size of the fixed validation set, painted once from `seed`.
    tile_px, mpp : tiles are painted at tile_px pixels a side and mpp µm/px, then resized to
        the model's input, as tiles on disk are.
    """

    seed: int = 0
    domains: int = 0
    tiles_per_epoch: int = 4096
    val_per_class: int = 50
    tile_px: int = 256
    mpp: float = 0.5

    def labs(self) -> list:
        return sample_domains(self.seed, self.domains or 8)

    def validation(self, size_px: int) -> TensorDataset:
        """The fixed validation set: tiles the stream never yields (other tile seeds)."""
        labs, tiles, labels = self.labs(), [], []
        for label, name in enumerate(CLASSES):
            for index in range(self.val_per_class):
                image, _ = make_tile(name, 10**9 + index, self.seed, labs, self.tile_px, self.mpp)
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
        image = render(paint(name, rng, shape, self.stream.mpp), lab, rng, shape)
        return _to_input(image, self.size_px)


def normalize_tiles(normalizer, tiles: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """Stain-normalise (N, 3, S, S) uint8 tiles with a fitted normaliser: (tiles, ok (N,))."""
    images, ok = normalizer.normalize(tiles.permute(0, 2, 3, 1).contiguous().numpy())
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), ok


def grouped_split(table: TileTable, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held out): about `fraction` of each class's groups held out, so tiles of
    one slide or source never straddle the split."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(table.labels):
        groups = sorted({table.groups[i] for i in np.flatnonzero(table.labels == label)})
        count = max(1, round(fraction * len(groups))) if len(groups) > 1 else 0
        chosen = set(rng.choice(groups, size=count, replace=False)) if count else set()
        held += [i for i in np.flatnonzero(table.labels == label) if table.groups[i] in chosen]
    held = np.asarray(sorted(held), dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(table.labels)), held)
    return rest, held


def random_dihedral(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip and turn each (3, H, W) image of a batch by one of the 8 symmetries of the square:
    sections have no up or left."""
    out = batch.clone()
    choices = torch.randint(0, 8, (len(batch),), generator=generator)
    for index, choice in enumerate(choices.tolist()):
        image = torch.rot90(batch[index], choice % 4, dims=(-2, -1))
        out[index] = image.flip(-1) if choice >= 4 else image
    return out


def random_scale(
    batch: torch.Tensor, max_change: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zoom each (3, H, W) image of a batch about its centre by a factor drawn from
    [1 - max_change, 1 + max_change], mirroring at the edges: scanners' µm/px differ a little."""
    scale = 1 + (torch.rand(len(batch), generator=generator) * 2 - 1) * max_change
    theta = torch.zeros(len(batch), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    grid = F.affine_grid(theta.to(batch.device), list(batch.shape), align_corners=False)
    zoomed = F.grid_sample(
        batch.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return zoomed.round().clamp(0, 255).to(batch.dtype)


def whole_batch(batch):
    """The collate step of a dataset that yields whole batches: nothing to do."""
    return batch


class TrainingAugmentation:
    """Flips and quarter turns, zoom (`scale_jitter`) and random lab stains (`stain_domains`)
    of a training batch `((B, 3, S, S) uint8, (B,) labels)` on the CPU.

    It is the training DataLoader's collate step, after `collate`: it runs in the workers where
    there are some, so a GPU does not wait for it, and in the main process where there are none.
    """

    def __init__(self, scale_jitter: float, stain_domains: float, seed: int, collate):
        self.scale_jitter, self.collate = scale_jitter, collate
        self.restain = RandomStainDomain(stain_domains, seed=seed) if stain_domains > 0 else None

    def __call__(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.collate(items)
        images = random_dihedral(images)
        if self.scale_jitter > 0:
            images = random_scale(images, self.scale_jitter)
        if self.restain is not None:
            images = torch.stack([self.restain(image) for image in images])
        return images, labels

    def seed_worker(self, worker_id: int) -> None:
        """A DataLoader worker's `worker_init_fn`: Lightning's seeding of the worker, and a
        stain stream of its own (each worker's copy of the generator would draw the same labs)."""
        pl_worker_init_function(worker_id)
        if self.restain is not None:
            self.restain.rng = np.random.default_rng(torch.initial_seed())


class TileDataModule(pl.LightningDataModule):
    """Training, validation and test tiles for the tissue classifier.

    Parameters
    ----------
    train : class folders or manifest to train on; validation is held out of it by group.
    test : class folders or manifest to test on (e.g. a synthetic set from unseen labs).
    synthetic : paint the training tiles on the fly instead (`SyntheticStream`), with a fixed
        validation set; give either `train` or `synthetic`.
    input_px : tiles are resized to this many pixels a side (the model's input).
    val_fraction : share of each class's groups held out for validation.
    batch_size, num_workers : DataLoader settings.
    balanced : sample classes equally often in training.
    hed_jitter : strength of HED stain jitter in training (0 for none).
    stain_domains : share of training tiles re-rendered in a random synthetic lab's stains.
    scale_jitter : largest relative zoom in training (0.1: 0.9x to 1.1x; 0 for none).
    label_map : JSON label map for public data sets with other labels.
    mpp : µm per pixel of the tiles as stored (0.5 for the synthetic default, a 20x scan).
    normalizer : stain normalisation applied to every tile once loaded: "macenko", "reinhard",
        "histogram", "stain-histogram" or None. Its reference is fitted on `reference` (an
        image) or, by default, on 24 training tiles spread over the classes; it travels in the
        model bundle.
    """

    def __init__(
        self,
        train: str | None = None,
        test: str | None = None,
        synthetic: SyntheticStream | None = None,
        input_px: int = 128,
        val_fraction: float = 0.15,
        batch_size: int = 64,
        num_workers: int = 0,
        balanced: bool = True,
        hed_jitter: float = 0.0,
        stain_domains: float = 0.0,
        scale_jitter: float = 0.0,
        label_map: str | None = None,
        mpp: float = 0.5,
        normalizer: str | None = None,
        reference: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if (train is None) == (synthetic is None):
            raise BadInputError("give the training tiles as data.train or data.synthetic")
        self.save_hyperparameters()  # (a dataclass is saved as a plain dict)
        self.stream = synthetic
        self.jitter: HEDJitter | None = None  # made with the training loader, seeded by rank
        self.datasets: dict[str, TensorDataset | SyntheticTiles] = {}
        self.input_mpp: float | None = None  # µm per pixel of the model's input, after setup
        self.normalizer_state: dict | None = None  # the fitted normaliser, after setup

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        if self.stream:
            normalize = self._setup_stream(self.stream)
        else:
            table = read_tile_table(hp.train, hp.label_map)
            rest, held = grouped_split(table, hp.val_fraction, hp.seed)
            self.input_mpp = hp.mpp * read_image(table.paths[0]).shape[1] / hp.input_px
            tiles = load_tiles(table, hp.input_px)
            normalize = self._fit_normalizer(tiles[rest], table.labels[rest])
            tiles = normalize(tiles)
            labels = torch.from_numpy(table.labels)
            self.datasets["train"] = TensorDataset(tiles[rest], labels[rest])
            self.datasets["val"] = TensorDataset(tiles[held], labels[held])
        if hp.test:
            test = read_tile_table(hp.test, hp.label_map)
            self.datasets["test"] = TensorDataset(
                normalize(load_tiles(test, hp.input_px)), torch.from_numpy(test.labels)
            )

    def _setup_stream(self, stream: SyntheticStream):
        """Paint the validation set, fit the normaliser on it, and open the training stream."""
        hp = self.hparams
        self.input_mpp = stream.mpp * stream.tile_px / hp.input_px
        val = stream.validation(hp.input_px)
        images, labels = val.tensors
        normalize = self._fit_normalizer(images, labels.numpy())
        self.datasets["val"] = TensorDataset(normalize(images), labels)
        self.datasets["train"] = SyntheticTiles(stream, hp.input_px, hp.batch_size, normalize)
        return normalize

    def _fit_normalizer(self, tiles: torch.Tensor, labels: np.ndarray):
        """A function that stain-normalises (N, 3, S, S) uint8 tiles, fitted as configured."""
        if self.hparams.normalizer is None:
            return lambda batch: batch
        method = NORMALIZERS.get(self.hparams.normalizer)
        if method is None:
            raise BadInputError(
                f"unknown normalizer {self.hparams.normalizer!r}; "
                f"expected one of {sorted(NORMALIZERS)}"
            )
        if self.hparams.reference:
            sample = read_image(self.hparams.reference)
        else:
            rng = np.random.default_rng(self.hparams.seed)
            picks = [rng.choice(np.flatnonzero(labels == c), 4) for c in np.unique(labels)]
            sample = [t.permute(1, 2, 0).numpy() for t in tiles[np.concatenate(picks)]]
        try:
            fitted = method.fit(sample, mpp=self.input_mpp)
        except ValueError as error:
            raise BadInputError(
                f"cannot fit the {self.hparams.normalizer} reference: {error}"
            ) from None
        self.normalizer_state = fitted.to_dict()

        def normalize(batch: torch.Tensor) -> torch.Tensor:
            images, ok = normalize_tiles(fitted, batch)
            if ok.mean() < 0.9:
                rank_zero_warn(
                    f"{1 - ok.mean():.0%} of the tiles show too little tissue or H&E to "
                    "normalise and were left as they are (small tiles: raise data.input_px)"
                )
            return images

        return normalize

    def _loader(self, split: str, **settings) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            drop_last=split == "train",
            **settings,
        )

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        stream = self.datasets["train"]
        batched = isinstance(stream, SyntheticTiles)  # it yields whole batches
        # Each process of a multi-process run draws augmentations of its own.
        seed = hp.seed + (self.trainer.global_rank if self.trainer is not None else 0)
        if hp.hed_jitter > 0:
            self.jitter = HEDJitter(hp.hed_jitter, hp.hed_jitter / 2, seed=seed)
        augment = TrainingAugmentation(
            hp.scale_jitter, hp.stain_domains, seed, whole_batch if batched else default_collate
        )
        settings = {"collate_fn": augment, "worker_init_fn": augment.seed_worker}
        if batched:
            return DataLoader(stream, batch_size=None, num_workers=hp.num_workers, **settings)
        labels = stream.tensors[1]
        if hp.balanced:
            weights = (1.0 / torch.bincount(labels, minlength=len(CLASSES)).clamp(min=1))[labels]
            generator = torch.Generator().manual_seed(hp.seed)
            settings["sampler"] = WeightedRandomSampler(
                weights.double(), len(labels), generator=generator
            )
        else:
            settings["shuffle"] = True
        return self._loader("train", **settings)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            raise BadInputError("no test set: give data.test")
        return self._loader("test")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """HED jitter on the device, after `TrainingAugmentation` (a batched tensor op)."""
        images, labels = batch
        if self.jitter is not None and self.trainer is not None and self.trainer.training:
            images = self.jitter.to(images.device)(images)
        return images, labels
