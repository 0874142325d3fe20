"""Pictures people would rather see than read: confusion matrices, reliability diagrams,
tissue maps over slide thumbnails."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from ossiclass.classes import TissueClass  # noqa: E402
from ossiclass.files import partial_path  # noqa: E402


def save_figure(figure, path: Path) -> Path:
    """Lay out, save and close a matplotlib figure as PNG at 120 dpi, atomically."""
    figure.tight_layout()
    partial = partial_path(path)
    figure.savefig(partial, format="png", dpi=120)
    plt.close(figure)
    os.replace(partial, path)
    return path


def confusion_figure(
    confusion: list[list[int]], path: str | Path, title: str, classes: tuple[TissueClass, ...]
) -> Path:
    """Write a confusion matrix (rows: true class, columns: predicted, both in the order of
    `classes`, named by display name) as PNG."""
    matrix = np.asarray(confusion)
    names = [c.display_name for c in classes]
    side = 2.9 + 0.6 * len(names)  # inches: 6.5 x 5.5 for six classes
    figure, axes = plt.subplots(figsize=(side, side - 1))
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
    return save_figure(figure, Path(path))


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
    return save_figure(figure, Path(path))


def tissue_map(
    thumbnail: np.ndarray,
    downsample: float,
    boxes: list[tuple[int, int, int, int]],
    labels: list[int],
    classes: tuple[TissueClass, ...],
    title: str = "",
    alpha: float = 0.45,
) -> Image.Image:
    """The slide thumbnail with each classified tile filled in its class colour, and a legend
    with each class's display name and share of the tiles. `boxes` are (x, y, width, height)
    in level-0 pixels, `labels` indices into `classes` (the model's class list), `downsample`
    the thumbnail's scale from level 0. Returns an RGB image."""
    base = Image.fromarray(thumbnail).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    fill = [(*c.colour, round(255 * alpha)) for c in classes]
    for (x, y, width, height), label in zip(boxes, labels, strict=True):
        corners = np.array([x, y, x + width, y + height]) / downsample
        draw.rectangle(corners.round().tolist(), fill=fill[label])
    mapped = Image.alpha_composite(base, overlay).convert("RGB")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    font = ImageFont.load_default(size=max(14, mapped.width // 60))
    line = font.size + 8
    total = max(counts.sum(), 1)
    texts = [f"{c.display_name}  {n / total:.0%}" for c, n in zip(classes, counts, strict=True)]
    longest = max(font.getlength(text) for text in [title, *texts])
    legend_width = max(16 * font.size, round(longest) + 2 * font.size + 20)
    height = max(mapped.height, line * (len(classes) + 3))
    page = Image.new("RGB", (mapped.width + legend_width, height), "white")
    page.paste(mapped, (0, 0))
    draw = ImageDraw.Draw(page)
    left = mapped.width + 12
    draw.text((left, 8), title, fill="black", font=font)
    for row, (tissue, text) in enumerate(zip(classes, texts, strict=True)):
        top = 8 + line * (row + 1)
        draw.rectangle([left, top, left + font.size, top + font.size], fill=tissue.colour)
        draw.text((left + font.size + 8, top), text, fill="black", font=font)
    return page
