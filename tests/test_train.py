"""Training runs as a user runs them: killed midway, then resumed from the last checkpoint."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ossiclass.synth.tiles import TileSettings, write_tile_dataset

REPO = Path(__file__).parents[1]


def _command(tiles, run, *extra):
    return [
        sys.executable, "scripts/train.py", "--config", "configs/default.yaml",
        "--data.train", str(tiles), "--data.test", "null", "--data.input_px", "32",
        "--data.batch_size", "8", "--model.backbone", "mobilenet_v3_small",
        "--trainer.max_epochs", "4", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.callbacks.patience", "100", "--trainer.log_every_n_steps", "1", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_a_killed_run_resumes_and_logs_each_step_once(tmp_path):
    tiles = tmp_path / "tiles"
    write_tile_dataset(
        tiles, TileSettings(per_class=8, size_px=48, seed=5, domains=2), progress=False
    )
    run = tmp_path / "run"
    last = run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        _command(tiles, run), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # no chance to tidy up
    process.wait()
    assert last.exists(), "the run ended before its first checkpoint"
    stopped_at = torch.load(last, weights_only=True)["epoch"]
    assert stopped_at < 4

    result = subprocess.run(
        _command(tiles, run, "--ckpt_path", str(last)), cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(last, weights_only=True)["epoch"] == 4  # epochs finished: all four
    assert not (run / "lightning_logs" / "version_1").exists()  # the same run, not a new one
    with open(run / "lightning_logs" / "version_0" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(row["step"]) for row in rows if row.get("train/loss_step")]
    assert steps == list(range(len(steps)))  # every step once, none lost, none twice
    assert len(steps) % 4 == 0 and len(steps) > 0
    epochs = sorted({int(float(row["epoch"])) for row in rows if row.get("val/macro_f1")})
    assert epochs == [0, 1, 2, 3]
    assert (run / "lightning_logs" / "version_0" / "model.pt").exists()
