import json

import numpy as np
import pytest
import torch
from conftest import EIGHT_CLASSES
from PIL import Image

from ossiclass.bundle import load_bundle
from ossiclass.cli import main
from ossiclass.errors import BadInputError
from ossiclass.network import BACKBONES, build_backbone
from ossiclass.predict import InferenceNetwork, Predictor, predict_image
from ossiclass.preprocess.tissue import white_balance, white_balance_gains
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import make_tile


@pytest.fixture(scope="module")
def tile() -> np.ndarray:
    """A 128 px synthetic cartilage tile at 0.5 µm/px: one 32 px tile at the model's 2 µm/px."""
    return make_tile("hyaline_cartilage", 3, 9, sample_domains(9, 1), 128, 0.5)[0]


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_backbone_folds_into_a_traced_graph(backbone):
    network = build_backbone(backbone, 6).eval()
    folded = InferenceNetwork(network)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.network.modules())
    tiles = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        reference = network((tiles.float() - folded.standardize.mean) / folded.standardize.std)
    assert torch.allclose(folded(tiles), reference, atol=1e-3)


def test_folded_network_gives_the_same_logits(tiny_model):
    network, _ = load_bundle(tiny_model)
    tiles = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    folded = InferenceNetwork(network, bf16=False)
    reference = network((tiles.float() - folded.standardize.mean) / folded.standardize.std)
    assert torch.allclose(folded(tiles), reference, atol=1e-4)


def test_white_balance_in_the_network_equals_balancing_the_pixels(tiny_model, tile):
    """Rounded and clipped alike: a pixel brighter than the glass reads white in both."""
    network, _ = load_bundle(tiny_model)
    folded = InferenceNetwork(network, bf16=False)
    glass = np.array([238.8, 219.1, 227.4])
    image = tile[None, :32, :32].copy()
    image[:, :8] = 250  # brighter than the glass: over 255 unless clipped
    tiles = torch.from_numpy(image).permute(0, 3, 1, 2)
    balanced = torch.from_numpy(white_balance(image, glass)).permute(0, 3, 1, 2)
    gains = torch.from_numpy(white_balance_gains(glass))
    assert torch.allclose(folded(tiles, gains), folded(balanced), atol=1e-5)
    assert not torch.allclose(folded(tiles), folded(balanced), atol=0.1)


def test_a_tile_gets_a_label_and_probabilities(tiny_model, tile):
    result = predict_image(tile, Predictor(tiny_model, precision="fp32"), input_mpp=0.5)
    assert result.tiles == 1
    assert sum(result.probabilities) == pytest.approx(1.0, abs=1e-5)
    assert result.label == result.top(1)[0][0]
    assert result.confidence == max(result.probabilities)


def test_a_large_image_is_the_mean_of_its_tiles(tiny_model, tile):
    predictor = Predictor(tiny_model, precision="fp32")
    quarters = [tile[:64, :64], tile[:64, 64:], tile[64:, :64], tile[64:, 64:]]
    mean = np.mean([predict_image(q, predictor, input_mpp=1.0).probabilities for q in quarters], 0)
    whole = predict_image(tile, predictor, input_mpp=1.0)  # 2 x 2 model tiles
    assert whole.tiles == 4
    assert np.allclose(whole.probabilities, mean, atol=0.02)  # resampled apart or whole


def test_tta_answers_the_same_for_a_turned_or_flipped_tile(tiny_model):
    predictor = Predictor(tiny_model, precision="fp32")
    tiles = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    for moved in (torch.rot90(tiles, 1, dims=(-2, -1)), tiles.flip(-2)):
        plain, turned = predictor.probabilities(tiles), predictor.probabilities(moved)
        assert (plain - turned).abs().max() > 1e-3  # without TTA the answer moves
        averaged = predictor.probabilities(tiles, tta=True)
        assert torch.allclose(averaged, predictor.probabilities(moved, tta=True), atol=1e-5)


def test_an_image_far_smaller_than_the_field_is_refused(tiny_model):
    with pytest.raises(BadInputError, match="smaller than half the model's field"):
        predict_image(np.zeros((8, 8, 3), np.uint8), tiny_model, input_mpp=0.5)


def test_an_image_over_the_pixel_limit_at_the_model_s_scale_is_refused(tiny_model, monkeypatch):
    image = np.zeros((64, 64, 3), np.uint8)
    monkeypatch.setattr("ossiclass.preprocessing.MAX_IMAGE_PIXELS", 100 * 100)
    assert predict_image(image, tiny_model, input_mpp=2.0).tiles == 4  # 64 x 64 px: within
    with pytest.raises(BadInputError, match="512 x 512 px at the model's 2 µm/px, over the"):
        predict_image(image, tiny_model, input_mpp=16)  # a wrong scale would blow it up


