"""The `ossiclass` command: its arguments (`build_parser`) and `main(argv) -> exit status`.
What each command does is in `commands.py`, whose heavy imports happen when a command runs.

User errors (`OssiclassError`) print one line and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ossiclass import __version__, commands
from ossiclass.arguments import (
    fraction,
    input_mpp,
    number,
    positive_int,
    whole_number,
)
from ossiclass.errors import OssiclassError
from ossiclass.synth_cli import add_synth_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ossiclass",
        description="Classify H&E tiles of developing and healing bone into tissue classes "
        "(the six of ossiclass, or those a model carries).",
    )
    parser.add_argument("--version", action="version", version=f"ossiclass {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_synth_commands(subcommands)

    annotations = subcommands.add_parser(
        "annotations",
        help="a tile data set from QuPath annotations (File > Export objects as GeoJSON)",
    )
    annotations.add_argument(
        "slides", nargs="+", metavar="SLIDE", help="slides (any format classify reads)"
    )
    annotations.add_argument(
        "--geojson",
        nargs="+",
        required=True,
        metavar="FILE",
        help="QuPath GeoJSON exports, one per slide: named after it, or in the same order",
    )
    annotations.add_argument(
        "--out",
        required=True,
        help="tile set folder: OUT/<class>/*.png, manifest.csv, classes.json",
    )
    scale = annotations.add_mutually_exclusive_group(required=True)
    scale.add_argument("--model", help="take the µm/px and input size from this model bundle")
    scale.add_argument("--mpp", type=input_mpp, help="the model's µm per pixel (with --tile-px)")
    annotations.add_argument(
        "--tile-px", type=positive_int, help="the model's input size in pixels (with --mpp)"
    )
    annotations.add_argument(
        "--min-cover",
        type=number(float, lambda v: 0 < v <= 1, "a share above 0, up to 1"),
        default=0.9,
        help="least share of a tile one class's polygons must cover (default 0.9)",
    )
    annotations.add_argument(
        "--stride",
        type=positive_int,
        help="tile step in model pixels (default: the tile size, classify's grid; less gives "
        "overlapping tiles)",
    )
    annotations.add_argument(
        "--label-map",
        metavar="MAP",
        help="JSON object: QuPath class -> class name, or null to drop it (default: every class, "
        "named after its QuPath name)",
    )
    annotations.add_argument(
        "--input-mpp",
        type=input_mpp,
        help="the slides' µm per pixel (default: from the files' metadata, else 0.5, a 20x "
        "scan, with a note)",
    )
    annotations.add_argument(
        "--no-white-balance",
        action="store_true",
        help="leave the slides' colours as scanned (only for a model classify runs so too)",
    )
    annotations.add_argument("--quiet", action="store_true", help="no progress bar")
    annotations.set_defaults(run=commands.annotated_tiles)

    # Listed for --help; `main` hands `train` to LightningCLI, which parses its own arguments.
    subcommands.add_parser(
        "train", help="train the classifier: --config configs/default.yaml [LightningCLI overrides]"
    )

    evaluate = subcommands.add_parser(
        "evaluate", help="metrics, confusion matrix and calibration of a model"
    )
    evaluate.add_argument("--model", required=True, help="model bundle (model.pt)")
    evaluate.add_argument(
        "--data", required=True, help="class folders or manifest CSV of labelled tiles"
    )
    evaluate.add_argument(
        "--out", default="outputs/evaluate", help="output folder (default outputs/evaluate)"
    )
    evaluate.add_argument(
        "--calibrate",
        metavar="DATA",
        help="fit a temperature on these tiles (validation) and store it in the model",
    )
    evaluate.add_argument("--label-map", help="JSON label map for data sets with other labels")
    evaluate.add_argument(
        "--mpp",
        type=input_mpp,
        help="the tiles' µm per pixel (default: a manifest's mpp column, else 0.5, a 20x scan, "
        "with a note); each tile must cover the model's field",
    )
    evaluate.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="as predict and classify run: bf16 where the hardware runs it fast (auto), or fp32",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=commands.evaluate_model)

    fit_cells = subcommands.add_parser(
        "fit-cells",
        help="fit the model's cell head, which tells a callus's islands from its fibrous "
        "tissue, on a synthetic tile set; stored in the model",
    )
    fit_cells.add_argument("--model", required=True, help="model bundle (model.pt)")
    fit_cells.add_argument(
        "--data", required=True, help="a synthetic tile set (ossiclass synth tiles): training's"
    )
    fit_cells.add_argument(
        "--per-class", type=positive_int, default=200,
        help="tiles of each class to paint again with what each pixel is (default 200)",
    )  # fmt: skip
    fit_cells.add_argument(
        "--test", help="a synthetic tile set of other labs (the demo's test set), to report how "
        "well the head does on labs it never saw",
    )  # fmt: skip
    fit_cells.add_argument("--quiet", action="store_true", help="no progress bar")
    fit_cells.set_defaults(run=commands.fit_cell_head)

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", required=True, help="model bundle (model.pt from training)")
    model.add_argument(
        "--mpp",
        type=input_mpp,
        help="the input's µm per pixel (default: from the file's metadata, else 0.5, a 20x "
        "scan, with a note)",
    )
    model.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="bf16 where the hardware runs it fast (auto, the default), or fp32",
    )

    predict = subcommands.add_parser(
        "predict", parents=[model], help="label, confidence and probabilities of single images"
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="images to classify")
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    predict.add_argument(
        "--top-k", type=positive_int, default=3, help="classes to list (default 3)"
    )
    predict.add_argument(
        "--tta", action="store_true", help="average over the 8 flips and quarter turns"
    )
    predict.set_defaults(run=commands.predict_images)

    runs = argparse.ArgumentParser(add_help=False)  # how classify tiles and runs
    runs.add_argument(
        "--stride",
        type=positive_int,
        help="tile step in model pixels (default: the tile size, no overlap); less overlaps the "
        "tiles and blends their probabilities into a finer class map (classmap.tif, "
        "regions.geojson) of one cell per step, at the cost of more tiles (half: 4x, a quarter: "
        "16x)",
    )
    runs.add_argument(
        "--refine",
        action="store_true",
        help="move the class map's boundaries within tiles to where the slide's colours put "
        "them (cells of about 8 µm); the measures are taken on that map",
    )
    runs.add_argument(
        "--min-tissue",
        type=fraction,
        default=0.5,
        help="least tissue share of a tile (default 0.5)",
    )
    runs.add_argument(
        "--batch-size", type=positive_int, default=64, help="tiles per batch (default 64)"
    )
    runs.add_argument(
        "--workers",
        type=whole_number,
        help="processes reading tiles, per device (default: on the CPU 0 for a slide, else 2; "
        "on GPUs up to 8)",
    )
    runs.add_argument(
        "--no-white-balance",
        action="store_true",
        help="leave a slide's colours as scanned (default: scaled so that its glass reads neutral)",
    )
    runs.add_argument("--accelerator", default="cpu", help="cpu (default), gpu, auto")
    runs.add_argument(
        "--devices", type=positive_int, default=1, help="processes or GPUs to split over"
    )

    classify = subcommands.add_parser(
        "classify",
        parents=[model, runs],
        help="classify a slide or a folder of tiles: tiles.csv, GeoJSON, map, summary",
    )
    classify.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="slides (tiled TIFF; SVS, NDPI with ossiclass[wsi]), large images or tile folders",
    )
    classify.add_argument(
        "--out", required=True, help="output folder (OUT/<name> each, for several inputs)"
    )
    classify.add_argument(
        "--resume", action="store_true", help="finish an interrupted run in the same --out"
    )
    classify.add_argument(
        "--report", action="store_true", help="also write report.html per slide (and an index)"
    )
    classify.add_argument(
        "--roi",
        metavar="GEOJSON",
        help="measure only in this region: QuPath annotations (a callus outline, a growth "
        "plate) of the one slide given, exported as GeoJSON; the union of its areas",
    )
    classify.add_argument("--quiet", action="store_true", help="no progress bar")
    classify.set_defaults(run=commands.classify_inputs)

    study = subcommands.add_parser(
        "study",
        parents=[model, runs],
        help="a study from a manifest: classify its slides, a row per slide, group statistics, "
        "plots, agreement with manual measures",
    )
    study.add_argument(
        "manifest",
        metavar="MANIFEST",
        help="CSV: a 'slide' column (paths relative to it) and any others (animal, group, day)",
    )
    study.add_argument(
        "--out",
        required=True,
        help="output folder: slides/<stem>/, slides.csv, groups.csv, plots/; a study run again "
        "classifies only what is missing",
    )
    study.add_argument(
        "--manual",
        metavar="CSV",
        help="the lab's manual measures: a 'slide' column, measures named as in slides.csv "
        "(or without the unit); writes agreement.json and Bland-Altman plots",
    )
    study.add_argument(
        "--by",
        nargs="+",
        metavar="COLUMN",
        help="group by these columns (default: every column but slide, animal and roi that "
        "repeats a value)",
    )
    study.add_argument(
        "--num-nodes",
        type=positive_int,
        default=1,
        help="machines the processes run on (default 1; each with --devices of them)",
    )
    study.add_argument("--quiet", action="store_true", help="no progress bar")
    study.set_defaults(run=commands.run_study)

    report = subcommands.add_parser(
        "report", help="an HTML page per classified slide: map, composition, least sure tiles"
    )
    report.add_argument("results", nargs="+", metavar="DIR", help="output folders of classify")
    report.add_argument("--index", help="index page linking the reports (default beside them)")
    report.set_defaults(run=commands.write_reports)

    normalize = subcommands.add_parser("normalize", help="stain-normalise images to a reference")
    normalize.add_argument("images", nargs="+", metavar="IMAGE", help="images to normalise")
    normalize.add_argument(
        "--method",
        choices=["macenko", "reinhard", "histogram", "stain-histogram"],
        default="macenko",
        help="method (default macenko)",
    )
    normalize.add_argument(
        "--mpp",
        type=input_mpp,
        help="µm per pixel of the images (default 0.5): all but macenko measure holes in "
        "tissue, specks and smoothing in µm",
    )
    normalize.add_argument(
        "--reference", required=True, help="reference image, or a .json saved with --save-reference"
    )
    normalize.add_argument("--out", required=True, help="output folder: OUT/<name>.png")
    normalize.add_argument(
        "--save-reference", metavar="JSON", help="also save the fitted reference as JSON"
    )
    normalize.set_defaults(run=commands.normalize_images)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    # tifffile logs what it finds wrong in a damaged file; the one line below says it instead.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        if argv[:1] == ["train"]:
            from ossiclass.train import run_cli

            run_cli(argv[1:])
            return 0
        args = build_parser().parse_args(argv)
        return args.run(args)
    except OssiclassError as error:
        print(f"ossiclass: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ossiclass: interrupted", file=sys.stderr)
        return 130
