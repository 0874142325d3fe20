"""The tissue classifier: the LightningModule that trains a network of `network.py`.

The module holds what is specific to the problem (network, loss, metrics, optimiser); devices,
precision, checkpoints and logging are Trainer settings in `configs/*.yaml`.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torchmetrics
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from ossiclass.classes import CLASSES
from ossiclass.errors import BadInputError
from ossiclass.network import build_backbone, transfer_weights
from ossiclass.preprocessing import Standardize


class TissueClassifier(pl.LightningModule):
    """Tissue classifier over a class list (by default the six).

    Parameters
    ----------
    backbone : a name from `BACKBONES` (default resnet18, or the `init_bundle`'s).
    classes : class names in output order; the training CLI sets them from the data
        (`TileDataModule.class_names`).
    init_bundle : a model bundle to fine-tune: its network is the starting point (the head's
        rows of the classes it knows included), and the data module takes its preprocessing.
    weights_path : optional local file of pretrained weights for the backbone.
    lr, weight_decay : AdamW settings; the learning rate follows a one-cycle schedule.
    label_smoothing : cross-entropy label smoothing.
    class_weights : optional per-class loss weights, in class order.
    """

    def __init__(
        self,
        backbone: str | None = None,
        classes: list[str] | None = None,
        init_bundle: str | None = None,
        weights_path: str | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.05,
        class_weights: list[float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(classes or CLASSES)
        self.standardize = Standardize()
        self.tuned_from: dict | None = None  # the init_bundle's path and sha256, as read
        if init_bundle:
            self.backbone_name, self.network = self._start_from(init_bundle, backbone)
        else:
            self.backbone_name = backbone or "resnet18"
            self.network = build_backbone(self.backbone_name, len(self.class_names), weights_path)
        self.network = self.network.to(memory_format=torch.channels_last)
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        count = len(self.class_names)
        metrics = lambda: torchmetrics.MetricCollection(  # noqa: E731
            {
                "accuracy": torchmetrics.Accuracy("multiclass", num_classes=count),
                "macro_f1": torchmetrics.F1Score("multiclass", num_classes=count, average="macro"),
            }
        )
        # ModuleDict keys must not shadow nn.Module attributes (train): "<stage>_".
        self.metrics = nn.ModuleDict({f"{stage}_": metrics() for stage in ("train", "val", "test")})
        self.recall = nn.ModuleDict(
            {
                f"{stage}_": torchmetrics.Recall("multiclass", num_classes=count, average="none")
                for stage in ("val", "test")
            }
        )
        self.confusion = nn.ModuleDict(
            {
                f"{stage}_": torchmetrics.ConfusionMatrix("multiclass", num_classes=count)
                for stage in ("val", "test")
            }
        )

    def _start_from(self, path: str, backbone: str | None) -> tuple[str, nn.Module]:
        """A bundle's backbone name and network with a head for our classes: every layer
        copied, and the head's rows of the classes the bundle knows; its standardisation."""
        from ossiclass.bundle import load_bundle
        from ossiclass.outputs import sha256

        network, settings = load_bundle(path)
        self.tuned_from = {"path": str(Path(path).resolve()), "sha256": sha256(path)}
        if backbone not in (None, settings.backbone):
            raise BadInputError(
                f"{path} is a {settings.backbone}: leave model.backbone out or set it to that"
            )
        self.standardize = settings.preprocessing.standardize()
        tuned = build_backbone(settings.backbone, len(self.class_names))
        known = [c.name for c in settings.classes]
        new = transfer_weights(network, tuned, known, self.class_names)
        if new:
            rank_zero_info(f"classes the bundle does not know, learnt from scratch: {new}")
        return settings.backbone, tuned

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before the standardisation was its own module kept its buffers
        as `mean` and `std`: resume them too."""
        state = checkpoint["state_dict"]
        for name in ("mean", "std"):
            if name in state:
                state[f"standardize.{name}"] = state.pop(name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of (N, 3, H, W) uint8 tiles."""
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
            {f"{stage}/recall_{name}": v for name, v in zip(self.class_names, values, strict=True)},
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
