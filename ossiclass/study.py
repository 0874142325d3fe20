"""A study: the slides of a manifest classified, measured and compared by group.

`run_study` reads the manifest (a `slide` column, paths relative to it, plus any columns the lab
keeps: animal, group, day, ...; a `roi` column names a QuPath GeoJSON of the region to measure
in), classifies each slide not yet classified into `OUT/slides/<stem>/` with `classify` (a
slide interrupted midway resumes with classify's own `resume`), and writes `slides.csv` (the
manifest's columns and a column per measure), `groups.csv` (n, mean, SD per group and
measure), a plot per measure and, given the lab's manual measures of the same slides,
`agreement.json` with a Bland-Altman plot per measure.

Spread over processes: one Lightning Fabric DDP run (`devices`, `num_nodes`) in which process r
of w classifies the slides i with i % w == r, each on its own device; every slide is its own
resumable classify run, so none is lost or done twice, and after a barrier the first process
reads every slide's summary and writes the tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from lightning_fabric import Fabric
from lightning_fabric.utilities.exceptions import MisconfigurationException
from tqdm import tqdm

from ossiclass import outputs, study_plots
from ossiclass.agreement import bland_altman, describe, icc_2_1
from ossiclass.bundle import load_bundle
from ossiclass.classes import machine_name
from ossiclass.classify import Running, Tiling, classify, cluster_launched
from ossiclass.errors import BadInputError, OssiclassError
from ossiclass.files import check_output, write_text_atomic
from ossiclass.manifest import (
    ANIMAL,
    DAY,
    Manifest,
    Manual,
    group_columns,
    groups,
    read_manifest,
    read_manual,
)
from ossiclass.qupath import read_region
from ossiclass.slide_report import summary_classes

STUDY_FILE = "study.json"
"""OUT's record of the model and settings the slides were classified with."""


@dataclass
class Study:
    """What a study run did and wrote: slides classified now, already done, failed (stem ->
    message), the groups' one-line summaries, notes, and the files written."""

    classified: int
    already_done: int
    failed: dict[str, str]
    groups: list[str]
    notes: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


def slide_measures(summary: dict) -> list[dict]:
    """A slide's measures, each {"name", "symbol", "value", "unit"}: the `histomorphometry`
    list of its summary where present, otherwise each class's share of the tiles ("<Display
    name> fraction", unit "1") and area ("<Display name> area", "mm2", slides only) from its
    composition. The one place that knows where measures come from."""
    if "histomorphometry" in summary:
        return summary["histomorphometry"]
    measures = []
    for tissue in summary_classes(summary):
        row = summary["classes"].get(tissue.name, {})
        measures.append(
            {"name": f"{tissue.display_name} fraction", "symbol": None,
             "value": row.get("fraction"), "unit": "1"}
        )  # fmt: skip
        if "area_mm2" in row:
            measures.append(
                {"name": f"{tissue.display_name} area", "symbol": None,
                 "value": row["area_mm2"], "unit": "mm2"}
            )  # fmt: skip
    return measures


def measure_column(measure: dict) -> str:
    """A measure's column in slides.csv: its name and unit, `Hypertrophic zone height (µm)`;
    a fraction (unit "1") by its name alone."""
    unit = measure.get("unit")
    return measure["name"] if unit in (None, "", "1") else f"{measure['name']} ({unit})"


def run_study(
    manifest_path: str | Path,
    model: str | Path,
    out: str | Path,
    tiling: Tiling | None = None,
    running: Running | None = None,
    by: list[str] | None = None,
    manual: str | Path | None = None,
    num_nodes: int = 1,
    progress: bool = True,
) -> Study | None:
    """Classify, measure and summarise the slides of the manifest CSV at `manifest_path` under
    `out` (see the module).

    `running.devices` processes per node (`num_nodes` nodes) share the slides; each runs
    classify on one device. Returns what was done on the first process, None on the others.
    Everything a user gives is checked before any slide is classified.
    """
    tiling, running = tiling or Tiling(), running or Running()
    tiling.validate()
    running.validate()
    study = read_manifest(manifest_path)
    columns = group_columns(study, by)
    measured_by_hand = read_manual(manual, study) if manual is not None else None
    out, model = check_output(Path(out), folder=True), Path(model)
    load_bundle(model)  # a bad model is one line now, not a failure per slide
    for roi in filter(None, study.rois):
        read_region(roi)  # so is a bad region file
    record = {
        "model_sha256": outputs.sha256(model),
        "tiling": asdict(tiling),
        "precision": running.precision,
    }
    _check_record(out, record)
    fabric = _fabric(running, num_nodes)
    work = (study, model, out, record, tiling, running, columns, measured_by_hand, progress)
    return fabric.launch(_study_process, *work)