def test_tiles_go_through_the_network_a_batch_at_a_time(tiny_model, monkeypatch):
    predictor = Predictor(tiny_model, precision="fp32")
    tiles = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    whole = predictor.probabilities(tiles, tta=True)
    monkeypatch.setattr("ossiclass.predict.BATCH", 2)
    sizes = []
    forward = predictor.network.probabilities
    monkeypatch.setattr(
        predictor.network, "probabilities", lambda t: sizes.append(len(t)) or forward(t)
    )
    assert torch.allclose(predictor.probabilities(tiles, tta=True), whole, atol=1e-6)
    assert set(sizes) == {2, 1} and len(sizes) == 3 * 8


def test_predict_cli_reports_bad_images_and_answers_the_rest(tiny_model, tile, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(tile).save(good)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    images = [str(good), str(tmp_path / "bad.png"), str(tmp_path / "missing.png")]
    status = main(["predict", *images, "--model", str(tiny_model), "--json", "--top-k", "2"])
    out, err = capsys.readouterr()
    assert status == 2
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["image"] for a in answers] == [str(good)]
    assert len(answers[0]["top_k"]) == 2 and len(answers[0]["probabilities"]) == 6
    errors = [line for line in err.splitlines() if line.startswith("ossiclass: error")]
    assert len(errors) == 2 and "bad.png" in errors[0] and "missing.png" in errors[1]
    assert "good.png: no µm per pixel recorded" in err  # one note, for the one image answered


def test_predict_cli_table(tiny_model, tile, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(tile).save(good)
    assert main(["predict", str(good), "--model", str(tiny_model), "--tta"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["image", "label", "confidence"]
    assert row.split()[0] == str(good)


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04 not a zip"])
def test_a_file_that_is_not_a_model_is_one_line(tmp_path, tile, capsys, content):
    model = tmp_path / "model.pt"
    model.write_bytes(content)
    good = tmp_path / "good.png"
    Image.fromarray(tile).save(good)
    assert main(["predict", str(good), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an ossiclass model bundle" in err


def test_the_public_api_predicts(tiny_model, tile):
    import ossiclass

    result = ossiclass.predict_image(tile, ossiclass.load_model(tiny_model, precision="fp32"))
    assert result.label in ossiclass.CLASSES


def test_a_scale_is_given_else_read_else_assumed_with_a_note(tiny_model, tile, tmp_path, capsys):
    import tifffile

    from ossiclass.scale import resolve_mpp

    assert resolve_mpp(0.3, 0.25).source == "given" and resolve_mpp(None, 0.25).mpp == 0.25
    assert resolve_mpp(None, None).mpp == 0.5 and resolve_mpp(None, None).note("x")
    assert resolve_mpp(None, 352.8).source == "assumed"  # a 72 dpi tag is no microscope's scale
    Image.fromarray(tile).save(tmp_path / "plain.png")
    tifffile.imwrite(
        tmp_path / "tagged.tif", tile, photometric="rgb", resolution=(2e4, 2e4),
        resolutionunit="CENTIMETER",
    )  # fmt: skip
    for name, note in (("plain.png", True), ("tagged.tif", False)):
        assert main(["predict", str(tmp_path / name), "--model", str(tiny_model), "--json"]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["mpp"] == 0.5
        assert ("no µm per pixel recorded (or one outside 0.05-50); assumed 0.5" in err) == note


def test_a_model_of_eight_classes_answers_in_its_classes(eight_class_model, tile, tmp_path, capsys):
    import ossiclass

    result = ossiclass.predict_image(tile, ossiclass.load_model(eight_class_model), input_mpp=0.5)
    assert len(result.probabilities) == 8 and result.label in EIGHT_CLASSES
    assert [name for name, _ in result.top(8)] != list(EIGHT_CLASSES)  # ranked, not listed
    assert sorted(name for name, _ in result.top(8)) == sorted(EIGHT_CLASSES)
    assert list(result.to_dict()["probabilities"]) == list(EIGHT_CLASSES)
    image = tmp_path / "tile.png"
    Image.fromarray(tile).save(image)
    argv = ["predict", str(image), "--model", str(eight_class_model), "--mpp", "0.5"]
    assert main([*argv, "--json", "--top-k", "8"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["label"] == result.label and list(answer["probabilities"]) == list(EIGHT_CLASSES)
    assert {name for name, _ in answer["top_k"]} == set(EIGHT_CLASSES)
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == result.label
