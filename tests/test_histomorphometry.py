"""Measures on small class maps whose answer is known by construction."""

import numpy as np
import pytest

from ossiclass.classes import TISSUE_CLASSES, class_index
from ossiclass.errors import BadInputError
from ossiclass.histomorphometry import (
    Measure,
    callus_measures,
    growth_plate_heights,
    measure_map,
    measure_slide,
    mode_downsample,
)

MES, HYA, HYP, WOV, LAM, CAL = (class_index(c.name) for c in TISSUE_CLASSES)


def _values(measures: list[Measure]) -> dict[str, float]:
    return {m.name: m.value for m in measures}


def _centres(size: int, mpp: float):
    """Pixel centres in µm from the map's centre: (y, x), each (size, size)."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    return (yy - size / 2) * mpp, (xx - size / 2) * mpp


def _plate(angle_deg: float, hypertrophic_um: float, resting_um: float, mpp: float = 2.0):
    """A straight growth plate turned by `angle_deg`: articular cartilage, bony plate, resting
    and proliferative cartilage, hypertrophic zone, primary spongiosa; loose tissue around."""
    y, x = _centres(1200, mpp)
    angle = np.radians(angle_deg)
    along = x * np.cos(angle) + y * np.sin(angle)
    depth = -x * np.sin(angle) + y * np.cos(angle)
    labels = np.full(y.shape, MES, dtype=np.uint8)
    plate = np.abs(along) < 900
    layers = [
        (-resting_um - 350, HYA),  # articular cartilage, beyond the bony plate
        (-resting_um - 200, LAM),
        (-resting_um, HYA),
        (0, HYP),
        (hypertrophic_um, WOV),
        (hypertrophic_um + 300, MES),
    ]
    for (top, label), (bottom, _) in zip(layers, layers[1:], strict=False):
        labels[plate & (depth >= top) & (depth < bottom)] = label
    return labels


@pytest.mark.parametrize("angle", [0.0, 20.0, -65.0])
def test_plate_heights_are_measured_normal_to_a_tilted_plate(angle):
    measured = growth_plate_heights(_plate(angle, 120, 200), 2.0, TISSUE_CLASSES)
    values = _values(measured.measures)
    assert values["Hypertrophic zone height"] == pytest.approx(120, rel=0.02)
    assert values["Resting and proliferative zone height"] == pytest.approx(200, rel=0.02)
    assert values["Growth plate height"] == pytest.approx(320, rel=0.02)
    assert values["Hypertrophic zone height SD"] < 4
    # every 100 µm along the middle 80 % of a 1.8 mm plate
    assert values["Hypertrophic zone height n"] == 15
    assert values["Resting and proliferative zone height n"] == 15
    (x0, y0), (x1, y1) = measured.heights["Hypertrophic zone"][7]
    assert np.hypot(x1 - x0, y1 - y0) * 2.0 == pytest.approx(120, rel=0.03)
    direction = np.degrees(np.arctan2(y1 - y0, x1 - x0))
    assert abs((direction - angle - 90 + 90) % 180 - 90) < 2  # normal to the plate
    assert len(measured.heights["Resting and proliferative zone"]) == 15


def test_a_wavy_plate_is_measured_normal_to_its_local_direction():
    mpp, height, amplitude, wavelength = 2.0, 150.0, 40.0, 1000.0
    y, x = _centres(1000, mpp)
    wave = amplitude * np.sin(2 * np.pi * x / wavelength)
    labels = np.full(y.shape, MES, dtype=np.uint8)
    labels[(y >= wave - 200) & (y < wave)] = HYA
    labels[(y >= wave) & (y < wave + height)] = HYP
    labels[(y >= wave + height) & (y < wave + height + 200)] = WOV
    values = _values(growth_plate_heights(labels, mpp, TISSUE_CLASSES).measures)
    slope = 2 * np.pi * amplitude / wavelength * np.cos(2 * np.pi * x[0] / wavelength)
    normal_height = height * np.cos(np.arctan(slope)).mean()
    assert values["Hypertrophic zone height"] == pytest.approx(normal_height, rel=0.02)
    assert values["Resting and proliferative zone height"] == pytest.approx(
        200 * normal_height / height, rel=0.02
    )


def test_the_steps_of_a_tile_map_do_not_tilt_the_heights():
    cell_um, labels = 128.0, np.full((30, 40), MES, dtype=np.uint8)
    for start, stop, top in ((2, 14, 8), (14, 26, 10), (26, 38, 9)):  # a plate in three steps
        labels[top - 6 : top, start:stop] = HYA
        labels[top : top + 3, start:stop] = HYP
        labels[top + 3 : top + 8, start:stop] = WOV
    measured = growth_plate_heights(labels, cell_um, TISSUE_CLASSES)
    values = _values(measured.measures)
    assert values["Hypertrophic zone height"] == pytest.approx(3 * cell_um, rel=0.1)
    assert values["Resting and proliferative zone height"] == pytest.approx(6 * cell_um, rel=0.1)
    for (x0, y0), (x1, y1) in measured.heights["Hypertrophic zone"]:
        assert abs(x1 - x0) < np.sin(np.radians(15)) * np.hypot(x1 - x0, y1 - y0)  # near vertical


def test_only_hyaline_cartilage_touching_the_hypertrophic_zone_counts():
    labels = _plate(10.0, 120, 200)
    labels[labels == LAM] = HYA  # articular cartilage now joins the growth plate's
    values = _values(growth_plate_heights(labels, 2.0, TISSUE_CLASSES).measures)
    assert values["Resting and proliferative zone height"] == pytest.approx(550, rel=0.02)
    labels = _plate(10.0, 120, 200)
    left = np.arange(1200)[None, :] < 400
    labels[(labels == WOV) & left] = HYA  # hyaline on both sides: the side most lines find wins
    values = _values(growth_plate_heights(labels, 2.0, TISSUE_CLASSES).measures)
    assert values["Resting and proliferative zone height"] == pytest.approx(200, rel=0.02)
    assert values["Resting and proliferative zone height SD"] < 4


def test_no_plate_without_enough_hypertrophic_zone_or_without_a_band():
    labels = np.full((300, 300), MES, dtype=np.uint8)
    labels[100:130, 100:130] = HYP  # 60 µm square: 0.0036 mm²
    assert growth_plate_heights(labels, 2.0, TISSUE_CLASSES).measures == []
    labels[50:250, 50:250] = HYP  # 0.16 mm², but as tall as it is long
    assert growth_plate_heights(labels, 2.0, TISSUE_CLASSES).measures == []
    measured = measure_slide(labels, 2.0, TISSUE_CLASSES)
    assert not any("height" in m.name for m in measured.measures)
    assert measured.heights == {}


def _callus(mpp: float = 4.0):
    """A callus (ellipse, 1.2 x 0.8 mm) crossed by an old cortex, with a square of hyaline
    cartilage, one of hypertrophic chondrocytes and one of woven bone inside and a square of
    hyaline cartilage on its edge; the marrow canal's woven bone runs beside it."""
    y, x = _centres(500, mpp)
    labels = np.full(y.shape, MES, dtype=np.uint8)
    labels[np.abs(y) < 150] = WOV  # canal
    ellipse = (x / 600) ** 2 + (y / 400) ** 2 < 1
    labels[ellipse] = CAL
    labels[np.abs(y - 200) < 40] = LAM  # cortex, through the callus
    labels[180:230, 150:200] = HYA
    labels[240:260, 300:320] = HYP
    labels[200:240, 230:270] = WOV
    edge = np.zeros_like(ellipse)
    edge[150:180, 315:345] = True  # straddles the ellipse's upper edge (row 163 there)
    labels[edge & ellipse] = HYA
    return labels, ellipse, edge


