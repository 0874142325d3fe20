"""What each `ossiclass` command does with its parsed arguments (`cli.py` defines the
arguments): each handler imports what it needs when it runs, calls the library, prints, and
returns the exit status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ossiclass.errors import BadInputError, OssiclassError


def synth_tiles(args: argparse.Namespace) -> int:
    from ossiclass.classes import CLASSES
    from ossiclass.synth.tiles import TileSettings, write_tile_dataset

    classes = tuple(args.classes or CLASSES)
    settings = TileSettings(args.per_class, args.size, args.mpp, args.seed, args.domains, classes)
    manifest = write_tile_dataset(args.out, settings, workers=args.workers, progress=not args.quiet)
    extra = " and classes.json" if classes != CLASSES else ""
    print(f"wrote {settings.per_class * len(classes)} tiles, {manifest}{extra}")
    return 0


def synth_slide(args: argparse.Namespace) -> int:
    from ossiclass.synth.slides import SlideSettings, files_beside, write_slide

    settings = SlideSettings(
        args.layout,
        args.width,
        args.height,
        args.mpp,
        args.seed,
        args.lab,
        cartilage=args.cartilage,
        plate_height=args.plate_height,
    )
    path = write_slide(args.out, settings, workers=args.workers, progress=not args.quiet)
    written = [str(beside) for beside in files_beside(path) if beside.exists()]
    print(f"wrote {path}, {', '.join(written)}")
    return 0


def synth_sheet(args: argparse.Namespace) -> int:
    from ossiclass.classes import CLASSES
    from ossiclass.files import check_output
    from ossiclass.synth.tiles import contact_sheet

    out = check_output(Path(args.out))
    classes = tuple(args.classes or CLASSES)
    sheet = contact_sheet(args.per_class, args.seed, args.size, args.mpp, classes)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.width:
        sheet = sheet.resize((args.width, max(round(sheet.height * args.width / sheet.width), 1)))
    try:
        sheet.save(out, quality=args.quality)
    except (ValueError, OSError) as error:
        raise OssiclassError(f"{out}: cannot write the contact sheet ({error})") from None
    print(f"wrote {out}")
    return 0


def normalize_images(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    from tqdm import tqdm

    from ossiclass.files import check_output, save_png
    from ossiclass.imageio import read_image
    from ossiclass.preprocess.stain import NORMALIZERS, normalizer_from_dict
    from ossiclass.scale import resolve_mpp
    from ossiclass.slides import image_mpp

    out = Path(args.out)
    targets = [check_output(out / f"{Path(name).stem}.png") for name in args.images]
    _refuse_shared(args.images, targets)
    reference = Path(args.reference)
    if reference.suffix.lower() == ".json":
        if args.mpp is not None:
            print(
                f"ossiclass: note: {reference} carries its own µm/px; --mpp ignored",
                file=sys.stderr,
            )
        try:
            normalizer = normalizer_from_dict(json.loads(reference.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            problem = f"{type(error).__name__}: {error}"
            raise OssiclassError(f"{reference}: not a saved stain reference ({problem})") from None
    else:
        image = read_image(reference)
        scale = resolve_mpp(args.mpp, image_mpp(reference))
        if scale.note(str(reference)):
            print(
                f"ossiclass: note: {scale.note(str(reference))}; give it with --mpp",
                file=sys.stderr,
            )
        try:
            normalizer = NORMALIZERS[args.method].fit(image, mpp=scale.mpp)
        except ValueError as error:
            raise OssiclassError(f"{reference}: {error}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        if args.save_reference:
            Path(args.save_reference).write_text(json.dumps(normalizer.to_dict(), indent=2))
    except OSError as error:
        raise OssiclassError(f"cannot write to {error.filename}: {error.strerror}") from None
    failed = 0
    for name, target in tqdm(list(zip(args.images, targets, strict=True)), desc="normalize",
                             unit="image", disable=len(args.images) < 2):  # fmt: skip
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
        save_png(normalized, target)
    print(f"wrote {len(args.images) - failed} images to {out}")
    return 2 if failed else 0


def evaluate_model(args: argparse.Namespace) -> int:
    from ossiclass.evaluate import evaluate_bundle

    result, as_trained = evaluate_bundle(
        args.model, args.data, args.out, args.calibrate, args.label_map, not args.quiet,
        args.precision, args.mpp,
    )  # fmt: skip
    for note in result["notes"]:
        print(f"ossiclass: note: {note}; give it with --mpp", file=sys.stderr)
    if args.calibrate:
        temperature = result["temperature"]
        print(f"fitted temperature {temperature:.3f} on {args.calibrate}; stored in {args.model}")
    width = max(20, *(len(name) + 2 for name in result["per_class"]))
    print(f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}")
    for name, row in result["per_class"].items():
        scores = f"{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}"
        print(f"{name:<{width}}{scores}")
    print(
        f"{result['tiles']} tiles: accuracy {result['accuracy']:.3f}, "
        f"macro-F1 {result['macro_f1']:.3f}, ECE {result['ece']:.3f} "
        f"(before calibration {as_trained['ece']:.3f}), {result['precision']}; "
        f"outputs in {args.out}"
    )
    return 0


def fit_cell_head(args: argparse.Namespace) -> int:
    from ossiclass.cell_head import fit_cells

    done = fit_cells(args.model, args.data, args.per_class, args.test, not args.quiet)

    def cells_right(accuracy: dict) -> str:
        callus = accuracy["callus"]
        in_callus = "" if callus is None else f", in the callus {callus:.3f}"
        return f"{accuracy['all']:.3f}{in_callus}"

    test = f"; on the unseen labs of {args.test}: {cells_right(done['test'])}" if args.test else ""
    print(
        f"fitted the cell head on {done['tiles']} tiles ({done['cells_per_tile']} cells each); "
        f"held-out cells right: {cells_right(done['held_out'])}{test}; stored in {args.model}"
    )
    return 0


def predict_images(args: argparse.Namespace) -> int:
    import json

    from ossiclass.imageio import read_image
    from ossiclass.predict import Predictor, predict_array
    from ossiclass.scale import assumed_note, resolve_mpp
    from ossiclass.slides import image_mpp

    predictor = Predictor(args.model, precision=args.precision)
    failed, width, assumed = 0, max(len("image"), *map(len, args.images)), []
    label_width = max(18, *(len(c.name) for c in predictor.classes))
    if not args.json:
        print(f"{'image':<{width}}  {'label':<{label_width}} {'confidence':>10}  top {args.top_k}")
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
        label = f"{result.label:<{label_width}} {result.confidence:>10.3f}"
        print(f"{path:<{width}}  {label}  {ranked}{note}")
    if assumed:
        what = assumed[0] if len(assumed) == 1 else f"{len(assumed)} of {len(args.images)} images"
        print(f"ossiclass: note: {assumed_note(what)}; give it with --mpp", file=sys.stderr)
    return 2 if failed else 0


def _tiling_running(args: argparse.Namespace):
    """classify's `Tiling` and `Running` from the options classify and study share."""
    from ossiclass.classify import Running, Tiling

    tiling = Tiling(args.stride, args.min_tissue, args.mpp, not args.no_white_balance, args.refine)
    running = Running(args.batch_size, args.workers, args.accelerator, args.devices, args.precision)
    return tiling, running


