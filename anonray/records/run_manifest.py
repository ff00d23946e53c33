"""A run's closing records: the review sheet, the regions retention, and the manifest with the versions of
every library that shaped the outputs (records/audit.py builds and verifies manifests)."""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import av

from anonray.detect import models
from anonray.layout import REGIONS_TABLE, REVIEW_DIR_NAME, STATE_DIR_NAME
from anonray.records.audit import (
    OPTIONAL_PACKAGES,
    build_manifest,
    file_entries,
    model_entries,
    write_bytes_atomic,
    write_manifest,
)
from anonray.records.regions import delete_run_regions
from anonray.records.review import build_review_sheet, review_sheet_path
from anonray.records.rows import software_versions

log = logging.getLogger("anonray")


def collect_versions() -> dict[str, Any]:
    """Versions of anonray, Python, Ray, torch, PyAV, each FFmpeg library, and the other libraries."""
    versions: dict[str, Any] = dict(software_versions())
    versions["ffmpeg_libraries"] = {name: ".".join(str(x) for x in v) for name, v in av.library_versions.items()}
    ffmpeg_release = getattr(av, "ffmpeg_version_info", None)
    if ffmpeg_release:
        versions["ffmpeg_release"] = str(ffmpeg_release)
    for key, dists in OPTIONAL_PACKAGES.items():
        for dist in dists:
            try:
                versions[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            versions[key] = None
    return versions


def write_run_records(*, state_dir: Path, output_dir: Path | str, run_row: Mapping[str, Any],
                      video_rows: list[Mapping[str, Any]], segment_rows: list[Mapping[str, Any]], config: Any,
                      model_ids: Mapping[str, str], node_hosts: Mapping[str, str] | None = None,
                      ) -> tuple[Path, Path | None]:
    """End of a run: the review sheet, the regions retention, then the manifest (which records the sheet's
    sha256). A review sheet that cannot be made is logged (by error type only) and noted in the manifest.
    Returns the manifest's path and the sheet's (None when it failed)."""
    run_id = run_row["run_id"]
    index = {f["video_id"]: f["index"] for f in file_entries(video_rows)}
    review: dict[str, Any]
    review_file: Path | None = None
    try:
        page, summary = build_review_sheet(run_id, video_rows, output_dir, state_dir, config.review, index,
                                           run_row.get("config_hash", ""))
        data = page.encode()
        review_file = write_bytes_atomic(review_sheet_path(state_dir, run_id), data)
        review = {"path": f"{STATE_DIR_NAME}/{REVIEW_DIR_NAME}/{review_file.name}",
                  "sha256": hashlib.sha256(data).hexdigest(), **summary}
    except Exception as err:  # noqa: BLE001 - the outputs stand; the sheet's absence is recorded
        log.error("run %s: the review sheet could not be written: %s", run_id, type(err).__name__)
        review = {"path": None, "error": type(err).__name__}
    removed = 0 if config.review.keep_regions else delete_run_regions(state_dir, run_id)
    review["regions"] = {"table": f"{STATE_DIR_NAME}/{REGIONS_TABLE}", "kept": config.review.keep_regions,
                         "parts_deleted": removed}
    specs = models.load_manifest()
    manifest = build_manifest(run_row=run_row, video_rows=video_rows, segment_rows=segment_rows,
                              models=model_entries(model_ids, specs), versions=collect_versions(),
                              driver_host=socket.gethostname(), node_hosts=node_hosts, review=review)
    path = write_manifest(state_dir, manifest)
    log.info("run %s: manifest written (%d file(s)); review sheet: %s of %s ok output(s) sampled, %s frame(s)",
             run_id, len(manifest["files"]), review.get("files_sampled", 0), review.get("ok_outputs", "?"),
             review.get("frames_shown", 0))
    return path, review_file
