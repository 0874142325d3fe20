"""Tissue classes: the six of ossiclass (the default, defined here once), the extra tissues a
lab may add, and class lists as a model or a tile set carries them.

A class list is a tuple of `TissueClass` in model-output order. A tile set records its own in
`classes.json` beside its manifest (`{"classes": [{"name", "display_name", "colour"}, ...]}`);
a set without one holds the six. Machine names (`hyaline_cartilage`) name columns and files;
display names (`Hyaline cartilage`, or a lab's own QuPath class name) are what people see.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

CLASS_LIST_FILE = "classes.json"
"""The file beside a tile set's manifest that records its class list."""

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""Machine names: lower case, digits and underscores, starting with a letter."""


@dataclass(frozen=True)
class TissueClass:
    """One tissue class: index in model outputs, machine name, display name, colour (RGB)."""

    index: int
    name: str
    display_name: str
    colour: tuple[int, int, int]

    @property
    def hex_colour(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.colour)


TISSUE_CLASSES: tuple[TissueClass, ...] = (
    TissueClass(0, "mesenchyme", "Mesenchyme", (166, 206, 227)),
    TissueClass(1, "hyaline_cartilage", "Hyaline cartilage", (31, 120, 180)),
    TissueClass(2, "hypertrophic_zone", "Hypertrophic zone", (106, 61, 154)),
    TissueClass(3, "woven_bone", "Woven bone", (251, 154, 153)),
    TissueClass(4, "lamellar_bone", "Lamellar bone", (227, 26, 28)),
    TissueClass(5, "callus", "Callus", (255, 127, 0)),
)
"""The six classes of ossiclass: the default class list."""

EXTRA_TISSUES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "marrow": ("Marrow", (178, 223, 138)),
    "fat": ("Fat", (255, 237, 111)),
    "muscle": ("Muscle", (202, 178, 214)),
    "fibrous_tissue": ("Fibrous tissue", (177, 89, 40)),
    "other": ("Other", (153, 153, 153)),
}
"""Tissues a real slide holds beyond the six, with the display name and colour they get when
a tile set gives none: machine name -> (display name, RGB)."""

CLASSES: tuple[str, ...] = tuple(c.name for c in TISSUE_CLASSES)
"""The six class names in model-output order."""

BACKGROUND_LABEL = 255
"""Label-mask value for pixels outside the tissue."""

CALLUS_PARTS = ("callus", "hyaline_cartilage", "woven_bone")
"""What the cells of a fracture callus are, numbered as the painter draws them and the cell
head names them: its fibrous soft tissue (haemorrhage included, 0), cartilage islands (1) and
woven-bone islands (2)."""


def class_index(name: str) -> int:
    """Index of one of the six class names; raises ValueError naming the valid choices."""
    try:
        return CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; expected one of {', '.join(CLASSES)}") from None


def known_class(name: str, index: int) -> TissueClass:
    """A class of the six or of `EXTRA_TISSUES` by machine name, at position `index`."""
    for tissue in TISSUE_CLASSES:
        if tissue.name == name:
            return TissueClass(index, name, tissue.display_name, tissue.colour)
    if name in EXTRA_TISSUES:
        display_name, colour = EXTRA_TISSUES[name]
        return TissueClass(index, name, display_name, colour)
    raise ValueError(
        f"unknown class {name!r}; give its display name and colour, or use one of "
        f"{', '.join((*CLASSES, *EXTRA_TISSUES))}"
    )


def machine_name(display_name: str) -> str:
    """The machine name for a display name: `"Bone marrow (red)"` -> `"bone_marrow_red"`."""
    name = re.sub(r"[^a-z0-9]+", "_", display_name.lower()).strip("_")
    name = name if name[:1].isalpha() else f"class_{name}"
    return name[:64].rstrip("_")


def class_list_from_dict(entries: list) -> tuple[TissueClass, ...]:
    """A class list from its plain form: a list of names (of the six or `EXTRA_TISSUES`) or of
    `{"name", "display_name", "colour"}` objects. Raises ValueError saying what is wrong."""
    if not isinstance(entries, list) or not entries:
        raise ValueError("a class list is a non-empty list")
    classes = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            classes.append(known_class(entry, index))
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"class {index}: expected a name or an object with a 'name'")
        name = entry["name"]
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"class {index}: {name!r} is not a machine name (a-z, 0-9 and _, from a letter)"
            )
        colour = entry.get("colour")
        display_name = entry.get("display_name")
        if colour is None or display_name is None:
            known = known_class(name, index) if name in (*CLASSES, *EXTRA_TISSUES) else None
            display_name = display_name or (known.display_name if known else name)
            colour = colour or (known.colour if known else _fallback_colour(index))
        if not (
            isinstance(colour, (list, tuple))
            and len(colour) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in colour)
        ):
            raise ValueError(f"class {name!r}: colour must be three integers 0-255, got {colour}")
        classes.append(TissueClass(index, name, str(display_name), tuple(colour)))
    names = [c.name for c in classes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"classes named twice: {', '.join(repeated)}")
    return tuple(classes)


def class_list_to_dict(classes: tuple[TissueClass, ...]) -> list[dict]:
    """The plain form of a class list, as `classes.json` and bundles store it."""
    return [
        {"name": c.name, "display_name": c.display_name, "colour": list(c.colour)} for c in classes
    ]


def merge_class_lists(
    first: tuple[TissueClass, ...], second: tuple[TissueClass, ...]
) -> tuple[TissueClass, ...]:
    """`first`'s classes in its order, then those of `second` it lacks (by machine name),
    renumbered; a class in both takes `second`'s display name and colour. A model's classes
    extended by a lab's tile set, named and coloured as the lab names and colours them."""
    theirs = {c.name: c for c in second}
    names = {c.name for c in first}
    merged = [theirs.get(c.name, c) for c in first] + [c for c in second if c.name not in names]
    return tuple(TissueClass(i, c.name, c.display_name, c.colour) for i, c in enumerate(merged))


