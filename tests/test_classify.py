import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
from conftest import EIGHT_CLASSES, run_killed
from PIL import Image

from ossiclass import qupath
from ossiclass.bundle import load_bundle, save_bundle
from ossiclass.classes import CLASSES, TISSUE_CLASSES, class_list_from_dict, class_list_to_dict
from ossiclass.classify import Running, Tiling, classify
from ossiclass.classmap import load_classmap, region_mask
from ossiclass.cli import main
from ossiclass.errors import BadInputError
from ossiclass.evaluate import slide_agreement
from ossiclass.predict import Predictor
from ossiclass.preprocess.stain import NORMALIZERS
from ossiclass.preprocess.tiling import TileBox, read_tile
from ossiclass.preprocess.tissue import white_balance_gains
from ossiclass.scale import Scale
from ossiclass.slides import open_slide
from ossiclass.sources import FolderSource, SlideSource
from ossiclass.synth.slides import SlideSettings, slide_domain
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import make_tile

REPO = Path(__file__).parents[1]
FAST = Running(batch_size=8, workers=0)


def _with_normalizer(settings, normalizer: dict | None):
    """The model's settings with another stain normaliser (a fitted one's to_dict(), or None)."""
    return replace(settings, preprocessing=replace(settings.preprocessing, normalizer=normalizer))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def classified(tiny_model, small_slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("classified") / "out"
    summary = classify(small_slide, tiny_model, out, running=FAST, progress=False)
    return out, summary


def test_the_progress_bar_counts_the_tiles_there_are(tiny_model, small_slide, tmp_path, capsys):
    """Its total is the tiles to do, the last chunk's short batch included."""
    summary = classify(small_slide, tiny_model, tmp_path / "out", running=FAST)
    tiles = summary["tiles"]["classified"]
    assert tiles % FAST.batch_size  # the last chunk is short
    assert f" {tiles}/{tiles} " in capsys.readouterr().err.replace("\r", "\n")


def test_a_slide_gets_every_output(classified):
    out, summary = classified
    assert sorted(p.name for p in out.iterdir()) == [
        "classmap.tif", "map.png", "measures.geojson", "regions.geojson", "run.json",
        "summary.json", "tiles.csv", "tiles.geojson",
    ]  # fmt: skip
    rows = _rows(out / "tiles.csv")
    columns = ["minx", "miny", "width", "height", "label", "confidence"]
    assert list(rows[0])[:6] == columns and list(rows[0])[6:] == [f"prob_{c}" for c in CLASSES]
    assert len(rows) == summary["tiles"]["classified"] > 10
    assert all(int(r["width"]) == 128 for r in rows)  # 32 px at 2 µm/px over 0.5 µm/px pixels
    for row in rows:
        probabilities = [float(row[f"prob_{c}"]) for c in CLASSES]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
        assert row["label"] == CLASSES[int(np.argmax(probabilities))]
    shares = [c["fraction"] for c in summary["classes"].values()]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    tile_mm2 = (32 * 2.0 / 1000) ** 2
    for row in summary["classes"].values():
        assert row["area_mm2"] == pytest.approx(row["tiles"] * tile_mm2, abs=1e-6)
    assert json.loads((out / "run.json").read_text())["model_sha256"]
    with Image.open(out / "map.png") as image:
        assert image.width > image.height  # the thumbnail and the legend beside it


def test_a_slide_is_white_balanced_against_its_own_glass(
    classified, tiny_model, small_slide, tmp_path
):
    out, summary = classified
    glass = slide_domain(SlideSettings("growth_plate", 1024, 1024, 0.5, 7)).background
    np.testing.assert_allclose(summary["glass_rgb"], glass, atol=2.0)
    assert summary["white_balance"].startswith("glass (RGB")
    as_scanned = classify(
        small_slide, tiny_model, tmp_path / "out", Tiling(white_balance=False), FAST, progress=False
    )
    assert as_scanned["white_balance"].startswith("off")
    balanced, unbalanced = _rows(out / "tiles.csv"), _rows(tmp_path / "out" / "tiles.csv")
    assert [r["minx"] for r in balanced] == [r["minx"] for r in unbalanced]
    assert [r["prob_mesenchyme"] for r in balanced] != [r["prob_mesenchyme"] for r in unbalanced]


def test_without_a_normaliser_the_balance_is_folded_into_the_network(
    tiny_model, small_slide, tmp_path
):
    network, settings = load_bundle(tiny_model)
    plain = save_bundle(tmp_path / "plain.pt", network, _with_normalizer(settings, None))
    fp32 = replace(FAST, precision="fp32")
    summary = classify(small_slide, plain, tmp_path / "out", running=fp32, progress=False)
    rows = _rows(tmp_path / "out" / "tiles.csv")[:8]
    predictor = Predictor(plain, precision="fp32")
    keys = ("minx", "miny", "width", "height")
    with open_slide(small_slide) as slide:
        tiles = [read_tile(slide, TileBox(*(int(r[k]) for k in keys), 1.0), 32) for r in rows]
    tiles = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2)
    gains = torch.from_numpy(white_balance_gains(np.asarray(summary["glass_rgb"])))
    with torch.inference_mode():
        once, none, twice = (
            predictor.network.probabilities(tiles, g) for g in (gains, None, gains**2)
        )
    found = [[float(r[f"prob_{name}"]) for name in CLASSES] for r in rows]
    np.testing.assert_allclose(found, once.numpy(), atol=1e-3)
    assert not np.allclose(found, none.numpy(), atol=0.01)
    assert not np.allclose(found, twice.numpy(), atol=0.01)


