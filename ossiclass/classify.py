"""Batch classification of slides and tile folders: streaming, resumable, and spread over
processes by Lightning's `Trainer.predict`.

`classify` is four steps. Open: the input becomes a `TileSource` (`sources.py`) with its tiles
planned. Plan: the slide's stains are estimated once from tissue tiles spread over it (for a
normaliser that works per slide) and the chunks still to do are listed. Run: DataLoader workers
read, white-balance and normalise chunks of `batch_size` tiles while the network runs; each
finished chunk is written at once, atomically, under `OUT/parts/`, so a run that is killed and
started again with `resume=True` classifies only the missing chunks, in the same batches, and
ends with the same outputs; under DDP the processes split the chunks. Write: the chunks merge
into the outputs of `outputs.py`.

What to classify (`Tiling`) is apart from how to run it (`Running`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ossiclass import cell_head, outputs, parts
from ossiclass.classes import TissueClass
from ossiclass.errors import BadInputError, OssiclassError
from ossiclass.predict import InferenceNetwork, Predictor
from ossiclass.preprocess.tissue import white_balance, white_balance_gains
from ossiclass.preprocessing import Preprocessing
from ossiclass.qupath import Region, read_region
from ossiclass.scale import checked_scale
from ossiclass.sources import TileSource, open_source

STAIN_SAMPLE_TILES = 64
"""Tissue tiles, spread over a slide, from which its stains are estimated once."""


@dataclass(frozen=True)
class Tiling:
    """What to classify.

    stride_px : step between tiles in pixels at the model's µm/px (default: the model's
        input size, no overlap).
    min_tissue : least share of a tile the tissue mask must cover for it to be classified.
    input_mpp : the input's µm/px, overriding what the files record (see `resolve_mpp`).
    white_balance : scale a slide's channels so that its glass reads neutral (240 in each)
        before anything else: a lab's tinted or dim glass otherwise reads as stain. Slides
        only: a tile alone shows too little glass to go by.
    refine : move the class map's boundaries within tiles to where the slide's colours put
        them, in cells of about 8 µm (`refine.py`). Slides only.
    """

    stride_px: int | None = None
    min_tissue: float = 0.5
    input_mpp: float | None = None
    white_balance: bool = True
    refine: bool = False

    def validate(self) -> None:
        if not 0.0 <= self.min_tissue <= 1.0:
            raise BadInputError(f"min_tissue must lie in [0, 1], got {self.min_tissue}")
        if self.stride_px is not None and self.stride_px < 1:
            raise BadInputError(f"stride_px must be positive, got {self.stride_px}")
        if self.input_mpp is not None:
            checked_scale(self.input_mpp, "input_mpp")


@dataclass(frozen=True)
class Running:
    """How to run it.

    batch_size : tiles per chunk: the unit of batching, writing and resuming.
    workers : DataLoader processes that read and normalise tiles, per device. None: on the
        CPU the source's `cpu_workers` (a slide: none, reading costs less than the share of
        the cores workers would take from the forward pass); on GPUs up to 8, as many as the
        cores allow: there the GPU waits on reading (measured: `scripts/benchmark.py classify
        --workers N`). Never more than there are chunks to read.
    accelerator, devices : as for Lightning's Trainer; devices > 1 splits the chunks (DDP).
    device_index : run on this one device of the accelerator's (with devices=1): a process
        of a study's DDP run on its own GPU (None: the first `devices`).
    precision : "auto", "fp32" or "bf16" (see `Predictor`).
    """

    batch_size: int = 64
    workers: int | None = None
    accelerator: str = "cpu"
    devices: int = 1
    precision: str = "auto"
    device_index: int | None = None

    def loader_workers(self, source: TileSource, device: str, chunks: int) -> int:
        """DataLoader workers for `chunks` chunks of `source` on a `device` type such as
        "cpu" or "cuda" (see `workers`)."""
        if self.workers is not None:
            return self.workers
        if device == "cpu":
            return min(source.cpu_workers, chunks)
        return max(1, min(8, _cores() // self.devices, chunks))

    def validate(self) -> None:
        if self.batch_size < 1 or (self.workers or 0) < 0 or self.devices < 1:
            raise BadInputError("batch_size and devices must be positive, workers >= 0")
        cores = _cores()
        if self.accelerator == "cpu" and self.devices > cores and not cluster_launched():
            raise BadInputError(
                f"devices {self.devices}: this machine gives {cores} cores, and processes beyond "
                "them only slow each other"
            )
        if (self.workers or 0) > 4 * cores:
            raise BadInputError(f"workers {self.workers}: more than 4 per core ({cores} cores)")
        if self.device_index is not None and self.devices != 1:
            raise BadInputError("device_index names one device: devices must be 1")


def _cores() -> int:
    """The CPU cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def cluster_launched() -> bool:
    """Whether a launcher started this process as one of several (srun, torchrun, LSF, MPI, or
    NODE_RANK set by hand), as Lightning detects it; else the command starts its own."""
    from lightning_fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    environments = (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment, MPIEnvironment)
    return "NODE_RANK" in os.environ or any(e.detect() for e in environments)


