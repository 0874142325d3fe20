"""`classify`: end-to-end tiles per second of `classify` on a slide against the bare forward
pass of the same model on as many tensors, in the same run; peak memory; TIAToolbox's
PatchPredictor on the same tiles where a Python with TIAToolbox is given.

Peak memory is that of this process and of its largest child, so the command runs this
benchmark alone in its own process (see `table.FRESH_PROCESS`).
"""

from __future__ import annotations

import csv
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import MPP, ossiclass_command
from ossiclass.classify import Running, classify
from ossiclass.predict import Predictor
from ossiclass.preprocess.tiling import TileBox, read_tile
from ossiclass.scale import Scale
from ossiclass.slides import open_slide
from ossiclass.sources import SlideSource

TIATOOLBOX_SCRIPT = Path(__file__).parents[1] / "tiatoolbox_patch_predictor.py"


def run(
    *,
    model: str | Path,
    slide: str | Path | None,
    size: int,
    batch_size: int,
    accelerator: str,
    workers: int | None,
    precisions: list[str],
    tiatoolbox_python: str | None,
    tiatoolbox_tiles: int,
) -> dict:
    """Classify `slide` (default: a synthetic `size` x `size` px growth plate of seed 5) with
    `model` at each of `precisions`, then time the bare forward pass over as many batches;
    with `tiatoolbox_python`, time PatchPredictor on the first `tiatoolbox_tiles` tiles."""
    device = "cuda" if accelerator == "gpu" else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = Path(slide) if slide else root / "growth_plate.tif"
        if not slide:  # made in another process: its memory is not counted below
            subprocess.run(ossiclass_command("synth", "slide", path, "--width", size, "--height",
                                             size, "--seed", 5, "--workers", 2, "--quiet"),
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        labels, runs = {}, {}
        for precision in precisions:
            running = Running(
                batch_size=batch_size, workers=workers, accelerator=accelerator, precision=precision
            )
            start = time.perf_counter()
            summary = classify(path, model, root / precision, running=running, progress=False)
            seconds = time.perf_counter() - start
            tiles = summary["tiles"]["classified"]
            with open(root / precision / "tiles.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
            labels[precision] = [row["label"] for row in rows]
            chunks = -(-tiles // batch_size)
            predictor = Predictor(model, device, precision)
            bare = _bare_forward(predictor, device, batch_size, chunks)
            runs[precision] = {
                "reading_workers": running.loader_workers(
                    SlideSource(path, Scale(MPP, "given"), [], None), device, chunks
                ),
                "tiles": tiles,
                "seconds": seconds,
                "tiles_per_s": tiles / seconds,
                "bare_forward_tiles_per_s": bare,
                "ratio": tiles / seconds / bare,
            }
        same = None
        if len(labels) == 2:
            same = float(np.mean([a == b for a, b in zip(*labels.values(), strict=True)]))
        peak_mb = {
            "this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
        tiatoolbox = None
        if tiatoolbox_python:
            count = min(len(rows), tiatoolbox_tiles)
            size = predictor.preprocessing.input_px
            tiatoolbox = _tiatoolbox(tiatoolbox_python, path, rows[:count], size, batch_size,
                                     root / "tiles.npy")  # fmt: skip
            tiatoolbox["ratios"] = {
                precision: figures["tiles_per_s"] / tiatoolbox["tiles_per_s"]
                for precision, figures in runs.items()
            }
    return {
        "what": "tiles per second of classify end to end and of the bare forward pass, peak "
        "resident memory (MB); TIAToolbox's PatchPredictor tiles per second on the same tiles",
        "slide": path.name,
        "precisions": runs,
        "labels_agree": same,
        "peak_rss_mb": peak_mb,
        "tiatoolbox": tiatoolbox,
    }


def _wait(device: str) -> None:
    """Wait for the GPU's queued work, where there is a GPU, before reading a clock."""
    if device == "cuda":
        torch.cuda.synchronize()


def _bare_forward(predictor: Predictor, device: str, batch_size: int, chunks: int) -> float:
    """Tiles per second of `chunks` forward passes over one random uint8 batch, after a warm-up."""
    batch = torch.randint(0, 256, (batch_size, 3, *(predictor.preprocessing.input_px,) * 2),
                          dtype=torch.uint8, device=device)  # fmt: skip
    with torch.inference_mode():
        predictor.network(batch)  # warm-up
        _wait(device)
        start = time.perf_counter()
        for _ in range(chunks):
            predictor.network(batch)
        _wait(device)
        seconds = time.perf_counter() - start
    return chunks * batch_size / seconds


def _tiatoolbox(
    python: str, slide: Path, rows: list[dict], tile_px: int, batch_size: int, stack: Path
) -> dict:
    """PatchPredictor on the tiles of `rows` (tiles.csv rows) read from `slide` as `tile_px`
    tiles, in the side environment's `python`: its line of output and its tiles per second."""
    with open_slide(slide) as handle:
        boxes = [TileBox(*(int(row[k]) for k in ("minx", "miny", "width", "height")), 1.0)
                 for row in rows]  # fmt: skip
        np.save(stack, np.stack([read_tile(handle, box, tile_px) for box in boxes]))
    printed = subprocess.run(
        [python, str(TIATOOLBOX_SCRIPT), "--tiles", str(stack), "--batch-size", str(batch_size)],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    # The script runs in another environment and prints one line: "...: N tiles/s".
    rate = float(printed.split(":")[-1].split()[0])
    return {"line": printed, "tiles": len(rows), "tiles_per_s": rate}


def report(figures: dict) -> str:
    """The figures of `run` as lines of text."""
    lines = [
        f"classify {precision}, {one['reading_workers']} reading workers: {one['tiles']} tiles "
        f"of {figures['slide']} in {one['seconds']:.1f} s end to end (tissue detection, stain "
        "estimate, reading, white balance, normalising, classifying, writing): "
        f"{one['tiles_per_s']:.0f} tiles/s; bare forward pass "
        f"{one['bare_forward_tiles_per_s']:.0f} tiles/s; ratio {one['ratio']:.2f}"
        for precision, one in figures["precisions"].items()
    ]
    if figures["labels_agree"] is not None:
        lines.append(f"bf16 labels agree with fp32 on {figures['labels_agree']:.4f} of the tiles")
    peak = figures["peak_rss_mb"]
    lines.append(f"peak RSS: {peak['this_process']:.0f} MB (classify and the forward pass, this "
                 f"process), {peak['largest_child']:.0f} MB (largest child process: slide "
                 "generator, reading worker, or the one `import torch` starts)")  # fmt: skip
    tiatoolbox = figures["tiatoolbox"]
    if tiatoolbox is None:
        lines.append("TIAToolbox: no --tiatoolbox-python given, no PatchPredictor comparison")
        return "\n".join(lines)
    lines.append(f"{tiatoolbox['line']} (the first {tiatoolbox['tiles']} of the same tiles, in "
                 "memory; same resnet18)")  # fmt: skip
    lines += [
        f"ossiclass classify {precision}, end to end from the slide: {ratio:.2f}x TIAToolbox's "
        "tiles/s"
        for precision, ratio in tiatoolbox["ratios"].items()
    ]
    return "\n".join(lines)
