"""Training from the command line through LightningCLI: configs/*.yaml map onto the model, the
data module and the Trainer."""

from __future__ import annotations

import sys

from pytorch_lightning.cli import LightningCLI

from ossiclass.data import TileDataModule
from ossiclass.model import TissueClassifier

SUBCOMMANDS = ("fit", "validate", "test", "predict", "-h", "--help")


def run_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Run a LightningCLI subcommand (`fit`, `validate`, `test`) with `args` (default:
    sys.argv); without one, `fit`. With `run=False`, only build the model, data module and
    trainer from `args`."""
    args = sys.argv[1:] if args is None else list(args)
    if run and not (args and args[0] in SUBCOMMANDS):
        args = ["fit", *args]
    return LightningCLI(
        TissueClassifier,
        TileDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
    )
