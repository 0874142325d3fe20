import csv
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
from conftest import run_killed
from PIL import Image

from ossiclass.agreement import bland_altman, describe, icc_2_1
from ossiclass.classes import TISSUE_CLASSES
from ossiclass.classify import Running, Tiling
from ossiclass.cli import main
from ossiclass.errors import BadInputError
from ossiclass.manifest import Manual, group_columns, read_manifest
from ossiclass.qupath import feature, feature_collection
from ossiclass.study import measure_column, run_study, slide_measures

REPO = Path(__file__).parents[1]
BATCH, STRIDE = 4, 64
FAST = Running(batch_size=BATCH, workers=0)
SPARSE = Tiling(stride_px=STRIDE)
"""A tile every 128 µm (16 per slide): cheap on a busy CPU."""
LAYOUTS = ("growth_plate", "fracture_callus")
HEADER = "slide,animal,group,day,note"

SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
)
"""Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; ICC(2,1) = 0.29."""


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _study(manifest: Path, model: Path, out: Path):
    return run_study(manifest, model, out, SPARSE, FAST, progress=False)


def _command(manifest: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "study", str(manifest), "--model", str(model), "--out", str(out),
        "--batch-size", str(BATCH), "--stride", str(STRIDE), "--workers", "0", "--quiet", *extra,
    ]  # fmt: skip


