import json
import re
import shutil
import subprocess

import pytest

from ossiclass.classes import TISSUE_CLASSES
from ossiclass.classify import Running, classify
from ossiclass.cli import main
from ossiclass.slide_report import write_index, write_report


@pytest.fixture(scope="module")
def result(tiny_model, small_slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "growth_plate"
    classify(small_slide, tiny_model, out, running=Running(batch_size=8, workers=0), progress=False)
    return out


def test_the_report_is_one_self_contained_page(result):
    page = write_report(result).read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""src=['"](?!data:)""", page)  # every image embedded
    assert page.count("<img") >= 3  # the map, the histogram, the least sure tiles
    for name in ("Hyaline cartilage", "Hypertrophic zone", "area (mm²)"):
        assert name in page
    assert "Agreement with the ground truth" in page  # the label mask lies beside the slide


def test_an_index_links_the_reports(result, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(result, other)
    reports = [write_report(result), write_report(other)]
    index = write_index(reports, result.parent / "index.html").read_text()
    assert index.count("<a href=") == 2 and "growth_plate/report.html" in index


def _edit_summary(folder, change) -> None:
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    change(summary)
    path.write_text(json.dumps(summary))


def test_a_summary_from_before_class_lists_reports_the_six(result, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(result, old)
    _edit_summary(old, lambda summary: summary.pop("class_list"))
    page = write_report(old).read_text()
    for tissue in TISSUE_CLASSES:
        assert tissue.display_name in page and tissue.hex_colour in page


def test_an_index_has_a_column_for_every_class_of_its_slides(result, tmp_path):
    lab = tmp_path / "lab"
    shutil.copytree(result, lab)

    def with_marrow(summary):
        summary["class_list"].append({"name": "marrow", "display_name": "Red marrow",
                                      "colour": [1, 2, 3]})  # fmt: skip
        summary["classes"]["marrow"] = {"tiles": 0, "fraction": 0.0}

    _edit_summary(lab, with_marrow)
    index = write_index([write_report(result), write_report(lab)], tmp_path / "index.html")
    header = re.search(r"<tr><th>slide.*?</tr>", index.read_text()).group()
    assert header.count("<th") == 2 + 7 and header.endswith("Red marrow</th></tr>")
    assert "Red marrow" in (lab / "report.html").read_text()


def test_report_of_a_folder_that_is_not_a_result_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a finished classify output" in err


def test_an_index_asked_for_in_a_folder_that_does_not_exist_is_one_line(result, tmp_path, capsys):
    index = tmp_path / "nowhere" / "index.html"
    assert main(["report", str(result), "--index", str(index)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its folder does not exist" in err


def test_an_index_that_is_a_folder_is_refused_before_any_report_is_written(result, tmp_path,
                                                                          capsys):  # fmt: skip
    (result / "report.html").unlink(missing_ok=True)
    assert main(["report", str(result), "--index", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}: is a folder, not a file" in err
    assert not (result / "report.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (.ci/run installs it)"
)
def test_the_report_renders_in_headless_chromium(result, tmp_path):
    import numpy as np
    from PIL import Image

    report = write_report(result)
    screenshot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    shot = subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={screenshot}", "--window-size=1200,2400",
         report.as_uri()], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert screenshot.exists(), shot.stderr[-2000:]
    assert "Uncaught" not in shot.stderr and "ERR_FILE_NOT_FOUND" not in shot.stderr
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True,
        timeout=120,
    ).stdout  # fmt: skip
    assert dom.count("<tr>") >= 7  # the composition table's rows are in the page
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).reshape(-1, 3)
    colourful = (pixels.max(1).astype(int) - pixels.min(1)) > 60
    assert colourful.mean() > 0.05  # the map drew: a large share of saturated pixels


@pytest.mark.parametrize("name, message", [
    ("summary.json", "is written as .html"), ("victim.tif", "is written as .html"),
    ("page.html", "exists and is not an ossiclass index"),
])  # fmt: skip
def test_an_index_never_writes_over_a_file_that_is_not_one(result, tmp_path, capsys, name,
                                                          message):  # fmt: skip
    folder = tmp_path / "copy"
    shutil.copytree(result, folder)
    target = folder / name
    target.write_text(target.read_text() if target.exists() else "mine")
    before = target.read_bytes()
    assert main(["report", str(folder), "--index", str(target)]) == 2
    assert message in capsys.readouterr().err and target.read_bytes() == before
    again = folder / "index.html"
    assert main(["report", str(folder), "--index", str(again)]) == 0
    assert main(["report", str(folder), "--index", str(again)]) == 0  # its own index: rewritten
    again.write_text("<html><head><title>ossiclass: 2 slides</title>")  # one of before the mark
    assert main(["report", str(folder), "--index", str(again)]) == 0
    assert main(["report", str(folder), "--index", str(folder / "report.html")]) == 2


@pytest.mark.parametrize(
    "summary, message",
    [("[1, 2]", "not a finished classify output (AttributeError"),
     ('{"kind": "slide"}', "not a finished classify output (KeyError: 'input')"),
     ('{"kind": "tiles"}', "a report is made for slides, not tile folders")],  # said once
)  # fmt: skip
def test_a_summary_of_the_wrong_shape_is_one_line(result, tmp_path, capsys, summary, message):
    folder = tmp_path / "copy"
    shutil.copytree(result, folder)
    (folder / "summary.json").write_text(summary)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "BadInputError" not in err


def test_tiles_of_the_wrong_shape_are_one_line(result, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(result, folder)
    (folder / "tiles.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(folder)]) == 2
    assert "not a finished classify output (KeyError" in capsys.readouterr().err
