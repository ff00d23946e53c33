"""Corrections checked against the output folder they correct: known files, their tracks, frames and sizes.

Each file's current output is the latest ``ok`` row of ``videos`` for its path (a run's or an earlier
apply's); its masks are that row's run's ``regions`` part, drawn with that run's configuration. Anything
that does not fit refuses the whole set (``CorrectionsError`` names the entry), before anything is written.
No Ray here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from anonray.config import Config, ConfigError, validate_config
from anonray.corrections.plan_edit import track_frames
from anonray.corrections.spec import Correction, CorrectionsError, CorrectionSet
from anonray.records.regions import output_run, read_regions
from anonray.records.resume import current_outputs
from anonray.types import MaskPlan


@dataclass
class FileToCorrect:
    """One output named by the corrections: its current row, configuration, masks and the entries for it."""

    row: dict[str, Any]
    config: Config
    plan: MaskPlan | None
    """The current output's regions; None where no pixel correction needs them."""
    corrections: list[tuple[int, Correction]] = field(default_factory=list)
    """(position in the file, entry) in file order."""

    @property
    def changes_pixels(self) -> bool:
        return any(c.changes_pixels for _, c in self.corrections)


def run_configs(runs: pa.Table) -> dict[str, Config]:
    """Each recorded run's configuration (runs.config_json)."""
    configs = {}
    for row in runs.select(["run_id", "config_json"]).to_pylist():
        try:
            configs[row["run_id"]] = validate_config(json.loads(row["config_json"] or "{}"))
        except (ConfigError, ValueError):
            continue  # a run of another anonray version; a file it wrote is refused by name below
    return configs


def _refuse(position: int, correction: Correction, why: str) -> CorrectionsError:
    return CorrectionsError(f"corrections entry {position + 1} ({correction.file}): {why}")


def _check_frames(position: int, correction: Correction, frame_count: int) -> None:
    if correction.frames is not None and correction.frames[1] >= frame_count:
        raise _refuse(position, correction, f"frames {list(correction.frames)} run past the end "
                      f"(the video has {frame_count} frames, 0 to {frame_count - 1})")


def _check_entry(position: int, correction: Correction, target: FileToCorrect) -> None:
    row, plan = target.row, target.plan
    _check_frames(position, correction, int(row["frames_in"]))
    if correction.action == "remove_track" and plan is not None:
        frames = track_frames(plan, str(correction.class_name), int(correction.track_id or 0))
        if not frames.size:
            raise _refuse(position, correction, f"the output has no {correction.class_name} track "
                          f"{correction.track_id}")
    if correction.action == "add_region" and correction.box is not None:
        x0, y0, x1, y1 = correction.box
        width, height = int(row["width"]), int(row["height"])
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise _refuse(position, correction, f"its box lies outside the {width}x{height} "  # no coordinates
                          "frame (stored-frame pixels)")


def _file_target(position: int, correction: Correction, row: dict[str, Any] | None, configs: Mapping[str, Config],
                 state_dir: Path, needs_plan: bool) -> FileToCorrect:
    if row is None:
        raise _refuse(position, correction, "no ok output of this file in this output folder (videos.path)")
    config = configs.get(output_run(row))
    if config is None:
        raise _refuse(position, correction, f"the run that wrote its output ({output_run(row)}) has no readable "
                      "configuration in the runs table")
    plan = None
    if needs_plan:
        if not config.review.keep_regions:
            raise _refuse(position, correction, "its output's run did not keep its mask regions "
                          "(review.keep_regions: false), so it cannot be corrected; run it again with "
                          "review.keep_regions: true")
        plan = read_regions(state_dir, output_run(row), row["video_id"], int(row["frames_in"]))
        if plan is None:
            raise _refuse(position, correction, f"the regions of its output (run {output_run(row)}) are missing "
                          "from _anonray/regions")
    return FileToCorrect(row, config, plan)


def check_corrections(corrections: CorrectionSet, videos: pa.Table, runs: pa.Table,
                      state_dir: Path) -> dict[str, FileToCorrect]:
    """Every entry checked against the folder's current outputs; per file, what to apply (in file order)."""
    current, configs = current_outputs(videos), run_configs(runs)
    pixel_files = {c.file for c in corrections.corrections if c.changes_pixels}
    targets: dict[str, FileToCorrect] = {}
    for position, correction in enumerate(corrections.corrections):
        target = targets.get(correction.file)
        if target is None:
            target = _file_target(position, correction, current.get(correction.file), configs, state_dir,
                                  correction.file in pixel_files)
            targets[correction.file] = target
        _check_entry(position, correction, target)
        target.corrections.append((position, correction))
    return targets
