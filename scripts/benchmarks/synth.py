"""`synth`: tiles per second of `ossiclass synth tiles` (PNG files and manifest on disk)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import ossiclass_command, seconds_of
from ossiclass.classes import CLASSES


def run(*, per_class: int, workers: int) -> dict:
    """Time `ossiclass synth tiles` writing `per_class` 256 px tiles of each class with
    `workers` processes, in a fresh process (its start included)."""
    with tempfile.TemporaryDirectory() as root:
        out = Path(root) / "tiles"
        command = ("synth", "tiles", out, "--per-class", per_class, "--workers", workers)
        seconds = seconds_of(ossiclass_command(*command, "--quiet"))
    count = per_class * len(CLASSES)
    return {
        "what": "ossiclass synth tiles, process start included",
        "tiles": count,
        "tile_px": 256,
        "workers": workers,
        "seconds": seconds,
        "tiles_per_s": count / seconds,
    }


def report(figures: dict) -> str:
    """The figures of `run` as a line of text."""
    return (
        f"synth tiles: {figures['tiles']} tiles of {figures['tile_px']} x {figures['tile_px']} "
        f"with --workers {figures['workers']} in {figures['seconds']:.1f} s "
        f"(process start included): {figures['tiles_per_s']:.0f} tiles/s"
    )
