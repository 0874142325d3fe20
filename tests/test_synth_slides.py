import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import tifffile
from PIL import Image

from ossiclass.classes import BACKGROUND_LABEL, TISSUE_CLASSES, class_list_from_dict
from ossiclass.cli import main
from ossiclass.errors import BadInputError
from ossiclass.synth.layouts import LAYOUTS, SLIDE_CLASSES
from ossiclass.synth.slides import (
    RegionRandom,
    SlideSettings,
    _fields,
    files_beside,
    label_window,
    slide_domain,
    slide_truth,
    write_slide,
)
from ossiclass.synth.stains import sample_domains

PROMISED = {
    "growth_plate": {
        "mesenchyme",
        "hyaline_cartilage",
        "hypertrophic_zone",
        "woven_bone",
        "lamellar_bone",
    },
    "fracture_callus": {"mesenchyme", "hyaline_cartilage", "woven_bone", "lamellar_bone", "callus"},
    "intramembranous": {"mesenchyme", "woven_bone", "lamellar_bone"},
    "marrow_cavity": {"mesenchyme", "woven_bone", "lamellar_bone", "marrow", "fat"},
}
INDEX = {tissue.name: tissue.index for tissue in SLIDE_CLASSES}


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    return {
        layout: write_slide(
            root / f"{layout}.tif", SlideSettings(layout, 2048, 1536, 0.5, 3), progress=False
        )
        for layout in PROMISED
    }


@pytest.mark.parametrize("layout", PROMISED)
def test_slide_is_a_tiled_pyramid_with_its_scale(slides, layout):
    with tifffile.TiffFile(slides[layout]) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        assert page.shape == (1536, 2048, 3)
        levels = tif.series[0].levels
        assert [level.shape[:2] for level in levels] == [(1536, 2048), (768, 1024)]
        numerator, denominator = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        assert 1e4 / (numerator / denominator) == pytest.approx(0.5)
        assert '"mpp": 0.5' in page.description


def test_a_slide_s_folder_holds_its_files_and_no_partial_one(slides):
    """Every file is renamed into place: nothing `.partial` is left, and the files beside a
    slide are those `files_beside` names (a class list only where there are classes beyond the
    six: the marrow cavity's marrow and fat)."""
    written = {path.name for path in slides["growth_plate"].parent.iterdir()}
    expected = set()
    for path in slides.values():
        expected |= {path.name} | {p.name for p in files_beside(path)[:3]}
    expected.add(files_beside(slides["marrow_cavity"])[3].name)
    assert written == expected


@pytest.mark.parametrize("layout", PROMISED)
def test_label_mask_has_every_region_the_layout_promises(slides, layout):
    labels = np.asarray(Image.open(slides[layout].with_suffix(".labels.png")))
    tissue = np.asarray(Image.open(slides[layout].with_suffix(".tissue.png")))
    assert labels.shape == (1536, 2048) and labels.dtype == np.uint8
    for name in PROMISED[layout]:
        assert (labels == INDEX[name]).mean() > 0.01, name
    assert set(np.unique(labels)) <= {INDEX[name] for name in PROMISED[layout]} | {255}
    np.testing.assert_array_equal(tissue > 0, labels != BACKGROUND_LABEL)
    assert 0.05 < (labels == BACKGROUND_LABEL).mean() < 0.6


@pytest.mark.slow  # paints a slide of its own: about 10 s
def test_a_callus_s_islands_are_labelled_as_the_tissue_they_hold(tmp_path):
    """Inside the callus the layout draws, the mask says cartilage or woven bone where the
    callus painter drew an island of it; elsewhere it is the layout's."""
    settings = SlideSettings("fracture_callus", 1024, 1024, 2.0, 112)
    path = write_slide(tmp_path / "callus.tif", settings, progress=False)
    labels = np.asarray(Image.open(path.with_suffix(".labels.png")))
    layout = label_window(settings, _fields(settings), 0, 0, 1024, 1024)
    changed = labels != layout
    assert (layout[changed] == INDEX["callus"]).all()
    assert set(np.unique(labels[changed])) <= {INDEX["hyaline_cartilage"], INDEX["woven_bone"]}
    assert 0.05 < changed.sum() / (layout == INDEX["callus"]).sum() < 0.8


