"""The cell head: the class of each cell of a tile's last feature map (32 network-input pixels
a side: 32 µm for the default model), so that the map of a fracture callus tells its cartilage
and woven-bone islands from its fibrous tissue.

A tile's class speaks for its whole field, and a callus field is a mixture by definition
(TISSUES.md): the tile classifier rightly calls it callus, and the callus measures still need
what its islands are. The cell head is one linear layer over the backbone's last feature map,
fitted to the frozen network (`ossiclass fit-cells`) on synthetic tiles whose every pixel's
tissue the generator knows: a callus tile's islands, each other tile's one class. The tile
classifier stays exactly as it was. `classify` stores each slide tile's cell probabilities
with its chunk, and `--refine` uses them inside the callus (`refine.split_callus`).
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ossiclass.classes import CALLUS_PARTS
from ossiclass.errors import BadInputError
from ossiclass.network import CELL_HEAD, last_feature_maps

if TYPE_CHECKING:
    from ossiclass.bundle import ModelSettings
    from ossiclass.synth.tiles import TileSettings

FIT_STEPS = 600
"""AdamW steps of the fit, each on `BATCH_CELLS` cells drawn at random."""
BATCH_CELLS = 4096
LEARNING_RATE = 1e-2
FEATURE_BATCH = 64
"""Tiles painted and passed through the network at a time."""
HELD_OUT_EVERY = 5
"""Every fifth tile is held out of the fit, to report how well the head does on tiles it never
saw."""


def tile_set_settings(tile_set: str | Path, class_names: tuple[str, ...], per_class: int,
                      field_um: float) -> TileSettings:  # fmt: skip
    """The settings of a synthetic tile set (its `synth.json`), checked for painting its first
    `per_class` tiles of each class for a model of `class_names` whose tiles cover `field_um`
    µm a side; else `BadInputError`."""
    from ossiclass.datasets import FIELD_TOLERANCE
    from ossiclass.synth.tiles import TileSettings

    description = Path(tile_set) / "synth.json"
    try:
        settings = TileSettings(**json.loads(description.read_text())["settings"])
        settings.validate()
    except (FileNotFoundError, NotADirectoryError):
        raise BadInputError(f"{tile_set}: not a synthetic tile set (no synth.json)") from None
    except OSError as error:
        raise BadInputError(f"{description}: cannot read ({error.strerror or error})") from None
    except (ValueError, TypeError, KeyError) as error:
        raise BadInputError(f"{description}: malformed ({error})") from None
    if per_class > settings.per_class:
        raise BadInputError(
            f"{tile_set}: holds {settings.per_class} tiles per class, not {per_class}"
        )
    if abs(settings.size_px * settings.mpp / field_um - 1) > FIELD_TOLERANCE:
        raise BadInputError(
            f"{tile_set}: its tiles cover {settings.size_px * settings.mpp:g} µm, "
            f"the model's {field_um:g} µm"
        )
    missing = [n for n in (*settings.classes, *CALLUS_PARTS) if n not in class_names]
    if missing:
        raise BadInputError(f"{tile_set}: the model has no class {', '.join(sorted(set(missing)))}")
    return settings


def painted_cells(settings: TileSettings, class_names: tuple[str, ...], per_class: int,
                  progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Tiles 0 .. `per_class` - 1 of every class of a synthetic tile set (`tile_set_settings`),
    painted again (the very tiles of the set), one at a time, with what each pixel is.

    Yields ((S, S, 3) uint8 tile at the set's µm per pixel, (h, w) uint8 label image at
    painting resolution, indices into `class_names`, the model's class list).
    """
    from ossiclass.synth.stains import sample_domains
    from ossiclass.synth.tiles import labelled_tile

    islands = np.array([class_names.index(name) for name in CALLUS_PARTS], dtype=np.uint8)
    domains = sample_domains(settings.seed, settings.domains)
    jobs = [(name, index) for name in settings.classes for index in range(per_class)]
    for name, index in tqdm(jobs, desc="painting tiles", unit="tile", disable=not progress):
        image, _, parts = labelled_tile(
            name, index, settings.seed, domains, settings.size_px, settings.mpp
        )
        if parts is None:  # one tissue throughout
            yield image, np.full((1, 1), class_names.index(name), dtype=np.uint8)
        else:
            yield image, islands[parts]


def cell_targets(labels: list[np.ndarray], classes: int, cells: int) -> torch.Tensor:
    """Each cell's share of each class: (N, classes, cells, cells) float32 from N label images
    (area averages over a cells x cells grid)."""
    targets = []
    for label in labels:
        onehot = torch.nn.functional.one_hot(torch.from_numpy(label).long(), classes)
        onehot = onehot.permute(2, 0, 1).float()[None]
        targets.append(torch.nn.functional.adaptive_avg_pool2d(onehot, cells)[0])
    return torch.stack(targets)


@torch.inference_mode()
def feature_cells(network: nn.Module, tiles: torch.Tensor, batch: int = FEATURE_BATCH
                  ) -> torch.Tensor:  # fmt: skip
    """The last feature map (N, C, h, w) float32 of (N, 3, S, S) standardised tiles."""
    with last_feature_maps(network) as kept:
        for start in range(0, len(tiles), batch):
            network(tiles[start : start + batch])
    return torch.cat(kept).float()


