"""`slide`: time and peak memory of writing one synthetic slide, in a fresh process.

Peak memory is that of the largest child process this process has waited for, so the command
runs this benchmark alone in its own process (see `table.FRESH_PROCESS`).
"""

from __future__ import annotations

import resource
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import ossiclass_command, seconds_of
from ossiclass.classes import CLASSES


def run(*, layout: str, size: int, seed: int, workers: int) -> dict:
    """Time `ossiclass synth slide` writing a `size` x `size` px slide of `layout`."""
    with tempfile.TemporaryDirectory() as root:
        out = Path(root) / f"{layout}.tif"
        seconds = seconds_of(
            ossiclass_command("synth", "slide", out, "--layout", layout, "--width", size,
                              "--height", size, "--workers", workers, "--seed", seed, "--quiet")
        )  # fmt: skip
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        Image.MAX_IMAGE_PIXELS = None
        labels = np.asarray(Image.open(out.with_suffix(".labels.png")))
        tiff_mb = out.stat().st_size / 2**20
    fractions = {
        name: float((labels == i).mean()) for i, name in enumerate(CLASSES) if (labels == i).any()
    }
    return {
        "what": "wall seconds, peak resident memory (MB, largest process) and TIFF size (MB) "
        "of writing a synthetic slide; the label mask's class fractions",
        "layout": layout,
        "size_px": size,
        "workers": workers,
        "seed": seed,
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "tiff_mb": tiff_mb,
        "label_fractions": fractions,
        "background": float((labels == 255).mean()),
    }


def report(figures: dict) -> str:
    """The figures of `run` as two lines of text."""
    size = figures["size_px"]
    fractions = {name: round(share, 3) for name, share in figures["label_fractions"].items()}
    return (
        f"slide {figures['layout']} {size} x {size} with --workers {figures['workers']}: "
        f"{figures['seconds']:.0f} s, peak RSS {figures['peak_rss_mb']:.0f} MB (largest "
        f"process), TIFF {figures['tiff_mb']:.0f} MB\n"
        f"  label fractions: {fractions}, background {figures['background']:.3f}"
    )
