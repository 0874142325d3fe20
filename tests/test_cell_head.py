"""The cell head: painted truth per cell, its fit, the bundle that carries it, the network
that runs it, and the refined map's callus split by it."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import run_killed
from PIL import Image
from torch import nn

from ossiclass.bundle import load_bundle, save_bundle
from ossiclass.cell_head import (
    _painted_features,
    cell_targets,
    decode,
    encode,
    feature_cells,
    fit_cell_head,
    fit_cells,
    painted_cells,
    tile_set_settings,
)
from ossiclass.classes import CLASSES, TISSUE_CLASSES
from ossiclass.classmap import NO_TISSUE, ClassMap, load_classmap
from ossiclass.cli import main
from ossiclass.errors import BadModelError, OssiclassError
from ossiclass.network import CELL_HEAD, build_backbone, cell_head, transfer_weights
from ossiclass.predict import InferenceNetwork
from ossiclass.refine import split_callus
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import labelled_tile, make_tile

CALLUS, CARTILAGE, WOVEN = (CLASSES.index(n) for n in ("callus", "hyaline_cartilage", "woven_bone"))


def _with_heads(model, path, tile_bias: int | None = None, cell_bias: int | None = None):
    """`model` saved at `path` with a cell head; a bias of 20 on class `tile_bias` of the
    tile head and `cell_bias` of the cell head (weights zero) makes each answer that class."""
    network, settings = load_bundle(model)
    head = nn.Linear(network.fc.in_features, len(settings.classes))
    with torch.no_grad():
        for layer, bias in ((network.fc, tile_bias), (head, cell_bias)):
            if bias is not None:
                layer.weight.zero_()
                layer.bias.zero_()
                layer.bias[bias] = 20.0
    setattr(network, CELL_HEAD, head)
    return save_bundle(path, network, settings)


def test_a_labelled_tile_is_the_data_set_s_tile_with_its_callus_parts():
    domains = sample_domains(3, 2)
    for name in ("callus", "woven_bone"):
        image, domain, parts = labelled_tile(name, 1, 3, domains, 64, 0.5)
        expected, expected_domain = make_tile(name, 1, 3, domains, 64, 0.5)
        assert np.array_equal(image, expected) and domain == expected_domain
        assert (parts is None) == (name != "callus")


def test_painted_cells_label_every_pixel_of_the_set_s_tiles(tile_set):
    root = tile_set(3, size_px=64)
    settings = tile_set_settings(root, CLASSES, 3, field_um=32.0)
    images, labels = zip(*painted_cells(settings, CLASSES, 3, progress=False), strict=True)
    tiles = np.stack(images)
    assert tiles.shape == (18, 64, 64, 3) and settings.mpp == 0.5
    first_callus = 3 * CALLUS
    stored = np.asarray(Image.open(root / "callus" / "callus_000000.png"))
    assert np.array_equal(tiles[first_callus], stored)
    assert all(label.shape == (1, 1) for i, label in enumerate(labels) if i // 3 != CALLUS)
    assert [int(labels[i][0, 0]) for i in range(0, 18, 3) if i // 3 != CALLUS] == [
        k for k in range(6) if k != CALLUS
    ]
    callus = np.concatenate([labels[i].ravel() for i in range(first_callus, first_callus + 3)])
    assert set(np.unique(callus)) <= {CALLUS, CARTILAGE, WOVEN}


def test_fit_cells_stores_a_head_that_the_bundle_carries(tiny_model, tile_set, tmp_path, capsys):
    model = shutil.copy(tiny_model, tmp_path / "model.pt")
    data = tile_set(3, size_px=128)  # 64 µm: the tiny model's 32 px at 2 µm/px
    test = tile_set(3, size_px=128, seed=1)  # other labs
    assert main(["fit-cells", "--model", str(model), "--data", str(data), "--per-class", "3",
                 "--test", str(test), "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "fitted the cell head on 18 tiles (1 cells each)" in out
    assert re.search(f"on the unseen labs of {re.escape(str(test))}: [01].[0-9]{{3}}, in the "
                     "callus [01].[0-9]{3}; stored", out)  # fmt: skip
    assert cell_head(load_bundle(model)[0]).out_features == 6


def test_the_test_set_is_scored_on_its_own_tiles(tiny_model, tile_set, tmp_path):
    model = shutil.copy(tiny_model, tmp_path / "model.pt")
    data, test = tile_set(5, size_px=128), tile_set(5, size_px=128, seed=1)
    done = fit_cells(model, data, 5, test, progress=False)
    network, settings = load_bundle(model)
    features, targets, callus = _painted_features(
        network, settings, tile_set_settings(test, CLASSES, 5, 64.0), 5, progress=False
    )
    with torch.no_grad():
        answers = cell_head(network)(features.permute(0, 2, 3, 1)).argmax(-1)
    right = (answers == targets.argmax(1)).float()
    assert done["test"] == {"all": float(right.mean()), "callus": float(right[callus].mean())}


def test_painted_features_are_the_same_a_few_tiles_at_a_time(tiny_model, tile_set, monkeypatch):
    network, settings = load_bundle(tiny_model)
    tiles = tile_set_settings(tile_set(3, size_px=128), CLASSES, 3, 64.0)
    whole = _painted_features(network, settings, tiles, 3, progress=False)
    monkeypatch.setattr("ossiclass.cell_head.FEATURE_BATCH", 4)  # 18 tiles in 5 batches
    batched = _painted_features(network, settings, tiles, 3, progress=False)
    assert len(whole[0]) == 18
    assert torch.allclose(whole[0], batched[0], atol=1e-5)
    assert torch.equal(whole[1], batched[1]) and torch.equal(whole[2], batched[2])


@pytest.mark.parametrize(
    ("data", "per_class", "expected"),
    [
        ("empty", 3, "not a synthetic tile set"),
        ("file", 3, "not a synthetic tile set"),
        ("broken", 3, "synth.json: malformed"),
        ("unreadable", 3, "synth.json: cannot read"),
        ("set64", 3, "its tiles cover 32 µm, the model's 64 µm"),
        ("set128", 4, "holds 3 tiles per class, not 4"),
    ],
)
def test_fit_cells_refuses_a_set_it_cannot_paint(
    tiny_model, tile_set, tmp_path, capsys, data, per_class, expected
):
    folder = tmp_path / "data"
    if data == "file":
        folder.write_text("tiles")
    elif data.startswith("set"):
        folder = tile_set(3, size_px=int(data[3:]))
    else:
        folder.mkdir()
        if data == "broken":
            (folder / "synth.json").write_text("{not json")
        elif data == "unreadable":
            (folder / "synth.json").mkdir()
    command = ["fit-cells", "--model", str(tiny_model), "--data", str(folder),
               "--per-class", str(per_class), "--quiet"]  # fmt: skip
    assert main(command) == 2
    error = capsys.readouterr().err
    assert expected in error and len(error.strip().splitlines()) == 1


@pytest.mark.parametrize("test", ["training's labs", "too few tiles"])
def test_a_test_set_it_cannot_use_is_refused_before_the_fit(
    tiny_model, tile_set, tmp_path, capsys, test
):
    model = shutil.copy(tiny_model, tmp_path / "model.pt")
    data = tile_set(3, size_px=128)
    other = tile_set(3, size_px=128) if test == "training's labs" else tile_set(2, 128, seed=1)
    command = ["fit-cells", "--model", str(model), "--data", str(data), "--per-class", "3",
               "--test", str(other), "--quiet"]  # fmt: skip
    assert main(command) == 2
    expected = "the same labs as" if test == "training's labs" else "holds 2 tiles per class"
    assert expected in capsys.readouterr().err
    assert cell_head(load_bundle(model)[0]) is None  # nothing fitted, nothing stored


def test_a_model_it_could_not_rewrite_is_refused_before_the_fit(tiny_model, tmp_path, capsys):
    model = shutil.copy(tiny_model, tmp_path / "model.pt")
    (tmp_path / ".model.pt.partial").mkdir()  # where the bundle is written first
    command = ["fit-cells", "--model", str(model), "--data", str(tmp_path / "no-such-set")]
    assert main(command) == 2  # the model is checked first: the set is never looked at
    assert f"cannot write the model {model}" in capsys.readouterr().err


@pytest.mark.parametrize("blocked", ["folder", "partial"])
def test_a_model_that_cannot_be_written_is_a_one_line_error(tiny_model, tmp_path, blocked):
    network, settings = load_bundle(tiny_model)
    if blocked == "folder":  # its folder is a file
        (tmp_path / "not-a-folder").write_text("")
        path = tmp_path / "not-a-folder" / "model.pt"
    else:  # where it is written first, a folder stands
        path = tmp_path / "model.pt"
        (tmp_path / ".model.pt.partial").mkdir()
    with pytest.raises(OssiclassError, match="cannot write the model"):
        save_bundle(path, network, settings)
    assert not path.exists()


def test_the_fit_leaves_the_caller_s_random_numbers_be():
    features, targets = torch.randn(4, 8, 2, 2), torch.softmax(torch.randn(4, 3, 2, 2), 1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fit_cell_head(features, targets)
    assert torch.equal(torch.rand(3), expected)


def test_cell_targets_are_each_cell_s_class_shares():
    label = np.zeros((4, 4), np.uint8)
    label[:, 1:] = 2  # a quarter class 0, the rest class 2
    targets = cell_targets([label, np.full((1, 1), 1, np.uint8)], 3, 2)
    assert targets.shape == (2, 3, 2, 2)
    assert torch.allclose(targets[0, :, 0, 0], torch.tensor([0.5, 0.0, 0.5]))
    assert torch.allclose(targets[0, :, 1, 1], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.all(targets[1, 1] == 1)


def test_the_fit_learns_which_features_name_which_class():
    generator = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 3, (64, 4, 4), generator=generator)
    features = torch.randn(64, 8, 4, 4, generator=generator)
    features[:, :3] += 4 * nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2)
    targets = nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).float()
    head = fit_cell_head(features[:48], targets[:48])
    with torch.no_grad():
        answers = head(features[48:].permute(0, 2, 3, 1)).argmax(-1)
    assert (answers == classes[48:]).float().mean() > 0.95


def test_cells_are_encoded_within_a_grey_level():
    probabilities = torch.softmax(torch.randn(6, 3, 3), 0).numpy()
    assert np.abs(decode(encode(probabilities), 6) - probabilities).max() <= 0.5 / 255 + 1e-6


def test_the_bundle_carries_the_cell_head_and_fine_tuning_drops_it(tiny_model, tmp_path):
    model = _with_heads(tiny_model, tmp_path / "cells.pt", cell_bias=WOVEN)
    network, _ = load_bundle(model)
    assert cell_head(network).bias.argmax() == WOVEN
    assert cell_head(load_bundle(tiny_model)[0]) is None
    fresh = build_backbone("resnet18", 6)
    transfer_weights(network, fresh, list(CLASSES), list(CLASSES))
    assert cell_head(fresh) is None


def test_a_cell_head_of_other_classes_is_a_bad_model(tiny_model, tmp_path):
    network, settings = load_bundle(tiny_model)
    setattr(network, CELL_HEAD, nn.Linear(network.fc.in_features, 4))
    path = save_bundle(tmp_path / "wrong.pt", network, settings)
    with pytest.raises(BadModelError, match="cell head has 4 outputs"):
        load_bundle(path)


def test_the_network_gives_each_cell_s_probabilities_beside_the_tile_s(tmp_path):
    network = build_backbone("resnet18", 6).eval()
    setattr(network, CELL_HEAD, nn.Linear(512, 6))
    inference = InferenceNetwork(network)
    tiles = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        tile, cells = inference.cell_probabilities(tiles)
        assert torch.allclose(tile, inference.probabilities(tiles))
        features = feature_cells(network, inference.standardize(tiles))
        expected = torch.softmax(network.cell_head(features.permute(0, 2, 3, 1)), -1)
    assert cells.shape == (2, 6, 2, 2) and torch.allclose(cells.sum(1), torch.ones(2, 2, 2))
    assert torch.allclose(cells, expected.permute(0, 3, 1, 2), atol=1e-4)
    assert not inference.network.avgpool._forward_pre_hooks  # none left between batches
    batched = feature_cells(network, inference.standardize(tiles), batch=1)  # in two batches
    assert torch.allclose(batched, features, atol=1e-4)


def test_split_callus_gives_the_callus_cells_the_cell_head_s_class():
    labels = np.full((4, 8), CALLUS, np.uint8)  # cells of 16 px; two tiles of 64 px side
    labels[:, 6:] = CLASSES.index("lamellar_bone")
    labels[0, 0] = NO_TISSUE
    classmap = ClassMap(labels, 16, (128, 64), 0.5, TISSUE_CLASSES, refined=True)
    cells = np.zeros((2, 6, 2, 2), np.float32)
    cells[:, CALLUS] = 1
    cells[0, :, :, 0] = 0
    cells[0, CARTILAGE, :, 0] = 1  # the first tile's left half is cartilage
    cells[1, WOVEN] = 1  # the second tile sees woven bone throughout
    cells[1, CALLUS] = 0
    cells[1, :, 1, 1] = 0
    cells[1, CLASSES.index("mesenchyme"), 1, 1] = 0.6  # no callus tissue: the likeliest one
    cells[1, WOVEN, 1, 1] = 0.4
    rows = [
        {"minx": x, "miny": 0, "width": 64, "height": 64, "cells": encode(c),
         **{f"prob_{n}": 0.0 for n in CLASSES}}
        for x, c in zip((0, 64), cells, strict=True)
    ]  # fmt: skip
    split = split_callus(classmap, rows)
    assert split.callus_cells and split.labels[0, 0] == NO_TISSUE
    assert (split.labels[1:, :2] == CARTILAGE).all() and (split.labels[:, 2:4] == CALLUS).all()
    assert (split.labels[:, 4:6] == WOVEN).all()  # and no mesenchyme inside the callus
    assert (split.labels[:, 6:] == CLASSES.index("lamellar_bone")).all()  # not callus: kept


def test_split_callus_places_cells_of_a_grid_wider_than_tall():
    classmap = ClassMap(np.full((4, 4), CALLUS, np.uint8), 16, (64, 64), 0.5, TISSUE_CLASSES,
                        refined=True)  # fmt: skip
    cells = np.zeros((6, 2, 4), np.float32)  # two rows of four cells, each 16 x 32 px
    cells[WOVEN] = 1
    cells[WOVEN, 0, :2], cells[CARTILAGE, 0, :2] = 0, 1  # cartilage in the top row's left half
    row = {"minx": 0, "miny": 0, "width": 64, "height": 64, "cells": encode(cells),
           **{f"prob_{n}": 0.0 for n in CLASSES}}  # fmt: skip
    labels = split_callus(classmap, [row]).labels
    assert (labels[:2, :2] == CARTILAGE).all()
    assert (labels[:2, 2:] == WOVEN).all() and (labels[2:] == WOVEN).all()


def test_classify_refined_splits_the_callus_by_the_cell_head(tiny_model, small_slide, tmp_path):
    model = _with_heads(tiny_model, tmp_path / "m.pt", tile_bias=CALLUS, cell_bias=WOVEN)
    command = ["classify", str(small_slide), "--model", str(model), "--batch-size", "16",
               "--workers", "0", "--quiet"]  # fmt: skip
    assert main([*command, "--out", str(tmp_path / "grid")]) == 0
    assert main([*command, "--out", str(tmp_path / "refined"), "--refine"]) == 0
    grid = json.loads((tmp_path / "grid" / "summary.json").read_text())
    refined = json.loads((tmp_path / "refined" / "summary.json").read_text())
    assert not grid["classmap"]["callus_cells"] and refined["classmap"]["callus_cells"]

    def fractions(summary):
        return {m["name"]: m["value"] for m in summary["histomorphometry"]}

    assert fractions(grid)["Callus fraction"] == pytest.approx(1.0)
    assert fractions(refined)["Woven bone fraction"] == pytest.approx(1.0)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_split_callus(tiny_model, small_slide, tmp_path):
    network, settings = load_bundle(tiny_model)
    head = nn.Linear(network.fc.in_features, len(settings.classes))
    head.load_state_dict(network.fc.state_dict())  # the tiny model's answers, which vary
    setattr(network, CELL_HEAD, head)
    with torch.no_grad():  # and tiles that are all callus
        network.fc.weight.zero_()
        network.fc.bias.copy_(20.0 * (torch.arange(6) == CALLUS))
    model = save_bundle(tmp_path / "m.pt", network, settings)
    command = ["classify", str(small_slide), "--model", str(model), "--batch-size", "16",
               "--workers", "0", "--quiet", "--refine"]  # fmt: skip
    assert main([*command, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    assert run_killed(tmp_path, [*command, "--out", str(out)], 2) == -9
    assert main([*command, "--out", str(out), "--resume"]) == 0
    whole = load_classmap(tmp_path / "whole" / "classmap.tif").labels
    assert np.array_equal(load_classmap(out / "classmap.tif").labels, whole)
    tissues = set(np.unique(whole).tolist()) - {NO_TISSUE}
    assert len(tissues) >= 2
    assert tissues <= {CALLUS, CARTILAGE, WOVEN}
