"""Batch classification of slides and tile folders: streaming, resumable, and spread over
processes by Lightning's `Trainer.predict`.

A slide is read at the pyramid level nearest the model's µm/px, its tissue and the colour of its
glass found on a thumbnail, its tiles white-balanced against that glass, its stains estimated
once from tissue tiles sampled across it (for a normaliser that works `per_slide`), and its
tissue tiles classified in fixed chunks of `batch_size`. DataLoader workers read and normalise
chunks while the network runs. Each finished chunk is written at once, atomically, under
`OUT/parts/`: a run that is killed and started again with `resume=True` classifies only the
missing chunks, in the same batches, and ends with the same outputs. Under DDP the processes
split the chunks.

Outputs (see DESIGN.md): `tiles.csv`, `tiles.geojson` and `map.png` (slides), `summary.json`,
`run.json`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import sys
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

from ossiclass import __version__
from ossiclass.bundle import ModelSettings
from ossiclass.classes import CLASSES, TISSUE_CLASSES
from ossiclass.errors import BadInputError, OssiclassError
from ossiclass.files import save_png, write_text_atomic
from ossiclass.imageio import IMAGE_SUFFIXES, read_image
from ossiclass.predict import (
    InferenceNetwork,
    Predictor,
    image_tiles,
    stain_normalize,
    to_model_scale,
)
from ossiclass.preprocess.tiling import TileBox, read_tile, slide_tissue_mask, tile_grid
from ossiclass.preprocess.tissue import IO, white_balance, white_balance_gains
from ossiclass.slides import open_slide

STAIN_SAMPLE_TILES = 64
"""Tissue tiles, spread over a slide, from which its stains are estimated once."""
BOX_COLUMNS = ("minx", "miny", "width", "height")
RESULT_COLUMNS = ("label", "confidence", *(f"prob_{name}" for name in CLASSES))


@dataclass(frozen=True)
class ClassifySettings:
    """How an input is cut and classified.

    stride_px : step between tiles in pixels at the model's µm/px (default: the model's
        input size, no overlap).
    min_tissue : least share of a tile the tissue mask must cover for it to be classified.
    mpp : the input's µm/px, overriding what the file records (plain images record nothing).
    batch_size : tiles per chunk: the unit of batching, writing and resuming.
    workers : DataLoader processes that read and normalise tiles, per device. None: on the
        CPU 2, except for a slide, where reading costs less than the share of the cores the
        workers would take from the forward pass; on GPUs up to 8, as many as the cores allow:
        there the GPU waits on reading (measured: `scripts/benchmark.py classify --workers N`).
        Never more than there are chunks to read.
    accelerator, devices : as for Lightning's Trainer; devices > 1 splits the chunks (DDP).
    precision : "auto", "fp32" or "bf16" (see `Predictor`).
    white_balance : scale a slide's channels so that its glass reads neutral (`IO` in each)
        before anything else: a lab's tinted or dim glass otherwise reads as stain. Slides
        only: a tile alone shows too little glass to go by.
    """

    stride_px: int | None = None
    min_tissue: float = 0.5
    mpp: float | None = None
    batch_size: int = 64
    workers: int | None = None
    accelerator: str = "cpu"
    devices: int = 1
    precision: str = "auto"
    white_balance: bool = True

    def loader_workers(self, source, device: str, chunks: int) -> int:
        """DataLoader workers for `chunks` chunks of `source` on a `device` type such as
        "cpu" or "cuda" (see `workers`)."""
        if self.workers is not None:
            return self.workers
        if device == "cpu":
            return 0 if isinstance(source, SlideSource) else min(2, chunks)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(8, (cores or 1) // self.devices, chunks))

    def validate(self) -> None:
        if not 0.0 <= self.min_tissue <= 1.0:
            raise BadInputError(f"--min-tissue must lie in [0, 1], got {self.min_tissue}")
        if self.batch_size < 1 or (self.workers or 0) < 0 or self.devices < 1:
            raise BadInputError("--batch-size and --devices must be positive, --workers >= 0")
        if self.mpp is not None and not 0.05 <= self.mpp <= 50:
            raise BadInputError(f"--mpp must be between 0.05 and 50 µm/px, got {self.mpp}")


class SlideSource:
    """The tissue tiles of a slide: one item per box, in level-0 pixels; `glass`: the (3,) RGB
    of its bare glass, None where none was found."""

    def __init__(self, path: Path, mpp: float, boxes: list[TileBox], glass: np.ndarray | None):
        self.path, self.mpp, self.boxes, self.glass = path, mpp, boxes, glass

    def __len__(self) -> int:
        return len(self.boxes)

    def open(self):
        return open_slide(self.path, self.mpp)

    def read(self, handle, index: int, model: ModelSettings) -> np.ndarray:
        """(1, S, S, 3) uint8: the tile of box `index` at the model's µm/px, as scanned."""
        return read_tile(handle, self.boxes[index], model.input_px)[None]

    def key(self, index: int) -> dict:
        box = self.boxes[index]
        return {"minx": box.x, "miny": box.y, "width": box.width, "height": box.height}


