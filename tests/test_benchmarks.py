"""scripts/benchmarks/: every subcommand's flags reach its benchmark's `run`, the cheap
benchmarks return the figures they promise at tiny sizes (as JSON-ready data that `report`
prints the same after a round trip), and `all` builds its table from figures."""

import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from benchmarks import command, table  # noqa: E402  (scripts/ is not a package)
from benchmarks.finemap import on_grid, scores, truth_grid  # noqa: E402
from benchmarks.styles import region_tiles  # noqa: E402
from benchmarks.variety import lowest_pairwise_mad  # noqa: E402

WITH_MODEL = (
    "agreement", "classify", "real", "finetune", "real-finetune", "finemap", "measures", "scales",
    "styles",
)  # fmt: skip
MINIMAL = {name: ["--model", "M"] for name in WITH_MODEL}
"""The required flags of the subcommands that have any."""


@pytest.mark.parametrize("name", sorted(command.MODULES))
def test_every_subcommand_parses_into_exactly_its_benchmarks_run_parameters(name):
    args = command.build_parser().parse_args([name, *MINIMAL.get(name, [])])
    options = set(vars(args)) - set(command.NOT_OPTIONS)
    parameters = inspect.signature(command.module(name).run).parameters
    required = {key for key, p in parameters.items() if p.default is inspect.Parameter.empty}
    assert required <= options <= set(parameters)


def _figures(argv: list[str]) -> dict:
    """Run a benchmark through the command's own path; check its figures survive JSON."""
    figures, text = command.run(argv)
    again = json.loads(json.dumps(figures))
    assert again == figures and isinstance(figures["what"], str)
    assert command.module(argv[0]).report(again) == text
    return figures


def test_synth_times_the_tile_command():
    figures = _figures(["synth", "--per-class", "1", "--workers", "1"])
    assert figures["tiles"] == 6 and figures["seconds"] > 0
    assert figures["tiles_per_s"] == pytest.approx(6 / figures["seconds"])


def test_colour_baseline_scores_both_models_on_the_unseen_labs():
    figures = _figures(["colour-baseline", "--per-class", "3", "--test-per-class", "2",
                        "--domains", "2", "--test-domains", "2", "--workers", "1"])  # fmt: skip
    assert figures["fit"] == {"tiles": 18, "seed": 0, "domains": 2}
    assert figures["test"] == {"tiles": 12, "seed": 1, "domains": 2}
    for score in figures["models"].values():
        assert 0 <= score["macro_accuracy"] <= 1 and 0 <= score["fitted_macro_accuracy"] <= 1
        assert np.array(score["confusion"]).shape == (6, 6)
        assert np.sum(score["confusion"]) == 12


def test_styles_counts_every_tile_of_each_seeds_region(tiny_model):
    figures = _figures(["styles", "--model", str(tiny_model), "--count", "2", "--canvases", "1"])
    assert [s["seed"] for s in figures["seeds"]] == [101, 102]
    for seed in figures["seeds"]:  # a 512 µm canvas in 64 µm tiles
        assert seed["tiles"] == 64 and sum(seed["called"].values()) == 64
        assert seed["right"] == seed["called"].get("woven_bone", 0) / 64


def test_a_slide_seed_paints_its_region_alike_each_time_and_unlike_another_seed(tiny_model):
    from ossiclass.predict import Predictor

    predictor = Predictor(tiny_model)
    first = region_tiles(predictor, "woven_bone", 101, 1)
    assert np.array_equal(first, region_tiles(predictor, "woven_bone", 101, 1))
    assert not np.array_equal(first, region_tiles(predictor, "woven_bone", 102, 1))


def test_the_lowest_pairwise_difference_is_the_exact_minimum():
    images = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    images[7] = np.clip(images[3].astype(int) + 2, 0, 255)  # the nearest pair: 3 and 7
    flat = images.reshape(len(images), -1).astype(float)
    exact = min(
        (np.abs(flat[i] - flat[j]).mean(), (i, j)) for i in range(12) for j in range(i + 1, 12)
    )
    lowest, pair = lowest_pairwise_mad(images)
    assert pair == exact[1] == (3, 7) and lowest == pytest.approx(exact[0])


