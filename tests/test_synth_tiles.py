import csv
import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from ossiclass.classes import CLASS_LIST_FILE, CLASSES, read_class_list
from ossiclass.cli import main
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
        (TileSettings(1, classes=("marrow", "muscle")), "no painter for class muscle"),
        (TileSettings(1, classes=()), "no classes given"),
        (TileSettings(1, classes=("fat", "callus", "fat")), "named twice: fat"),
    ],
)
def test_settings_are_checked(tmp_path, settings, message):
    with pytest.raises(BadInputError, match=message):
        write_tile_dataset(tmp_path, settings, progress=False)


def test_contact_sheet_has_a_row_per_class():
    sheet = contact_sheet(per_class=2, size_px=48)
    assert sheet.mode == "RGB"
    assert sheet.height == len(CLASSES) * (48 + 4)


def test_extra_classes_get_a_class_list_and_leave_the_six_as_they_were(tmp_path, small):
    eight = replace(small, classes=(*CLASSES, "marrow", "fat"))
    manifest = write_tile_dataset(tmp_path / "eight", eight, progress=False)
    classes = read_class_list(manifest)
    assert [c.name for c in classes] == [*CLASSES, "marrow", "fat"]
    assert [c.index for c in classes] == list(range(8))
    assert classes[6].display_name == "Marrow" and classes[7].display_name == "Fat"
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows].count("fat") == 4
    for row in rows:
        assert read_image(manifest.parent / row["path"]).shape == (64, 64, 3)
    write_tile_dataset(tmp_path / "six", small, progress=False)
    six = _digests(tmp_path / "six")
    eight_digests = _digests(tmp_path / "eight")
    for path, digest in six.items():
        if path.endswith(".png"):
            assert eight_digests[path] == digest, path  # same tile seeds with or without extras
    # A six-class set stays as it was: no class list, settings without `classes`.
    assert not (tmp_path / "six" / CLASS_LIST_FILE).exists()
    assert "classes" not in json.loads((tmp_path / "six/synth.json").read_text())["settings"]


def test_extra_class_tiles_do_not_depend_on_the_classes_beside_them(tmp_path, small):
    write_tile_dataset(tmp_path / "a", replace(small, classes=("fat", "marrow")), progress=False)
    write_tile_dataset(tmp_path / "b", replace(small, classes=("marrow",)), progress=False)
    assert [c.name for c in read_class_list(tmp_path / "a")] == ["fat", "marrow"]
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a["marrow/marrow_000002.png"] == b["marrow/marrow_000002.png"]
    assert a["fat/fat_000001.png"] != a["marrow/marrow_000001.png"]


def test_synth_tiles_and_sheet_take_classes(tmp_path, capsys):
    out = tmp_path / "tiles"
    names = [*CLASSES, "marrow", "fat"]
    arguments = ["synth", "tiles", str(out), "--per-class", "1", "--size", "32", "--quiet"]
    assert main([*arguments, "--classes", *names]) == 0
    assert "wrote 8 tiles" in capsys.readouterr().out
    assert [c.name for c in read_class_list(out)] == names
    assert read_image(out / "fat/fat_000000.png").shape == (32, 32, 3)
    sheet = tmp_path / "sheet.png"
    arguments = ["synth", "sheet", str(sheet), "--per-class", "2", "--size", "32"]
    assert main([*arguments, "--classes", "marrow", "fat"]) == 0
    assert read_image(sheet).shape[0] == 2 * (32 + 4)
    assert main([*arguments, "--classes", "muscle"]) == 2
    assert "no painter for class muscle" in capsys.readouterr().err
