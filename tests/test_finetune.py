"""Fine-tuning from a bundle: class lists that grow, weights that carry over, head first."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ossiclass.classes import (
    TISSUE_CLASSES,
    class_list_from_dict,
    merge_class_lists,
    write_class_list,
)
from ossiclass.datasets import read_tile_table
from ossiclass.errors import BadInputError
from ossiclass.network import build_backbone, head, transfer_weights

REPO = Path(__file__).resolve().parents[1]
EIGHT = [*(c.name for c in TISSUE_CLASSES), "marrow", "fat"]


def test_transfer_keeps_the_body_and_the_rows_of_known_classes():
    torch.manual_seed(0)
    source, target = build_backbone("resnet18", 6), build_backbone("resnet18", 8)
    before = head(target).weight.detach().clone()
    new = transfer_weights(source, target, EIGHT[:6], EIGHT[::-1])  # another order
    assert new == ["fat", "marrow"]
    assert torch.equal(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(target.bn1.running_var, source.bn1.running_var)
    for row, name in enumerate(EIGHT[::-1]):
        expected = source.fc.weight[EIGHT.index(name)] if name in EIGHT[:6] else before[row]
        assert torch.equal(target.fc.weight[row], expected), name
    with pytest.raises(ValueError, match="one backbone"):
        transfer_weights(source, build_backbone("mobilenet_v3_small", 6), EIGHT[:6], EIGHT[:6])


def test_merged_class_lists_keep_the_first_order_and_renumber():
    lab = class_list_from_dict(
        ["fat", {"name": "woven_bone", "display_name": "Bone (woven)", "colour": [1, 2, 3]}]
    )
    merged = merge_class_lists(TISSUE_CLASSES, lab)
    assert [c.name for c in merged] == [*EIGHT[:6], "fat"]
    assert merged[3].display_name == "Bone (woven)" and merged[3].colour == (1, 2, 3)  # the lab's
    assert merged[1] == TISSUE_CLASSES[1]
    assert merged[6].index == 6 and merged[6].display_name == "Fat"


def _eight_class_set(tile_set):
    """A six-class synthetic set with two more classes (copies of other tiles: labels only)."""
    root = tile_set(3)
    for extra, like in (("marrow", "mesenchyme"), ("fat", "hyaline_cartilage")):
        shutil.copytree(root / like, root / extra)
    (root / "manifest.csv").unlink()
    write_class_list(root, class_list_from_dict(EIGHT))
    return root


def test_a_set_with_its_own_class_list(tile_set):
    root = _eight_class_set(tile_set)
    table = read_tile_table(root)
    assert [c.name for c in table.classes] == EIGHT
    assert sorted(set(table.labels.tolist())) == list(range(8))
    with pytest.raises(BadInputError, match="'fat' is not in the classes mesenchyme"):
        read_tile_table(root, classes=TISSUE_CLASSES)
    # Against a model's longer list, classes without tiles are allowed.
    longer = merge_class_lists(table.classes, class_list_from_dict(["muscle"]))
    assert len(read_tile_table(root, classes=longer).classes) == 9


def test_tuning_keeps_the_bundles_preprocessing_and_warns_of_classes_without_tiles(
    tmp_path, tile_set
):
    from ossiclass.bundle import ModelSettings, save_bundle
    from ossiclass.data import TileDataModule
    from ossiclass.preprocessing import Preprocessing

    start = save_bundle(
        tmp_path / "start.pt",
        build_backbone("resnet18", 6),
        ModelSettings("resnet18", Preprocessing(0.75, 32)),
    )
    root = tile_set(2)
    (root / "manifest.csv").unlink()
    for name in ("callus", "mesenchyme"):
        shutil.rmtree(root / name)
    data = TileDataModule(train=str(root), init_bundle=str(start), batch_size=4)
    with pytest.warns(UserWarning, match="no training tiles of mesenchyme, callus"):
        data.setup("fit")
    assert data.class_names == EIGHT[:6] and data.input_px == 32
    for option in ({"normalizer": "reinhard"}, {"reference": "ref.png"}):
        with pytest.raises(BadInputError, match=f"data.{next(iter(option))} cannot be given"):
            TileDataModule(train=str(root), init_bundle=str(start), **option)


@pytest.mark.slow
def test_fine_tuning_a_bundle_on_more_classes_head_first(tmp_path, tile_set):
    from ossiclass.bundle import ModelSettings, load_bundle, save_bundle
    from ossiclass.outputs import sha256
    from ossiclass.preprocessing import Preprocessing
    from ossiclass.train import run_cli

    torch.manual_seed(0)
    start = save_bundle(
        tmp_path / "start.pt",
        build_backbone("resnet18", 6),
        ModelSettings("resnet18", Preprocessing(0.75, 32)),  # 48 px tiles at 0.5 µm/px
    )
    root = _eight_class_set(tile_set)
    run_cli(
        [
            "--config", "configs/finetune.yaml",
            "--data.train", str(root),
            "--model.init_bundle", str(start),
            "--data.batch_size", "16",
            "--trainer.max_epochs", "1",  # only the head's epoch
            "--trainer.precision", "32-true",
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "run"),
        ]
    )  # fmt: skip
    tuned, settings = load_bundle(tmp_path / "run" / "model.pt")
    original, _ = load_bundle(start)
    assert [c.name for c in settings.classes] == EIGHT
    assert settings.preprocessing == Preprocessing(0.75, 32)
    assert settings.trained_with["tuned_from"]["sha256"] == sha256(start)
    # One epoch of the head alone: the body's weights are the start's; batch norm follows the
    # new tiles' statistics from the start.
    assert torch.equal(tuned.layer4[1].conv2.weight, original.layer4[1].conv2.weight)
    assert torch.equal(tuned.conv1.weight, original.conv1.weight)
    assert not torch.equal(tuned.layer2[0].bn1.running_mean, original.layer2[0].bn1.running_mean)
    assert not torch.equal(tuned.fc.weight[:6], original.fc.weight)


@pytest.mark.slow
def test_head_first_under_two_process_ddp_keeps_the_processes_in_step(tmp_path, tile_set):
    """The head's epoch, then the whole network's, over two gloo processes: the layers that
    thaw are reduced like the rest, so both processes end with the same weights."""
    from ossiclass.bundle import ModelSettings, save_bundle
    from ossiclass.preprocessing import Preprocessing

    torch.manual_seed(0)
    body = build_backbone("resnet18", 6)
    start = save_bundle(
        tmp_path / "start.pt", body, ModelSettings("resnet18", Preprocessing(0.75, 32))
    )
    callbacks = tmp_path / "callbacks.yaml"
    callbacks.write_text(
        "trainer:\n  callbacks:\n"
        "    - {class_path: ossiclass.train.HeadFirst, init_args: {epochs: 1}}\n"
        f"    - {{class_path: rank_weights.RankWeights, init_args: {{folder: '{tmp_path}'}}}}\n"
    )
    command = [
        sys.executable, "scripts/train.py",
        "--config", "configs/finetune.yaml", "--config", str(callbacks),
        "--data.train", str(_eight_class_set(tile_set)),
        "--model.init_bundle", str(start),
        "--data.batch_size", "8",
        "--trainer.max_epochs", "2",
        "--trainer.precision", "32-true",
        "--trainer.strategy", "ddp", "--trainer.devices", "2",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, weight in ranks[0].items():
        assert torch.equal(weight, ranks[1][name]), name
    assert not torch.equal(ranks[0]["conv1.weight"], body.conv1.weight)  # the body trained too
