"""TIAToolbox's PatchPredictor on CPU over an (N, H, W, 3) uint8 .npy of tiles: tiles per second.

For comparing our tile throughput with TIAToolbox's on the same tiles. A torchvision resnet18 with
a 6-class head (random weights, or `--state-dict`) is wrapped as a TIAToolbox `ModelABC` the way
TIAToolbox's own patch classifiers are (`vanilla.CNNModel` with `predefined_preproc_func`):
per-tile `preproc` (ToTensor + Normalize, HWC float out) in TIAToolbox's DataLoader, and
`infer_batch` casting to float32, permuting to NCHW and running under `torch.inference_mode`.
Only `PatchPredictor.run(..., patch_mode=True)` is timed, after a warm-up run on a few tiles.

TIAToolbox 2.1.3 pins torch<2.13, so it runs in a side environment that reuses torch, torchvision,
numpy etc. from the project's .venv through a .pth file (nothing is installed into .venv). From
the repository root:

    python3.11 -m venv /tmp/tia-venv
    echo "$PWD/.venv/lib/python3.11/site-packages" \
        > /tmp/tia-venv/lib/python3.11/site-packages/main-venv.pth
    /tmp/tia-venv/bin/pip install --no-deps tiatoolbox==2.1.3 timm==1.0.27 \
        huggingface_hub==1.23.0 httpx==0.28.1 httpcore==1.0.9 h11==0.16.0 anyio==4.16.0 \
        certifi opencv-python-headless==4.14.0.94 umap-learn==0.5.11 pynndescent==0.7.0 \
        numba==0.65.1 llvmlite==0.47.0 pandas==3.0.2 shapely==2.1.2 dask==2026.7.0 \
        partd==1.4.2 locket==1.0.0 toolz==1.2.0 click==8.4.1 importlib_metadata==10.2.0 \
        zipp==4.1.2 lazy-importer==0.1.0 psutil==7.2.2 requests==2.34.1 urllib3==2.8.0 \
        charset-normalizer==3.5.3 openslide-python==1.4.3 openslide-bin==4.0.1.1 \
        simpleitk==2.5.4 defusedxml==0.7.1 universal_pathlib==0.3.10 pathlib_abc==0.5.2 \
        transformers==5.14.0 regex tokenizers==0.22.2 safetensors==0.8.0 typer==0.29.2 \
        rich==15.0.0 shellingham==1.5.4 markdown-it-py==4.3.0 mdurl==0.1.2 annotated-doc==0.0.7

    /tmp/tia-venv/bin/python scripts/tiatoolbox_patch_predictor.py --tiles tiles.npy
    python scripts/benchmark.py classify --model M --tiatoolbox-python /tmp/tia-venv/bin/python

(llvmlite must be 0.47 for numba 0.65; pip's newer choice fails on import.)
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
import torchvision
from tiatoolbox.models import IOPatchPredictorConfig, PatchPredictor
from tiatoolbox.models.models_abc import ModelABC
from torchvision.transforms import functional as TF

# As ossiclass.preprocessing.HE_MEAN / HE_STD, so a state dict trained by us predicts sensibly.
MEAN = [0.78, 0.62, 0.78]
STD = [0.16, 0.20, 0.14]
WARMUP_TILES = 8


class Resnet18(ModelABC):
    """torchvision resnet18 with a `num_classes` head, as a TIAToolbox model (softmax out)."""

    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.network = torchvision.models.resnet18(weights=None, num_classes=num_classes)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(imgs), dim=-1)

    @staticmethod
    def preproc(image: np.ndarray) -> torch.Tensor:
        """One HWC uint8 tile -> HWC float32, scaled and standardised (runs per tile)."""
        return TF.normalize(TF.to_tensor(image), MEAN, STD).permute(1, 2, 0)

    @staticmethod
    def postproc(image: np.ndarray) -> np.ndarray:
        return np.argmax(image, axis=-1)

    @staticmethod
    def infer_batch(model: torch.nn.Module, batch_data: torch.Tensor, *, device: str) -> np.ndarray:
        """As tiatoolbox.models.architecture.vanilla._infer_batch."""
        imgs = batch_data.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
        model.eval()
        with torch.inference_mode():
            return model(imgs).cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", required=True, help="(N, H, W, 3) uint8 .npy")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--state-dict", help="a plain torchvision resnet18 state dict (6 classes)")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # tiatoolbox logs to root: its "no GPU" note

    tiles = np.load(args.tiles)
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
        parser.error(f"--tiles must hold (N, H, W, 3) uint8, not {tiles.shape} {tiles.dtype}")
    model = Resnet18()
    if args.state_dict:
        model.network.load_state_dict(
            torch.load(args.state_dict, map_location="cpu", weights_only=True)
        )
    ioconfig = IOPatchPredictorConfig(
        input_resolutions=[{"units": "baseline", "resolution": 1.0}],
        patch_input_shape=tiles.shape[1:3],
    )
    predictor = PatchPredictor(
        model=model,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device="cpu",
        verbose=False,  # no progress bar
    )

    def run(images: np.ndarray) -> dict:
        return predictor.run(
            images, patch_mode=True, ioconfig=ioconfig, output_type="dict", device="cpu"
        )

    run(tiles[:WARMUP_TILES])
    start = time.perf_counter()
    output = run(tiles)
    seconds = time.perf_counter() - start
    assert len(output["predictions"]) == len(tiles)
    print(
        f"tiatoolbox PatchPredictor: {len(tiles)} tiles in {seconds:.1f} s: "
        f"{len(tiles) / seconds:.0f} tiles/s"
    )


if __name__ == "__main__":
    main()
