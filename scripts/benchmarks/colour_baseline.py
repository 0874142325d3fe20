"""`colour-baseline`: macro accuracy of colour-statistics classifiers on stain domains unseen in
fitting (what a CNN has to beat)."""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import labelled_tiles
from benchmarks.real import colour_features
from ossiclass.classes import CLASSES
from ossiclass.synth.stains import sample_domains


def run(
    *, per_class: int, test_per_class: int, domains: int, test_domains: int, seed: int, workers: int
) -> dict:
    """Fit on `per_class` tiles per class from `seed`'s `domains` labs; test on
    `test_per_class` per class from `test_domains` labs of seed + 1."""
    train_images, train_labels = labelled_tiles(
        per_class, seed, sample_domains(seed, domains), workers
    )
    test_images, test_labels = labelled_tiles(
        test_per_class, seed + 1, sample_domains(seed + 1, test_domains), workers
    )
    train, test = colour_features(train_images), colour_features(test_images)
    models = {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "nearest centroid": make_pipeline(StandardScaler(), NearestCentroid()),
    }
    scores = {}
    for name, model in models.items():
        predicted = model.fit(train, train_labels).predict(test)
        scores[name] = {
            "macro_accuracy": float(balanced_accuracy_score(test_labels, predicted)),
            "fitted_macro_accuracy": float(
                balanced_accuracy_score(train_labels, model.predict(train))
            ),
            "confusion": confusion_matrix(test_labels, predicted).tolist(),
        }
    return {
        "what": "macro accuracy (balanced) of colour statistics on unseen stain domains; "
        "confusion rows true, columns predicted, in `classes` order",
        "classes": list(CLASSES),
        "fit": {"tiles": len(train), "seed": seed, "domains": domains},
        "test": {"tiles": len(test), "seed": seed + 1, "domains": test_domains},
        "models": scores,
    }


def report(figures: dict) -> str:
    """The figures of `run` as lines of text, a confusion matrix under each model."""
    fit, test, classes = figures["fit"], figures["test"], figures["classes"]
    lines = [
        f"colour baseline: fit on {fit['tiles']} tiles (seed {fit['seed']}, {fit['domains']} "
        f"domains), test on {test['tiles']} tiles from {test['domains']} unseen domains "
        f"(seed {test['seed']})"
    ]
    width = max(len(c) for c in classes)
    for name, score in figures["models"].items():
        lines.append(
            f"  {name}: macro accuracy {score['macro_accuracy']:.3f} on unseen domains "
            f"({score['fitted_macro_accuracy']:.3f} on its own)"
        )
        lines.append("    " + " " * width + " " + " ".join(f"{c[:6]:>6}" for c in classes))
        for label, row in zip(classes, score["confusion"], strict=True):
            lines.append(f"    {label:>{width}} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
