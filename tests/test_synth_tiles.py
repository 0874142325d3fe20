import csv
import hashlib

import numpy as np
import pytest

from ossiclass.classes import CLASSES
from ossiclass.datasets import read_tile_table
from ossiclass.errors import BadInputError
from ossiclass.imageio import read_image
from ossiclass.synth.tiles import (
    TileSettings,
    contact_sheet,
    write_tile_dataset,
)


def _digests(root):
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def small():
    return TileSettings(per_class=4, size_px=64, seed=5, domains=3)


def test_writes_class_folders_and_a_manifest(tmp_path, small):
    manifest = write_tile_dataset(tmp_path / "tiles", small, progress=False)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * len(CLASSES)
    assert list(rows[0]) == ["path", "label", "domain", "seed", "mpp"]
    assert {row["label"] for row in rows} == set(CLASSES)
    assert {row["domain"] for row in rows} == {"0", "1", "2"}
    for row in rows:
        assert row["path"].startswith(row["label"] + "/") and row["seed"] == "5"
        assert row["mpp"] == "0.5"  # µm per pixel, as training reads it
        image = read_image(manifest.parent / row["path"])
        assert image.shape == (64, 64, 3)
    assert not list((tmp_path / "tiles").rglob(".*partial"))


def test_the_manifest_records_the_scale_training_reads(tmp_path):
    settings = TileSettings(per_class=1, size_px=32, mpp=0.25, seed=5, domains=1)
    table = read_tile_table(write_tile_dataset(tmp_path / "tiles", settings, progress=False))
    assert table.mpp.tolist() == [0.25] * len(CLASSES)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, small):
    write_tile_dataset(tmp_path / "one", small, workers=1, progress=False)
    write_tile_dataset(tmp_path / "two", small, workers=2, progress=False)
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")


def test_another_seed_gives_other_tiles_and_domains(tmp_path, small):
    write_tile_dataset(tmp_path / "a", small, progress=False)
    write_tile_dataset(tmp_path / "b", TileSettings(4, 64, 0.5, 6, 3), progress=False)
    first = read_image(tmp_path / "a/callus/callus_000000.png").astype(int)
    second = read_image(tmp_path / "b/callus/callus_000000.png").astype(int)
    assert np.abs(first - second).mean() > 5
    assert (tmp_path / "a/synth.json").read_text() != (tmp_path / "b/synth.json").read_text()


def test_an_interrupted_run_resumes_to_the_same_data_set(tmp_path, small):
    root = tmp_path / "tiles"
    write_tile_dataset(root, small, progress=False)
    expected = _digests(root)
    (root / "manifest.csv").unlink()
    for path in list(root.glob("woven_bone/*.png"))[:3]:
        path.unlink()
    write_tile_dataset(root, small, progress=False)
    assert _digests(root) == expected


def test_refuses_a_folder_made_with_other_settings(tmp_path, small):
    write_tile_dataset(tmp_path / "tiles", small, progress=False)
    with pytest.raises(BadInputError, match="other settings"):
        write_tile_dataset(tmp_path / "tiles", TileSettings(4, 64, 0.5, 99, 3), progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.docx").write_text("precious")
    with pytest.raises(BadInputError, match="not empty"):
        write_tile_dataset(tmp_path / "other", small, progress=False)


@pytest.mark.parametrize(
    "settings, message",
    [
        (TileSettings(0), "per_class must"),
        (TileSettings(1, size_px=8), "size_px must"),
        (TileSettings(1, mpp=0.0), "mpp must"),
        (TileSettings(1, domains=0), "domains must"),
    ],
)
def test_settings_are_checked(tmp_path, settings, message):
    with pytest.raises(BadInputError, match=message):
        write_tile_dataset(tmp_path, settings, progress=False)


def test_contact_sheet_has_a_row_per_class():
    sheet = contact_sheet(per_class=2, size_px=48)
    assert sheet.mode == "RGB"
    assert sheet.height == len(CLASSES) * (48 + 4)
