r"""Convert a downloaded public tile data set into ossiclass's tile layout.

    python scripts/convert_dataset.py data/osteosarcoma-sorted data/osteosarcoma \
        --label-map configs/label_maps/hand_sorted.json \
        --group-regex '^(Case-\d+|P\d+)' --mpp-in 1.0 --mpp-out 0.5

SRC is a folder of label folders (`SRC/<label>/*.png|jpg|jpeg|tif|tiff`) or a CSV with a path
and a label column (`--path-column`, `--label-column`; paths relative to the CSV). Each label
goes through the label map, a JSON object from the data set's labels to ours (null drops the
label); a label the map lacks stops the conversion before anything is written. Without a map,
the labels must be our class names.

OUT gets `OUT/<class>/<name>.png` and `OUT/manifest.csv` (path, label, group, source, and mpp
where the µm per pixel is known), ready for training. `group` is the slide or patient: the first
group of `--group-regex` matched on the file name, so the validation split holds out whole
patients; without it each tile is its own group. `--mpp-in/--mpp-out` rescale tiles to our µm
per pixel, and the manifest records `--mpp-out` as every tile's mpp. `--link` hard-links (or copies)
the files as they are instead of re-encoding them as PNG. A second run into the same OUT
replaces the first. data/README.md lists public data sets and how their labels map to ours.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ossiclass.arguments import input_mpp
from ossiclass.classes import CLASSES
from ossiclass.datasets import read_label_map
from ossiclass.errors import BadInputError, OssiclassError
from ossiclass.files import save_png, write_text_atomic
from ossiclass.imageio import IMAGE_SUFFIXES, read_image
from ossiclass.preprocess.tiling import resize

MANIFEST_COLUMNS = ["path", "label", "group", "source"]


@dataclass(frozen=True)
class Tile:
    """One tile of the downloaded data set."""

    path: Path  # the file
    name: str  # the file as the data set names it (relative to SRC or as in the CSV)
    label: str  # the data set's label
    where: str  # the file or CSV line, for messages


@dataclass(frozen=True)
class Job:
    """One tile to write: `OUT/target` from `tile`, with our class and its group."""

    tile: Tile
    target: str
    label: str
    group: str


def list_tiles(source: Path, path_column: str, label_column: str) -> list[Tile]:
    """The tiles of a folder of label folders, or of a CSV with a path and a label column."""
    if source.is_dir():
        return [
            Tile(path, f"{folder.name}/{path.name}", folder.name, str(path))
            for folder in sorted(p for p in source.iterdir() if p.is_dir())
            for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not source.is_file():
        raise BadInputError(f"{source}: no such data set (a folder of label folders or a CSV)")
    with open(source, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = sorted({path_column, label_column} - set(reader.fieldnames or ()))
        if missing:
            raise BadInputError(
                f"{source}: no column {', '.join(missing)} (name them with --path-column and "
                "--label-column)"
            )
        tiles = []
        for line, row in enumerate(reader, start=2):
            name, label = row[path_column], row[label_column]
            if not name or label is None:
                raise BadInputError(f"{source}:{line}: no path or no label")
            tiles.append(Tile(source.parent / name, name, label, f"{source}:{line}"))
        return tiles


def plan(
    tiles: list[Tile],
    mapping: dict[str, str | None],
    map_name: str,
    group_regex: re.Pattern | None,
    keep_suffix: bool,
) -> tuple[list[Job], Counter]:
    """What to write, and how many tiles of each source label the map drops.

    Checks everything that can be checked without decoding: labels, files, groups, names.
    """
    unknown = sorted({tile.label for tile in tiles} - mapping.keys())
    if unknown:
        raise BadInputError(
            f"label{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} not in {map_name} "
            "(map each label to one of our classes, or to null to drop it)"
        )
    jobs, dropped, targets = [], Counter(), {}
    for tile in tiles:
        label = mapping[tile.label]
        if label is None:
            dropped[tile.label] += 1
            continue
        if not tile.path.is_file():
            raise BadInputError(f"{tile.where}: {tile.path} does not exist")
        group = tile.name
        if group_regex is not None:
            match = group_regex.search(tile.path.name)
            if match is None or match.group(1) is None:
                raise BadInputError(
                    f"{tile.where}: file name does not match --group-regex {group_regex.pattern!r}"
                )
            group = match.group(1)
        target = f"{label}/{tile.path.stem}{tile.path.suffix if keep_suffix else '.png'}"
        if target in targets:
            raise BadInputError(f"{targets[target]} and {tile.where} would both be {target}")
        targets[target] = tile.where
        jobs.append(Job(tile, target, label, group))
    return jobs, dropped


def earlier_tiles(out: Path) -> set[str]:
    """Tiles listed by an earlier conversion into `out`; refuses any other non-empty folder."""
    manifest = out / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as handle:
            reader = csv.reader(handle)
            if next(reader, None) in (MANIFEST_COLUMNS, [*MANIFEST_COLUMNS, "mpp"]):
                return {row[0] for row in reader if row}
    if out.exists() and any(out.iterdir()):
        raise BadInputError(
            f"{out} is not empty and holds no data set converted by this script; "
            "use an empty folder"
        )
    return set()


def write_tile(job: Job, out: Path, scale: float | None, link: bool) -> None:
    """Write one tile atomically: linked or copied as it is, or decoded, rescaled and PNG."""
    target = out / job.target
    if not link:
        image = read_image(job.tile.path)
        if scale is not None and scale != 1:
            height, width = image.shape[:2]
            image = resize(image, (max(1, round(width * scale)), max(1, round(height * scale))))
        save_png(image, target)
        return
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(job.tile.path, partial)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(job.tile.path, partial)
    os.replace(partial, target)


def write_manifest(out: Path, jobs: list[Job], mpp: float | None) -> None:
    """`out/manifest.csv`, with an mpp column (µm per pixel of every tile) where it is known."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    scale = [] if mpp is None else [mpp]
    writer.writerow([*MANIFEST_COLUMNS, *(["mpp"] if scale else [])])
    writer.writerows([job.target, job.label, job.group, job.tile.name, *scale] for job in jobs)
    write_text_atomic(out / "manifest.csv", text.getvalue())


