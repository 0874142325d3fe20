"""Image batches as the stain normalisers take them: numpy `(H, W, 3)` uint8 images, `(N, H,
W, 3)` batches or lists of either, checked here, and the one loop that normalises a batch image
by image over threads."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def pixels_of(images: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """All pixels of an (H, W, 3) image, an (N, H, W, 3) batch or a list of images: (P, 3) uint8."""
    if isinstance(images, list | tuple):
        return np.concatenate([pixels_of(image) for image in images])
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(
            f"expected (H, W, 3) or (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}"
        )
    return images.reshape(-1, 3)


def image_list(images: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """The (H, W, 3) images of an image, an (N, H, W, 3) batch or a list, checked as
    `pixels_of` checks them."""
    if isinstance(images, list | tuple):
        return [image for item in images for image in image_list(item)]
    pixels_of(images)  # raises ValueError for anything but uint8 RGB
    return list(images) if images.ndim == 4 else [images]


def map_images(
    images: np.ndarray,
    normalize_one: Callable[[np.ndarray], np.ndarray | None],
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`normalize_one` over each image of an (H, W, 3) image or (N, H, W, 3) batch of uint8.

    `normalize_one` maps an (H, W, 3) uint8 image to its normalised (H, W, 3) uint8, or to None
    where it cannot (the image then comes back unchanged). Returns (images of the input's
    shape, ok (N,) bool). The batch is split over `threads` threads (None: all cores; numpy
    releases the GIL in most of the work); 1 inside DataLoader workers.
    """
    images = np.asarray(images)
    pixels_of(images)  # raises ValueError for anything but uint8 RGB
    batch = images[None] if images.ndim == 3 else images
    out, ok = np.empty_like(batch), np.zeros(len(batch), dtype=bool)

    def run(indices: np.ndarray) -> None:
        for index in indices:
            normalised = normalize_one(batch[index])
            ok[index] = normalised is not None
            out[index] = batch[index] if normalised is None else normalised

    threads = min(threads or os.cpu_count() or 1, len(batch))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, np.array_split(np.arange(len(batch)), threads)))
    else:
        run(np.arange(len(batch)))
    return out.reshape(images.shape), ok
