"""The audit trail: a run manifest (JSON) per run, and ``anonray verify`` against it.

``build_manifest`` is a pure function of the run's table rows: versions of every library that shaped
the outputs, each model with its sha256, the full configuration and its hash, the hosts, and per input
its relative path, the sha256 of input and output, status, error class and timings. The manifest lives
at ``DIR/_anonray/manifests/<run_id>.json`` (written atomically); it holds paths relative to their roots,
which is why it stays in the restricted ``_anonray`` folder. ``verify_manifest`` re-hashes every output
the manifest lists. No Ray here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anonray.config import Config
from anonray.layout import MANIFEST_DIR_NAME, STATE_DIR_NAME
from anonray.store.checksums import sha256_file
from anonray.store.private_dirs import ensure_private_dir

MANIFEST_FORMAT = 1
MANIFEST_KIND = "anonray-run-manifest"
VERIFIED_STATUSES = ("ok", "skipped")
"""Statuses whose output file stands after the run (skipped: an earlier run's output, re-used)."""

OPTIONAL_PACKAGES = {
    "numpy": ("numpy",),
    "ultralytics": ("ultralytics",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "openvino": ("openvino",),
    "opencv": ("opencv-python-headless", "opencv-python"),
    "pyarrow": ("pyarrow",),
    "lap": ("lap",),
    "torchvision": ("torchvision",),
}
"""Manifest key -> distribution names tried in turn (read from package metadata, never imported)."""




class AuditError(ValueError):
    """A manifest that cannot be found or read (a usage error for ``anonray verify``)."""


# ---------------------------------------------------------------- building the manifest

def model_entries(model_ids: Mapping[str, str], specs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The models in use (name -> id as recorded in the tables) with their manifest pins."""
    entries = []
    for name in sorted(model_ids):
        spec = specs.get(name)
        entry: dict[str, Any] = {"name": name, "model_id": model_ids[name]}
        if spec is not None:
            entry.update(version=spec.version, kind=spec.kind, file=spec.file, sha256=spec.sha256,
                         package=spec.package, package_version=spec.package_version,
                         wheel_sha256=spec.wheel_sha256, license=spec.license)
        entries.append(entry)
    return entries


def _seconds(row: Mapping[str, Any]) -> dict[str, float | None]:
    return {stage: row.get(f"seconds_{stage}") for stage in ("ingest", "decode", "detect", "track", "encode")}


def _nodes_by_video(segment_rows: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    nodes: dict[str, set[str]] = {}
    for row in segment_rows:
        for key in ("decode_node_id", "detect_node_id"):
            if row.get(key):
                nodes.setdefault(row["video_id"], set()).add(row[key])
    return {video_id: sorted(ids) for video_id, ids in nodes.items()}


def file_entries(video_rows: Iterable[Mapping[str, Any]],
                 segment_rows: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """One entry per input of the run, ordered by relative path; ``index`` is the position."""
    nodes = _nodes_by_video(segment_rows)
    rows = sorted(video_rows, key=lambda r: (r.get("path") or "", r.get("video_id") or ""))
    return [
        {
            "index": i,
            "video_id": row.get("video_id"),
            "path": row.get("path"),
            "output_path": row.get("output_path"),
            "status": row.get("status"),
            "error_class": row.get("error_class"),
            "sha256_in": row.get("sha256_in"),
            "sha256_out": row.get("sha256_out"),
            "size_bytes_in": row.get("size_bytes_in"),
            "size_bytes_out": row.get("size_bytes_out"),
            "frames_in": row.get("frames_in"),
            "frames_out": row.get("frames_out"),
            "started_utc": row.get("started_utc"),
            "finished_utc": row.get("finished_utc"),
            "seconds": _seconds(row),
            "ray_nodes": nodes.get(row.get("video_id"), []),
        }
        for i, row in enumerate(rows)
    ]


def build_manifest(*, run_row: Mapping[str, Any], video_rows: Iterable[Mapping[str, Any]],
                   segment_rows: Iterable[Mapping[str, Any]] = (), models: list[dict[str, Any]],
                   versions: Mapping[str, Any], driver_host: str,
                   node_hosts: Mapping[str, str] | None = None,
                   review: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run manifest as a JSON-ready dict (pure: everything comes in as arguments).

    ``run_row`` is the run's ``runs`` table row; ``video_rows``/``segment_rows`` its rows of those tables;
    ``node_hosts`` maps Ray node ids to host names; ``review`` describes the review sheet, if any.
    """
    segment_rows = list(segment_rows)
    files = file_entries(video_rows, segment_rows)
    config_json = run_row["config_json"]
    node_hosts = dict(node_hosts or {})
    seen_nodes = sorted({n for f in files for n in f["ray_nodes"]})
    counts = {status: sum(1 for f in files if f["status"] == status) for status in ("ok", "failed", "skipped")}
    return {
        "format": MANIFEST_FORMAT,
        "kind": MANIFEST_KIND,
        "run_id": run_row["run_id"],
        "started_utc": run_row["started_utc"],
        "finished_utc": run_row["finished_utc"],
        "wall_seconds": run_row.get("wall_seconds"),
        "exit_code": run_row.get("exit_code"),
        "versions": dict(versions),
        "models": models,
        "detection_precision": run_row.get("detection_precision"),
        "config": json.loads(config_json),
        "config_hash": run_row["config_hash"],
        "config_sha256": Config.model_validate_json(config_json).config_sha256(),
        "ray_mode": run_row.get("ray_mode"),
        "hosts": {
            "driver": driver_host,
            "cluster": sorted(run_row.get("hosts") or []),
            "ray_nodes": [{"node_id": n, "host": node_hosts.get(n)} for n in seen_nodes],
        },
        "counts": {
            "files_matched": run_row.get("files_matched"),
            "files_ignored": run_row.get("files_ignored"),
            **counts,
            "frames_total": run_row.get("frames_total"),
            "footage_seconds": run_row.get("footage_seconds"),
        },
        "review": dict(review) if review else None,
        "files": files,
    }


# ---------------------------------------------------------------- writing

def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat() if value.tzinfo else value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def manifest_json(manifest: Mapping[str, Any]) -> str:
    return json.dumps(manifest, indent=1, sort_keys=False, default=_json_default, allow_nan=False) + "\n"


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, rename, fsync folder.

    A folder created here is private to the user (0700): what goes here (manifests, review sheets) holds
    relative paths and footage."""
    ensure_private_dir(path.parent)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}{path.suffix}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def manifest_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / MANIFEST_DIR_NAME / f"{run_id}.json"


def write_manifest(state_dir: Path, manifest: Mapping[str, Any]) -> Path:
    return write_bytes_atomic(manifest_path(state_dir, manifest["run_id"]), manifest_json(manifest).encode())


# ---------------------------------------------------------------- finding and verifying

def find_manifest(target: Path, run_id: str | None = None) -> Path:
    """The manifest file for ``target``: a manifest itself, or an output folder (``--run`` or its latest run)."""
    if target.is_file():
        if run_id is not None and target.stem != run_id:
            raise AuditError(f"the manifest given is for run {target.stem}, not {run_id}")
        return target
    if not target.is_dir():
        raise AuditError("no such manifest file or output folder")
    folder = target / STATE_DIR_NAME / MANIFEST_DIR_NAME
    if run_id is not None:
        path = folder / f"{run_id}.json"
        if not path.is_file():
            raise AuditError(f"no manifest for run {run_id} in this output folder")
        return path
    manifests = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not manifests:
        raise AuditError("no run manifest in this output folder (expected _anonray/manifests/<run_id>.json)")
    return manifests[-1]  # run ids start with their UTC start time: the last sorts latest


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except OSError as err:
        raise AuditError(f"cannot read the manifest: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise AuditError(f"the manifest is not valid JSON: {err.msg} (line {err.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise AuditError("not an anonray run manifest")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise AuditError(f"unsupported manifest format {manifest.get('format')!r}")
    return manifest


def output_root_of(manifest_file: Path) -> Path:
    """The output folder a manifest describes: it sits at ``DIR/_anonray/manifests/<run_id>.json``."""
    folder = manifest_file.resolve().parent
    if folder.name != MANIFEST_DIR_NAME or folder.parent.name != STATE_DIR_NAME:
        raise AuditError(f"a manifest must sit in {STATE_DIR_NAME}/{MANIFEST_DIR_NAME}/ of its output folder")
    return folder.parent.parent


@dataclass
class Problem:
    index: int
    video_id: str
    output_path: str
    kind: str
    """'missing', 'mismatch' or 'invalid' (no usable path or checksum in the manifest); 'superseded' (not a
    problem: listed apart) when a later run or apply wrote the file now there."""


@dataclass
class VerifyReport:
    run_id: str
    checked: int = 0
    matched: int = 0
    problems: list[Problem] = field(default_factory=list)
    superseded: list[Problem] = field(default_factory=list)
    """Outputs replaced since by a later run or apply (``anonray apply`` corrections): not problems."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.kind == kind)


def _inside(root: Path, relative: str | None) -> Path | None:
    """``root / relative`` if that stays inside ``root`` and outside ``_anonray``, else None."""
    if not relative:
        return None
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or STATE_DIR_NAME in path.relative_to(root).parts:
        return None
    return path


def later_outputs(video_rows: Iterable[Mapping[str, Any]], run_id: str,
                  run_started: Mapping[str, Any]) -> dict[str, set[str]]:
    """Per output path, the sha256 of every ok output that runs started after ``run_id`` wrote (``run_started``:
    each run's start time, from the runs table; run ids of one second do not sort in time)."""
    later: dict[str, set[str]] = {}
    this = run_started.get(run_id)
    for row in video_rows:
        started = run_started.get(str(row.get("run_id")))
        after = this is not None and started is not None and started > this
        if row.get("status") == "ok" and after and row.get("output_path"):
            later.setdefault(str(row["output_path"]), set()).add(str(row.get("sha256_out")))
    return later


def verify_manifest(manifest: Mapping[str, Any], output_root: Path,
                    replaced: Mapping[str, set[str]] | None = None) -> VerifyReport:
    """Re-hash every output the manifest lists (status ok or skipped) under ``output_root``.

    ``replaced`` (``later_outputs``): a file that differs from the manifest but is one a later run wrote is
    reported as superseded, not as changed."""
    report = VerifyReport(str(manifest.get("run_id")))
    root = output_root.resolve()
    for entry in manifest.get("files", []):
        if entry.get("status") not in VERIFIED_STATUSES:
            continue
        report.checked += 1
        relative, expected = entry.get("output_path"), entry.get("sha256_out")
        problem = Problem(int(entry.get("index", -1)), str(entry.get("video_id")), str(relative), "")
        path = _inside(root, relative)
        if path is None or not expected:
            problem.kind = "invalid"
        elif not path.is_file():
            problem.kind = "missing"
        elif (digest := sha256_file(path)) != expected:
            problem.kind = "mismatch"
            if digest in (replaced or {}).get(str(relative), ()):
                problem.kind = "superseded"
                report.superseded.append(problem)
                continue
        else:
            report.matched += 1
            continue
        report.problems.append(problem)
    return report
