"""The model bundle: one self-describing file with everything prediction needs.

A bundle holds plain data only (tensors, strings, numbers, lists, dicts), so it loads with
`torch.load(weights_only=True)` and never runs code from the file: the network's weights, the
class names in order, the backbone name, the `Preprocessing` (input size in pixels, the model's
µm per pixel, the stain normaliser and its fitted reference, the standardisation) and the
softmax temperature. Version 1 bundles (the preprocessing as flat fields) still load.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ossiclass import __version__
from ossiclass.classes import CLASSES
from ossiclass.errors import BadModelError
from ossiclass.network import build_backbone
from ossiclass.preprocessing import Preprocessing

BUNDLE_FORMAT = "ossiclass-model"
BUNDLE_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class ModelSettings:
    """What travels with a model: backbone, preprocessing, classes, softmax temperature and
    the training settings it was made with."""

    backbone: str
    preprocessing: Preprocessing
    classes: tuple[str, ...] = CLASSES
    temperature: float = 1.0
    trained_with: dict = field(default_factory=dict)

    @property
    def input_px(self) -> int:
        return self.preprocessing.input_px

    @property
    def model_mpp(self) -> float:
        return self.preprocessing.model_mpp

    @classmethod
    def from_dict(cls, data: dict, version: int) -> ModelSettings:
        """Settings from a bundle's plain data (`asdict` of them; version 1: flat fields)."""
        data = dict(data)
        if version == 1:
            data["preprocessing"] = {
                "model_mpp": data.pop("mpp"),
                "input_px": data.pop("input_px"),
                "normalizer": data.pop("normalizer"),
            }
        prep = dict(data.pop("preprocessing"))
        for key in ("mean", "std"):
            if key in prep:
                prep[key] = tuple(prep[key])
        classes = tuple(data.pop("classes"))
        return cls(**data, preprocessing=Preprocessing(**prep), classes=classes)


def save_bundle(path: str | Path, network: nn.Module, settings: ModelSettings) -> Path:
    """Write a bundle atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "ossiclass": __version__,
        "settings": asdict(settings),
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
    }
    partial = path.with_name(f".{path.name}.partial")
    torch.save(content, partial)
    os.replace(partial, path)
    return path


def load_bundle(path: str | Path) -> tuple[nn.Module, ModelSettings]:
    """Read a bundle: (network in eval mode, settings). Anything else is a `BadModelError`."""
    path = Path(path)
    if not path.is_file():
        raise BadModelError(f"{path}: no such model file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadModelError(f"{path}: not an ossiclass model bundle ({reason[:120]})") from None
    if not isinstance(content, dict) or content.get("format") != BUNDLE_FORMAT:
        raise BadModelError(
            f"{path}: not an ossiclass model bundle (use the model.pt a training run writes)"
        )
    if content.get("version") not in READABLE_VERSIONS:
        raise BadModelError(
            f"{path}: bundle version {content.get('version')} was made by ossiclass "
            f"{content.get('ossiclass')}; ossiclass {__version__} reads {READABLE_VERSIONS}"
        )
    try:
        settings = ModelSettings.from_dict(content["settings"], content["version"])
    except (KeyError, TypeError) as error:
        raise BadModelError(f"{path}: the bundle's settings are incomplete ({error})") from None
    if settings.classes != CLASSES:
        raise BadModelError(
            f"{path}: the model's classes {settings.classes} are not ours {CLASSES}"
        )
    try:
        network = build_backbone(settings.backbone, len(settings.classes))
        network.load_state_dict(content["state_dict"])
    except (ValueError, RuntimeError, KeyError) as error:
        reason = " ".join(str(error).split())[:160]  # one line, however long the torch message
        raise BadModelError(
            f"{path}: weights do not fit backbone {settings.backbone} ({reason})"
        ) from None
    return network.eval(), settings