def test_finemap_scores_a_map_one_cell_off_the_boundary():
    # 8 µm cells: glass, then class 0 up to column 10, class 1 from there; the map's 1 from 11.
    truth = np.zeros((10, 20), np.uint8)
    truth[:, 10:] = 1
    truth[:, :2] = 255
    predicted = truth.copy()
    predicted[:, 10] = 0
    found = scores(truth, predicted, 8.0, band_um=16, tolerance_um=8)
    assert found["accuracy"] == round(170 / 180, 4) and found["coverage"] == 1.0
    assert found["band_cells"] == 60 and found["band_accuracy"] == round(50 / 60, 4)
    assert found["boundary_f"] == 1.0  # every boundary cell within 8 µm of the other's
    strict = scores(truth, predicted, 8.0, band_um=16, tolerance_um=4)
    assert strict["boundary_precision"] == strict["boundary_recall"] == strict["boundary_f"] == 0.5
    assert scores(truth, np.full_like(truth, 255), 8.0, 16, 8)["accuracy"] is None


def test_finemap_reads_masks_and_maps_on_one_grid():
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 5:] = 255  # the right cell is mostly glass (3 of 4 columns)
    mask[:1, :4] = 3  # a quarter of the top left cell: its majority is still 0
    assert truth_grid(mask, 4).tolist() == [[0, 255], [0, 255]]
    coarse = np.array([[1, 2], [3, 4]], np.uint8)  # 8 px cells read on 4 px cells
    assert on_grid(coarse, 8, (4, 4), 4).tolist() == [[1, 1, 2, 2]] * 2 + [[3, 3, 4, 4]] * 2


def test_variety_finds_a_pair_in_every_class():
    figures = _figures(["variety", "--per-class", "3", "--domains", "2", "--workers", "1"])
    assert len(figures["classes"]) == 6
    for closest in figures["classes"].values():
        assert closest["tiles"] == 3 and closest["lowest_mad"] > 0
        assert 0 <= closest["pair"][0] < closest["pair"][1] < 3


def test_stain_rates_every_normaliser_against_torchstain(tmp_path):
    figures = _figures(["stain", "--tiles", "4", "--tile-px", "128", "--real", str(tmp_path)])
    assert len(figures["tiles_per_s"]) == 5 and min(figures["tiles_per_s"].values()) > 0
    agreement = figures["torchstain_agreement"]  # scikit-image's IHC image alone here
    assert agreement["real_tiles"] == 0 and 0 <= agreement["mean_mad"] <= agreement["largest_mad"]


def test_the_table_is_written_from_figures_with_temporary_paths_named():
    figures = {
        "rows": [
            {"what": "training", "command": None, "text": "12 s wall; macro-F1 0.9"},
            {"what": "a benchmark", "command": "python scripts/benchmark.py synth",
             "text": "line | one\n  line two /tmp/tmpab12/x\nbaseline: three"},
        ],
        "ablation": [{"normalisation": "none", "augmentation": "none", "training_seconds": 9.6,
                      "evaluation": "F1 0.8", "agreement": ["0.990", "0.980"], "overrides": []}],
    }  # fmt: skip
    lines = table.report(figures).splitlines()
    assert lines[2] == "| training | 12 s wall; macro-F1 0.9 |"
    assert lines[3] == (
        "| a benchmark (`python scripts/benchmark.py synth`) "
        "| line / one<br>line two TMP/x<br>baseline: three |"
    )
    assert lines[-1] == "| none | none | 10 s | F1 0.8 | 0.990 / 0.980 | `(none)` |"


def test_a_benchmark_of_its_own_process_returns_its_figures_through_json():
    figures, text = table.figures_of(["slide", "--size", "1024", "--workers", "1"])
    assert figures["size_px"] == 1024 and figures["peak_rss_mb"] > 0 and figures["tiff_mb"] > 0
    shares = sum(figures["label_fractions"].values()) + figures["background"]
    assert shares == pytest.approx(1.0)
    assert text == command.module("slide").report(figures)


def test_a_failing_benchmark_leaves_a_note_in_its_row(tmp_path):
    (tmp_path / "labels.tsv").write_text("")
    figures, text = table.figures_of(["real", "--model", str(tmp_path / "none.pt"),
                                      "--reference", str(tmp_path)])  # fmt: skip
    assert figures is None and text.startswith("failed: ") and "none.pt" in text
    # One run in a process of its own: figures come back through --json, or its error.
    figures, text = table.figures_of(["slide", "--layout", "no_such_layout", "--size", "64"])
    assert figures is None and text.startswith("failed: ")
