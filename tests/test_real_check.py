"""scripts/benchmarks/real.py: the label table, the cutting at the model's scale, and the figures on
the shared real tiles (skipped where they are absent)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ossiclass.bundle import ModelSettings
from ossiclass.errors import BadInputError
from ossiclass.preprocessing import Preprocessing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from benchmarks import real  # noqa: E402  (scripts/ is not a package)


def _model(mpp: float, input_px: int = 32) -> ModelSettings:
    return ModelSettings("resnet18", Preprocessing(mpp, input_px))


def _field(folder: Path, rows: list[str]) -> Path:
    """A 400 x 300 px field: tissue on the left 200 px, glass on the right, and labels.tsv."""
    image = np.full((300, 400, 3), 245, np.uint8)
    image[:, :200] = (200, 110, 150)
    Image.fromarray(image).save(folder / "field.png")
    (folder / "labels.tsv").write_text("# file\tbox\tmpp\tlabel\n" + "\n".join(rows) + "\n")
    return folder


def test_fields_are_cut_at_the_models_scale_and_glass_tiles_left_out(tmp_path):
    folder = _field(tmp_path, ["field.png\t\t0.5\tlamellar_bone"])
    (field,) = real.read_fields(folder)
    assert field.label == "lamellar_bone" and field.box is None and field.mpp == 0.5
    # At 1 µm/px the field is 200 x 150 px, 4 rows of 6 tiles of 32 px: the 3 on the tissue
    # half of each row are kept; the one across the edge (an eighth tissue) and glass are not.
    tiles = real.cut_field(field, _model(1.0))
    assert tiles.shape == (4 * 3, 32, 32, 3)
    assert real.cut_field(field, _model(0.5)).shape[0] == 9 * 6


def test_a_box_restricts_the_field(tmp_path):
    folder = _field(tmp_path, ["field.png\t0,0,100,64\t1.0\thyaline_cartilage"])
    (field,) = real.read_fields(folder)
    assert field.box == (0, 0, 100, 64)
    assert real.cut_field(field, _model(1.0)).shape[0] == 3 * 2


@pytest.mark.parametrize(
    "row",
    ["field.png\t\t0.5", "field.png\t\tabout\tlamellar_bone", "field.png\t\t0.5\tmarrow",
     "field.png\t1,2,3\t0.5\tlamellar_bone", "field.png\t50,0,10,64\t0.5\tlamellar_bone",
     "field.png\t\t0\tlamellar_bone"],
)  # fmt: skip
def test_a_malformed_label_table_names_its_line(tmp_path, row):
    folder = _field(tmp_path, [row])
    with pytest.raises(BadInputError, match=r"labels.tsv:2"):
        real.read_fields(folder)


def test_without_the_shared_folder_the_check_says_why_it_skips(tmp_path):
    assert "skipped" in real.missing_reason(tmp_path)
    figures = real.run(model=tmp_path / "no-model.pt", reference=tmp_path, per_class=1)
    assert real.report(figures) == f"real check {real.missing_reason(tmp_path)}"
    folder = _field(tmp_path, [])
    assert real.missing_reason(folder) is None
    with pytest.raises(BadInputError, match="no labelled fields"):
        real.read_fields(folder)


def test_the_labelled_real_fields_cut_into_cartilage_and_bone_tiles(reference_he):
    tiles, labels, groups = real.real_tiles(reference_he, _model(1.0, 128))
    assert set(labels) == {"hyaline_cartilage", "lamellar_bone"}
    assert len(set(groups[labels == "hyaline_cartilage"])) == 2
    assert len(set(groups[labels == "lamellar_bone"])) == 8
    assert tiles.shape[1:] == (128, 128, 3) and len(tiles) == len(labels) > 300