def _chunks(out: Path, stem: str) -> int:
    """The chunks classify cut a slide of the study at `out` into."""
    tiles = json.loads((out / "slides" / stem / "summary.json").read_text())["tiles"]
    return -(-tiles["classified"] // BATCH)


def _copy(studied, tmp_path: Path) -> Path:
    """A copy of the studied output folder, for a test that writes into it."""
    return Path(shutil.copytree(studied[0], tmp_path / "out"))


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """Eight 1024 px slides, 2 groups x 2 days x 2 animals, and their manifest (manifest.csv;
    slides in a subfolder, so paths are relative to the manifest). Four are painted; each
    group and day holds one of them and a copy of the next, so that the two differ."""
    from ossiclass.synth.slides import SlideSettings, write_slide

    root = tmp_path_factory.mktemp("study")
    scans = root / "scans"
    for i in range(4):
        settings = SlideSettings(LAYOUTS[i % 2], 1024, 1024, 0.5, 30 + i)
        write_slide(scans / f"slide{2 * i}.tif", settings, progress=False)
    for i in range(4):
        shutil.copy(scans / f"slide{2 * ((i + 1) % 4)}.tif", scans / f"slide{2 * i + 1}.tif")
    lines = [HEADER]
    for i in range(8):
        group, day, animal = ("control", "knockout")[i // 4], (7, 14)[i // 2 % 2], f"m{i // 2}"
        lines.append(f"scans/slide{i}.tif,{animal},{group},{day},note {i}")
    _write(root / "manifest.csv", lines)
    return root


@pytest.fixture(scope="module")
def studied(slides, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("studied") / "out"
    result = _study(slides / "manifest.csv", tiny_model, out)
    return out, result


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_a_study_writes_a_row_per_slide_with_its_measures(slides, studied):
    out, result = studied
    assert (result.classified, result.already_done, result.failed) == (8, 0, {})
    rows = _rows(out / "slides.csv")
    assert [row["slide"] for row in rows] == [f"scans/slide{i}.tif" for i in range(8)]
    columns = list(rows[0])
    assert columns[:5] == HEADER.split(",")
    assert "Hyaline cartilage fraction" in columns and "Callus area (mm2)" in columns
    for i, row in enumerate(rows):  # each slide's measures, from its summary, in its row
        summary = json.loads((out / "slides" / f"slide{i}" / "summary.json").read_text())
        measures = slide_measures(summary)
        assert {measure_column(m) for m in measures} <= set(columns)
        for measure in measures:
            written = row[measure_column(measure)]  # to 6 significant digits
            if measure["value"] is None:
                assert written == ""
            else:
                assert float(written) == pytest.approx(measure["value"], rel=1e-5, abs=1e-12)
    tissues = [f"{c.display_name} fraction" for c in TISSUE_CLASSES]
    assert sum(float(rows[0][c]) for c in tissues) == pytest.approx(1, abs=1e-3)


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_groups_hold_n_mean_and_sd_of_the_slides_of_each_group_and_day(studied):
    out, result = studied
    slides_rows = _rows(out / "slides.csv")
    groups = _rows(out / "groups.csv")
    assert list(groups[0])[:2] == ["group", "day"]  # animal and the unique notes are no groups
    measures = [c for c in slides_rows[0] if c not in HEADER.split(",")]
    cells = [(g, d) for g in ("control", "knockout") for d in ("7", "14")]  # day sorted as numbers
    assert [(row["group"], row["day"]) for row in groups] == [c for c in cells for _ in measures]
    assert {row["n"] for row in groups if row["measure"] == "Mesenchyme fraction"} == {"2"}
    for row in groups:
        cell = [s for s in slides_rows if (s["group"], s["day"]) == (row["group"], row["day"])]
        values = [float(s[row["measure"]]) for s in cell if s[row["measure"]] != ""]
        assert len(cell) == 2 and int(row["n"]) == len(values)  # slides without it left out
        if len(values) == 2:
            assert float(row["mean"]) == pytest.approx(statistics.mean(values), rel=1e-5, abs=1e-9)
            assert float(row["sd"]) == pytest.approx(statistics.stdev(values), rel=1e-5, abs=1e-9)
    assert len(result.groups) == 4 and result.groups[0].startswith("group control, day 7: 2 slides")


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_each_measure_gets_a_plot(studied):
    out, result = studied
    rows = _rows(out / "slides.csv")
    measured = [c for c in rows[0] if c not in HEADER.split(",") and any(r[c] for r in rows)]
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert "hyaline_cartilage_area_mm2.png" in plots and len(plots) == len(measured)
    for name in plots:
        with Image.open(out / "plots" / name) as image:
            assert image.format == "PNG" and image.width > 300


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_a_study_run_again_classifies_only_what_is_missing(slides, studied, tiny_model, tmp_path):
    done, out = studied[0], _copy(studied, tmp_path)
    shutil.rmtree(out / "slides" / "slide3")
    (out / "slides.csv").unlink()
    result = _study(slides / "manifest.csv", tiny_model, out)
    assert (result.classified, result.already_done) == (1, 7)
    assert _rows(out / "slides.csv") == _rows(done / "slides.csv")


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_a_manifest_column_named_like_a_measure_is_refused_not_overwritten(
    slides, studied, tiny_model, tmp_path
):
    out = _copy(studied, tmp_path)
    lines = (slides / "manifest.csv").read_text().splitlines()
    lines = [f"{lines[0]},Callus area (mm2)"] + [f"{line},0.5" for line in lines[1:]]
    clash = _write(slides / "clash.csv", lines)
    with pytest.raises(BadInputError, match="'Callus area \\(mm2\\)' is also a measure's column"):
        _study(clash, tiny_model, out)
    assert _rows(out / "slides.csv") == _rows(studied[0] / "slides.csv")  # nothing rewritten


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_a_study_stopped_midway_resumes_to_the_same_table(
    slides, studied, tiny_model, tmp_path, monkeypatch
):
    from ossiclass.classify import ChunkWriter

    done, out = studied[0], tmp_path / "out"
    manifest = _write(slides / "two.csv", (slides / "manifest.csv").read_text().splitlines()[:3])
    write, written = ChunkWriter.write_on_batch_end, []
    first_slide = _chunks(done, "slide0")

    def write_then_fail(self, *args, **kwargs):
        write(self, *args, **kwargs)
        written.append(1)
        if len(written) == first_slide + 2:  # the second slide two chunks in
            raise RuntimeError("power cut")

    monkeypatch.setattr(ChunkWriter, "write_on_batch_end", write_then_fail)
    with pytest.raises(RuntimeError, match="power cut"):
        _study(manifest, tiny_model, out)
    monkeypatch.undo()
    assert (out / "slides/slide0/summary.json").exists() and not (out / "slides.csv").exists()
    assert len(list((out / "slides/slide1/parts").glob("chunk-*.json"))) == 2
    result = _study(manifest, tiny_model, out)
    assert (result.classified, result.already_done) == (1, 1)
    assert _rows(out / "slides.csv") == _rows(done / "slides.csv")[:2]
    resumed = json.loads((out / "slides/slide1/run.json").read_text())
    tiles = json.loads((out / "slides/slide1/summary.json").read_text())["tiles"]["classified"]
    assert resumed["classified_in_this_run"] == tiles - 2 * BATCH


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_the_command_prints_the_outputs_and_a_line_per_group(
    slides, studied, tiny_model, tmp_path, capsys
):
    out = _copy(studied, tmp_path)
    command = _command(slides / "manifest.csv", tiny_model, out)
    assert main(command) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("8 slides: 0 classified, 8 already done, 0 failed")
    assert "slides.csv, groups.csv" in printed[0] and "plots in plots/" in printed[0]
    assert [line.split(":")[0] for line in printed[1:]] == [
        "  group control, day 7", "  group control, day 14",
        "  group knockout, day 7", "  group knockout, day 14",
    ]  # fmt: skip
    assert main([*command, "--by", "group"]) == 0
    groups = _rows(out / "groups.csv")
    assert list(groups[0])[:2] == ["group", "measure"] and {r["n"] for r in groups} == {"4"}


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_a_study_begun_before_a_setting_came_goes_on_with_its_default(
    slides, studied, tiny_model, tmp_path, capsys
):
    from ossiclass.study import STUDY_FILE

    out = _copy(studied, tmp_path)
    record = json.loads((out / STUDY_FILE).read_text())
    del record["tiling"]["refine"]  # as a study begun before --refine wrote it
    (out / STUDY_FILE).write_text(json.dumps(record))
    command = _command(slides / "manifest.csv", tiny_model, out)
    assert main(command) == 0
    assert main([*command, "--refine"]) == 2  # refined measures would mix with unrefined
    assert "another model or other settings" in capsys.readouterr().err


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_a_study_of_another_model_is_refused(slides, studied, eight_class_model, capsys):
    out, _ = studied
    assert main(_command(slides / "manifest.csv", eight_class_model, out)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "another model or other settings" in error


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_agreement_with_manual_measures(slides, studied, tiny_model, tmp_path, capsys):
    out = _copy(studied, tmp_path)
    rows = _rows(out / "slides.csv")
    lines = ["slide,Mesenchyme fraction,Woven bone area,comment"]
    for i, row in enumerate(rows):  # one measure as ours, one 0.01 mm2 above; a blank
        area = "" if i == 7 else f"{float(row['Woven bone area (mm2)']) + 0.01:.6f}"
        lines.append(f"slide{i},{row['Mesenchyme fraction']},{area},seen")
    manual = _write(tmp_path / "manual.csv", lines)
    assert main(_command(slides / "manifest.csv", tiny_model, out, "--manual", str(manual))) == 0
    assert "match no measure, ignored: comment" in capsys.readouterr().err
    agreement = json.loads((out / "agreement.json").read_text())
    same, offset = agreement["measures"]
    assert (same["measure"], same["n"]) == ("Mesenchyme fraction", 8)
    assert same["icc_2_1"] == pytest.approx(1.0, abs=1e-4)  # slides.csv: 6 significant digits
    assert same["bias"] == pytest.approx(0.0, abs=1e-6)
    assert offset["measure"] == "Woven bone area (mm2)" and offset["n"] == 7
    assert offset["bias"] == pytest.approx(-0.01, abs=1e-6)
    assert offset["lower"] == pytest.approx(-0.01, abs=1e-5) == offset["upper"]
    ours = np.array([float(r["Woven bone area (mm2)"]) for r in rows[:7]])
    expected = icc_2_1(np.stack([ours, ours + 0.01], axis=1))
    assert offset["icc_2_1"] == pytest.approx(expected, abs=1e-4) and expected < 1
    for report in (same, offset):
        with Image.open(out / report["plot"]) as image:
            assert image.format == "PNG"


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e308", "1e999"])
def test_a_manual_measure_that_no_agreement_can_sum_is_one_line(text):
    manual = Manual(Path("manual.csv"), ("B.Ar",), {"slide0": (2, {"B.Ar": text})})
    with pytest.raises(BadInputError, match=f"manual.csv line 2: B.Ar: '{text}' is not a number"):
        manual.values("B.Ar")
    ok = Manual(Path("manual.csv"), ("B.Ar",), {"slide0": (2, {"B.Ar": "-2.5e3"})})
    assert ok.values("B.Ar") == {"slide0": -2500.0}


@pytest.mark.parametrize(
    "lines, message",
    [
        (["slide,group", "scans/nowhere.tif,a"], "slide scans/nowhere.tif not found"),
        (["slide,group", "scans/slide0.tif,a", "scans/../scans/slide0.tif,b"], "the same slide"),
        (["slide,value", "slide0,1.0", "elsewhere,2.0"], "slide 'elsewhere' is not in the study"),
        (["slide,value", "slide0,1.0", "scans/slide0.tif,2.0"], "a second time"),
        (["slide,Mesenchyme fraction", "slide0,lots"], "'lots' is not a number"),
        (["slide,Mesenchyme fraction", "slide0,nan"], "'nan' is not a number under 1e+15"),
        (["slide,note", "slide0,seen"], "no measure columns"),
    ],
)
@pytest.mark.slow  # classifies a study's slides: seconds each
def test_bad_manual_measures_are_one_line(
    lines, message, slides, studied, tiny_model, tmp_path, capsys
):
    out = _copy(studied, tmp_path)
    if lines[0] == "slide,group":  # a manifest problem
        manifest, manual = _write(slides / "bad.csv", lines), None
    else:
        manifest, manual = slides / "manifest.csv", _write(tmp_path / "manual.csv", lines)
    extra = ["--manual", str(manual)] if manual else []
    assert main(_command(manifest, tiny_model, out, *extra)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("", "empty manifest"),
        ("slide,group\n", "empty manifest"),
        ("path,group\na.tif,b\n", "no 'slide' column (columns: path, group)"),
        ("slide,group\n,b\n", "line 2: no slide"),
        ("slide,group,group\na.tif,b,c\n", "column 'group' twice"),
        ("slide,group\na.tif,b,c\n", "line 2: more values than columns"),
        ("slide\na/x.tif\nb/x.tif\n", "would share the output folder slides/x"),
        ("slide,roi\na.tif,a/roi.geojson\n", "line 2: region a/roi.geojson not found"),
        ("slide,roi\na.tif,bad.geojson\n", "bad.geojson: not JSON"),
    ],
)
def test_manifest_errors_are_one_line(content, message, tiny_model, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.tif").write_bytes(b"")
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "bad.geojson").write_text("{")
    manifest = tmp_path / "manifest.csv"
    if content is not None:
        manifest.write_text(content)
    command = ["study", str(manifest), "--model", str(tiny_model), "--out", str(tmp_path / "o")]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "where", ["a file", "under a file", "a classify run", "nodes", "a broken record"]
)
def test_an_output_or_nodes_a_study_cannot_use_are_one_line(where, tiny_model, tmp_path, capsys,
                                                            monkeypatch):  # fmt: skip
    (tmp_path / "a.tif").write_bytes(b"")
    manifest = _write(tmp_path / "manifest.csv", ["slide", "a.tif"])
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    out, extra, message = {
        "a file": ("afile", [], "afile: is a file, not a folder"),
        "under a file": ("afile/o", [], "afile: is a file, not a folder"),
        "a classify run": ("run", [], "run: holds a classify run, not a study"),
        "nodes": ("o", ["--num-nodes", "2"], "--num-nodes 2: start the command on each node"),
        "a broken record": ("broken", [], "study.json: not a study's record"),
    }[where]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "study.json").write_text('{"model')
    for variable in ("NODE_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID",
                     "LSB_JOBID"):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)
    command = _command(manifest, tiny_model, tmp_path / out, *extra)
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert (tmp_path / "afile").read_text() == "mine" and not (tmp_path / "o").exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["summary.json"]


