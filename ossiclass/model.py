"""The tissue classifier: the LightningModule that trains a network of `network.py`.

The module holds what is specific to the problem (network, loss, metrics, optimiser); devices,
precision, checkpoints and logging are Trainer settings in `configs/*.yaml`.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from ossiclass.classes import CLASSES
from ossiclass.network import build_backbone
from ossiclass.preprocessing import Standardize


class TissueClassifier(pl.LightningModule):
    """Six-class tissue classifier.

    Parameters
    ----------
    backbone : a name from `BACKBONES`.
    weights_path : optional local file of pretrained weights for the backbone.
    lr, weight_decay : AdamW settings; the learning rate follows a one-cycle schedule.
    label_smoothing : cross-entropy label smoothing.
    class_weights : optional per-class loss weights, in class order.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        weights_path: str | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.05,
        class_weights: list[float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.network = build_backbone(backbone, len(CLASSES), weights_path)
        self.network = self.network.to(memory_format=torch.channels_last)
        self.standardize = Standardize()
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        metrics = lambda: torchmetrics.MetricCollection(  # noqa: E731
            {
                "accuracy": torchmetrics.Accuracy("multiclass", num_classes=len(CLASSES)),
                "macro_f1": torchmetrics.F1Score(
                    "multiclass", num_classes=len(CLASSES), average="macro"
                ),
            }
        )
        # ModuleDict keys must not shadow nn.Module attributes (train): "<stage>_".
        self.metrics = nn.ModuleDict({f"{stage}_": metrics() for stage in ("train", "val", "test")})
        self.recall = nn.ModuleDict(
            {
                f"{stage}_": torchmetrics.Recall(
                    "multiclass", num_classes=len(CLASSES), average="none"
                )
                for stage in ("val", "test")
            }
        )
        self.confusion = nn.ModuleDict(
            {
                f"{stage}_": torchmetrics.ConfusionMatrix("multiclass", num_classes=len(CLASSES))
                for stage in ("val", "test")
            }
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before the standardisation was its own module kept its buffers
        as `mean` and `std`: resume them too."""
        state = checkpoint["state_dict"]
        for name in ("mean", "std"):
            if name in state:
                state[f"standardize.{name}"] = state.pop(name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, 6) of (N, 3, H, W) uint8 tiles."""
        return self.network(self.standardize(images))

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        predictions = logits.argmax(dim=1)
        self.metrics[f"{stage}_"].update(predictions, labels)
        training = stage == "train"
        # Epoch means of validation and test losses are reduced over processes; the training
        # loss is logged per step from each process (an all-reduce a step would cost too much).
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=not stage == "test",
            on_step=training,
            on_epoch=True,
            sync_dist=not training,
        )
        self.log_dict(
            {f"{stage}/{k}": v for k, v in self.metrics[f"{stage}_"].items()},
            prog_bar=stage == "val",
            on_step=False,
            on_epoch=True,
        )
        if f"{stage}_" in self.recall:
            self.recall[f"{stage}_"].update(predictions, labels)
            self.confusion[f"{stage}_"].update(predictions, labels)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_per_class(self, stage: str) -> None:
        recall, confusion = self.recall[f"{stage}_"], self.confusion[f"{stage}_"]
        values = recall.compute()
        self.log_dict(
            {f"{stage}/recall_{name}": v for name, v in zip(CLASSES, values, strict=True)},
            sync_dist=True,  # the same on every process: torchmetrics already gathered them
        )
        self.last_confusion = confusion.compute().cpu()
        recall.reset()
        confusion.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_per_class("val")

    def on_test_epoch_end(self) -> None:
        self._log_per_class("test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
