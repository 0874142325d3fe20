"""Shared fixtures: every test makes its own small data in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_HE = Path(__file__).resolve().parents[2] / "shared" / "reference-he"


@pytest.fixture
def reference_he() -> Path:
    """The real H&E tiles beside the checkout; skipped where they are absent (a user's clone)."""
    if not any(REFERENCE_HE.glob("*.jpg")):
        pytest.skip(f"real H&E reference tiles not found at {REFERENCE_HE}")
    return REFERENCE_HE


def make_tile_set(root: Path, per_class: int, size_px: int = 48, seed: int = 0) -> Path:
    """A small synthetic tile data set (2 stain domains) written under `root`."""
    from ossiclass.synth.tiles import TileSettings, write_tile_dataset

    settings = TileSettings(per_class=per_class, size_px=size_px, seed=seed, domains=2)
    write_tile_dataset(root, settings, progress=False)
    return root


@pytest.fixture
def tile_set(tmp_path):
    """`tile_set(per_class, size_px=48, seed=0)`: a fresh small tile data set in tmp_path."""
    return lambda per_class, size_px=48, seed=0: make_tile_set(
        tmp_path / f"tiles-{per_class}-{size_px}-{seed}", per_class, size_px, seed
    )
