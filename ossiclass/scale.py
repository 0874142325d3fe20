"""An input's scale in µm per pixel: the one rule for where it comes from, and the range a
microscope scan can have. No heavy imports: the command line's argument types use it."""

from __future__ import annotations

from dataclasses import dataclass

from ossiclass.errors import BadInputError

DEFAULT_MPP = 0.5
"""µm per pixel assumed for an input that records none and is given none: a 20x scan."""


@dataclass(frozen=True)
class Scale:
    """An input's µm per pixel and where it came from: "given", "file" or "assumed"."""

    mpp: float
    source: str

    def note(self, name: str) -> str | None:
        """A line for the user where the scale was assumed (`name`: what it is about); None
        where it is known."""
        return None if self.source != "assumed" else assumed_note(name)


PLAUSIBLE_MPP = (0.05, 50.0)
"""µm per pixel a microscope scan can have; recorded values outside (a 72 dpi tag) are none."""


def assumed_note(name: str) -> str:
    """The note for inputs (`name`: one file, or "3 of 10 images") that record no scale."""
    low, high = PLAUSIBLE_MPP
    return (f"{name}: no µm per pixel recorded (or one outside {low:g}-{high:g}); assumed "
            f"{DEFAULT_MPP:g} (a 20x scan)")  # fmt: skip


def resolve_mpp(given: float | None, recorded: float | None) -> Scale:
    """The one rule for an input's scale: `given` (a user's override), else `recorded` (the
    file's metadata, where plausible), else `DEFAULT_MPP`."""
    if given is not None:
        return Scale(float(given), "given")
    if recorded is not None and PLAUSIBLE_MPP[0] <= recorded <= PLAUSIBLE_MPP[1]:
        return Scale(float(recorded), "file")
    return Scale(DEFAULT_MPP, "assumed")


def checked_scale(mpp: float, name: str) -> float:
    """`mpp`, a setting's µm per pixel; `BadInputError` (naming the setting) outside
    `PLAUSIBLE_MPP`."""
    low, high = PLAUSIBLE_MPP
    if not low <= mpp <= high:
        raise BadInputError(f"{name} must be {low:g} to {high:g} µm/px, got {mpp}")
    return mpp