@pytest.mark.slow  # classifies a study's slide: seconds
def test_a_slide_of_a_study_is_measured_in_its_region(slides, tiny_model, tmp_path):
    region = feature(shapely.box(0, 0, 512, 512), "Callus", (0, 0, 0), "annotation")
    (slides / "roi.geojson").write_text(json.dumps(feature_collection([region])))
    manifest = _write(slides / "roi.csv", ["slide,roi", "scans/slide0.tif,roi.geojson"])
    assert _study(manifest, tiny_model, tmp_path / "out").failed == {}
    summary = json.loads((tmp_path / "out/slides/slide0/summary.json").read_text())
    assert summary["measured_in"]["file"] == str(slides / "roi.geojson")
    assert summary["measured_in"]["area_mm2"] == pytest.approx(512 * 512 * 0.25e-6)


def test_a_manifest_names_the_region_each_slide_is_measured_in(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "b.tif").write_bytes(b"")
    (tmp_path / "a.geojson").write_text("{}")
    manifest = _write(tmp_path / "m.csv", ["slide,roi,day", "a.tif,a.geojson,7", "b.tif,,7"])
    study = read_manifest(manifest)
    assert study.rois == [tmp_path / "a.geojson", None]
    assert group_columns(study) == ("day",)


def test_grouping_columns(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"")
    (tmp_path / "y.tif").write_bytes(b"")
    manifest = _write(
        tmp_path / "m.csv",
        ["slide,animal,group,batch,note", "x.tif,a,g,1,first", "y.tif,a,g,2,second"],
    )
    study = read_manifest(manifest)
    assert group_columns(study) == ("group",)  # the animal is no group; batch, note repeat none
    assert group_columns(study, ["batch", "group"]) == ("batch", "group")
    with pytest.raises(BadInputError, match="--by day: not a column"):
        group_columns(study, ["day"])


