"""The `scripts/benchmark.py` command: its subcommands and flags, and running one benchmark.

A benchmark module is imported only when its subcommand runs, so `--help` answers at once and
each benchmark loads only what it needs.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from importlib import import_module
from pathlib import Path
from types import ModuleType

from ossiclass.errors import OssiclassError

MODULES = {
    "synth": "synth",
    "colour-baseline": "colour_baseline",
    "variety": "variety",
    "slide": "slide",
    "stain": "stain",
    "stain-spread": "stain_spread",
    "tissue": "tissue",
    "agreement": "agreement",
    "finemap": "finemap",
    "measures": "measures",
    "scales": "scales",
    "styles": "styles",
    "classify": "classify",
    "real": "real",
    "finetune": "finetune",
    "real-finetune": "real_finetune",
    "all": "table",
}
"""Subcommand -> its module in this package."""

NOT_OPTIONS = ("command", "json")
"""Parsed arguments that are not the benchmark's `run` parameters."""


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, each with `--json FILE`."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    subcommand = {name: commands.add_parser(name, help=_summary(name)) for name in MODULES}

    synth = subcommand["synth"]
    synth.add_argument("--per-class", type=int, default=500)
    synth.add_argument("--workers", type=int, default=2)

    baseline = subcommand["colour-baseline"]
    baseline.add_argument("--per-class", type=int, default=400)
    baseline.add_argument("--test-per-class", type=int, default=200)
    baseline.add_argument("--domains", type=int, default=8)
    baseline.add_argument("--test-domains", type=int, default=16)
    baseline.add_argument("--seed", type=int, default=0)
    baseline.add_argument("--workers", type=int, default=2)

    variety = subcommand["variety"]
    variety.add_argument("--per-class", type=int, default=1000)
    variety.add_argument("--domains", type=int, default=8)
    variety.add_argument("--seed", type=int, default=0)
    variety.add_argument("--workers", type=int, default=2)

    slide = subcommand["slide"]
    slide.add_argument("--layout", default="growth_plate")
    slide.add_argument("--size", type=int, default=16384)
    slide.add_argument("--seed", type=int, default=0)
    slide.add_argument("--workers", type=int, default=2)

    stain = subcommand["stain"]
    stain.add_argument("--tiles", type=int, default=256)
    stain.add_argument("--tile-px", type=int, default=224)
    stain.add_argument("--seed", type=int, default=0)
    stain.add_argument("--real", default="../shared/reference-he", help="real H&E .jpg tiles")

    spread = subcommand["stain-spread"]
    spread.add_argument("--tiles", type=int, default=8)
    spread.add_argument("--seed", type=int, default=0)

    tissue = subcommand["tissue"]
    tissue.add_argument("--size", type=int, default=8192)
    tissue.add_argument("--seed", type=int, default=3)
    tissue.add_argument("--workers", type=int, default=2)

    agreement = subcommand["agreement"]
    agreement.add_argument("--model", required=True)
    agreement.add_argument("--size", type=int, default=8192)
    agreement.add_argument("--seed", type=int, default=101)
    agreement.add_argument("--workers", type=int, default=2)
    agreement.add_argument("--keep", metavar="DIR", help="keep the slides and outputs here")
    agreement.add_argument("--no-white-balance", dest="white_balance", action="store_false",
                           help="classify as scanned")  # fmt: skip

    finemap = subcommand["finemap"]
    finemap.add_argument("--model", required=True)
    finemap.add_argument("--size", type=int, default=8192)
    finemap.add_argument("--seed", type=int, default=101)
    finemap.add_argument("--workers", type=int, default=2)
    finemap.add_argument("--keep", metavar="DIR", help="keep the slides and outputs here")
    finemap.add_argument("--eval-um", type=float, default=8.0, help="scoring grid's cell, µm")
    finemap.add_argument("--band-um", type=float, default=128.0,
                         help="width of the band around true class boundaries, µm")  # fmt: skip
    finemap.add_argument("--tolerance-um", type=float, default=32.0,
                         help="the boundary F-score's tolerance, µm")  # fmt: skip

    classify = subcommand["classify"]
    classify.add_argument("--model", required=True)
    classify.add_argument("--slide", help="a slide to classify (default: a synthetic one)")
    classify.add_argument("--size", type=int, default=16384)
    classify.add_argument("--batch-size", type=int, default=64)
    classify.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    classify.add_argument("--workers", type=int, help="reading workers (default: classify's)")
    classify.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    classify.add_argument("--tiatoolbox-python", help="a Python with TIAToolbox installed")
    classify.add_argument("--tiatoolbox-tiles", type=int, default=4096)

    real = subcommand["real"]
    real.add_argument("--model", required=True)
    real.add_argument("--reference", default="../shared/reference-he", help="labels.tsv's folder")
    real.add_argument("--per-class", type=int, default=200, help="synthetic tiles per class")

    measures = subcommand["measures"]
    measures.add_argument("--model", required=True)
    measures.add_argument("--size", type=int, default=8192)
    measures.add_argument("--seed", type=int, default=101)
    measures.add_argument("--workers", type=int, default=2)
    measures.add_argument("--keep", metavar="DIR", help="keep (or reuse) slides and outputs here")

    scales = subcommand["scales"]
    scales.add_argument("--model", required=True)
    scales.add_argument("--size", type=int, default=6144, help="slide side at 0.25 µm/px")
    scales.add_argument("--seed", type=int, default=201)
    scales.add_argument("--workers", type=int, default=2)

    styles = subcommand["styles"]
    styles.add_argument("--model", required=True)
    styles.add_argument("--tissue", default="woven_bone", help="the class whose regions to paint")
    styles.add_argument("--seed", type=int, default=101, help="the first slide seed")
    styles.add_argument("--count", type=int, default=40, help="slide seeds, from --seed on")
    styles.add_argument("--canvases", type=int, default=8, help="canvases painted per seed")
    styles.add_argument("--bound", type=float, default=0.9, help="the share right below which "
                        "a seed is listed")  # fmt: skip

    finetune = subcommand["finetune"]
    finetune.add_argument("--model", required=True)
    finetune.add_argument("--lab", type=int, default=977, help="the lab seed, one not trained on")
    finetune.add_argument("--regions", type=int, nargs="+", default=[1, 3, 10])
    finetune.add_argument("--size", type=int, default=8192, help="slide side in px")
    finetune.add_argument("--keep", metavar="DIR", help="keep slides, tiles and models here")

    real_tuned = subcommand["real-finetune"]
    real_tuned.add_argument("--model", required=True)
    real_tuned.add_argument("--reference", default="../shared/reference-he")
    real_tuned.add_argument("--synthetic-per-class", type=int, default=50)

    everything = subcommand["all"]
    everything.add_argument("--out", default="outputs/benchmarks.md")
    everything.add_argument("--tiatoolbox-python", help="a Python with TIAToolbox installed")

    for name, sub in subcommand.items():
        sub.description = _summary(name)
        sub.add_argument("--json", metavar="FILE", help="also write the figures to this file")
    return parser


def _summary(name: str) -> str:
    """What a subcommand measures: the first paragraph of its module's docstring, read from
    the file so that no benchmark is imported to build the parser."""
    source = (Path(__file__).parent / f"{MODULES[name]}.py").read_text()
    summary = ast.get_docstring(ast.parse(source)).split("\n\n")[0]
    return " ".join(summary.removeprefix(f"`{name}`: ").split())


def module(name: str) -> ModuleType:
    """The benchmark module of subcommand `name`."""
    return import_module(f"benchmarks.{MODULES[name]}")


def run(argv: list[str]) -> tuple[dict, str]:
    """The figures and their text of the benchmark that `argv` names (what follows
    `benchmark.py` on its command line), run in this process."""
    return _run(build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> tuple[dict, str]:
    benchmark = module(args.command)
    options = {key: value for key, value in vars(args).items() if key not in NOT_OPTIONS}
    figures = benchmark.run(**options)
    return figures, benchmark.report(figures)


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """Run the benchmark that `argv` names, print its figures and write them to `--json`."""
    args = build_parser(description).parse_args(argv)
    try:
        figures, text = _run(args)
    except OssiclassError as error:
        print(f"benchmark {args.command}: {error}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print(text)
    return 0
