"""The whole of ossiclass end to end on synthetic data: what `make demo` runs.

    python scripts/demo.py [--out outputs/demo]

Makes a training set (32 labs), a calibration set and a test set (labs never seen in training),
trains with configs/default.yaml, calibrates and evaluates on the unseen labs, fits the cell head
(`ossiclass fit-cells`), makes one slide of each layout (seeds and labs not used in training),
classifies them with refined maps and an HTML report each, and prints a short summary. Every
step is skipped when its output exists, so a demo that was interrupted picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ossiclass.synth.layouts import LAYOUTS

SLIDE_SEED = 101  # layouts get seeds 101, 102, 103: slides and labs training never saw
SLIDE_PX = 8192


def run(*command: str) -> None:
    """Run a step as a user would, stopping the demo if it fails; says how long it took."""
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def ossiclass(*arguments: str) -> None:
    run(sys.executable, "-m", "ossiclass", *arguments)


def has_cell_head(model: Path) -> bool:
    from ossiclass.bundle import load_bundle
    from ossiclass.network import cell_head

    return cell_head(load_bundle(model)[0]) is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo", help="where everything goes")
    out = Path(parser.parse_args().out)
    started = time.time()

    tile_sets = {
        "tiles": ("0", "600", "32"),
        "calibration": ("2", "50", "8"),
        "test": ("1", "200", "8"),
    }
    for name, (seed, per_class, domains) in tile_sets.items():
        ossiclass("synth", "tiles", str(out / name), "--per-class", per_class, "--seed", seed,
                  "--domains", domains, "--workers", "2", "--quiet")  # fmt: skip

    run_dir = out / "train" / "lightning_logs" / "demo"
    model = run_dir / "model.pt"
    new_model = not model.exists() or not has_cell_head(model)  # older maps are redone
    if not model.exists():
        last = run_dir / "checkpoints" / "last.ckpt"
        resume = ["--ckpt_path", str(last)] if last.exists() else []
        run(sys.executable, "scripts/train.py", "--config", "configs/default.yaml",
            "--data.train", str(out / "tiles"), "--data.test", str(out / "test"),
            "--trainer.default_root_dir", str(out / "train"),
            "--trainer.logger.init_args.version", "demo", *resume)  # fmt: skip
        ossiclass("evaluate", "--model", str(model), "--data", str(out / "test"),
                  "--calibrate", str(out / "calibration"), "--out", str(out / "evaluate"),
                  "--quiet")  # fmt: skip
    if not has_cell_head(model):  # fitted to the trained network, as the temperature is
        ossiclass("fit-cells", "--model", str(model), "--data", str(out / "tiles"), "--test",
                  str(out / "test"), "--quiet")  # fmt: skip

    slides = []
    for offset, layout in enumerate(LAYOUTS):
        slide = out / "slides" / f"{layout}.tif"
        if not slide.exists():
            ossiclass("synth", "slide", str(slide), "--layout", layout, "--seed",
                      str(SLIDE_SEED + offset), "--width", str(SLIDE_PX), "--height",
                      str(SLIDE_PX), "--workers", "2", "--quiet")  # fmt: skip
        slides.append(str(slide))
    if new_model:
        shutil.rmtree(out / "classified", ignore_errors=True)
    ossiclass("classify", *slides, "--model", str(model), "--out", str(out / "classified"),
              "--refine", "--report", "--resume", "--quiet")  # fmt: skip

    from ossiclass.evaluate import slide_agreement

    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    print(f"\nossiclass demo finished in {time.time() - started:.0f} s; everything is in {out}/")
    print(
        f"  model {model}: macro-F1 {metrics['macro_f1']:.3f} on {metrics['tiles']} tiles from "
        f"8 labs never seen in training; ECE {metrics['ece']:.3f} after temperature scaling"
    )
    for slide in slides:
        result = out / "classified" / Path(slide).stem
        agreement = slide_agreement(result / "tiles.csv", Path(slide).with_suffix(".labels.png"))
        print(
            f"  {Path(slide).stem}: {agreement['pure_agreement']:.3f} of tiles agree with the "
            f"ground truth (class covering >= 75% of the tile), {agreement['all_agreement']:.3f} "
            f"of all tissue tiles; report {result / 'report.html'}"
        )
    print(f"  all slides: {out / 'classified' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
