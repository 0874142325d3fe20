"""Training from the command line through LightningCLI: configs/*.yaml map onto the model, the
data module and the Trainer. A run stopped midway resumes with `--ckpt_path .../last.ckpt` and
continues the same run: same epochs, same log, each step logged once. Where TensorBoard is
installed, the run logs to it as well, into the same folder."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_info

from ossiclass.bundle import ModelSettings, check_writable, save_bundle
from ossiclass.data import TileDataModule
from ossiclass.errors import BadInputError, OssiclassError
from ossiclass.model import TissueClassifier
from ossiclass.network import build_backbone, head

SUBCOMMANDS = ("fit", "validate", "test", "predict", "-h", "--help")
CHECKPOINT_NAMES = ("last", "best", "hpc", "registry")
"""`--ckpt_path` values Lightning resolves itself, not files."""


class BundleWriter(Callback):
    """Write `model.pt` beside the run's checkpoints when training ends, from the best
    checkpoint where one was kept."""

    def __init__(self, filename: str = "model.pt"):
        self.filename = filename

    def _path(self, trainer: pl.Trainer) -> Path:
        return Path(trainer.log_dir or trainer.default_root_dir) / self.filename  # a collective

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Stop a run whose bundle could not be written before it trains, on every process."""
        path, problem = self._path(trainer), None
        if trainer.is_global_zero:
            try:
                check_writable(path)
            except OssiclassError as error:
                problem = str(error)
        if problem := trainer.strategy.broadcast(problem):
            raise OssiclassError(problem)

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        path = self._path(trainer)
        if not trainer.is_global_zero:
            return
        checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "")
        state = module.state_dict()
        if checkpoint:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        network = {
            k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")
        }
        data = trainer.datamodule
        trained_with = {"model": dict(module.hparams), "data": dict(data.hparams)}
        if module.tuned_from:
            trained_with["tuned_from"] = module.tuned_from
        settings = ModelSettings(
            backbone=module.backbone_name,
            preprocessing=data.preprocessing,
            classes=data.classes,
            trained_with=trained_with,
        )
        holder = build_backbone(settings.backbone, len(settings.classes))
        holder.load_state_dict(network)
        save_bundle(path, holder, settings)
        rank_zero_info(f"wrote the model bundle {path}")


class HeadFirst(Callback):
    """Fine-tuning that trains only the network's last layer and its batch norm for the first
    `epochs` epochs, then the whole network: new classes' rows settle before they pull on the
    features, and batch norm follows the lab's tiles from the start. A model trained from
    scratch (no `model.init_bundle`) trains whole from the start.

    Every parameter stays trainable, so that DDP reduces them all: the other layers' gradients
    are dropped before each optimizer step, which then leaves those layers as they are (no
    step, no weight decay). Layers frozen through `requires_grad` are not reduced when they
    thaw under DDP (Lightning #20340, the `BaseFinetuning` way)."""

    def __init__(self, epochs: int = 1):
        self.epochs = epochs

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:  # fmt: skip
        if trainer.current_epoch >= self.epochs or not module.hparams.init_bundle:
            return  # also in a run resumed past the head's epochs
        network = module.network
        norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        kept = {id(p) for layer in (head(network), *norms) for p in layer.parameters()}
        for parameter in network.parameters():
            if id(parameter) not in kept:
                parameter.grad = None


class _ContinuingWriter(ExperimentWriter):
    """Writes metrics.csv without deleting an interrupted run's rows: on its first save it drops
    the rows at or after its first step (they are logged again) and appends."""

    def __init__(self, log_dir: str):
        self._trimmed = False
        super().__init__(log_dir)

    # Lightning offers no public hook for this: its writer deletes metrics.csv in this method.
    def _check_log_dir_exists(self) -> None:
        pass

    def save(self) -> None:
        if self.metrics and not self._trimmed:
            self._trimmed = True
            if self._fs.isfile(self.metrics_file_path):
                self._keep_rows_before(min(row["step"] for row in self.metrics))
        super().save()

    def _keep_rows_before(self, step: int) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if int(float(row["step"])) < step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
        self.metrics_keys = header


