"""The LightningDataModule that feeds training, validation and testing (`configs/*.yaml`,
section `data:`), and the training batches' augmentation step.

The tiles themselves come from `datasets.py`: tables read from class folders or a manifest and
held in memory, or synthetic tiles painted while training. Flips, quarter turns, zoom and random
lab stains run in the training DataLoader's collate step, on the CPU; HED jitter runs on whole
batches after they reach the device (`on_after_batch_transfer`).
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler, default_collate

from ossiclass.classes import TISSUE_CLASSES, TissueClass, merge_class_lists, read_class_list
from ossiclass.datasets import (
    SyntheticStream,
    SyntheticTiles,
    field_um,
    grouped_split,
    normalize_tiles,
    read_tile_table,
    read_tiles,
)
from ossiclass.errors import BadInputError
from ossiclass.imageio import read_image
from ossiclass.preprocess.augment import HEDJitter, RandomStainDomain, training_transform
from ossiclass.preprocess.stain import NORMALIZERS, normalizer_from_dict
from ossiclass.preprocessing import Preprocessing


def whole_batch(batch):
    """The collate step of a dataset that yields whole batches: nothing to do."""
    return batch


class TrainingAugmentation:
    """The training DataLoader's collate step: `collate`, then `training_transform` on each
    tile of the batch `((B, 3, S, S) uint8, (B,) labels)`, drawn per tile.

    It runs in the workers where there are some, so a GPU does not wait for it, and in the main
    process where there are none. `stain_domains` is the share of tiles re-rendered in a random
    lab's stains, from a generator seeded by `seed` and reseeded in each worker.
    """

    def __init__(self, scale_jitter: float, stain_domains: float, seed: int, collate):
        self.collate = collate
        self.restain = RandomStainDomain(stain_domains, seed=seed) if stain_domains > 0 else None
        self.transform = training_transform(scale_jitter, self.restain)

    def __call__(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.collate(items)
        return torch.stack([self.transform(image) for image in images]), labels

    def seed_worker(self, worker_id: int) -> None:
        """A DataLoader worker's `worker_init_fn`: Lightning's seeding of the worker (torch's
        generator, which the flips, turns and zoom draw from), and a stain stream of its own
        (each worker's copy of the generator would draw the same labs)."""
        pl_worker_init_function(worker_id)
        if self.restain is not None:
            self.restain.rng = np.random.default_rng(torch.initial_seed())


class TileDataModule(pl.LightningDataModule):
    """Training, validation and test tiles for the tissue classifier.

    `classes` are the classes a model trained on these tiles learns: the training set's own
    (`classes.json`, else the six), after those of `init_bundle` when fine-tuning. After
    `setup`, `preprocessing` says what such a model expects (its µm/px, input size and fitted
    stain normaliser); the model bundle carries it.

    Parameters
    ----------
    train : class folders or manifest to train on; validation is held out of it by group.
    test : class folders or manifest to test on (e.g. a synthetic set from unseen labs); its
        tiles must cover the field the training tiles cover.
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
    input_mpp : µm per pixel of the tiles as stored, for sets whose manifest has no `mpp`
        column (0.5, a 20x scan); a recorded scale wins.
    normalizer : stain normalisation applied to every tile once loaded: "macenko", "reinhard",
        "histogram", "stain-histogram" or None. Its reference is fitted on `reference` (an
        image) or, by default, on 24 training tiles spread over the classes; it travels in the
        model bundle.
    seed : the validation split, the normaliser's sample, the sampler and the augmentation
        (offset by the process's rank, so each process of a run draws its own).
    init_bundle : the bundle a fine-tuned model starts from (the training CLI links it to
        `model.init_bundle`): its preprocessing is used as it is, so `input_px` is not,
        `normalizer`, `reference` and `synthetic` are refused, and the tiles must cover its field.
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
        input_mpp: float = 0.5,
        normalizer: str | None = None,
        reference: str | None = None,
        seed: int = 0,
        init_bundle: str | None = None,
    ):
        super().__init__()
        if (train is None) == (synthetic is None):
            raise BadInputError("give the training tiles as data.train or data.synthetic")
        self.save_hyperparameters()  # (a dataclass is saved as a plain dict)
        self.stream = synthetic
        self.jitter: HEDJitter | None = None  # made with the training loader, seeded by rank
        self.datasets: dict[str, TensorDataset | SyntheticTiles] = {}
        self._preprocessing: Preprocessing | None = None
        self.init_preprocessing: Preprocessing | None = None  # the init_bundle's, as it is
        try:
            own = read_class_list(train) if train else TISSUE_CLASSES
        except ValueError as error:
            raise BadInputError(str(error)) from None
        self.classes: tuple[TissueClass, ...] = own
        if init_bundle:
            from ossiclass.bundle import load_bundle

            options = {"synthetic": synthetic, "normalizer": normalizer, "reference": reference}
            given = [name for name, value in options.items() if value is not None]
            if given:
                raise BadInputError(
                    f"fine-tuning keeps the init_bundle's preprocessing and learns from tiles in "
                    f"data.train: data.{given[0]} cannot be given with it"
                )

            _, settings = load_bundle(init_bundle)
            self.init_preprocessing = settings.preprocessing
            self.classes = merge_class_lists(settings.classes, own)

    @property
    def class_names(self) -> list[str]:
        """The machine names of `classes`, in model-output order."""
        return [c.name for c in self.classes]

    @property
    def preprocessing(self) -> Preprocessing:
        """What a tile goes through before the network, known after `setup`: `model_mpp` is
        the field the tiles cover (their recorded µm/px, else `input_mpp`, times their width)
        over `input_px`; `normalizer` the fitted stain normaliser's state, or None."""
        if self._preprocessing is None:
            raise RuntimeError("TileDataModule.setup() has not run yet")
        return self._preprocessing

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        if self.stream:
            field = self.stream.field_um
            val_tiles, val_labels = self.stream.validation(self.input_px).tensors
            normalize, state = self._fit_normalizer(
                val_tiles, val_labels.numpy(), field / self.input_px
            )
            self.datasets["val"] = TensorDataset(normalize(val_tiles), val_labels)
            self.datasets["train"] = SyntheticTiles(
                self.stream, self.input_px, hp.batch_size, normalize
            )
        else:
            tuning = self.init_preprocessing is not None
            table = read_tile_table(hp.train, hp.label_map, self.classes if tuning else None)
            absent = [c.name for c in self.classes if not (table.labels == c.index).any()]
            if absent:  # only when fine-tuning: a set of its own must hold every class
                rank_zero_warn(
                    f"no training tiles of {', '.join(absent)}: the tuned model will forget "
                    "them; outline some of every class it should keep (docs/training.md)"
                )
            rest, held = grouped_split(table, hp.val_fraction, hp.seed)
            tiles, widths = read_tiles(table, self.input_px)
            expected = self.init_preprocessing.field_um if self.init_preprocessing else None
            field = field_um(table, widths, hp.input_mpp, expected, "the init_bundle's inputs")
            normalize, state = self._fit_normalizer(
                tiles[rest], table.labels[rest], field / self.input_px
            )
            tiles = normalize(tiles)
            labels = torch.from_numpy(table.labels)
            self.datasets["train"] = TensorDataset(tiles[rest], labels[rest])
            self.datasets["val"] = TensorDataset(tiles[held], labels[held])
        if hp.test:
            test = read_tile_table(hp.test, hp.label_map, self.classes)
            tiles, widths = read_tiles(test, self.input_px)
            field_um(test, widths, hp.input_mpp, expected_um=field)
            self.datasets["test"] = TensorDataset(normalize(tiles), torch.from_numpy(test.labels))
        self._preprocessing = self.init_preprocessing or Preprocessing(
            field / hp.input_px, hp.input_px, state
        )

    @property
    def input_px(self) -> int:
        """The model's input size: the init_bundle's, else `input_px`."""
        start = self.init_preprocessing
        return start.input_px if start else self.hparams.input_px

    def _fit_normalizer(self, tiles: torch.Tensor, labels: np.ndarray, model_mpp: float):
        """A function that stain-normalises (N, 3, S, S) uint8 tiles, fitted as configured on
        tiles at `model_mpp` µm per pixel, and the fitted state (None: no normaliser)."""
        hp = self.hparams
        if self.init_preprocessing:
            if self.init_preprocessing.normalizer is None:
                return (lambda batch: batch), None
            start = self.init_preprocessing
            return self._normalizing(start.stain_normalizer), start.normalizer
        if hp.normalizer is None:
            return (lambda batch: batch), None
        method = NORMALIZERS.get(hp.normalizer)
        if method is None:
            raise BadInputError(
                f"unknown normalizer {hp.normalizer!r}; expected one of {sorted(NORMALIZERS)}"
            )
        if hp.reference:
            sample = read_image(hp.reference)
        else:
            rng = np.random.default_rng(hp.seed)
            picks = [rng.choice(np.flatnonzero(labels == c), 4) for c in np.unique(labels)]
            sample = [t.permute(1, 2, 0).numpy() for t in tiles[np.concatenate(picks)]]
        try:
            fitted = method.fit(sample, mpp=model_mpp)
        except ValueError as error:
            raise BadInputError(f"cannot fit the {hp.normalizer} reference: {error}") from None
        if self.stream and hp.num_workers:  # the stream normalises in its DataLoader workers
            fitted = normalizer_from_dict(fitted.to_dict(), model_mpp, threads=1)
        return self._normalizing(fitted), fitted.to_dict()

    @staticmethod
    def _normalizing(fitted):
        """A function that stain-normalises (N, 3, S, S) uint8 tiles with a fitted normaliser,
        warning when many are left as they are."""

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
            weights = (1.0 / torch.bincount(labels, minlength=len(self.classes)).clamp(min=1))[
                labels
            ]
            generator = torch.Generator().manual_seed(hp.seed)
            settings["sampler"] = WeightedRandomSampler(  # a small set still makes a batch
                weights.double(), max(len(labels), hp.batch_size), generator=generator
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