class Chunks(Dataset):
    """Chunk `c` of a source: (c, (T, 3, S, S) uint8 normalised tiles, (T,) item of each tile,
    [(item, reason)] for items that could not be read). Runs in DataLoader workers.

    `stains`: the slide's estimate for the normaliser (None: each tile its own); `glass`:
    white-balance the tiles against it before stain normalisation (None: as read). The network
    stays in the main process.
    """

    def __init__(
        self, source: TileSource, chunks: list[int], batch_size: int, prep: Preprocessing,
        stains, glass: np.ndarray | None,
    ):  # fmt: skip
        self.source, self.chunks, self.batch_size = source, chunks, batch_size
        self.prep, self.stains, self.glass = prep, stains, glass
        self._handle = None  # each worker opens the slide on first use

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, position: int):
        chunk = self.chunks[position]
        if self._handle is None:
            self._handle = self.source.open()
        start = chunk * self.batch_size
        tiles, owners, failed = [], [], []
        for item in range(start, min(start + self.batch_size, len(self.source))):
            try:
                read = self.source.read(self._handle, item, self.prep)
            except (OssiclassError, OSError, ValueError, RuntimeError) as error:
                failed.append((item, str(error).splitlines()[0][:300] or type(error).__name__))
                continue
            tiles.append(read)
            owners += [item] * len(read)
        size = self.prep.input_px
        if not tiles:
            return chunk, torch.empty(0, 3, size, size, dtype=torch.uint8), torch.empty(0), failed
        tiles = np.concatenate(tiles)
        if self.glass is not None:
            tiles = white_balance(tiles, self.glass)
        normalised = self.prep.normalize(tiles, self.stains)
        batch = torch.from_numpy(normalised).permute(0, 3, 1, 2).contiguous()
        return chunk, batch, torch.tensor(owners), failed

    def __getstate__(self) -> dict:  # a worker gets no open file handle
        return {**self.__dict__, "_handle": None}


class ChunkClassifier(pl.LightningModule):
    """The prediction step: per-item probabilities of a chunk (tiles of one item averaged).
    `gains` (3,): the white balance, applied in the network's input standardisation."""

    def __init__(self, network: InferenceNetwork, gains: np.ndarray | None = None,
                 cells: bool = False):  # fmt: skip
        super().__init__()
        self.network, self.cells = network, cells
        self.register_buffer("gains", None if gains is None else torch.from_numpy(gains))

    def predict_step(self, batch, batch_idx: int) -> dict:
        chunk, tiles, owners, failed = batch
        if len(tiles) == 0:
            return {"chunk": chunk, "items": [], "probabilities": torch.empty(0), "failed": failed}
        if self.cells:  # a slide's tiles, one per item: each with its cells' probabilities
            probabilities, cells = self.network.cell_probabilities(tiles, self.gains)
            return {"chunk": chunk, "items": owners.tolist(), "probabilities": probabilities.cpu(),
                    "cells": cells.cpu(), "failed": failed}  # fmt: skip
        probabilities = self.network.probabilities(tiles, self.gains)
        items, inverse = torch.unique_consecutive(owners, return_inverse=True)
        sums = torch.zeros(len(items), probabilities.shape[1], device=probabilities.device)
        sums.index_add_(0, inverse, probabilities)
        counts = torch.bincount(inverse, minlength=len(items)).unsqueeze(1)
        return {
            "chunk": chunk,
            "items": items.tolist(),
            "probabilities": (sums / counts).cpu(),
            "failed": failed,
        }