def test_callus_fractions_are_its_tissues_within_its_outline():
    labels, ellipse, edge = _callus()
    measured = callus_measures(labels, 4.0, TISSUE_CLASSES)
    region = ellipse & (labels != LAM)
    # exact but on the island at the edge, which the outline spans (by arcs of the closing's
    # disc, so a sliver along the edge stays out)
    np.testing.assert_array_equal(measured.callus & ~edge, region & ~edge)
    assert (measured.callus & edge).sum() > 0.8 * (region & edge).sum()
    assert not (measured.callus & edge & ~ellipse).any()
    values = _values(measured.measures)
    total = measured.callus.sum()
    assert values["Total callus area"] == pytest.approx(total * 16e-6)
    cartilage = 50 * 50 + 20 * 20 + (measured.callus & edge).sum()
    assert values["Cartilage fraction of callus"] == pytest.approx(cartilage / total)
    assert values["Woven bone fraction of callus"] == pytest.approx(40 * 40 / total)
    fibrous = (labels[region] == CAL).sum()
    assert values["Fibrous tissue fraction of callus"] == pytest.approx(fibrous / total)
    assert sum(v for k, v in values.items() if "fraction" in k) == pytest.approx(1)
    symbols = {m.name: m.symbol for m in measured.measures}
    assert symbols["Total callus area"] == "Cl.Ar"
    assert symbols["Cartilage fraction of callus"] == "Cg.Ar/Cl.Ar"


