"""Agreement between two ways of measuring the same slides (ossiclass and a lab's manual
measures): the intraclass correlation ICC(2,1) and Bland-Altman's bias and limits of agreement,
and group statistics (n, mean, SD). Plain functions over arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LIMITS_Z = 1.96
"""Bland-Altman's 95% limits of agreement: bias ± 1.96 SD of the differences."""


def icc_2_1(ratings: np.ndarray) -> float:
    """ICC(2,1) of an (n targets, k raters) table: two-way random effects, absolute agreement,
    single measures (Shrout & Fleiss 1979, case 2; McGraw & Wong 1996, ICC(A,1)).

    From the two-way ANOVA without replication, with grand mean m, row (target) means r_i and
    column (rater) means c_j:

        MSR = k * sum_i (r_i - m)^2 / (n - 1)                       between targets
        MSC = n * sum_j (c_j - m)^2 / (k - 1)                       between raters
        MSE = sum_ij (x_ij - r_i - c_j + m)^2 / ((n - 1)(k - 1))    residual
        ICC(2,1) = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)

    A rater's constant offset enters through MSC and lowers it: absolute agreement, not
    consistency. Shrout & Fleiss's 6 x 4 example gives 0.29.

    Parameters
    ----------
    ratings : (n, k) float array, n >= 2 targets, k >= 2 raters, no missing values.

    Returns
    -------
    The ICC, at most 1 (it can be negative); NaN where the table has no spread at all.
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"expected ratings of shape (n >= 2, k >= 2), got {x.shape}")
    n, k = x.shape
    grand = x.mean()
    rows, columns = x.mean(axis=1), x.mean(axis=0)
    msr = k * np.sum((rows - grand) ** 2) / (n - 1)
    msc = n * np.sum((columns - grand) ** 2) / (k - 1)
    residual = x - rows[:, None] - columns[None, :] + grand
    mse = np.sum(residual**2) / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / denominator) if denominator > 0 else math.nan


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman figures of paired measures a and b (differences a - b): n pairs, the bias
    (mean difference), the SD of the differences (ddof=1) and the 95% limits of agreement."""

    n: int
    bias: float
    sd: float
    lower: float
    upper: float


def bland_altman(a: np.ndarray, b: np.ndarray) -> BlandAltman:
    """Bias and 95% limits of agreement (bias ± 1.96 SD) of two (n,) arrays of paired measures
    of the same targets, in their unit; needs n >= 2."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"expected two (n >= 2,) arrays of pairs, got {a.shape} and {b.shape}")
    differences = a - b
    bias, sd = float(differences.mean()), float(differences.std(ddof=1))
    return BlandAltman(len(a), bias, sd, bias - LIMITS_Z * sd, bias + LIMITS_Z * sd)


def describe(values: list[float]) -> tuple[int, float | None, float | None]:
    """(n, mean, SD with ddof=1) of a group's values; the mean is None for none, the SD for
    fewer than two."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean()) if len(x) else None
    return len(x), mean, float(x.std(ddof=1)) if len(x) > 1 else None
