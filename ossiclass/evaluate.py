"""Evaluation of a model bundle on labelled tiles: metrics, calibration, temperature scaling."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchmetrics.functional.classification as tmf
from torch import nn

from ossiclass.classes import TISSUE_CLASSES, TissueClass
from ossiclass.errors import BadInputError, OssiclassError

if TYPE_CHECKING:
    from ossiclass.datasets import TileTable

ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature that minimises the negative log-likelihood of `labels`."""
    logits = logits.clone()  # predictions come out of inference mode: autograd needs a copy
    log_temperature = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.1, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_temperature.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_temperature.detach().exp())


def metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    classes: tuple[TissueClass, ...] = TISSUE_CLASSES,
) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix and expected
    calibration error (15 bins) of (N, C) logits at a softmax temperature, over `classes`
    (the model's C classes, in output order; (N,) labels index them). Plain data."""
    count = len(classes)
    if logits.shape[1] != count:
        raise ValueError(f"{logits.shape[1]} logits a tile for {count} classes")
    probabilities = (logits / temperature).softmax(dim=1)
    predicted = probabilities.argmax(dim=1)
    per_class = {
        "precision": tmf.multiclass_precision(predicted, labels, count, average="none"),
        "recall": tmf.multiclass_recall(predicted, labels, count, average="none"),
        "f1": tmf.multiclass_f1_score(predicted, labels, count, average="none"),
    }
    return {
        "tiles": len(labels),
        "accuracy": float(tmf.multiclass_accuracy(predicted, labels, count, average="micro")),
        "macro_f1": float(tmf.multiclass_f1_score(predicted, labels, count, average="macro")),
        "ece": float(
            tmf.multiclass_calibration_error(probabilities, labels, count, n_bins=ECE_BINS)
        ),
        "temperature": temperature,
        "classes": [c.name for c in classes],
        "per_class": {
            c.name: {key: float(values[i]) for key, values in per_class.items()}
            for i, c in enumerate(classes)
        },
        "confusion": tmf.multiclass_confusion_matrix(predicted, labels, count).tolist(),
    }


def reliability(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0):
    """Per confidence bin: (mean confidence, accuracy, share of tiles), for reliability plots."""
    probabilities = (logits / temperature).softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, ECE_BINS + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            share = float(inside.float().mean())
            rows.append((float(confidence[inside].mean()), float(correct[inside].mean()), share))
    return rows


def evaluate_bundle(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    calibrate: str | Path | None = None,
    label_map: str | Path | None = None,
    progress: bool = True,
    precision: str = "auto",
    input_mpp: float | None = None,
) -> tuple[dict, dict]:
    """Evaluate a model bundle on labelled tiles and write `metrics.json`, `confusion.png` and
    `reliability.png` under `out`, over the bundle's classes. With `calibrate` (validation
    tiles), fit a softmax temperature there and store it in the bundle. Tiles go through the
    bundle's preprocessing and `predict`'s network at `precision` ("auto", "fp32", "bf16"; the
    one used is reported). A tile set's classes (its `classes.json`, else the six) must all be
    the model's. The tiles' µm/px is `input_mpp`, else a manifest's, else assumed (0.5, with a
    line in `notes`); every tile must cover the model's field. Returns (metrics, metrics as
    trained)."""
    import numpy as np

    from ossiclass.bundle import check_writable, load_bundle, save_bundle
    from ossiclass.datasets import field_um, read_tiles
    from ossiclass.files import write_text_atomic
    from ossiclass.predict import Predictor
    from ossiclass.report import confusion_figure, reliability_figure
    from ossiclass.scale import DEFAULT_MPP, assumed_note

    predictor = Predictor(model, precision=precision)
    if calibrate:
        check_writable(model)
    settings, prep = predictor.settings, predictor.preprocessing

    notes = []

    def logits_and_labels(source):
        table, labels = model_labels(source, label_map, settings.classes)
        tiles, widths = read_tiles(table, prep.input_px, progress=progress)
        if input_mpp is not None or table.mpp is None:
            table = replace(table, mpp=np.full(len(widths), input_mpp or DEFAULT_MPP))
            if input_mpp is None:
                notes.append(assumed_note(f"the tiles of {source}"))
        field_um(table, widths, DEFAULT_MPP, prep.field_um, "the model's inputs")
        tiles = torch.from_numpy(prep.normalize(tiles.permute(0, 2, 3, 1).contiguous().numpy()))
        return predictor.logits(tiles.permute(0, 3, 1, 2)), labels

    logits, labels = logits_and_labels(data)
    curves = {"as trained": reliability(logits, labels, settings.temperature)}
    as_trained = metrics(logits, labels, settings.temperature, settings.classes)
    if calibrate:
        temperature = fit_temperature(*logits_and_labels(calibrate))
        settings = replace(settings, temperature=temperature)
        save_bundle(model, load_bundle(model)[0], settings)
        curves[f"temperature {temperature:.2f}"] = reliability(logits, labels, temperature)
    result = metrics(logits, labels, settings.temperature, settings.classes)
    result["before_calibration"] = {k: as_trained[k] for k in ("ece", "temperature")}
    result["precision"] = predictor.precision
    result["notes"] = notes
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
        title = f"{data}: macro-F1 {result['macro_f1']:.3f}"
        confusion_figure(result["confusion"], out / "confusion.png", title, settings.classes)
        reliability_figure(curves, out / "reliability.png")
    except OSError as error:
        raise OssiclassError(f"cannot write to {out}: {error.strerror}") from None
    return result, as_trained


def model_labels(
    source: str | Path, label_map: str | Path | None, classes: tuple[TissueClass, ...]
) -> tuple[TileTable, torch.Tensor]:
    """A tile set's table (see `datasets.read_tile_table`) and its (N,) int64 labels as indices
    into `classes`, a model's class list. The set's classes (its `classes.json`, else the six)
    must all be among them; else a `BadInputError` naming those that are not."""
    from ossiclass.classes import read_class_list
    from ossiclass.datasets import read_tile_table

    try:
        own = read_class_list(source)
    except ValueError as error:
        raise BadInputError(str(error)) from None
    names = [c.name for c in classes]
    missing = [c.name for c in own if c.name not in names]
    if missing:
        raise BadInputError(
            f"{source}: classes {', '.join(missing)} are not the model's "
            f"({', '.join(names)}); evaluate it on tiles of its classes"
        )
    table = read_tile_table(source, label_map, classes)
    return table, torch.from_numpy(table.labels)


def slide_agreement(
    tiles_csv: str | Path,
    label_mask: str | Path,
    pure: float = 0.75,
    classes: tuple[TissueClass, ...] | None = None,
) -> dict:
    """Agreement of a classified slide's tile labels with a synthetic slide's label mask.

    Each tile's true class is the class covering most of its box in the mask (one byte per
    level-0 pixel: an index into `classes`, by default `mask_classes(label_mask)`; 255 = glass);
    tile labels are matched to them by name, and a label outside `classes` (a model's extra
    class) never agrees. Returns the agreement over the tiles whose true class covers at least
    `pure` of the box, and over all tiles with any tissue (boundaries included), with their
    counts and a confusion matrix (rows true, columns predicted, in `classes` order) of the pure
    tiles.
    """
    import csv

    import numpy as np

    from ossiclass.classes import BACKGROUND_LABEL
    from ossiclass.preprocess.tiling import BOX_COLUMNS
    from ossiclass.synth.slides import mask_classes, read_label_mask

    classes = classes or mask_classes(label_mask)
    mask = read_label_mask(label_mask)
    with open(tiles_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    index = {c.name: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    agree_all = counted_all = pure_tiles = 0
    for row in rows:
        x, y, w, h = (int(row[k]) for k in BOX_COLUMNS)
        counts = np.bincount(mask[y : y + h, x : x + w].ravel(), minlength=256)
        counts[BACKGROUND_LABEL] = 0
        if counts.sum() == 0:
            continue
        truth, predicted = int(counts.argmax()), index.get(row["label"])
        if truth >= len(classes):
            raise BadInputError(
                f"{label_mask}: class index {truth} is beyond the {len(classes)} classes"
            )
        counted_all += 1
        agree_all += truth == predicted
        if counts[truth] >= pure * w * h:
            pure_tiles += 1
            if predicted is not None:
                confusion[truth, predicted] += 1
    return {
        "pure_share": pure,
        "pure_tiles": pure_tiles,
        "pure_agreement": float(np.trace(confusion) / max(pure_tiles, 1)),
        "tissue_tiles": counted_all,
        "all_agreement": agree_all / max(counted_all, 1),
        "confusion": confusion.tolist(),
    }
