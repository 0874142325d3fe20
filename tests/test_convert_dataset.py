"""scripts/convert_dataset.py on a tiny fake public data set made in tmp_path."""

import csv
import json
import os
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ossiclass.classes import CLASSES
from ossiclass.datasets import read_label_map, read_tile_table

ROOT = Path(__file__).resolve().parents[1]
main = runpy.run_path(str(ROOT / "scripts" / "convert_dataset.py"))["main"]

LABEL_MAP = {
    "SOFT": "mesenchyme",
    "CARTILAGE": "hyaline_cartilage",
    "HYPERTROPHIC": "hypertrophic_zone",
    "WOVEN": "woven_bone",
    "BONE": "lamellar_bone",
    "CALLUS": "callus",
    "FAT": None,
}
TILE_PX = 32


@pytest.fixture
def public_set(tmp_path) -> Path:
    """`SRC/<label>/` with one PNG of patient P1 and one JPEG of patient Case-2 per label."""
    rng = np.random.default_rng(0)
    for label in LABEL_MAP:
        folder = tmp_path / "src" / label
        folder.mkdir(parents=True)
        for name in (f"P1-B3-{label}_10.png", f"Case-2-A18-{label}_11.jpg"):
            pixels = rng.integers(0, 256, (TILE_PX, TILE_PX, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name)
    (tmp_path / "map.json").write_text(json.dumps(LABEL_MAP))
    return tmp_path / "src"


def convert(public_set: Path, out: Path, *options: str) -> int:
    label_map = str(public_set.parent / "map.json")
    return main([str(public_set), str(out), "--label-map", label_map, "--quiet", *options])


def manifest_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_converts_label_folders_into_a_tile_set_training_reads(public_set, tmp_path, capsys):
    out = tmp_path / "out"
    assert convert(public_set, out, "--group-regex", r"^(Case-\d+|P\d+)") == 0
    assert "wrote 12 tiles" in capsys.readouterr().out

    table = read_tile_table(out)
    assert np.bincount(table.labels).tolist() == [2] * len(CLASSES)
    rows = manifest_rows(out)
    assert list(rows[0]) == ["path", "label", "group", "source"]
    for row in rows:
        assert row["group"] == ("P1" if row["source"].split("/")[1].startswith("P1") else "Case-2")
        assert row["path"].startswith(f"{row['label']}/") and row["path"].endswith(".png")
        assert LABEL_MAP[row["source"].split("/")[0]] == row["label"]
        assert Image.open(out / row["path"]).size == (TILE_PX, TILE_PX)
    assert not any("FAT" in row["source"] for row in rows)
    assert sorted(p.name for p in out.iterdir()) == sorted([*CLASSES, "manifest.csv"])


def test_a_label_missing_from_the_map_is_a_one_line_error_naming_it(public_set, tmp_path, capsys):
    (tmp_path / "map.json").write_text(
        json.dumps({k: v for k, v in LABEL_MAP.items() if k != "FAT"})
    )
    assert convert(public_set, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "'FAT'" in error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("mpp_in, mpp_out, size", [(1.0, 0.5, 64), (0.5, 1.0, 16)])
def test_rescales_to_the_requested_microns_per_pixel(public_set, tmp_path, mpp_in, mpp_out, size):
    out = tmp_path / "out"
    assert convert(public_set, out, "--mpp-in", str(mpp_in), "--mpp-out", str(mpp_out)) == 0
    assert {Image.open(out / row["path"]).size for row in manifest_rows(out)} == {(size, size)}
    assert {row["mpp"] for row in manifest_rows(out)} == {str(mpp_out)}  # the scale written
    assert read_tile_table(out).mpp.tolist() == [mpp_out] * 12


def test_a_rerun_with_another_scale_replaces_the_recorded_one(public_set, tmp_path):
    out = tmp_path / "out"
    assert convert(public_set, out, "--mpp-in", "1", "--mpp-out", "0.5") == 0
    assert convert(public_set, out) == 0  # no scale given: none recorded
    assert "mpp" not in manifest_rows(out)[0] and read_tile_table(out).mpp is None


def test_csv_source_with_its_own_column_names_and_linked_files(public_set, tmp_path):
    lines = ["file,class"] + [
        f"src/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(public_set.glob("*/*"))
    ]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = [str(tmp_path / "labels.csv"), str(out), "--label-map", str(tmp_path / "map.json")]
    assert main([*argv, "--path-column", "file", "--label-column", "class", "--link"]) == 0

    rows = manifest_rows(out)
    assert len(read_tile_table(out).paths) == len(rows) == 12
    for row in rows:
        assert Path(row["path"]).suffix == Path(row["source"]).suffix  # kept as they were
        assert os.path.samefile(out / row["path"], tmp_path / row["source"])
        assert row["group"] == row["source"]  # no --group-regex: each tile its own group


def test_a_rerun_replaces_the_earlier_conversion(public_set, tmp_path):
    out = tmp_path / "out"
    assert convert(public_set, out) == 0
    (tmp_path / "map.json").write_text(json.dumps({**LABEL_MAP, "BONE": None}))
    assert convert(public_set, out) == 0
    assert {row["label"] for row in manifest_rows(out)} == set(CLASSES) - {"lamellar_bone"}
    assert not any((out / "lamellar_bone").iterdir())


@pytest.mark.parametrize(
    "source, options, message",
    [
        ("src", ["--group-regex", r"^(Q\d+)"], "does not match --group-regex"),
        ("src", ["--group-regex", "^P"], "needs a group"),
        ("src", ["--group-regex", "(P"], "--group-regex '(P'"),
        ("src", ["--mpp-in", "1"], "both --mpp-in and --mpp-out"),
        ("src", ["--link", "--mpp-in", "1", "--mpp-out", "0.5"], "cannot rescale"),
        ("src", ["--mpp-in", "10", "--mpp-out", "0.25"], "rescale 40 times"),
        ("missing", [], "no such data set"),
        ("labels.csv", [], "no column label, path"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    public_set, tmp_path, capsys, source, options, message
):
    (tmp_path / "labels.csv").write_text("file,class\nsrc/BONE/P1-B3-BONE_10.png,BONE\n")
    argv = [
        str(tmp_path / source),
        str(tmp_path / "out"),
        "--label-map",
        str(tmp_path / "map.json"),
    ]
    assert main([*argv, *options]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error


def test_refuses_a_folder_it_did_not_make_and_names_an_unreadable_tile(
    public_set, tmp_path, capsys
):
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    assert convert(public_set, tmp_path / "occupied") == 2
    assert "not empty" in capsys.readouterr().err

    (public_set / "BONE" / "P1-broken_12.png").write_bytes(b"not a png")
    assert convert(public_set, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "P1-broken_12.png" in error and error.count("\n") == 1


def test_the_example_label_maps_are_valid():
    maps = sorted((ROOT / "configs" / "label_maps").glob("*.json"))
    assert maps
    for path in maps:
        assert read_label_map(path)