class FolderSource:
    """A folder of tile images: one item per file; a file larger than the model's field is cut
    into tiles whose probabilities are averaged."""

    glass = None  # a tile alone shows too little glass to white-balance against

    def __init__(self, root: Path, paths: list[Path], mpp: float):
        self.root, self.paths, self.mpp = root, paths, mpp

    def __len__(self) -> int:
        return len(self.paths)

    def open(self):
        return None

    def read(self, handle, index: int, model: ModelSettings) -> np.ndarray:
        image = to_model_scale(read_image(self.paths[index]), self.mpp, model)
        return image_tiles(image, model.input_px)[0]

    def key(self, index: int) -> dict:
        return {"path": self.paths[index].relative_to(self.root).as_posix()}


class Chunks(Dataset):
    """Chunk `c` of a source: (c, (T, 3, S, S) uint8 normalised tiles, (T,) item of each tile,
    [(item, reason)] for items that could not be read). Runs in DataLoader workers.

    `model`: the model's input size and scale; `normalizer`, `stains`: its stain normaliser
    and the slide's estimate (see `stain_normalize`); `glass`: white-balance the tiles against
    it before stain normalisation (None: as read). The network stays in the main process.
    """

    def __init__(
        self, source, chunks: list[int], batch_size: int, model: ModelSettings, normalizer,
        stains, glass,
    ):  # fmt: skip
        self.source, self.chunks, self.batch_size = source, chunks, batch_size
        self.model, self.normalizer = model, normalizer
        self.stains, self.glass = stains, glass
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
                read = self.source.read(self._handle, item, self.model)
            except (OssiclassError, OSError, ValueError, RuntimeError) as error:
                failed.append((item, str(error).splitlines()[0][:300] or type(error).__name__))
                continue
            tiles.append(read)
            owners += [item] * len(read)
        size = self.model.input_px
        if not tiles:
            return chunk, torch.empty(0, 3, size, size, dtype=torch.uint8), torch.empty(0), failed
        tiles = np.concatenate(tiles)
        if self.glass is not None:
            tiles = white_balance(tiles, self.glass)
        normalised = stain_normalize(self.normalizer, tiles, self.stains)
        batch = torch.from_numpy(normalised).permute(0, 3, 1, 2).contiguous()
        return chunk, batch, torch.tensor(owners), failed

    def __getstate__(self) -> dict:  # a worker gets no open file handle
        return {**self.__dict__, "_handle": None}


class ChunkClassifier(pl.LightningModule):
    """The prediction step: per-item probabilities of a chunk (tiles of one item averaged).
    `gains` (3,): the white balance, folded into the network's input standardisation."""

    def __init__(self, network: InferenceNetwork, gains: np.ndarray | None = None):
        super().__init__()
        self.network = network
        self.register_buffer("gains", None if gains is None else torch.from_numpy(gains))

    def predict_step(self, batch, batch_idx: int) -> dict:
        chunk, tiles, owners, failed = batch
        if len(tiles) == 0:
            return {"chunk": chunk, "items": [], "probabilities": torch.empty(0), "failed": failed}
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


def _result(probabilities: list[float]) -> dict:
    """The result columns of one item: label, confidence and a probability per class."""
    best = int(np.argmax(probabilities))
    rounded = [round(p, 5) for p in probabilities]
    return {
        "label": CLASSES[best],
        "confidence": rounded[best],
        **{f"prob_{name}": p for name, p in zip(CLASSES, rounded, strict=True)},
    }


