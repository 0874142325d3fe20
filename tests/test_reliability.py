"""A corpus of bad inputs, made on the fly, through `predict` and `classify` as a user runs them:
each ends in one line per problem (or a reported skip), never a traceback, and no code from a
hostile model file runs."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from ossiclass.cli import main

RNG = np.random.default_rng(0)
TISSUE = RNG.integers(80, 230, (128, 128, 3), dtype=np.uint8)  # stands in for a tile


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge image (a decompression bomb), with a tiny body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _animated_gif() -> bytes:
    frames = [Image.fromarray(TISSUE), Image.fromarray(255 - TISSUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def _tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _tiff_cut_in_its_tile_table() -> bytes:
    """A tiled TIFF of 256 tiles cut after 600 bytes: most tiles' offsets are gone."""
    return _tiff(np.tile(TISSUE, (2, 2, 1)), tile=(16, 16))[:600]


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(TISSUE).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


def image_corpus(root: Path) -> dict[str, tuple[Path, str]]:
    """Bad and awkward images: name -> (file, what must happen: "error" or "answer")."""
    good = _png(TISSUE)
    files = {
        "corrupt png": ("corrupt.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200), "error"),
        "truncated png": ("truncated.png", good[: len(good) // 2], "error"),
        "zero bytes": ("empty.png", b"", "error"),
        "text named .tif": ("notes.tif", b"these are my notes, not an image", "error"),
        "pdf named .jpg": ("paper.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", "error"),
        "1 x 1": ("dot.png", _png(TISSUE[:1, :1]), "error"),
        "100000 x 1": ("line.png", _png(np.zeros((1, 100000, 3), np.uint8)), "error"),
        "decompression bomb": ("bomb.png", _bomb_png(100000, 100000), "error"),
        "truncated jpeg": ("cut.jpg", _jpeg()[:300], "error"),
        "16-bit grey": ("deep.png", _png(TISSUE[..., 0].astype(np.uint16) * 257), "answer"),
        "16-bit rgb tiff": ("deep.tif", _tiff(TISSUE.astype(np.uint16) * 257), "answer"),
        "float tiff": ("float.tif", _tiff(TISSUE.astype(np.float32) / 255), "answer"),
        "nan tiff": ("nan.tif", _tiff(np.full((128, 128, 3), np.nan, np.float32)), "error"),
        "cmyk jpeg": ("cmyk.jpg", _cmyk_jpeg(), "answer"),
        "palette png": ("palette.png", _palette_png(), "answer"),
        "rgba png": ("alpha.png", _png(np.dstack([TISSUE, TISSUE[..., :1]]), "RGBA"), "answer"),
        "animated gif": ("moving.gif", _animated_gif(), "answer"),
        "jpeg named .png": ("really_jpeg.png", _jpeg(), "answer"),
        "all glass": ("white.png", _png(np.full((128, 128, 3), 245, np.uint8)), "answer"),
        "five-channel tiff": ("bands.tif", _tiff(np.zeros((5, 64, 64), np.uint8)), "error"),
    }
    corpus = {}
    for name, (filename, content, expected) in files.items():
        path = root / filename
        path.write_bytes(content)
        corpus[name] = (path, expected)
    (root / "folder.png").mkdir()
    corpus["a folder named .png"] = (root / "folder.png", "error")
    (root / "dangling.png").symlink_to(root / "gone.png")
    corpus["broken symlink"] = (root / "dangling.png", "error")
    corpus["missing file"] = (root / "missing.png", "error")
    return corpus


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(TISSUE).save(buffer, format="JPEG")
    return buffer.getvalue()


def _palette_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(TISSUE).convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "PNG")
    return buffer.getvalue()


class _RunsCode:
    """Unpickling this would run a shell command: the marker file proves whether it did."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def model_corpus(root: Path, good_model: Path) -> dict[str, tuple[Path, str]]:
    """Bad model files: name -> (file, a phrase the one-line error must hold)."""
    valid = good_model.read_bytes()
    hostile = root / "hostile.ckpt"
    torch.save({"state_dict": _RunsCode(root / "PWNED")}, hostile)
    raw_pickle = root / "raw.pkl"
    raw_pickle.write_bytes(pickle.dumps(_RunsCode(root / "PWNED")))
    lightning = root / "lightning.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, lightning)
    future = root / "future.pt"
    torch.save({**torch.load(good_model, weights_only=True), "version": 7}, future)
    wrong_weights = root / "wrong.pt"
    content = torch.load(good_model, weights_only=True)
    content["settings"]["backbone"] = "mobilenet_v3_small"
    torch.save(content, wrong_weights)
    files = {
        "pickle that runs code": (hostile, "not an ossiclass model bundle"),
        "raw pickle that runs code": (raw_pickle, "not an ossiclass model bundle"),
        "lightning checkpoint": (lightning, "not an ossiclass model bundle"),
        "other bundle version": (future, "bundle version 7"),
        "weights for another backbone": (wrong_weights, "do not fit backbone"),
        "truncated bundle": (
            _write(root / "half.pt", valid[: len(valid) // 2]),
            "not an ossiclass",
        ),
        "json as model": (_write(root / "model.json", b'{"weights": []}'), "not an ossiclass"),
        "empty model": (_write(root / "empty.pt", b""), "not an ossiclass"),
        "missing model": (root / "nowhere.pt", "no such model file"),
    }
    return files


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_predict_walks_the_image_corpus(tiny_model, tmp_path, capsys):
    corpus = image_corpus(tmp_path)
    assert len(corpus) >= 20
    for name, (path, expected) in corpus.items():
        status = main(["predict", str(path), "--model", str(tiny_model), "--json", "--mpp", "2"])
        out, err = capsys.readouterr()
        assert "Traceback" not in err, name
        if expected == "error":
            assert status == 2 and len(_lines(err)) == 1 and not out, (name, err)
            assert err.startswith("ossiclass: error: ") and path.name in err, (name, err)
        else:
            assert status == 0 and len(_lines(out)) == 1 and not err, (name, err)


def test_classify_skips_bad_tiles_of_a_folder_and_reports_them(tiny_model, tmp_path, capsys):
    folder = tmp_path / "tiles"
    folder.mkdir()
    corpus = image_corpus(folder)
    status = main(["classify", str(folder), "--model", str(tiny_model), "--out",
                   str(tmp_path / "out"), "--mpp", "2", "--workers", "0", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 0 and "Traceback" not in err
    answered = (tmp_path / "out" / "tiles.csv").read_text()
    skipped = (tmp_path / "out" / "skipped.txt").read_text()
    for name, (path, expected) in corpus.items():
        if not path.is_file() or path.is_symlink():
            continue  # a folder listing holds only the files that are there
        where = skipped if expected == "error" else answered
        assert path.name in where, name


def test_every_bad_model_is_one_line_and_no_pickle_runs(tiny_model, small_slide, tmp_path, capsys):
    image = tmp_path / "tile.png"
    image.write_bytes(_png(TISSUE))
    corpus = model_corpus(tmp_path, tiny_model)
    for name, (model, phrase) in corpus.items():
        for command in (
            ["predict", str(image), "--model", str(model)],
            ["classify", str(small_slide), "--model", str(model), "--out", str(tmp_path / name)],
        ):
            assert main(command) == 2, name
            err = capsys.readouterr().err
            assert len(_lines(err)) == 1 and phrase in err and "Traceback" not in err, (name, err)
    assert not (tmp_path / "PWNED").exists()  # no code from a model file ran


def _folder_of_unreadable_images(root: Path) -> Path:
    folder = root / "unreadable"
    folder.mkdir()
    (folder / "text.png").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    "make_input, phrase",
    [
        (lambda root: root.joinpath("empty").mkdir() or root / "empty", "no images"),
        (
            lambda root: _write(
                root / "blank.tif",
                _tiff(
                    np.full((512, 512, 3), 250, np.uint8),
                    tile=(256, 256),
                    resolution=(2e4, 2e4),
                    resolutionunit="CENTIMETER",
                ),
            ),
            "no tile holds",
        ),  # fmt: skip
        (
            lambda root: _write(
                root / "cut.tif",
                _tiff(TISSUE, tile=(64, 64), resolution=(2e4, 2e4), resolutionunit="CENTIMETER")[
                    :600
                ],
            ),
            "damaged image data",
        ),  # fmt: skip
        (
            lambda root: _write(root / "cut-table.tif", _tiff_cut_in_its_tile_table()),
            "its table of tiles is cut short",
        ),
        (_folder_of_unreadable_images, "none of its 2 tiles could be read"),
    ],
    ids=[
        "empty folder",
        "a slide of glass only",
        "truncated slide",
        "cut in its tile table",
        "a folder of unreadable images",
    ],  # fmt: skip
)
def test_classify_refuses_unusable_inputs_in_one_line(
    make_input, phrase, tiny_model, tmp_path, capsys
):
    source = make_input(tmp_path)
    command = ["classify", str(source), "--model", str(tiny_model), "--out", str(tmp_path / "o")]
    assert main([*command, "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and phrase in err and "Traceback" not in err, err


def test_a_damaged_tiff_is_one_line_from_the_shell_without_tifffiles_own_log(tiny_model, tmp_path):
    cut = _write(tmp_path / "cut.tif", _tiff_cut_in_its_tile_table())
    command = [sys.executable, "-m", "ossiclass", "predict", str(cut), "--model", str(tiny_model)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # tifffile logs 8 lines about it
    assert result.stderr.startswith(f"ossiclass: error: {cut}: corrupt"), result.stderr


def test_a_plain_image_without_a_scale_is_classified_at_the_default_with_a_note(
    tiny_model, tmp_path, capsys
):
    from ossiclass.synth.stains import sample_domains
    from ossiclass.synth.tiles import make_tile

    image = np.full((1536, 1536, 3), 236, np.uint8)  # 512 µm of tissue on glass, at 0.5 µm/px
    image[256:1280, 256:1280] = make_tile("woven_bone", 0, 1, sample_domains(1, 1), 1024, 0.5)[0]
    source = _write(tmp_path / "big.png", _png(image))
    command = ["classify", str(source), "--model", str(tiny_model), "--out", str(tmp_path / "o")]
    assert main([*command, "--workers", "0", "--quiet"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["input_mpp"] == 0.5 and summary["mpp_from"] == "assumed"
    out = capsys.readouterr().out
    assert "no µm per pixel recorded (or one outside 0.05-50); assumed 0.5" in out
