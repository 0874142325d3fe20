"""Self-contained HTML reports of classified slides, for people rather than programs.

`write_report(result_dir)` reads what `classify` wrote (tiles.csv, summary.json, map.png,
measures.png, run.json) and writes `report.html` beside it: the tissue map, the composition
table, the measures and where they were taken, a confidence histogram, the tiles the model was
least sure of, the model and settings, and, for a synthetic slide whose label mask lies beside
it, the agreement with the ground truth. Every image is embedded, so the page opens anywhere
without a network. `write_index` links several reports.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
from pathlib import Path

from PIL import Image

from ossiclass.classes import TISSUE_CLASSES, TissueClass, class_list_from_dict
from ossiclass.errors import BadInputError, OssiclassError
from ossiclass.files import check_output, write_text_atomic

LEAST_SURE = 12
"""Tiles shown as crops: those the model was least sure of."""
UNITS = {"mm2": "mm²", "1": ""}
"""How a measure's unit is shown (fractions as percentages, without one)."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; }
td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; }
td.num, th.num { text-align: right; } .swatch { display: inline-block; width: 0.9em;
height: 0.9em; margin-right: 0.4em; vertical-align: -0.1em; }
img.map { max-width: 100%; border: 1px solid #ccc; }
.crops { display: flex; flex-wrap: wrap; gap: 8px; } .crops figure { margin: 0; width: 136px; }
.crops figcaption { font-size: 0.75em; } .note { color: #666; font-size: 0.9em; }
"""


def summary_classes(summary: dict) -> tuple[TissueClass, ...]:
    """The model's class list a summary records (`class_list`); the six for summaries written
    before there was one. A malformed list is a `BadInputError`."""
    if "class_list" not in summary:
        return TISSUE_CLASSES
    try:
        return class_list_from_dict(summary["class_list"])
    except ValueError as error:
        raise BadInputError(f"summary.json: its class list is malformed ({error})") from None


def _data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _histogram(confidences: list[float]) -> Image.Image:
    """Confidence histogram as an image (matplotlib, no display)."""
    from ossiclass.report import plt

    figure, axes = plt.subplots(figsize=(5, 2.6))
    axes.hist(confidences, bins=20, range=(0, 1), color="#1f78b4")
    axes.set_xlabel("confidence of the tile's label")
    axes.set_ylabel("tiles")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _least_sure_crops(slide_path: Path, mpp: float | None, rows: list[dict]) -> list[tuple]:
    """(crop image, row) for the LEAST_SURE tiles of lowest confidence, read from the slide."""
    from ossiclass.preprocess.tiling import BOX_COLUMNS, TileBox, read_tile
    from ossiclass.slides import open_slide

    chosen = sorted(rows, key=lambda row: float(row["confidence"]))[:LEAST_SURE]
    with open_slide(slide_path, mpp) as slide:
        crops = []
        for row in chosen:
            box = TileBox(*(int(row[k]) for k in BOX_COLUMNS), 1.0)
            crops.append((Image.fromarray(read_tile(slide, box, 128)), row))
    return crops


def _composition_rows(summary: dict, classes: tuple[TissueClass, ...]) -> str:
    cells = []
    for tissue in classes:
        entry = summary["classes"][tissue.name]
        area = f"{entry['area_mm2']:.3f}" if "area_mm2" in entry else "-"
        cells.append(
            f"<tr><td><span class='swatch' style='background:{tissue.hex_colour}'></span>"
            f"{html.escape(tissue.display_name)}</td><td class='num'>{entry['tiles']}</td>"
            f"<td class='num'>{entry['fraction']:.1%}</td><td class='num'>{area}</td></tr>"
        )
    return "\n".join(cells)


def _measures_section(result_dir: Path, summary: dict) -> str:
    """The slide's measures as a table, and where they were taken drawn over the map."""
    measures = summary.get("histomorphometry")
    if not measures:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(m['name'])}</td><td>{html.escape(m['symbol'] or '')}</td>"
        f"<td class='num'>{_value(m)}</td><td>{html.escape(UNITS.get(m['unit'], m['unit']))}</td>"
        "</tr>"
        for m in measures
    )
    region = summary.get("measured_in")
    where = (
        f"in the region outlined in {html.escape(Path(region['file']).name)} "
        f"({region['area_mm2']:.3f} mm²)"
        if region
        else "over the whole slide"
    )
    places = result_dir / "measures.png"
    picture = (
        f"<img class='map' id='places' src='{_data_uri(Image.open(places), 'JPEG')}' "
        "alt='where the measures were taken'>"
        "<p class='note'>Black outline: the callus measured; "
        "black lines: hypertrophic zone heights, white lines: resting and proliferative zone "
        "heights, each normal to the plate; yellow: the region given.</p>"
        if places.exists()
        else ""
    )
    return (
        f"<h2>Histomorphometry</h2><p class='note'>Measured on the class map ({where}); symbols "
        "of the ASBMR nomenclature (Dempster et al. 2013) where it has one.</p>"
        f"<table id='measures'><tr><th>measure</th><th>symbol</th><th class='num'>value</th>"
        f"<th>unit</th></tr>{rows}</table>{picture}"
    )