def _study_process(
    fabric: Fabric, study: Manifest, model: Path, out: Path, record: dict, tiling: Tiling,
    running: Running, columns: tuple[str, ...], manual: Manual | None, progress: bool,
) -> Study | None:  # fmt: skip
    """One process's share of the slides, then (on the first) the tables."""
    rank, world = fabric.global_rank, fabric.world_size
    if rank == 0:
        (out / "slides").mkdir(parents=True, exist_ok=True)
        outputs.write_json(out / STUDY_FILE, record)
    device = fabric.device
    own = replace(running, devices=1, device_index=None if device.type == "cpu" else device.index)
    mine = range(rank, len(study.slides), world)
    done, failed = 0, {}
    for index in tqdm(mine, desc="study", unit="slide", disable=not (progress and rank == 0)):
        folder = study.folder(out, index)
        finished = _complete(folder)
        try:
            classify(study.slides[index], model, folder, tiling, own, resume=True,
                     progress=False, roi=study.rois[index])  # fmt: skip
        except OssiclassError as error:  # reported at the end; the other slides go on
            failed[folder.name] = str(error)
        else:
            done += finished
    shares = [(done, failed)]
    if world > 1:  # also the barrier: every slide is finished before the tables are read
        shares = [None] * world
        torch.distributed.all_gather_object(shares, (done, failed))
    if rank != 0:
        return None
    already = sum(share[0] for share in shares)
    failures = {stem: message for share in shares for stem, message in share[1].items()}
    result = Study(len(study.slides) - already - len(failures), already, failures, [])
    _write_tables(study, out, columns, manual, result)
    return result


def _write_tables(
    study: Manifest, out: Path, columns: tuple[str, ...], manual: Manual | None, result: Study
) -> None:
    """slides.csv, groups.csv, the plots and, with manual measures, agreement.json."""
    folders = [study.folder(out, i) for i in range(len(study.slides))]
    measured = [[] if f.name in result.failed else _measures_of(f) for f in folders]
    described = {}  # slides.csv column -> the measure (name, symbol, unit) that first names it
    for measures in measured:
        for measure in measures:
            described.setdefault(measure_column(measure), measure)
    clash = [column for column in described if column in study.columns]
    if clash:
        raise BadInputError(
            f"{study.path}: the column {clash[0]!r} is also a measure's column in slides.csv; "
            "rename it (a lab's own measures go in --manual); the classified slides are kept"
        )
    # Every figure comes from the values as slides.csv shows them: groups.csv and the
    # agreement can be checked from it, to the digit.
    values = [
        {measure_column(m): _significant(m.get("value")) for m in measures} for measures in measured
    ]
    table = [
        {**row, **{c: _text(v.get(c)) for c in described}}
        for row, v in zip(study.rows, values, strict=True)
    ]
    result.written.append(_write_csv(out / "slides.csv", [*study.columns, *described], table))
    grouped = groups(study, columns)
    rows = []
    for key, members in grouped.items():
        stats = {c: describe(_present(values, members, c)) for c in described}
        name = ", ".join(f"{c} {v}" for c, v in zip(columns, key, strict=True)) or "all slides"
        result.groups.append(
            f"{name}: {len(members)} slide{'s' * (len(members) > 1)}; " + _first_means(stats)
        )
        rows += [
            {**dict(zip(columns, key, strict=True)), "measure": column,
             "symbol": described[column].get("symbol") or "", "n": n, "mean": _text(mean),
             "sd": _text(sd)}
            for column, (n, mean, sd) in stats.items()
        ]  # fmt: skip
    header = [*columns, "measure", "symbol", "n", "mean", "sd"]
    result.written.append(_write_csv(out / "groups.csv", header, rows))
    (out / "plots").mkdir(exist_ok=True)
    result.written += _plots(study, out / "plots", columns, grouped, described, values)
    if manual is not None:
        result.written.append(_agreement(study, out, described, values, manual, result))


def _plots(
    study: Manifest, folder: Path, columns: tuple[str, ...], groups: dict, described: dict,
    values: list[dict],
) -> list[Path]:  # fmt: skip
    """A plot per measure: its values by group, by day on the x axis where the groups have a
    day, a point per slide marked by animal."""
    day = columns.index(DAY) if DAY in columns else None

    def series(key: tuple[str, ...]) -> str:
        return ", ".join(v for i, v in enumerate(key) if i != day)

    def position(key: tuple[str, ...]) -> str:
        return key[day] if day is not None else series(key)

    slide_keys = [tuple(row[c] for c in columns) for row in study.rows]
    cells = study_plots.Cells(
        positions=[position(key) for key in slide_keys],
        series=[series(key) for key in slide_keys],
        animals=[row.get(ANIMAL, "") for row in study.rows],
        position_order=list(dict.fromkeys(map(position, groups))),
        series_order=list(dict.fromkeys(map(series, groups))),
        x_label=DAY if day is not None else ", ".join(columns),
        series_title=", ".join(c for i, c in enumerate(columns) if i != day),
    )
    written = []
    for column in described:
        column_values = [v.get(column) for v in values]
        if any(v is not None for v in column_values):
            path = folder / f"{machine_name(column)}.png"
            written.append(study_plots.measure_figure(path, column, column_values, cells))
    return written


