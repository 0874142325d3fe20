"""Pictures people would rather see than read: confusion matrices, reliability diagrams."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ossiclass.classes import TISSUE_CLASSES  # noqa: E402


def confusion_figure(confusion: list[list[int]], path: str | Path, title: str) -> Path:
    """Write a confusion matrix (rows: true class, columns: predicted) as PNG."""
    matrix = np.asarray(confusion)
    names = [c.display_name for c in TISSUE_CLASSES]
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if shares[row, column] > 0.5 else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=colour, fontsize=9)
    axes.set_xticks(range(len(names)), names, rotation=35, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def reliability_figure(
    curves: dict[str, list[tuple[float, float, float]]], path: str | Path
) -> Path:
    """Write a reliability diagram (accuracy against confidence per bin) for one or more
    curves, e.g. before and after temperature scaling."""
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for label, rows in curves.items():
        confidence, accuracy, _ = zip(*rows, strict=True) if rows else ((), (), ())
        axes.plot(confidence, accuracy, marker="o", label=label)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
