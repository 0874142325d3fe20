"""`tissue`: IoU of the tissue mask with the generator's tissue mask, per slide layout, and the
glass colour found against the generator's."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import MPP
from ossiclass.preprocess.tiling import slide_tissue_mask
from ossiclass.slides import open_slide
from ossiclass.synth.layouts import LAYOUTS
from ossiclass.synth.slides import SlideSettings, slide_domain, write_slide


def run(*, size: int, seed: int, workers: int) -> dict:
    """One `size` x `size` px slide per layout from `seed`, made by `workers` processes."""
    layouts = {}
    with tempfile.TemporaryDirectory() as root:
        for layout in LAYOUTS:
            settings = SlideSettings(layout, size, size, MPP, seed)
            path = write_slide(
                Path(root) / f"{layout}.tif", settings, workers=workers, progress=False
            )
            slide = open_slide(path)
            tissue = slide_tissue_mask(slide)
            mask = tissue.mask
            Image.MAX_IMAGE_PIXELS = None
            truth = Image.open(path.with_suffix(".tissue.png")).resize(
                mask.shape[::-1], Image.Resampling.BOX
            )
            truth = np.asarray(truth) > 127
            layouts[layout] = {
                "iou": float((mask & truth).sum() / (mask | truth).sum()),
                "mask_mpp": float(tissue.mpp),
                "glass": None if tissue.glass is None else _rgb(tissue.glass),
                "generator_glass": _rgb(slide_domain(settings).background),
            }
    return {
        "what": "intersection over union of the tissue mask with the generator's, at the "
        "mask's µm/px; glass colours RGB",
        "size_px": size,
        "seed": seed,
        "layouts": layouts,
    }


def _rgb(colour: np.ndarray) -> list[int]:
    return np.round(colour).astype(int).tolist()


def report(figures: dict) -> str:
    """The figures of `run` as a line per layout."""
    size, seed = figures["size_px"], figures["seed"]
    lines = []
    for layout, mask in figures["layouts"].items():
        found = "none found" if mask["glass"] is None else np.array(mask["glass"])
        lines.append(
            f"tissue mask {layout} {size} x {size} (seed {seed}), at {mask['mask_mpp']:.1f} "
            f"µm/px: IoU {mask['iou']:.3f} with the generator's mask; glass colour {found}, "
            f"generator's {np.array(mask['generator_glass'])}"
        )
    return "\n".join(lines)