class ChunkWriter(BasePredictionWriter):
    """Writes each chunk's rows to `parts/chunk-NNNNNN.json` the moment it is classified, and
    shows tiles done and tiles per second."""

    def __init__(self, parts: Path, source, total_items: int, progress: bool = True):
        super().__init__(write_interval="batch")
        self.parts, self.source, self.total_items = parts, source, total_items
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
        rows = [{"item": item, **self.source.key(item), **_result(p)} for item, p in pairs]
        skipped = [
            {"item": item, **self.source.key(item), "reason": reason}
            for item, reason in prediction["failed"]
        ]
        path = self.parts / f"chunk-{prediction['chunk']:06d}.json"
        write_text_atomic(path, json.dumps({"rows": rows, "skipped": skipped}))
        self.done += len(rows) + len(skipped)
        if self.bar is not None:
            self.bar.update(len(rows) + len(skipped))

    def on_predict_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_source(path: Path, predictor: Predictor, settings: ClassifySettings):
    """(source, slide-level stains or None) for a slide or a folder of tiles."""
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise BadInputError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return FolderSource(path, paths, settings.mpp or 0.5), None
    with open_slide(path, settings.mpp) as slide:
        if slide.mpp is None:
            raise BadInputError(f"{path}: the file records no µm per pixel; give it with --mpp")
        tissue = slide_tissue_mask(slide, slide.mpp)
        boxes = list(
            tile_grid(slide.dimensions, slide.mpp, predictor.input_px, predictor.mpp,
                      settings.stride_px, tissue.mask, settings.min_tissue)
        )  # fmt: skip
        if not boxes:
            raise BadInputError(f"{path}: no tile holds {settings.min_tissue:.0%} tissue")
        source = SlideSource(path, slide.mpp, boxes, tissue.glass)
        return source, _slide_stains(slide, source, predictor, _balance_glass(source, settings))


def _balance_glass(source, settings: ClassifySettings) -> np.ndarray | None:
    """The glass colour to white-balance `source` against; None: its colours as they are."""
    return source.glass if settings.white_balance else None


def _glass_rgb(source) -> list[float] | None:
    """The glass colour found, as plain data for job.json and summary.json."""
    return None if source.glass is None else np.round(source.glass, 1).tolist()


def _white_balance_note(source, settings: ClassifySettings) -> str:
    """What white balance a run applied, for the summary and the command line."""
    if not isinstance(source, SlideSource):
        return "none: a tile alone shows too little glass to go by"
    if source.glass is None:
        return "none: no bare glass around the tissue; colours as scanned"
    if not settings.white_balance:
        return "off: colours as scanned"
    glass = "/".join(f"{value:.0f}" for value in source.glass)
    return f"glass (RGB {glass}) scaled to {IO:.0f} in each channel"


def _slide_stains(slide, source: SlideSource, predictor: Predictor, glass: np.ndarray | None):
    """The slide's stains, estimated once from tissue tiles spread evenly over it (white-balanced
    against `glass` unless None); None where the model uses no normaliser, one that goes by each
    tile's own statistics (`per_slide` False), or the tiles show too little H&E: then each tile
    its own."""
    if predictor.normalizer is None or not predictor.normalizer.per_slide:
        return None
    picks = np.linspace(0, len(source) - 1, min(STAIN_SAMPLE_TILES, len(source))).round()
    tiles = np.concatenate(
        [source.read(slide, int(i), predictor.settings) for i in np.unique(picks)]
    )
    if glass is not None:
        tiles = white_balance(tiles, glass)
    return predictor.normalizer.estimate(tiles)


def _prepare_out(out: Path, job: dict, resume: bool) -> tuple[Path, set[int]]:
    """Create OUT/parts for a new run, or check it belongs to the same job on `resume`.
    Returns (parts folder, chunks already done)."""
    parts = out / "parts"
    job_file = parts / "job.json"
    try:
        if job_file.exists() and resume:
            if json.loads(job_file.read_text()) != job:
                raise BadInputError(
                    f"{out}: holds a run with other inputs or settings; use another --out"
                )
        elif job_file.exists() or (out / "tiles.csv").exists():
            raise BadInputError(
                f"{out}: holds results already; --resume to finish an interrupted run, "
                "or choose another --out"
            )
        else:
            parts.mkdir(parents=True, exist_ok=True)
            write_text_atomic(job_file, json.dumps(job, indent=2))
    except OSError as error:
        raise OssiclassError(f"cannot write to {out}: {error.strerror or error}") from None
    return parts, _done_chunks(parts)


