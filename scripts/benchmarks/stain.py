"""`stain`: Macenko tiles per second, ossiclass per tile and slide-level against torchstain's
backends, and how far our output lies from torchstain's on real H&E.

Its rates depend on the threads this process has, so the command runs it alone in its own
process (see `table.FRESH_PROCESS`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchstain
from skimage.data import immunohistochemistry

from benchmarks import common
from ossiclass.classes import CLASSES
from ossiclass.imageio import read_image
from ossiclass.preprocess.macenko import MacenkoNormalizer
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import make_tile

PEERS = ("torchstain numpy, per tile", "torchstain torch, per tile")


def run(*, tiles: int, tile_px: int, seed: int, real: str | Path) -> dict:
    """Rates on `tiles` synthetic `tile_px` tiles (8 labs of `seed`), against a reference of
    seed + 1; agreement with torchstain on the .jpg tiles in `real` and scikit-image's IHC image."""
    images = _synthetic(tiles, tile_px, seed)
    lab = sample_domains(seed + 1, 1)
    reference = make_tile("woven_bone", 0, seed + 1, lab, 512, common.MPP)[0]
    ours = MacenkoNormalizer.fit(reference)
    one_thread = MacenkoNormalizer.from_dict(ours.to_dict(), threads=1)
    slide_stains = ours.estimate(list(images[:: max(tiles // 16, 1)]))
    numpy_backend = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    numpy_backend.fit(reference)
    torch_backend = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    torch_backend.fit(torch.from_numpy(reference).permute(2, 0, 1))
    chw = [torch.from_numpy(tile).permute(2, 0, 1) for tile in images]
    rates = {
        PEERS[0]: common.rate(
            lambda: [numpy_backend.normalize(t, stains=False) for t in images], tiles
        ),
        PEERS[1]: common.rate(
            lambda: [torch_backend.normalize(t, stains=False) for t in chw], tiles
        ),
        "ossiclass, per tile, 1 thread": common.rate(lambda: one_thread.normalize(images), tiles),
        "ossiclass, per tile": common.rate(lambda: ours.normalize(images), tiles),
        "ossiclass, slide-level": common.rate(lambda: ours.normalize(images, slide_stains), tiles),
    }
    return {
        "what": "Macenko normalisation, tiles per second (best of 3), and the mean absolute "
        "difference from torchstain's output in grey levels",
        "tiles": tiles,
        "tile_px": tile_px,
        "torch_threads": torch.get_num_threads(),
        "tiles_per_s": rates,
        "torchstain_agreement": against_torchstain(Path(real)),
    }


def _synthetic(count: int, tile_px: int, seed: int) -> np.ndarray:
    """`count` tiles cycling through the classes, from 8 labs of `seed`, made in this process."""
    jobs = [(CLASSES[i % len(CLASSES)], i) for i in range(count)]
    return common.tiles(jobs, seed, sample_domains(seed, 8), tile_px, workers=1)


def against_torchstain(folder: Path) -> dict:
    """Mean absolute difference of our Macenko output from torchstain's (numpy backend, same
    reference, same percentiles) on the real H&E .jpg tiles in `folder` and scikit-image's IHC
    image, the first image the reference."""
    images = [read_image(path) for path in sorted(folder.glob("*.jpg"))]
    images.append(immunohistochemistry())
    reference = images[0]
    theirs = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    theirs.fit(reference)
    ours = MacenkoNormalizer.fit(reference)
    differences = [
        float(
            np.abs(
                ours.normalize(image)[0].astype(float) - theirs.normalize(image, stains=False)[0]
            ).mean()
        )
        for image in images
    ]
    return {
        "folder": str(folder),
        "real_tiles": len(images) - 1,
        "mean_mad": float(np.mean(differences)),
        "largest_mad": max(differences),
    }


def report(figures: dict) -> str:
    """The figures of `run` as lines of text, each rate against the faster torchstain."""
    rates = figures["tiles_per_s"]
    fastest_peer = max(rates[peer] for peer in PEERS)
    agreement = figures["torchstain_agreement"]
    return "\n".join(
        [
            f"Macenko on {figures['tiles']} synthetic {figures['tile_px']} x "
            f"{figures['tile_px']} tiles, torch threads {figures['torch_threads']}:",
            *(
                f"  {name}: {value:.0f} tiles/s ({value / fastest_peer:.2f}x torchstain's faster)"
                for name, value in rates.items()
            ),
            f"agreement with torchstain's Macenko on {agreement['real_tiles']} real H&E tiles "
            f"from {agreement['folder']} and scikit-image's IHC image: mean absolute difference "
            f"{agreement['mean_mad']:.2f} grey levels (largest {agreement['largest_mad']:.2f}; "
            "at most 2 required)",
        ]
    )
