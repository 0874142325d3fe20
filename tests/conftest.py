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