def _value(measure: dict) -> str:
    """A fraction as a percentage, an area to 3 significant digits, a height or count whole."""
    value, unit = measure["value"], measure["unit"]
    if unit == "1":
        return f"{value:.1%}"
    return f"{value:.3g}" if unit == "mm2" else f"{value:.0f}"


def _agreement_section(result_dir: Path, slide_path: Path) -> str:
    """Agreement with the ground truth, for a synthetic slide with its label mask beside it."""
    from ossiclass.evaluate import slide_agreement
    from ossiclass.synth.slides import files_beside, mask_classes

    mask = files_beside(slide_path).labels
    if not mask.exists():
        return ""
    classes = mask_classes(mask)
    result = slide_agreement(result_dir / "tiles.csv", mask, classes=classes)
    header = "".join(f"<th class='num'>{c.name[:4]}</th>" for c in classes)
    body = "".join(
        f"<tr><td>{c.name}</td>" + "".join(f"<td class='num'>{v}</td>" for v in row) + "</tr>"
        for c, row in zip(classes, result["confusion"], strict=True)
    )
    return (
        "<h2>Agreement with the ground truth (synthetic slide)</h2>"
        f"<p>{result['pure_agreement']:.1%} of the {result['pure_tiles']} tiles whose true class "
        f"covers at least 75% of the tile; {result['all_agreement']:.1%} of all "
        f"{result['tissue_tiles']} tissue tiles, boundaries included.</p>"
        f"<table><tr><th>true \\ predicted</th>{header}</tr>{body}</table>"
    )


def _write_report(result_dir: Path) -> Path:
    try:
        summary = json.loads((result_dir / "summary.json").read_text())
        run = json.loads((result_dir / "run.json").read_text())
        with open(result_dir / "tiles.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        tissue_map = Image.open(result_dir / "map.png")
    except (OSError, ValueError) as error:
        raise BadInputError(
            f"{result_dir}: not a finished classify output ({error}); run classify first"
        ) from None
    if summary.get("kind") != "slide":
        raise BadInputError(f"{result_dir}: a report is made for slides, not tile folders")
    classes = summary_classes(summary)
    slide_path = Path(summary["input"])
    crops = _least_sure_crops(slide_path, summary["input_mpp"], rows) if slide_path.exists() else []
    display = {c.name: html.escape(c.display_name) for c in classes}
    figures = "".join(
        f"<figure><img src='{_data_uri(image, 'JPEG')}' width='128' height='128' "
        f"alt='tile at {row['minx']}, {row['miny']}'><figcaption>{display[row['label']]} "
        f"{float(row['confidence']):.2f}<br>x {row['minx']}, y {row['miny']}</figcaption></figure>"
        for image, row in crops
    )
    model = summary["model"]
    described = {
        **{f"model {k}": v for k, v in model.items()},
        # Summaries written before 0.x kept these under "settings" and "mpp".
        **{f"tiling {k}": v for k, v in summary.get("tiling", summary.get("settings", {})).items()},
        "stains": summary["stains"],
        "ossiclass": run.get("ossiclass"),
        "model sha256": run.get("model_sha256"),
    }
    settings = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in described.items()
    )
    tiles = summary["tiles"]
    title = html.escape(slide_path.name)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ossiclass: {title}</title>
