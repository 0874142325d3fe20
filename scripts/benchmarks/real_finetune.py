"""`real-finetune`: fine-tuning on real tissue, with the labelled reference fields split by
field: one cartilage field and three bone fields to tune on, the others to test; two folds (the
second tunes on the other cartilage field and three other bone fields). Recall on the test
fields before and after tuning, and what tuning costs elsewhere: macro-F1 on synthetic tiles of
labs the model never saw, before and after.

    python scripts/benchmark.py real-finetune --model MODEL [--reference ../shared/reference-he]

The tuned models live in a temporary folder and are thrown away: the default model is never
trained on these fields, and the real check (`real`) keeps describing it alone. Tiles are cut
as the real check cuts them (`real.cut_field`) and tuned on with `ossiclass train --config
configs/finetune.yaml`, as a lab would.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import f1_score

from benchmarks.common import ossiclass_command, seconds_of
from benchmarks.real import (
    PAIR,
    cut_field,
    missing_reason,
    read_fields,
    synthetic_tiles,
    tile_probabilities,
)
from ossiclass.classes import CLASSES
from ossiclass.predict import Predictor

FOLDS = (
    ("Case-48-P5-C18-17610-25605_104.jpg", "Case-3-A17-7799-34542_102.jpg",
     "P9-B12-15791-34183_103.jpg", "P9-B28-26096-29717_110.jpg"),
    ("Case-48-P5-C20-44108-28521_119.jpg", "Case-3-A18-41302-32324_101.jpg",
     "P9-B12-30770-23009_108.jpg", "P9-B6-17176-31590_114.jpg"),
)  # fmt: skip
"""The fields each fold tunes on (file names of labels.tsv); it tests on the rest."""


def _write_tiles(root: Path, fields, model_mpp: float, settings) -> int:
    """The fields' tiles as a tile set (manifest with group = field, mpp = the model's)."""
    root.mkdir(parents=True)
    rows = []
    for field in fields:
        for index, tile in enumerate(cut_field(field, settings)):
            name = f"{field.path.stem}_{index:03d}.png"
            Image.fromarray(tile).save(root / name)
            rows.append({"path": name, "label": field.label, "group": field.path.name,
                         "mpp": model_mpp})  # fmt: skip
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "group", "mpp"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _scores(model: Path, test_fields, settings, synthetic) -> dict:
    """Recall per class and per test field, and macro-F1 on the synthetic tiles."""
    predictor = Predictor(model, precision="fp32")
    names = np.array([c.name for c in predictor.settings.classes])
    per_field, called = {}, {c: [] for c in PAIR}
    for field in test_fields:
        tiles = cut_field(field, settings)
        predicted = names[tile_probabilities(predictor, tiles).argmax(1)]
        per_field[field.path.name] = float((predicted == field.label).mean())
        called[field.label] += predicted.tolist()
    tiles, labels = synthetic
    predicted = names[tile_probabilities(predictor, tiles).argmax(1)]
    return {
        "recall": {c: float(np.mean(np.array(called[c]) == c)) for c in PAIR},
        "recall_per_field": per_field,
        "synthetic_macro_f1": float(f1_score(labels, predicted, average="macro")),
    }


def run(*, model: str | Path, reference: str | Path, synthetic_per_class: int) -> dict:
    """Both folds' figures (see the module's docstring), or `{"skipped": why}`."""
    reason = missing_reason(Path(reference))
    if reason:
        return {"what": "fine-tuning on real fields, skipped", "skipped": reason}
    model = Path(model).resolve()
    settings = Predictor(model, precision="fp32").settings
    fields = read_fields(Path(reference))
    cut = [synthetic_tiles(c, synthetic_per_class, 7, 16, settings.input_px) for c in CLASSES]
    synthetic = (
        np.concatenate([tiles for tiles, _ in cut]),
        np.repeat(np.array(CLASSES), synthetic_per_class),
    )
    folds = []
    with tempfile.TemporaryDirectory() as folder:
        for number, tune_names in enumerate(FOLDS):
            tune = [f for f in fields if f.path.name in tune_names]
            test = [f for f in fields if f.path.name not in tune_names]
            tiles = Path(folder) / f"fold{number}" / "tiles"
            count = _write_tiles(tiles, tune, settings.model_mpp, settings)
            run_dir = Path(folder) / f"fold{number}" / "run"
            seconds = seconds_of(ossiclass_command(
                "train", "--config", "configs/finetune.yaml", "--model.init_bundle", model,
                "--data.train", tiles, "--trainer.default_root_dir", run_dir,
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            ))  # fmt: skip
            folds.append(
                {
                    "tuned_on": {"fields": tune_names, "tiles": count},
                    "tested_on": [f.path.name for f in test],
                    "before": _scores(model, test, settings, synthetic),
                    "after": _scores(run_dir / "model.pt", test, settings, synthetic),
                    "train_seconds": round(seconds, 1),
                }
            )
    return {
        "what": "recall on real test fields before and after fine-tuning on other real fields",
        "model": str(model),
        "synthetic": {"per_class": synthetic_per_class, "seed": 7, "domains": 16},
        "folds": folds,
    }


def report(figures: dict) -> str:
    """Per fold: what it tuned on, recall before -> after, synthetic macro-F1 before -> after."""
    if "skipped" in figures:
        return f"real-finetune {figures['skipped']}"
    lines = [f"fine-tuning {figures['model']} on real fields (throwaway copies)"]
    for number, fold in enumerate(figures["folds"]):
        before, after = fold["before"], fold["after"]
        lines += [
            f"fold {number}: tuned on {fold['tuned_on']['tiles']} tiles of "
            f"{len(fold['tuned_on']['fields'])} fields in {fold['train_seconds']:.0f} s",
            "  recall on the other fields: "
            + ", ".join(f"{c} {before['recall'][c]:.2f} -> {after['recall'][c]:.2f}" for c in PAIR),
            "  per test field: "
            + ", ".join(
                f"{name.split('_')[0][:18]} {before['recall_per_field'][name]:.2f} -> "
                f"{after['recall_per_field'][name]:.2f}"
                for name in before["recall_per_field"]
            ),
            f"  synthetic macro-F1 (unseen labs): {before['synthetic_macro_f1']:.3f} -> "
            f"{after['synthetic_macro_f1']:.3f}",
        ]
    return "\n".join(lines)
