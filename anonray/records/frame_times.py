"""The presentation timestamp of every frame of a rendered video, kept beside its regions.

One part per video and run, ``_anonray/frame_pts/part-<run_id>-<video_id>.parquet`` (schema
``FRAME_PTS_SCHEMA`` in tables.py; one row: the pts in the input's time base, by presentation index), written
with the regions before the output is published. ``anonray apply`` renders from the source again with them
instead of decoding the whole source once more to learn its timestamps. Timestamps are not personal data;
the folder sits with the restricted tables because it serves them. No Ray here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from anonray.records.tables import FRAME_PTS_SCHEMA, table_dir, write_part
from anonray.store.private_dirs import ensure_private_dir

FRAME_PTS_TABLE = "frame_pts"


def write_frame_pts(state_dir: Path, run_id: str, video_id: str, frame_pts: np.ndarray) -> Path:
    ensure_private_dir(table_dir(state_dir, FRAME_PTS_TABLE))
    table = pa.Table.from_pydict({"run_id": [run_id], "video_id": [video_id],
                                  "pts": [np.asarray(frame_pts, np.int64).tolist()]}, schema=FRAME_PTS_SCHEMA)
    return write_part(state_dir, FRAME_PTS_TABLE, f"{run_id}-{video_id}", table)


def read_frame_pts(state_dir: Path, run_id: str, video_id: str) -> np.ndarray | None:
    """The frames' pts of one video in one run; None where that run did not record them."""
    path = table_dir(state_dir, FRAME_PTS_TABLE) / f"part-{run_id}-{video_id}.parquet"
    if not path.is_file():
        return None
    table = pq.read_table(path, schema=FRAME_PTS_SCHEMA)
    return np.asarray(table.column("pts")[0].as_py(), np.int64) if len(table) else None
