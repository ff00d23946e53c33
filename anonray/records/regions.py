"""The per-frame mask regions of each rendered video: a restricted table beside the run records.

Render writes one Parquet part per video and run, ``_anonray/regions/part-<run_id>-<video_id>.parquet``
(schema ``REGIONS_SCHEMA`` in tables.py): every region that was masked, per presentation frame index,
in stored-frame pixels. They are what the review sheet draws and what a re-render would need.
Coordinates of faces and plates are personal data: this folder is as restricted as the rest of
``_anonray``, and ``review.keep_regions: false`` deletes a run's parts once its review sheet is written.
No Ray here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from anonray.layout import REGIONS_TABLE
from anonray.records.tables import REGIONS_SCHEMA, table_dir, write_part
from anonray.store.private_dirs import ensure_private_dir
from anonray.types import REGION_CLASS_NAMES, SHAPE_BOX, SHAPE_ELLIPSE, MaskPlan

SHAPE_NAMES = {SHAPE_ELLIPSE: "ellipse", SHAPE_BOX: "box"}


def part_name(run_id: str, video_id: str) -> str:
    """The part id of one video's regions in one run (file ``part-<run_id>-<video_id>.parquet``)."""
    return f"{run_id}-{video_id}"


def regions_table(run_id: str, video_id: str, plan: MaskPlan) -> pa.Table:
    """A MaskPlan as rows of the regions table, ordered by frame index."""
    order = np.argsort(plan.frame_index, kind="stable")
    n = len(order)
    xyxy = plan.xyxy[order].astype(np.float32).reshape(-1, 4)
    columns = {
        "run_id": pa.array([run_id] * n, pa.string()),
        "video_id": pa.array([video_id] * n, pa.string()),
        "frame_index": pa.array(plan.frame_index[order].astype(np.int64)),
        "class_name": pa.array([REGION_CLASS_NAMES[int(c)] for c in plan.cls[order]], pa.string()),
        "shape": pa.array([SHAPE_NAMES[int(s)] for s in plan.shape[order]], pa.string()),
        "track_id": pa.array(plan.track_id[order].astype(np.int64)),
        **{name: pa.array(xyxy[:, i]) for i, name in enumerate(("x0", "y0", "x1", "y1"))},
    }
    return pa.Table.from_pydict(columns, schema=REGIONS_SCHEMA)


def write_regions(state_dir: Path, run_id: str, video_id: str, plan: MaskPlan) -> Path:
    """Write one video's regions atomically (also when it has none: zero rows say "nothing masked").

    The folder, when created here, is private to the user (0700)."""
    ensure_private_dir(table_dir(state_dir, REGIONS_TABLE))
    return write_part(state_dir, REGIONS_TABLE, part_name(run_id, video_id), regions_table(run_id, video_id, plan))


def output_run(row: Mapping[str, Any]) -> str:
    """The run (or apply) that wrote a videos row's output file and its regions: ``output_run_id``, which a row
    that only changed the review status carries over (rows written before that column: ``run_id``)."""
    return str(row.get("output_run_id") or row["run_id"])


def regions_file(state_dir: Path, run_id: str, video_id: str) -> Path:
    return table_dir(state_dir, REGIONS_TABLE) / f"part-{part_name(run_id, video_id)}.parquet"


def read_regions(state_dir: Path, run_id: str, video_id: str, frame_count: int) -> MaskPlan | None:
    """One video's regions of one run as a MaskPlan; None when they were not kept."""
    path = regions_file(state_dir, run_id, video_id)
    if not path.is_file():
        return None
    table = pq.read_table(path, schema=REGIONS_SCHEMA)
    class_ids = {name: i for i, name in enumerate(REGION_CLASS_NAMES)}
    shape_ids = {name: i for i, name in SHAPE_NAMES.items()}
    xyxy = np.stack([table.column(c).to_numpy() for c in ("x0", "y0", "x1", "y1")], 1) if len(table) else None
    return MaskPlan(
        frame_count=frame_count,
        frame_index=table.column("frame_index").to_numpy().astype(np.int64),
        xyxy=xyxy.astype(np.float32) if xyxy is not None else np.zeros((0, 4), np.float32),
        cls=np.array([class_ids[c] for c in table.column("class_name").to_pylist()], np.int64),
        shape=np.array([shape_ids[s] for s in table.column("shape").to_pylist()], np.int64),
        track_id=table.column("track_id").to_numpy().astype(np.int64),
    )


def delete_run_regions(state_dir: Path, run_id: str) -> int:
    """Remove every regions part of one run (the ``keep_regions: false`` retention); returns how many."""
    folder = table_dir(state_dir, REGIONS_TABLE)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(f"part-{run_id}-*.parquet"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
