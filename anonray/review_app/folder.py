"""What the review app reads from and writes to one output folder, without the web layer.

The files and runs come from the tables; frames from the anonymized outputs only (never the sources);
regions from the restricted regions table. Page actions wait in ``_anonray/review_pending/`` (0700)
until a reviewer applies them, then go through ``anonray apply``'s code as one corrections set, each entry
keeping its reviewer. Only paths the tables name, inside the output folder and outside ``_anonray``, are ever read.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from anonray.config import ReviewConfig
from anonray.corrections.apply import ApplySummary, apply_corrections
from anonray.corrections.check import check_corrections
from anonray.corrections.spec import CorrectionSet, parse_corrections
from anonray.layout import STATE_DIR_NAME
from anonray.records.audit import write_bytes_atomic
from anonray.records.regions import SHAPE_NAMES, output_run, read_regions, regions_file
from anonray.records.resume import current_outputs
from anonray.records.review import read_output_frames
from anonray.records.tables import read_table
from anonray.types import REGION_CLASS_NAMES

PENDING_FILE = "review_pending/pending.json"
"""Page actions not yet applied (reviewer names, boxes): in a 0700 folder of its own, the file 0600."""
JPEG_QUALITY = 85


def _flagged(row: Mapping[str, Any]) -> bool:
    return bool(row.get("qa_flags")) or row.get("review_status") == "rejected"


def review_queue(rows: list[dict[str, Any]], cfg: ReviewConfig) -> list[dict[str, Any]]:
    """The files to look at, in order: flagged ones (QA flags, rejected) first, then a sample of the others
    drawn with ``review.seed``: ``review.sample_share`` of them, at least ``review.min_files``, and at least
    one per folder (a camera). Approved files are left out."""
    todo = [r for r in rows if r.get("review_status") != "approved"]
    flagged = sorted((r for r in todo if _flagged(r)), key=lambda r: r["path"])
    others = sorted((r for r in todo if not _flagged(r)), key=lambda r: r["video_id"])
    if not others:
        return flagged
    order = np.random.default_rng(cfg.seed).permutation(len(others))
    n = min(len(others), max(cfg.min_files, math.ceil(cfg.sample_share * len(others) - 1e-9)))
    picked = {int(i) for i in order[:n]}
    folders = {str(PurePosixPath(others[i]["path"]).parent) for i in picked}
    for i in order[n:]:  # one per folder not yet represented, in the seed's order
        folder = str(PurePosixPath(others[int(i)]["path"]).parent)
        if folder not in folders:
            picked.add(int(i))
            folders.add(folder)
    return flagged + sorted((others[i] for i in picked), key=lambda r: r["path"])


class ReviewFolder:
    """One output folder as the review app sees it."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir).resolve()
        self.state_dir = self.output_dir / STATE_DIR_NAME
        if not (self.state_dir / "videos").is_dir():
            raise FileNotFoundError(f"{self.output_dir} holds no anonray run records ({STATE_DIR_NAME}/videos)")
        self._lock = threading.Lock()

    # ------------------------------------------------------------ tables
    def runs(self) -> list[dict[str, Any]]:
        columns = ["run_id", "started_utc", "finished_utc", "ray_mode", "videos_ok", "videos_failed",
                   "videos_skipped", "exit_code"]
        rows = read_table(self.state_dir, "runs").select(columns).to_pylist()
        return sorted(rows, key=lambda r: r["run_id"], reverse=True)

    def files(self) -> list[dict[str, Any]]:
        """The latest row of every input path: its current output where it has one, else its last failure."""
        videos = read_table(self.state_dir, "videos")
        latest: dict[str, dict[str, Any]] = {}
        for row in sorted(videos.to_pylist(), key=lambda r: r["finished_utc"] or r["started_utc"]):
            if row["status"] != "skipped":
                latest[row["path"]] = row
        latest.update(current_outputs(videos))
        return sorted(latest.values(), key=lambda r: r["path"])

    def current(self, video_id: str) -> dict[str, Any] | None:
        """The current ok row of a video id, or None."""
        for row in current_outputs(read_table(self.state_dir, "videos")).values():
            if row["video_id"] == video_id:
                return row
        return None

    def output_file(self, row: Mapping[str, Any]) -> Path | None:
        """The row's output file if it lies inside the output folder and outside ``_anonray``."""
        relative = row.get("output_path")
        if not relative:
            return None
        path = (self.output_dir / str(relative)).resolve()
        inside = path.is_relative_to(self.output_dir) and STATE_DIR_NAME not in path.relative_to(self.output_dir).parts
        return path if inside and path.is_file() else None

    def regions_kept(self, row: Mapping[str, Any]) -> bool:
        """Whether the row's output has its regions (its run kept them: ``review.keep_regions``)."""
        return regions_file(self.state_dir, output_run(row), row["video_id"]).is_file()

    def uncorrectable(self) -> list[str]:
        """The current outputs whose regions were not kept (``review.keep_regions: false``)."""
        return [path for path, row in current_outputs(read_table(self.state_dir, "videos")).items()
                if not self.regions_kept(row)]

    # ------------------------------------------------------------ frames and regions
    def frame_jpeg(self, row: Mapping[str, Any], index: int, max_side: int) -> bytes | None:
        """Frame ``index`` of the row's output as stored (before display rotation), scaled to ``max_side``."""
        path = self.output_file(row)
        if path is None or not 0 <= index < int(row["frames_in"]):
            return None
        frame = read_output_frames(path, [index]).get(index)
        if frame is None:
            return None
        image = frame.image
        h, w = image.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        if scale < 1.0:
            image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return buf.tobytes() if ok else None

    def regions(self, row: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
        """The regions masked on frame ``index`` of the row's output (stored-frame pixels)."""
        plan = read_regions(self.state_dir, output_run(row), row["video_id"], int(row["frames_in"]))
        if plan is None:
            return []
        rows = np.flatnonzero(plan.frame_index == index)
        return [{"class": REGION_CLASS_NAMES[int(plan.cls[i])], "track_id": int(plan.track_id[i]),
                 "shape": SHAPE_NAMES[int(plan.shape[i])], "box": [round(float(v), 1) for v in plan.xyxy[i]]}
                for i in rows]

    # ------------------------------------------------------------ pending actions and apply
    def _pending_path(self) -> Path:
        return self.state_dir / PENDING_FILE

    def pending(self) -> list[dict[str, Any]]:
        try:
            return json.loads(self._pending_path().read_text())["entries"]
        except (OSError, ValueError, KeyError):
            return []

    def _save_pending(self, entries: list[dict[str, Any]]) -> None:
        path = write_bytes_atomic(self._pending_path(), json.dumps({"entries": entries}, indent=1).encode())
        os.chmod(path, 0o600)

    def add_pending(self, reviewer: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Check one page action as a corrections entry (CorrectionsError if wrong) and queue it."""
        entry = dict(entry)
        text = json.dumps({"reviewer": reviewer, "corrections": [entry]})
        with self._lock:
            check_corrections(parse_corrections(text, "page action"), read_table(self.state_dir, "videos"),
                              read_table(self.state_dir, "runs"), self.state_dir)
            entries = [*self.pending(), {"reviewer": reviewer.strip(), "entry": entry}]
            self._save_pending(entries)
        return {"reviewer": reviewer.strip(), "entry": entry}

    def clear_pending(self) -> None:
        with self._lock:
            self._save_pending([])

    def apply_pending(self) -> list[ApplySummary]:
        """Apply every queued action, of every reviewer, as one corrections set (each entry keeps its reviewer):
        checked whole, so a stale entry refuses the set and nothing is half-applied. The queue is emptied once
        it applied."""
        with self._lock:
            entries = self.pending()
            if not entries:
                return []
            actions = []
            for item in entries:
                one = parse_corrections(json.dumps({"reviewer": item["reviewer"], "corrections": [item["entry"]]}),
                                        "page action")
                actions.append(replace(one.corrections[0], reviewer=one.reviewer))
            summary = apply_corrections(self.output_dir, CorrectionSet(actions[0].reviewer, tuple(actions)))
            self._save_pending([])
            return [summary]

