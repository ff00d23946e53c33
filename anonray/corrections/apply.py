"""``anonray apply``: a reviewer's corrections made real, as a run of its own.

The whole corrections file is checked first (check.py; nothing is applied when any entry is wrong), and
so are the sources of every file whose masks change (each must still hash to ``videos.sha256_in``). Then,
holding the output folder's lock: the entries are recorded (corrections table), each changed file is
rendered again from its source with its current output's regions edited by the entries and that run's
configuration, without a detection pass (render/video.py: the same encode, QA and atomic replacement),
and the run's rows, sources and manifest are written. Approve and reject change no pixels: the file gets
a videos row with its new review status. No Ray here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anonray.config import Config
from anonray.corrections.check import FileToCorrect, check_corrections
from anonray.corrections.follow import followed_boxes
from anonray.corrections.lineage import APPLY_RAY_MODE
from anonray.corrections.plan_edit import changed_frames, edit_plan
from anonray.corrections.source_video import undetected_video
from anonray.corrections.spec import CorrectionsError, CorrectionSet
from anonray.corrections.table import correction_id, correction_row, write_corrections
from anonray.errors import Failure
from anonray.layout import STATE_DIR_NAME, TMP_DIR_NAME
from anonray.records.frame_times import read_frame_pts
from anonray.records.regions import output_run
from anonray.records.rows import (
    RunContext,
    failed_video_row,
    local_host,
    new_run_id,
    ok_video_row,
    run_figures,
    software_versions,
    utc_now,
)
from anonray.records.run_manifest import write_run_records
from anonray.records.sources import recorded_sources, write_sources
from anonray.records.tables import read_table, table_dir, write_part, write_run_part
from anonray.render.codec.splice import SpliceSource
from anonray.render.video import render_video
from anonray.store import storage
from anonray.store.checksums import sha256_file
from anonray.store.output_lock import output_lock

log = logging.getLogger("anonray")

REVIEW_STATUSES = {"approve": "approved", "reject": "rejected"}


@dataclass
class ApplySummary:
    run_id: str
    corrected: int = 0
    """Outputs rendered again with their masks changed."""
    reviewed: int = 0
    """Outputs whose review status alone changed (approve, reject)."""
    failed: int = 0
    failure_classes: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    footage_seconds: float = 0.0
    wall_seconds: float = 0.0
    manifest_path: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def resolve_sources(targets: dict[str, FileToCorrect], state_dir: Path, inputs: list[Path]) -> dict[str, Path]:
    """The local source of every file whose masks change: under an ``inputs`` root (in order) when given,
    else where its run read it; each must hash to the output row's ``sha256_in``. Raise CorrectionsError."""
    recorded = {} if inputs else recorded_sources(state_dir)
    found: dict[str, Path] = {}
    for path, target in targets.items():
        if not target.changes_pixels:
            continue
        candidates = [Path(root) / path for root in inputs] if inputs else [recorded.get(path)]
        existing = [c for c in candidates if c is not None and not storage.is_uri(c) and Path(c).is_file()]
        if not existing:
            where = "under the --input folder(s)" if inputs else "where its run read it (sources table)"
            raise CorrectionsError(f"{path}: its source is missing {where}; give its root with --input")
        source = Path(existing[0])
        try:
            digest = sha256_file(source)
        except OSError as err:  # by class only: the message would name the path
            raise CorrectionsError(f"{path}: its source cannot be read ({type(err).__name__})") from None
        if digest != target.row["sha256_in"]:
            raise CorrectionsError(f"{path}: its source has changed since its output was made (sha256 differs "
                                   "from videos.sha256_in); nothing was applied")
        found[path] = source
    return found


def _review_status(target: FileToCorrect) -> str | None:
    """The file's review status after these entries: the last approve or reject, else the one it had."""
    status = target.row.get("review_status")
    for _, correction in target.corrections:
        status = REVIEW_STATUSES.get(correction.action, status)
    return status


def _render_corrected(target: FileToCorrect, source: Path, output_dir: Path, state_dir: Path,
                      run_id: str) -> dict[str, Any]:
    """Render the file again with its edited masks; its new videos row (ok, or failed with the old output kept)."""
    row, config = target.row, target.config
    started = utc_now()
    ctx = RunContext(run_id, config, json.loads(row["model_ids"] or "{}"))
    t0 = time.perf_counter()
    try:
        recorded = read_frame_pts(state_dir, output_run(row), row["video_id"])
        video = undetected_video(source, row["path"], config.segment.target_seconds, recorded)
        if video.info.frame_count != row["frames_in"]:
            raise CorrectionsError(f"{row['path']}: the source now reads as {video.info.frame_count} frames, "
                                   f"its output was made from {row['frames_in']}")
        seconds_ingest = time.perf_counter() - t0
        corrections = [c for _, c in target.corrections]
        followed = {k: followed_boxes(source, video, c.box, c.frames) for k, c in enumerate(corrections)
                    if c.action == "add_region" and c.follow and c.box and c.frames}
        plan = edit_plan(target.plan, corrections, video.info.width, video.info.height, followed)
        current = output_dir / str(row["output_path"])  # with encoder.passthrough, only changed GOPs re-render
        splice = SpliceSource(current, changed_frames(target.plan, plan)) if current.is_file() else None
        result = render_video(video, config, output_dir, state_dir, run_id, plan=plan, splice=splice)
    except Exception as err:  # noqa: BLE001 - one file's failure is its row; the others still apply
        failure = Failure.of(err, "render_error")
        log.warning("video %s: corrections not applied (%s); its output is unchanged", row["video_id"],
                    failure.error_class)
        return failed_video_row(ctx, video_id=row["video_id"], path=row["path"], error_class=failure.error_class,
                                message=failure.message, started=started)
    new = ok_video_row(ctx, video, result, started=started, seconds_ingest=seconds_ingest)
    # no detection ran: the detector counts are those of the output corrected
    new.update({name: row[name] for name in ("detections_face", "detections_plate")},
               seconds_decode=None, seconds_detect=None, latency_seconds=None)
    return new