def fit_cell_head(features: torch.Tensor, targets: torch.Tensor, seed: int = 0) -> nn.Linear:
    """A linear layer from each cell's features to its classes, fitted with the soft
    cross-entropy of (N, C, h, w) features against (N, K, h, w) class shares."""
    generator = torch.Generator().manual_seed(seed)
    x = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    y = targets.permute(0, 2, 3, 1).reshape(-1, targets.shape[1])
    with torch.random.fork_rng(devices=[]):  # a seeded start that leaves the caller's RNG be
        torch.manual_seed(seed)
        head = nn.Linear(x.shape[1], y.shape[1])
    optimiser = torch.optim.AdamW(head.parameters(), LEARNING_RATE, weight_decay=1e-4)
    for _ in range(FIT_STEPS):
        pick = torch.randint(0, len(x), (min(BATCH_CELLS, len(x)),), generator=generator)
        loss = nn.functional.cross_entropy(head(x[pick]), y[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return head.eval()


def fit_cells(model: str | Path, tile_set: str | Path, per_class: int,
              test_set: str | Path | None = None, progress: bool = True) -> dict:  # fmt: skip
    """Fit a bundle's cell head on a synthetic tile set (see the module's docstring) and store
    it in the bundle. Returns what it did: tiles, cells, and the share of cells whose largest
    class is the head's answer, for all and for the callus: on the held-out tiles of the set's
    own labs ("held_out") and, given `test_set`, on its tiles, of labs never seen ("test")."""
    from ossiclass.bundle import check_writable, load_bundle, save_bundle

    network, settings = load_bundle(model)
    check_writable(model)
    names, field = settings.class_names, settings.preprocessing.field_um
    train = tile_set_settings(tile_set, names, per_class, field)
    test = None if test_set is None else tile_set_settings(test_set, names, per_class, field)
    if test is not None and test.seed == train.seed:  # a set's labs are drawn from its seed
        raise BadInputError(
            f"{test_set}: the same labs as {tile_set} (seed {train.seed}), not unseen ones"
        )
    features, targets, callus = _painted_features(network, settings, train, per_class, progress)
    held_out = torch.arange(len(features)) % HELD_OUT_EVERY == 0
    head = fit_cell_head(features[~held_out], targets[~held_out])
    done = {
        "tiles": len(features),
        "cells_per_tile": features.shape[-1] ** 2,
        "held_out": _accuracy(head, features[held_out], targets[held_out], callus[held_out]),
    }
    if test is not None:
        done["test"] = _accuracy(head, *_painted_features(network, settings, test, per_class,
                                                          progress))  # fmt: skip
    setattr(network, CELL_HEAD, head)
    save_bundle(model, network, settings)
    return done


def _painted_features(
    network: nn.Module, settings: ModelSettings, tile_set: TileSettings, per_class: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """`painted_cells` through the network, at the model's scale: (N, C, h, w) float32 features
    (h = w = input px / 32), (N, K, h, w) class shares, and (N,) bool, the tiles painted in
    parts (the callus's)."""
    prep = settings.preprocessing
    standardize = prep.standardize()
    painted = painted_cells(tile_set, settings.class_names, per_class, progress)
    features, targets, callus = [], [], []
    # A batch of tiles at a time: what the fit keeps is the features, not the painted tiles.
    for batch in iter(lambda: list(itertools.islice(painted, FEATURE_BATCH)), []):
        images, labels = zip(*batch, strict=True)
        scaled = np.stack([prep.to_model_scale(image, tile_set.mpp) for image in images])
        tiles = torch.from_numpy(prep.normalize(scaled)).permute(0, 3, 1, 2)
        features.append(feature_cells(network, standardize(tiles)))
        targets.append(cell_targets(list(labels), len(settings.classes), features[-1].shape[-1]))
        callus += [label.size > 1 for label in labels]
    return torch.cat(features), torch.cat(targets), torch.tensor(callus)


def _accuracy(
    head: nn.Linear, features: torch.Tensor, targets: torch.Tensor, callus: torch.Tensor
) -> dict[str, float | None]:
    """The share of cells whose largest class is the head's answer: for all, for the callus."""
    with torch.no_grad():
        right = (head(features.permute(0, 2, 3, 1)).argmax(-1) == targets.argmax(1)).float()
    in_callus = float(right[callus].mean()) if callus.any() else None
    return {"all": float(right.mean()), "callus": in_callus}


def encode(probabilities: np.ndarray) -> str:
    """(K, h, w) cell probabilities as text for a chunk's row: base64 of them in 1/255 steps."""
    quantised = np.round(np.asarray(probabilities) * 255).astype(np.uint8)
    return f"{quantised.shape[1]}:" + base64.b64encode(quantised.tobytes()).decode("ascii")


def decode(text: str, classes: int) -> np.ndarray:
    """`encode`'s text back: (classes, h, w) float32 probabilities."""
    side, data = text.split(":", 1)
    values = np.frombuffer(base64.b64decode(data), dtype=np.uint8).astype(np.float32) / 255
    return values.reshape(classes, int(side), -1)