@pytest.mark.parametrize("method", ["reinhard", "histogram", "stain-histogram"])
def test_statistics_normalisers_match_each_tile_by_itself_as_in_training(
    tiny_model, small_slide, tmp_path, method
):
    network, settings = load_bundle(tiny_model)
    reference = make_tile("hyaline_cartilage", 0, 0, sample_domains(0, 1), 64, settings.model_mpp)[
        0
    ]
    normalizer = NORMALIZERS[method].fit(reference, mpp=settings.model_mpp)
    bundle = save_bundle(
        tmp_path / "lab.pt", network, _with_normalizer(settings, normalizer.to_dict())
    )
    summary = classify(small_slide, bundle, tmp_path / "out", running=FAST, progress=False)
    assert summary["stains"] == "estimated per tile"
    rows = _rows(tmp_path / "out" / "tiles.csv")
    assert summary["tiles"] == {"classified": len(rows), "skipped": 0} and rows


def test_a_lab_reference_saved_without_its_scale_takes_the_model_s(tiny_model, tmp_path):
    network, settings = load_bundle(tiny_model)
    reference = make_tile("hyaline_cartilage", 0, 0, sample_domains(0, 1), 64, settings.model_mpp)[
        0
    ]
    saved = NORMALIZERS["histogram"].fit(reference, mpp=0.5).to_dict()
    del saved["mpp"]  # as bundles saved before the CIELAB normalisers recorded it
    bundle = save_bundle(tmp_path / "old.pt", network, _with_normalizer(settings, saved))
    assert Predictor(bundle).preprocessing.stain_normalizer.mpp == settings.model_mpp == 2.0