@pytest.mark.slow  # classifies a study's slides: seconds each
def test_a_slide_that_cannot_be_read_is_reported_and_the_others_go_on(
    slides, studied, tiny_model, tmp_path, capsys
):
    done = studied[0] / "slides" / "slide0"
    shutil.copytree(done, tmp_path / "o" / "slides" / "slide0")
    # A finished slide whose run was made of another input is refused, not taken as done.
    shutil.copy(slides / "scans" / "slide0.tif", tmp_path / "moved.tif")
    shutil.copytree(done, tmp_path / "o" / "slides" / "moved")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    manifest = _write(
        tmp_path / "m.csv",
        ["slide,group", f"{slides / 'scans' / 'slide0.tif'},a", "moved.tif,a", "broken.tif,a"],
    )
    assert main(_command(manifest, tiny_model, tmp_path / "o")) == 2
    captured = capsys.readouterr()
    assert "slide broken:" in captured.err and "slide moved:" in captured.err
    assert "another input" in captured.err
    assert "0 classified, 1 already done, 2 failed" in captured.out
    rows = _rows(tmp_path / "o" / "slides.csv")
    assert [row["Mesenchyme fraction"] != "" for row in rows] == [True, False, False]
    groups = _rows(tmp_path / "o" / "groups.csv")
    assert {r["n"] for r in groups} == {"1"} and {r["sd"] for r in groups} == {""}


