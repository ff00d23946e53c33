"""Where each run read its inputs: a restricted table, so that ``anonray apply`` can render again from them.

One part per run, ``_anonray/sources/part-<run_id>.parquet`` (schema ``SOURCES_SCHEMA`` in tables.py): per
input file its path relative to its root (``videos.path``), the absolute source path or URI and the root.
Absolute paths may name people or places: the folder is private (0700) like ``regions``. No Ray here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from anonray.records.tables import read_table, table_dir, write_part
from anonray.store.private_dirs import ensure_private_dir

SOURCES_TABLE = "sources"


def write_sources(state_dir: Path, run_id: str, files: Iterable[tuple[str, str, str, str]]) -> Path:
    """Record a run's inputs: (video_id, relative path, source, root) per file."""
    ensure_private_dir(table_dir(state_dir, SOURCES_TABLE))
    rows = [{"run_id": run_id, "video_id": video_id, "path": path, "source": source, "root": root}
            for video_id, path, source, root in files]
    return write_part(state_dir, SOURCES_TABLE, run_id, rows)


def recorded_sources(state_dir: Path) -> dict[str, str]:
    """The latest recorded source of every input path (parts are read in run-id order: time order)."""
    table = read_table(state_dir, SOURCES_TABLE)
    latest: dict[str, str] = {}
    for row in sorted(table.to_pylist(), key=lambda r: r["run_id"]):
        latest[row["path"]] = row["source"]
    return latest