def read_class_list(tile_set: str | Path) -> tuple[TissueClass, ...]:
    """The class list of a tile set (its folder or manifest): `classes.json` beside the
    manifest, else the six. Raises ValueError naming the file when it is malformed."""
    root = Path(tile_set)
    return read_class_list_file((root if root.is_dir() else root.parent) / CLASS_LIST_FILE)


def read_class_list_file(path: str | Path) -> tuple[TissueClass, ...]:
    """A class list file (`{"classes": [...]}`), or the six where there is none. Raises
    ValueError naming the file when it is malformed."""
    path = Path(path)
    if not path.exists():
        return TISSUE_CLASSES
    try:
        return class_list_from_dict(json.loads(path.read_text())["classes"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a class list ({error})") from None


def write_class_list(tile_set: str | Path, classes: tuple[TissueClass, ...]) -> Path:
    """Write `classes.json` into a tile set's folder; returns its path."""
    from ossiclass.files import write_text_atomic

    path = Path(tile_set) / CLASS_LIST_FILE
    write_text_atomic(path, json.dumps({"classes": class_list_to_dict(classes)}, indent=1) + "\n")
    return path


def _fallback_colour(index: int) -> tuple[int, int, int]:
    """A colour for a class that brings none: ColorBrewer Paired, after the six's colours."""
    palette = ((51, 160, 44), (253, 191, 111), (202, 178, 214), (255, 255, 153), (177, 89, 40))
    return palette[index % len(palette)]


def read_label_map_file(path: str | Path, entry: str) -> dict:
    """A label map's JSON object, {label: `entry`} (null: drop the label); ValueError where the
    file is unreadable or not an object, saying what is wrong."""
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"not a readable JSON label map ({error})") from None
    if not isinstance(mapping, dict):
        raise ValueError(f"a label map is a JSON object {{{entry}}}")
    return mapping