def test_measures_come_from_histomorphometry_where_classify_writes_them():
    height = {"name": "Hypertrophic zone height", "symbol": None, "value": 212.5, "unit": "µm"}
    share = {"name": "Bone area fraction", "symbol": "B.Ar/T.Ar", "value": 0.4, "unit": "1"}
    summary = {"histomorphometry": [height, share], "classes": {"callus": {"fraction": 1.0}}}
    assert slide_measures(summary) == [height, share]
    assert [measure_column(m) for m in slide_measures(summary)] == [
        "Hypertrophic zone height (µm)", "Bone area fraction",
    ]  # fmt: skip
    old = {"classes": {c: {"tiles": 1, "fraction": 0.25} for c in ("mesenchyme", "callus")}}
    names = [m["name"] for m in slide_measures(old)]  # no class_list: the six; no areas
    assert names[0] == "Mesenchyme fraction" and len(names) == 6


def test_icc_2_1_of_known_tables():
    assert icc_2_1(SHROUT_FLEISS) == pytest.approx(0.29, abs=0.005)
    x = np.array([1.0, 2.0, 4.0, 7.0, 11.0])
    assert icc_2_1(np.stack([x, x], axis=1)) == pytest.approx(1.0)
    # A constant offset c between two raters: MSE = 0, MSC = n c^2 / 2, MSR = 2 var(x), so
    # ICC(2,1) = var(x) / (var(x) + c^2 / 2).
    offset = 3.0
    expected = x.var(ddof=1) / (x.var(ddof=1) + offset**2 / 2)
    assert icc_2_1(np.stack([x, x + offset], axis=1)) == pytest.approx(expected)
    assert np.isnan(icc_2_1(np.ones((4, 2))))
    with pytest.raises(ValueError, match="shape"):
        icc_2_1(np.ones((1, 2)))