class ContinuingCSVLogger(CSVLogger):
    """CSVLogger whose resumed runs continue their metrics.csv, each step once: every run's
    logger (its `save_dir` by default the Trainer's `default_root_dir`)."""

    def __init__(self, save_dir: str | None = None, name: str = "lightning_logs",
                 version: int | str | None = None, **kwargs):  # fmt: skip
        super().__init__(save_dir or ".", name=name, version=version, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def add_tensorboard(trainer: pl.Trainer) -> None:
    """Log to TensorBoard too, into the first logger's run folder, if tensorboard is installed."""
    if not trainer.loggers or importlib.util.find_spec("tensorboard") is None:
        return
    if any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
        return
    first = trainer.loggers[0]
    board = TensorBoardLogger(
        first.save_dir, name=first.name, version=first.version, default_hp_metric=False
    )
    trainer.loggers = [*trainer.loggers, board]


class FlushLogsOnCheckpoint(Callback):
    """Writes the loggers' buffered rows as each checkpoint is made: a run killed just after a
    checkpoint resumes past steps whose rows are already on disk."""

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint):
        for logger in trainer.loggers:
            logger.save()


LOGGER = f"{__name__}.ContinuingCSVLogger"
"""Every run's logger unless a config names another (or `logger: false`)."""


class _TrainingCLI(LightningCLI):
    """LightningCLI with what every run has, so that configs do not repeat it: the
    `BundleWriter` (options under `bundle.`), a `ModelCheckpoint` keeping the best epoch by
    validation macro-F1 and the last (options under `checkpoint.`), and a
    `ContinuingCSVLogger` in the Trainer's `default_root_dir` (`trainer.logger`). The model
    learns the data's classes, and a bundle to fine-tune (`model.init_bundle`) gives the data
    its preprocessing."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.init_bundle", "data.init_bundle")
        parser.link_arguments("data.class_names", "model.classes", apply_on="instantiate")
        parser.add_lightning_class_args(BundleWriter, "bundle")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/macro_f1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:02d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        if getattr(logger, "class_path", None) == LOGGER and logger.init_args.save_dir is None:
            logger.init_args.save_dir = config.trainer.default_root_dir or "."

    def before_fit(self) -> None:
        add_tensorboard(self.trainer)
        self.trainer.callbacks.append(FlushLogsOnCheckpoint())


def _values(args: list[str], option: str) -> list[str]:
    """Every value given to `option` in `args` (`--option VALUE` or `--option=VALUE`)."""
    values = []
    for index, arg in enumerate(args):
        if arg == option and index + 1 < len(args):
            values.append(args[index + 1])
        elif arg.startswith(option + "="):
            values.append(arg.split("=", 1)[1])
    return values


def _value(args: list[str], option: str) -> str | None:
    """The first value given to `option` in `args`, or None."""
    return next(iter(_values(args, option)), None)


def run_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Run a LightningCLI subcommand (`fit`, `validate`, `test`) with `args` (default:
    sys.argv); without one, `fit`. With `run=False`, only build the model, data module and
    trainer from `args`."""
    args = sys.argv[1:] if args is None else list(args)
    if run and not (args and args[0] in SUBCOMMANDS):
        args = ["fit", *args]
    checkpoint = _value(args, "--ckpt_path")
    version_option = "--trainer.logger.init_args.version"
    named = checkpoint and checkpoint.split(":", 1)[0] in CHECKPOINT_NAMES  # "registry:NAME"
    local = checkpoint and not named and "://" not in checkpoint
    if local and not Path(checkpoint).is_file():
        raise BadInputError(f"--ckpt_path {checkpoint}: no such checkpoint file")
    for config in _values(args, "--config") + _values(args, "-c"):
        try:
            Path(config).read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise BadInputError(f"--config {config}: not UTF-8 text ({error.reason})") from None
        except OSError:
            pass  # LightningCLI says what is wrong with the path, below
    if local and _value(args, version_option) is None:
        run_dir = Path(checkpoint).resolve().parent.parent  # RUN/checkpoints/last.ckpt
        if run_dir.name.startswith("version_"):
            args += [version_option, run_dir.name]  # log into the run being resumed
    one_line = {"exit_on_error": False}  # a bad option or config is one line, not the usage
    try:
        return _TrainingCLI(
            TissueClassifier,
            TileDataModule,
            args=args,
            run=run,
            seed_everything_default=0,
            trainer_defaults={"logger": {"class_path": LOGGER}},
            save_config_kwargs={"overwrite": True},
            parser_kwargs=one_line | {name: one_line for name in LightningCLI.subcommands()},
        )
    except argparse.ArgumentError as error:
        problem = " ".join(line.strip() for line in str(error).splitlines())
        raise BadInputError(f"train: {problem} (`ossiclass train --help`: the options)") from None
