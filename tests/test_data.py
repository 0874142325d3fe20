import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tile_set
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from ossiclass.classes import CLASSES
from ossiclass.data import (
    SyntheticStream,
    SyntheticTiles,
    TileDataModule,
    grouped_split,
    load_tiles,
    random_dihedral,
    random_scale,
    read_tile_table,
)
from ossiclass.errors import BadInputError


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles") / "set"
    return make_tile_set(root, per_class=4, seed=2)


def test_class_folders_and_manifest_give_the_same_table(tiles):
    from_manifest = read_tile_table(tiles / "manifest.csv")
    (tiles / "manifest.csv").rename(tiles / "manifest.bak")
    try:
        from_folders = read_tile_table(tiles)
    finally:
        (tiles / "manifest.bak").rename(tiles / "manifest.csv")
    assert sorted(map(str, from_manifest.paths)) == sorted(map(str, from_folders.paths))
    assert np.bincount(from_manifest.labels).tolist() == [4] * len(CLASSES)


def test_label_map_maps_and_drops(tmp_path, tiles):
    rows = ["path,label"] + [f"{tiles}/{c}/{c}_000000.png,{c.upper()}" for c in CLASSES]
    rows.append(f"{tiles}/callus/callus_000001.png,ADIPOSE")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    mapping = {c.upper(): c for c in CLASSES} | {"ADIPOSE": None}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    table = read_tile_table(tmp_path / "m.csv", tmp_path / "map.json")
    assert len(table.paths) == len(CLASSES)


@pytest.mark.parametrize(
    "rows, message",
    [
        (["path,label", "nowhere.png,callus"], "does not exist"),
        (["path,label", "{t}/callus/callus_000000.png,marrow"], "'marrow' is not in the label map"),
        (["path,label", "{t}/callus/callus_000000.png,callus"], "no tiles for mesenchyme"),
        (["file,class", "a.png,callus"], "needs the columns path and label"),
    ],
)
def test_bad_data_is_reported_with_its_file_and_line(tmp_path, tiles, rows, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(r.format(t=tiles) for r in rows) + "\n")
    with pytest.raises(BadInputError, match=message) as caught:
        read_tile_table(manifest)
    assert "m.csv" in str(caught.value)


def test_unreadable_tile_names_the_file(tmp_path, tiles):
    table = read_tile_table(tiles)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    table.paths[0] = broken
    with pytest.raises(Exception, match="broken.png"):
        load_tiles(table, 32, progress=False)


def test_grouped_split_keeps_groups_together():
    from ossiclass.data import TileTable

    labels = np.repeat(np.arange(6), 10)
    groups = [f"slide{i // 5}" for i in range(60)]  # two slides per class
    table = TileTable([None] * 60, labels, groups)
    rest, held = grouped_split(table, 0.5, seed=0)
    assert {groups[i] for i in rest}.isdisjoint({groups[i] for i in held})
    assert len(held) == 30 and sorted(np.unique(labels[held])) == list(range(6))


def test_random_dihedral_keeps_the_pixels():
    batch = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    out = random_dihedral(batch, torch.Generator().manual_seed(0))
    assert sorted(out[0].flatten().tolist()) == sorted(batch[0].flatten().tolist())


def test_data_module_splits_and_batches(tiles):
    module = TileDataModule(str(tiles), str(tiles), input_px=32, batch_size=4, val_fraction=0.25)
    module.setup("fit")
    assert len(module.datasets["train"]) + len(module.datasets["val"]) == 24
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    Image.fromarray(images[0].permute(1, 2, 0).numpy())  # a real picture


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
            larger_tiles, input_px=64, batch_size=8, stain_domains=1.0, hed_jitter=0.05
        )
        module.trainer = SimpleNamespace(global_rank=rank, training=True)
        module.setup("fit")
        torch.manual_seed(0)  # flips and zoom draw from torch's own generator
        images, labels = next(iter(module.train_dataloader()))
        return module.on_after_batch_transfer((images, labels), 0)[0]

    assert torch.equal(first_batch(0), first_batch(0))  # repeatable
    assert not torch.equal(first_batch(0), first_batch(1))