def test_bland_altman_and_group_statistics():
    ours, theirs = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 2.5, 2.0, 3.0])
    figures = bland_altman(ours, theirs)  # differences 0.5, -0.5, 1, 1
    sd = np.std([0.5, -0.5, 1, 1], ddof=1)
    assert (figures.n, figures.bias, figures.sd) == (4, 0.5, pytest.approx(sd))
    assert figures.lower == pytest.approx(0.5 - 1.96 * sd)
    assert figures.upper == pytest.approx(0.5 + 1.96 * sd)
    assert describe([2.0, 4.0]) == (2, 3.0, pytest.approx(np.sqrt(2)))
    assert describe([5.0]) == (1, 5.0, None) and describe([]) == (0, None, None)


@pytest.mark.slow
def test_a_study_killed_over_two_processes_resumes_to_the_table_of_one(
    slides, tiny_model, tmp_path
):
    manifest = _write(slides / "four.csv", (slides / "manifest.csv").read_text().splitlines()[:5])
    one = tmp_path / "one"
    _study(manifest, tiny_model, one)
    chunks = [_chunks(one, f"slide{i}") for i in range(4)]
    out = tmp_path / "two"
    command = _command(manifest, tiny_model, out, "--devices", "2")
    # process 0 takes slides 0 and 2, process 1 slides 1 and 3: killed in the second slide of one
    assert run_killed(tmp_path, command, min(chunks[0], chunks[1]) + 1) == -9
    begun = [p.parent.name for p in (out / "slides").glob("*/parts")]
    assert begun and not (out / "slides.csv").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "ossiclass", *command],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "MEMBER: 2/2" in resumed.stderr + resumed.stdout
    assert _rows(out / "slides.csv") == _rows(one / "slides.csv")
    assert _rows(out / "groups.csv") == _rows(one / "groups.csv")
    for stem in begun:
        run = json.loads((out / "slides" / stem / "run.json").read_text())
        assert run["classified_in_this_run"] < BATCH * chunks[int(stem[-1])]


def test_a_process_of_a_study_runs_on_one_device_it_names():
    with pytest.raises(BadInputError, match="device_index names one device"):
        Running(devices=2, device_index=1).validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_study_on_a_gpu_puts_its_process_on_its_own_device(slides, tiny_model, tmp_path):
    manifest = _write(slides / "one.csv", (slides / "manifest.csv").read_text().splitlines()[:2])
    running = Running(batch_size=BATCH, workers=0, accelerator="gpu")
    result = run_study(manifest, tiny_model, tmp_path / "out", SPARSE, running, progress=False)
    assert (result.classified, result.failed) == (1, {})
    summary = json.loads((tmp_path / "out/slides/slide0/summary.json").read_text())
    assert summary["running"]["device_index"] == 0 and summary["running"]["devices"] == 1
