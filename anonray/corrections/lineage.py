"""Which files' current outputs carry reviewers' corrections, and the regions parts that tell what they were.

A file's output is corrected when the run that wrote it (``output_run_id``) was an ``anonray apply``. The
corrections are read later (carry.py) as the difference between the regions of the last detection run that
rendered the file and those of the corrected output. No Ray here.
"""

from __future__ import annotations

import pyarrow as pa

from anonray.corrections.carry import CarrySource
from anonray.records.regions import output_run
from anonray.records.resume import current_outputs

APPLY_RAY_MODE = "apply (no Ray)"
"""runs.ray_mode of an ``anonray apply``."""


def _run_of(correction_id: str) -> str:
    """The apply run that recorded a correction (its id is ``<run_id>-<entry number>``)."""
    return correction_id.rsplit("-", 1)[0]


def carry_sources(videos: pa.Table, runs: pa.Table, corrections: pa.Table) -> dict[str, CarrySource]:
    """Per input path whose current output holds reviewers' corrections (written by an apply, or carried into a
    later run, approved or not since): the chain of (detection run, apply) links they come from, oldest first.
    Runs are ordered by their start time (run ids of one second do not sort in time)."""
    run_rows = runs.select(["run_id", "ray_mode", "started_utc"]).to_pylist()
    applies = {r["run_id"] for r in run_rows if r["ray_mode"] == APPLY_RAY_MODE}
    order = {r["run_id"]: (r["started_utc"], r["run_id"]) for r in run_rows}
    rendered: dict[str, dict[str, dict]] = {}
    for row in videos.to_pylist():
        if row["status"] == "ok" and output_run(row) == row["run_id"] and row["run_id"] in order:
            rendered.setdefault(row["path"], {})[row["run_id"]] = row
    ids_by_path: dict[str, list[str]] = {}
    for row in corrections.select(["path", "correction_id"]).to_pylist():
        ids_by_path.setdefault(row["path"], []).append(row["correction_id"])
    found = {}
    for path, row in current_outputs(videos).items():
        links = _links(output_run(row), rendered.get(path, {}), applies, order)
        if not links:
            continue
        first, last = order[links[0][0]], order[links[-1][1]]
        ids = tuple(sorted(c for c in ids_by_path.get(path, []) if _run_of(c) in order
                           and first < order[_run_of(c)] <= last))
        found[path] = CarrySource(tuple(links), str(rendered[path][links[-1][1]]["sha256_in"]), ids)
    return found


def _links(run: str, rendered: dict[str, dict], applies: set[str], order: dict) -> list[tuple[str, str]]:
    """From the run that wrote the current output back to a detection run without corrections."""
    links: list[tuple[str, str]] = []
    while run in rendered or run in applies:
        if run in applies:
            corrected = run
        else:
            carried = [c for c in rendered[run].get("corrections") or () if _run_of(c) in applies]
            if not carried:
                break
            corrected = max((_run_of(c) for c in carried), key=order.__getitem__)
        before = sorted((r for r in rendered if r not in applies and r in order and corrected in order
                         and order[r] < order[corrected]), key=order.__getitem__)
        if corrected not in rendered or not before or (before[-1], corrected) in links:
            break
        links.insert(0, (before[-1], corrected))
        run = before[-1]
    return links
