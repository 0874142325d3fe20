"""Benchmarks that print figures.

    python scripts/benchmark.py {synth,colour-baseline,variety,slide,stain,stain-spread,tissue,
                                 agreement,classify,real,all}

`all` trains the default model, runs every other benchmark with it, and writes one Markdown
table of every figure beside its baseline from the same run (`--out`, default
outputs/benchmarks.md).


Each prints what it measured and the settings it used; none asserts anything.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from ossiclass.classes import CLASSES
from ossiclass.errors import OssiclassError
from ossiclass.synth.stains import sample_domains
from ossiclass.synth.tiles import make_tile, worker_pool


def bench_synth(args: argparse.Namespace) -> None:
    """Tiles per second of `ossiclass synth tiles` (PNG files and manifest on disk)."""
    out = Path(tempfile.mkdtemp()) / "tiles"
    command = [
        sys.executable,
        "-m",
        "ossiclass",
        "synth",
        "tiles",
        str(out),
        "--per-class",
        str(args.per_class),
        "--workers",
        str(args.workers),
        "--quiet",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    count = args.per_class * len(CLASSES)
    shutil.rmtree(out.parent)
    print(
        f"synth tiles: {count} tiles of 256 x 256 with --workers {args.workers} in {seconds:.1f} s "
        f"(process start included): {count / seconds:.0f} tiles/s"
    )


def _tile_set(
    per_class: int, seed: int, domains: int, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tiles in memory: ((N, 256, 256, 3) uint8, (N,) class indices)."""
    stain_domains = sample_domains(seed, domains)
    jobs = [(name, i) for name in CLASSES for i in range(per_class)]
    task = partial(_make, seed=seed, domains=stain_domains)
    with worker_pool(workers) as pool:
        images = list(pool.imap(task, jobs, chunksize=16) if pool else map(task, jobs))
    labels = np.array([CLASSES.index(name) for name, _ in jobs])
    return np.stack(images), labels


def _make(job, seed, domains):
    return make_tile(job[0], job[1], seed, domains, 256, 0.5)[0]


def bench_colour_baseline(args: argparse.Namespace) -> None:
    """Macro accuracy of colour-statistics classifiers on stain domains unseen in fitting."""
    from real_check import colour_features
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_images, train_labels = _tile_set(args.per_class, args.seed, args.domains, args.workers)
    test_images, test_labels = _tile_set(
        args.test_per_class, args.seed + 1, args.test_domains, args.workers
    )
    train, test = colour_features(train_images), colour_features(test_images)
    print(
        f"colour baseline: fit on {len(train)} tiles (seed {args.seed}, {args.domains} domains), "
        f"test on {len(test)} tiles from {args.test_domains} unseen domains (seed {args.seed + 1})"
    )
    models = {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "nearest centroid": make_pipeline(StandardScaler(), NearestCentroid()),
    }
    for name, model in models.items():
        predicted = model.fit(train, train_labels).predict(test)
        score = balanced_accuracy_score(test_labels, predicted)
        fitted = balanced_accuracy_score(train_labels, model.predict(train))
        print(f"  {name}: macro accuracy {score:.3f} on unseen domains ({fitted:.3f} on its own)")
        matrix = confusion_matrix(test_labels, predicted)
        width = max(len(c) for c in CLASSES)
        print("    " + " " * width + " " + " ".join(f"{c[:6]:>6}" for c in CLASSES))
        for label, row in zip(CLASSES, matrix, strict=True):
            print(f"    {label:>{width}} " + " ".join(f"{v:>6}" for v in row))