def _done_chunks(parts: Path) -> set[int]:
    """Chunks an earlier, interrupted run has written (each file is complete: atomic)."""
    return {int(path.stem.split("-")[1]) for path in parts.glob("chunk-*.json")}


def classify(
    input_path: str | Path,
    model: str | Path,
    out: str | Path,
    settings: ClassifySettings = ClassifySettings(),
    resume: bool = False,
    progress: bool = True,
) -> dict | None:
    """Classify a slide or a folder of tiles and write the outputs under `out`.

    Returns the summary (None on processes other than the first under DDP). With `resume`, a
    run that had finished is left as it is and its summary returned.
    """
    settings.validate()
    started = time.time()
    input_path, out, model = Path(input_path), Path(out), Path(model)
    if resume and (out / "summary.json").exists() and not (out / "parts").exists():
        return json.loads((out / "summary.json").read_text())
    trainer = _trainer(settings)
    device = trainer.strategy.root_device  # decides bf16 ("auto"), workers, pinned memory
    predictor = Predictor(model, device, settings.precision)
    if not input_path.exists():
        raise BadInputError(f"{input_path}: no such file or folder")
    source, stains = _open_source(input_path, predictor, settings)
    job = {
        "input": str(input_path.resolve()),
        "model_sha256": _sha256(model),
        "items": len(source),
        "glass_rgb": _glass_rgb(source),
        "settings": {**asdict(settings), "workers": None, "devices": None},
    }
    if trainer.global_rank == 0:
        parts, done = _prepare_out(out, job, resume)
    else:  # started by the first process, which has checked and prepared OUT
        parts, done = out / "parts", _done_chunks(out / "parts")
    # Every process lists the finished chunks before any process writes one (they meet in
    # the process group's set-up first), so all agree on what is left to do.
    todo = [c for c in range(-(-len(source) // settings.batch_size)) if c not in done]
    writer = ChunkWriter(parts, source, len(todo) * settings.batch_size, progress)
    trainer.callbacks.append(writer)
    if todo:
        # White balance: in the workers ahead of a stain normaliser, else free in the network.
        glass = _balance_glass(source, settings)
        in_workers = glass is not None and predictor.normalizer is not None
        chunks = Chunks(
            source, todo, settings.batch_size, predictor.settings, predictor.normalizer, stains,
            glass if in_workers else None,
        )  # fmt: skip
        loader = DataLoader(
            chunks,
            batch_size=None,
            num_workers=settings.loader_workers(source, device.type, len(todo)),
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        gains = None if glass is None or in_workers else white_balance_gains(glass)
        module = ChunkClassifier(predictor.network, gains)
        with warnings.catch_warnings():
            # Chunks are whole batches: Lightning cannot (and need not) track sample indices.
            warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
            warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
            trainer.predict(module, loader, return_predictions=False)
        trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return None
    return _finish(out, parts, source, predictor, settings, stains, job, started, writer.done)


def _trainer(settings: ClassifySettings) -> pl.Trainer:
    """A quiet Trainer for prediction on the accelerator and devices asked for; one that
    cannot be had (no GPU here, an unknown name) is a `BadInputError`."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no banner of devices
    try:
        return pl.Trainer(
            accelerator=settings.accelerator,
            devices=settings.devices,
            strategy="ddp" if settings.devices > 1 else "auto",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0]
        raise BadInputError(
            f"--accelerator {settings.accelerator} --devices {settings.devices}: {reason}"
        ) from None


def _finish(out, parts, source, predictor, settings, stains, job, started, classified_now):
    """Merge the chunks into the final outputs, write them atomically, and remove the parts."""
    rows, skipped = [], []
    for path in sorted(parts.glob("chunk-*.json")):
        content = json.loads(path.read_text())
        rows += content["rows"]
        skipped += content["skipped"]
    rows.sort(key=lambda row: row["item"])
    skipped.sort(key=lambda row: row["item"])
    slide = isinstance(source, SlideSource)
    key_columns = BOX_COLUMNS if slide else ("path",)
    table = io.StringIO()
    writer = csv.DictWriter(table, [*key_columns, *RESULT_COLUMNS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "tiles.csv", table.getvalue())
    summary = _summary(source, rows, skipped, predictor, settings, stains)
    if slide:
        write_text_atomic(out / "tiles.geojson", json.dumps(geojson(rows)))
        _write_map(out / "map.png", source, rows)
    if skipped:
        lines = [f"{row.get('path', (row.get('minx'), row.get('miny')))}: {row['reason']}"
                 for row in skipped]  # fmt: skip
        write_text_atomic(out / "skipped.txt", "\n".join(lines) + "\n")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    run = {
        "ossiclass": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "command": sys.argv,
        "input": job["input"],
        "model": str(predictor.path),
        "model_sha256": job["model_sha256"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 2),
        "classified_in_this_run": classified_now,
        "precision": "bf16" if predictor.bf16 else "fp32",
    }
    write_text_atomic(out / "run.json", json.dumps(run, indent=2))
    shutil.rmtree(parts)
    return summary


def _summary(source, rows, skipped, predictor: Predictor, settings, stains) -> dict:
    """Composition (tiles, share and, for slides, area in mm² per class), counts, settings."""
    counts = np.bincount(
        [CLASSES.index(row["label"]) for row in rows], minlength=len(CLASSES)
    ).tolist()
    slide = isinstance(source, SlideSource)
    # Each tile stands for the stride's square of tissue: tiles never count an area twice.
    tile_mm2 = ((settings.stride_px or predictor.input_px) * predictor.mpp / 1000) ** 2
    classes = {
        name: {
            "tiles": count,
            "fraction": round(count / max(len(rows), 1), 4),
            **({"area_mm2": round(count * tile_mm2, 6)} if slide else {}),
        }
        for name, count in zip(CLASSES, counts, strict=True)
    }
    confidences = [row["confidence"] for row in rows]
    return {
        "input": str(source.path if slide else source.root),
        "kind": "slide" if slide else "tile folder",
        "input_mpp": source.mpp,
        "tiles": {"classified": len(rows), "skipped": len(skipped)},
        "classes": classes,
        "mean_confidence": round(float(np.mean(confidences)), 4) if rows else None,
        "glass_rgb": _glass_rgb(source),
        "white_balance": _white_balance_note(source, settings),
        "stains": (
            "estimated once for the slide"
            if stains is not None
            else "estimated per tile"
            if predictor.normalizer
            else "not normalised"
        ),  # fmt: skip
        "model": {
            "file": str(predictor.path),
            "backbone": predictor.settings.backbone,
            "input_px": predictor.input_px,
            "mpp": predictor.mpp,
            "normalizer": (predictor.settings.normalizer or {}).get("method"),
            "temperature": predictor.settings.temperature,
        },
        "settings": asdict(settings),
    }


def geojson(rows: list[dict]) -> dict:
    """QuPath-importable GeoJSON: a FeatureCollection with one Polygon tile per row, its
    `classification` (name and RGB colour) and the probabilities as measurements."""
    colours = {c.name: list(c.colour) for c in TISSUE_CLASSES}
    features = []
    for row in rows:
        x, y, w, h = (row[k] for k in BOX_COLUMNS)
        ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
        measurements = {k: row[k] for k in RESULT_COLUMNS if k.startswith("prob_")}
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "tile",
                    "classification": {"name": row["label"], "color": colours[row["label"]]},
                    "measurements": {"confidence": row["confidence"], **measurements},
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _write_map(path: Path, source: SlideSource, rows: list[dict]) -> None:
    from ossiclass.report import tissue_map

    with source.open() as slide:
        thumbnail, downsample = slide.thumbnail(2048)
    boxes = [tuple(row[k] for k in BOX_COLUMNS) for row in rows]
    labels = [CLASSES.index(row["label"]) for row in rows]
    image = tissue_map(thumbnail, downsample, boxes, labels, title=source.path.name)
    save_png(np.asarray(image.convert("RGB")), path)
