import os
import pickle

import pytest
import torch

from ossiclass.bundle import (
    BUNDLE_FORMAT,
    ModelSettings,
    check_writable,
    load_bundle,
    save_bundle,
)
from ossiclass.classes import CLASSES, TISSUE_CLASSES, class_list_from_dict, class_list_to_dict
from ossiclass.errors import BadModelError, OssiclassError
from ossiclass.network import CELL_HEAD, build_backbone
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
        (lambda p: (p.write_bytes(b"hello\n"), p)[1], "not an ossiclass model bundle"),  # KeyError
        (lambda p: (p.write_bytes(bytes(range(256))), p)[1], "not an ossiclass model bundle"),
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


def _resave(path, change) -> None:
    """Rewrite a bundle's plain content after `change(content)`, as an older version wrote it."""
    content = torch.load(path, weights_only=True)
    change(content)
    torch.save(content, path)


def test_a_bundle_carries_its_own_class_list_as_plain_data(tmp_path):
    classes = class_list_from_dict(
        [*CLASSES, "marrow", {"name": "fat", "display_name": "Adipose", "colour": [250, 240, 10]}]
    )
    settings = ModelSettings("resnet18", Preprocessing(1.0, 64), classes=classes)
    path = save_bundle(tmp_path / "m.pt", build_backbone("resnet18", 8), settings)
    stored = torch.load(path, weights_only=True)["settings"]["classes"]
    assert stored == class_list_to_dict(classes)  # names, display names, colours: plain data
    network, loaded = load_bundle(path)
    assert loaded.classes == classes and loaded.class_names[6:] == ("marrow", "fat")
    assert loaded.classes[7].display_name == "Adipose" and loaded.classes[7].colour == (
        250,
        240,
        10,
    )
    assert network(torch.rand(1, 3, 64, 64)).shape == (1, 8)


def test_a_version_2_bundle_with_class_names_still_loads(bundle):
    path, _ = bundle

    def as_version_2(content):
        content["version"] = 2
        content["settings"]["classes"] = list(CLASSES)

    _resave(path, as_version_2)
    _, settings = load_bundle(path)
    assert settings.classes == TISSUE_CLASSES


def test_a_head_that_disagrees_with_the_class_list_is_one_line(tmp_path):
    eight = class_list_from_dict([*CLASSES, "marrow", "fat"])
    path = save_bundle(
        tmp_path / "m.pt",
        build_backbone("resnet18", 6),
        ModelSettings("resnet18", Preprocessing(1.0, 64), classes=eight),
    )
    with pytest.raises(
        BadModelError, match="has 6 outputs but the bundle lists 8 classes"
    ) as caught:
        load_bundle(path)
    assert "\n" not in str(caught.value) and "marrow, fat" in str(caught.value)


def test_a_malformed_class_list_is_one_line(bundle):
    path, _ = bundle
    _resave(path, lambda content: content["settings"].update(classes=["mesenchyme", "bogus"]))
    with pytest.raises(
        BadModelError, match="settings are malformed.*class list.*unknown class 'bogus'"
    ):
        load_bundle(path)


def _prep(**fields):
    return lambda content: content["settings"]["preprocessing"].update(fields)


@pytest.mark.parametrize(
    "change, message",
    [
        (_prep(model_mpp=0), "model_mpp: expected a positive number"),
        (_prep(model_mpp="1"), "model_mpp: expected a positive number"),
        (_prep(input_px="128"), "input_px: expected a positive whole number"),
        (_prep(input_px=12.5), "input_px: expected a positive whole number"),
        (_prep(mean=[0.5, 0.5]), r"mean: expected \(3,\) finite numbers"),
        (_prep(std=[0.2, 0.0, 0.2]), "std: expected positive spreads"),
        (_prep(normalizer="macenko"), "normalizer: expected a fitted normaliser's fields"),
        (_prep(normalizer={"method": "nope"}), "stain normaliser is malformed.*unknown"),
        (_prep(normalizer={"method": "macenko"}), "stain normaliser is malformed"),
        (lambda c: c["settings"].update(temperature="hot"), "temperature: expected a positive"),
        (lambda c: c["settings"].update(temperature=0.0), "temperature: expected a positive"),
        (lambda c: c["settings"].update(trained_with=3), "trained_with: expected"),
        (
            lambda c: c["state_dict"].update({f"{CELL_HEAD}.weight": torch.zeros(6)}),
            "cell head's weights are not a matrix",
        ),
    ],
)
def test_a_bundle_field_of_the_wrong_kind_is_one_line(bundle, change, message):
    path, _ = bundle
    _resave(path, change)
    with pytest.raises(BadModelError, match=message) as caught:
        load_bundle(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("blocked", ["none", "folder", "is a folder", "partial"])
def test_a_bundle_that_could_not_be_written_is_found_before_the_work(tmp_path, blocked):
    path = tmp_path / "run" / "model.pt"
    if blocked == "folder":  # its folder is a file
        (tmp_path / "run").write_text("")
    elif blocked == "is a folder":
        path.mkdir(parents=True)
    elif blocked == "partial":  # where it is written first, a folder stands
        (tmp_path / "run" / ".model.pt.partial").mkdir(parents=True)
    if blocked == "none":
        check_writable(path)
        assert list(path.parent.iterdir()) == []  # it leaves nothing behind
        return
    with pytest.raises(OssiclassError, match=f"cannot write the model {path}"):
        check_writable(path)
    assert not path.is_file()
