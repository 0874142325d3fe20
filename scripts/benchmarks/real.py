"""`real`: the real check, a model on the labelled real H&E fields of `reference-he/labels.tsv`.

    python scripts/benchmark.py real --model MODEL [--reference ../shared/reference-he]

Each labelled field (or its box) is rescaled from its µm/px to the model's by the bundle's
`Preprocessing.to_model_scale`, as `predict` rescales an image, and cut into the model's
input tiles; tiles under half tissue are left out. `run` returns the figures as data:
- the model's recall per class and its cartilage-vs-bone balanced recall;
- a linear probe, cartilage against bone, in folds grouped by field (no field on both sides of
  a fold): on colour statistics, on the model's penultimate features and on those of the same
  network randomly initialised;
- colour statistics learnt on synthetic cartilage and bone tiles (the training set's seed and
  labs), tested on the real tiles;
- realism per class: how well a linear classifier tells synthetic from real tiles of that class
  in a fixed space of colour and texture statistics (ROC AUC in grouped folds: 0.5 means the
  two cannot be told apart, 1.0 means they always can).
The labelled fields are a check only: never train on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ossiclass.bundle import ModelSettings, load_bundle
from ossiclass.classes import CLASSES
from ossiclass.errors import BadInputError
from ossiclass.imageio import read_image
from ossiclass.network import build_backbone
from ossiclass.predict import InferenceNetwork, Predictor
from ossiclass.preprocess.tiling import resize
from ossiclass.preprocess.tissue import tissue_fraction
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import make_tile

PAIR = ("hyaline_cartilage", "lamellar_bone")
"""The distinction the real check is about: the only two classes with labelled real fields."""
MIN_TISSUE = 0.5


@dataclass(frozen=True)
class Field:
    """One labelled real field: image file, optional box (x0, y0, x1, y1) px, µm/px, class."""

    path: Path
    box: tuple[int, int, int, int] | None
    mpp: float
    label: str


def read_fields(folder: Path) -> list[Field]:
    """The rows of `folder/labels.tsv` (file, box or empty, µm/px, class); '#' lines are notes."""
    table = folder / "labels.tsv"
    if not table.is_file():
        raise BadInputError(f"{table}: no such label table")
    fields = []
    for number, line in enumerate(table.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        try:
            name, box, mpp, label = parts
            bounds = tuple(int(v) for v in box.split(",")) if box.strip() else None
            field = Field(folder / name, bounds, float(mpp), label.strip())
        except ValueError:
            raise BadInputError(
                f"{table}:{number}: expected file, box, µm/px and class separated by tabs"
            ) from None
        box_ok = bounds is None or (len(bounds) == 4 and bounds[:2] < bounds[2:])
        if field.label not in CLASSES or not box_ok or not field.mpp > 0:
            raise BadInputError(f"{table}:{number}: unknown class, malformed box or µm/px")
        fields.append(field)
    if not fields:
        raise BadInputError(f"{table}: no labelled fields")
    return fields


def cut_field(field: Field, model: ModelSettings) -> np.ndarray:
    """A field rescaled to the model's µm/px as `predict` rescales an image, cut into
    non-overlapping (K, S, S, 3) uint8 tiles of the model's input size S, each at least
    `MIN_TISSUE` tissue (K may be 0)."""
    image = read_image(field.path)
    if field.box:
        x0, y0, x1, y1 = field.box
        image = image[y0:y1, x0:x1]
    image = model.preprocessing.to_model_scale(image, field.mpp)
    tile_px = model.input_px
    rows, cols = image.shape[0] // tile_px, image.shape[1] // tile_px
    tiles = [
        image[r * tile_px : (r + 1) * tile_px, c * tile_px : (c + 1) * tile_px]
        for r in range(rows)
        for c in range(cols)
    ]
    tiles = [tile for tile in tiles if tissue_fraction(tile) >= MIN_TISSUE]
    return np.stack(tiles) if tiles else np.empty((0, tile_px, tile_px, 3), np.uint8)


def real_tiles(folder: Path, model: ModelSettings):
    """All labelled fields cut: ((N, S, S, 3) uint8 tiles, (N,) class names, (N,) field names)."""
    tiles, labels, groups = [], [], []
    for field in read_fields(folder):
        cut = cut_field(field, model)
        tiles.append(cut)
        labels += [field.label] * len(cut)
        groups += [field.path.name] * len(cut)
    return np.concatenate(tiles), np.array(labels), np.array(groups)


def colour_features(images: np.ndarray) -> np.ndarray:
    """Per-channel mean and std in RGB and in HED (scikit-image's rgb2hed): (N, 12) float."""
    features = []
    for image in images:
        rgb = image.reshape(-1, 3).astype(np.float64) / 255.0
        hed = rgb2hed(image).reshape(-1, 3)
        features.append(np.concatenate([rgb.mean(0), rgb.std(0), hed.mean(0), hed.std(0)]))
    return np.array(features)


def texture_features(images: np.ndarray) -> np.ndarray:
    """Grey-level texture at the model's scale: gradient and Laplacian-of-Gaussian energy at 1
    and 3 px, the shares of bright (glass, lacunae) and dark (nuclei) pixels: (N, 6) float."""
    features = []
    for image in images:
        grey = image.astype(np.float32).mean(-1) / 255.0
        values = []
        for sigma in (1.0, 3.0):
            values.append(ndi.gaussian_gradient_magnitude(grey, sigma).mean())
            values.append(np.abs(ndi.gaussian_laplace(grey, sigma)).mean())
        values += [(grey > 0.85).mean(), (grey < 0.35).mean()]
        features.append(values)
    return np.array(features)


def realism_features(images: np.ndarray) -> np.ndarray:
    """The fixed space of the realism measure: colour and texture statistics, (N, 18)."""
    return np.concatenate([colour_features(images), texture_features(images)], axis=1)


def _network_features(network: torch.nn.Module, tiles: np.ndarray) -> np.ndarray:
    """Penultimate features (N, F) of (N, S, S, 3) uint8 tiles, through `predict`'s own
    inference network (standardised, folded, fp32) with the head taken off."""
    if hasattr(network, "fc"):
        network.fc = torch.nn.Identity()
    else:  # mobilenet, efficientnet: the last layer of `classifier`
        network.classifier[-1] = torch.nn.Identity()
    features = InferenceNetwork(network)
    with torch.inference_mode():
        batches = [
            features(torch.from_numpy(tiles[start : start + 64]).permute(0, 3, 1, 2))
            for start in range(0, len(tiles), 64)
        ]
    return torch.cat(batches).numpy()


def _out_of_fold(features, labels, groups, splits: int, method: str = "predict") -> np.ndarray:
    """A standardised logistic regression's out-of-fold answers, in `splits` folds grouped by
    `groups` (no group on both sides) and stratified by label."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    folds = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=0)
    return cross_val_predict(model, features, labels, groups=groups, cv=folds, method=method)


def grouped_probe(features: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Balanced accuracy of a linear probe, out of fold, in 5 folds grouped by `groups`."""
    predicted = _out_of_fold(features, labels, groups, 5)
    return float(balanced_accuracy_score(labels, predicted))


def realism(synthetic: np.ndarray, labs: np.ndarray, real: np.ndarray, fields: np.ndarray):
    """ROC AUC of telling synthetic from real tiles apart (out of fold, grouped: no synthetic
    lab and no real field on both sides), in `realism_features` space. 0.5: indistinguishable.
    `labs` (N,) are the synthetic tiles' stain domains, `fields` the real tiles' fields."""
    features = np.concatenate([realism_features(synthetic), realism_features(real)])
    is_real = np.r_[np.zeros(len(synthetic)), np.ones(len(real))]
    groups = np.r_[[f"lab {lab}" for lab in labs], fields]
    splits = min(5, len(set(fields)))
    scores = _out_of_fold(features, is_real, groups, splits, "predict_proba")[:, 1]
    return float(roc_auc_score(is_real, scores))


def synthetic_tiles(name: str, count: int, seed: int, domains: int, tile_px: int):
    """`count` training tiles of class `name` (256 px at 0.5 µm/px from `seed`'s `domains`
    labs, as `ossiclass synth tiles` makes them) resized to the model's input, as training
    loads them: ((count, tile_px, tile_px, 3) uint8, (count,) their labs' indices)."""
    labs = sample_domains(seed, domains)
    tiles, drawn = [], []
    for index in range(count):
        image, lab = make_tile(name, index, seed, labs, 256, 0.5)
        tiles.append(resize(image, (tile_px, tile_px)))
        drawn.append(lab)
    return np.stack(tiles), np.array(drawn)


def tile_probabilities(predictor: Predictor, tiles: np.ndarray) -> np.ndarray:
    """(N, classes) probabilities of (N, S, S, 3) uint8 tiles at the model's scale, through
    the bundle's normaliser and network, 64 at a time."""
    prep = predictor.preprocessing
    return np.concatenate(
        [
            predictor.probabilities(
                torch.from_numpy(prep.normalize(tiles[i : i + 64])).permute(0, 3, 1, 2)
            ).numpy()
            for i in range(0, len(tiles), 64)
        ]
    )


def _counts(names: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(names, return_counts=True)
    return {str(v): int(n) for v, n in zip(values, counts, strict=True)}


def run(
    *, model: str | Path, reference: str | Path, per_class: int, seed: int = 0, domains: int = 32
) -> dict:
    """Every figure of the real check on the fields of `reference`, as a dict (see the module's
    docstring), with `per_class` synthetic tiles per class from `seed`'s `domains` labs; only
    `{"skipped": why}` where `reference` holds no label table."""
    reason = missing_reason(Path(reference))
    if reason:
        return {"what": "the real check, skipped", "skipped": reason}

    predictor = Predictor(model, precision="fp32")
    prep = predictor.preprocessing
    tiles, labels, groups = real_tiles(Path(reference), predictor.settings)
    probabilities = tile_probabilities(predictor, tiles)
    predicted = np.array(CLASSES)[probabilities.argmax(1)]
    recall = {c: float((predicted[labels == c] == c).mean()) for c in PAIR}
    called = {c: _counts(predicted[labels == c]) for c in PAIR}
    # Cartilage against bone: the more probable of the two, whatever the other four say.
    pair = np.array(PAIR)[
        (
            probabilities[:, CLASSES.index(PAIR[1])] > probabilities[:, CLASSES.index(PAIR[0])]
        ).astype(int)
    ]
    pair_recall = [float((pair[labels == c] == c).mean()) for c in PAIR]

    trained, settings = load_bundle(model)
    torch.manual_seed(0)
    untrained = build_backbone(settings.backbone, len(CLASSES))
    colour = colour_features(tiles)
    seen = prep.normalize(tiles)  # as the network sees them: stain-normalised, if at all
    probe = {
        "colour statistics": grouped_probe(colour, labels, groups),
        "trained features": grouped_probe(_network_features(trained, seen), labels, groups),
        "random features": grouped_probe(_network_features(untrained, seen), labels, groups),
    }

    synthetic = {c: synthetic_tiles(c, per_class, seed, domains, prep.input_px) for c in PAIR}
    features = np.concatenate([colour_features(synthetic[c][0]) for c in PAIR])
    classes = np.repeat(np.array(PAIR), per_class)
    colour_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    transferred = colour_model.fit(features, classes).predict(colour)
    realism_auc = {c: realism(*synthetic[c], tiles[labels == c], groups[labels == c]) for c in PAIR}
    return {
        "what": "recall, balanced accuracy and ROC AUC of the real check (see real.py)",
        "model": str(model),
        "model_mpp": predictor.settings.model_mpp,
        "tiles": {c: int((labels == c).sum()) for c in PAIR},
        "fields": {c: len(set(groups[labels == c])) for c in PAIR},
        "recall": recall,
        "called": called,
        "pair_balanced_recall": float(np.mean(pair_recall)),
        "probe": probe,
        "synthetic_colour_to_real": {
            "balanced_recall": float(balanced_accuracy_score(labels, transferred)),
            "cartilage_recall": float((transferred[labels == PAIR[0]] == PAIR[0]).mean()),
        },
        "realism_auc": realism_auc,
        "synthetic": {"per_class": per_class, "seed": seed, "domains": domains},
    }


def report(figures: dict) -> str:
    """The figures of `run` as lines of text."""
    if "skipped" in figures:
        return f"real check {figures['skipped']}"
    tiles = ", ".join(
        f"{figures['tiles'][c]} {c} tiles from {figures['fields'][c]} fields" for c in PAIR
    )
    lines = [
        f"real check, model {figures['model']} at {figures['model_mpp']:g} µm/px: {tiles}",
        "  recall: "
        + ", ".join(f"{c} {figures['recall'][c]:.2f}" for c in PAIR)
        + f"; cartilage-vs-bone balanced recall {figures['pair_balanced_recall']:.2f}",
        "  called: " + "; ".join(f"{c} -> {figures['called'][c]}" for c in PAIR),
        "  grouped linear probe, cartilage vs bone (balanced accuracy, folds by field): "
        + ", ".join(f"{k} {v:.2f}" for k, v in figures["probe"].items()),
        "  colour statistics learnt on synthetic tiles (seed {seed}, {domains} labs, "
        "{per_class} per class) on the real tiles: balanced recall ".format(**figures["synthetic"])
        + f"{figures['synthetic_colour_to_real']['balanced_recall']:.2f}, cartilage recall "
        + f"{figures['synthetic_colour_to_real']['cartilage_recall']:.2f}",
        "  realism, synthetic against real (ROC AUC of a linear classifier, 0.5 = alike): "
        + ", ".join(f"{c} {v:.2f}" for c, v in figures["realism_auc"].items()),
    ]
    return "\n".join(lines)


def missing_reason(folder: Path) -> str | None:
    """Why the real check cannot run here (no label table), or None."""
    if not (folder / "labels.tsv").is_file():
        return f"skipped: no labelled real tiles at {folder} (the project workspace's shared/)"
    return None
