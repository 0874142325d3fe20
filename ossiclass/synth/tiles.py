"""Synthetic tile data sets and contact sheets, of the six classes or any classes painted.

Tile `i` of class `c` is drawn from its own seed `(seed, c, i)`, so a data set is byte-identical
whatever the number of workers, and an interrupted run resumes where it stopped. `c` is the
class's position in `extra_painters.PAINTED_CLASSES` (the six 0-5, then marrow 6 and fat 7): a
tile is the same whichever other classes its data set holds.
"""

from __future__ import annotations

import json
import multiprocessing.pool
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from ossiclass.classes import CLASSES, TissueClass, known_class, write_class_list
from ossiclass.errors import BadInputError
from ossiclass.files import check_output, save_png, write_text_atomic
from ossiclass.synth.extra_painters import PAINTED_CLASSES
from ossiclass.synth.painters import paint_parts
from ossiclass.synth.stains import StainDomain, render, sample_domains

MANIFEST_COLUMNS = ("path", "label", "domain", "seed", "mpp")
SHEET_MAX_PX = 2**28
"""The most pixels a contact sheet may have (768 MB as RGB): it is a picture to look at."""


@dataclass(frozen=True)
class TileSettings:
    """What a synthetic data set is made from; stored as `synth.json` beside the manifest
    (`classes` only when they are not the six, so that six-class sets stay as they were)."""

    per_class: int
    size_px: int = 256
    mpp: float = 0.5
    seed: int = 0
    domains: int = 8
    classes: tuple[str, ...] = CLASSES

    def validate(self) -> None:
        if self.per_class < 1:
            raise BadInputError(f"per_class must be at least 1, got {self.per_class}")
        if not 16 <= self.size_px <= 4096:
            raise BadInputError(f"size_px must be between 16 and 4096 px, got {self.size_px}")
        if not 0.1 <= self.mpp <= 4.0:
            raise BadInputError(f"mpp must be between 0.1 and 4 µm/px, got {self.mpp}")
        if self.domains < 1:
            raise BadInputError(f"domains must be at least 1, got {self.domains}")
        check_classes(self.classes)

    def to_dict(self) -> dict:
        """The settings as `synth.json` records them."""
        settings = asdict(self)
        if self.classes == CLASSES:
            del settings["classes"]
        return settings


def check_classes(classes: tuple[str, ...]) -> None:
    """Refuse a class list the generator cannot paint: empty, unknown or repeated names."""
    unknown = [name for name in classes if name not in PAINTED_CLASSES]
    if not classes or unknown:
        problem = f"no painter for class {', '.join(unknown)}" if unknown else "no classes given"
        raise BadInputError(f"{problem}; the generator paints {', '.join(PAINTED_CLASSES)}")
    repeated = sorted({name for name in classes if classes.count(name) > 1})
    if repeated:
        raise BadInputError(f"classes named twice: {', '.join(repeated)}")


def make_tile(
    class_name: str, index: int, seed: int, domains: list[StainDomain], size_px: int, mpp: float
) -> tuple[np.ndarray, int]:
    """Tile `index` of a class: ((size_px, size_px, 3) uint8 image, its stain-domain index)."""
    image, domain, _ = labelled_tile(class_name, index, seed, domains, size_px, mpp)
    return image, domain


def labelled_tile(
    class_name: str, index: int, seed: int, domains: list[StainDomain], size_px: int, mpp: float
) -> tuple[np.ndarray, int, np.ndarray | None]:
    """`make_tile`'s image and stain domain, and what each pixel of a callus tile is: (h, w)
    uint8 indices into `classes.CALLUS_PARTS` at painting resolution (None for the other
    classes, which are one tissue throughout)."""
    stream = PAINTED_CLASSES.index(class_name)
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream, index]))
    domain = index % len(domains)
    maps, parts = paint_parts(class_name, rng, (size_px, size_px), mpp)
    return render(maps, domains[domain], rng, (size_px, size_px)), domain, parts


def _write_tile(job: tuple[str, int], root: Path, settings: TileSettings, domains) -> list:
    class_name, index = job
    relative = f"{class_name}/{class_name}_{index:06d}.png"
    path = root / relative
    if path.exists():  # written by an earlier, interrupted run: atomic, so complete
        domain = index % len(domains)
    else:
        image, domain = make_tile(
            class_name, index, settings.seed, domains, settings.size_px, settings.mpp
        )
        save_png(image, path)
    return [relative, class_name, domain, settings.seed, settings.mpp]


