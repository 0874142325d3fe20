"""The `ossiclass synth` commands' arguments: synthetic tiles, slides, drawn annotations and
contact sheets (what each does is in `commands.py`)."""

from __future__ import annotations

import argparse

from ossiclass import commands
from ossiclass.arguments import amount, number, positive_float, positive_int, whole_number

JPEG_QUALITY = number(int, lambda v: 1 <= v <= 95, "1 to 95")
SHEET_COLUMNS = number(int, lambda v: 1 <= v <= 32, "1 to 32")
SHEET_WIDTH = number(int, lambda v: 1 <= v <= 4096, "1 to 4096 px")


def add_synth_commands(subcommands) -> None:
    """Add `synth` and its kinds to the `ossiclass` command's subparsers."""
    synth = subcommands.add_parser(
        "synth", help="make synthetic H&E tiles, slides and contact sheets"
    )
    kinds = synth.add_subparsers(dest="kind", required=True, metavar="KIND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--mpp", type=float, default=0.5, help="µm per pixel, 0.1-4 (default 0.5, a 20x scan)"
    )
    common.add_argument("--seed", type=whole_number, default=0, help="random seed (default 0)")

    tiles = kinds.add_parser("tiles", parents=[common], help="a tile data set with a manifest")
    tiles.add_argument("out", help="output folder: OUT/<class>/*.png and OUT/manifest.csv")
    tiles.add_argument("--per-class", type=positive_int, required=True, help="tiles per class")
    tiles.add_argument(
        "--size", type=positive_int, default=256, help="tile size in pixels (default 256)"
    )
    tiles.add_argument(
        "--domains",
        type=positive_int,
        default=8,
        help="stain domains ('labs') drawn from the seed (default 8)",
    )
    tiles.add_argument(
        "--classes",
        nargs="+",
        metavar="NAME",
        help="classes to paint, in this order (default: the six); beyond the six: marrow, fat. "
        "Writes OUT/classes.json unless they are the six",
    )
    tiles.add_argument("--workers", type=positive_int, default=1, help="processes (default 1)")
    tiles.add_argument("--quiet", action="store_true", help="no progress bar")
    tiles.set_defaults(run=commands.synth_tiles)

    slide = kinds.add_parser(
        "slide", parents=[common], help="a slide (.tif) with label and tissue masks"
    )
    slide.add_argument(
        "out",
        help="output .tif; OUT.labels.png, OUT.tissue.png and OUT.truth.json (its true "
        "measures) are written beside it",
    )
    slide.add_argument(
        "--layout",
        default="growth_plate",
        choices=["growth_plate", "fracture_callus", "intramembranous", "marrow_cavity"],
    )
    slide.add_argument(
        "--lab",
        type=whole_number,
        metavar="SEED",
        help="draw the stain domain ('lab') from this seed, so that slides of other seeds "
        "share one lab (default: from --seed)",
    )
    slide.add_argument(
        "--width", type=positive_int, default=8192, help="width in pixels (default 8192)"
    )
    slide.add_argument(
        "--height", type=positive_int, default=8192, help="height in pixels (default 8192)"
    )
    slide.add_argument(
        "--cartilage",
        type=amount,
        default=1.0,
        metavar="SHARE",
        help="fracture_callus: the cartilage left in the callus, as a share of the layout's "
        "(default 1; below 1 the rest is woven bone): a difference to paint between groups",
    )
    slide.add_argument(
        "--plate-height",
        type=amount,
        default=1.0,
        metavar="SHARE",
        help="growth_plate: the hypertrophic zone's height, as a share of the layout's (default 1)",
    )
    slide.add_argument("--workers", type=positive_int, default=1, help="processes (default 1)")
    slide.add_argument("--quiet", action="store_true", help="no progress bar")
    slide.set_defaults(run=commands.synth_slide)

    drawn = kinds.add_parser(
        "annotations", help="QuPath annotations drawn from a synthetic slide's label mask"
    )
    drawn.add_argument("--seed", type=whole_number, default=0, help="random seed (default 0)")
    drawn.add_argument("slide", help="a synthetic slide (.tif, with SLIDE.labels.png beside it)")
    drawn.add_argument("--regions", type=positive_int, required=True, help="regions per class")
    drawn.add_argument("--out", required=True, help="output GeoJSON file")
    drawn.add_argument(
        "--classes", nargs="+", metavar="CLASS", help="the classes to outline (default: all)"
    )
    drawn.add_argument(
        "--diameter-um",
        nargs=2,
        type=positive_float,
        default=(150.0, 600.0),
        metavar=("MIN", "MAX"),
        help="a region's size across in µm, smallest and largest (default 150 600)",
    )
    drawn.set_defaults(run=commands.synth_annotations)

    sheet = kinds.add_parser(
        "sheet", parents=[common], help="a contact sheet: a labelled row per class"
    )
    sheet.add_argument("out", help="output image (.png or .jpg)")
    sheet.add_argument(
        "--per-class", type=SHEET_COLUMNS, default=6, help="tiles per class (1-32, default 6)"
    )
    sheet.add_argument(
        "--size", type=positive_int, default=256, help="tile size in pixels (16-4096, default 256)"
    )
    sheet.add_argument(
        "--classes", nargs="+", metavar="NAME", help="a row per class (default: the six)"
    )
    sheet.add_argument(
        "--width",
        type=SHEET_WIDTH,
        default=None,
        help="resize the sheet to this width in pixels (1-4096)",
    )
    sheet.add_argument(
        "--quality",
        type=JPEG_QUALITY,
        default=85,
        help="JPEG quality when OUT is .jpg (1-95, default 85)",
    )
    sheet.set_defaults(run=commands.synth_sheet)
