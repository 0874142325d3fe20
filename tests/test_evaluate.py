import json

import pytest
import torch
from conftest import EIGHT_CLASSES

from ossiclass.bundle import ModelSettings, load_bundle, save_bundle
from ossiclass.classes import CLASSES, class_list_from_dict, write_class_list
from ossiclass.cli import main
from ossiclass.evaluate import fit_temperature, metrics, reliability
from ossiclass.network import build_backbone
from ossiclass.preprocessing import Preprocessing


def test_metrics_of_perfect_and_of_confused_predictions():
    labels = torch.arange(6).repeat(5)
    perfect = torch.nn.functional.one_hot(labels, 6).float() * 10
    result = metrics(perfect, labels)
    assert result["accuracy"] == 1.0 and result["macro_f1"] == 1.0
    assert result["confusion"][2][2] == 5 and result["ece"] < 0.01
    shuffled = metrics(perfect, labels.roll(1))
    assert shuffled["accuracy"] == 0.0 and shuffled["ece"] > 0.9


def test_temperature_scaling_fixes_overconfidence():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (2000,), generator=generator)
    clean = torch.nn.functional.one_hot(labels, 6).float() * 2 + torch.randn(
        2000, 6, generator=generator
    )
    overconfident = clean * 5  # right as often, far too sure of itself
    temperature = fit_temperature(overconfident, labels)
    assert temperature > 2
    assert (
        metrics(overconfident, labels, temperature)["ece"]
        < metrics(overconfident, labels)["ece"] / 2
    )
    assert all(0 <= share <= 1 for _, _, share in reliability(overconfident, labels))


def test_evaluate_command_writes_metrics_pictures_and_stores_the_temperature(
    tmp_path, capsys, tile_set
):
    tiles = tile_set(3, seed=4)
    model = save_bundle(
        tmp_path / "model.pt",
        build_backbone("resnet18", 6),
        ModelSettings("resnet18", Preprocessing(0.75, 32)),
    )
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(model), "--data", str(tiles), "--out", str(out), "--quiet"]
    assert main([*argv, "--calibrate", str(tiles)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["tiles"] == 18 and len(result["confusion"]) == 6
    assert (out / "confusion.png").stat().st_size > 1000 and (out / "reliability.png").exists()
    _, settings = load_bundle(model)
    assert (
        settings.temperature == pytest.approx(result["temperature"]) and settings.temperature != 1.0
    )
    assert "macro-F1" in capsys.readouterr().out


def test_evaluate_errors_are_one_line(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "none.pt"), "--data", str(tmp_path)]) == 2
    assert "no such model file" in capsys.readouterr().err
    settings = ModelSettings("resnet18", Preprocessing(0.75, 32))
    model = save_bundle(tmp_path / "model.pt", build_backbone("resnet18", 6), settings)
    (tmp_path / ".model.pt.partial").mkdir()  # the temperature could not be stored
    argv = ["evaluate", "--model", str(model), "--data", str(tmp_path / "none"), "--calibrate", "x"]
    assert main(argv) == 2  # found before any tile is read
    assert f"cannot write the model {model}" in capsys.readouterr().err


def test_tiles_that_record_no_scale_must_cover_the_model_s_field(tmp_path, capsys, tile_set):
    """Class folders record no µm/px: 0.5 is assumed, with a note, or --mpp gives it; tiles of
    another field are refused, not squeezed into the model's input."""
    tiles = tile_set(1)  # 48 px tiles: 24 µm at 0.5 µm/px, the model's field
    (tiles / "manifest.csv").unlink()
    model = save_bundle(tmp_path / "model.pt", build_backbone("resnet18", 6),
                        ModelSettings("resnet18", Preprocessing(0.75, 32)))  # fmt: skip
    argv = ["evaluate", "--model", str(model), "--data", str(tiles), "--out", str(tmp_path / "e")]
    assert main([*argv, "--quiet"]) == 0
    assert f"the tiles of {tiles}: no µm per pixel recorded" in capsys.readouterr().err
    assert main([*argv, "--quiet", "--mpp", "0.5"]) == 0
    assert "note" not in capsys.readouterr().err
    assert main([*argv, "--quiet", "--mpp", "0.25"]) == 2
    error = capsys.readouterr().err
    assert "48 px at 0.25 µm/px cover 12 µm, but the model's inputs cover 24 µm" in error


def test_evaluate_applies_the_bundles_stain_normaliser(tmp_path, tile_set):
    from ossiclass.preprocess.macenko import MacenkoNormalizer
    from ossiclass.synth.stains import sample_domains
    from ossiclass.synth.tiles import make_tile

    tiles = tile_set(2, size_px=128, seed=6)
    reference = make_tile("woven_bone", 0, 9, sample_domains(9, 1), 256, 0.5)[0]
    network = build_backbone("resnet18", 6)
    normalizer = MacenkoNormalizer.fit(reference).to_dict()
    results = {}
    for name, stain in (("plain", None), ("normalised", normalizer)):
        settings = ModelSettings("resnet18", Preprocessing(0.5, 128, normalizer=stain))
        model = save_bundle(tmp_path / f"{name}.pt", network, settings)
        out = tmp_path / name
        argv = ["evaluate", "--model", str(model), "--data", str(tiles), "--out", str(out)]
        assert main([*argv, "--quiet"]) == 0
        results[name] = json.loads((out / "metrics.json").read_text())
    assert results["plain"]["ece"] != results["normalised"]["ece"]


@pytest.fixture
def eight_class_tiles(tile_set):
    """Tiles of the six (2 each, 128 px at 0.5 µm/px: the tiny models' 64 µm field) plus 1
    marrow and 3 fat tiles (copies), whose classes.json lists the eight in another order than
    the model's."""
    root = tile_set(2, size_px=128, seed=4)
    extra = [
        "mesenchyme/mesenchyme_000000.png,marrow,0,4,0.5",
        *(f"callus/callus_00000{i}.png,fat,0,4,0.5" for i in (0, 1, 0)),
    ]
    with open(root / "manifest.csv", "a") as manifest:
        manifest.write("\n".join(extra) + "\n")
    write_class_list(root, class_list_from_dict(["fat", *CLASSES, "marrow"]))
    return root


def test_evaluate_scores_a_model_of_eight_classes_on_its_classes(
    eight_class_model, eight_class_tiles, tmp_path, capsys
):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(eight_class_model), "--data", str(eight_class_tiles)]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["tiles"] == 16 and result["classes"] == list(EIGHT_CLASSES)
    assert list(result["per_class"]) == list(EIGHT_CLASSES)
    # rows are true classes in the model's order: the set's own order was mapped onto it
    assert [sum(row) for row in result["confusion"]] == [2, 2, 2, 2, 2, 2, 1, 3]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[1:9]] == list(EIGHT_CLASSES)


def test_a_tile_set_with_classes_the_model_lacks_is_one_line(
    tiny_model, eight_class_tiles, tmp_path, capsys
):
    argv = ["evaluate", "--model", str(tiny_model), "--data", str(eight_class_tiles), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "classes fat, marrow are not the model's" in err
