"""Stain augmentation for training: torchvision-v2-compatible callables on (..., 3, H, W) tensors.

`HEDJitter` perturbs hematoxylin, eosin and DAB concentrations (Tellez et al. 2018);
`RandomStainDomain` re-renders a tile's Macenko-unmixed stains with the vectors and strengths of
a randomly drawn synthetic lab. Both take uint8 or float (0-1) tensors and return the same
dtype; each call draws from the module's own generator, so a seed makes them repeatable.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import hed_from_rgb, rgb_from_hed

from ossiclass.preprocess.stain import TEXTBOOK_STAINS, MacenkoNormalizer, scale_channels
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
    """Re-render a tile as if stained and scanned by a random synthetic lab: unmix with the
    tile's own Macenko estimate, remix with a sampled domain's H and E vectors and strengths,
    under its glass colour. Tiles whose stains cannot be estimated pass through unchanged."""

    def __init__(self, p: float = 1.0, seed: int | None = None):
        super().__init__()
        self.p = p
        self.rng = np.random.default_rng(seed)
        self.unmixer = MacenkoNormalizer(TEXTBOOK_STAINS)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.rng.random() >= self.p:
            return image
        hwc = (_to_unit(image) * 255).round().to(torch.uint8).movedim(-3, -1).numpy()
        stains = self.unmixer.estimate(hwc)
        if stains is None:
            return image
        domain = sample_domain(self.rng)
        vectors = np.asarray(domain.stain_vectors[:2], dtype=np.float32).T  # (3, 2): H, E
        strengths = np.asarray(domain.strengths[:2], dtype=np.float32)
        mixing = (vectors * strengths) @ np.linalg.pinv(stains.matrix())
        out = self.unmixer.apply(hwc, mixing.astype(np.float32))
        # The lab's glass: white, or tinted as in photographs through a microscope.
        glass = np.asarray(domain.background, dtype=np.float32) / np.float32(self.unmixer.io)
        out = scale_channels(out, glass)
        return _like(torch.from_numpy(out).movedim(-1, -3).float() / 255.0, image)
