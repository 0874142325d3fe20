"""The model bundle: one self-describing file with everything prediction needs.

A bundle holds plain data only (tensors, strings, numbers, lists, dicts), so it loads with
`torch.load(weights_only=True)` and never runs code from the file: the network's weights, the
class list in output order (names, display names, colours), the backbone name, the
`Preprocessing` (input size in pixels, the model's µm per pixel, the stain normaliser and its
fitted reference, the standardisation), the softmax temperature and, where one was fitted,
the network's cell head (`cell_head.py`). Version 1 bundles (the
preprocessing as flat fields) and version 2 ones (the classes as names) still load.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from ossiclass import __version__
from ossiclass.classes import TISSUE_CLASSES, TissueClass, class_list_from_dict, class_list_to_dict
from ossiclass.errors import BadModelError, OssiclassError
from ossiclass.files import partial_path
from ossiclass.network import CELL_HEAD, build_backbone
from ossiclass.preprocessing import Preprocessing

BUNDLE_FORMAT = "ossiclass-model"
BUNDLE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


@dataclass(frozen=True)
class ModelSettings:
    """What travels with a model: backbone, preprocessing, class list (output order), softmax
    temperature and the training settings it was made with."""

    backbone: str
    preprocessing: Preprocessing
    classes: tuple[TissueClass, ...] = TISSUE_CLASSES
    temperature: float = 1.0
    trained_with: dict = field(default_factory=dict)

    def __post_init__(self):  # also what a bundle's plain data is read into
        temperature = self.temperature
        if not (
            isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(f"temperature: expected a positive number, got {self.temperature!r}")
        if not isinstance(self.trained_with, dict):
            raise ValueError("trained_with: expected the training settings as a dict")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes' machine names in output order."""
        return tuple(c.name for c in self.classes)

    @property
    def input_px(self) -> int:
        return self.preprocessing.input_px

    @property
    def model_mpp(self) -> float:
        return self.preprocessing.model_mpp

    @classmethod
    def from_dict(cls, data: dict, version: int) -> ModelSettings:
        """Settings from a bundle's plain data (`to_dict`; version 1: flat fields, versions 1
        and 2: the classes as names). Raises ValueError, naming the field, for a malformed one."""
        data = dict(data)
        if version == 1:
            data["preprocessing"] = {
                "model_mpp": data.pop("mpp"),
                "input_px": data.pop("input_px"),
                "normalizer": data.pop("normalizer"),
            }
        prep = dict(data.pop("preprocessing"))
        try:
            classes = class_list_from_dict(list(data.pop("classes")))
        except ValueError as error:
            raise ValueError(f"class list: {error}") from None
        return cls(**data, preprocessing=Preprocessing(**prep), classes=classes)

    def to_dict(self) -> dict:
        """Plain data for the bundle: the dataclass's fields, the class list as
        `class_list_to_dict` writes it."""
        return {**asdict(self), "classes": class_list_to_dict(self.classes)}


def save_bundle(path: str | Path, network: nn.Module, settings: ModelSettings) -> Path:
    """Write a bundle atomically; returns its path."""
    content = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "ossiclass": __version__,
        "settings": settings.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
    }
    path = Path(path)
    _write(path, lambda file: torch.save(content, file))
    return path


def check_writable(path: str | Path) -> None:
    """Fail now, with `save_bundle`'s error, where a bundle could not be written at `path`:
    for commands that work for minutes before they write one."""
    path = Path(path)
    if path.is_dir():
        raise OssiclassError(f"cannot write the model {path}: it is a folder")
    _write(path, None)


def _write(path: Path, write: Callable[[BinaryIO], object] | None) -> None:
    """`write` a file into `path` through its partial file; with None, open that file and
    take it away again. OSErrors become one-line errors and leave no partial file behind."""
    partial = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:  # opened here, so that failures are OSErrors
            if write is not None:
                write(file)
        if write is None:
            partial.unlink()
        else:
            os.replace(partial, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise OssiclassError(f"cannot write the model {path}: {error.strerror or error}") from None


def load_bundle(path: str | Path) -> tuple[nn.Module, ModelSettings]:
    """Read a bundle: (network in eval mode, settings). Anything else is a `BadModelError`."""
    path = Path(path)
    if not path.is_file():
        raise BadModelError(f"{path}: no such model file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler fails on bytes not its own in any way
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
    except ValueError as error:
        raise BadModelError(f"{path}: the bundle's settings are malformed ({error})") from None
    try:
        _ = settings.preprocessing.stain_normalizer  # built now, so that a bad one fails here
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BadModelError(
            f"{path}: the bundle's stain normaliser is malformed ({type(error).__name__}: {error})"
        ) from None
    state = content.get("state_dict")
    try:
        network = build_backbone(settings.backbone, len(settings.classes))
    except ValueError as error:
        raise BadModelError(f"{path}: {error}") from None
    outputs = _head_outputs(network, state)
    if outputs is not None and outputs != len(settings.classes):
        raise BadModelError(
            f"{path}: the network has {outputs} outputs but the bundle lists "
            f"{len(settings.classes)} classes ({', '.join(settings.class_names)})"
        )
    if isinstance(state, dict) and isinstance(state.get(f"{CELL_HEAD}.weight"), torch.Tensor):
        if state[f"{CELL_HEAD}.weight"].ndim != 2:
            raise BadModelError(f"{path}: the cell head's weights are not a matrix")
        outputs, features = state[f"{CELL_HEAD}.weight"].shape
        if outputs != len(settings.classes):
            raise BadModelError(f"{path}: the cell head has {outputs} outputs, not one per class")
        setattr(network, CELL_HEAD, nn.Linear(features, outputs))
    try:
        network.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as error:
        reason = " ".join(str(error).split())[:160]  # one line, however long the torch message
        raise BadModelError(
            f"{path}: weights do not fit backbone {settings.backbone} ({reason})"
        ) from None
    return network.eval(), settings


def _head_outputs(network: nn.Module, state: object) -> int | None:
    """Outputs of a state dict's head (the tensor of the network's last 2-D weight), or None
    where it lacks one."""
    head = [key for key, value in network.state_dict().items() if value.ndim == 2][-1]
    given = state.get(head) if isinstance(state, dict) else None
    return given.shape[0] if isinstance(given, torch.Tensor) else None
