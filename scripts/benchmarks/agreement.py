"""`agreement`: tile labels of `classify` against the ground-truth mask of synthetic slides made
with seeds (and so stain domains) that training never saw: one slide per layout."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from benchmarks.common import MPP, layout_slides
from ossiclass.classify import Running, Tiling, classify
from ossiclass.evaluate import slide_agreement


def run(
    *,
    model: str | Path,
    size: int,
    seed: int,
    workers: int,
    keep: str | Path | None,
    white_balance: bool,
) -> dict:
    """Classify one `size` x `size` px slide per layout, seeds `seed`, `seed` + 1, ..., with
    `model`; made afresh unless `keep` (a folder that keeps slides and outputs) holds them."""
    tiling, running = Tiling(white_balance=white_balance), Running(workers=workers)
    slides = []
    with nullcontext(keep) if keep else tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for layout, slide_seed, path in layout_slides(root, seed, size, workers):
            out = root / f"{layout}-{slide_seed}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            classify(path, model, out, tiling, running, progress=False)
            seconds = time.perf_counter() - start
            result = slide_agreement(out / "tiles.csv", path.with_suffix(".labels.png"))
            (out / "agreement.json").write_text(json.dumps(result, indent=2))
            slides.append({"layout": layout, "seed": slide_seed, **result, "seconds": seconds})
    return {
        "what": "share of tiles whose classify label is the ground truth's: of those one "
        "class covers >= 75% of (pure), and of all tissue tiles; seconds of classify",
        "model": str(model),
        "size_px": size,
        "white_balance": white_balance,
        "slides": slides,
    }


def report(figures: dict) -> str:
    """The figures of `run` as two lines per slide under a heading line."""
    size = figures["size_px"]
    balance = "white-balanced against their glass" if figures["white_balance"] else "as scanned"
    lines = [f"model {figures['model']}; slides {size} x {size} at {MPP} µm/px, {balance}"]
    for slide in figures["slides"]:
        lines += [
            f"  {slide['layout']} (seed {slide['seed']}): {slide['pure_agreement']:.3f} of "
            f"{slide['pure_tiles']} tiles whose class covers >= 75% of the tile; "
            f"{slide['all_agreement']:.3f} of all {slide['tissue_tiles']} tissue tiles "
            f"(classified in {slide['seconds']:.0f} s)",
            f"    confusion of the >= 75% tiles (rows true): {slide['confusion']}",
        ]
    return "\n".join(lines)
