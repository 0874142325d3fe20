"""`all`: train the default model and the ablation's variants, run every other benchmark with
the default model, and write the Markdown tables of their figures.

Each benchmark's `run` is called in this process, except those of `FRESH_PROCESS`, which run as
`benchmark.py NAME ... --json FILE` in a process of their own; the table is written from the
figures, never from printed text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import command
from benchmarks.common import ossiclass_command
from ossiclass.errors import OssiclassError

ALL = [
    ("synthetic tiles to PNG, 2 workers (baseline: 1)", ["synth"], ["synth", "--workers", "1"]),
    ("colour statistics alone across unseen labs (a CNN's baseline)", ["colour-baseline"], None),
    ("within-class variety, 1000 tiles per class", ["variety"], None),
    ("16384 x 16384 slide: time and memory", ["slide"], None),
    ("Macenko speed against torchstain", ["stain"], None),
    ("stain spread across 8 labs, after / before", ["stain-spread"], None),
    ("tissue mask against the generator's", ["tissue"], None),
    ("tile labels against the ground truth, seeds 101-103",
     ["agreement", "--model", "{model}", "--keep", "{slides}"], None),
    ("tile labels against the ground truth, seeds 104-106",
     ["agreement", "--model", "{model}", "--seed", "104", "--keep", "{slides}"], None),
    ("the real check: labelled real H&E fields (baseline: random features, colour)",
     ["real", "--model", "{model}"], None),
    ("classify end to end against the bare forward pass, 40000 x 40000 slide",
     ["classify", "--model", "{model}", "--size", "40000"], None),
]  # fmt: skip
"""The table's rows: (what, the benchmark's arguments, its baseline's arguments or None)."""

ABLATION = [
    ("none", "none", ["--data.stain_domains", "0"]),
    ("Macenko per tile", "none", ["--data.normalizer", "macenko", "--data.stain_domains", "0"]),
    ("none", "random lab stains on half the tiles (default)", []),
    ("Macenko per tile", "random lab stains on half the tiles", ["--data.normalizer", "macenko"]),
    ("histogram matching per tile", "random lab stains on half the tiles",
     ["--data.normalizer", "histogram"]),
    ("stain histogram matching per tile", "random lab stains on half the tiles",
     ["--data.normalizer", "stain-histogram"]),
]  # fmt: skip
"""Training ablation: (stain normalisation, stain augmentation, overrides of the default)."""

FRESH_PROCESS = ("slide", "stain", "classify")
"""Benchmarks run in a process of their own: their peak memory counts their process and its
children, and their rates depend on its threads."""

BENCHMARK = Path(__file__).parents[1] / "benchmark.py"

TRAINING = (
    "`python scripts/train.py --config configs/default.yaml`, then `ossiclass evaluate "
    "--calibrate` on 1200 tiles from 8 unseen labs (baseline: the colour statistics row)"
)


def run(*, out: str | Path, tiatoolbox_python: str | None) -> dict:
    """Train, run every benchmark of `ALL` and write the tables to `out` (Markdown); with
    `tiatoolbox_python`, `classify` compares with TIAToolbox's PatchPredictor."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        calibration = root / "calibration"  # 8 labs seen neither in training nor in the test set
        _output(ossiclass_command("synth", "tiles", calibration, "--per-class", 50, "--seed", 2,
                                  "--domains", 8, "--workers", 2, "--quiet"))  # fmt: skip
        ablation = []
        for index, (normalisation, augmentation, overrides) in enumerate(ABLATION):
            print(f"training: {' '.join(overrides) or 'the default'}", file=sys.stderr, flush=True)
            trained = train_and_test(root, f"variant{index}", overrides, calibration)
            ablation.append({"normalisation": normalisation, "augmentation": augmentation,
                             "overrides": overrides, **trained})  # fmt: skip
            if not overrides:
                default = trained
        evaluated = f"{default['training_seconds']:.0f} s wall; {default['evaluation']}"
        rows = [{"what": TRAINING, "command": None, "figures": default, "text": evaluated}]
        for what, arguments, baseline in ALL:
            slides = str(root / "slides")
            arguments = [part.format(model=default["model"], slides=slides) for part in arguments]
            if arguments[0] == "classify" and tiatoolbox_python:
                arguments += ["--tiatoolbox-python", tiatoolbox_python]
            print(f"{what}", file=sys.stderr, flush=True)
            figures, text = figures_of(arguments)
            row = {"what": what, "command": _shown(arguments, default["model"], slides,
                                                   tiatoolbox_python),
                   "figures": figures, "text": text}  # fmt: skip
            if baseline:
                row["baseline"], baseline_text = figures_of(baseline)
                row["text"] += "\nbaseline: " + baseline_text
            rows.append(row)
        figures = {
            "what": "every benchmark's figures with the default model, and the training ablation",
            "rows": rows,
            "ablation": ablation,
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(report(figures))
    return figures


def train_and_test(root: Path, name: str, overrides: list[str], calibration: Path) -> dict:
    """Train the default config with `overrides`, then evaluate (and calibrate) it on the
    unseen-lab test tiles and classify the seed 101-103 slides: the model, the seconds of
    training, evaluate's last line, and the agreement (pure tiles) per layout, as text."""
    seconds = _output([sys.executable, "scripts/train.py", "--config", "configs/default.yaml",
                       "--trainer.default_root_dir", str(root),
                       "--trainer.logger.init_args.version", name,
                       "--trainer.enable_progress_bar", "false", *overrides])[1]  # fmt: skip
    model = root / "lightning_logs" / name / "model.pt"
    evaluated, _ = _output(ossiclass_command(
        "evaluate", "--model", model, "--data", "data/synthetic-test", "--calibrate", calibration,
        "--out", root / f"evaluate-{name}", "--quiet"))  # fmt: skip
    agreement, _ = figures_of(["agreement", "--model", str(model), "--keep", str(root / "slides")])
    pure = [f"{s['pure_agreement']:.3f}" for s in agreement["slides"]] if agreement else []
    return {
        "model": str(model),
        "training_seconds": seconds,
        "evaluation": evaluated.splitlines()[-1],
        "agreement": pure,
    }


