"""Atomic file writes: a reader, or a run started again after a crash, never sees half a file.

Each writes to a hidden `.NAME.partial` beside the target and renames it into place.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ossiclass.errors import BadInputError

PNG_HUFFMAN_ONLY = 2  # zlib strategy: on noisy tissue, faster and smaller than the default


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place."""
    return path.with_name(f".{path.name}.partial")


def check_output(path: Path, folder: bool = False) -> Path:
    """`path`, checked that an output file (an output `folder`) can be made there:
    `BadInputError` where it is a folder (a file), or lies under a file. Commands check their
    outputs before the work, so that nothing is left half-finished; the atomic writers check
    again, so that no write ends in a traceback."""
    if path.exists() and path.is_dir() != folder:
        kind = "a file, not a folder" if folder else "a folder, not a file"
        raise BadInputError(f"{path}: is {kind}")
    for parent in path.parents:  # the nearest that exists must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise BadInputError(f"{parent}: is a file, not a folder")
            break
    return path


def first_shared(names: Sequence[str], keys: Sequence[Hashable]) -> tuple[Hashable, list[str]]:
    """The first key that two or more of `names` share (their output, stem or file), with those
    names; (None, []) where every key is its own."""
    holders: dict[Hashable, list[str]] = {}
    for name, key in zip(names, keys, strict=True):
        holders.setdefault(key, []).append(name)
    return next(((key, held) for key, held in holders.items() if len(held) > 1), (None, []))


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary name and a rename."""
    partial = partial_path(check_output(path))
    partial.write_text(text)
    os.replace(partial, path)


def save_png(image: np.ndarray | Image.Image, path: Path, runs: bool = False) -> None:
    """Write an image as PNG atomically (a reader never sees half a file). `runs`: an image of
    long runs of one value (a label mask), deflated at zlib's level 3, not Huffman-coded only."""
    partial = partial_path(check_output(path))
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if runs:
        image.save(partial, format="PNG", compress_level=3)
    else:
        image.save(partial, format="PNG", compress_level=1, compress_type=PNG_HUFFMAN_ONLY)
    os.replace(partial, path)
