"""Stain augmentation for training: torchvision-v2-compatible callables on (..., 3, H, W) tensors.

`HEDJitter` perturbs hematoxylin, eosin and DAB concentrations (Tellez et al. 2018);
`RandomStainDomain` re-renders a tile's hematoxylin and eosin with the vectors and strengths of
a randomly drawn synthetic lab. Both take uint8 or float (0-1) tensors and return the same
dtype; each call draws from the module's own generator, so a seed makes them repeatable.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import hed_from_rgb, rgb_from_hed

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


class HEDJitter(torch.nn.Module):
    """Scale each HED concentration by U(1 - sigma, 1 + sigma) and shift it by
    U(-bias, bias), in scikit-image's `rgb2hed` space."""

    def __init__(self, sigma: float = 0.05, bias: float = 0.05, seed: int | None = None):
        super().__init__()
        self.sigma, self.bias = sigma, bias
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.register_buffer("to_hed", torch.tensor(hed_from_rgb, dtype=torch.float32))
        self.register_buffer("to_rgb", torch.tensor(rgb_from_hed, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        rgb = _to_unit(image).clamp(min=1e-6)
        hed = torch.einsum("...chw,cd->...dhw", torch.log(rgb) / _LOG_ADJUST, self.to_hed)
        shape = (*hed.shape[:-2], 1, 1)  # drawn on the CPU generator: the same on any device
        scale = 1 + (torch.rand(shape, generator=self.generator) * 2 - 1).to(hed) * self.sigma
        shift = (torch.rand(shape, generator=self.generator) * 2 - 1).to(hed) * self.bias
        hed = hed * scale + shift
        rgb = torch.exp(torch.einsum("...dhw,dc->...chw", hed, self.to_rgb) * _LOG_ADJUST)
        return _like(rgb, image)


class RandomStainDomain(torch.nn.Module):
    """Re-render a tile as if stained and scanned by a random synthetic lab: unmix its optical
    density (against glass at `IO`) with the textbook H and E vectors, remix the two dyes with
    a sampled domain's vectors and strengths, under its glass colour.

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

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.rng.random() >= self.p:
            return image
        domain = sample_domain(self.rng)
        dyes = np.asarray(domain.stain_vectors[:2]) * np.asarray(domain.strengths[:2])[:, None]
        transform = torch.tensor(self.unmix @ np.vstack([dyes, self.residual]), dtype=torch.float32)
        od = -torch.log((_to_unit(image) * 255).clamp(min=1.0) / IO)
        od = torch.einsum("...chw,cd->...dhw", od, transform)
        glass = torch.tensor(domain.background, dtype=torch.float32).view(3, 1, 1)
        return _like(glass * torch.exp(-od) / 255.0, image)
