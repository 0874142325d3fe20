"""A callback for the DDP tests, found through PYTHONPATH by the processes Lightning starts."""

from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback


class RankWeights(Callback):
    """Each process saves its network's parameters at the end of fit, as `rank{r}.pt` in
    `folder` (not the batch-norm statistics: each process keeps its own last batch's)."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_fit_end(self, trainer, module) -> None:
        parameters = dict(module.network.named_parameters())
        torch.save(parameters, self.folder / f"rank{trainer.global_rank}.pt")