def write_tile_dataset(
    root: str | Path, settings: TileSettings, workers: int = 1, progress: bool = True
) -> Path:
    """Write `settings.per_class` tiles of every class under `root`, and `root/manifest.csv`.

    Layout: `root/<class>/<class>_<index>.png`, `root/manifest.csv` (path, label, domain, seed,
    mpp in µm per pixel; paths relative to the manifest), `root/synth.json` (the settings
    and stain domains) and, for classes other than the six, `root/classes.json` (their class
    list, in the order given).
    Re-running with the same settings resumes; other settings in the same folder are refused.
    Returns the manifest path.
    """
    settings.validate()
    root = Path(root)
    check_output(root, folder=True)
    domains = sample_domains(settings.seed, settings.domains)
    description = {"settings": settings.to_dict(), "domains": [d.to_dict() for d in domains]}
    text = json.dumps(description, indent=2)
    description_path = root / "synth.json"
    if description_path.exists():
        if json.loads(description_path.read_text()) != json.loads(text):
            raise BadInputError(
                f"{root} holds a synthetic data set made with other settings; use an empty folder"
            )
    elif root.exists() and any(root.iterdir()):
        raise BadInputError(f"{root} is not empty and holds no synthetic data set")
    for name in settings.classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    write_text_atomic(description_path, text)
    if settings.classes != CLASSES:
        write_class_list(root, class_list(settings.classes))
    jobs = [(name, index) for name in settings.classes for index in range(settings.per_class)]
    task = partial(_write_tile, root=root, settings=settings, domains=domains)
    rows = []
    with (
        worker_pool(workers) as pool,
        tqdm(total=len(jobs), desc="synth tiles", unit="tile", disable=not progress) as bar,
    ):
        results = pool.imap(task, jobs, chunksize=16) if pool else map(task, jobs)
        for row in results:
            rows.append(row)
            bar.update()
    manifest = root / "manifest.csv"
    lines = [",".join(MANIFEST_COLUMNS)] + [",".join(map(str, row)) for row in rows]
    write_text_atomic(manifest, "\n".join(lines) + "\n")
    return manifest


@contextmanager
def worker_pool(workers: int) -> Iterator[multiprocessing.pool.Pool | None]:
    """A pool of `workers` processes (None for one: work inline), each using one BLAS thread.

    Synthesis does many small matrix products: BLAS threads would only fight the processes for
    the cores (measured: 5x slower on two cores with two workers).
    """
    if workers <= 1:
        with threadpool_limits(1):
            yield None
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=threadpool_limits, initargs=(1,)) as pool:
        yield pool


def class_list(names: tuple[str, ...]) -> tuple[TissueClass, ...]:
    """The class list of painted classes `names`, in that order (display names and colours of
    `classes.py`)."""
    return tuple(known_class(name, index) for index, name in enumerate(names))


def contact_sheet(
    per_class: int = 6,
    seed: int = 0,
    size_px: int = 256,
    mpp: float = 0.5,
    classes: tuple[str, ...] = CLASSES,
) -> Image.Image:
    """A labelled grid for people to judge the look: one row per class (of `classes`), one
    stain domain per column. Returns an RGB Pillow image.

    Its tiles are checked as a data set's are, and a sheet of over `SHEET_MAX_PX` is refused.
    """
    TileSettings(per_class, size_px, mpp, seed, domains=per_class, classes=classes).validate()
    label_width, gap = 230, 4
    width = label_width + per_class * (size_px + gap)
    height = len(classes) * (size_px + gap)
    if width * height > SHEET_MAX_PX:
        raise BadInputError(
            f"a contact sheet of {width} x {height} px is over the {SHEET_MAX_PX:,} px a sheet may "
            "have; give fewer or smaller tiles"
        )
    domains = sample_domains(seed, per_class)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=22)
    for row, tissue in enumerate(class_list(classes)):
        top = row * (size_px + gap)
        draw.rectangle(
            [8, top + size_px // 2 - 40, 28, top + size_px // 2 - 20], fill=tissue.colour
        )
        draw.text((8, top + size_px // 2 - 10), tissue.display_name, fill="black", font=font)
        for column in range(per_class):
            image, _ = make_tile(tissue.name, column, seed, domains, size_px, mpp)
            sheet.paste(Image.fromarray(image), (label_width + column * (size_px + gap), top))
    return sheet