class ChunkWriter(BasePredictionWriter):
    """Writes each chunk's rows (columns for `classes`, the model's class list) to
    `parts/chunk-NNNNNN.json` the moment it is classified, and shows tiles done and tiles per
    second."""

    def __init__(
        self, folder: Path, source, classes: tuple[TissueClass, ...], total_items: int,
        progress: bool = True,
    ):  # fmt: skip
        super().__init__(write_interval="batch")
        self.folder, self.source, self.total_items = folder, source, total_items
        self.classes = classes
        self.progress = progress
        self.bar: tqdm | None = None
        self.done = 0

    def on_predict_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        share = -(-self.total_items // trainer.world_size)
        self.bar = tqdm(
            total=share,
            desc="classifying",
            unit="tile",
            disable=not (self.progress and trainer.is_global_zero),
        )

    def write_on_batch_end(self, trainer, module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:  # fmt: skip
        pairs = zip(prediction["items"], prediction["probabilities"].tolist(), strict=True)
        rows = [
            {"item": item, **self.source.key(item), **outputs.result_columns(p, self.classes)}
            for item, p in pairs
        ]
        if "cells" in prediction:
            for row, cells in zip(rows, prediction["cells"].numpy(), strict=True):
                row["cells"] = cell_head.encode(cells)
        skipped = [
            {"item": item, **self.source.key(item), "reason": reason}
            for item, reason in prediction["failed"]
        ]
        parts.write_chunk(self.folder, prediction["chunk"], rows, skipped)
        self.done += len(rows) + len(skipped)
        if self.bar is not None:
            self.bar.update(len(rows) + len(skipped))

    def on_predict_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Plan:
    """What a run does: the source, its slide-level stains (or None), the white balance, the
    job that identifies the run for resuming, the chunks still to classify, and how to run."""

    source: TileSource
    stains: object
    glass: np.ndarray | None
    job: dict
    parts: Path
    todo: list[int]
    running: Running


def classify(
    input_path: str | Path,
    model: str | Path,
    out: str | Path,
    tiling: Tiling = Tiling(),
    running: Running = Running(),
    resume: bool = False,
    progress: bool = True,
    roi: str | Path | None = None,
) -> dict | None:
    """Classify a slide, a plain image or a folder of tiles and write the outputs under `out`.
    A slide's measures are taken in `roi`, a QuPath GeoJSON of the region to measure (the
    union of its area annotations), else over the whole slide (a finished run resumed is not
    measured again).

    Returns the summary (None on processes other than the first under DDP). With `resume`, a
    run that had finished is left as it is and its summary returned, if it was made of the
    same input by the same model with the same tiling.
    """
    tiling.validate()
    running.validate()
    started = time.time()
    input_path, out, model = Path(input_path), Path(out), Path(model)
    if resume and (out / "summary.json").exists() and not (out / "parts").exists():
        return _finished_summary(out, input_path, model, tiling)
    region = None if roi is None else read_region(roi)
    trainer = _trainer(running)
    device = trainer.strategy.root_device  # decides bf16 ("auto"), workers, pinned memory
    predictor = Predictor(model, device, running.precision)
    source = open_source(input_path, predictor.preprocessing, tiling.input_mpp,
                         tiling.stride_px, tiling.min_tissue)  # fmt: skip
    if not source.has_boxes and (region is not None or tiling.refine):
        what = "a region to measure in" if region is not None else "refining a map"
        raise BadInputError(f"{input_path}: {what} is for slides, not tile folders")
    plan = _plan(source, predictor, tiling, running, model, out, resume, trainer)
    total = sum(min(running.batch_size, len(source) - c * running.batch_size) for c in plan.todo)
    writer = ChunkWriter(plan.parts, source, predictor.classes, total, progress)
    trainer.callbacks.append(writer)
    if plan.todo:
        _run(plan, predictor, running, trainer, device)
    if not trainer.is_global_zero:
        return None
    return _write(out, plan, predictor, tiling, started, writer.done, region)


def _finished_summary(out: Path, input_path: Path, model: Path, tiling: Tiling) -> dict:
    """The summary of the run that finished in `out`, which `resume` leaves as it is; refused
    where it was made of another input, by another model (its sha256) or with other tiling."""
    try:
        summary = json.loads((out / "summary.json").read_text())
        run = json.loads((out / "run.json").read_text())
        # A setting added since the run counts as its default (so `refine`, False).
        made = (run["input"], run["model_sha256"], asdict(Tiling()) | summary["tiling"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadInputError(f"{out}: cannot read its finished run ({error})") from None
    asked = (str(input_path.resolve()), outputs.sha256(model), asdict(tiling))
    if made != asked:
        raise BadInputError(
            f"{out}: holds a finished run of another input, model or settings; "
            "use another output folder"
        )
    return summary


def _plan(source, predictor, tiling, running, model, out, resume, trainer) -> Plan:
    """The slide's stains and white balance, the job, OUT/parts, and the chunks left to do."""
    glass = source.glass if tiling.white_balance else None
    stains = _slide_stains(source, predictor.preprocessing, glass)
    job = {
        "input": str(source.path.resolve()),
        "model_sha256": outputs.sha256(model),
        "items": len(source),
        "glass_rgb": outputs.glass_rgb(source),
        # What the tiles depend on: refining redraws only the map, so a run resumes either way.
        "tiling": {key: value for key, value in asdict(tiling).items() if key != "refine"},
        "batch_size": running.batch_size,
        "precision": running.precision,
    }
    if trainer.global_rank == 0:
        folder, done = parts.prepare(out, job, resume)
    else:  # started by the first process, which has checked and prepared OUT
        folder, done = out / "parts", parts.done_chunks(out / "parts")
    # Every process lists the finished chunks before any process writes one (they meet in
    # the process group's set-up first), so all agree on what is left to do.
    todo = [c for c in range(-(-len(source) // running.batch_size)) if c not in done]
    return Plan(source, stains, glass, job, folder, todo, running)


def _run(plan: Plan, predictor: Predictor, running: Running, trainer, device) -> None:
    """Classify the chunks left to do; the `ChunkWriter` on the trainer writes each one."""
    prep = predictor.preprocessing
    # White balance: in the workers ahead of a stain normaliser, else in the network's input.
    in_workers = plan.glass is not None and prep.stain_normalizer is not None
    chunks = Chunks(plan.source, plan.todo, running.batch_size, prep, plan.stains,
                    plan.glass if in_workers else None)  # fmt: skip
    loader = DataLoader(
        chunks,
        batch_size=None,
        num_workers=running.loader_workers(plan.source, device.type, len(plan.todo)),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    gains = None if plan.glass is None or in_workers else white_balance_gains(plan.glass)
    cells = plan.source.has_boxes and predictor.network.cell_head is not None
    module = ChunkClassifier(predictor.network, gains, cells)
    with warnings.catch_warnings():
        # Chunks are whole batches: Lightning cannot (and need not) track sample indices.
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
        trainer.predict(module, loader, return_predictions=False)
    trainer.strategy.barrier()


def _slide_stains(source: TileSource, prep: Preprocessing, glass: np.ndarray | None):
    """The slide's stains, estimated once from tissue tiles spread evenly over it (white-balanced
    against `glass` unless None); None where the model uses no normaliser, one that goes by each
    tile's own statistics (`per_slide` False), the input is no slide, or the tiles show too
    little H&E: then each tile its own."""
    normalizer = prep.stain_normalizer
    if normalizer is None or not normalizer.per_slide or not source.has_boxes:
        return None
    picks = np.unique(np.linspace(0, len(source) - 1, min(STAIN_SAMPLE_TILES, len(source))).round())
    with source.open() as slide:
        tiles = np.concatenate([source.read(slide, int(i), prep) for i in picks])
    if glass is not None:
        tiles = white_balance(tiles, glass)
    return normalizer.estimate(tiles)


def _trainer(running: Running) -> pl.Trainer:
    """A quiet Trainer for prediction on the accelerator and devices asked for; one that
    cannot be had (no GPU here, an unknown name) is a `BadInputError`."""
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # no banner of devices, for this Trainer only
    try:
        return pl.Trainer(
            accelerator=running.accelerator,
            devices=running.devices if running.device_index is None else [running.device_index],
            strategy="ddp" if running.devices > 1 else "auto",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0]
        raise BadInputError(
            f"accelerator {running.accelerator!r} with {running.devices} devices: {reason}"
        ) from None
    finally:
        lightning_log.setLevel(level)


def _write(out: Path, plan: Plan, predictor: Predictor, tiling: Tiling, started: float,
           classified_now: int, region: Region | None) -> dict:  # fmt: skip
    """Merge the chunks into the final outputs, write them atomically, and remove the parts;
    measure in `region` (None: the whole slide)."""
    rows, skipped = parts.merge(plan.parts)
    if not rows:
        raise BadInputError(f"{plan.source.path}: none of its {len(skipped)} tiles could be "
                            f"read ({outputs.skipped_line(skipped[0])})")  # fmt: skip
    source, classes = plan.source, predictor.classes
    outputs.write_tiles_csv(out / "tiles.csv", rows, source.key_columns, classes)
    summary = outputs.summary(plan, rows, skipped, predictor, tiling)
    if source.has_boxes:
        summary |= outputs.write_slide_outputs(out, rows, source, predictor, tiling, region)
    if skipped:
        outputs.write_skipped(out / "skipped.txt", skipped)
    outputs.write_json(out / "summary.json", summary)
    run = outputs.run_record(plan.job, predictor.path, predictor.precision, started, classified_now)
    outputs.write_json(out / "run.json", run)
    shutil.rmtree(plan.parts)
    return summary
