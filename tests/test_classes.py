import pytest

from ossiclass.classes import CLASSES, TISSUE_CLASSES, class_index


def test_six_classes_in_the_documented_order():
    assert CLASSES == (
        "mesenchyme",
        "hyaline_cartilage",
        "hypertrophic_zone",
        "woven_bone",
        "lamellar_bone",
        "callus",
    )
    assert [c.index for c in TISSUE_CLASSES] == list(range(6))


def test_map_colours_are_distinct_and_valid():
    colours = [c.colour for c in TISSUE_CLASSES]
    assert len(set(colours)) == len(colours)
    assert all(0 <= v <= 255 for colour in colours for v in colour)
    assert TISSUE_CLASSES[4].hex_colour == "#e31a1c"


def test_class_index_names_the_choices_on_error():
    assert class_index("callus") == 5
    with pytest.raises(ValueError, match="mesenchyme"):
        class_index("marrow")