def lowest_pairwise_mad(images: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Exact lowest mean absolute difference over all pairs of (N, H, W, 3) uint8 images.

    The MAD of 8 x 8 block means is a lower bound of the MAD of the images (the mean of absolute
    differences is at least the absolute difference of means), so pairs are checked exactly in
    order of that bound until the bound exceeds the best exact value: exact, without 500,000
    full-size comparisons.
    """
    import torch
    import torch.nn.functional as F

    tiles = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    pooled = F.avg_pool2d(tiles, 8).flatten(1)
    bounds = torch.cdist(pooled, pooled, p=1) / pooled.shape[1]
    bounds = bounds.triu(diagonal=1) + torch.tril(torch.full_like(bounds, float("inf")))
    order = torch.argsort(bounds.flatten())
    flat = tiles.flatten(1)
    best, pair = float("inf"), (-1, -1)
    for index in order.tolist():
        i, j = divmod(index, len(images))
        if float(bounds[i, j]) >= best:
            break
        mad = float((flat[i] - flat[j]).abs().mean())
        if mad < best:
            best, pair = mad, (i, j)
    return best, pair


def bench_variety(args: argparse.Namespace) -> None:
    """Lowest pairwise mean absolute difference between tiles of one class (exact, all pairs)."""
    domains = sample_domains(args.seed, args.domains)
    task = partial(_make, seed=args.seed, domains=domains)
    for name in CLASSES:
        jobs = [(name, i) for i in range(args.per_class)]
        with worker_pool(args.workers) as pool:
            images = np.stack(
                list(pool.imap(task, jobs, chunksize=16) if pool else map(task, jobs))
            )
        lowest, (i, j) = lowest_pairwise_mad(images)
        print(
            f"variety {name}: {len(images)} tiles, lowest pairwise mean absolute difference "
            f"{lowest:.1f} grey levels (tiles {i} and {j})"
        )


def bench_slide(args: argparse.Namespace) -> None:
    """Time and peak memory of writing one synthetic slide, in a fresh process."""
    out = Path(tempfile.mkdtemp()) / f"{args.layout}.tif"
    command = [
        sys.executable,
        "-m",
        "ossiclass",
        "synth",
        "slide",
        str(out),
        "--layout",
        args.layout,
        "--width",
        str(args.size),
        "--height",
        str(args.size),
        "--workers",
        str(args.workers),
        "--seed",
        str(args.seed),
        "--quiet",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    labels = np.asarray(Image.open(out.with_suffix(".labels.png")))
    present = {
        CLASSES[i]: round(float((labels == i).mean()), 3)
        for i in range(len(CLASSES))
        if (labels == i).any()
    }
    size_mb = out.stat().st_size / 2**20
    shutil.rmtree(out.parent)
    print(
        f"slide {args.layout} {args.size} x {args.size} with --workers {args.workers}: "
        f"{seconds:.0f} s, "
        f"peak RSS {peak_mb:.0f} MB (largest process), TIFF {size_mb:.0f} MB"
    )
    print(f"  label fractions: {present}, background {float((labels == 255).mean()):.3f}")


def _rate(function, count: int, repeats: int = 3) -> float:
    """Items per second of `function()` over `count` items, best of `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return count / best


def bench_stain(args: argparse.Namespace) -> None:
    """Macenko tiles/s: ossiclass per tile and slide-level against torchstain's backends."""
    import torch
    import torchstain

    from ossiclass.preprocess.macenko import MacenkoNormalizer

    domains = sample_domains(args.seed, 8)
    task = partial(_make_sized, seed=args.seed, domains=domains, size=args.tile_px)
    tiles = np.stack([task((CLASSES[i % 6], i)) for i in range(args.tiles)])
    reference = make_tile(
        "woven_bone", 0, args.seed + 1, sample_domains(args.seed + 1, 1), 512, 0.5
    )[0]
    ours = MacenkoNormalizer.fit(reference)
    one_thread = MacenkoNormalizer.from_dict(ours.to_dict(), threads=1)
    slide_stains = ours.estimate(list(tiles[:: max(len(tiles) // 16, 1)]))
    numpy_backend = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    numpy_backend.fit(reference)
    torch_backend = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    torch_backend.fit(torch.from_numpy(reference).permute(2, 0, 1))
    chw = [torch.from_numpy(tile).permute(2, 0, 1) for tile in tiles]
    rates = {
        "torchstain numpy, per tile": _rate(
            lambda: [numpy_backend.normalize(t, stains=False) for t in tiles], len(tiles)
        ),
        "torchstain torch, per tile": _rate(
            lambda: [torch_backend.normalize(t, stains=False) for t in chw], len(tiles)
        ),
        "ossiclass, per tile, 1 thread": _rate(lambda: one_thread.normalize(tiles), len(tiles)),
        "ossiclass, per tile": _rate(lambda: ours.normalize(tiles), len(tiles)),
        "ossiclass, slide-level": _rate(lambda: ours.normalize(tiles, slide_stains), len(tiles)),
    }
    fastest_peer = max(rates["torchstain numpy, per tile"], rates["torchstain torch, per tile"])
    print(
        f"Macenko on {len(tiles)} synthetic {args.tile_px} x {args.tile_px} tiles, "
        f"torch threads {torch.get_num_threads()}:"
    )
    for name, rate in rates.items():
        print(f"  {name}: {rate:.0f} tiles/s ({rate / fastest_peer:.2f}x torchstain's faster)")
    _macenko_against_torchstain(Path(args.real))


def _macenko_against_torchstain(folder: Path) -> None:
    """Mean absolute difference of our Macenko output from torchstain's (numpy backend, same
    reference, same percentiles) on real H&E tiles and scikit-image's IHC image."""
    import torchstain
    from skimage.data import immunohistochemistry

    from ossiclass.imageio import read_image
    from ossiclass.preprocess.macenko import MacenkoNormalizer

    images = [read_image(path) for path in sorted(folder.glob("*.jpg"))]
    images.append(immunohistochemistry())
    reference = images[0]
    theirs = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    theirs.fit(reference)
    ours = MacenkoNormalizer.fit(reference)
    differences = [
        np.abs(
            ours.normalize(image)[0].astype(float) - theirs.normalize(image, stains=False)[0]
        ).mean()
        for image in images
    ]
    print(
        f"agreement with torchstain's Macenko on {len(images) - 1} real H&E tiles from {folder} "
        f"and scikit-image's IHC image: mean absolute difference {np.mean(differences):.2f} "
        f"grey levels (largest {max(differences):.2f}; at most 2 required)"
    )


def _make_sized(job, seed, domains, size):
    return make_tile(job[0], job[1], seed, domains, size, 0.5)[0]


def bench_stain_spread(args: argparse.Namespace) -> None:
    """Spread of mean H and E across 8 stain domains, before and after normalisation.

    Each domain renders the same tiles (the generator keeps morphology and stain apart), so
    the spread before is the labs' stain differences alone, and after, what normalisation left.
    """
    from skimage.color import rgb2hed

    from ossiclass.preprocess.stain import NORMALIZERS

    domains = sample_domains(args.seed, 8)

    def spread(groups) -> np.ndarray:
        means = np.array([[rgb2hed(t)[..., :2].mean(axis=(0, 1)) for t in g] for g in groups])
        return means.mean(axis=1).std(axis=0)  # across domains, for H and E

    print(
        f"spread across 8 stain domains (seed {args.seed}) of the mean H and E (rgb2hed) of "
        f"{args.tiles} tiles each, the same tiles in every domain; after / before:"
    )
    for tissue in CLASSES:
        reference = make_tile(tissue, 0, args.seed + 1, sample_domains(args.seed + 1, 1), 512, 0.5)
        tiles = [
            [make_tile(tissue, i, args.seed, [domain], 256, 0.5)[0] for i in range(args.tiles)]
            for domain in domains
        ]
        before = spread(tiles)
        cells = [f"before H {before[0]:.4f} E {before[1]:.4f}"]
        for method in NORMALIZERS.values():
            try:
                fitted = method.fit(reference[0], mpp=0.5)
            except ValueError as error:  # e.g. Macenko on a reference of nearly one stain
                cells.append(f"{method.method}: no reference ({error})")
                continue
            for mode in ("per tile", "per domain"):
                # Per domain: one estimate from all of a lab's tiles, as for a slide.
                after = spread(
                    [
                        fitted.normalize(
                            np.stack(g), fitted.estimate(g) if mode == "per domain" else None
                        )[0]
                        for g in tiles
                    ]
                )
                ratio = after / before
                cells.append(f"{method.method} {mode} H {ratio[0]:.2f} E {ratio[1]:.2f}")
        print(f"  {tissue}: " + "; ".join(cells))


def bench_tissue(args: argparse.Namespace) -> None:
    """IoU of the tissue mask with the generator's tissue mask, per layout."""
    from PIL import Image

    from ossiclass.preprocess.tiling import slide_tissue_mask
    from ossiclass.slides import open_slide
    from ossiclass.synth.slides import LAYOUTS, SlideSettings, slide_domain, write_slide

    root = Path(tempfile.mkdtemp())
    for layout in LAYOUTS:
        settings = SlideSettings(layout, args.size, args.size, 0.5, args.seed)
        path = write_slide(root / f"{layout}.tif", settings, workers=args.workers, progress=False)
        slide = open_slide(path)
        tissue = slide_tissue_mask(slide)
        mask, mpp = tissue.mask, tissue.mpp
        Image.MAX_IMAGE_PIXELS = None
        truth = Image.open(path.with_suffix(".tissue.png")).resize(
            mask.shape[::-1], Image.Resampling.BOX
        )
        truth = np.asarray(truth) > 127
        iou = (mask & truth).sum() / (mask | truth).sum()
        found = "none found" if tissue.glass is None else np.round(tissue.glass).astype(int)
        print(
            f"tissue mask {layout} {args.size} x {args.size} (seed {args.seed}), "
            f"at {mpp:.1f} µm/px: IoU {iou:.3f} with the generator's mask; glass colour "
            f"{found}, generator's {np.round(slide_domain(settings).background).astype(int)}"
        )
    shutil.rmtree(root)


def _make_slide(root: Path, layout: str, size: int, seed: int, workers: int) -> Path:
    from ossiclass.synth.slides import SlideSettings, write_slide

    settings = SlideSettings(layout, size, size, 0.5, seed)
    return write_slide(root / f"{layout}-{seed}.tif", settings, workers=workers, progress=False)


def bench_agreement(args: argparse.Namespace) -> None:
    """Tile labels of `classify` against the ground-truth mask of synthetic slides made with
    seeds (and so stain domains) that training never saw: one slide per layout."""
    from ossiclass.classify import Running, Tiling, classify
    from ossiclass.evaluate import slide_agreement
    from ossiclass.synth.slides import LAYOUTS

    root = Path(args.keep or tempfile.mkdtemp())
    tiling, running = Tiling(white_balance=not args.no_white_balance), Running(workers=args.workers)
    balance = "as scanned" if args.no_white_balance else "white-balanced against their glass"
    print(f"model {args.model}; slides {args.size} x {args.size} at 0.5 µm/px, {balance}")
    for offset, layout in enumerate(LAYOUTS):
        seed = args.seed + offset
        path = root / f"{layout}-{seed}.tif"
        if not path.exists():
            path = _make_slide(root, layout, args.size, seed, args.workers)
        out = root / f"{layout}-{seed}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        classify(path, args.model, out, tiling, running, progress=False)
        seconds = time.perf_counter() - start
        result = slide_agreement(out / "tiles.csv", path.with_suffix(".labels.png"))
        (out / "agreement.json").write_text(json.dumps(result, indent=2))
        print(
            f"  {layout} (seed {seed}): {result['pure_agreement']:.3f} of "
            f"{result['pure_tiles']} tiles whose class covers >= 75% of the tile; "
            f"{result['all_agreement']:.3f} of all {result['tissue_tiles']} tissue tiles "
            f"(classified in {seconds:.0f} s)"
        )
        print(f"    confusion of the >= 75% tiles (rows true): {result['confusion']}")
    if not args.keep:
        shutil.rmtree(root)


def _wait(device: str) -> None:
    """Wait for the GPU's queued work, where there is a GPU, before reading a clock."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def bench_classify(args: argparse.Namespace) -> None:
    """End-to-end tiles/s of `classify` on a slide against the bare forward pass of the same
    model on as many tensors, in the same run; peak memory; TIAToolbox's PatchPredictor on the
    same tiles where a Python with TIAToolbox is given (`--tiatoolbox-python`)."""
    import csv

    import torch

    from ossiclass.classify import Running, classify
    from ossiclass.predict import Predictor
    from ossiclass.preprocess.tiling import TileBox, read_tile
    from ossiclass.slides import Scale, open_slide
    from ossiclass.sources import SlideSource

    root = Path(tempfile.mkdtemp())
    slide = Path(args.slide) if args.slide else root / "growth_plate.tif"
    if not args.slide:  # made in another process: its memory is not counted below
        subprocess.run([sys.executable, "-m", "ossiclass", "synth", "slide", str(slide), "--width",
                        str(args.size), "--height", str(args.size), "--seed", "5", "--workers",
                        "2", "--quiet"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    labels, rates = {}, {}
    for precision in args.precisions:
        running = Running(
            batch_size=args.batch_size,
            workers=args.workers,
            accelerator=args.accelerator,
            precision=precision,
        )
        start = time.perf_counter()
        summary = classify(slide, args.model, root / precision, running=running, progress=False)
        seconds = time.perf_counter() - start
        tiles = summary["tiles"]["classified"]
        with open(root / precision / "tiles.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        labels[precision] = [row["label"] for row in rows]

        device = "cuda" if args.accelerator == "gpu" else "cpu"
        chunks = -(-tiles // args.batch_size)
        predictor = Predictor(args.model, device, precision)
        size = predictor.preprocessing.input_px
        batch = torch.randint(0, 256, (args.batch_size, 3, size, size),
                              dtype=torch.uint8, device=device)  # fmt: skip
        with torch.inference_mode():
            predictor.network(batch)  # warm-up
            _wait(device)
            forward_start = time.perf_counter()
            for _ in range(chunks):
                predictor.network(batch)
            _wait(device)
            forward = time.perf_counter() - forward_start
        bare = chunks * args.batch_size / forward
        rates[precision] = tiles / seconds
        source = SlideSource(slide, Scale(0.5, "given"), [], None)
        workers = running.loader_workers(source, device, chunks)
        print(
            f"classify {precision}, {workers} reading workers: {tiles} tiles of {slide.name} in "
            f"{seconds:.1f} s end to end (tissue detection, stain estimate, reading, white "
            f"balance, normalising, classifying, writing): {tiles / seconds:.0f} tiles/s; bare "
            f"forward pass {bare:.0f} tiles/s; ratio {tiles / seconds / bare:.2f}"
        )
    if len(labels) == 2:
        same = np.mean([a == b for a, b in zip(*labels.values(), strict=True)])
        print(f"bf16 labels agree with fp32 on {same:.4f} of the tiles")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: {own:.0f} MB (classify and the forward pass, this process), "
          f"{children:.0f} MB (largest child process: slide generator, reading worker, or the "
          "one `import torch` starts)")  # fmt: skip
    if args.tiatoolbox_python:
        count = min(len(rows), args.tiatoolbox_tiles)
        with open_slide(slide) as handle:
            boxes = [TileBox(*(int(row[k]) for k in ("minx", "miny", "width", "height")), 1.0)
                     for row in rows[:count]]  # fmt: skip
            stack = np.stack([read_tile(handle, box, size) for box in boxes])
        np.save(root / "tiles.npy", stack)
        script = Path(__file__).with_name("tiatoolbox_patch_predictor.py")
        printed = subprocess.run(
            [args.tiatoolbox_python, str(script), "--tiles", str(root / "tiles.npy"),
             "--batch-size", str(args.batch_size)],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        theirs = float(printed.split(":")[-1].split()[0])
        print(f"{printed} (the first {count} of the same tiles, in memory; same resnet18)")
        for precision, rate in rates.items():
            print(f"ossiclass classify {precision}, end to end from the slide: "
                  f"{rate / theirs:.2f}x TIAToolbox's tiles/s")  # fmt: skip
    else:
        print("TIAToolbox: no --tiatoolbox-python given, no PatchPredictor comparison")
    shutil.rmtree(root)


ALL = [
    ("synthetic tiles to PNG, 2 workers (baseline: 1)", ["synth"], ["synth", "--workers", "1"]),
    ("colour statistics alone across unseen labs (a CNN's baseline)", ["colour-baseline"], None),
    ("within-class variety, 1000 tiles per class", ["variety"], None),
    ("16384 x 16384 slide: time and memory", ["slide"], None),
    ("Macenko speed against torchstain", ["stain"], None),
    ("stain spread across 8 labs, after / before", ["stain-spread"], None),
    ("tissue mask against the generator's", ["tissue"], None),
    ("tile labels against the ground truth, seeds 101-103",
     ["agreement", "--model", "{model}", "--keep", "{slides}"], None),
    ("tile labels against the ground truth, seeds 104-106",
     ["agreement", "--model", "{model}", "--seed", "104", "--keep", "{slides}"], None),
    ("the real check: labelled real H&E fields (baseline: random features, colour)",
     ["real", "--model", "{model}"], None),
    ("classify end to end against the bare forward pass, 40000 x 40000 slide",
     ["classify", "--model", "{model}", "--size", "40000"], None),
]  # fmt: skip

ABLATION = [
    ("none", "none", ["--data.stain_domains", "0"]),
    ("Macenko per tile", "none", ["--data.normalizer", "macenko", "--data.stain_domains", "0"]),
    ("none", "random lab stains on half the tiles (default)", []),
    ("Macenko per tile", "random lab stains on half the tiles", ["--data.normalizer", "macenko"]),
    ("histogram matching per tile", "random lab stains on half the tiles",
     ["--data.normalizer", "histogram"]),
    ("stain histogram matching per tile", "random lab stains on half the tiles",
     ["--data.normalizer", "stain-histogram"]),
]  # fmt: skip
"""Training ablation: (stain normalisation, stain augmentation, overrides of the default)."""


def _run(command: list[str]) -> tuple[str, float]:
    """(stdout, seconds) of a command; a failure is reported in place of the figures."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return f"failed: {result.stderr.strip().splitlines()[-1:]}", 0.0
    return result.stdout.strip(), time.perf_counter() - start


def _train_and_test(root: Path, name: str, overrides: list[str], calibration: Path):
    """Train the default config with `overrides`, then evaluate (and calibrate) it on the
    unseen-lab test tiles and classify the seed 101-103 slides. Returns (model, seconds of
    training, evaluate's last line, agreement per layout)."""
    seconds = _run([sys.executable, "scripts/train.py", "--config", "configs/default.yaml",
                    "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir",
                    str(root), "--trainer.logger.init_args.version", name,
                    "--trainer.enable_progress_bar", "false", *overrides])[1]  # fmt: skip
    model = root / "lightning_logs" / name / "model.pt"
    evaluated, _ = _run([sys.executable, "-m", "ossiclass", "evaluate", "--model", str(model),
                         "--data", "data/synthetic-test", "--calibrate", str(calibration),
                         "--out", str(root / f"evaluate-{name}"), "--quiet"])  # fmt: skip
    agreement, _ = _run([sys.executable, __file__, "agreement", "--model", str(model), "--keep",
                         str(root / "slides")])  # fmt: skip
    pure = [line.split(":")[1].split()[0] for line in agreement.splitlines() if "(seed" in line]
    return model, seconds, evaluated.splitlines()[-1], pure


def bench_real(args: argparse.Namespace) -> None:
    """The real check of `real_check.py` on the labelled real fields, printed."""
    import real_check

    reference = Path(args.reference)
    reason = real_check.missing_reason(reference)
    if reason:
        print(f"real check {reason}")
        return
    try:
        figures = real_check.run(args.model, reference, per_class=args.per_class)
    except OssiclassError as error:
        sys.exit(f"real check: {error}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print(real_check.report(figures))


def bench_all(args: argparse.Namespace) -> None:
    """Train the default model and the ablation's variants, run every benchmark with the
    default model, and write the Markdown tables."""
    root = Path(tempfile.mkdtemp())
    calibration = root / "calibration"  # 8 labs seen neither in training nor in the test set
    _run([sys.executable, "-m", "ossiclass", "synth", "tiles", str(calibration), "--per-class",
          "50", "--seed", "2", "--domains", "8", "--workers", "2", "--quiet"])  # fmt: skip
    ablation = [
        "| stain normalisation | stain augmentation | training | test tiles from 8 "
        "unseen labs | slides: growth plate / fracture / intramembranous (seeds "
        "101-103, tiles >= 75% one class) | overrides |",
        "|---|---|---|---|---|---|",
    ]
    for index, (normalisation, augmentation, overrides) in enumerate(ABLATION):
        name = f"variant{index}"
        print(f"training: {' '.join(overrides) or 'the default'}", file=sys.stderr, flush=True)
        trained = _train_and_test(root, name, overrides, calibration)
        ablation.append(
            f"| {normalisation} | {augmentation} | {trained[1]:.0f} s | {trained[2]} "
            f"| {' / '.join(trained[3])} | `{' '.join(overrides) or '(none)'}` |"
        )
        if not overrides:
            model, seconds, evaluated, _ = trained
    rows = [("`python scripts/train.py --config configs/default.yaml`, then `ossiclass "
             "evaluate --calibrate` on 1200 tiles from 8 unseen labs (baseline: the colour "
             "statistics row)", f"{seconds:.0f} s wall; {evaluated}")]  # fmt: skip
    for what, command, baseline in ALL:
        command = [part.format(model=model, slides=root / "slides") for part in command]
        if command[0] == "classify" and args.tiatoolbox_python:
            command += ["--tiatoolbox-python", args.tiatoolbox_python]
        print(f"{what}", file=sys.stderr, flush=True)
        printed, _ = _run([sys.executable, __file__, *command])
        if baseline:
            printed += "\nbaseline: " + _run([sys.executable, __file__, *baseline])[0]
        shown = " ".join(["python scripts/benchmark.py", *command])
        shown = shown.replace(str(model), "MODEL").replace(str(root / "slides"), "DIR")
        shown = shown.replace(str(args.tiatoolbox_python), "PYTHON")
        rows.append((f"{what} (`{shown}`)", printed))
    lines = ["| benchmark | figures, with their baseline from the same run |", "|---|---|"]
    for what, printed in rows:
        cell = "<br>".join(line.strip().replace("|", "/") for line in printed.splitlines())
        lines.append(f"| {what} | {cell} |")
    table = "\n".join(lines) + "\n\nTraining ablation: `python scripts/train.py --config "
    table += "configs/default.yaml` with the overrides shown, one run each.\n\n"
    table += "\n".join(ablation) + "\n"
    table = re.sub(r"/tmp/tmp\w+", "TMP", table)  # temporary folders, gone after the run
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table)
    shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth")
    synth.add_argument("--per-class", type=int, default=500)
    synth.add_argument("--workers", type=int, default=2)
    synth.set_defaults(run=bench_synth)
    baseline = commands.add_parser("colour-baseline")
    baseline.add_argument("--per-class", type=int, default=400)
    baseline.add_argument("--test-per-class", type=int, default=200)
    baseline.add_argument("--domains", type=int, default=8)
    baseline.add_argument("--test-domains", type=int, default=16)
    baseline.add_argument("--seed", type=int, default=0)
    baseline.add_argument("--workers", type=int, default=2)
    baseline.set_defaults(run=bench_colour_baseline)
    variety = commands.add_parser("variety")
    variety.add_argument("--per-class", type=int, default=1000)
    variety.add_argument("--domains", type=int, default=8)
    variety.add_argument("--seed", type=int, default=0)
    variety.add_argument("--workers", type=int, default=2)
    variety.set_defaults(run=bench_variety)
    slide = commands.add_parser("slide")
    slide.add_argument("--layout", default="growth_plate")
    slide.add_argument("--size", type=int, default=16384)
    slide.add_argument("--seed", type=int, default=0)
    slide.add_argument("--workers", type=int, default=2)
    slide.set_defaults(run=bench_slide)
    stain = commands.add_parser("stain")
    stain.add_argument("--tiles", type=int, default=256)
    stain.add_argument("--tile-px", type=int, default=224)
    stain.add_argument("--seed", type=int, default=0)
    stain.add_argument("--real", default="../shared/reference-he", help="real H&E .jpg tiles")
    stain.set_defaults(run=bench_stain)
    spread = commands.add_parser("stain-spread")
    spread.add_argument("--tiles", type=int, default=8)
    spread.add_argument("--seed", type=int, default=0)
    spread.set_defaults(run=bench_stain_spread)
    tissue = commands.add_parser("tissue")
    tissue.add_argument("--size", type=int, default=8192)
    tissue.add_argument("--seed", type=int, default=3)
    tissue.add_argument("--workers", type=int, default=2)
    tissue.set_defaults(run=bench_tissue)
    agreement = commands.add_parser("agreement")
    agreement.add_argument("--model", required=True)
    agreement.add_argument("--size", type=int, default=8192)
    agreement.add_argument("--seed", type=int, default=101)
    agreement.add_argument("--workers", type=int, default=2)
    agreement.add_argument("--keep", metavar="DIR", help="keep the slides and outputs here")
    agreement.add_argument("--no-white-balance", action="store_true", help="classify as scanned")
    agreement.set_defaults(run=bench_agreement)
    classify = commands.add_parser("classify")
    classify.add_argument("--model", required=True)
    classify.add_argument("--slide", help="a slide to classify (default: a synthetic one)")
    classify.add_argument("--size", type=int, default=16384)
    classify.add_argument("--batch-size", type=int, default=64)
    classify.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    classify.add_argument("--workers", type=int, help="reading workers (default: classify's)")
    classify.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    classify.add_argument("--tiatoolbox-python", help="a Python with TIAToolbox installed")
    classify.add_argument("--tiatoolbox-tiles", type=int, default=4096)
    classify.set_defaults(run=bench_classify)
    real = commands.add_parser("real")
    real.add_argument("--model", required=True)
    real.add_argument("--reference", default="../shared/reference-he", help="labels.tsv's folder")
    real.add_argument("--per-class", type=int, default=200, help="synthetic tiles per class")
    real.add_argument("--json", help="also write the figures to this JSON file")
    real.set_defaults(run=bench_real)
    everything = commands.add_parser("all")
    everything.add_argument("--out", default="outputs/benchmarks.md")
    everything.add_argument("--tiatoolbox-python", help="a Python with TIAToolbox installed")
    everything.set_defaults(run=bench_all)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
