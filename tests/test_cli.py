import json
import subprocess
import sys

import pytest
from PIL import Image

from ossiclass.cli import main


def test_synth_tiles_sheet_and_slide(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                "tiles",
                str(tmp_path / "tiles"),
                "--per-class",
                "2",
                "--size",
                "48",
                "--quiet",
            ]
        )
        == 0
    )
    assert (tmp_path / "tiles" / "manifest.csv").exists()
    assert (
        main(["synth", "sheet", str(tmp_path / "sheet.jpg"), "--per-class", "2", "--size", "48"])
        == 0
    )
    assert (tmp_path / "sheet.jpg").stat().st_size > 1000
    assert (
        main(
            [
                "synth",
                "slide",
                str(tmp_path / "s.tif"),
                "--width",
                "1024",
                "--height",
                "1024",
                "--layout",
                "fracture_callus",
                "--cartilage",
                "0.5",
                "--quiet",
            ]
        )
        == 0
    )
    assert (tmp_path / "s.labels.png").exists() and (tmp_path / "s.tissue.png").exists()
    truth = json.loads((tmp_path / "s.truth.json").read_text())
    assert truth["settings"]["cartilage"] == 0.5 and truth["layout"] == "fracture_callus"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["synth", "slide", "{tmp}/slide.png"], "written as .tif"),
        (["synth", "slide", "{tmp}/s.tif", "--width", "99"], "width must be"),
        (["synth", "tiles", "{tmp}/occupied", "--per-class", "1"], "not empty"),
        (["synth", "sheet", "{tmp}/sheet.xyz", "--per-class", "1", "--size", "32"], "cannot write"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    status = main([arg.format(tmp=tmp_path) for arg in argv])
    error = capsys.readouterr().err
    assert status == 2
    assert message in error and error.startswith("ossiclass: error: ")
    assert error.count("\n") == 1 and "Traceback" not in error


@pytest.mark.parametrize(
    "argv, message",
    [
        (["synth", "tiles", "out", "--per-class", "0"], "positive whole number"),
        (["synth", "tiles", "out", "--per-class", "1", "--seed", "-5"], "--seed: expected 0 or"),
        (["synth", "sheet", "s.jpg", "--quality", "500"], "--quality: expected 1 to 95"),
    ],
)
def test_bad_option_values_are_refused_by_the_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_contact_sheet_resized_very_narrow_keeps_a_pixel_of_height(tmp_path):
    sheet = tmp_path / "sheet.png"
    argv = ["synth", "sheet", str(sheet), "--per-class", "1", "--size", "16", "--width", "1"]
    assert main(argv) == 0
    with Image.open(sheet) as image:
        assert image.size == (1, 1)


def test_module_entry_point_answers_help_quickly():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ossiclass", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "synth" in result.stdout
    assert "torch" not in result.stderr  # heavy libraries load only in the commands that use them


def _tile_file(path, seed=0):
    from PIL import Image

    from ossiclass.synth.stains import sample_domains
    from ossiclass.synth.tiles import make_tile

    Image.fromarray(make_tile("callus", seed, seed, sample_domains(seed, 1), 128, 0.5)[0]).save(
        path
    )
    return str(path)


@pytest.mark.parametrize("method", ["macenko", "reinhard", "histogram", "stain-histogram"])
def test_normalize_writes_images_and_a_reusable_reference(tmp_path, capsys, method):
    reference, image = _tile_file(tmp_path / "ref.png"), _tile_file(tmp_path / "lab2.png", 1)
    saved = tmp_path / "out" / "ref.json"
    argv = ["normalize", image, "--reference", reference, "--out", str(tmp_path / "out")]
    assert main([*argv, "--method", method, "--mpp", "1", "--save-reference", str(saved)]) == 0
    assert json.loads(saved.read_text())["method"] == method
    if method != "macenko":  # the statistics methods keep the scale their holes were measured at
        assert json.loads(saved.read_text())["mpp"] == 1.0
    assert (tmp_path / "out" / "lab2.png").exists() and saved.exists()
    again = ["normalize", image, "--reference", str(saved), "--out", str(tmp_path / "again")]
    assert main(again) == 0
    first = (tmp_path / "out" / "lab2.png").read_bytes()
    assert first == (tmp_path / "again" / "lab2.png").read_bytes()
    capsys.readouterr()
    assert main([*again, "--mpp", "2"]) == 0  # the saved reference's scale wins, and says so
    assert "--mpp ignored" in capsys.readouterr().err


def test_normalize_errors(tmp_path, capsys):
    image = _tile_file(tmp_path / "a.png")
    (tmp_path / "bad.json").write_text("{not json")
    assert (
        main(
            ["normalize", image, "--reference", str(tmp_path / "bad.json"), "--out", str(tmp_path)]
        )
        == 2
    )
    assert "not a saved stain reference" in capsys.readouterr().err
    missing = [
        "normalize",
        str(tmp_path / "none.png"),
        "--reference",
        image,
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(missing) == 2
    error = capsys.readouterr().err
    assert "skipped" in error and "no such file" in error and "Traceback" not in error


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda saved: [], "a stain normaliser is a JSON object, got list"),
        (lambda saved: saved | {"reference": {**saved["reference"], "vectors": [[1, 2]]}},
         "vectors: expected (2, 3) finite numbers"),
        (lambda saved: saved | {"reference": {**saved["reference"], "vectors": "abc"}},
         "vectors: expected (2, 3) finite numbers"),
        (lambda saved: saved | {"sample_every": 0}, "sample_every: expected a whole number"),
        (lambda saved: saved | {"sample_every": "x"}, "sample_every: expected a whole number"),
        (lambda saved: saved | {"beta": -1}, "out of range"),
    ],
)  # fmt: skip
def test_a_malformed_saved_reference_is_one_line(tmp_path, capsys, change, message):
    image = _tile_file(tmp_path / "a.png")
    saved = tmp_path / "ref.json"
    argv = ["normalize", image, "--reference", image, "--out", str(tmp_path / "o")]
    assert main([*argv, "--mpp", "0.5", "--save-reference", str(saved)]) == 0
    saved.write_text(json.dumps(change(json.loads(saved.read_text()))))
    capsys.readouterr()
    assert main(["normalize", image, "--reference", str(saved), "--out", str(tmp_path / "b")]) == 2
    error = capsys.readouterr().err
    assert "not a saved stain reference" in error and message in error
    assert len(error.strip().splitlines()) == 1


def test_normalize_refuses_what_it_cannot_write(tmp_path, capsys):
    first = _tile_file(tmp_path / "a.png")
    (tmp_path / "b").mkdir()
    second = _tile_file(tmp_path / "b" / "a.png", 1)
    out = tmp_path / "o"
    argv = ["normalize", "--reference", first, "--mpp", "0.5", "--out", str(out)]
    assert main([*argv, first, second]) == 2  # both would be OUT/a.png
    error = capsys.readouterr().err
    assert f"{first} and {second} would both be written to {out / 'a.png'}" in error
    (out / "a.png").mkdir(parents=True)
    assert main([*argv, first]) == 2
    assert f"{out / 'a.png'}: is a folder, not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["normalize", first, "--reference", first, "--mpp", "1e-300", "--out", str(out)])
    assert "expected 0.05 to 50 µm per pixel" in capsys.readouterr().err