def test_a_drawn_callus_outline_is_the_callus_region():
    labels, ellipse, _ = _callus()
    roi = ellipse.copy()
    roi[:, :250] = False  # the callus's right half, drawn by hand
    measured = callus_measures(labels, 4.0, TISSUE_CLASSES, roi=roi)
    np.testing.assert_array_equal(measured.callus, roi & (labels != LAM))
    values = _values(measured.measures)
    cartilage = (roi & np.isin(labels, [HYA, HYP])).sum()
    assert values["Cartilage fraction of callus"] == pytest.approx(
        cartilage / measured.callus.sum()
    )
    assert values["Woven bone fraction of callus"] == pytest.approx(20 * 40 / measured.callus.sum())


def test_no_callus_measures_without_callus():
    labels = _plate(0.0, 120, 200)
    measured = measure_slide(labels, 2.0, TISSUE_CLASSES)
    assert measured.callus is None
    assert not any("callus" in m.name for m in measured.measures)
    labels[:5, :5] = CAL  # a few misread pixels are no callus
    assert callus_measures(labels, 2.0, TISSUE_CLASSES).measures == []


def test_composition_areas_in_mm2_and_fractions_of_tissue():
    labels = np.full((100, 200), 255, dtype=np.uint8)
    labels[:, :50] = WOV
    labels[:, 50:80] = LAM
    labels[:, 80:100] = HYP
    labels[:, 100:120] = HYA
    measures = measure_map(labels, 10.0, TISSUE_CLASSES)  # 1 px = 1e-4 mm²
    values = _values(measures)
    assert values["Tissue area"] == pytest.approx(1.2)
    assert values["Woven bone area"] == pytest.approx(0.5)
    assert values["Woven bone fraction"] == pytest.approx(50 / 120)
    assert values["Bone area"] == pytest.approx(0.8)
    assert values["Bone fraction"] == pytest.approx(80 / 120)
    assert values["Cartilage fraction"] == pytest.approx(40 / 120)
    assert values["Callus fraction"] == 0
    symbols = {m.name: (m.symbol, m.unit) for m in measures}
    assert symbols["Tissue area"] == ("T.Ar", "mm2")
    assert symbols["Bone fraction"] == ("B.Ar/T.Ar", "1")
    assert symbols["Woven bone area"] == ("Wo.B.Ar", "mm2")
    assert symbols["Mesenchyme fraction"] == (None, "1")
    assert Measure("Tissue area", "T.Ar", 1.2, "mm2").to_dict() == {
        "name": "Tissue area",
        "symbol": "T.Ar",
        "value": 1.2,
        "unit": "mm2",
    }


def test_a_region_of_interest_restricts_every_measure():
    labels = np.full((100, 200), WOV, dtype=np.uint8)
    labels[:, 100:] = HYA
    roi = np.zeros(labels.shape, dtype=bool)
    roi[:50, 50:150] = True
    values = _values(measure_map(labels, 10.0, TISSUE_CLASSES, roi=roi))
    assert values["Tissue area"] == pytest.approx(0.5)
    assert values["Bone fraction"] == pytest.approx(0.5)


def test_an_empty_map_has_no_tissue_and_no_sites():
    labels = np.full((64, 64), 255, dtype=np.uint8)
    measured = measure_slide(labels, 1.0, TISSUE_CLASSES)
    values = _values(measured.measures)
    assert values["Tissue area"] == 0 and values["Bone fraction"] == 0
    assert measured.callus is None and measured.heights == {}
    assert len(measured.measures) == 1 + 2 * len(TISSUE_CLASSES) + 4


@pytest.mark.parametrize(
    ("labels", "roi", "message"),
    [
        (np.zeros((4, 4), dtype=np.int64), None, "uint8 class map"),
        (np.full((4, 4), 9, dtype=np.uint8), None, "class index 9"),
        (np.zeros((4, 4), dtype=np.uint8), np.ones((3, 3), dtype=bool), "region of interest"),
    ],
)
def test_bad_maps_are_refused(labels, roi, message):
    with pytest.raises(BadInputError, match=message):
        measure_map(labels, 1.0, TISSUE_CLASSES, roi=roi)


def test_mode_downsample_keeps_the_most_frequent_label_of_each_block():
    labels = np.array([[1, 1, 2, 255, 4], [1, 3, 255, 255, 4], [5, 5, 0, 0, 4]], dtype=np.uint8)
    np.testing.assert_array_equal(
        mode_downsample(labels, 2), np.array([[1, 255, 4], [5, 0, 255]], dtype=np.uint8)
    )
