"""Classifying images with a model bundle: the bundle's `Preprocessing`, the forward pass
(batch norm folded into the convolutions, bf16 where the hardware has it) and test-time
augmentation.

`Predictor` is what every use shares: `ossiclass predict` on single images, `classify` on tile
folders and slides, and the public `predict_image`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ossiclass.bundle import load_bundle
from ossiclass.classes import TissueClass
from ossiclass.errors import BadInputError
from ossiclass.imageio import read_image
from ossiclass.network import cell_head, last_feature_maps
from ossiclass.preprocess.tiling import image_tiles
from ossiclass.preprocessing import Preprocessing, Standardize
from ossiclass.scale import resolve_mpp
from ossiclass.slides import image_mpp

PRECISIONS = ("auto", "fp32", "bf16")
BATCH = 64
"""Tiles of one image through the network at a time (`Predictor.probabilities`)."""


def bf16_available(device: torch.device) -> bool:
    """Whether bf16 matrix maths is fast here: AVX-512 BF16 or AMX on a CPU, bf16 on a GPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # torch has no public query for the CPU's bf16 instructions; absent, say no.
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


class InferenceNetwork(nn.Module):
    """A trained network for inference: (N, 3, S, S) uint8 tiles -> (N, C) logits, C classes.

    Batch norm is folded into the convolutions (a frozen graph), inputs are standardised as in
    training (`standardize`, by default the H&E statistics) and laid out channels-last; `bf16`
    runs the network under bf16 autocast.
    """

    def __init__(
        self, network: nn.Module, standardize: Standardize | None = None, bf16: bool = False,
        temperature: float = 1.0,
    ):  # fmt: skip
        super().__init__()
        self.temperature = temperature
        from torch.fx.experimental.optimization import fuse

        self.cell_head = cell_head(network)  # not in the traced forward: kept apart
        self.network = fuse(network.eval()).to(memory_format=torch.channels_last)
        self.bf16 = bf16
        self.standardize = standardize or Standardize()

    def forward(self, tiles: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of (N, 3, S, S) uint8 tiles; `gains` (3,): a white balance applied in the
        standardisation (see `Standardize`)."""
        x = self.standardize(tiles, gains)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.network(x).float()

    def probabilities(self, tiles: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C) class probabilities, calibrated with the softmax temperature."""
        return torch.softmax(self(tiles, gains) / self.temperature, dim=1)

    def cell_probabilities(
        self, tiles: torch.Tensor, gains: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`probabilities` and, from the cell head, (N, C, h, w) class probabilities of each
        cell of the last feature map (32 input pixels a side); the network must have one."""
        with last_feature_maps(self.network) as kept:
            tile = self.probabilities(tiles, gains)
        cells = kept[0].float().permute(0, 2, 3, 1)  # (N, h, w, features)
        return tile, torch.softmax(self.cell_head(cells), dim=-1).permute(0, 3, 1, 2)


def dihedral_views(tiles: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and quarter turns of a (N, 3, S, S) batch, the identity first."""
    turns = [torch.rot90(tiles, k, dims=(-2, -1)) for k in range(4)]
    return turns + [turn.flip(-1) for turn in turns]


class Predictor:
    """A model bundle ready to classify tiles.

    model : path of a bundle (`model.pt`); its class list, preprocessing and temperature come
        with it (`classes`: the class list, in output order).
    device : "cpu", "cuda", ...
    precision : "fp32", "bf16", or "auto" (bf16 where the hardware runs it fast).
    """

    def __init__(
        self, model: str | Path, device: str | torch.device = "cpu", precision: str = "auto"
    ):
        if precision not in PRECISIONS:
            raise BadInputError(f"unknown precision {precision!r}; expected {PRECISIONS}")
        network, self.settings = load_bundle(model)
        self.path = Path(model)
        self.device = torch.device(device)
        self.bf16 = precision == "bf16" or (precision == "auto" and bf16_available(self.device))
        self.preprocessing: Preprocessing = self.settings.preprocessing
        self.classes: tuple[TissueClass, ...] = self.settings.classes
        standardize = self.preprocessing.standardize()
        self.network = InferenceNetwork(network, standardize, self.bf16, self.settings.temperature)
        self.network = self.network.to(self.device)

    @property
    def precision(self) -> str:
        """The precision the network runs at: "bf16" or "fp32"."""
        return "bf16" if self.bf16 else "fp32"

    @torch.inference_mode()
    def logits(self, tiles: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) of normalised (N, 3, S, S) uint8 tiles, before the temperature (what
        calibration fits it to), `BATCH` at a time."""
        return torch.cat(
            [
                self.network(batch.to(self.device, non_blocking=True)).cpu()
                for batch in tiles.split(BATCH)
            ]
        )

    @torch.inference_mode()
    def probabilities(self, tiles: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Class probabilities (N, C) of normalised (N, 3, S, S) uint8 tiles, calibrated with
        the bundle's temperature; with `tta`, averaged over the 8 flips and quarter turns. The
        tiles go through `BATCH` at a time."""
        batches = []
        for batch in tiles.split(BATCH):
            batch = batch.to(self.device, non_blocking=True)
            views = dihedral_views(batch) if tta else [batch]
            probabilities = [self.network.probabilities(view) for view in views]
            batches.append(torch.stack(probabilities).mean(0).cpu())
        return torch.cat(batches)


@dataclass(frozen=True)
class ImagePrediction:
    """A single image's answer: its label, confidence, per-class probabilities (in the order
    of `classes`, the model's class list), and how many model tiles it was cut into (1 for a
    tile-sized image)."""

    path: str
    label: str
    confidence: float
    probabilities: tuple[float, ...]
    tiles: int
    classes: tuple[TissueClass, ...]

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable classes, most probable first: [(class name, probability)]."""
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(self.classes[i].name, self.probabilities[i]) for i in order]

    def to_dict(self, top_k: int = 3) -> dict:
        """Plain data for JSON, probabilities rounded to 5 decimals."""
        return {
            "label": self.label,
            "confidence": round(self.confidence, 5),
            "probabilities": {
                c.name: round(p, 5) for c, p in zip(self.classes, self.probabilities, strict=True)
            },
            "top_k": [[c, round(p, 5)] for c, p in self.top(top_k)],
            "tiles": self.tiles,
        }


def predict_array(
    predictor: Predictor, image: np.ndarray, input_mpp: float, tta: bool = False, name: str = ""
) -> ImagePrediction:
    """Classify an (H, W, 3) uint8 image at `input_mpp` µm/px. An image larger than the model's
    field is cut into tiles whose probabilities are averaged."""
    prep = predictor.preprocessing
    tiles = prep.normalize(image_tiles(prep.to_model_scale(image, input_mpp), prep.input_px))
    batch = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
    probabilities = predictor.probabilities(batch, tta=tta).mean(0)
    best = int(probabilities.argmax())
    return ImagePrediction(
        name,
        predictor.classes[best].name,
        float(probabilities[best]),
        tuple(float(p) for p in probabilities),
        len(tiles),
        predictor.classes,
    )


def predict_image(
    image: str | Path | np.ndarray,
    model: str | Path | Predictor,
    input_mpp: float | None = None,
    tta: bool = False,
) -> ImagePrediction:
    """Classify one image (a path, or an (H, W, 3) uint8 array) with a bundle. Its µm/px is
    `input_mpp`, else what the file records, else `scale.DEFAULT_MPP` (see `resolve_mpp`)."""
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    if isinstance(image, np.ndarray):
        return predict_array(predictor, image, resolve_mpp(input_mpp, None).mpp, tta)
    scale = resolve_mpp(input_mpp, image_mpp(image))
    return predict_array(predictor, read_image(image), scale.mpp, tta, name=str(image))


def load_model(model: str | Path, device: str = "cpu", precision: str = "auto") -> Predictor:
    """A `Predictor` for a model bundle (see `Predictor`)."""
    return Predictor(model, device, precision)
