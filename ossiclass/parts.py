"""A run's finished chunks under `OUT/parts/`: what makes `classify` resumable. Each chunk is
one JSON file written atomically the moment it is classified, so a killed run leaves only whole
chunks; `job.json` identifies the run, so a resumed run never mixes in another one's chunks."""

from __future__ import annotations

import json
from pathlib import Path

from ossiclass.errors import BadInputError, OssiclassError
from ossiclass.files import write_text_atomic


def prepare(out: Path, job: dict, resume: bool) -> tuple[Path, set[int]]:
    """Create OUT/parts for a new run, or check it belongs to the same job on `resume`.
    Returns (parts folder, chunks already done)."""
    parts = out / "parts"
    job_file = parts / "job.json"
    try:
        if job_file.exists() and resume:
            if json.loads(job_file.read_text()) != job:
                raise BadInputError(
                    f"{out}: holds a run with other inputs or settings; use another output folder"
                )
        elif job_file.exists() or (out / "tiles.csv").exists():
            raise BadInputError(
                f"{out}: holds results already; resume to finish an interrupted run, "
                "or choose another output folder"
            )
        else:
            parts.mkdir(parents=True, exist_ok=True)
            write_text_atomic(job_file, json.dumps(job, indent=2))
    except OSError as error:
        raise OssiclassError(f"cannot write to {out}: {error.strerror or error}") from None
    return parts, done_chunks(parts)


def done_chunks(parts: Path) -> set[int]:
    """Chunks an earlier, interrupted run has written (each file is complete: atomic)."""
    return {int(path.stem.split("-")[1]) for path in parts.glob("chunk-*.json")}


def write_chunk(parts: Path, chunk: int, rows: list[dict], skipped: list[dict]) -> None:
    """One chunk's rows and the items it could not read, atomically."""
    write_text_atomic(
        parts / f"chunk-{chunk:06d}.json", json.dumps({"rows": rows, "skipped": skipped})
    )


def merge(parts: Path) -> tuple[list[dict], list[dict]]:
    """All chunks' (rows, skipped items), each in item order."""
    rows, skipped = [], []
    for path in sorted(parts.glob("chunk-*.json")):
        content = json.loads(path.read_text())
        rows += content["rows"]
        skipped += content["skipped"]
    rows.sort(key=lambda row: row["item"])
    skipped.sort(key=lambda row: row["item"])
    return rows, skipped
