"""The six tissue classes: the one source of truth for their order, names and map colours."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TissueClass:
    """One tissue class: index in model outputs, machine name, display name, map colour (RGB)."""

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

CLASSES: tuple[str, ...] = tuple(c.name for c in TISSUE_CLASSES)
"""Class names in model-output order."""

BACKGROUND_LABEL = 255
"""Label-mask value for pixels outside the tissue."""


def class_index(name: str) -> int:
    """Index of a class name; raises ValueError naming the valid choices."""
    try:
        return CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; expected one of {', '.join(CLASSES)}") from None
