"""What the `ossiclass synth` commands refuse: one line and exit 2, before anything is written."""

import pytest

from ossiclass.cli import main
from ossiclass.errors import BadInputError
from ossiclass.qupath import read_annotations
from ossiclass.synth.tiles import contact_sheet


def refused(arguments: list[str], capsys) -> str:
    """The one-line error of a command that exits with status 2, argparse's or ours."""
    try:
        status = main(arguments)
    except SystemExit as stop:  # argparse
        status = stop.code
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: " in error
    return error


@pytest.mark.parametrize("mpp", ["0", "nan", "inf", "-1", "1e9", "1e-9"])
def test_sheet_takes_the_mpp_of_a_tile_set(tmp_path, capsys, mpp):
    out = tmp_path / "sheet.png"
    arguments = ["synth", "sheet", str(out), "--per-class", "1", "--size", "16", "--mpp", mpp]
    assert "mpp must be between 0.1 and 4 µm/px" in refused(arguments, capsys)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--size", "1", "size_px must be between 16 and 4096 px"),
        ("--size", "100000", "size_px must be between 16 and 4096 px"),
        ("--width", "10000000", "--width: expected 1 to 4096 px"),
        ("--per-class", "100000000", "--per-class: expected 1 to 32"),
    ],
)
def test_sheet_sizes_are_bounded(tmp_path, capsys, option, value, message):
    out = tmp_path / "sheet.png"
    assert message in refused(["synth", "sheet", str(out), option, value], capsys)
    assert not list(tmp_path.iterdir())


def test_a_sheet_too_large_to_look_at_is_refused_before_it_is_painted():
    with pytest.raises(BadInputError, match="131430 x 24600 px is over"):
        contact_sheet(per_class=32, size_px=4096)


def test_annotations_too_small_to_draw_are_refused(small_slide, tmp_path, capsys):
    out = tmp_path / "drawn.geojson"
    arguments = ["synth", "annotations", str(small_slide), "--regions", "2", "--out", str(out)]
    error = refused([*arguments, "--diameter-um", "1e-9", "1e-9"], capsys)
    assert "too small to draw on this slide: at least 10 µm" in error
    assert not out.exists()
    assert main([*arguments, "--diameter-um", "10", "10"]) == 0  # the smallest drawn: readable
    assert read_annotations(out).annotations


@pytest.mark.parametrize("folder", ["sdir.tif", "sdir.labels.png", "sdir.truth.json"])
def test_slide_outputs_that_are_folders_are_refused_before_painting(tmp_path, capsys, folder):
    (tmp_path / folder).mkdir()
    arguments = ["synth", "slide", str(tmp_path / "sdir.tif"), "--width", "1024"]
    error = refused([*arguments, "--height", "1024", "--quiet"], capsys)
    assert error.endswith(f"{tmp_path / folder}: is a folder, not a file")
    assert [p.name for p in tmp_path.iterdir()] == [folder]


def test_outputs_under_a_file_are_refused(tmp_path, capsys, small_slide):
    afile = tmp_path / "afile"
    afile.touch()
    slide = ["synth", "slide", str(afile / "x.tif"), "--width", "1024", "--height", "1024"]
    tiles = ["synth", "tiles", str(afile / "tiles"), "--per-class", "1", "--size", "16"]
    drawn = ["synth", "annotations", str(small_slide), "--regions", "1", "--out"]
    for arguments in (slide, tiles, [*drawn, str(afile / "a.geojson")]):
        assert refused(arguments, capsys).endswith(f"{afile}: is a file, not a folder")


def test_annotations_and_sheet_outputs_that_are_folders_are_refused(tmp_path, capsys, small_slide):
    folder = tmp_path / "out.geojson"
    folder.mkdir()
    arguments = ["synth", "annotations", str(small_slide), "--regions", "1", "--out", str(folder)]
    assert refused(arguments, capsys).endswith(f"{folder}: is a folder, not a file")
    arguments = ["synth", "sheet", str(folder), "--per-class", "1", "--size", "16"]
    assert refused(arguments, capsys).endswith(f"{folder}: is a folder, not a file")
    assert [p.name for p in tmp_path.iterdir()] == ["out.geojson"] and not any(folder.iterdir())


def test_tiles_into_a_file_are_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    arguments = ["synth", "tiles", str(afile), "--per-class", "1", "--size", "16"]
    assert refused(arguments, capsys).endswith(f"{afile}: is a file, not a folder")
    assert afile.read_text() == "mine"
