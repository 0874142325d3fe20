"""Slide layouts: where each tissue lies on a synthetic slide, as a function of position.

A layout takes normalised coordinates y, x in [0, 1] (arrays of one shape), three smooth random
fields f (coarse, coarse, medium) that make boundaries irregular, a seeded rng for its fixed
features, and the `TissueAmounts` a study varies between groups; it returns class labels,
indices into `SLIDE_CLASSES` (255 = background).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ossiclass.classes import (
    BACKGROUND_LABEL,
    CLASSES,
    TISSUE_CLASSES,
    TissueClass,
    class_index,
    known_class,
)

MES, HYA, HYP, WOV, LAM, CAL = (class_index(name) for name in CLASSES)
SLIDE_CLASSES: tuple[TissueClass, ...] = (
    *TISSUE_CLASSES,
    known_class("marrow", len(CLASSES)),
    known_class("fat", len(CLASSES) + 1),
)
"""The classes a label mask indexes: the six, then the extra tissues the layouts paint."""
MAR, FAT = len(CLASSES), len(CLASSES) + 1


@dataclass(frozen=True)
class TissueAmounts:
    """How much of some tissues a layout paints, as a share of what it paints by default (1):
    the difference a study paints between its groups. `cartilage`: the area of the cartilage
    islands of a fracture callus (what is no longer cartilage is woven bone, as cartilage is
    replaced by bone), and of the small ones the callus painter draws inside it;
    `plate_height`: the height of a growth plate's hypertrophic zone (the primary spongiosa
    below it moves)."""

    cartilage: float = 1.0
    plate_height: float = 1.0


# A layout takes normalised coordinates y, x in [0, 1] (arrays of one shape), three smooth
# fields f (coarse, coarse, medium), a seeded rng for its fixed features and the tissue
# amounts; returns labels.
Layout = Callable[
    [np.ndarray, np.ndarray, list[np.ndarray], np.random.Generator, TissueAmounts], np.ndarray
]


def growth_plate(y, x, f, rng, amounts: TissueAmounts) -> np.ndarray:
    """A long bone's end, joint at the top: epiphysis with its secondary ossification centre,
    resting/proliferative cartilage, hypertrophic zone, primary spongiosa, cortices, and loose
    tissue around."""
    xw = x + 0.025 * f[0] + 0.004 * f[2]
    yw = y + 0.025 * f[1] + 0.004 * f[2]
    side = np.abs(xw - 0.5)
    half = 0.36 + 0.015 * f[1]
    wave = 0.03 * np.sin(2 * np.pi * (xw * rng.uniform(0.8, 1.4) + rng.uniform()))
    labels = np.full(y.shape, WOV, dtype=np.uint8)  # primary spongiosa, and the ossification centre
    labels[(yw > 0.19 + wave) & (yw < 0.25 + wave)] = LAM  # bony plate under the epiphysis
    labels[(yw > 0.25 + wave) & (yw < 0.46 + wave)] = HYA
    chondro_osseous = 0.57 - 0.11 * (1 - amounts.plate_height)  # 0.57 exactly by default
    labels[(yw > 0.46 + wave) & (yw < chondro_osseous + wave)] = HYP
    labels[(yw > 0.55) & (side > half - 0.06)] = LAM  # cortices
    labels[yw < 0.06 + 0.01 * f[0]] = HYA  # articular cartilage
    labels[side > half] = MES  # perichondrium, periosteum, loose tissue
    labels[(side > half + 0.07) | (yw < 0.02)] = BACKGROUND_LABEL
    return labels


def fracture_callus(y, x, f, rng, amounts: TissueAmounts) -> np.ndarray:
    """A healing shaft fracture, bone axis horizontal: two broken cortices, the gap and its
    surroundings filled by callus with cartilage and woven-bone islands, soft tissue around.
    With less cartilage (`amounts.cartilage` < 1) a cartilage island keeps a core of
    cartilage in a rim of woven bone; with more, it grows into the callus around it."""
    xw = x + 0.02 * f[0] + 0.004 * f[2]
    yw = y + 0.02 * f[1] + 0.004 * f[2]
    labels = np.full(y.shape, MES, dtype=np.uint8)
    cortex = (np.abs(yw - 0.3) < 0.05) | (np.abs(yw - 0.7) < 0.05)
    canal = np.abs(yw - 0.5) < 0.15
    labels[canal] = WOV  # endosteal woven bone and marrow
    labels[cortex] = LAM
    gap = np.abs(xw - 0.5 - 0.03 * f[1]) < 0.05 + 0.02 * f[0]
    callus = ((xw - 0.5) / 0.28) ** 2 + ((yw - 0.5) / 0.38) ** 2 < 1 + 0.15 * f[2]
    labels[callus & ~(cortex & ~gap)] = CAL
    for label, count in ((HYA, 3), (WOV, 3)):
        for _ in range(count):
            cy, cx = rng.uniform(0.22, 0.78), 0.5 + rng.choice([-1, 1]) * rng.uniform(0.04, 0.2)
            ry, rx = rng.uniform(0.04, 0.07, 2)
            distance = ((yw - cy) / ry) ** 2 + ((xw - cx) / rx) ** 2
            island = distance < 1 + 0.3 * f[2]
            if label == HYA:  # by default, the core is the whole island
                labels[island & callus & ~(cortex & ~gap)] = WOV
                island = distance < amounts.cartilage * (1 + 0.3 * f[2])
            labels[island & callus & ~(cortex & ~gap)] = label
    labels[np.abs(yw - 0.5) > 0.42] = BACKGROUND_LABEL
    return labels


def intramembranous(y, x, f, rng, amounts: TissueAmounts) -> np.ndarray:
    """A flat skull bone forming in membrane: sheets of mesenchyme, woven-bone spicules growing
    from condensations, a central plate already lamellar."""
    yw = y + 0.03 * f[0] + 0.004 * f[2]
    depth = np.abs(yw - 0.5)
    labels = np.full(y.shape, MES, dtype=np.uint8)
    labels[(depth < 0.17) & (f[1] + 0.8 * f[2] > 0.2 + 4 * depth)] = WOV
    labels[depth < 0.035 + 0.01 * f[1]] = LAM
    labels[depth > 0.3 + 0.03 * f[1]] = BACKGROUND_LABEL
    return labels


def marrow_cavity(y, x, f, rng, amounts: TissueAmounts) -> np.ndarray:
    """A long bone's shaft (diaphysis) in long section, axis horizontal: two lamellar cortices
    around a marrow cavity of haematopoietic marrow with patches of fat, woven trabeculae along
    the endosteum, periosteal mesenchyme outside."""
    yw = y + 0.02 * f[1] + 0.004 * f[2]
    depth = np.abs(yw - 0.5)
    endosteum = 0.25 + 0.015 * f[0]
    periosteum = 0.35 + 0.01 * f[1]
    labels = np.full(y.shape, MAR, dtype=np.uint8)
    labels[f[2] + 0.6 * f[1] > rng.uniform(0.5, 0.9)] = FAT  # fatty marrow in patches
    labels[(depth > endosteum - 0.05) & (f[2] > 0.3)] = WOV  # endosteal trabeculae
    labels[depth > endosteum] = LAM
    labels[depth > periosteum] = MES
    labels[depth > periosteum + 0.05 + 0.01 * f[0]] = BACKGROUND_LABEL
    return labels


LAYOUTS: dict[str, Layout] = {
    "growth_plate": growth_plate,
    "fracture_callus": fracture_callus,
    "intramembranous": intramembranous,
}
"""Layouts of the six classes only: what a six-class model is scored on (the demo and the
benchmarks classify one slide of each)."""
EXTRA_LAYOUTS: dict[str, Layout] = {"marrow_cavity": marrow_cavity}
"""Layouts that hold classes beyond the six (indices into `SLIDE_CLASSES`)."""
ALL_LAYOUTS: dict[str, Layout] = {**LAYOUTS, **EXTRA_LAYOUTS}

# Direction (radians from the x axis) that columns and lamellae run in, per layout and class.
ORIENTATIONS = {
    "growth_plate": {HYA: np.pi / 2, HYP: np.pi / 2, LAM: np.pi / 2},
    "fracture_callus": {LAM: 0.0},
    "intramembranous": {LAM: 0.0},
    "marrow_cavity": {LAM: 0.0},
}


def layout_classes(layout: str) -> tuple[TissueClass, ...]:
    """The class list a layout's label mask indexes: `SLIDE_CLASSES` where it holds extra
    tissues, else the six."""
    return SLIDE_CLASSES if layout in EXTRA_LAYOUTS else TISSUE_CLASSES
