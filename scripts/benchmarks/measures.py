"""`measures`: histomorphometry from `classify` against the truth of synthetic slides of unseen
seeds and labs, one per layout: each class's fraction of tissue, a fracture callus's
composition and a growth plate's zone heights, from the maps of `MAPS` (the tile grid, tiles
every half tile, each also refined), against the same measures of the slide's label mask.

The truth is `histomorphometry.measure_slide` on the label mask at `TRUTH_UM` µm per pixel (a
mode downsample of the 0.5 µm/px mask). With `--keep DIR` the slides and outputs stay there;
the folder the `finemap` benchmark keeps serves too (its classified slides are reused).
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from benchmarks.common import MPP, layout_slides
from ossiclass.bundle import load_bundle
from ossiclass.classify import Running, Tiling, classify
from ossiclass.classmap import read_classmap
from ossiclass.histomorphometry import measure_slide, mode_downsample
from ossiclass.synth.slides import files_beside, mask_classes, read_label_mask

TRUTH_UM = 4.0
"""µm per pixel the label mask is measured at (8 x 8 pixels of 0.5 µm: far finer than a map)."""
MAPS = ((1, False), (2, False), (1, True), (2, True))
"""The maps measured, as (tile over stride, refined): the tile grid, tiles every half tile,
and each with its boundaries refined (`classify --refine`)."""


def _measures(labels: np.ndarray, mpp: float, classes) -> dict[str, float]:
    return {m.name: m.value for m in measure_slide(labels, mpp, classes).measures}


def _truth(path: Path) -> dict[str, float]:
    mask = read_label_mask(files_beside(path).labels)
    factor = round(TRUTH_UM / MPP)
    return _measures(mode_downsample(mask, factor), factor * MPP, mask_classes(path))


def _compared(found: dict[str, float], truth: dict[str, float]) -> dict[str, dict]:
    """Fractions (absolute difference) and heights (relative), where both sides have them."""
    rows = {}
    for name, true in truth.items():
        if name not in found or not (name.endswith("fraction") or "fraction of callus" in name
                                     or name.endswith("height")):  # fmt: skip
            continue
        error = found[name] - true
        relative = error / true if name.endswith("height") else error
        rows[name] = {"truth": round(true, 4), "found": round(found[name], 4),
                      "error": round(relative, 4)}  # fmt: skip
    return rows


def run(*, model: str | Path, size: int, seed: int, workers: int, keep: str | None) -> dict:
    """Every compared measure per slide and stride (see the module's docstring)."""
    tile_px = load_bundle(model)[1].input_px
    running, slides = Running(workers=workers), []
    with nullcontext(keep) if keep else tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        for layout, slide_seed, path in layout_slides(root, seed, size, workers):
            truth, maps = _truth(path), []
            for division, refine in MAPS:
                stride = tile_px // division
                out = root / f"{layout}-{slide_seed}-stride{stride}{'-refined' * refine}"
                if not (out / "classmap.tif").exists():
                    tiling = Tiling(stride_px=stride, refine=refine)
                    classify(path, model, out, tiling, running, progress=False)
                labels, mpp, classes = read_classmap(out / "classmap.tif")
                compared = _compared(_measures(labels, mpp, classes), truth)
                maps.append({"stride_px": stride, "refined": refine, "map_mpp": mpp,
                             "measures": compared})  # fmt: skip
            slides.append({"layout": layout, "seed": slide_seed, "maps": maps})
    return {
        "what": "measures of classify's class maps against those of the label mask: absolute "
        "error of fractions, relative error of heights",
        "model": str(model),
        "size_px": size,
        "truth_um": TRUTH_UM,
        "slides": slides,
    }


def report(figures: dict) -> str:
    """Per slide and stride, each measure: truth, found, error."""
    lines = [f"model {figures['model']}; slides {figures['size_px']} px at {MPP} µm/px; truth "
             f"from the label mask at {figures['truth_um']:g} µm/px"]  # fmt: skip
    for slide in figures["slides"]:
        lines.append(f"  {slide['layout']} (seed {slide['seed']}):")
        for found in slide["maps"]:
            refined = ", refined" if found.get("refined", False) else ""
            lines.append(f"    stride {found['stride_px']} px (map {found['map_mpp']:g} µm/px"
                         f"{refined}):")  # fmt: skip
            for name, row in found["measures"].items():
                unit = "relative" if name.endswith("height") else "absolute"
                lines.append(f"      {name:<40} truth {row['truth']:>9.4f}  found "
                             f"{row['found']:>9.4f}  error {row['error']:+.4f} "
                             f"({unit})")  # fmt: skip
    return "\n".join(lines)
