"""The `ossiclass` command. `main(argv) -> exit status`; heavy imports live inside subcommands.

User errors (`OssiclassError`) print one line and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ossiclass import __version__
from ossiclass.errors import OssiclassError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return value


def _synth_tiles(args: argparse.Namespace) -> int:
    from ossiclass.synth.tiles import TileSettings, write_tile_dataset

    settings = TileSettings(args.per_class, args.size, args.mpp, args.seed, args.domains)
    manifest = write_tile_dataset(args.out, settings, workers=args.workers, progress=not args.quiet)
    print(f"wrote {settings.per_class * 6} tiles and {manifest}")
    return 0


def _synth_slide(args: argparse.Namespace) -> int:
    from ossiclass.synth.slides import SlideSettings, write_slide

    settings = SlideSettings(args.layout, args.width, args.height, args.mpp, args.seed)
    path = write_slide(args.out, settings, workers=args.workers, progress=not args.quiet)
    print(f"wrote {path}, {path.with_suffix('.labels.png')} and {path.with_suffix('.tissue.png')}")
    return 0


def _synth_sheet(args: argparse.Namespace) -> int:
    from ossiclass.synth.tiles import contact_sheet

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet(args.per_class, args.seed, args.size, args.mpp)
    if args.width:
        sheet = sheet.resize((args.width, round(sheet.height * args.width / sheet.width)))
    try:
        sheet.save(out, quality=args.quality)
    except (ValueError, OSError) as error:
        raise OssiclassError(f"{out}: cannot write the contact sheet ({error})") from None
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ossiclass",
        description="Classify H&E tiles of developing and healing bone into six tissue classes.",
    )
    parser.add_argument("--version", action="version", version=f"ossiclass {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="make synthetic H&E tiles, slides and contact sheets")
    kinds = synth.add_subparsers(dest="kind", required=True, metavar="KIND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--mpp", type=float, default=0.5, help="µm per pixel (default 0.5, a 20x scan)"
    )
    common.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    tiles = kinds.add_parser("tiles", parents=[common], help="a tile data set with a manifest")
    tiles.add_argument("out", help="output folder: OUT/<class>/*.png and OUT/manifest.csv")
    tiles.add_argument("--per-class", type=_positive_int, required=True, help="tiles per class")
    tiles.add_argument(
        "--size", type=_positive_int, default=256, help="tile size in pixels (default 256)"
    )
    tiles.add_argument(
        "--domains",
        type=_positive_int,
        default=8,
        help="stain domains ('labs') drawn from the seed (default 8)",
    )
    tiles.add_argument("--workers", type=_positive_int, default=1, help="processes (default 1)")
    tiles.add_argument("--quiet", action="store_true", help="no progress bar")
    tiles.set_defaults(run=_synth_tiles)

    slide = kinds.add_parser(
        "slide", parents=[common], help="a slide (.tif) with label and tissue masks"
    )
    slide.add_argument(
        "out", help="output .tif; OUT.labels.png and OUT.tissue.png are written beside it"
    )
    slide.add_argument(
        "--layout",
        default="growth_plate",
        choices=["growth_plate", "fracture_callus", "intramembranous"],
    )
    slide.add_argument(
        "--width", type=_positive_int, default=8192, help="width in pixels (default 8192)"
    )
    slide.add_argument(
        "--height", type=_positive_int, default=8192, help="height in pixels (default 8192)"
    )
    slide.add_argument("--workers", type=_positive_int, default=1, help="processes (default 1)")
    slide.add_argument("--quiet", action="store_true", help="no progress bar")
    slide.set_defaults(run=_synth_slide)

    sheet = kinds.add_parser(
        "sheet", parents=[common], help="a contact sheet: a labelled row per class"
    )
    sheet.add_argument("out", help="output image (.png or .jpg)")
    sheet.add_argument(
        "--per-class", type=_positive_int, default=6, help="tiles per class (default 6)"
    )
    sheet.add_argument(
        "--size", type=_positive_int, default=256, help="tile size in pixels (default 256)"
    )
    sheet.add_argument(
        "--width", type=_positive_int, default=None, help="resize the sheet to this width in pixels"
    )
    sheet.add_argument(
        "--quality", type=int, default=85, help="JPEG quality when OUT is .jpg (default 85)"
    )
    sheet.set_defaults(run=_synth_sheet)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except OssiclassError as error:
        print(f"ossiclass: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ossiclass: interrupted", file=sys.stderr)
        return 130
