"""Training runs as a user runs them, in their own processes: killed midway and resumed,
and spread over two processes."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ossiclass.bundle import load_bundle

REPO = Path(__file__).parents[1]


def _command(tiles, run, *extra):
    return [
        sys.executable, "scripts/train.py", "--config", "configs/default.yaml",
        "--data.train", str(tiles), "--data.test", "null", "--data.input_px", "32",
        "--data.batch_size", "8", "--model.backbone", "mobilenet_v3_small",
        "--trainer.max_epochs", "4", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run),
        "--trainer.log_every_n_steps", "1", *extra,
    ]  # fmt: skip


def test_a_run_whose_bundle_could_not_be_written_stops_before_it_trains(tmp_path, tile_set):
    run = tmp_path / "run"
    (run / "model.pt").mkdir(parents=True)  # where the bundle goes, a folder stands
    command = _command(tile_set(2, seed=5), run, "--trainer.logger", "false")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"ossiclass: error: cannot write the model {run / 'model.pt'}: it is a folder"
    )
    assert "Traceback" not in result.stderr
    assert not (run / "checkpoints").exists()  # not an epoch trained


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config", "CONFIG"], "train: Unexpected config: hi"),
        (["--config", "BINARY"], "binary.yaml: not UTF-8 text (invalid start byte)"),
        (["--config", "configs/default.yaml", "--trainer.max_epochs", "x"],
         'train: Parser key "trainer.max_epochs": Does not validate'),
        (["--config", "configs/default.yaml", "--no_such_option", "1"],
         "train: unrecognized arguments: --no_such_option 1"),
        (["--config", "configs/default.yaml", "--ckpt_path", "/x.ckpt"],
         "--ckpt_path /x.ckpt: no such checkpoint file"),
    ],
)  # fmt: skip
def test_a_training_command_it_cannot_run_is_one_line(tmp_path, capsys, extra, message):
    from ossiclass.cli import main

    (tmp_path / "hi.yaml").write_text("hi")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(128, 256)))
    paths = {"CONFIG": str(tmp_path / "hi.yaml"), "BINARY": str(tmp_path / "binary.yaml")}
    assert main(["train", *(paths.get(arg, arg) for arg in extra)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("ossiclass: error: ") and message in error[-1]
    assert not any(line.startswith("usage:") for line in error)


@pytest.mark.slow
def test_a_killed_run_resumes_and_logs_each_step_once(tmp_path, tile_set):
    tiles = tile_set(8, seed=5)
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
    assert list((run / "lightning_logs" / "version_0").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_two_process_ddp_with_gloo(tmp_path, tile_set):
    root = tile_set(8, seed=3)
    run = tmp_path / "run"
    command = [
        sys.executable,
        "scripts/train.py",
        "--config",
        "configs/ci.yaml",
        "--data.train",
        str(root),
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.default_root_dir",
        str(run),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-2000:]
    assert "distributed_backend=gloo" in log and "MEMBER: 2/2" in log
    network, settings = load_bundle(run / "model.pt")  # written once, by rank 0
    assert settings.input_px == 32