def test_painted_tissue_follows_the_label_mask(slides):
    image = tifffile.imread(slides["growth_plate"])
    labels = np.asarray(Image.open(slides["growth_plate"].with_suffix(".labels.png")))
    background = image[labels == BACKGROUND_LABEL].astype(float)
    assert background.std(axis=0).max() < 8  # bare glass: flat, only sensor noise
    darkness = lambda name: 255 - image[labels == INDEX[name]].mean()  # noqa: E731
    assert darkness("lamellar_bone") > darkness("mesenchyme")


def test_a_slide_with_marrow_and_fat_names_its_classes(slides):
    path = slides["marrow_cavity"]
    entries = json.loads(path.with_suffix(".classes.json").read_text())["classes"]
    classes = class_list_from_dict(entries)
    assert classes[:6] == TISSUE_CLASSES
    assert [(c.index, c.name) for c in classes[6:]] == [(6, "marrow"), (7, "fat")]
    for layout in LAYOUTS:  # the six alone: no class list, as before
        assert not slides[layout].with_suffix(".classes.json").exists()
    image = tifffile.imread(path)
    labels = np.asarray(Image.open(path.with_suffix(".labels.png")))
    brightness = lambda name: image[labels == INDEX[name]].mean()  # noqa: E731
    assert brightness("fat") > brightness("marrow") + 40  # fat is mostly empty glass
    assert brightness("fat") > brightness("lamellar_bone") + 40


@pytest.mark.slow
def test_same_seed_same_slide_whatever_the_workers(tmp_path):
    settings = SlideSettings("fracture_callus", 1024, 1024, 1.0, 9)
    one = write_slide(tmp_path / "one.tif", settings, workers=1, progress=False)
    two = write_slide(tmp_path / "two.tif", settings, workers=2, progress=False)
    digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    assert digest(one) == digest(two)
    assert digest(one.with_suffix(".labels.png")) == digest(two.with_suffix(".labels.png"))


@pytest.mark.parametrize(
    "settings, message",
    [
        (SlideSettings("femur"), "unknown layout"),
        (SlideSettings(width=100), "width must"),
        (SlideSettings(mpp=9.0), "mpp must"),
        (SlideSettings(lab=-3), "lab must"),
        (SlideSettings(cartilage=-1.0), "cartilage must"),
        (SlideSettings(plate_height=0.0), "plate height must"),
    ],
)
def test_settings_are_checked(tmp_path, settings, message):
    with pytest.raises(BadInputError, match=message):
        write_slide(tmp_path / "slide.tif", settings, progress=False)


def test_region_random_shares_style_but_not_placement():
    def region(chunk):
        return RegionRandom(np.random.default_rng(1), np.random.default_rng(chunk))

    first, second = region(10), region(20)
    assert first.uniform(0, 1) == second.uniform(0, 1)  # a scalar: the region's style
    assert first.integers(0, 100) == second.integers(0, 100)
    assert not np.array_equal(first.uniform(0, 1, 5), second.uniform(0, 1, 5))  # placement
    assert not np.array_equal(first.random((3, 2)), second.random((3, 2)))


