"""What several benchmarks share: synthetic tiles in memory and a slide per layout, the
`ossiclass` command, timing."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from ossiclass.classes import CLASSES
from ossiclass.synth.stains import StainDomain
from ossiclass.synth.tiles import make_tile, worker_pool

MPP = 0.5
"""µm per pixel of every synthetic tile and slide the benchmarks make (a 20x scan)."""


def ossiclass_command(*arguments: object) -> list[str]:
    """The command line that runs `ossiclass` with `arguments` in this Python."""
    return [sys.executable, "-m", "ossiclass", *(str(argument) for argument in arguments)]


def seconds_of(command: list[str]) -> float:
    """Wall seconds of `command` run to its end, output captured; a failure raises
    RuntimeError with the end of what it printed on stderr."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def rate(function: Callable[[], object], count: int, repeats: int = 3) -> float:
    """Items per second of `function()` over `count` items, best of `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return count / best


def tiles(
    jobs: list[tuple[str, int]], seed: int, domains: list[StainDomain], size_px: int, workers: int
) -> np.ndarray:
    """Synthetic tiles in memory, (N, size_px, size_px, 3) uint8 at `MPP`: one per (class name,
    index) job from `seed`'s generator in `domains`, made by `workers` processes."""
    task = partial(_render, seed=seed, domains=domains, size_px=size_px)
    with worker_pool(workers) as pool:
        return np.stack(list(pool.imap(task, jobs, chunksize=16) if pool else map(task, jobs)))


def labelled_tiles(
    per_class: int, seed: int, domains: list[StainDomain], workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` 256 px tiles of every class: ((N, 256, 256, 3) uint8, (N,) class indices)."""
    jobs = [(name, i) for name in CLASSES for i in range(per_class)]
    labels = np.array([CLASSES.index(name) for name, _ in jobs])
    return tiles(jobs, seed, domains, 256, workers), labels


def _render(job: tuple[str, int], seed: int, domains: list[StainDomain], size_px: int):
    return make_tile(job[0], job[1], seed, domains, size_px, MPP)[0]


def layout_slides(root: Path, seed: int, size: int, workers: int) -> list[tuple[str, int, Path]]:
    """One `size` x `size` synthetic slide per layout under `root`, seeds `seed`, `seed` + 1,
    ... (each its own lab), made where missing: [(layout, seed, path)]."""
    from ossiclass.synth.layouts import LAYOUTS
    from ossiclass.synth.slides import SlideSettings, write_slide

    slides = []
    for offset, layout in enumerate(LAYOUTS):
        path = root / f"{layout}-{seed + offset}.tif"
        if not path.exists():
            settings = SlideSettings(layout, size, size, MPP, seed + offset)
            write_slide(path, settings, workers=workers, progress=False)
        slides.append((layout, seed + offset, path))
    return slides
