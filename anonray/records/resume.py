"""Resuming: which inputs already have a good output from an earlier run with the same settings.

An input counts as done when the ``videos`` table holds an ``ok`` row for the same relative path,
size, modification time and inode, the same config hash and model ids, and that row's output file
(or, for a URI output, object) is still there. ``--verify-inputs`` also re-hashes the input against
the row's sha256; ``--force`` skips this check altogether.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from anonray.store import storage
from anonray.store.checksums import sha256_file


def current_outputs(videos: pa.Table) -> dict[str, dict[str, Any]]:
    """The latest ``ok`` row of each input path (what its output file holds now: a run's or an apply's)."""
    rows: dict[str, dict[str, Any]] = {}
    for row in sorted(videos.to_pylist(), key=lambda r: r["finished_utc"] or r["started_utc"]):
        if row["status"] == "ok":
            rows[row["path"]] = row
    return rows


class DoneIndex:
    """The latest ``ok`` row per input path, from every earlier run's ``videos`` parts."""

    def __init__(self, videos: pa.Table):
        self._rows = current_outputs(videos)
        self._objects: set[str] | None = None
        """A URI output's keys relative to it, listed once (not one request per file)."""

    def find(self, relative_path: str, source: Path | str, output_dir: Path | str, config_hash: str, model_ids: str,
             verify_inputs: bool = False) -> dict[str, Any] | None:
        """The earlier ok row for this input if it still stands, else None."""
        row = self._rows.get(relative_path)
        if row is None or row["config_hash"] != config_hash or row["model_ids"] != model_ids:
            return None
        try:
            if storage.is_uri(source):  # an object: size and modification time (objects have no inode)
                remote = storage.stat(str(source))
                identity = (remote.size, remote.mtime_ns, 0)
            else:
                stat = Path(source).stat()
                identity = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        except OSError:
            return None
        same = identity == (row["size_bytes_in"], row["mtime_ns_in"], row["inode_in"])
        if not same or not row["output_path"] or not self._output_exists(output_dir, row["output_path"]):
            return None
        if verify_inputs and _sha256_source(source) != row["sha256_in"]:
            return None
        return row

    def _output_exists(self, output_dir: Path | str, relative: str) -> bool:
        if not storage.is_uri(output_dir):
            return (Path(output_dir) / relative).is_file()
        if self._objects is None:
            try:
                listing = storage.list_tree(str(output_dir))
            except OSError:  # the outputs cannot be listed: nothing counts as done
                listing = None
            self._objects = set(listing.relative_paths) if listing and not listing.is_file else set()
        return relative in self._objects


def _sha256_source(source: Path | str) -> str | None:
    if not storage.is_uri(source):
        return sha256_file(source)
    try:
        with storage.staged(str(source)) as (local, _):
            return sha256_file(local)
    except OSError:
        return None
