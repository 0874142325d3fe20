import os
import pickle

import pytest
import torch

from ossiclass.bundle import BUNDLE_FORMAT, ModelSettings, load_bundle, save_bundle
from ossiclass.errors import BadModelError
from ossiclass.network import build_backbone
from ossiclass.preprocessing import Preprocessing


@pytest.fixture
def bundle(tmp_path):
    network = build_backbone("mobilenet_v3_small", 6)
    return save_bundle(
        tmp_path / "model.pt", network, ModelSettings("mobilenet_v3_small", Preprocessing(1.0, 128))
    ), network


def test_round_trip_gives_the_same_network_and_settings(bundle):
    path, network = bundle
    loaded, settings = load_bundle(path)
    assert (
        settings.backbone == "mobilenet_v3_small"
        and settings.model_mpp == 1.0
        and settings.input_px == 128
    )
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(loaded(x), network.eval()(x))
    assert not loaded.training


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.with_name("none.pt"), "no such model file"),
        (lambda p: (p.write_bytes(b"not torch"), p)[1], "not an ossiclass model bundle"),
        (
            lambda p: (torch.save({"weights": torch.zeros(2)}, p), p)[1],
            "not an ossiclass model bundle",
        ),
        (
            lambda p: (p.write_bytes(pickle.dumps(_RunsCode())), p)[1],
            "not an ossiclass model bundle",
        ),
        (
            lambda p: (
                torch.save({"format": BUNDLE_FORMAT, "version": 99, "ossiclass": "9.0"}, p),
                p,
            )[1],
            "version 99",
        ),
    ],
)
def test_bad_model_files_are_refused_without_running_code(tmp_path, monkeypatch, make, message):
    monkeypatch.chdir(tmp_path)
    path = make(tmp_path / "model.pt")
    with pytest.raises(BadModelError, match=message) as caught:
        load_bundle(path)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "PWNED").exists()


def test_weights_that_do_not_fit_the_backbone(tmp_path):
    path = save_bundle(
        tmp_path / "m.pt",
        build_backbone("resnet18", 6),
        ModelSettings("mobilenet_v3_small", Preprocessing(1.0, 128)),
    )
    with pytest.raises(BadModelError, match="do not fit backbone mobilenet_v3_small"):
        load_bundle(path)
