"""Shared fixtures: every test makes its own small data in tmp_path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

KILL_SCRIPT = """
import os, signal, sys
from ossiclass.classify import ChunkWriter
from ossiclass.cli import main
write, written = ChunkWriter.write_on_batch_end, []
def write_then_die(self, *args, **kwargs):
    write(self, *args, **kwargs)
    written.append(1)
    if len(written) == int(os.environ["KILL_AFTER"]):
        os.killpg(os.getpgrp(), signal.SIGKILL)  # a power cut: every process, no tidying up
ChunkWriter.write_on_batch_end = write_then_die
sys.exit(main(sys.argv[1:]))
"""


def run_killed(tmp_path: Path, args: list[str], kill_after: int) -> int:
    """Runs `ossiclass ARGS` in a new process group that is killed (SIGKILL: no tidying up,
    DDP processes included) as soon as one of its processes has written `kill_after` chunks of
    classify; returns the exit code (-9 when killed). The script is a file, not `-c`, so that
    Lightning's launcher can start it again for a second process."""
    script = tmp_path / "kill_after.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "KILL_AFTER": str(kill_after)}
    command = [sys.executable, str(script), *args]
    return subprocess.run(command, env=env, cwd=REPO, start_new_session=True).returncode


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


def make_tiny_model(path: Path, class_names: tuple[str, ...] | None = None) -> Path:
    """An untrained resnet18 bundle (32 px inputs at 2 µm/px, Macenko reference fitted on a
    synthetic tile) at `path`, with a head for `class_names` (of the six or the extra tissues;
    by default the six). Its last layer is scaled up so that its answers differ from tile to
    tile, as a trained model's do."""
    import numpy as np
    import torch

    from ossiclass.bundle import ModelSettings, save_bundle
    from ossiclass.classes import TISSUE_CLASSES, class_list_from_dict
    from ossiclass.network import build_backbone
    from ossiclass.preprocess.macenko import MacenkoNormalizer
    from ossiclass.preprocessing import Preprocessing
    from ossiclass.synth.stains import sample_domains
    from ossiclass.synth.tiles import make_tile

    classes = class_list_from_dict(list(class_names)) if class_names else TISSUE_CLASSES
    torch.manual_seed(0)
    network = build_backbone("resnet18", len(classes))
    with torch.no_grad():
        network.fc.weight *= 20
    reference, _ = make_tile("hyaline_cartilage", 0, 0, sample_domains(0, 1), 256, 0.5)
    normalizer = MacenkoNormalizer.fit(np.asarray(reference)).to_dict()
    settings = ModelSettings("resnet18", Preprocessing(2.0, 32, normalizer), classes=classes)
    return save_bundle(path, network, settings)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained six-class bundle, fast and deterministic (see `make_tiny_model`)."""
    return make_tiny_model(tmp_path_factory.mktemp("model") / "model.pt")


EIGHT_CLASSES = (
    "mesenchyme", "hyaline_cartilage", "hypertrophic_zone", "woven_bone", "lamellar_bone",
    "callus", "marrow", "fat",
)  # fmt: skip
"""The six and two extra tissues: the class list of `eight_class_model`."""


@pytest.fixture(scope="session")
def eight_class_model(tmp_path_factory) -> Path:
    """An untrained bundle of the six classes plus marrow and fat (see `make_tiny_model`)."""
    return make_tiny_model(tmp_path_factory.mktemp("model8") / "model.pt", EIGHT_CLASSES)


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory) -> Path:
    """A 1024 x 1024 synthetic growth-plate slide at 0.5 µm/px, with its label mask."""
    from ossiclass.synth.slides import SlideSettings, write_slide

    path = tmp_path_factory.mktemp("slide") / "growth_plate.tif"
    return write_slide(path, SlideSettings("growth_plate", 1024, 1024, 0.5, 7), progress=False)


def check_qupath_geojson(content: dict) -> None:
    """What QuPath needs of an imported FeatureCollection, as a schema: asserts each field."""
    json.dumps(content, allow_nan=False)  # plain JSON: lists, numbers, strings
    assert content["type"] == "FeatureCollection" and isinstance(content["features"], list)
    for item in content["features"]:
        assert set(item) == {"type", "id", "geometry", "properties"}
        assert item["type"] == "Feature"
        assert str(uuid.UUID(item["id"])) == item["id"]
        geometry = item["geometry"]
        assert geometry["type"] in ("Polygon", "MultiPolygon", "LineString")
        coordinates = geometry["coordinates"]
        if geometry["type"] == "LineString":
            lines = [coordinates]
            assert len(coordinates) >= 2
        else:
            polygons = coordinates if geometry["type"] == "MultiPolygon" else [coordinates]
            lines = [ring for rings in polygons for ring in rings]
            assert all(len(ring) >= 4 and ring[0] == ring[-1] for ring in lines)
        for line in lines:
            assert isinstance(line, list) and all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, int | float) for v in p)
                for p in line
            )
        properties = item["properties"]
        assert properties["objectType"] in ("annotation", "detection", "tile")
        classification = properties["classification"]
        assert set(classification) == {"name", "color"} and isinstance(classification["name"], str)
        colour = classification["color"]
        assert isinstance(colour, list) and len(colour) == 3
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in colour)
        measurements = properties.get("measurements", {})
        assert isinstance(measurements, dict)
        assert all(isinstance(k, str) and isinstance(v, float) and math.isfinite(v)
                   for k, v in measurements.items())  # fmt: skip
