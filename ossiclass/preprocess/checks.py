"""Checks of the numbers a bundle or a saved stain reference holds: each gives the value in
the form the code uses, or a ValueError naming the field, so that a malformed file is one line
for the user, not a traceback or NaNs later."""

from __future__ import annotations

import math

import numpy as np


def checked_numbers(values, shape: tuple[int, ...], name: str) -> tuple:
    """`values` as nested tuples of floats of `shape`; ValueError unless finite and of it."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != shape or not np.isfinite(array).all():
        raise ValueError(f"{name}: expected {shape} finite numbers")
    return tuple(map(float, array)) if len(shape) == 1 else tuple(map(tuple, array.tolist()))


def checked_mean_std(frozen) -> None:
    """Set a frozen dataclass's `mean` and `std` to three floats each; ValueError unless
    finite, and the spreads positive."""
    object.__setattr__(frozen, "mean", checked_numbers(frozen.mean, (3,), "mean"))
    object.__setattr__(frozen, "std", checked_numbers(frozen.std, (3,), "std"))
    if min(frozen.std) <= 0:
        raise ValueError("std: expected positive spreads")


def checked_mpp(mpp, name: str = "mpp") -> float:
    """`mpp` as a float; ValueError unless a positive finite number of µm per pixel."""
    if not (isinstance(mpp, int | float) and math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"{name}: expected a positive number of µm per pixel, got {mpp!r}")
    return float(mpp)
