"""Tiles from a lab's QuPath annotations: a tile data set to train or fine-tune on.

For each slide and its GeoJSON export, the tile grid `classify` lays is laid at the model's
µm/px, and a tile is kept where one class's polygons cover at least `min_cover` of it and the
other classes' polygons lie within the rest. Tiles are read, white-balanced against the slide's
glass and resized exactly as `classify` feeds them to the model (`tiling.read_tile`), and written
as `OUT/<class>/<slide>_<x>_<y>.png` with `OUT/manifest.csv` (columns `MANIFEST_COLUMNS`; group =
the slide's stem, so validation holds out whole slides) and `OUT/classes.json`.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from tqdm import tqdm

from ossiclass.classes import (
    CLASSES,
    NAME_PATTERN,
    TissueClass,
    class_list_from_dict,
    class_list_to_dict,
    machine_name,
    read_label_map_file,
    write_class_list,
)
from ossiclass.errors import BadInputError
from ossiclass.files import first_shared, partial_path, save_png, write_text_atomic
from ossiclass.preprocess.tiling import BOX_COLUMNS, read_tile, slide_tissue_mask, tile_grid
from ossiclass.preprocess.tissue import white_balance
from ossiclass.qupath import AnnotationFile, read_annotations
from ossiclass.scale import checked_scale
from ossiclass.slides import Slide, open_slide

MANIFEST_COLUMNS = ("path", "label", "group", "mpp", "slide", "annotation", *BOX_COLUMNS)


@dataclass(frozen=True)
class CutSettings:
    """How tiles are cut.

    model_mpp, tile_px : the model's µm per pixel and input size: a tile covers
        `tile_px * model_mpp` µm and is written at `tile_px` pixels.
    min_cover : least share of a tile one class's polygons must cover.
    stride_px : step between tiles in pixels at the model's µm/px (default `tile_px`: the grid
        `classify` lays; less gives overlapping tiles, more of them from small regions).
    input_mpp : the slides' µm/px, overriding what they record (see `scale.resolve_mpp`).
    white_balance : scale each slide's channels so that its glass reads neutral, as `classify`
        does by default (keep the two alike).
    """

    model_mpp: float
    tile_px: int
    min_cover: float = 0.9
    stride_px: int | None = None
    input_mpp: float | None = None
    white_balance: bool = True

    def validate(self) -> None:
        checked_scale(self.model_mpp, "model_mpp")
        if self.tile_px < 8:
            raise BadInputError(f"tile_px must be at least 8, got {self.tile_px}")
        if not 0 < self.min_cover <= 1:
            raise BadInputError(f"min_cover must lie in (0, 1], got {self.min_cover}")
        if self.stride_px is not None and self.stride_px < 1:
            raise BadInputError(f"stride_px must be positive, got {self.stride_px}")
        if self.input_mpp is not None:
            checked_scale(self.input_mpp, "input_mpp")


@dataclass
class CutResult:
    """What `cut_annotated_tiles` wrote: the manifest, the class list, tiles per class machine
    name, objects skipped (reason -> count, over all files), warnings (polygons repaired),
    notes, and the slides whose µm/px was assumed."""

    manifest: Path
    classes: tuple[TissueClass, ...]
    tiles: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    assumed_scale: list[str] = field(default_factory=list)


def cut_annotated_tiles(
    slides: Sequence[str | Path],
    geojsons: Sequence[str | Path],
    out: str | Path,
    settings: CutSettings,
    label_map: str | Path | dict | None = None,
    progress: bool = True,
) -> CutResult:
    """Cut a tile data set from slides and their QuPath annotations (see the module's note).

    Parameters
    ----------
    slides : slides in any format `classify` reads.
    geojsons : one QuPath GeoJSON export per slide, paired by file stem where the stems match,
        else by order.
    out : the tile set's folder; written whole under a temporary name and then renamed, so a
        rerun replaces an earlier set cleanly (a folder that is neither empty nor such a set is
        refused).
    label_map : a JSON object (or its file) from QuPath class names to machine names, null to
        drop a class; None: every class by `machine_name` of its QuPath name.

    Returns
    -------
    `CutResult`; `BadInputError` for anything that cannot be used, naming the file at fault.
    """
    settings.validate()
    out = Path(out)
    _check_replaceable(out)
    mapping = _read_label_map(label_map) if label_map is not None else None
    pairs = _pair(slides, geojsons)
    files = [read_annotations(geojson) for _, geojson in pairs]
    result = CutResult(out / "manifest.csv", _class_list(files, mapping))
    for found in files:
        result.skipped.update(found.skipped)
        result.warnings += found.warnings
    staging = partial_path(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        rows = []
        for (slide_path, _), found in zip(pairs, files, strict=True):
            labelled = _labelled(found, mapping, result.skipped)
            rows += _cut_slide(slide_path, found.path, labelled, settings, staging,
                               result, progress)  # fmt: skip
        _write_tables(staging, rows, result)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace(staging, out)
    return result


def _write_tables(folder: Path, rows: list[dict], result: CutResult) -> None:
    """`manifest.csv` and `classes.json`: the classes that got tiles, in the label set's order
    (a class without tiles would leave training a class it cannot learn)."""
    empty = [c.display_name for c in result.classes if not result.tiles[c.name]]
    if empty:
        result.notes.append(f"no tile lies inside {', '.join(empty)}: left out of the class list")
    result.classes = class_list_from_dict(
        [entry for entry in class_list_to_dict(result.classes) if result.tiles[entry["name"]]]
    )
    write_class_list(folder, result.classes)
    table = io.StringIO()
    writer = csv.DictWriter(table, MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(folder / "manifest.csv", table.getvalue())


def _check_replaceable(out: Path) -> None:
    """`out` may be written: it does not exist, is empty, or holds a set this module wrote."""
    if not out.exists():
        return
    if not out.is_dir():
        raise BadInputError(f"{out}: exists and is not a folder")
    if any(out.iterdir()) and _header(out / "manifest.csv") != ",".join(MANIFEST_COLUMNS):
        raise BadInputError(
            f"{out}: a folder that holds other files (not a tile set cut from annotations); "
            "give an empty or new --out"
        )


def _header(manifest: Path) -> str | None:
    """The first line of a manifest, None where there is none."""
    try:
        with open(manifest) as handle:
            return handle.readline().strip()
    except OSError:
        return None


def _replace(staging: Path, out: Path) -> None:
    """Put the finished `staging` folder in place of `out`, replacing an earlier set."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _read_label_map(source: str | Path | dict) -> dict[str, str | None]:
    """A label map: QuPath class name -> machine name (or None: drop the class)."""
    if isinstance(source, dict):
        mapping, where = source, "the label map"
    else:
        where = str(source)
        try:
            mapping = read_label_map_file(source, "QuPath class: name or null")
        except ValueError as error:
            raise BadInputError(f"{source}: {error}") from None
    if not isinstance(mapping, dict):
        raise BadInputError(f"{where}: a label map is a JSON object {{QuPath class: name or null}}")
    wrong = [v for v in mapping.values() if v is not None and not NAME_PATTERN.fullmatch(str(v))]
    if wrong:
        raise BadInputError(
            f"{where}: {wrong[0]!r} is not a machine name (a-z, 0-9 and _, from a letter)"
        )
    return mapping


def _pair(slides: Sequence, geojsons: Sequence) -> list[tuple[Path, Path]]:
    """(slide, its GeoJSON): by name where any GeoJSON is named after a slide (then every one
    must be, see `_exported_names`), else by order."""
    slides, geojsons = [Path(s) for s in slides], [Path(g) for g in geojsons]
    names, stems = [str(s) for s in slides], [s.stem for s in slides]
    stem, _ = first_shared(names, stems)
    if stem is not None:
        raise BadInputError(
            f"two slides named {stem}: a slide's name is its group, so names must differ"
        )
    _, same = first_shared(names, [s.resolve() for s in slides])
    if same:
        raise BadInputError(
            f"{' and '.join(same)} are one file: its tiles would be two groups, and could "
            "fall on both sides of the validation split"
        )
    if len(slides) != len(geojsons):
        raise BadInputError(
            f"{len(slides)} slides but {len(geojsons)} GeoJSON files: give one per slide, in "
            "the same order (or named after its slide)"
        )
    owners = [[s for s in slides if g.stem in _exported_names(s)] for g in geojsons]
    if not any(owners):
        return list(zip(slides, geojsons, strict=True))
    slide, twice = first_shared([str(g) for g in geojsons], [o[0] if o else None for o in owners])
    unnamed = [str(g) for g, owner in zip(geojsons, owners, strict=True) if not owner]
    if unnamed or twice:
        problem = (
            f"{unnamed[0]} is named after none" if unnamed
            else f"{' and '.join(twice)} are both named after {slide}"
        )  # fmt: skip
        raise BadInputError(
            f"GeoJSON files are paired with slides by name, but {problem}: name each after its "
            "slide (s1.svs: s1.geojson), or none, to pair them in order"
        )
    by_slide = {owner[0]: g for g, owner in zip(geojsons, owners, strict=True)}
    return [(s, by_slide[s]) for s in slides]


def _exported_names(slide: Path) -> set[str]:
    """The stems a GeoJSON exported from `slide` may have: the slide's stem (s1.geojson), its
    whole name (s1.svs.geojson, as scripts name them), its stem without .ome (s1.ome.tif)."""
    return {slide.stem, slide.name, slide.stem.removesuffix(".ome")}


def _machine(name: str, mapping: dict | None, where: Path) -> str | None:
    """The machine name of a QuPath class (None: dropped by the label map)."""
    if mapping is None:
        return machine_name(name)
    if name not in mapping:
        raise BadInputError(
            f"{where}: class {name!r} is not in the label map (map it to a name, or to null "
            "to drop it)"
        )
    return mapping[name]


def _class_list(files: list[AnnotationFile], mapping: dict | None) -> tuple[TissueClass, ...]:
    """The label set: classes of the six in the six's order, then the others in order of
    appearance; display name and colour the lab's (the first its annotations give), else the
    known ones."""
    seen: dict[str, dict] = {}
    for found in files:
        for annotation in found.annotations:
            name = _machine(annotation.name, mapping, found.path)
            if name is None:
                continue
            entry = seen.setdefault(name, {"name": name, "display_name": annotation.name})
            if mapping is None and entry["display_name"] != annotation.name:
                raise BadInputError(
                    f"{found.path}: QuPath classes {entry['display_name']!r} and "
                    f"{annotation.name!r} both make the class name {name!r}; name the classes "
                    "with a label map (--label-map)"
                )
            if "colour" not in entry and annotation.colour is not None:
                entry["colour"] = list(annotation.colour)
    if not seen:
        raise BadInputError(
            f"{', '.join(str(a.path) for a in files)}: no classified annotations to cut tiles "
            "from (unclassified, Ignore* and dropped classes are no training labels)"
        )
    ordered = [seen[n] for n in CLASSES if n in seen] + [
        e for n, e in seen.items() if n not in CLASSES
    ]
    try:
        return class_list_from_dict(ordered)
    except ValueError as error:  # e.g. a label map's name that is no machine name
        raise BadInputError(
            f"{', '.join(str(a.path) for a in files)}: {error}; name the classes with a label map"
        ) from None


def _labelled(found: AnnotationFile, mapping: dict | None, skipped: Counter) -> list:
    """(machine name, annotation) of the file's annotations the label map keeps."""
    labelled = []
    for annotation in found.annotations:
        name = _machine(annotation.name, mapping, found.path)
        if name is None:
            skipped[f"{annotation.name} (dropped by the label map)"] += 1
        else:
            labelled.append((name, annotation))
    return labelled


def _cut_slide(
    slide_path: Path, geojson: Path, labelled: list, settings: CutSettings, staging: Path,
    result: CutResult, progress: bool,
) -> list[dict]:  # fmt: skip
    """Write the tiles of one slide into `staging`; returns their manifest rows."""
    with open_slide(slide_path, settings.input_mpp) as slide:
        if slide.scale.source == "assumed":
            result.assumed_scale.append(slide_path.name)
        bounds = shapely.box(0, 0, *slide.dimensions)
        for _, annotation in labelled:
            if not annotation.geometry.intersects(bounds):
                raise BadInputError(
                    f"{geojson}: annotation {annotation.id} ({annotation.name}) lies outside "
                    f"{slide_path.name}'s {slide.dimensions[0]} x {slide.dimensions[1]} px"
                )
        if not labelled:
            result.notes.append(
                f"{geojson}: no classified annotations; {slide_path.name} gives no tiles"
            )
            return []
        boxes, labels, owners = _covered_boxes(slide, labelled, settings)
        if not boxes:
            raise BadInputError(
                f"{geojson}: no tile of {settings.tile_px * settings.model_mpp:g} µm on "
                f"{slide_path.name} lies {settings.min_cover:.0%} inside one class's polygons "
                f"({len(labelled)} polygons; a smaller --min-cover or larger polygons?)"
            )
        glass = slide_tissue_mask(slide).glass if settings.white_balance else None
        if settings.white_balance and glass is None:
            result.notes.append(f"{slide_path.name}: too little glass to white-balance against")
        rows = []
        for box, label, owner in tqdm(
            list(zip(boxes, labels, owners, strict=True)), desc=slide_path.stem, unit="tile",
            disable=not progress,
        ):  # fmt: skip
            tile = read_tile(slide, box, settings.tile_px)
            if glass is not None:
                tile = white_balance(tile, glass)
            relative = f"{label}/{slide_path.stem}_{box.x}_{box.y}.png"
            (staging / label).mkdir(exist_ok=True)
            save_png(tile, staging / relative)
            result.tiles[label] += 1
            rows.append(
                dict(zip(MANIFEST_COLUMNS, (
                    relative, label, slide_path.stem, settings.model_mpp, str(slide_path), owner,
                    box.x, box.y, box.width, box.height,
                ), strict=True))
            )  # fmt: skip
    return rows


def _covered_boxes(slide: Slide, labelled: list, settings: CutSettings):
    """The grid's boxes one class covers (see the module's note): (boxes, their class machine
    names, the id of the annotation of that class covering most of each)."""
    names = sorted({name for name, _ in labelled})
    unions = [shapely.union_all([a.geometry for n, a in labelled if n == name]) for name in names]
    parts = [shapely.get_parts(union) for union in unions]  # disjoint: their areas add up
    part_class = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
    parts = np.concatenate(parts)
    grid = list(tile_grid(slide.dimensions, input_mpp=slide.mpp,
                          model_mpp=settings.model_mpp, tile_px=settings.tile_px,
                          stride_px=settings.stride_px))  # fmt: skip
    if not grid:
        return [], [], []
    corners = np.array([(b.x, b.y, b.x + b.width, b.y + b.height) for b in grid], np.float64)
    squares = shapely.box(*corners.T)
    box_index, part_index = shapely.STRtree(parts).query(squares, predicate="intersects")
    areas = shapely.area(shapely.intersection(squares[box_index], parts[part_index]))
    cover = np.zeros((len(grid), len(names)))
    np.add.at(cover, (box_index, part_class[part_index]), areas)
    cover /= shapely.area(squares)[:, None]
    best = cover.argmax(axis=1)
    mine = cover[np.arange(len(grid)), best]
    others = cover.sum(axis=1) - mine
    keep = np.flatnonzero((mine >= settings.min_cover) & (others <= 1 - mine + 1e-9))
    tree = shapely.STRtree([a.geometry for _, a in labelled])
    owners = []
    for index in keep:
        candidates = [i for i in tree.query(squares[index]) if labelled[i][0] == names[best[index]]]
        overlap = shapely.area(shapely.intersection(squares[index], tree.geometries[candidates]))
        owners.append(labelled[candidates[int(np.argmax(overlap))]][1].id)
    return [grid[i] for i in keep], [names[best[i]] for i in keep], owners