def _agreement(
    study: Manifest, out: Path, described: dict, values: list[dict], manual: Manual,
    result: Study,
) -> Path:  # fmt: skip
    """agreement.json and a Bland-Altman plot per measure the manual CSV shares with the
    study (by slides.csv column or measure name): ossiclass minus manual."""
    by_name = {m["name"]: column for column, m in described.items()}
    matched = {c: (c if c in described else by_name.get(c)) for c in manual.columns}
    ignored = [c for c, column in matched.items() if column is None]
    if ignored:
        result.notes.append(f"manual columns that match no measure, ignored: {', '.join(ignored)}")
    if len(ignored) == len(matched):
        raise BadInputError(
            f"{manual.path}: no column names a measure of slides.csv ({', '.join(described)}; "
            "or their names without the unit)"
        )
    stems = [slide.stem for slide in study.slides]
    reports = []
    for manual_column, column in matched.items():
        if column is None:
            continue
        theirs_by_stem = manual.values(manual_column)
        pairs = [
            (values[i][column], theirs_by_stem[stem])
            for i, stem in enumerate(stems)
            if stem in theirs_by_stem and values[i].get(column) is not None
        ]
        report = {"measure": column, "manual_column": manual_column,
                  "unit": described[column].get("unit"), "n": len(pairs)}  # fmt: skip
        if len(pairs) < 2:
            reports.append({**report, "note": "fewer than 2 slides measured both ways"})
            continue
        ours, theirs = (list(side) for side in zip(*pairs, strict=True))
        figures = bland_altman(ours, theirs)
        plot = out / "plots" / f"bland_altman_{machine_name(column)}.png"
        result.written.append(study_plots.bland_altman_figure(plot, column, ours, theirs, figures))
        icc = icc_2_1(list(zip(ours, theirs, strict=True)))
        reports.append(
            {**report, "icc_2_1": None if math.isnan(icc) else round(icc, 4),
             **{k: float(f"{v:.6g}") for k, v in asdict(figures).items() if k != "n"},
             "plot": str(plot.relative_to(out))}
        )  # fmt: skip
    content = {
        "differences": "ossiclass minus manual",
        "icc": "ICC(2,1): two-way random effects, absolute agreement, single measures",
        "limits": "bias -/+ 1.96 SD of the differences (sd: ddof=1)",
        "measures": reports,
    }
    outputs.write_json(out / "agreement.json", content)
    return out / "agreement.json"


def _check_record(out: Path, record: dict) -> None:
    """Refuse an OUT whose slides were classified with another model or other settings, or
    that holds a classify run."""
    path = out / STUDY_FILE
    if not path.exists():
        if (out / "summary.json").exists():  # the study's tables would mix with a slide's
            raise BadInputError(f"{out}: holds a classify run, not a study; use another folder")
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BadInputError(
            f"{path}: not a study's record ({error}); use another output folder"
        ) from None
    # A setting added since the study began counts as its default (so `refine`, False).
    if isinstance(stored, dict) and isinstance(stored.get("tiling"), dict):
        stored["tiling"] = asdict(Tiling()) | stored["tiling"]
    if stored != record:
        raise BadInputError(
            f"{out}: holds a study classified with another model or other settings; "
            "use another output folder"
        )


def _fabric(running: Running, num_nodes: int) -> Fabric:
    """The processes of the study: `running.devices` per node, DDP where more than one. Over
    several nodes, only where a launcher says which node this is: without one, the first node
    would wait for the others for ever."""
    if num_nodes > 1 and not cluster_launched():
        raise BadInputError(
            f"--num-nodes {num_nodes}: start the command on each node under srun or torchrun, "
            "or with MASTER_ADDR, MASTER_PORT and NODE_RANK set"
        )
    try:
        return Fabric(
            accelerator=running.accelerator,
            devices=running.devices,
            num_nodes=num_nodes,
            strategy="ddp" if running.devices * num_nodes > 1 else "auto",
        )
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0]
        raise BadInputError(
            f"accelerator {running.accelerator!r} with {running.devices} devices: {reason}"
        ) from None


def _complete(folder: Path) -> bool:
    """A slide classified to the end (classify's `resume` leaves it as it is)."""
    return (folder / "summary.json").exists() and not (folder / "parts").exists()


def _measures_of(folder: Path) -> list[dict]:
    """The measures of a slide classified to the end; none for one left unfinished."""
    if not _complete(folder):
        return []
    return slide_measures(json.loads((folder / "summary.json").read_text()))


def _present(values: list[dict], members: list[int], column: str) -> list[float]:
    """The values of a measure that the slides `members` have."""
    return [values[i][column] for i in members if values[i].get(column) is not None]


def _first_means(stats: dict) -> str:
    """'<measure> mean ± SD' of the first four measures, for a group's line."""
    shown = [
        f"{column} {mean:.4g}" + ("" if sd is None else f" ± {sd:.2g}")
        for column, (_, mean, sd) in list(stats.items())[:4]
        if mean is not None
    ]
    return ", ".join(shown) + (", ..." if len(stats) > 4 else "")


def _significant(value: float | None) -> float | None:
    """A measure's value to the 6 significant digits slides.csv writes."""
    return None if value is None else float(f"{value:.6g}")


def _text(value: float | None) -> str:
    """A value as slides.csv and groups.csv write it: 6 significant digits, blank for none."""
    return "" if value is None else f"{value:.6g}"


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return path