def test_slides_of_one_lab_share_their_stain_domain_not_their_tissue(tmp_path):
    first = SlideSettings("intramembranous", 1024, 1024, 0.5, seed=1, lab=40)
    second = SlideSettings("growth_plate", 1024, 1024, 0.5, seed=2, lab=40)
    assert slide_domain(first) == slide_domain(second)
    assert slide_domain(first) != slide_domain(replace(first, lab=41))
    # Without a lab, the domain is the slide's own, drawn from its seed as before labs.
    assert slide_domain(replace(first, lab=None)) == replace(
        sample_domains(1, 1)[0], vignetting=0.0
    )
    assert slide_domain(replace(first, lab=None)) != slide_domain(first)
    paths = [
        write_slide(tmp_path / f"{name}.tif", settings, progress=False)
        for name, settings in (("a", first), ("b", replace(first, seed=2)))
    ]
    images = [tifffile.imread(path).astype(int) for path in paths]
    assert np.abs(images[0] - images[1]).mean() > 5  # other seeds: other tissue
    with tifffile.TiffFile(paths[0]) as tif:
        description = json.loads(tif.pages[0].description)
    assert description["lab"] == 40 and description["seed"] == 1
    assert description["stain_domain"] == json.loads(json.dumps(slide_domain(first).to_dict()))


def test_synth_slide_takes_a_lab(tmp_path):
    out = tmp_path / "slide.tif"
    arguments = ["synth", "slide", str(out), "--width", "1024", "--height", "1024", "--quiet"]
    assert main([*arguments, "--lab", "7"]) == 0
    with tifffile.TiffFile(out) as tif:
        assert json.loads(tif.pages[0].description)["lab"] == 7
    with pytest.raises(SystemExit):
        main([*arguments, "--lab", "-1"])


@pytest.mark.parametrize("layout", PROMISED)
def test_truth_holds_the_measures_of_the_label_mask(slides, layout):
    truth = json.loads(slides[layout].with_suffix(".truth.json").read_text())
    assert truth["mpp"] == 0.5 and truth["measured_mpp"] == 1.0 and truth["layout"] == layout
    measures = {m["name"]: m for m in truth["measures"]}
    labels = np.asarray(Image.open(slides[layout].with_suffix(".labels.png")))
    tissue = labels != BACKGROUND_LABEL
    for tissue_class in SLIDE_CLASSES if layout == "marrow_cavity" else TISSUE_CLASSES:
        fraction = (labels == tissue_class.index).sum() / tissue.sum()
        got = measures[f"{tissue_class.display_name} fraction"]
        assert got["value"] == pytest.approx(fraction, abs=0.002) and got["unit"] == "1"
    assert measures["Tissue area"]["value"] == pytest.approx(tissue.sum() * 0.25e-6, rel=0.01)
    assert ("Total callus area" in measures) == (layout == "fracture_callus")
    assert ("Hypertrophic zone height" in measures) == (layout == "growth_plate")
    if layout == "growth_plate":  # 0.11 of the slide's height, stretched by its smooth fields
        height = measures["Hypertrophic zone height"]["value"]
        assert height == pytest.approx(0.11 * 1536 * 0.5, rel=0.15)
    with tifffile.TiffFile(slides[layout]) as tif:
        description = json.loads(tif.pages[0].description)
    assert description["cartilage"] == 1.0 and description["plate_height"] == 1.0


def _truth(settings: SlideSettings) -> dict[str, float]:
    """The true measures of a slide's label mask, the slide left unpainted."""
    labels = label_window(settings, _fields(settings), 0, 0, settings.height, settings.width)
    return {m["name"]: m["value"] for m in slide_truth(labels, settings)["measures"]}


def test_tissue_amounts_paint_a_known_difference_between_groups():
    callus = SlideSettings("fracture_callus", 2048, 2048, 0.5, seed=2)
    fractions = [
        _truth(replace(callus, cartilage=c))["Cartilage fraction of callus"] for c in (0, 1, 2)
    ]
    assert fractions[0] == 0 and fractions[1] > 0.03 and fractions[2] > fractions[1] + 0.03
    plate = SlideSettings("growth_plate", 2048, 2048, 0.5, seed=2)
    heights = [
        _truth(replace(plate, plate_height=p))["Hypertrophic zone height"] for p in (1.0, 1.5)
    ]
    assert heights[1] / heights[0] == pytest.approx(1.5, rel=0.1)
