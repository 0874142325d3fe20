"""The files a classification run leaves (see DESIGN.md), each written atomically:
`tiles.csv` (WSInfer's columns), `tiles.geojson` (QuPath-importable tiles) and `map.png` for
slides, `skipped.txt` where items could not be read, `summary.json` and `run.json`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ossiclass import __version__
from ossiclass.classes import CLASSES, TISSUE_CLASSES
from ossiclass.files import save_png, write_text_atomic

RESULT_COLUMNS = ("label", "confidence", *(f"prob_{name}" for name in CLASSES))
BOX_COLUMNS = ("minx", "miny", "width", "height")


def result_columns(probabilities: list[float]) -> dict:
    """The result columns of one item: label, confidence and a probability per class."""
    best = int(np.argmax(probabilities))
    rounded = [round(p, 5) for p in probabilities]
    return {
        "label": CLASSES[best],
        "confidence": rounded[best],
        **{f"prob_{name}": p for name, p in zip(CLASSES, rounded, strict=True)},
    }


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_tiles_csv(path: Path, rows: list[dict], key_columns: tuple[str, ...]) -> None:
    """One row per item: its key columns, then label, confidence and probabilities."""
    table = io.StringIO()
    writer = csv.DictWriter(table, [*key_columns, *RESULT_COLUMNS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, table.getvalue())


def write_skipped(path: Path, skipped: list[dict]) -> None:
    """One line per item that could not be read: its file or box, and why."""
    lines = [f"{row.get('path', (row.get('minx'), row.get('miny')))}: {row['reason']}"
             for row in skipped]  # fmt: skip
    write_text_atomic(path, "\n".join(lines) + "\n")


def geojson(rows: list[dict]) -> dict:
    """QuPath-importable GeoJSON: a FeatureCollection with one Polygon tile per row, its
    `classification` (name and RGB colour) and the probabilities as measurements."""
    colours = {c.name: list(c.colour) for c in TISSUE_CLASSES}
    features = []
    for row in rows:
        x, y, w, h = (row[k] for k in BOX_COLUMNS)
        ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
        measurements = {k: row[k] for k in RESULT_COLUMNS if k.startswith("prob_")}
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "tile",
                    "classification": {"name": row["label"], "color": colours[row["label"]]},
                    "measurements": {"confidence": row["confidence"], **measurements},
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_map(path: Path, slide_path: Path, input_mpp: float, rows: list[dict]) -> None:
    """The slide's thumbnail with each tile in its class's colour, and a legend."""
    from ossiclass.report import tissue_map
    from ossiclass.slides import open_slide

    with open_slide(slide_path, input_mpp) as slide:
        thumbnail, downsample = slide.thumbnail(2048)
    boxes = [tuple(row[k] for k in BOX_COLUMNS) for row in rows]
    labels = [CLASSES.index(row["label"]) for row in rows]
    image = tissue_map(thumbnail, downsample, boxes, labels, title=slide_path.name)
    save_png(np.asarray(image.convert("RGB")), path)


def composition(rows: list[dict], tile_mm2: float | None) -> dict:
    """Per class: tiles, share of the tiles and, given each tile's area (mm²), area in mm²."""
    counts = np.bincount(
        [CLASSES.index(row["label"]) for row in rows], minlength=len(CLASSES)
    ).tolist()
    return {
        name: {
            "tiles": count,
            "fraction": round(count / max(len(rows), 1), 4),
            **({"area_mm2": round(count * tile_mm2, 6)} if tile_mm2 is not None else {}),
        }
        for name, count in zip(CLASSES, counts, strict=True)
    }


def run_record(job: dict, model: Path, precision: str, started: float, classified: int) -> dict:
    """How the outputs were made: versions, command line, model file and its hash, times."""
    return {
        "ossiclass": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "command": sys.argv,
        "input": job["input"],
        "model": str(model),
        "model_sha256": job["model_sha256"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 2),
        "classified_in_this_run": classified,
        "precision": precision,
    }


def write_json(path: Path, content: dict) -> None:
    """Plain data as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(content, indent=2))
