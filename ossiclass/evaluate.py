"""Evaluation of a model bundle on labelled tiles: metrics, calibration, temperature scaling."""

from __future__ import annotations

import torch
import torchmetrics.functional.classification as tmf
from torch import nn

from ossiclass.classes import CLASSES

ECE_BINS = 15


@torch.inference_mode()
def predict_logits(network: nn.Module, tiles: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Logits (N, 6) of (N, 3, S, S) uint8 tiles, in batches, on the CPU."""
    from ossiclass.model import HE_MEAN, HE_STD

    mean = torch.tensor(HE_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(HE_STD).view(1, 3, 1, 1) * 255
    network = network.eval().to(memory_format=torch.channels_last)
    outputs = []
    for start in range(0, len(tiles), batch_size):
        batch = (tiles[start : start + batch_size].float() - mean) / std
        outputs.append(network(batch.contiguous(memory_format=torch.channels_last)))
    return torch.cat(outputs)


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


def metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix and expected
    calibration error (15 bins) of logits at a softmax temperature. Plain data."""
    count = len(CLASSES)
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
        "per_class": {
            name: {key: float(values[i]) for key, values in per_class.items()}
            for i, name in enumerate(CLASSES)
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
