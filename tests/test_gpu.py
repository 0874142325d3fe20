"""The GPU paths, against the CPU's answers. Skipped where there is no CUDA GPU (CI has none)."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ossiclass.bundle import load_bundle
from ossiclass.classes import CLASSES
from ossiclass.classify import Running, classify
from ossiclass.predict import Predictor
from ossiclass.preprocess.augment import HEDJitter
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import make_tile

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

REPO = Path(__file__).parents[1]


def _probabilities(out: Path) -> np.ndarray:
    with open(out / "tiles.csv", newline="") as handle:
        return np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in csv.DictReader(handle)])


def test_classify_on_the_gpu_gives_the_cpu_answers(tiny_model, small_slide, tmp_path):
    runs = {}
    for accelerator in ("cpu", "gpu"):
        running = Running(batch_size=8, workers=0, accelerator=accelerator, precision="fp32")
        classify(small_slide, tiny_model, tmp_path / accelerator, running=running, progress=False)
        runs[accelerator] = _probabilities(tmp_path / accelerator)
    assert runs["gpu"].shape == runs["cpu"].shape and len(runs["cpu"]) > 10
    # cuDNN may compute convolutions in TF32: close to fp32, not bit-equal.
    assert np.abs(runs["gpu"] - runs["cpu"]).max() < 0.02


def test_bf16_on_the_gpu_keeps_the_labels(tiny_model):
    tiles = np.stack([make_tile(c, 0, 3, sample_domains(3, 1), 32, 2.0)[0] for c in CLASSES * 4])
    batch = torch.from_numpy(tiles).permute(0, 3, 1, 2)
    fp32 = Predictor(tiny_model, "cuda", "fp32").probabilities(batch.cuda()).cpu()
    bf16 = Predictor(tiny_model, "cuda", "bf16").probabilities(batch.cuda()).cpu()
    assert (fp32.argmax(1) == bf16.argmax(1)).float().mean() >= 0.9
    assert (fp32 - bf16).abs().max() < 0.1


def test_hed_jitter_on_the_gpu_draws_what_it_draws_on_the_cpu():
    tiles = torch.from_numpy(
        np.stack([make_tile(c, 0, 2, sample_domains(2, 1), 32, 2.0)[0] for c in CLASSES])
    ).permute(0, 3, 1, 2)
    on_cpu = HEDJitter(0.05, 0.025, seed=4)(tiles)
    on_gpu = HEDJitter(0.05, 0.025, seed=4).cuda()(tiles.cuda())
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu().int() - on_cpu.int()).abs().max() <= 1
    assert (on_cpu != tiles).any()


@pytest.mark.slow
def test_training_on_the_gpu_in_bf16_writes_a_bundle(tile_set, tmp_path):
    tiles = tile_set(8, seed=5)
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", "configs/gpu.yaml",
         "--data.train", str(tiles), "--data.test", "null", "--data.input_px", "32",
         "--data.batch_size", "8", "--data.num_workers", "2", "--model.backbone", "resnet18",
         "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
         "--trainer.default_root_dir", str(run)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    bundles = list(run.glob("lightning_logs/version_*/model.pt"))
    assert len(bundles) == 1
    network, settings = load_bundle(bundles[0])
    assert settings.input_px == 32
    assert all(p.device.type == "cpu" and p.isfinite().all() for p in network.parameters())
