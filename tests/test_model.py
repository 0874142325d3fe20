from pathlib import Path

import pytest
import torch
import yaml

from ossiclass.bundle import load_bundle
from ossiclass.model import TissueClassifier
from ossiclass.network import BACKBONES, build_backbone
from ossiclass.train import run_cli

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_backbones_by_name_have_six_outputs(name):
    model = build_backbone(name, 6).eval()
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 6)


def test_backbone_from_a_local_weights_file(tmp_path):
    source = BACKBONES["resnet18"](weights=None)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    model = build_backbone("resnet18", 6, str(tmp_path / "weights.pt"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vit_huge", 6)


def test_classifier_takes_uint8_tiles():
    logits = TissueClassifier("resnet18")(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert logits.shape == (2, 6)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_instantiates(config, tmp_path, tiny_model):
    settings = yaml.safe_load(config.read_text())
    start = ["--model.init_bundle", str(tiny_model)] if "init_bundle" in settings["model"] else []
    cli = run_cli(
        ["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.devices", "1", *start],
        run=False,
    )
    assert cli.model.backbone_name == settings["model"].get("backbone", "resnet18")
    # A fine-tuned model takes its input size from the bundle it starts from.
    assert cli.datamodule.input_px == settings["data"].get("input_px", 32)
    assert cli.trainer.max_epochs == settings["trainer"]["max_epochs"]
    # Every run writes a bundle and keeps its best epoch, without the config repeating it.
    kinds = [type(callback).__name__ for callback in cli.trainer.callbacks]
    assert kinds.count("BundleWriter") == 1 and kinds.count("ModelCheckpoint") == 1
    monitor = settings.get("checkpoint", {}).get("monitor", "val/macro_f1")
    assert cli.trainer.checkpoint_callback.monitor == monitor


@pytest.mark.slow
def test_tiny_training_run_through_the_cli(tmp_path, tile_set):
    root = tile_set(6, seed=1)
    cli = run_cli(
        [
            "fit",
            "--config",
            "configs/ci.yaml",
            "--data.train",
            str(root),
            "--data.test",
            str(root),
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--data.normalizer",
            "macenko",
        ]
    )
    assert cli.trainer.current_epoch == 1
    result = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert 0.0 <= result["test/macro_f1"] <= 1.0
    assert cli.model.last_confusion.sum() == 36
    network, settings = load_bundle(tmp_path / "run" / "model.pt")
    assert settings.input_px == 32 and settings.model_mpp == pytest.approx(0.5 * 48 / 32)
    assert (
        settings.preprocessing.normalizer["method"] == "macenko"
    )  # the fitted reference travels along
