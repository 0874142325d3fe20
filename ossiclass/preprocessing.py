"""How an image becomes the network's input: the `Preprocessing` that training records in
the model bundle (`data.TileDataModule.preprocessing`) and that evaluation, `predict` and
`classify` read back from it.

The steps, in order, each written once and shared with training: resample to the model's µm/px
(`preprocess.tiling.resize`: area average when shrinking, Lanczos when growing; training's
loader calls it too), stain-normalise with the fitted normaliser (the one training fitted), and
standardise each channel (`Standardize`, the first layer of training's LightningModule too).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from ossiclass.errors import BadInputError
from ossiclass.imageio import MAX_IMAGE_PIXELS
from ossiclass.preprocess.checks import checked_mean_std, checked_mpp
from ossiclass.preprocess.stain import normalizer_from_dict
from ossiclass.preprocess.tiling import resize

# Channel statistics of H&E tiles (0-1 scale), for input standardisation; close enough for any lab.
HE_MEAN = (0.78, 0.62, 0.78)
HE_STD = (0.16, 0.20, 0.14)


@dataclass(frozen=True)
class Preprocessing:
    """What is done to a tile before the network sees it.

    model_mpp : µm per pixel of the network's input.
    input_px : side of the network's input in pixels (its field: input_px x model_mpp µm).
    normalizer : a fitted stain normaliser's `to_dict()`, or None: colours as read.
    mean, std : per-channel standardisation (0-1 scale).
    """

    model_mpp: float
    input_px: int
    normalizer: dict | None = None
    mean: tuple[float, float, float] = HE_MEAN
    std: tuple[float, float, float] = HE_STD

    def __post_init__(self):  # also what a bundle's plain data is read into
        object.__setattr__(self, "model_mpp", checked_mpp(self.model_mpp, "model_mpp"))
        if not isinstance(self.input_px, int) or self.input_px < 1:
            raise ValueError(f"input_px: expected a positive whole number, got {self.input_px!r}")
        if not isinstance(self.normalizer, dict | None):
            kind = type(self.normalizer).__name__
            raise ValueError(f"normalizer: expected a fitted normaliser's fields, got a {kind}")
        checked_mean_std(self)

    @property
    def field_um(self) -> float:
        """The side of one input tile in µm."""
        return self.input_px * self.model_mpp

    @cached_property
    def stain_normalizer(self):
        """The fitted normaliser (see `preprocess.stain`), or None. One thread: it runs in
        DataLoader workers."""
        if self.normalizer is None:
            return None
        return normalizer_from_dict(self.normalizer, self.model_mpp, threads=1)

    def to_model_scale(self, image: np.ndarray, input_mpp: float) -> np.ndarray:
        """An (H, W, 3) image at `input_mpp` µm/px resized to the model's µm/px, and mirrored
        out to one full tile where it is a little smaller. Less than half a tile is a
        `BadInputError`."""
        factor = input_mpp / self.model_mpp
        height, width = image.shape[:2]
        size = (max(round(width * factor), 1), max(round(height * factor), 1))
        if min(size) < self.input_px / 2:
            raise BadInputError(
                f"{width} x {height} px at {input_mpp:g} µm/px is smaller than half the "
                f"model's field of {self.field_um:g} µm (is {input_mpp:g} µm/px its scale?)"
            )
        if size[0] * size[1] > MAX_IMAGE_PIXELS:
            raise BadInputError(
                f"{width} x {height} px at {input_mpp:g} µm/px is {size[0]} x {size[1]} px at "
                f"the model's {self.model_mpp:g} µm/px, over the limit of {MAX_IMAGE_PIXELS} "
                f"pixels (is {input_mpp:g} µm/px its scale?)"
            )
        image = resize(image, size)
        pad_y, pad_x = max(self.input_px - size[1], 0), max(self.input_px - size[0], 0)
        if pad_y or pad_x:
            image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="symmetric")
        return image

    def normalize(self, tiles: np.ndarray, stains=None) -> np.ndarray:
        """(N, S, S, 3) uint8 tiles through the fitted normaliser (unchanged without one), each
        with its own estimate or all with `stains` (a slide-level estimate); tiles showing too
        little H&E to estimate pass as they are."""
        if self.stain_normalizer is None:
            return tiles
        return self.stain_normalizer.normalize(tiles, stains)[0]

    def standardize(self) -> Standardize:
        """The standardisation as the network's first layer."""
        return Standardize(self.mean, self.std)


class Standardize(nn.Module):
    """(N, 3, S, S) uint8 -> float tiles standardised per channel, laid out channels-last.

    `gains` (3,) scales each channel first (a white balance, see `white_balance_gains`),
    rounded and clipped to 0-255 as `tissue.scale_channels` does it to the tiles a model is
    trained on (`annotations`), so that a pixel brighter than the glass reads white in both.
    """

    def __init__(self, mean: tuple[float, ...] = HE_MEAN, std: tuple[float, ...] = HE_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, tiles: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor:
        tiles = tiles.float()
        if gains is not None:
            tiles = (tiles * gains.view(1, 3, 1, 1) + 0.5).floor_().clamp_(0, 255)
        return ((tiles - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
