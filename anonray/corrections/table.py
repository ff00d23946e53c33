"""The corrections table: one row per entry of a corrections file (or page action), approvals included.

``_anonray/corrections/part-<run_id>.parquet`` (schema ``CORRECTIONS_SCHEMA`` in tables.py), append-only:
each apply writes a part of its own and never rewrites an earlier one. Rows name the reviewer, their
comments and, for drawn regions, coordinates: the folder is private (0700) like ``regions``. No Ray here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from anonray.corrections.spec import Correction, correction_json
from anonray.records.regions import output_run
from anonray.records.tables import read_table, table_dir, write_part
from anonray.store.private_dirs import ensure_private_dir

CORRECTIONS_TABLE = "corrections"


def correction_id(run_id: str, position: int) -> str:
    """The id of the entry at ``position`` (0-based) of the file applied by run ``run_id``."""
    return f"{run_id}-{position + 1:04d}"


def correction_row(run_id: str, position: int, correction: Correction, reviewer: str, time_utc: dt.datetime,
                   output_row: Mapping[str, Any]) -> dict[str, Any]:
    """One entry's row; ``output_row`` is the videos row of the output it corrects."""
    return {
        "correction_id": correction_id(run_id, position), "run_id": run_id,
        "corrects_run_id": output_run(output_row), "reviewer": correction.reviewer or reviewer, "time_utc": time_utc,
        "action": correction.action, "path": correction.file, "video_id": output_row["video_id"],
        "sha256_in": output_row.get("sha256_in"), "fields_json": correction_json(correction),
        "reason": correction.reason, "comment": correction.comment,
    }


def write_corrections(state_dir: Path, run_id: str, rows: list[dict[str, Any]]) -> Path:
    """Append one apply's rows as a part of their own (the folder, when made here, is 0700)."""
    ensure_private_dir(table_dir(state_dir, CORRECTIONS_TABLE))
    final = table_dir(state_dir, CORRECTIONS_TABLE) / f"part-{run_id}.parquet"
    if final.exists():
        raise FileExistsError("corrections are append-only: this run's part exists already")
    return write_part(state_dir, CORRECTIONS_TABLE, run_id, rows)


def read_corrections(state_dir: Path) -> list[dict[str, Any]]:
    """Every correction recorded in the folder, oldest first."""
    rows = read_table(state_dir, CORRECTIONS_TABLE).to_pylist()
    return sorted(rows, key=lambda r: (r["time_utc"], r["correction_id"]))
