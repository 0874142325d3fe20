"""`finetune`: a lab's own slides, all from the command line as a user would do it. QuPath-style
annotations drawn from the label masks of one slide per layout in a lab the model never saw,
tiles cut from them, the model fine-tuned from its bundle and, as the baseline, trained from
scratch on the same tiles (the same recipe at the default training's learning rate), then
another slide per layout of that lab classified: agreement with its ground truth for 1, 3 and
10 annotated regions per class.

Every step is an `ossiclass` command (`synth slide --lab`, `synth annotations`, `annotations`,
`train --config configs/finetune.yaml`, `classify`); with `--keep DIR` the slides, tiles and
models stay there and a rerun skips what exists.
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from pathlib import Path

from benchmarks.common import MPP, ossiclass_command, seconds_of
from ossiclass.bundle import load_bundle
from ossiclass.evaluate import slide_agreement
from ossiclass.synth.layouts import LAYOUTS

STRIDE_PX = 64
"""Tiles cut from the annotations every half tile (model pixels): more of them from small
regions, as docs/annotations.md suggests."""
SCRATCH_LR = 0.003
"""From scratch, the default training's learning rate (fine-tuning's 1e-4 would barely move a
random network); everything else as fine-tuning."""
TRAIN_SEED, TEST_SEED = 301, 401
"""Slide seeds: layout i's annotated slide is TRAIN_SEED + i, its test slide TEST_SEED + i."""


def _ossiclass(*arguments: object) -> float:
    """Run an `ossiclass` command to its end (a failure raises, with its output); seconds."""
    return seconds_of(ossiclass_command(*arguments))


def _slides(root: Path, seed: int, lab: int, size: int) -> list[Path]:
    """One slide per layout of lab `lab`, seeds seed, seed + 1, ...; made where missing."""
    paths = []
    for offset, layout in enumerate(LAYOUTS):
        path = root / f"{layout}-{seed + offset}.tif"
        if not path.exists():
            _ossiclass(
                "synth", "slide", path, "--layout", layout, "--width", size, "--height", size,
                "--mpp", MPP, "--seed", seed + offset, "--lab", lab, "--quiet",
            )  # fmt: skip
        paths.append(path)
    return paths


def _tiles(root: Path, slides: list[Path], regions: int, model: Path) -> Path:
    """Annotations of `regions` regions per class on each slide, and the tiles cut from them."""
    tiles = root / f"tiles-{regions}"
    if not (tiles / "manifest.csv").exists():
        geojsons = []
        for slide in slides:
            geojson = root / f"{slide.stem}-{regions}.geojson"
            _ossiclass("synth", "annotations", slide, "--regions", regions, "--out", geojson)
            geojsons.append(geojson)
        _ossiclass("annotations", *slides, "--geojson", *geojsons, "--out", tiles,
                   "--model", model, "--stride", STRIDE_PX)  # fmt: skip
    return tiles


def _train(run: Path, tiles: Path, model: Path, tuned: bool) -> tuple[Path, float]:
    """Fine-tune `model` on `tiles`, or train from scratch with its input size: the bundle
    and the seconds training took (0 where the bundle was already there)."""
    bundle = run / "model.pt"
    if bundle.exists():
        return bundle, 0.0
    start = ["--model.init_bundle", model] if tuned else [
        "--model.init_bundle", "null", "--data.input_px", load_bundle(model)[1].input_px,
        "--model.lr", SCRATCH_LR,
    ]  # fmt: skip
    seconds = _ossiclass(
        "train", "--config", "configs/finetune.yaml", *start, "--data.train", tiles,
        "--trainer.default_root_dir", run, "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
    )  # fmt: skip
    return bundle, seconds


def _agreement(root: Path, model: Path, slides: list[Path]) -> dict[str, float]:
    """Agreement of `model` with the ground truth of each slide (tiles >= 75% one class)."""
    out = root / "classified"
    tables = [out / slide.stem / "tiles.csv" for slide in slides]
    if not all(table.exists() for table in tables):
        _ossiclass("classify", *slides, "--model", model, "--out", out, "--quiet")
    result = {}
    for slide, layout, table in zip(slides, LAYOUTS, tables, strict=True):
        mask = slide.with_suffix(".labels.png")
        result[layout] = slide_agreement(table, mask)["pure_agreement"]
    return result


def run(*, model: str | Path, lab: int, regions: list[int], size: int, keep: str | None) -> dict:
    """The learning curve: for each count of regions per class, agreement on the lab's test
    slides of the fine-tuned and of the from-scratch model, and training seconds."""
    model = Path(model)
    points = []
    with nullcontext(keep) if keep else tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        train_slides = _slides(root / "slides", TRAIN_SEED, lab, size)
        test_slides = _slides(root / "slides", TEST_SEED, lab, size)
        before = _agreement(root / "before", model, test_slides)
        for count in regions:
            tiles = _tiles(root / "annotations", train_slides, count, model)
            with open(tiles / "manifest.csv") as handle:
                tile_count = sum(1 for _ in handle) - 1
            point = {"regions_per_class": count, "tiles": tile_count}
            for name, tuned in (("fine_tuned", True), ("scratch", False)):
                run_dir = root / f"{name}-{count}"
                bundle, seconds = _train(run_dir, tiles, model, tuned)
                point[name] = _agreement(run_dir, bundle, test_slides)
                point[f"{name}_train_seconds"] = round(seconds, 1)
            points.append(point)
    return {
        "what": "agreement with the ground truth (tiles >= 75% one class) of another slide per "
        "layout of the lab, after tuning on annotations of one slide per layout",
        "model": str(model),
        "lab": lab,
        "size_px": size,
        "before": before,
        "points": points,
    }


def report(figures: dict) -> str:
    """A table: regions per class, tiles, then agreement per layout, fine-tuned | scratch."""
    layouts = list(figures["before"])
    lines = [
        f"fine-tuning on lab {figures['lab']} ({figures['size_px']} px slides at {MPP} µm/px), "
        f"from {figures['model']}",
        f"{'regions':>8} {'tiles':>6}  "
        + "  ".join(f"{name[:14]:>17}" for name in layouts)
        + "   train s (tuned | scratch)",
        f"{'none':>8} {'':>6}  "
        + "  ".join(f"{figures['before'][name]:>17.3f}" for name in layouts),
    ]
    for point in figures["points"]:
        cells = "  ".join(
            f"{point['fine_tuned'][name]:>8.3f} | {point['scratch'][name]:<6.3f}"
            for name in layouts
        )
        lines.append(
            f"{point['regions_per_class']:>8} {point['tiles']:>6}  {cells}   "
            f"{point['fine_tuned_train_seconds']:.0f} | {point['scratch_train_seconds']:.0f}"
        )
    return "\n".join(lines)
