"""The figures of a study: each measure by group (and day), a point per slide marked by animal
with each group's mean and SD; Bland-Altman plots of ossiclass against manual measures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ossiclass.agreement import BlandAltman, describe  # noqa: E402
from ossiclass.report import save_figure  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
"""One per animal, in order of appearance (cycled past twelve)."""

LEGEND_ANIMALS = 12
"""Animals listed in a plot's legend; beyond that their markers repeat and go unlisted."""


@dataclass(frozen=True)
class Cells:
    """Where each slide's point goes: its x position (a day, or its group where there is no
    day), its series (the group, drawn in one colour beside the other groups at a position),
    its animal (a marker); the orders of positions and series; the x axis's label and the
    columns the series are named by."""

    positions: list[str]
    series: list[str]
    animals: list[str]
    position_order: list[str]
    series_order: list[str]
    x_label: str
    series_title: str


def measure_figure(path: Path, measure: str, values: list[float | None], cells: Cells) -> Path:
    """Write one measure's plot as PNG: a point per slide (None: not measured, left out), and
    each group's mean (a bar) and SD (whiskers) at its position."""
    dodge = cells.positions != cells.series  # groups side by side at each day
    width = 0.8 / len(cells.series_order) if dodge else 0.8
    animals = list(dict.fromkeys(a for a in cells.animals if a))
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(figsize=(max(4.5, 1.2 * len(cells.position_order) + 2.5), 4.2))
    for s, series in enumerate(cells.series_order):
        colour = colours(s % 10)
        for p, position in enumerate(cells.position_order):
            members = [
                i for i, v in enumerate(values)
                if v is not None and cells.positions[i] == position and cells.series[i] == series
            ]  # fmt: skip
            if not members:
                continue
            centre = p + ((s - (len(cells.series_order) - 1) / 2) * width if dodge else 0)
            spread = np.linspace(-0.25, 0.25, len(members)) * width if len(members) > 1 else [0]
            for i, offset in zip(members, spread, strict=True):
                marker = MARKERS[animals.index(cells.animals[i]) % len(MARKERS)] if animals else "o"
                axes.scatter(centre + offset, values[i], color=colour, marker=marker, s=30,
                             edgecolors="black", linewidths=0.5, zorder=3)  # fmt: skip
            _, mean, sd = describe([values[i] for i in members])
            axes.hlines(mean, centre - 0.4 * width, centre + 0.4 * width, color=colour, lw=2)
            if sd is not None:
                axes.errorbar(centre, mean, yerr=sd, color=colour, capsize=4, lw=1, zorder=2)
    axes.set_xticks(range(len(cells.position_order)), cells.position_order)
    axes.set_xlim(-0.6, len(cells.position_order) - 0.4)
    axes.set_xlabel(cells.x_label)
    axes.set_ylabel(measure)
    axes.set_title(measure)
    handles = []
    if dodge and any(cells.series_order):
        handles += [
            Line2D([], [], color=colours(s % 10), lw=2, label=series)
            for s, series in enumerate(cells.series_order)
        ]
    if 0 < len(animals) <= LEGEND_ANIMALS:
        handles += [
            Line2D([], [], ls="", marker=MARKERS[a % len(MARKERS)], color="grey", label=animal)
            for a, animal in enumerate(animals)
        ]
    if handles:
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
                    frameon=False, title=cells.series_title if dodge else None,
                    title_fontsize=8)  # fmt: skip
    axes.spines[["top", "right"]].set_visible(False)
    return save_figure(figure, path)


def bland_altman_figure(
    path: Path, measure: str, ours: list[float], manual: list[float], figures: BlandAltman
) -> Path:
    """Write a Bland-Altman plot as PNG: the difference (ossiclass minus manual) against the
    mean of the two per slide, the bias and the 95% limits of agreement."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(manual, dtype=np.float64)
    figure, axes = plt.subplots(figsize=(5.5, 4.2))
    axes.scatter((a + b) / 2, a - b, color="tab:blue", edgecolors="black", linewidths=0.5, s=30)
    lines = (
        (figures.bias, "-", f"bias {figures.bias:.3g}"),
        (figures.upper, "--", f"+1.96 SD {figures.upper:.3g}"),
        (figures.lower, "--", f"-1.96 SD {figures.lower:.3g}"),
    )
    for level, style, label in lines:
        axes.axhline(level, color="grey", linestyle=style, lw=1)
        axes.annotate(label, (1, level), xycoords=("axes fraction", "data"), xytext=(4, 0),
                      textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    axes.axhline(0, color="black", lw=0.5)
    axes.set_xlabel("mean of ossiclass and manual")
    axes.set_ylabel("ossiclass - manual")
    axes.set_title(f"{measure} (n = {figures.n})")
    axes.spines[["top", "right"]].set_visible(False)
    return save_figure(figure, path)
