"""`scales`: the same tissue scanned at 0.25 and at 0.5 µm/px, classified by a trained model:
how far apart each tile's probabilities and labels come out, from `classify` and `predict`,
with the scale read from the TIFF tags.

One synthetic slide per layout is painted at 0.25 µm/px (seeds `--seed`, +1, +2; labs and
seeds the default model never saw) and box-averaged to 0.5 µm/px, the way a scanner's lower
magnification sees the same glass; both are written as tiled TIFFs with their µm/px in the
resolution tags. `classify` runs on both (fp32); tiles pair up by their place in µm. `predict`
runs on the slide's centre tile cut from each scan.
"""

from __future__ import annotations

import csv
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from benchmarks.common import ossiclass_command
from ossiclass.bundle import load_bundle
from ossiclass.classify import Running, Tiling, classify
from ossiclass.synth.layouts import LAYOUTS
from ossiclass.synth.slides import SlideSettings, write_slide

FINE, COARSE = 0.25, 0.5
"""µm per pixel of the two scans."""


def _scans(root: Path, layout: str, seed: int, size: int, workers: int) -> dict[float, Path]:
    """The slide painted at FINE µm/px (size x size px; the generator's pyramidal TIFF) and its
    level 0 box-averaged to COARSE, a tiled TIFF with its µm/px in the tags."""
    fine = write_slide(root / f"{layout}-{seed}-fine.tif",
                       SlideSettings(layout, size, size, FINE, seed), workers=workers,
                       progress=False)  # fmt: skip
    level0 = Image.fromarray(tifffile.imread(fine, level=0))
    coarse = root / f"{layout}-{seed}-coarse.tif"
    tifffile.imwrite(
        coarse, np.asarray(level0.resize((size // 2, size // 2), Image.Resampling.BOX)),
        photometric="rgb", tile=(256, 256), compression="zlib",
        resolution=(1e4 / COARSE, 1e4 / COARSE), resolutionunit="CENTIMETER",
    )  # fmt: skip
    return {FINE: Path(fine), COARSE: coarse}


def _tiles(out: Path, classes: list[str]) -> dict[tuple[int, int], tuple[str, np.ndarray]]:
    """classify's tiles by their top-left corner in µm: (label, probabilities)."""
    mpp = json.loads((out / "summary.json").read_text())["input_mpp"]
    with open(out / "tiles.csv", newline="") as handle:
        return {
            (round(int(r["minx"]) * mpp), round(int(r["miny"]) * mpp)): (
                r["label"], np.array([float(r[f"prob_{c}"]) for c in classes])
            )
            for r in csv.DictReader(handle)
        }  # fmt: skip


def _predicted(path: Path, model: Path) -> np.ndarray:
    done = subprocess.run(
        ossiclass_command("predict", path, "--model", model, "--precision", "fp32", "--json"),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return np.array(list(json.loads(done.stdout)["probabilities"].values()))


def run(*, model: str | Path, size: int, seed: int, workers: int) -> dict:
    """Per slide: tiles paired, the largest and mean per-tile probability difference, label
    agreement, the difference of the mean probabilities, and predict's on the centre tile."""
    model = Path(model)
    settings = load_bundle(model)[1]
    classes = [c.name for c in settings.classes]
    tile_um = settings.preprocessing.input_px * settings.preprocessing.model_mpp
    slides = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for offset, layout in enumerate(LAYOUTS):
            scans = _scans(root, layout, seed + offset, size, workers)
            found = {}
            for mpp, path in scans.items():
                out = root / f"{path.stem}-out"
                classify(path, model, out, Tiling(), Running(workers=workers, precision="fp32"),
                         progress=False)  # fmt: skip
                found[mpp] = _tiles(out, classes)
            boxes = sorted(found[FINE].keys() & found[COARSE].keys())
            fine = np.stack([found[FINE][b][1] for b in boxes])
            coarse = np.stack([found[COARSE][b][1] for b in boxes])
            same = np.mean([found[FINE][b][0] == found[COARSE][b][0] for b in boxes])
            difference = np.abs(fine - coarse).max(axis=1)
            centre = []
            for mpp, path in scans.items():
                side = round(tile_um / mpp)
                image = tifffile.imread(path, level=0)
                top = (image.shape[0] - side) // 2
                crop = root / f"centre-{mpp:g}.tif"
                tifffile.imwrite(crop, image[top : top + side, top : top + side],
                                 photometric="rgb", resolution=(1e4 / mpp, 1e4 / mpp),
                                 resolutionunit="CENTIMETER")  # fmt: skip
                centre.append(_predicted(crop, model))
            slides.append({
                "layout": layout, "seed": seed + offset, "tiles": len(boxes),
                "only_in_one": len(found[FINE].keys() ^ found[COARSE].keys()),
                "max_tile_difference": float(difference.max()),
                "mean_tile_difference": float(difference.mean()),
                "tiles_within_0.02": float(np.mean(difference < 0.02)),
                "labels_alike": float(same),
                "mean_probability_difference": float(np.abs(fine.mean(0) - coarse.mean(0)).max()),
                "predict_difference": float(np.abs(centre[0] - centre[1]).max()),
            })  # fmt: skip
    return {
        "what": "one tissue scanned at 0.25 and 0.5 µm/px: how far each tile's answers differ",
        "model": str(model),
        "size_px": size,
        "slides": slides,
    }


def report(figures: dict) -> str:
    """A line per slide."""
    lines = [
        f"model {figures['model']}; slides {figures['size_px']} px at {FINE} µm/px and "
        f"box-averaged to {COARSE}; differences of a tile's probabilities (fp32)"
    ]
    for s in figures["slides"]:
        lines.append(
            f"  {s['layout']} (seed {s['seed']}): {s['tiles']} tiles paired "
            f"({s['only_in_one']} in one scan only); per tile max {s['max_tile_difference']:.4f}, "
            f"mean {s['mean_tile_difference']:.4f}, {s['tiles_within_0.02']:.1%} within 0.02; "
            f"labels alike {s['labels_alike']:.1%}; mean probabilities "
            f"{s['mean_probability_difference']:.4f}; predict on the centre tile "
            f"{s['predict_difference']:.4f}"
        )
    return "\n".join(lines)
