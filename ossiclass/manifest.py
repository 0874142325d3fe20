"""A study's inputs, read and checked: the manifest (a `slide` column, paths relative to it,
and any columns the lab keeps) and the lab's manual measures of the same slides. Every problem
is a one-line `BadInputError` naming the file and line."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ossiclass.errors import BadInputError

SLIDE, ANIMAL, DAY, ROI = "slide", "animal", "day", "roi"
"""Manifest columns with a meaning: the slide's path, the animal (points in the plots), the day
(the plots' x axis), the region to measure in (a QuPath GeoJSON, relative to the manifest;
optional, blank: the whole slide)."""


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: its columns in order, its rows as written (one per slide), each
    slide's resolved path and the region each is measured in (None: the whole slide)."""

    path: Path
    columns: tuple[str, ...]
    rows: list[dict[str, str]]
    slides: list[Path]
    rois: list[Path | None]

    def folder(self, out: Path, index: int) -> Path:
        """Where slide `index` is classified: OUT/slides/<stem> (stems are unique)."""
        return out / "slides" / self.slides[index].stem


def read_manifest(path: str | Path) -> Manifest:
    """Read and check a study manifest; every problem is a one-line `BadInputError`."""
    path = Path(path)
    columns, lines = read_csv(path)
    if not columns or not lines:
        raise BadInputError(f"{path}: empty manifest, no slides")
    if SLIDE not in columns:
        raise BadInputError(f"{path}: no {SLIDE!r} column (columns: {', '.join(columns)})")
    slides, rois, seen, stems = [], [], {}, {}
    for line, row in lines:
        rois.append(_roi(path, line, row.get(ROI, "").strip()))
        text = row[SLIDE].strip()
        if not text:
            raise BadInputError(f"{path} line {line}: no slide")
        slide = (path.parent / text).resolve()
        if not slide.exists():
            raise BadInputError(f"{path} line {line}: slide {text} not found (at {slide})")
        if slide in seen:
            raise BadInputError(f"{path} lines {seen[slide]} and {line}: the same slide {text}")
        if slide.stem in stems:
            raise BadInputError(
                f"{path} lines {stems[slide.stem]} and {line}: slides named {slide.stem} would "
                f"share the output folder slides/{slide.stem}; rename one"
            )
        seen[slide], stems[slide.stem] = line, line
        slides.append(slide)
    return Manifest(path, columns, [row for _, row in lines], slides, rois)


def _roi(path: Path, line: int, text: str) -> Path | None:
    """The region file a manifest line names, resolved; None where blank."""
    if not text:
        return None
    roi = (path.parent / text).resolve()
    if not roi.is_file():
        raise BadInputError(f"{path} line {line}: region {text} not found (at {roi})")
    return roi


def group_columns(manifest: Manifest, by: list[str] | None = None) -> tuple[str, ...]:
    """The columns to group by: `by`, or else every column but the slide, the animal and the
    region in which some value repeats (group, day, genotype, ...). Empty: one group of every
    slide."""
    if by is not None:
        unknown = [c for c in by if c not in manifest.columns or c == SLIDE]
        if unknown:
            choices = ", ".join(c for c in manifest.columns if c != SLIDE)
            raise BadInputError(
                f"--by {unknown[0]}: not a column of {manifest.path} to group by (columns: "
                f"{choices or 'none but slide'})"
            )
        return tuple(by)
    chosen = []
    for column in manifest.columns:
        values = [row[column] for row in manifest.rows]
        if column not in (SLIDE, ANIMAL, ROI) and len(set(values)) < len(values):
            chosen.append(column)
    return tuple(chosen)


LARGEST_VALUE = 1e15
"""A manual measure's largest size: beyond it, the agreement's sums overflow."""


@dataclass(frozen=True)
class Manual:
    """A lab's manual measures of the study's slides: the CSV, its columns other than the
    slide and the manifest's, and per slide stem its line and values as written."""

    path: Path
    columns: tuple[str, ...]
    rows: dict[str, tuple[int, dict[str, str]]]

    def values(self, column: str) -> dict[str, float]:
        """Slide stem -> value of `column`, blanks left out; text that is no number is a
        `BadInputError` naming its line (only in a column that is compared)."""
        values = {}
        for stem, (line, row) in self.rows.items():
            if row[column]:
                try:
                    value = float(row[column])
                except ValueError:
                    value = math.nan
                if not abs(value) < LARGEST_VALUE:  # nan, inf and 1e308 alike
                    raise BadInputError(f"{self.path} line {line}: {column}: {row[column]!r} is "
                                        f"not a number under {LARGEST_VALUE:g}")  # fmt: skip
                values[stem] = value
        return values


def read_manual(path: str | Path, study: Manifest) -> Manual:
    """Read and check the manual CSV: a `slide` column naming slides of the study (by path or
    file name, as in the manifest; matched by file name without extension), each once."""
    path = Path(path)
    columns, lines = read_csv(path)
    if SLIDE not in columns:
        raise BadInputError(f"{path}: no {SLIDE!r} column (columns: {', '.join(columns)})")
    measures = tuple(c for c in columns if c != SLIDE and c not in study.columns)
    if not measures:
        raise BadInputError(f"{path}: no measure columns besides those of the manifest")
    stems = {slide.stem for slide in study.slides}
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    for line, row in lines:
        stem = Path(row[SLIDE]).stem
        if stem not in stems:
            raise BadInputError(f"{path} line {line}: slide {row[SLIDE]!r} is not in the study")
        if stem in rows:
            raise BadInputError(f"{path} line {line}: slide {row[SLIDE]!r} a second time")
        rows[stem] = (line, row)
    return Manual(path, measures, rows)


def read_csv(path: Path) -> tuple[tuple[str, ...], list[tuple[int, dict[str, str]]]]:
    """A CSV's columns and its (line number, row) pairs, blank rows left out, values stripped;
    checked: the file exists, is readable text, names no column twice, and each row has no
    more values than there are columns. Study manifests, manual measures and tile manifests."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = tuple(c.strip() for c in reader.fieldnames or ())
            text_rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise BadInputError(f"{path}: not a readable CSV ({error})") from None
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise BadInputError(f"{path}: column {repeated[0]!r} twice")
    rows = []
    for line, row in text_rows:
        if None in row:
            raise BadInputError(f"{path} line {line}: more values than columns")
        rows.append(
            (line, {c: (v or "").strip() for c, v in zip(columns, row.values(), strict=True)})
        )
    return columns, [(line, row) for line, row in rows if any(row.values())]


def groups(study: Manifest, columns: tuple[str, ...]) -> dict[tuple[str, ...], list[int]]:
    """Group key (values of `columns`) -> indices of its slides, keys sorted column by column:
    numerically where every value of a column is a number, else in order of appearance."""
    members: dict[tuple[str, ...], list[int]] = {}
    for index, row in enumerate(study.rows):
        members.setdefault(tuple(row[c] for c in columns), []).append(index)
    ranks = [
        {v: rank for rank, v in enumerate(_sorted_unique([row[c] for row in study.rows]))}
        for c in columns
    ]
    return dict(
        sorted(
            members.items(), key=lambda item: [r[v] for r, v in zip(ranks, item[0], strict=True)]
        )
    )


def _sorted_unique(values: list[str]) -> list[str]:
    """The distinct values: numerically sorted where all are numbers, else as they come."""
    unique = list(dict.fromkeys(values))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique
