"""The files a classification run leaves (see DESIGN.md), each written atomically:
`tiles.csv` (WSInfer's columns); for slides `tiles.geojson` (QuPath-importable tiles),
`regions.geojson` (merged class regions, QuPath annotations), `measures.geojson` (where the
measures were taken, `places.py`), `map.png` and `measures.png`, beside `classmap.tif`
(`classmap.py`); `skipped.txt` where items could not be read; `summary.json` and `run.json`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely
import torch

from ossiclass import __version__
from ossiclass.classes import TissueClass, class_list_to_dict
from ossiclass.files import save_png, write_text_atomic
from ossiclass.preprocess.tiling import BOX_COLUMNS, grid_px
from ossiclass.preprocess.tissue import IO

if TYPE_CHECKING:
    from ossiclass.classify import Plan, Tiling
    from ossiclass.classmap import ClassMap
    from ossiclass.predict import Predictor
    from ossiclass.qupath import Region
    from ossiclass.sources import TileSource


def result_column_names(classes: tuple[TissueClass, ...]) -> tuple[str, ...]:
    """The result columns for a class list: label, confidence, then `prob_<name>` per class."""
    return ("label", "confidence", *(f"prob_{c.name}" for c in classes))


def result_columns(probabilities: list[float], classes: tuple[TissueClass, ...]) -> dict:
    """The result columns of one item: label (machine name), confidence and a probability per
    class of `classes`, the model's class list (in the order of `probabilities`)."""
    best = int(np.argmax(probabilities))
    rounded = [round(p, 5) for p in probabilities]
    return {
        "label": classes[best].name,
        "confidence": rounded[best],
        **{f"prob_{c.name}": p for c, p in zip(classes, rounded, strict=True)},
    }


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_tiles_csv(
    path: Path, rows: list[dict], key_columns: tuple[str, ...], classes: tuple[TissueClass, ...]
) -> None:
    """One row per item: its key columns, then label, confidence and a probability per class."""
    table = io.StringIO()
    columns = [*key_columns, *result_column_names(classes)]
    writer = csv.DictWriter(table, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, table.getvalue())


def skipped_line(row: dict) -> str:
    """An item that could not be read: its file or box, and why."""
    return f"{row.get('path', (row.get('minx'), row.get('miny')))}: {row['reason']}"


def write_skipped(path: Path, skipped: list[dict]) -> None:
    """One line per item that could not be read."""
    write_text_atomic(path, "\n".join(map(skipped_line, skipped)) + "\n")


def geojson(rows: list[dict], classes: tuple[TissueClass, ...]) -> dict:
    """QuPath-importable GeoJSON: a FeatureCollection with one tile object per row, its
    `classification` (the class's display name, as QuPath shows it, and RGB colour), the
    class's machine name as `ossiclass_class`, and confidence and probabilities as
    measurements. `classes`: the model's class list. A tile's id follows from its box, so a
    rerun writes the same file."""
    from ossiclass import qupath

    by_name = {c.name: c for c in classes}
    features = []
    for row in rows:
        x, y, w, h = (row[k] for k in BOX_COLUMNS)
        tissue = by_name[row["label"]]
        measurements = {f"prob_{c.name}": row[f"prob_{c.name}"] for c in classes}
        features.append(
            qupath.feature(
                shapely.box(x, y, x + w, y + h, ccw=False),
                tissue.display_name,
                tissue.colour,
                "tile",
                {"confidence": row["confidence"], **measurements},
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"ossiclass:tile:{x},{y},{w},{h}")),
                extra={"ossiclass_class": tissue.name},
            )
        )
    return qupath.feature_collection(features)


def regions(rows: list[dict], classes: tuple[TissueClass, ...], mpp: float) -> dict:
    """The tiles of a grid that does not overlap merged per class into QuPath annotations
    (`qupath.merged_regions`), each with its count of tiles and its area in mm² at `mpp` µm
    per level-0 pixel. (A finer grid's regions come from its class map: `classmap.regions`.)"""
    from ossiclass import qupath

    boxes = np.array([[row[k] for k in BOX_COLUMNS] for row in rows], dtype=np.float64)
    labels = [row["label"] for row in rows]
    return qupath.feature_collection(qupath.merged_regions(boxes, labels, classes, mpp))


