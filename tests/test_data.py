import csv
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tile_set
from PIL import Image
from torch.utils.data import TensorDataset

from ossiclass.data import TileDataModule
from ossiclass.datasets import SyntheticStream
from ossiclass.errors import BadInputError


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles") / "set"
    return make_tile_set(root, per_class=4, seed=2)


def test_data_module_splits_and_batches(tiles):
    module = TileDataModule(str(tiles), str(tiles), input_px=32, batch_size=4, val_fraction=0.25)
    module.setup("fit")
    assert len(module.datasets["train"]) + len(module.datasets["val"]) == 24
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    Image.fromarray(images[0].permute(1, 2, 0).numpy())  # a real picture


def _without_mpp(source, target):
    """A copy of `source`'s manifest without its mpp column, beside its tiles."""
    with open(source / "manifest.csv", newline="") as handle:
        rows = [{k: v for k, v in row.items() if k != "mpp"} for row in csv.DictReader(handle)]
    with open(target, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(target)


def test_model_mpp_comes_from_the_recorded_scale_else_from_input_mpp(tiles):
    recorded = TileDataModule(str(tiles), input_px=32, input_mpp=2.0)
    with pytest.raises(RuntimeError, match="setup"):
        recorded.preprocessing.model_mpp  # noqa: B018 (a property that is not known yet)
    recorded.setup("fit")
    # the manifest's 0.5 µm/px wins
    assert recorded.preprocessing.model_mpp == pytest.approx(0.5 * 48 / 32)
    assert recorded.preprocessing.normalizer is None
    bare = TileDataModule(_without_mpp(tiles, tiles / "bare.csv"), input_px=32, input_mpp=2.0)
    bare.setup("fit")
    assert bare.preprocessing.model_mpp == pytest.approx(2.0 * 48 / 32)


def test_a_test_set_covering_another_field_is_refused(tiles):
    other = _without_mpp(tiles, tiles / "other.csv")  # at input_mpp: 48 px x 1 µm/px
    with pytest.raises(BadInputError, match="cover 48 µm, but the training tiles cover 24 µm"):
        TileDataModule(str(tiles), other, input_px=32, input_mpp=1.0).setup("fit")


@pytest.fixture(scope="module")
def larger_tiles(tmp_path_factory):
    # Per-tile Macenko needs enough stained pixels: 128 px tiles, not 48.
    root = tmp_path_factory.mktemp("larger") / "set"
    return str(make_tile_set(root, per_class=4, size_px=128, seed=2))


def test_training_augmentation_runs_in_the_workers_with_a_stream_each(larger_tiles):
    module = TileDataModule(
        larger_tiles, input_px=64, batch_size=4, num_workers=2, stain_domains=1.0, balanced=False
    )
    module.setup("fit")
    train = module.datasets["train"].tensors[0]
    darkest = train.float().mean(dim=(1, 2, 3)).argmin()  # stained enough to unmix
    tile = train[darkest : darkest + 1]
    module.datasets["train"] = TensorDataset(tile.repeat(8, 1, 1, 1), torch.zeros(8).long())
    colours = [images.float().mean(dim=(2, 3)) for images, _ in module.train_dataloader()]
    assert len(colours) == 2  # one batch from each worker
    assert (colours[0] - tile.float().mean(dim=(2, 3))).abs().max() > 5  # re-stained
    assert (colours[0] - colours[1]).abs().max() > 5  # each worker draws labs of its own


def test_each_process_draws_its_own_augmentation(larger_tiles):
    def first_batch(rank: int) -> torch.Tensor:
        module = TileDataModule(
            larger_tiles,
            input_px=64,
            batch_size=8,
            stain_domains=1.0,
            hed_jitter=0.05,
            scale_jitter=0.1,
        )
        module.trainer = SimpleNamespace(global_rank=rank, training=True)
        module.setup("fit")
        torch.manual_seed(0)  # flips, turns and zoom draw from torch's own generator
        images, labels = next(iter(module.train_dataloader()))
        return module.on_after_batch_transfer((images, labels), 0)[0]

    assert torch.equal(first_batch(0), first_batch(0))  # repeatable
    assert not torch.equal(first_batch(0), first_batch(1))


@pytest.mark.parametrize("method", ["macenko", "reinhard", "histogram", "stain-histogram"])
def test_data_module_normalises_every_split_and_keeps_the_reference(larger_tiles, method):
    plain = TileDataModule(larger_tiles, larger_tiles, input_px=128, val_fraction=0.25)
    normalized = TileDataModule(
        larger_tiles, larger_tiles, input_px=128, val_fraction=0.25, normalizer=method
    )
    plain.setup("fit")
    normalized.setup("fit")
    assert normalized.preprocessing.normalizer["method"] == method
    assert normalized.preprocessing.model_mpp == 0.5  # recorded by the manifest
    if method != "macenko":  # fitted at the scale of the tiles it normalises
        assert normalized.preprocessing.normalizer["mpp"] == normalized.preprocessing.model_mpp
    for split in ("train", "val", "test"):
        before, after = plain.datasets[split].tensors[0], normalized.datasets[split].tensors[0]
        assert after.shape == before.shape and after.dtype == torch.uint8
        assert (after.float() - before.float()).abs().mean() > 1


def test_unknown_normalizer_is_a_user_error(tiles):
    with pytest.raises(BadInputError, match="unknown normalizer 'vahadane'"):
        TileDataModule(str(tiles), input_px=32, normalizer="vahadane").setup("fit")


def test_data_module_trains_on_a_synthetic_stream():
    stream = SyntheticStream(domains=2, tiles_per_epoch=16, val_per_class=2, tile_px=48)
    module = TileDataModule(synthetic=stream, input_px=32, batch_size=8, scale_jitter=0.1)
    module.setup("fit")
    assert len(module.datasets["val"]) == 12
    assert module.preprocessing.model_mpp == pytest.approx(0.5 * 48 / 32)
    batches = list(module.train_dataloader())
    assert len(batches) == 2 and batches[0][0].shape == (8, 3, 32, 32)
    with pytest.raises(BadInputError, match="data.train or data.synthetic"):
        TileDataModule(input_px=32)