def test_with_the_default_stride_the_class_map_is_the_tile_grid(classified):
    from ossiclass.classmap import NO_TISSUE, read_classmap

    out, summary = classified
    labels, mpp, classes = read_classmap(out / "classmap.tif")
    assert labels.shape == (1024 // 128, 1024 // 128) and mpp == 128 * 0.5
    assert classes == TISSUE_CLASSES and summary["classmap"]["cell_px"] == 128
    expected = np.full(labels.shape, NO_TISSUE, dtype=np.uint8)
    for row in _rows(out / "tiles.csv"):
        expected[int(row["miny"]) // 128, int(row["minx"]) // 128] = CLASSES.index(row["label"])
    assert np.array_equal(labels, expected)


def test_tiles_that_lie_apart_never_count_more_area_than_the_slide(tiny_model, small_slide,
                                                                   tmp_path):  # fmt: skip
    # The tiny model's tiles are 64 µm (128 level-0 px); a step of 400 µm (800 px) puts at most
    # four of them on the 1024 px slide, each standing for the step's square from its corner,
    # clipped to the slide: 800 or 224 px a side.
    tiling = Tiling(stride_px=200, min_tissue=0.0)
    summary = classify(small_slide, tiny_model, tmp_path / "out", tiling=tiling, running=FAST,
                       progress=False)  # fmt: skip
    rows = _rows(tmp_path / "out" / "tiles.csv")
    assert {(int(r["minx"]), int(r["miny"])) for r in rows} <= {(0, 0), (0, 800), (800, 0),
                                                                (800, 800)}  # fmt: skip
    side = {0: 800, 800: 224}
    expected = sum(side[int(r["minx"])] * side[int(r["miny"])] for r in rows) * 0.25e-6
    areas = [c["area_mm2"] for c in summary["classes"].values()]
    assert sum(areas) == pytest.approx(expected, abs=1e-5) and rows
    assert sum(areas) <= 1024 * 1024 * 0.25e-6 + 1e-6


def test_geojson_is_what_qupath_imports(classified):
    out, _ = classified
    collection = json.loads((out / "tiles.geojson").read_text())
    rows = _rows(out / "tiles.csv")
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == len(rows)
    tissues = {c.name: c for c in TISSUE_CLASSES}
    for feature, row in zip(collection["features"], rows, strict=True):
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        (ring,) = feature["geometry"]["coordinates"]
        assert len(ring) == 5 and ring[0] == ring[-1]  # a closed linear ring
        x, y, w, h = (int(row[k]) for k in ("minx", "miny", "width", "height"))
        assert ring[0] == [x, y] and ring[2] == [x + w, y + h]
        properties = feature["properties"]
        assert properties["objectType"] == "tile" and properties["ossiclass_class"] == row["label"]
        assert properties["classification"] == {
            "name": tissues[row["label"]].display_name,  # what QuPath shows: "Woven bone"
            "color": list(tissues[row["label"]].colour),
        }
        measurements = properties["measurements"]
        assert list(measurements) == ["confidence", *(f"prob_{c}" for c in CLASSES)]
        assert all(isinstance(value, float) for value in measurements.values())


def test_the_summary_holds_the_slides_measures(classified):
    out, summary = classified
    measures = {m["name"]: m for m in summary["histomorphometry"]}
    assert all(set(m) == {"name", "symbol", "value", "unit"} for m in measures.values())
    cells = summary["classmap"]["mpp"] ** 2 / 1e6  # mm² of one map cell
    rows = _rows(out / "tiles.csv")
    assert measures["Tissue area"]["symbol"] == "T.Ar"
    assert measures["Tissue area"]["value"] == pytest.approx(len(rows) * cells)
    fractions = [m["value"] for name, m in measures.items() if name.endswith(" fraction")]
    tissues = [m for m in measures.values() if m["unit"] == "1" and m["name"][:-9] in
               {c.display_name for c in TISSUE_CLASSES}]  # fmt: skip
    assert sum(m["value"] for m in tissues) == pytest.approx(1.0)
    assert all(0 <= value <= 1 for value in fractions)


def test_merged_regions_are_qupath_annotations_of_each_class(classified):
    import shapely
    from conftest import check_qupath_geojson

    out, summary = classified
    rows = _rows(out / "tiles.csv")
    collection = json.loads((out / "regions.geojson").read_text())
    check_qupath_geojson(collection)
    check_qupath_geojson(json.loads((out / "tiles.geojson").read_text()))
    features = collection["features"]
    tissues = {c.display_name: c for c in TISSUE_CLASSES}
    counts = {name: sum(row["label"] == name for row in rows) for name in CLASSES}
    assert len(features) == sum(count > 0 for count in counts.values())
    for feature in features:
        properties = feature["properties"]
        tissue = tissues[properties["classification"]["name"]]
        assert properties["objectType"] == "annotation"
        assert properties["classification"]["color"] == list(tissue.colour)
        region = shapely.geometry.shape(feature["geometry"])
        assert region.is_valid
        mine = [row for row in rows if row["label"] == tissue.name]
        assert properties["measurements"]["tiles"] == counts[tissue.name] == len(mine)
        area_px = sum(int(row["width"]) * int(row["height"]) for row in mine)
        assert region.area == pytest.approx(area_px)  # tiles of the grid do not overlap
        mm2 = area_px * summary["input_mpp"] ** 2 / 1e6
        assert properties["measurements"]["area_mm2"] == pytest.approx(mm2)


def test_a_model_of_eight_classes_names_and_colours_every_output(
    eight_class_model, small_slide, tmp_path, capsys, monkeypatch
):
    import ossiclass.report

    legends, drawn = [], ossiclass.report.tissue_map

    def tissue_map(thumbnail, downsample, boxes, labels, classes, **kwargs):
        legends.append((labels, classes))
        return drawn(thumbnail, downsample, boxes, labels, classes, **kwargs)

    monkeypatch.setattr(ossiclass.report, "tissue_map", tissue_map)
    out = tmp_path / "out"
    argv = _classify_command(small_slide, eight_class_model, out, "--report")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "marrow" in printed and "fat" in printed and "report.html" in printed
    classes = class_list_from_dict(list(EIGHT_CLASSES))
    rows = _rows(out / "tiles.csv")
    assert list(rows[0])[6:] == [f"prob_{c}" for c in EIGHT_CLASSES]
    assert "fat" in {row["label"] for row in rows}  # this untrained head's answers (seeded)
    features = json.loads((out / "tiles.geojson").read_text())["features"]
    by_name = {c.name: c for c in classes}
    for feature, row in zip(features, rows, strict=True):
        tissue = by_name[feature["properties"]["ossiclass_class"]]
        assert tissue.name == row["label"]
        assert feature["properties"]["classification"] == {
            "name": tissue.display_name, "color": list(tissue.colour)
        }  # fmt: skip
        assert len(feature["properties"]["measurements"]) == 1 + 8
    assert {"Fat"} <= {f["properties"]["classification"]["name"] for f in features}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_list"] == class_list_to_dict(classes)
    assert list(summary["classes"]) == list(EIGHT_CLASSES)
    ((labels, legend),) = legends
    assert legend == classes and len(labels) == len(rows)
    page = (out / "report.html").read_text()
    assert "Marrow" in page and "Fat" in page and by_name["fat"].hex_colour in page


def _classify_command(slide, model, out, *extra):
    return [
        "classify", str(slide), "--model", str(model), "--out", str(out),
        "--batch-size", "8", "--workers", "0", "--quiet", *extra,
    ]  # fmt: skip


def test_a_finished_run_resumes_only_as_it_was_made(classified, tiny_model, small_slide,
                                                   tmp_path, capsys):  # fmt: skip
    out, summary = classified
    kept = (out / "summary.json").read_text()
    assert classify(small_slide, tiny_model, out, running=FAST, resume=True) == summary
    network, settings = load_bundle(tiny_model)
    other = save_bundle(tmp_path / "other.pt", network, replace(settings, temperature=2.0))
    for model, extra in ((other, []), (tiny_model, ["--refine"]), (tiny_model, ["--stride", "16"])):
        assert main(_classify_command(small_slide, model, out, "--resume", *extra)) == 2, extra
        assert "holds a finished run of another input, model or settings" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == kept


@pytest.mark.slow  # a process of its own, killed midway: ~10 s
def test_a_killed_run_resumes_to_the_same_tiles(classified, tiny_model, small_slide, tmp_path):
    uninterrupted, summary = classified
    chunks = -(-summary["tiles"]["classified"] // 8)
    out = tmp_path / "out"
    assert run_killed(tmp_path, _classify_command(small_slide, tiny_model, out), chunks // 2) == -9
    assert len(list((out / "parts").glob("chunk-*.json"))) == chunks // 2
    assert not (out / "tiles.csv").exists()
    assert main(_classify_command(small_slide, tiny_model, out)) == 2  # refuses to start over
    # Refining redraws the map, not the tiles: the run resumes with it too.
    assert main(_classify_command(small_slide, tiny_model, out, "--resume", "--refine")) == 0
    assert json.loads((out / "summary.json").read_text())["classmap"]["refined"] is True
    assert _rows(out / "tiles.csv") == _rows(uninterrupted / "tiles.csv")
    assert json.loads((out / "run.json").read_text())["classified_in_this_run"] < len(
        _rows(out / "tiles.csv")
    )
    assert not (out / "parts").exists()


@pytest.mark.slow
def test_two_processes_split_the_chunks(classified, tiny_model, small_slide, tmp_path):
    uninterrupted, _ = classified
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ossiclass",
               *_classify_command(small_slide, tiny_model, out, "--devices", "2")]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MEMBER: 2/2" in result.stderr + result.stdout
    assert _rows(out / "tiles.csv") == _rows(uninterrupted / "tiles.csv")


def _region_file(path: Path, *boxes: tuple[int, int, int, int]) -> Path:
    """A QuPath export of unclassified rectangles (minx, miny, maxx, maxy), level-0 pixels."""
    drawn = [qupath.feature(shapely.box(*box), "", (0, 0, 0), "annotation") for box in boxes]
    for item in drawn:
        item["properties"].pop("classification")
    path.write_text(json.dumps(qupath.feature_collection(drawn)))
    return path


def test_a_slide_is_measured_in_the_region_given(classified, tiny_model, small_slide, tmp_path):
    whole, _ = classified
    roi = _region_file(tmp_path / "roi.geojson", (0, 0, 512, 1024))  # the left half
    out = tmp_path / "out"
    assert (
        main([*_classify_command(small_slide, tiny_model, out, "--roi", str(roi)), "--report"]) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["measured_in"] == {"file": str(roi.resolve()), "area_mm2": 512 * 1024 * 0.25e-6}
    classmap = load_classmap(out / "classmap.tif")
    inside = region_mask(classmap, shapely.box(0, 0, 512, 1024))
    tissue_mm2 = ((classmap.labels != 255) & inside).sum() * (classmap.mpp / 1000) ** 2
    measured = {m["symbol"]: m["value"] for m in summary["histomorphometry"] if m["symbol"]}
    everywhere = json.loads((whole / "summary.json").read_text())["histomorphometry"]
    assert measured["T.Ar"] == pytest.approx(tissue_mm2)
    assert 0 < measured["T.Ar"] < next(m["value"] for m in everywhere if m["symbol"] == "T.Ar")
    places = json.loads((out / "measures.geojson").read_text())
    assert places["features"][0]["properties"]["classification"]["name"] == "Region measured"
    assert (out / "measures.png").exists()
    page = (out / "report.html").read_text()
    assert "id='measures'" in page and "id='places'" in page and "roi.geojson" in page


def test_a_region_is_refused_before_anything_is_classified(
    tiny_model, small_slide, tile_set, tmp_path, capsys
):
    roi = _region_file(tmp_path / "roi.geojson", (0, 0, 100, 100))
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    cases = [
        ([small_slide], bad, "not JSON"),
        ([small_slide, small_slide], roi, "--roi outlines a region of one slide"),
        ([tile_set(1, size_px=64)], roi, "a region to measure in is for slides"),
    ]
    for inputs, region, message in cases:
        out = tmp_path / "out"
        command = ["classify", *map(str, inputs), "--model", str(tiny_model), "--out", str(out),
                   "--roi", str(region), "--quiet"]  # fmt: skip
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
        assert not (out / "parts").exists()


def test_a_tile_folder_skips_bad_tiles_and_classifies_the_rest(tiny_model, tile_set, tmp_path):
    root = tile_set(2, size_px=64)
    (root / "callus" / "broken.png").write_bytes(b"\x89PNG broken")
    (root / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    summary = classify(root, tiny_model, out, running=FAST, progress=False)
    rows = _rows(out / "tiles.csv")
    assert len(rows) == 12 and summary["tiles"] == {"classified": 12, "skipped": 1}
    assert rows[0]["path"] == "callus/callus_000000.png"
    assert "broken.png" in (out / "skipped.txt").read_text()
    assert not (out / "tiles.geojson").exists()  # tiles have no place on a slide


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing model", "no such model file"),
        ("not a model", "not an ossiclass model bundle"),
        ("other version", "bundle version 99 was made by ossiclass 9.0"),
        ("empty folder", "no images"),
        ("unwritable out", "cannot write to"),
        ("missing input", "no such file or folder"),
        ("unknown accelerator", "accelerator 'banana' with 1 devices: You selected an invalid"),
    ],
)
def test_user_errors_are_one_line(problem, message, tiny_model, small_slide, tmp_path, capsys):
    model, source, out = tiny_model, small_slide, tmp_path / "out"
    if problem == "missing model":
        model = tmp_path / "nowhere.pt"
    elif problem == "not a model":
        model = tmp_path / "fake.ckpt"
        model.write_bytes(b"\x80\x04not really a pickle")
    elif problem == "other version":
        content = torch.load(tiny_model, weights_only=True)
        model = tmp_path / "future.pt"
        torch.save({**content, "version": 99, "ossiclass": "9.0"}, model)
    elif problem == "empty folder":
        source = tmp_path / "empty"
        source.mkdir()
    elif problem == "unwritable out":
        (tmp_path / "file").write_text("a file, not a folder")
        out = tmp_path / "file" / "out"
    else:
        source = tmp_path / "nothing.tif"
    extra = ["--accelerator", "banana"] if problem == "unknown accelerator" else []
    assert main(_classify_command(source, model, out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_where_there_is_none_is_one_line(
    tiny_model, small_slide, tmp_path, capsys
):
    command = _classify_command(small_slide, tiny_model, tmp_path / "out", "--accelerator", "gpu")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "accelerator 'gpu' with 1 devices: No supported gpu" in err


def test_slide_agreement_counts_pure_and_boundary_tiles(tmp_path):
    mask = np.full((4, 8), 255, np.uint8)
    mask[:, :4] = CLASSES.index("woven_bone")
    mask[:2, 4:6] = CLASSES.index("callus")  # the right tile: half callus, half glass
    Image.fromarray(mask).save(tmp_path / "labels.png")
    rows = ["minx,miny,width,height,label", "0,0,4,4,woven_bone", "4,0,4,4,woven_bone"]
    (tmp_path / "tiles.csv").write_text("\n".join(rows) + "\n")
    result = slide_agreement(tmp_path / "tiles.csv", tmp_path / "labels.png")
    assert result["pure_tiles"] == 1 and result["pure_agreement"] == 1.0
    assert result["tissue_tiles"] == 2 and result["all_agreement"] == 0.5


def test_a_label_the_mask_lacks_never_agrees(tmp_path):
    mask = np.full((4, 8), CLASSES.index("woven_bone"), np.uint8)
    Image.fromarray(mask).save(tmp_path / "labels.png")
    rows = ["minx,miny,width,height,label", "0,0,4,4,woven_bone", "4,0,4,4,marrow"]
    (tmp_path / "tiles.csv").write_text("\n".join(rows) + "\n")
    result = slide_agreement(tmp_path / "tiles.csv", tmp_path / "labels.png")
    assert result["pure_tiles"] == 2 and result["pure_agreement"] == 0.5
    assert result["all_agreement"] == 0.5 and np.sum(result["confusion"]) == 1


def test_bad_settings_are_refused(monkeypatch):
    with pytest.raises(BadInputError, match="min_tissue"):
        Tiling(min_tissue=2).validate()
    with pytest.raises(BadInputError, match="batch_size"):
        Running(batch_size=0).validate()
    from ossiclass.classify import _cores

    cores = _cores()
    for variable in ("NODE_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID",
                     "LSB_JOBID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(BadInputError, match=f"devices {cores + 1}: this machine gives {cores} co"):
        Running(devices=cores + 1).validate()
    Running(devices=cores + 1, accelerator="gpu").validate()  # GPUs are counted by Lightning
    monkeypatch.setenv("NODE_RANK", "0")  # started by a launcher: its node may have more cores
    Running(devices=cores + 1).validate()
    with pytest.raises(BadInputError, match=f"workers {4 * cores + 1}: more than 4 per core"):
        Running(workers=4 * cores + 1).validate()


def test_reading_workers_by_default(monkeypatch):
    slide = SlideSource(Path("slide.tif"), Scale(0.5, "file"), [], None)
    folder = FolderSource(Path("tiles"), [], [])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert Running().loader_workers(slide, "cpu", 100) == 0  # the network has the cores
    assert Running().loader_workers(folder, "cpu", 100) == 2
    assert Running().loader_workers(slide, "cuda", 100) == 8  # the GPU waits on reading
    assert Running(devices=4).loader_workers(slide, "cuda", 100) == 4  # 16 cores / 4
    assert Running().loader_workers(slide, "cuda", 3) == 3  # no more than the chunks
    assert Running(workers=5).loader_workers(slide, "cuda", 3) == 5  # as asked
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert Running(devices=4).loader_workers(slide, "cuda", 100) == 1


def test_several_inputs_go_on_past_a_bad_one(tiny_model, small_slide, tmp_path, capsys):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 truncated")
    inputs = [str(small_slide), str(broken)]
    out = tmp_path / "out"
    command = ["classify", *inputs, "--model", str(tiny_model), "--out", str(out), "--quiet"]
    assert main([*command, "--workers", "0"]) == 2
    assert (out / "growth_plate" / "tiles.csv").exists()
    assert "broken.tif" in capsys.readouterr().err
    summary = (out / "growth_plate" / "summary.json").read_text()
    assert main([*command, "--workers", "0", "--resume"]) == 2  # the finished one is kept
    assert (out / "growth_plate" / "summary.json").read_text() == summary


def test_inputs_whose_output_folders_would_be_one_are_refused_before_any_runs(
    tiny_model, small_slide, tmp_path, capsys
):
    # two slides named growth_plate go to growth_plate-0 and growth_plate-1: as the third does
    other, third = tmp_path / "a" / small_slide.name, tmp_path / "growth_plate-1.tif"
    other.parent.mkdir()
    other.symlink_to(small_slide)
    third.symlink_to(small_slide)
    out = tmp_path / "out"
    inputs = [str(small_slide), str(other), str(third)]
    assert main(["classify", *inputs, "--model", str(tiny_model), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"{other} and {third} would both be written to {out / 'growth_plate-1'}" in error
    assert not out.exists()


def test_refine_on_the_command_line_writes_a_refined_map(tiny_model, small_slide, tmp_path):
    out = tmp_path / "out"
    command = ["classify", str(small_slide), "--model", str(tiny_model), "--out", str(out)]
    assert main([*command, "--quiet", "--workers", "0", "--refine"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classmap"]["refined"] is True and summary["tiling"]["refine"] is True
    assert summary["classmap"]["cell_px"] == 16  # 8 µm at 0.5 µm/px


def test_several_inputs_are_not_split_over_devices(tiny_model, small_slide, tmp_path, capsys):
    inputs = [str(small_slide), str(small_slide)]
    command = ["classify", *inputs, "--model", str(tiny_model), "--out", str(tmp_path / "o")]
    assert main([*command, "--devices", "2"]) == 2
    assert "give one input per run" in capsys.readouterr().err


@pytest.mark.slow
def test_the_same_tissue_scanned_at_two_scales_gets_the_same_answers(tiny_model, tmp_path, capsys):
    """DESIGN's promise: tissue scanned at 0.25 and at 0.5 µm/px gets the same label and
    probabilities within 0.02, from `predict` and from `classify`, with the scale read from the
    TIFF tags and given with --mpp; from `classify` the tissue's mean probabilities within 0.02,
    each tile's within 0.1 and its label alike unless two classes nearly tie: a scan at 0.5
    µm/px differs from one at 0.25 by a grey level or two, which the test model, a random
    network with its head scaled 20x, magnifies. Without a stain normaliser, whose estimate
    that rounding also moves."""
    import tifffile

    network, settings = load_bundle(tiny_model)
    model = save_bundle(tmp_path / "plain.pt", network, _with_normalizer(settings, None))

    fine = np.full((3072, 3072, 3), 236, np.uint8)  # 768 µm of glass, 512 µm of tissue inside
    fine[512:2560, 512:2560] = make_tile("woven_bone", 0, 3, sample_domains(3, 1), 2048, 0.25)[0]
    coarse = np.asarray(Image.fromarray(fine).resize((1536, 1536), Image.Resampling.BOX))
    scans = {}
    for name, image, mpp in (("fine", fine, 0.25), ("coarse", coarse, 0.5)):
        tagged = tmp_path / f"{name}.tif"  # tiled, µm/px in its resolution tags
        tifffile.imwrite(
            tagged, image, photometric="rgb", tile=(128, 128), resolution=(1e4 / mpp, 1e4 / mpp),
            resolutionunit="CENTIMETER",
        )  # fmt: skip
        plain = tmp_path / f"{name}.png"  # no scale recorded: given with --mpp
        Image.fromarray(image).save(plain)
        scans[name] = (tagged, plain, mpp)

    def predicted(path, *extra) -> np.ndarray:
        command = ["predict", str(path), "--model", str(model), "--precision", "fp32", "--json"]
        capsys.readouterr()  # what classify printed before
        assert main([*command, *extra]) == 0
        answer = json.loads(capsys.readouterr().out)
        return answer["label"], np.array(list(answer["probabilities"].values()))

    def classified(path, out, *extra) -> dict:
        command = _classify_command(path, model, tmp_path / out, "--precision", "fp32", *extra)
        assert main(command) == 0
        rows = _rows(tmp_path / out / "tiles.csv")
        summary = json.loads((tmp_path / out / "summary.json").read_text())
        # Boxes in µm, so that the two scans' tiles pair up.
        mpp = summary["input_mpp"]
        return {
            (round(int(r["minx"]) * mpp), round(int(r["miny"]) * mpp)): (
                r["label"],
                np.array([float(r[f"prob_{c}"]) for c in CLASSES]),
            )
            for r in rows
        }

    for fine_args, coarse_args in (
        ([scans["fine"][0]], [scans["coarse"][0]]),
        ([scans["fine"][1], "--mpp", "0.25"], [scans["coarse"][1], "--mpp", "0.5"]),
    ):
        (label_f, probs_f), (label_c, probs_c) = predicted(*fine_args), predicted(*coarse_args)
        assert label_f == label_c and np.abs(probs_f - probs_c).max() < 0.02
        tiles_f = classified(fine_args[0], f"{fine_args[0].name}-out", *fine_args[1:])
        tiles_c = classified(coarse_args[0], f"{coarse_args[0].name}-out", *coarse_args[1:])
        assert tiles_f.keys() == tiles_c.keys() and len(tiles_f) >= 64
        probs_f = np.stack([tiles_f[box][1] for box in tiles_f])
        probs_c = np.stack([tiles_c[box][1] for box in tiles_f])
        assert np.abs(probs_f.mean(0) - probs_c.mean(0)).max() < 0.02  # the tissue's answer
        assert np.abs(probs_f - probs_c).max() < 0.1  # each tile's
        top_two = np.sort(probs_f, axis=1)[:, -2:]
        clear = top_two[:, 1] - top_two[:, 0] > 0.1  # no near-tie for rounding to tip over
        assert clear.mean() > 0.8
        labels = [(tiles_f[box][0], tiles_c[box][0]) for box in tiles_f]
        assert all(f == c for (f, c), sure in zip(labels, clear, strict=True) if sure)


def test_a_folder_s_images_each_have_their_own_scale(tiny_model, tmp_path):
    import tifffile

    folder = tmp_path / "tiles"
    folder.mkdir()
    tile = make_tile("woven_bone", 0, 2, sample_domains(2, 1), 256, 0.25)[0]  # 64 µm at 0.25
    tifffile.imwrite(
        folder / "tagged.tif", tile, photometric="rgb", resolution=(4e4, 4e4),
        resolutionunit="CENTIMETER",
    )  # fmt: skip
    Image.fromarray(tile[::2, ::2]).save(folder / "plain.png")  # 64 µm at the assumed 0.5
    summary = classify(folder, tiny_model, tmp_path / "out", running=FAST, progress=False)
    assert summary["input_mpp"] == [0.25, 0.5] and summary["mpp_from"] == "assumed 1, file 1"
    assert summary["notes"] == [
        "1 of 2 images: no µm per pixel recorded (or one outside 0.05-50); assumed 0.5 (a 20x scan)"
    ]
    assert summary["tiles"] == {"classified": 2, "skipped": 0}