def label_indices(rows: list[dict], classes: tuple[TissueClass, ...]) -> list[int]:
    """Each row's label as its index in the class list."""
    index = {c.name: i for i, c in enumerate(classes)}
    return [index[row["label"]] for row in rows]


def write_slide_outputs(out: Path, rows: list[dict], source: TileSource, predictor: Predictor,
                        tiling: Tiling, region: Region | None) -> dict:  # fmt: skip
    """A slide's maps and measures: `tiles.geojson`, `classmap.tif`, `measures.geojson`,
    `regions.geojson`, `map.png` and `measures.png`. The measures are taken in `region` (None:
    the whole slide). Returns what they add to the summary: the class map's metadata, the
    measures and the region."""
    from ossiclass import refine
    from ossiclass.classmap import class_map, region_mask, write_classmap
    from ossiclass.classmap import regions as map_regions
    from ossiclass.histomorphometry import measure_slide
    from ossiclass.places import places

    classes, prep, mpp = predictor.classes, predictor.preprocessing, source.scale.mpp
    write_text_atomic(out / "tiles.geojson", json.dumps(geojson(rows, classes)))
    box, step = grid_px(mpp, prep.model_mpp, prep.input_px, tiling.stride_px)
    # A cell per step of the grid, or per tile where tiles lie apart (a stride over the tile);
    # refined, cells of about 8 µm.
    cell = min(refine.cell_px(mpp), step, box) if tiling.refine else min(step, box)
    classmap = class_map(rows, classes, source.size, cell, mpp, source.tissue,
                         tiling.min_tissue)  # fmt: skip
    if tiling.refine:
        classmap = refine.refine_map(classmap, source.path, source.glass, box)
        if rows and "cells" in rows[0]:  # the model has a cell head
            classmap = refine.split_callus(classmap, rows)
    write_classmap(out / "classmap.tif", classmap)
    inside = None if region is None else region_mask(classmap, region.geometry)
    measured = measure_slide(classmap.labels, classmap.mpp, classes, inside)
    added = {
        "classmap": classmap.metadata(),
        "histomorphometry": [measure.to_dict() for measure in measured.measures],
    }
    if region is not None:
        area_mm2 = region.geometry.area * mpp * mpp / 1e6
        added["measured_in"] = {"file": str(region.path), "area_mm2": area_mm2}
    taken = places(measured, classmap, None if region is None else region.geometry)
    write_text_atomic(out / "measures.geojson", json.dumps(taken))
    merged = map_regions(classmap) if cell < box else regions(rows, classes, mpp)
    write_text_atomic(out / "regions.geojson", json.dumps(merged))
    write_maps(out, source.path, classmap, taken)
    return added


def write_maps(out: Path, slide_path: Path, classmap: ClassMap, places: dict) -> None:
    """`map.png`: the slide's thumbnail with each cell of its class map in its class's colour
    (with the default stride, each tile), and a legend of the map's classes; and, where
    `places` (a FeatureCollection of `places.places`) holds any, `measures.png`: the same map
    with where the measures were taken drawn over it."""
    from ossiclass.classmap import cells
    from ossiclass.places import draw_places
    from ossiclass.report import tissue_map
    from ossiclass.slides import open_slide

    with open_slide(slide_path, classmap.input_mpp) as slide:
        thumbnail, downsample = slide.thumbnail(2048)
    boxes, labels, _ = cells(classmap, runs=False)
    image = tissue_map(thumbnail, downsample, boxes, labels.tolist(), classmap.classes,
                       title=slide_path.name)  # fmt: skip
    save_png(np.asarray(image.convert("RGB")), out / "map.png")
    if places["features"]:
        drawn = draw_places(image, downsample, places)
        save_png(np.asarray(drawn.convert("RGB")), out / "measures.png")