def figures_of(arguments: list[str]) -> tuple[dict | None, str]:
    """(figures, text) of the benchmark that `arguments` name, or (None, "failed: ...")."""
    name = arguments[0]
    if name not in FRESH_PROCESS:
        try:
            return command.run(arguments)
        # What a benchmark meets when a model or file is missing or a command it runs fails;
        # noted in its row rather than losing the training before it.
        except (OssiclassError, OSError, subprocess.CalledProcessError) as error:
            return None, f"failed: {error}"
    with tempfile.TemporaryDirectory() as folder:
        written = Path(folder) / "figures.json"
        text, _ = _output([sys.executable, str(BENCHMARK), *arguments, "--json", str(written)])
        if not written.exists():
            return None, text
        figures = json.loads(written.read_text())
    return figures, command.module(name).report(figures)


def _output(arguments: list[str]) -> tuple[str, float]:
    """(stdout, seconds) of a command; a failure is reported in place of the figures."""
    start = time.perf_counter()
    result = subprocess.run(arguments, capture_output=True, text=True)
    if result.returncode != 0:
        return f"failed: {result.stderr.strip().splitlines()[-1:]}", 0.0
    return result.stdout.strip(), time.perf_counter() - start


def _shown(arguments: list[str], model: str, slides: str, tiatoolbox_python: str | None) -> str:
    """A benchmark's command line as the table shows it, temporary paths named."""
    shown = " ".join(["python scripts/benchmark.py", *arguments])
    shown = shown.replace(model, "MODEL").replace(slides, "DIR")
    return shown.replace(tiatoolbox_python, "PYTHON") if tiatoolbox_python else shown


def report(figures: dict) -> str:
    """The tables of `run`'s figures: every benchmark, then the training ablation (Markdown)."""
    lines = ["| benchmark | figures, with their baseline from the same run |", "|---|---|"]
    for row in figures["rows"]:
        what = f"{row['what']} (`{row['command']}`)" if row["command"] else row["what"]
        cell = "<br>".join(line.strip().replace("|", "/") for line in row["text"].splitlines())
        lines.append(f"| {what} | {cell} |")
    lines += [
        "",
        "Training ablation: `python scripts/train.py --config configs/default.yaml` with the "
        "overrides shown, one run each.",
        "",
        "| stain normalisation | stain augmentation | training | test tiles from 8 unseen labs "
        "| slides: growth plate / fracture / intramembranous (seeds 101-103, tiles >= 75% one "
        "class) | overrides |",
        "|---|---|---|---|---|---|",
    ]
    for variant in figures["ablation"]:
        lines.append(
            f"| {variant['normalisation']} | {variant['augmentation']} | "
            f"{variant['training_seconds']:.0f} s | {variant['evaluation']} | "
            f"{' / '.join(variant['agreement'])} | `{' '.join(variant['overrides']) or '(none)'}` |"
        )
    table = "\n".join(lines) + "\n"
    return re.sub(r"/tmp/tmp\w+", "TMP", table)  # temporary folders, gone after the run
