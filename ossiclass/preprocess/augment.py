"""Training augmentation as torchvision v2 transforms on (..., 3, H, W) tensors.

`random_symmetry` flips and turns a tile by one of the 8 symmetries of the square (sections have
no up or left); `RandomZoom` zooms it a little about its centre (scanners' µm/px differ);
`HEDJitter` perturbs hematoxylin, eosin and DAB concentrations (Tellez et al. 2018);
`RandomStainDomain` re-renders a tile's hematoxylin and eosin with the vectors and strengths of
a randomly drawn synthetic lab. `training_transform` composes them for one tile. The stain
transforms take uint8 or float (0-1) tensors and return the same dtype and draw from their own
generators, so a seed makes them repeatable; the geometric ones draw from torch's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import hed_from_rgb, rgb_from_hed
from torchvision.transforms import v2

from ossiclass.errors import BadInputError
from ossiclass.preprocess.macenko import TEXTBOOK_STAINS
from ossiclass.preprocess.tissue import IO
from ossiclass.synth.stains import sample_domain

_LOG_ADJUST = float(np.log(1e-6))  # scikit-image's rgb2hed scale


def _to_unit(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


def _like(values: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    values = values.clamp(0.0, 1.0)
    return (
        (values * 255.0).round().to(torch.uint8)
        if image.dtype == torch.uint8
        else values.to(image.dtype)
    )


def random_symmetry() -> v2.Transform:
    """Each of the 8 symmetries of the square with probability 1/8: a flip with probability
    1/2, then 0, 1, 2 or 3 quarter turns (exact on square tiles: v2 rotates by transposing)."""
    turns = [v2.RandomRotation((angle, angle)) for angle in (0, 90, 180, 270)]
    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomChoice(turns)])


class RandomZoom(v2.Transform):
    """Zoom a (..., 3, H, W) image about its centre by a factor drawn uniformly from
    [1 - max_change, 1 + max_change] (one a call), bilinear, mirroring at the edges; same
    shape and dtype.

    v2's `RandomAffine` draws the same factor but fills the corners it uncovers; a symmetric
    `Pad` before it and a `CenterCrop` after it give these pixels (within one grey level) at
    2.5 times the cost (measured), in the collate step that shares the CPU with training.
    """

    def __init__(self, max_change: float):
        super().__init__()
        if not 0 <= max_change < 1:
            raise BadInputError(f"a random zoom changes the scale by less than 1, got {max_change}")
        self.max_change = max_change

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        change = self.max_change
        return {"scale": torch.empty(1).uniform_(1 - change, 1 + change)}

    def transform(self, inpt: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        image = inpt.reshape(-1, *inpt.shape[-3:]).float()
        theta = torch.zeros(len(image), 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / params["scale"]
        grid = F.affine_grid(theta.to(inpt.device), list(image.shape), align_corners=False)
        zoomed = F.grid_sample(
            image, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        if not inpt.is_floating_point():
            zoomed = zoomed.round().clamp(0, 255)
        return zoomed.to(inpt.dtype).reshape(inpt.shape)


class HEDJitter(v2.Transform):
    """Scale each HED concentration by U(1 - sigma, 1 + sigma) and shift it by
    U(-bias, bias), in scikit-image's `rgb2hed` space: one draw per image of a batch."""

    def __init__(self, sigma: float = 0.05, bias: float = 0.05, seed: int | None = None):
        super().__init__()
        self.sigma, self.bias = sigma, bias
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.register_buffer("to_hed", torch.tensor(hed_from_rgb, dtype=torch.float32))
        self.register_buffer("to_rgb", torch.tensor(rgb_from_hed, dtype=torch.float32))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        shape = (*flat_inputs[0].shape[:-3], 3, 1, 1)  # on the CPU generator: any device alike
        scale = 1 + (torch.rand(shape, generator=self.generator) * 2 - 1) * self.sigma
        shift = (torch.rand(shape, generator=self.generator) * 2 - 1) * self.bias
        return {"scale": scale, "shift": shift}

    def transform(self, inpt: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        rgb = _to_unit(inpt).clamp(min=1e-6)
        hed = torch.einsum("...chw,cd->...dhw", torch.log(rgb) / _LOG_ADJUST, self.to_hed)
        hed = hed * params["scale"].to(hed) + params["shift"].to(hed)
        rgb = torch.exp(torch.einsum("...dhw,dc->...chw", hed, self.to_rgb) * _LOG_ADJUST)
        return _like(rgb, inpt)


class RandomStainDomain(v2.Transform):
    """With probability `p`, re-render a (3, H, W) tile as if stained and scanned by a random
    synthetic lab: unmix its optical density (against glass at `IO`) with the textbook H and E
    vectors, remix the two dyes with a sampled domain's vectors and strengths, under its glass
    colour.

    Fixed vectors, not a per-tile estimate, keep each tile's balance of the dyes, so bone stays
    more eosinophilic than cartilage in every lab: a per-tile Macenko estimate of a tile that
    holds mostly one dye splits that dye in two and can render bone as purple as cartilage.
    A tile's own glass is not known: glass dimmer than `IO` unmixes as a little of each dye
    (about 0.08 hematoxylin for glass at 228), brighter glass as a little less.
    """

    def __init__(self, p: float = 1.0, seed: int | None = None):
        super().__init__()
        self.p = p
        self.rng = np.random.default_rng(seed)
        stains = TEXTBOOK_STAINS.matrix().T.astype(np.float64)  # (2, 3): H, E
        residual = np.cross(stains[0], stains[1])
        self.residual = residual / np.linalg.norm(residual)
        self.unmix = np.linalg.inv(np.vstack([stains, self.residual]))  # OD @ unmix: dyes

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if self.rng.random() >= self.p:
            return {"domain": None}
        return {"domain": sample_domain(self.rng)}

    def transform(self, inpt: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        domain = params["domain"]
        if domain is None:
            return inpt
        dyes = np.asarray(domain.stain_vectors[:2]) * np.asarray(domain.strengths[:2])[:, None]
        transform = torch.tensor(self.unmix @ np.vstack([dyes, self.residual]), dtype=torch.float32)
        od = -torch.log((_to_unit(inpt) * 255).clamp(min=1.0) / IO)
        od = torch.einsum("...chw,cd->...dhw", od, transform)
        glass = torch.tensor(domain.background, dtype=torch.float32).view(3, 1, 1)
        return _like(glass * torch.exp(-od) / 255.0, inpt)


def training_transform(scale_jitter: float, restain: RandomStainDomain | None) -> v2.Compose:
    """The random transforms of one (3, S, S) uint8 training tile, in order: a symmetry of
    the square, a zoom by up to `scale_jitter` (0: none), and `restain` (None: none). Each call
    draws afresh."""
    steps = [random_symmetry()]
    if scale_jitter > 0:
        steps.append(RandomZoom(scale_jitter))
    if restain is not None:
        steps.append(restain)
    return v2.Compose(steps)