def _review_row(target: FileToCorrect, run_id: str) -> dict[str, Any]:
    now = utc_now()
    return {**target.row, "run_id": run_id, "output_run_id": output_run(target.row), "started_utc": now,
            "finished_utc": now, "latency_seconds": None}


def _run_row(run_id: str, config: Config, model_ids: str, summary: ApplySummary, started, files: int) -> dict:
    return {
        "run_id": run_id, "started_utc": started, "finished_utc": utc_now(), **software_versions(),
        "model_ids": model_ids, "config_json": config.canonical_json(), "config_hash": config.config_hash(),
        "ray_mode": APPLY_RAY_MODE, "hosts": [local_host()], "files_matched": files, "files_ignored": 0,
        "videos_ok": summary.corrected + summary.reviewed, "videos_failed": summary.failed, "videos_skipped": 0,
        "frames_total": summary.frames, "footage_seconds": summary.footage_seconds,
        "wall_seconds": summary.wall_seconds, "exit_code": summary.exit_code, "render_retries": 0,
        "actor_restarts": 0,
        **run_figures(summary.footage_seconds, summary.wall_seconds, summary.corrected + summary.reviewed,
                      summary.failed, 0.0),
    }


def _count(summary: ApplySummary, row: dict[str, Any], rendered: bool) -> None:
    if row["status"] != "ok":
        summary.failed += 1
        summary.failure_classes[row["error_class"]] = summary.failure_classes.get(row["error_class"], 0) + 1
    elif rendered:
        summary.corrected += 1
        summary.frames += int(row["frames_in"] or 0)
        summary.footage_seconds += float(row["duration_seconds"] or 0.0)
    else:
        summary.reviewed += 1


def _apply_file(target: FileToCorrect, source: Path | None, output_dir: Path, state_dir: Path, run_id: str,
                ids: list[str]) -> dict[str, Any]:
    """One file's new videos row, written at once (a part of its own, like a run's rows)."""
    rendered = target.changes_pixels and source is not None
    row = _render_corrected(target, source, output_dir, state_dir, run_id) if rendered \
        else _review_row(target, run_id)
    row.update(corrections=ids, review_status=_review_status(target) if row["status"] == "ok" else None)
    return row


def apply_corrections(output_dir: Path, corrections: CorrectionSet, inputs: list[Path] | None = None) -> ApplySummary:
    """Check, then apply a corrections set to an output folder; raise CorrectionsError (nothing applied) on
    a bad entry, a missing or changed source, OutputLocked when another command writes the folder."""
    wall = time.perf_counter()
    output_dir = Path(output_dir).resolve()
    state_dir = output_dir / STATE_DIR_NAME
    if not table_dir(state_dir, "videos").is_dir():
        raise CorrectionsError(f"{output_dir} holds no anonray run records ({STATE_DIR_NAME}/videos)")
    with output_lock(state_dir, "apply"):
        targets = check_corrections(corrections, read_table(state_dir, "videos"), read_table(state_dir, "runs"),
                                    state_dir)
        sources = resolve_sources(targets, state_dir, list(inputs or []))
        return _apply_checked(corrections, targets, sources, output_dir, wall)


def _apply_checked(corrections: CorrectionSet, targets: dict[str, FileToCorrect], sources: dict[str, Path],
                   output_dir: Path, wall: float) -> ApplySummary:
    state_dir = output_dir / STATE_DIR_NAME
    run_id, started = new_run_id(), utc_now()
    summary = ApplySummary(run_id)
    write_corrections(state_dir, run_id, [
        correction_row(run_id, position, correction, corrections.reviewer, started, target.row)
        for target in targets.values() for position, correction in target.corrections])
    (state_dir / TMP_DIR_NAME).mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (path, target) in enumerate(targets.items()):
        ids = [correction_id(run_id, position) for position, _ in target.corrections]
        row = _apply_file(target, sources.get(path), output_dir, state_dir, run_id, ids)
        write_part(state_dir, "videos", f"{run_id}-{k + 1:07d}", [row])
        rows.append(row)
        _count(summary, row, path in sources)
    summary.wall_seconds = time.perf_counter() - wall
    _close(summary, rows, targets, sources, output_dir, started)
    return summary


def _close(summary: ApplySummary, rows: list[dict[str, Any]], targets: dict[str, FileToCorrect],
           sources: dict[str, Path], output_dir: Path, started) -> None:
    """The apply's runs, videos and sources parts and its manifest (and review sheet)."""
    state_dir, run_id = output_dir / STATE_DIR_NAME, summary.run_id
    first = next(iter(targets.values()))
    run_row = _run_row(run_id, first.config, first.row["model_ids"], summary, started, len(targets))
    write_run_part(state_dir, "videos", run_id, rows)
    write_part(state_dir, "runs", run_id, [run_row])
    write_sources(state_dir, run_id, [(targets[p].row["video_id"], p, str(s), str(s)[: -len(p)].rstrip("/"))
                                      for p, s in sources.items()])
    summary.manifest_path, _ = write_run_records(
        state_dir=state_dir, output_dir=output_dir, run_row=run_row, video_rows=rows, segment_rows=[],
        config=first.config, model_ids=json.loads(first.row["model_ids"] or "{}"))