@pytest.mark.parametrize("method", ["macenko", "reinhard", "histogram", "stain-histogram"])
def test_data_module_normalises_every_split_and_keeps_the_reference(larger_tiles, method):
    plain = TileDataModule(larger_tiles, larger_tiles, input_px=128, val_fraction=0.25)
    normalized = TileDataModule(
        larger_tiles, larger_tiles, input_px=128, val_fraction=0.25, normalizer=method, mpp=0.25
    )
    plain.setup("fit")
    normalized.setup("fit")
    assert normalized.normalizer_state["method"] == method
    if method != "macenko":  # fitted at the scale of the tiles it normalises
        assert normalized.normalizer_state["mpp"] == normalized.input_mpp == 0.25
    for split in ("train", "val", "test"):
        before, after = plain.datasets[split].tensors[0], normalized.datasets[split].tensors[0]
        assert after.shape == before.shape and after.dtype == torch.uint8
        assert (after.float() - before.float()).abs().mean() > 1


def test_unknown_normalizer_is_a_user_error(tiles):
    with pytest.raises(BadInputError, match="unknown normalizer 'vahadane'"):
        TileDataModule(str(tiles), input_px=32, normalizer="vahadane").setup("fit")


def test_random_scale_zooms_about_the_centre():
    square = torch.zeros(4, 3, 64, 64, dtype=torch.uint8)
    square[..., 16:48, 16:48] = 255
    assert torch.equal(random_scale(square, 0.0), square)
    zoomed = random_scale(square, 0.2, torch.Generator().manual_seed(0))
    scales = 1 + (torch.rand(4, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.2
    areas = (zoomed[:, 0] > 127).sum(dim=(1, 2)).float()
    assert torch.allclose(areas / 32**2, scales**2, rtol=0.08)
    assert torch.equal(zoomed[:, 0, 32, 32], square[:, 0, 32, 32])  # the centre stays


def _stream_batches(stream, workers, seed):
    torch.manual_seed(seed)
    tiles = SyntheticTiles(stream, size_px=32, batch_size=6, normalize=lambda batch: batch)
    return list(DataLoader(tiles, batch_size=None, num_workers=workers))


def test_synthetic_stream_is_endless_repeatable_and_split_over_workers():
    stream = SyntheticStream(tiles_per_epoch=30, tile_px=48)
    first = _stream_batches(stream, workers=2, seed=0)
    assert len(first) == 5  # 30 tiles in batches of 6, shared by two workers
    images, labels = first[0]
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.max() < len(CLASSES)
    again = _stream_batches(stream, workers=2, seed=0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    other = _stream_batches(stream, workers=2, seed=1)  # another epoch: other tiles
    assert not torch.equal(first[0][0], other[0][0])


def test_data_module_trains_on_a_synthetic_stream():
    stream = SyntheticStream(domains=2, tiles_per_epoch=16, val_per_class=2, tile_px=48)
    module = TileDataModule(synthetic=stream, input_px=32, batch_size=8)
    module.setup("fit")
    assert len(module.datasets["val"]) == 12
    assert module.input_mpp == pytest.approx(0.5 * 48 / 32)
    batches = list(module.train_dataloader())
    assert len(batches) == 2 and batches[0][0].shape == (8, 3, 32, 32)
    with pytest.raises(BadInputError, match="data.train or data.synthetic"):
        TileDataModule(input_px=32)


def test_a_label_map_must_be_a_json_object(tmp_path, tiles):
    (tmp_path / "map.json").write_text('["callus", "mesenchyme"]')
    with pytest.raises(BadInputError, match="a label map is a JSON object"):
        read_tile_table(tiles, tmp_path / "map.json")
