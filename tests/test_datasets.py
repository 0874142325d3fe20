import json

import numpy as np
import pytest
import torch
from conftest import make_tile_set
from PIL import Image
from torch.utils.data import DataLoader

from ossiclass.classes import CLASSES
from ossiclass.datasets import (
    SyntheticStream,
    SyntheticTiles,
    TileTable,
    field_um,
    grouped_split,
    read_tile_table,
    read_tiles,
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
    assert from_manifest.mpp.tolist() == [0.5] * 24  # written by `synth tiles`
    assert from_folders.mpp is None  # class folders record no scale


def test_label_map_maps_and_drops(tmp_path, tiles):
    rows = ["path,label"] + [f"{tiles}/{c}/{c}_000000.png,{c.upper()}" for c in CLASSES]
    rows.append(f"{tiles}/callus/callus_000001.png,ADIPOSE")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    mapping = {c.upper(): c for c in CLASSES} | {"ADIPOSE": None}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    table = read_tile_table(tmp_path / "m.csv", tmp_path / "map.json")
    assert len(table.paths) == len(CLASSES) and table.mpp is None


def _manifest(tmp_path, tiles, scales) -> str:
    """A manifest of one tile a class with an mpp column holding `scales` (one a row)."""
    rows = ["path,label,mpp"] + [
        f"{tiles}/{c}/{c}_000000.png,{c},{scale}" for c, scale in zip(CLASSES, scales, strict=True)
    ]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "m.csv"


def test_a_manifest_records_each_tiles_microns_per_pixel(tmp_path, tiles):
    table = read_tile_table(_manifest(tmp_path, tiles, [0.5, 0.25, 1, 2e-1, "0.5", 4.0]))
    assert table.mpp.dtype == np.float64
    assert table.mpp.tolist() == [0.5, 0.25, 1.0, 0.2, 0.5, 4.0]


@pytest.mark.parametrize("cell", ["abc", "", "0", "-0.5", "nan", "inf", "0.5 um"])
def test_a_malformed_mpp_cell_names_the_file_and_line(tmp_path, tiles, cell):
    manifest = _manifest(tmp_path, tiles, [0.5, 0.5, cell, 0.5, 0.5, 0.5])
    with pytest.raises(BadInputError, match="mpp .* is not a positive number") as caught:
        read_tile_table(manifest)
    assert str(caught.value).startswith(f"{manifest} line 4: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "rows, message",
    [
        (["path,label", "nowhere.png,callus"], "does not exist"),
        (["path,label", "{t}/callus/callus_000000.png,marrow"], "'marrow' is not in the classes"),
        (["path,label", "{t}/callus/callus_000000.png,callus"], "no tiles for mesenchyme"),
        (["file,class", "a.png,callus"], "needs the columns path and label"),
        (["path,label,mpp", "{t}/callus/callus_000000.png,callus"], "mpp '' is not a positive"),
        (["path,label", "grün.png,callus"], "not a readable CSV"),  # written in Latin-1 below
        (["path,label,label", "{t}/callus/callus_000000.png,callus,bone"], "column 'label' twice"),
        (["path,label", "{t}/callus/callus_000000.png,callus,x"], "line 2: more values than"),
    ],
)
def test_bad_data_is_reported_with_its_file_and_line(tmp_path, tiles, rows, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(r.format(t=tiles) for r in rows) + "\n", encoding="latin-1")
    with pytest.raises(BadInputError, match=message) as caught:
        read_tile_table(manifest)
    assert "m.csv" in str(caught.value)


def test_a_manifest_saved_with_a_byte_order_mark_is_read(tmp_path, tiles):
    names = list(CLASSES)
    rows = [f"{tiles}/{name}/{name}_000000.png,{name}" for name in names]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(["path,label", *rows]) + "\n", encoding="utf-8-sig")
    assert len(read_tile_table(manifest).paths) == len(names)


def test_tiles_may_differ_in_scale_only_where_they_cover_one_field(tmp_path, tiles):
    recorded = read_tile_table(tiles)  # 48 px tiles at 0.5 µm/px
    stored, widths = read_tiles(recorded, 32, progress=False)
    assert stored.shape == (24, 3, 32, 32) and widths.tolist() == [48] * 24
    assert field_um(recorded, widths, default_mpp=2.0) == 24.0  # the recorded scale wins
    table = TileTable(recorded.paths, recorded.labels, recorded.groups)  # no scale recorded
    assert field_um(table, widths, default_mpp=2.0) == 96.0  # the default

    doubled = widths.copy()
    doubled[5] = 96  # twice the pixels at half the µm/px: the same 24 µm
    mixed = recorded.mpp.copy()
    mixed[5] = 0.25
    assert field_um(TileTable(table.paths, table.labels, table.groups, mixed), doubled, 2.0) == 24
    with pytest.raises(BadInputError, match="96 px at 0.5 µm/px cover 48 µm, but .* 24 µm"):
        field_um(recorded, doubled, 2.0)
    with pytest.raises(BadInputError, match="96 px at 2 µm/px cover 192 µm"):
        field_um(table, doubled, 2.0)  # unrecorded tiles of two sizes: two fields
    with pytest.raises(BadInputError, match="cover 24 µm, but the training tiles cover 128 µm"):
        field_um(recorded, widths, 2.0, expected_um=128.0)


def test_unreadable_tile_names_the_file(tmp_path, tiles):
    table = read_tile_table(tiles)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    table.paths[0] = broken
    with pytest.raises(Exception, match="broken.png"):
        read_tiles(table, 32, progress=False)


def test_loaded_tiles_are_real_pictures(tiles):
    loaded, _ = read_tiles(read_tile_table(tiles), 32, progress=False)
    assert loaded.shape == (24, 3, 32, 32) and loaded.dtype == torch.uint8
    assert loaded.float().std() > 10
    Image.fromarray(loaded[0].permute(1, 2, 0).numpy())


def test_grouped_split_keeps_groups_together():
    labels = np.repeat(np.arange(6), 10)
    groups = [f"slide{i // 5}" for i in range(60)]  # two slides per class
    table = TileTable([None] * 60, labels, groups)
    rest, held = grouped_split(table, 0.5, seed=0)
    assert {groups[i] for i in rest}.isdisjoint({groups[i] for i in held})
    assert len(held) == 30 and sorted(np.unique(labels[held])) == list(range(6))


@pytest.mark.parametrize("seed", range(10))
def test_a_slide_of_several_classes_is_held_out_whole(seed):
    """Slides of QuPath annotations hold several classes each: a slide held out for one class
    takes its tiles of the others with it, and no class loses every training slide."""
    labels = np.array([0, 1, 2] * 12)
    groups = [f"slide{i // 3 % 3}" for i in range(36)]  # three slides, each with all classes
    groups[-1] = "slide3"  # and one tile of class 2 alone on a fourth
    table = TileTable([None] * 36, labels, groups)
    rest, held = grouped_split(table, 0.5, seed)
    assert {groups[i] for i in rest}.isdisjoint({groups[i] for i in held})
    assert len(held) and set(labels[rest]) == {0, 1, 2}


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
    assert SyntheticStream(tile_px=48, input_mpp=0.25).field_um == 12.0


def test_a_label_map_must_be_a_json_object(tmp_path, tiles):
    (tmp_path / "map.json").write_text('["callus", "mesenchyme"]')
    with pytest.raises(BadInputError, match="a label map is a JSON object"):
        read_tile_table(tiles, tmp_path / "map.json")