<style>{STYLE}</style></head><body>
<h1>{title}</h1>
<p class="note">{tiles["classified"]} tiles classified, {tiles["skipped"]} skipped, at
{model.get("model_mpp", model.get("mpp")):g} µm/px ({model["input_px"]} px tiles); mean confidence
{summary["mean_confidence"]:.2f}. Made {html.escape(run.get("finished", ""))}.</p>
<h2>Tissue map</h2>
<img class="map" id="map" src="{_data_uri(tissue_map.convert("RGB"), "JPEG")}" alt="tissue map">
<h2>Composition</h2>
<table id="composition"><tr><th>class</th><th class="num">tiles</th><th class="num">share</th>
<th class="num">area (mm²)</th></tr>
{_composition_rows(summary, classes)}
</table>
{_measures_section(result_dir, summary)}
<h2>Confidence</h2>
<img src="{_data_uri(_histogram([float(r["confidence"]) for r in rows]))}" alt="histogram">
<h2>The {len(crops)} tiles the model was least sure of</h2>
<div class="crops">{figures}</div>
{_agreement_section(result_dir, slide_path)}
<h2>Model and settings</h2>
<table>{settings}</table>
<p class="note">A model trained only on synthetic tiles is a starting point, not a diagnostic
tool.</p>
</body></html>
"""
    path = result_dir / "report.html"
    write_text_atomic(path, page)
    return path


INDEX_MARK = '<meta name="generator" content="ossiclass report --index">'
"""What an index page holds, so that a file which is not one is never written over."""


def check_index(path: Path) -> Path:
    """`path`, where an index page can be written: an .html name, and no file there but an
    index this command wrote; else `BadInputError`."""
    check_output(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise BadInputError(f"{path}: an index page is written as .html")
    if path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(4096)
        # Indexes written before the mark have only their title to go by.
        if INDEX_MARK.encode() not in head and not re.search(
            rb"<title>ossiclass: \d+ slides<", head
        ):
            raise BadInputError(f"{path}: exists and is not an ossiclass index; not written over")
    return path


def write_report(result_dir: str | Path) -> Path:
    """Write `report.html` in a folder that `classify` filled (a slide's); returns its path."""
    try:
        return _write_report(Path(result_dir))
    except OssiclassError:  # already one line
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
        raise BadInputError(
            f"{result_dir}: not a finished classify output ({type(error).__name__}: {error}); "
            "run classify again"
        ) from None


def write_index(reports: list[Path], path: str | Path) -> Path:
    """An index page linking several slides' reports, with each slide's composition: a column
    per class of any of their models, in the order they first appear."""
    path = Path(path)
    summaries = [json.loads((report.parent / "summary.json").read_text()) for report in reports]
    columns = list({c.name: c for summary in summaries for c in summary_classes(summary)}.values())
    header = "".join(f"<th class='num'>{html.escape(c.display_name)}</th>" for c in columns)
    lines = []
    for report, summary in zip(reports, summaries, strict=True):
        link = html.escape(Path(os.path.relpath(report, path.parent)).as_posix())
        shares = "".join(
            f"<td class='num'>{summary['classes'][c.name]['fraction']:.1%}</td>"
            if c.name in summary["classes"]
            else "<td class='num'>-</td>"
            for c in columns
        )
        name = html.escape(Path(summary["input"]).name)
        count = summary["tiles"]["classified"]
        lines.append(
            f"<tr><td><a href='{link}'>{name}</a></td><td class='num'>{count}</td>{shares}</tr>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{INDEX_MARK}
<title>ossiclass: {len(reports)} slides</title>
<style>{STYLE}</style></head><body>
<h1>{len(reports)} slides</h1>
<table id="slides"><tr><th>slide</th><th class="num">tiles</th>{header}</tr>
{"".join(lines)}
</table></body></html>
"""
    write_text_atomic(path, page)
    return path