def convert(args: argparse.Namespace) -> str:
    """Convert as the command line says; returns the summary to print."""
    if (args.mpp_in is None) != (args.mpp_out is None):
        raise BadInputError("give both --mpp-in and --mpp-out, or neither")
    scale = args.mpp_in / args.mpp_out if args.mpp_in else None
    if scale is not None and not 1 / 16 <= scale <= 16:
        raise BadInputError(f"--mpp-in/--mpp-out would rescale {scale:g} times: a typo?")
    if args.link and scale not in (None, 1):
        raise BadInputError("--link keeps the files as they are: it cannot rescale them")
    try:
        group_regex = re.compile(args.group_regex) if args.group_regex else None
    except re.error as error:
        raise BadInputError(f"--group-regex {args.group_regex!r}: {error}") from None
    if group_regex is not None and group_regex.groups < 1:
        raise BadInputError("--group-regex needs a group in parentheses: the slide or patient")
    mapping = read_label_map(args.label_map) if args.label_map else {c: c for c in CLASSES}
    source, out = Path(args.source), Path(args.out)
    tiles = list_tiles(source, args.path_column, args.label_column)
    if not tiles:
        raise BadInputError(f"{source}: no tiles found")
    map_name = f"the label map {args.label_map}" if args.label_map else "our class names"
    jobs, dropped = plan(tiles, mapping, map_name, group_regex, keep_suffix=args.link)
    if not jobs:
        raise BadInputError(f"the label map drops every tile of {source}")
    earlier = earlier_tiles(out)
    for label in {job.label for job in jobs}:
        (out / label).mkdir(parents=True, exist_ok=True)
    # The manifest goes first: an interrupted run leaves a folder a rerun recognises.
    write_manifest(out, jobs, args.mpp_out)
    for job in tqdm(jobs, desc="converting", unit="tile", disable=args.quiet):
        write_tile(job, out, scale, args.link)
    for stale in earlier - {job.target for job in jobs}:
        parts = Path(stale).parts
        if len(parts) == 2 and parts[0] in CLASSES:  # only what this script could have written
            (out / stale).unlink(missing_ok=True)
    counts = Counter(job.label for job in jobs)
    summary = f"wrote {len(jobs)} tiles to {out}: " + ", ".join(
        f"{name} {counts[name]}" for name in CLASSES if counts[name]
    )
    if dropped:
        summary += "; dropped " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
    if len(counts) < len(CLASSES):
        summary += "; no tiles for " + ", ".join(c for c in CLASSES if not counts[c])
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert a downloaded tile data set into ossiclass's layout "
        "(OUT/<class>/<name>.png and OUT/manifest.csv).",
    )
    parser.add_argument("source", help="a folder of label folders, or a CSV with path and label")
    parser.add_argument("out", help="output folder: empty, or made by an earlier run")
    parser.add_argument(
        "--label-map", metavar="JSON", help="the data set's labels to ours; null drops a label"
    )
    parser.add_argument(
        "--path-column", default="path", metavar="NAME", help="CSV column of the tile paths"
    )
    parser.add_argument(
        "--label-column", default="label", metavar="NAME", help="CSV column of the labels"
    )
    parser.add_argument(
        "--group-regex",
        metavar="REGEX",
        help=r"its first group, searched in the file name, is the slide or patient "
        r"(e.g. '^(Case-\d+|P\d+)'); default: each tile its own group",
    )
    parser.add_argument(
        "--link", action="store_true", help="hard-link (or copy) the files as they are"
    )
    parser.add_argument(
        "--mpp-in", type=input_mpp, metavar="MPP", help="µm per pixel of the source tiles"
    )
    parser.add_argument("--mpp-out", type=input_mpp, metavar="MPP", help="µm per pixel to write")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a problem with the input)."""
    args = build_parser().parse_args(argv)
    try:
        print(convert(args))
    except (OssiclassError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
