"""Networks by name: torchvision backbones with our head.

What prediction needs of a network, apart from Lightning, which takes seconds to import and
which predicting does not need (`model.py` holds the LightningModule that trains them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torchvision
from torch import nn


def head(model: nn.Module) -> nn.Linear:
    """The last layer of a network of `BACKBONES`: the one that names the classes."""
    return model.fc if hasattr(model, "fc") else model.classifier[-1]


CELL_HEAD = "cell_head"
"""The attribute of a network that holds its cell head, if it has one (`cell_head.py`)."""


@contextmanager
def last_feature_maps(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward of `model` (of `BACKBONES`, or its fused graph) adds its
    last feature map to the list this yields: the input of its pooling layer, (N, C, h, w),
    one vector per cell of the tile (32 input pixels a side)."""
    kept: list[torch.Tensor] = []
    hook = model.avgpool.register_forward_pre_hook(lambda module, inputs: kept.append(inputs[0]))
    try:
        yield kept
    finally:
        hook.remove()


def cell_head(model: nn.Module) -> nn.Linear | None:
    """The network's cell head (features of a cell -> class logits), or None."""
    return getattr(model, CELL_HEAD, None)


def _replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    layer = nn.Linear(head(model).in_features, num_classes)
    if hasattr(model, "fc"):
        model.fc = layer
    else:  # mobilenet, efficientnet: the last layer of `classifier`
        model.classifier[-1] = layer
    return model


def transfer_weights(
    source: nn.Module, target: nn.Module, source_classes: list[str], target_classes: list[str]
) -> list[str]:
    """Copy a trained network into `target` of the same backbone: every layer but the head,
    and the head's rows of the classes both know (by name). Returns the classes `target`
    learns anew (their rows keep their fresh initialisation)."""
    source_head, target_head = head(source), head(target)
    head_weights = {id(source_head.weight), id(source_head.bias)}
    head_names = {k for k, v in source.named_parameters() if id(v) in head_weights}
    # The cell head is fitted to a frozen network: once the network learns on, it is stale.
    state = {
        k: v for k, v in source.state_dict().items()
        if k not in head_names and not k.startswith(f"{CELL_HEAD}.")
    }  # fmt: skip
    missing, unexpected = target.load_state_dict(state, strict=False)
    if unexpected or set(missing) != head_names:
        raise ValueError("the two networks are not of one backbone")
    new = []
    with torch.no_grad():
        for row, name in enumerate(target_classes):
            if name in source_classes:
                old = source_classes.index(name)
                target_head.weight[row] = source_head.weight[old]
                target_head.bias[row] = source_head.bias[old]
            else:
                new.append(name)
    return new


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "mobilenet_v3_small": torchvision.models.mobilenet_v3_small,
    "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
    "efficientnet_b0": torchvision.models.efficientnet_b0,
}


def build_backbone(name: str, num_classes: int, weights_path: str | None = None) -> nn.Module:
    """A torchvision network by name with a `num_classes` head, from scratch or from a local
    state-dict file (loaded with weights_only=True; its own head is dropped)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    model = BACKBONES[name](weights=None)
    if weights_path:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return _replace_head(model, num_classes)