def classify_inputs(args: argparse.Namespace) -> int:
    from ossiclass.classify import classify

    tiling, running = _tiling_running(args)
    if args.devices > 1 and len(args.inputs) > 1:
        raise BadInputError("--devices splits one input's tiles: give one input per run")
    if args.roi and len(args.inputs) > 1:
        raise BadInputError("--roi outlines a region of one slide: give one input per run")
    failed, reports = 0, []
    for source, out in _outputs(args.inputs, Path(args.out)):
        try:
            summary = classify(
                source, args.model, out, tiling, running, args.resume, not args.quiet, args.roi
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
        width = max(20, *(len(name) + 2 for name in summary["classes"]))
        for name, row in summary["classes"].items():
            area = f"{row['area_mm2']:>9.3f} mm2" if "area_mm2" in row else ""
            print(f"  {name:<{width}}{row['tiles']:>7} tiles {row['fraction']:>7.1%}{area}")
    if len(reports) > 1:
        from ossiclass.slide_report import write_index

        reports.append(write_index(reports, Path(args.out) / "index.html"))
    for report in reports:
        print(f"report: {report}")
    return 2 if failed else 0


def run_study(args: argparse.Namespace) -> int:
    from ossiclass.study import run_study

    tiling, running = _tiling_running(args)
    study = run_study(
        args.manifest, args.model, args.out, tiling, running, args.by, args.manual,
        args.num_nodes, not args.quiet,
    )  # fmt: skip
    if study is None:  # a second process under DDP: the first one reports
        return 0
    for stem, message in study.failed.items():
        print(f"ossiclass: error: slide {stem}: {message}", file=sys.stderr)
    for note in study.notes:
        print(f"ossiclass: note: {note}", file=sys.stderr)
    total = study.classified + study.already_done + len(study.failed)
    tables = [p.name for p in study.written if p.parent.name != "plots"]
    plots = len(study.written) - len(tables)
    print(
        f"{total} slides: {study.classified} classified, {study.already_done} already done, "
        f"{len(study.failed)} failed; in {args.out}: {', '.join(tables)}, {plots} plots in plots/"
    )
    for line in study.groups:
        print(f"  {line}")
    return 2 if study.failed else 0


def write_reports(args: argparse.Namespace) -> int:
    from ossiclass.slide_report import check_index, write_index, write_report

    index = check_index(Path(args.index or Path(args.results[0]).parent / "index.html"))
    if args.index and not index.parent.is_dir():
        raise BadInputError(f"{index}: its folder does not exist")
    reports = [write_report(folder) for folder in args.results]
    if len(reports) > 1 or args.index:
        reports.append(write_index(reports[: len(args.results)], index))
    for report in reports:
        print(f"wrote {report}")
    return 0


def _outputs(inputs: list[str], out: Path) -> list[tuple[str, Path]]:
    """(input, its output folder): OUT itself for one input, OUT/<name> for several."""
    if len(inputs) == 1:
        return [(inputs[0], out)]
    stems = [Path(source).stem for source in inputs]
    folders = [
        out / (stem if stems.count(stem) == 1 else f"{stem}-{index}")
        for index, stem in enumerate(stems)
    ]
    _refuse_shared(inputs, folders)
    return list(zip(inputs, folders, strict=True))


def _refuse_shared(inputs: list[str], targets: list[Path]) -> None:
    """`BadInputError` where two inputs would be written to one target (file or folder)."""
    from ossiclass.files import first_shared

    target, sources = first_shared(inputs, targets)
    if sources:
        raise BadInputError(f"{' and '.join(sources)} would both be written to {target}")


def annotated_tiles(args: argparse.Namespace) -> int:
    from ossiclass.annotations import CutSettings, cut_annotated_tiles
    from ossiclass.scale import assumed_note

    if args.model is not None:
        if args.tile_px is not None:
            raise BadInputError("--tile-px goes with --mpp: a --model gives its own input size")
        from ossiclass.bundle import load_bundle

        model = load_bundle(args.model)[1]
        model_mpp, tile_px = model.model_mpp, model.input_px
    elif args.tile_px is None:
        raise BadInputError("--mpp needs --tile-px, the model's input size in pixels")
    else:
        model_mpp, tile_px = args.mpp, args.tile_px
    settings = CutSettings(
        model_mpp, tile_px, args.min_cover, args.stride, args.input_mpp, not args.no_white_balance
    )
    result = cut_annotated_tiles(
        args.slides, args.geojson, args.out, settings, args.label_map, not args.quiet
    )
    for warning in result.warnings:
        print(f"ossiclass: warning: {warning}", file=sys.stderr)
    for note in result.notes:
        print(f"ossiclass: note: {note}", file=sys.stderr)
    for name in result.assumed_scale:
        print(f"ossiclass: note: {assumed_note(name)}; give it with --input-mpp", file=sys.stderr)
    tiles = ", ".join(f"{c.display_name} {result.tiles[c.name]}" for c in result.classes)
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(result.skipped.items()))
    print(
        f"wrote {sum(result.tiles.values())} tiles of {tile_px} px at {model_mpp:g} µm/px "
        f"({tiles}) and {result.manifest}; skipped {sum(result.skipped.values())} objects"
        + (f" ({skipped})" if skipped else "")
    )
    return 0


def synth_annotations(args: argparse.Namespace) -> int:
    from ossiclass.synth.annotate import write_annotations

    drawn = write_annotations(
        args.slide, args.out, args.regions, args.seed, args.classes, tuple(args.diameter_um)
    )
    for note in drawn.notes:
        print(f"ossiclass: note: {note}", file=sys.stderr)
    counts = ", ".join(f"{name} {n}" for name, n in drawn.regions.items())
    print(f"wrote {sum(drawn.regions.values())} annotations ({counts}) to {drawn.path}")
    return 0
