"""Every format, mode and bit depth comes back as RGB uint8; every bad file is one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from ossiclass.errors import ImageReadError, OssiclassError
from ossiclass.imageio import read_image, to_rgb_uint8

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_png_rgb_round_trip(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(RGB).save(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (24, 32, 3)
    np.testing.assert_array_equal(image, RGB)


def test_grey_is_repeated_to_three_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(RGB[..., 0]).save(path)
    image = read_image(path)
    assert image.shape == (24, 32, 3)
    np.testing.assert_array_equal(image[..., 2], RGB[..., 0])


def test_rgba_composites_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = read_image(path)
    np.testing.assert_array_equal(image[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(image[3, 0], [255, 255, 255])


def test_palette_with_transparency(tmp_path):
    palette_image = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette_image.info["transparency"] = 0
    path = tmp_path / "palette.png"
    palette_image.save(path, transparency=0)
    image = read_image(path)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(RGB).convert("CMYK").save(path)
    image = read_image(path)
    assert image.shape == (24, 32, 3)
    assert np.abs(image.astype(int) - RGB.astype(int)).mean() < 40


@pytest.mark.parametrize("mode", ["CMYK", "P", "1"])
def test_tiffs_whose_samples_are_not_rgb_values_are_converted(tmp_path, mode):
    path = tmp_path / f"{mode}.tif"
    stored = Image.fromarray(RGB).convert(mode)
    stored.save(path)
    expected = np.asarray(stored.convert("RGB")).astype(int)
    assert np.abs(read_image(path).astype(int) - expected).max() <= 1


def test_white_is_zero_grey_tiff_is_not_inverted(tmp_path):
    path = tmp_path / "miniswhite.tif"
    grey = RGB[..., 0]
    tifffile.imwrite(path, 255 - grey, photometric="miniswhite")
    assert np.abs(read_image(path)[..., 0].astype(int) - grey.astype(int)).max() <= 1


def test_signed_samples_are_refused(tmp_path):
    path = tmp_path / "signed.tif"
    tifffile.imwrite(path, RGB.astype(np.int16) - 128, photometric="rgb")
    with pytest.raises(ImageReadError, match="signed int16 samples"):
        read_image(path)


def test_a_tiled_jpeg_tiff_cut_short_is_refused(tmp_path):
    whole = tmp_path / "whole.tif"
    noise = RNG.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    tifffile.imwrite(whole, noise, tile=(128, 128), compression="jpeg", photometric="rgb")
    cut = _write_bytes(tmp_path / "cut.tif", whole.read_bytes()[:-3000])
    with pytest.raises(ImageReadError, match="the file ends before its pixels do"):
        read_image(cut)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(RGB).save(path, exif=exif)
    assert read_image(path).shape == (32, 24, 3)


def test_sixteen_bit_png_is_scaled(tmp_path):
    grey16 = np.full((8, 8), 65535, dtype=np.uint16)
    grey16[0, 0] = 0
    path = tmp_path / "deep.png"
    Image.fromarray(grey16).save(path)
    image = read_image(path)
    assert image[1, 1, 0] == 255 and image[0, 0, 0] == 0


@pytest.mark.parametrize("planar", [False, True])
def test_sixteen_bit_rgb_tiff(tmp_path, planar):
    rgb16 = RGB.astype(np.uint16) * 257
    path = tmp_path / "deep.tif"
    if planar:
        tifffile.imwrite(
            path, np.moveaxis(rgb16, -1, 0), photometric="rgb", planarconfig="separate"
        )
    else:
        tifffile.imwrite(path, rgb16, photometric="rgb")
    np.testing.assert_array_equal(read_image(path), RGB)


def test_float_tiff_in_unit_range(tmp_path):
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, RGB.astype(np.float32) / 255.0, photometric="rgb")
    np.testing.assert_array_equal(read_image(path), RGB)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), value, np.uint8)) for value in (10, 250)]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert read_image(path).mean() < 128


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write_bytes(d / "empty.png", b""), "empty file"),
        (
            lambda d: _write_bytes(d / "notes.png", b"these are my notes, not pixels\n"),
            "not an image",
        ),
        (lambda d: _write_bytes(d / "noise.jpg", bytes(range(256)) * 8), "not an image"),
        (lambda d: _write_bytes(d / "bad.tif", b"II*\x00" + b"\xff" * 60), "not an image"),
    ],
)
def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageReadError, match=message) as caught:
        read_image(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, OssiclassError) and isinstance(caught.value, OSError)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_are_reported(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(whole)
    cut = _write_bytes(tmp_path / f"cut{suffix}", whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        read_image(cut)


def test_over_large_images_are_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(RGB).save(path)
    with pytest.raises(ImageReadError, match="24 px, over the limit of 100 pixels"):
        read_image(path, max_pixels=100)
    tiff = tmp_path / "big.tif"
    tifffile.imwrite(tiff, RGB, photometric="rgb")
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(tiff, max_pixels=100)


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.fromarray(RGB).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses at twice this
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(path)


def test_to_rgb_uint8_rejects_arrays_that_are_not_images():
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 7), dtype=np.uint8))
