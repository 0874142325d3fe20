"""Value types of the `ossiclass` command's arguments: each refuses what it cannot take with
argparse's one-line error, saying what was expected."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ossiclass.scale import PLAUSIBLE_MPP


def number(convert: Callable[[str], float], accept: Callable[[float], bool], expected: str):
    """An argparse type: `convert` the text, and refuse what `accept` does not, saying what
    was `expected`."""

    def parse(text: str):
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = expected  # argparse's "invalid ... value" for text that is no number
    return parse


positive_int = number(int, lambda v: v >= 1, "a positive whole number")
whole_number = number(int, lambda v: v >= 0, "0 or more")
positive_float = number(float, lambda v: v > 0, "a positive number")
fraction = number(float, lambda v: 0 <= v <= 1, "a share from 0 to 1")
amount = number(float, lambda v: 0 <= v <= 3, "a share from 0 to 3")
input_mpp = number(
    float, lambda v: PLAUSIBLE_MPP[0] <= v <= PLAUSIBLE_MPP[1],
    f"{PLAUSIBLE_MPP[0]:g} to {PLAUSIBLE_MPP[1]:g} µm per pixel",
)  # fmt: skip
