"""The `ossiclass` command. `main(argv) -> exit status`; heavy imports live inside subcommands.

User errors (`OssiclassError`) print one line and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ossiclass import __version__
from ossiclass.errors import OssiclassError


def _number(convert: Callable[[str], float], accept: Callable[[float], bool], expected: str):
    """An argparse type: `convert` the text, and refuse what `accept` does not, saying what
    was `expected`."""

    def parse(text: str):
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = expected  # argparse's "invalid ... value" for text that is no number
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive whole number")
_whole_number = _number(int, lambda v: v >= 0, "0 or more")
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_fraction = _number(float, lambda v: 0 <= v <= 1, "a share from 0 to 1")
_input_mpp = _number(float, lambda v: 0.05 <= v <= 50, "0.05 to 50 µm per pixel")


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


def _normalize(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from ossiclass.imageio import read_image
    from ossiclass.preprocess.stain import NORMALIZERS, normalizer_from_dict

    reference = Path(args.reference)
    if reference.suffix.lower() == ".json":
        if args.mpp is not None:
            print(
                f"ossiclass: note: {reference} carries its own µm/px; --mpp ignored",
                file=sys.stderr,
            )
        try:
            normalizer = normalizer_from_dict(json.loads(reference.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise OssiclassError(f"{reference}: not a saved stain reference ({error})") from None
    else:
        try:
            normalizer = NORMALIZERS[args.method].fit(read_image(reference), mpp=args.mpp or 0.5)
        except ValueError as error:
            raise OssiclassError(f"{reference}: {error}") from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if args.save_reference:
            Path(args.save_reference).write_text(json.dumps(normalizer.to_dict(), indent=2))
    except OSError as error:
        raise OssiclassError(f"cannot write to {error.filename}: {error.strerror}") from None
    failed = 0
    for name in tqdm(args.images, desc="normalize", unit="image", disable=len(args.images) < 2):
        try:
            image = read_image(name)
        except OssiclassError as error:
            print(f"ossiclass: skipped: {error}", file=sys.stderr)
            failed += 1
            continue
        normalized, ok = normalizer.normalize(image)
        if not np.all(ok):
            print(
                f"ossiclass: note: {name}: too little tissue to normalise; copied as it is",
                file=sys.stderr,
            )
        target = out / (Path(name).stem + ".png")
        Image.fromarray(normalized).save(target)
    print(f"wrote {len(args.images) - failed} images to {out}")
    return 2 if failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from ossiclass.classes import CLASSES
    from ossiclass.evaluate import evaluate_bundle

    result, as_trained = evaluate_bundle(
        args.model, args.data, args.out, args.calibrate, args.label_map, not args.quiet
    )
    if args.calibrate:
        temperature = result["temperature"]
        print(f"fitted temperature {temperature:.3f} on {args.calibrate}; stored in {args.model}")
    print(f"{'class':<20}{'precision':>10}{'recall':>10}{'f1':>10}")
    for name in CLASSES:
        row = result["per_class"][name]
        print(f"{name:<20}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}")
    print(
        f"{result['tiles']} tiles: accuracy {result['accuracy']:.3f}, "
        f"macro-F1 {result['macro_f1']:.3f}, ECE {result['ece']:.3f} "
        f"(before calibration {as_trained['ece']:.3f}); outputs in {args.out}"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    import json

    from ossiclass.imageio import read_image
    from ossiclass.predict import Predictor, predict_array
    from ossiclass.slides import DEFAULT_MPP, image_mpp, resolve_mpp

    predictor = Predictor(args.model, precision=args.precision)
    failed, width, assumed = 0, max(len("image"), *map(len, args.images)), []
    if not args.json:
        print(f"{'image':<{width}}  {'label':<18} {'confidence':>10}  top {args.top_k}")
    for path in args.images:
        try:
            scale = resolve_mpp(args.mpp, image_mpp(path))
            result = predict_array(predictor, read_image(path), scale.mpp, args.tta, name=path)
            assumed += [path] if scale.note(path) else []
        except OssiclassError as error:  # reported; the other images still get their answer
            message = str(error) if path in str(error) else f"{path}: {error}"
            print(f"ossiclass: error: {message}", file=sys.stderr)
            failed += 1
            continue
        top = result.top(args.top_k)
        if args.json:
            print(json.dumps({"image": path, **result.to_dict(args.top_k), "mpp": scale.mpp}))
            continue
        ranked = ", ".join(f"{c} {p:.2f}" for c, p in top)
        note = f"  (mean of {result.tiles} tiles)" if result.tiles > 1 else ""
        print(f"{path:<{width}}  {result.label:<18} {result.confidence:>10.3f}  {ranked}{note}")
    if assumed:
        what = resolve_mpp(None, None).note(assumed[0])
        if len(assumed) > 1:
            what = f"{len(assumed)} images record no µm per pixel; assumed {DEFAULT_MPP:g}"
        print(f"ossiclass: note: {what}; give it with --mpp", file=sys.stderr)
    return 2 if failed else 0


def _classify(args: argparse.Namespace) -> int:
    from ossiclass.classify import Running, Tiling, classify
    from ossiclass.errors import BadInputError

    tiling = Tiling(args.stride, args.min_tissue, args.mpp, not args.no_white_balance)
    running = Running(args.batch_size, args.workers, args.accelerator, args.devices, args.precision)
    if args.devices > 1 and len(args.inputs) > 1:
        raise BadInputError("--devices splits one input's tiles: give one input per run")
    failed, reports = 0, []
    for source, out in _outputs(args.inputs, Path(args.out)):
        try:
            summary = classify(
                source, args.model, out, tiling, running, args.resume, not args.quiet
            )
            if summary is not None and args.report and summary["kind"] == "slide":
                from ossiclass.slide_report import write_report

                reports.append(write_report(out))
        except OssiclassError as error:
            if len(args.inputs) == 1:
                raise
            print(f"ossiclass: error: {error}", file=sys.stderr)  # the other inputs go on
            failed += 1
            continue
        if summary is None:  # a second process under DDP: the first one reports
            continue
        tiles = summary["tiles"]
        print(f"{source}: {tiles['classified']} tiles, {tiles['skipped']} skipped; in {out}:")
        for note in summary.get("notes", []):
            print(f"  note: {note}; give it with --mpp")
        if "white_balance" in summary:  # a run finished by an older version has none
            print(f"  white balance: {summary['white_balance']}")
        for name, row in summary["classes"].items():
            area = f"{row['area_mm2']:>9.3f} mm2" if "area_mm2" in row else ""
            print(f"  {name:<20}{row['tiles']:>7} tiles {row['fraction']:>7.1%}{area}")
    if len(reports) > 1:
        from ossiclass.slide_report import write_index

        reports.append(write_index(reports, Path(args.out) / "index.html"))
    for report in reports:
        print(f"report: {report}")
    return 2 if failed else 0


def _report(args: argparse.Namespace) -> int:
    from ossiclass.slide_report import write_index, write_report

    reports = [write_report(folder) for folder in args.results]
    if len(reports) > 1 or args.index:
        index = Path(args.index or Path(args.results[0]).parent / "index.html")
        reports.append(write_index(reports[: len(args.results)], index))
    for report in reports:
        print(f"wrote {report}")
    return 0


def _outputs(inputs: list[str], out: Path) -> list[tuple[str, Path]]:
    """(input, its output folder): OUT itself for one input, OUT/<name> for several."""
    if len(inputs) == 1:
        return [(inputs[0], out)]
    names = [Path(source).stem for source in inputs]
    return [
        (source, out / (name if names.count(name) == 1 else f"{name}-{index}"))
        for index, (source, name) in enumerate(zip(inputs, names, strict=True))
    ]


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

    # Listed for --help; `main` hands `train` to LightningCLI, which parses its own arguments.
    commands.add_parser(
        "train", help="train the classifier: --config configs/default.yaml [LightningCLI overrides]"
    )

    evaluate = commands.add_parser(
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
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=_evaluate)

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", required=True, help="model bundle (model.pt from training)")
    model.add_argument(
        "--mpp",
        type=_input_mpp,
        help="the input's µm per pixel (default: from the file's metadata, else 0.5, a 20x "
        "scan, with a note)",
    )
    model.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="bf16 where the hardware runs it fast (auto, the default), or fp32",
    )

    predict = commands.add_parser(
        "predict", parents=[model], help="label, confidence and probabilities of single images"
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="images to classify")
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    predict.add_argument(
        "--top-k", type=_positive_int, default=3, help="classes to list (default 3)"
    )
    predict.add_argument(
        "--tta", action="store_true", help="average over the 8 flips and quarter turns"
    )
    predict.set_defaults(run=_predict)

    classify = commands.add_parser(
        "classify",
        parents=[model],
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
        "--stride", type=_positive_int, help="tile step in model pixels (default: no overlap)"
    )
    classify.add_argument(
        "--min-tissue",
        type=_fraction,
        default=0.5,
        help="least tissue share of a tile (default 0.5)",
    )
    classify.add_argument(
        "--batch-size", type=_positive_int, default=64, help="tiles per batch (default 64)"
    )
    classify.add_argument(
        "--workers",
        type=_whole_number,
        help="processes reading tiles, per device (default: on the CPU 0 for a slide, else 2; "
        "on GPUs up to 8)",
    )
    classify.add_argument(
        "--no-white-balance",
        action="store_true",
        help="leave a slide's colours as scanned (default: scaled so that its glass reads neutral)",
    )
    classify.add_argument("--accelerator", default="cpu", help="cpu (default), gpu, auto")
    classify.add_argument(
        "--devices", type=_positive_int, default=1, help="processes or GPUs to split over"
    )
    classify.add_argument(
        "--resume", action="store_true", help="finish an interrupted run in the same --out"
    )
    classify.add_argument(
        "--report", action="store_true", help="also write report.html per slide (and an index)"
    )
    classify.add_argument("--quiet", action="store_true", help="no progress bar")
    classify.set_defaults(run=_classify)

    report = commands.add_parser(
        "report", help="an HTML page per classified slide: map, composition, least sure tiles"
    )
    report.add_argument("results", nargs="+", metavar="DIR", help="output folders of classify")
    report.add_argument("--index", help="index page linking the reports (default beside them)")
    report.set_defaults(run=_report)

    normalize = commands.add_parser("normalize", help="stain-normalise images to a reference")
    normalize.add_argument("images", nargs="+", metavar="IMAGE", help="images to normalise")
    normalize.add_argument(
        "--method",
        choices=["macenko", "reinhard", "histogram", "stain-histogram"],
        default="macenko",
        help="method (default macenko)",
    )
    normalize.add_argument(
        "--mpp",
        type=_positive_float,
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
    normalize.set_defaults(run=_normalize)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
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
