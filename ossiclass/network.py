"""Networks by name: torchvision backbones with our head.

What prediction needs of a network, apart from Lightning, which takes seconds to import and
which predicting does not need (`model.py` holds the LightningModule that trains them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn


def _replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    if hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:  # mobilenet, efficientnet: the last layer of `classifier`
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    return model


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