def tile_areas_mm2(rows: list[dict], step_px: int, size: tuple[int, int], mpp: float) -> np.ndarray:
    """The area each tile of a grid stands for, in mm²: the square of one step of the grid
    (`step_px` level-0 pixels at `mpp` µm/px) from the tile's corner, clipped to the slide of
    level-0 `size` (width, height). Tiles never count an area twice, and tiles that lie apart
    (a step over the tile) never count more than the slide."""
    corners = np.array([[row["minx"], row["miny"]] for row in rows], np.float64).reshape(-1, 2)
    ends = np.minimum(corners + step_px, np.asarray(size, dtype=np.float64))
    sides = np.clip(ends - corners, 0.0, None)
    return sides.prod(axis=1) * mpp * mpp / 1e6


def composition(rows: list[dict], areas_mm2: np.ndarray | None,
                classes: tuple[TissueClass, ...]) -> dict:  # fmt: skip
    """Per class of `classes`, by machine name: tiles, share of the tiles and, given the
    area (mm²) each tile stands for (one per row), area in mm²."""
    indices = label_indices(rows, classes)
    counts = np.bincount(indices, minlength=len(classes)).tolist()
    if areas_mm2 is not None:
        areas = np.bincount(indices, weights=areas_mm2, minlength=len(classes)).tolist()
    return {
        tissue.name: {
            "tiles": count,
            "fraction": round(count / max(len(rows), 1), 4),
            **({"area_mm2": round(areas[k], 6)} if areas_mm2 is not None else {}),
        }
        for k, (tissue, count) in enumerate(zip(classes, counts, strict=True))
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


def glass_rgb(source: TileSource) -> list[float] | None:
    """The glass colour found, as plain data for job.json and summary.json."""
    return None if source.glass is None else np.round(source.glass, 1).tolist()


def _white_balance_note(source: TileSource, tiling: Tiling) -> str:
    """What white balance a run applied, for the summary and the command line."""
    if not source.has_boxes:
        return "none: a tile alone shows too little glass to go by"
    if source.glass is None:
        return "none: no bare glass around the tissue; colours as scanned"
    if not tiling.white_balance:
        return "off: colours as scanned"
    glass = "/".join(f"{value:.0f}" for value in source.glass)
    return f"glass (RGB {glass}) scaled to {IO:.0f} in each channel"


def summary(plan: Plan, rows, skipped, predictor: Predictor, tiling: Tiling) -> dict:
    """Composition (tiles, share and, for slides, area in mm² per class of the model's), counts,
    settings, and the model's class list (`class_list`, as `class_list_to_dict` writes it)."""
    source, prep = plan.source, predictor.preprocessing
    areas_mm2 = None
    if source.has_boxes:
        _, step = grid_px(source.scale.mpp, prep.model_mpp, prep.input_px, tiling.stride_px)
        areas_mm2 = tile_areas_mm2(rows, step, source.size, source.scale.mpp)
    confidences = [row["confidence"] for row in rows]
    return {
        "input": str(source.path),
        "kind": source.kind,
        **source.scales(),
        "tiles": {"classified": len(rows), "skipped": len(skipped)},
        "classes": composition(rows, areas_mm2, predictor.classes),
        "class_list": class_list_to_dict(predictor.classes),
        "mean_confidence": round(float(np.mean(confidences)), 4) if rows else None,
        "glass_rgb": glass_rgb(source),
        "white_balance": _white_balance_note(source, tiling),
        "stains": (
            "estimated once for the slide"
            if plan.stains is not None
            else "estimated per tile"
            if prep.normalizer
            else "not normalised"
        ),  # fmt: skip
        "model": {
            "file": str(predictor.path),
            "backbone": predictor.settings.backbone,
            "input_px": prep.input_px,
            "model_mpp": prep.model_mpp,
            "normalizer": (prep.normalizer or {}).get("method"),
            "temperature": predictor.settings.temperature,
            "precision": predictor.precision,
        },
        "tiling": asdict(tiling),
        "running": asdict(plan.running),
    }
