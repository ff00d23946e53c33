"""The run manifest and ``anonray verify``, without Ray: built from table rows, written atomically,
checked against the real files (and failing when one byte changes)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from anonray import __version__
from anonray.config import Config
from anonray.detect import models
from anonray.records.audit import (
    AuditError,
    build_manifest,
    find_manifest,
    manifest_path,
    model_entries,
    output_root_of,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from anonray.records.regions import regions_file, write_regions
from anonray.records.run_manifest import collect_versions, write_run_records
from anonray.testing.samples import write_sample_video
from anonray.types import MaskPlan

RUN_ID = "20250102T030405Z-0a1b2c"
T0 = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _output_folder(tmp_path: Path) -> tuple[Path, list[dict], dict]:
    """An output folder with two real output files, and the rows a run would have recorded for it."""
    out = tmp_path / "out"
    (out / "north").mkdir(parents=True)
    (out / "_anonray").mkdir()
    write_sample_video(out / "north" / "gate_2.mp4", format="h264_mp4", frames=10, audio=False)
    write_sample_video(out / "yard.mp4", format="h264_mp4", frames=12, audio=False, seed=3)
    config = Config()
    common = {"run_id": RUN_ID, "config_hash": config.config_hash(), "started_utc": T0,
              "finished_utc": T0 + dt.timedelta(seconds=9)}
    rows = [
        {**common, "video_id": "bbbbbbbbbbbb", "path": "yard.mp4", "output_path": "yard.mp4", "status": "ok",
         "sha256_in": "1" * 64, "sha256_out": _sha(out / "yard.mp4"), "size_bytes_in": 10,
         "size_bytes_out": (out / "yard.mp4").stat().st_size, "frames_in": 12, "frames_out": 12, "width": 384,
         "height": 288, "rotation": 0, "seconds_ingest": 0.1, "seconds_decode": 0.2, "seconds_detect": 0.3,
         "seconds_track": 0.01, "seconds_encode": 0.5},
        {**common, "video_id": "aaaaaaaaaaaa", "path": "north/gate_2.mp4", "output_path": "north/gate_2.mp4",
         "status": "skipped", "sha256_in": "2" * 64, "sha256_out": _sha(out / "north" / "gate_2.mp4"),
         "frames_in": 10, "frames_out": 10},
        {**common, "video_id": "cccccccccccc", "path": "broken.mp4", "output_path": None, "status": "failed",
         "error_class": "not_a_video", "error_message": "x", "sha256_in": "3" * 64, "seconds_ingest": 0.05},
    ]
    run_row = {"run_id": RUN_ID, "started_utc": T0, "finished_utc": T0 + dt.timedelta(seconds=10),
               "config_json": config.canonical_json(), "config_hash": config.config_hash(), "ray_mode": "local",
               "hosts": ["node-b", "node-a"], "files_matched": 3, "files_ignored": 1, "frames_total": 12,
               "footage_seconds": 0.48, "wall_seconds": 10.0, "exit_code": 1}
    return out, rows, run_row


SEGMENTS = [
    {"video_id": "bbbbbbbbbbbb", "decode_node_id": "n1", "detect_node_id": "n2"},
    {"video_id": "bbbbbbbbbbbb", "decode_node_id": "n1", "detect_node_id": ""},
]


def _manifest(out: Path, rows: list[dict], run_row: dict) -> dict:
    return build_manifest(run_row=run_row, video_rows=rows, segment_rows=SEGMENTS,
                          models=[{"name": "m", "sha256": "f" * 64}], versions={"anonray_version": "x"},
                          driver_host="driver-1", node_hosts={"n1": "node-a", "n2": "node-b"})


# ---------------------------------------------------------------- building

def test_manifest_records_config_hosts_and_every_file(tmp_path):
    out, rows, run_row = _output_folder(tmp_path)
    m = _manifest(out, rows, run_row)
    assert m["kind"] == "anonray-run-manifest" and m["format"] == 1 and m["run_id"] == RUN_ID
    assert m["config"] == Config().model_dump(mode="json")
    assert m["config_hash"] == Config().config_hash()
    assert m["config_sha256"] == Config().config_sha256()
    assert m["config_sha256"].startswith(m["config_hash"])
    assert m["hosts"] == {"driver": "driver-1", "cluster": ["node-a", "node-b"],
                          "ray_nodes": [{"node_id": "n1", "host": "node-a"}, {"node_id": "n2", "host": "node-b"}]}
    assert m["counts"] == {"files_matched": 3, "files_ignored": 1, "ok": 1, "failed": 1, "skipped": 1,
                           "frames_total": 12, "footage_seconds": 0.48}
    files = m["files"]
    assert [f["path"] for f in files] == ["broken.mp4", "north/gate_2.mp4", "yard.mp4"]  # ordered by path
    assert [f["index"] for f in files] == [0, 1, 2]
    yard = files[2]
    assert yard["sha256_out"] == _sha(out / "yard.mp4") and yard["sha256_in"] == "1" * 64
    assert yard["seconds"] == {"ingest": 0.1, "decode": 0.2, "detect": 0.3, "track": 0.01, "encode": 0.5}
    assert yard["ray_nodes"] == ["n1", "n2"]
    assert files[0]["status"] == "failed" and files[0]["error_class"] == "not_a_video"
    assert files[0]["output_path"] is None and files[0]["sha256_out"] is None


def test_manifest_is_written_atomically_as_json(tmp_path):
    out, rows, run_row = _output_folder(tmp_path)
    m = _manifest(out, rows, run_row)
    m["versions"]["numpy_scalar"] = np.int64(3)
    path = write_manifest(out / "_anonray", m)
    assert path == manifest_path(out / "_anonray", RUN_ID) == out / "_anonray" / "manifests" / f"{RUN_ID}.json"
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind
    back = read_manifest(path)
    assert back["started_utc"] == "2025-01-02T03:04:05+00:00"
    assert back["files"][2]["finished_utc"] == "2025-01-02T03:04:14+00:00"
    assert back["versions"]["numpy_scalar"] == 3
    assert output_root_of(path) == out.resolve()


def test_versions_name_every_library():
    v = collect_versions()
    assert v["anonray_version"] == __version__
    assert v["av_version"] == av.__version__
    assert v["ffmpeg_libraries"]["libavcodec"] == ".".join(map(str, av.library_versions["libavcodec"]))
    assert set(v["ffmpeg_libraries"]) >= {"libavcodec", "libavformat", "libavutil", "libswscale"}
    assert v["numpy"] == np.__version__
    for key in ("ray_version", "torch_version", "python_version", "ultralytics", "onnxruntime", "opencv"):
        assert v[key], key
    json.dumps(v)


def test_models_carry_their_pinned_sha256():
    specs = models.load_manifest()
    ids = models.model_ids(["centerface", "plate-yolov8n-pyplatex"])
    entries = model_entries(ids, specs)
    assert [e["name"] for e in entries] == ["centerface", "plate-yolov8n-pyplatex"]
    for e in entries:
        assert e["sha256"] == specs[e["name"]].sha256 and len(e["sha256"]) == 64
        assert e["model_id"] == ids[e["name"]] and e["model_id"].endswith(e["sha256"][:12])


# ---------------------------------------------------------------- verifying

def test_verify_finds_changed_missing_and_invalid_outputs(tmp_path):
    out, rows, run_row = _output_folder(tmp_path)
    m = _manifest(out, rows, run_row)
    report = verify_manifest(m, out)
    assert report.ok and report.checked == 2 and report.matched == 2  # ok + skipped; the failed one has none
    data = bytearray((out / "yard.mp4").read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / "yard.mp4").write_bytes(bytes(data))
    (out / "north" / "gate_2.mp4").unlink()
    report = verify_manifest(m, out)
    assert not report.ok and report.matched == 0
    assert [(p.kind, p.index, p.video_id) for p in report.problems] == [
        ("missing", 1, "aaaaaaaaaaaa"), ("mismatch", 2, "bbbbbbbbbbbb")]
    m["files"][2]["output_path"] = "../out/yard.mp4"  # still inside, after resolving: checked normally
    assert verify_manifest(m, out).count("mismatch") == 1
    m["files"][2]["output_path"] = "../elsewhere.mp4"
    m["files"][1]["output_path"] = "_anonray/manifests/x.json"
    assert {p.kind for p in verify_manifest(m, out).problems} == {"invalid"}


def test_find_manifest_by_folder_run_or_file(tmp_path):
    out, rows, run_row = _output_folder(tmp_path)
    with pytest.raises(AuditError, match="no run manifest"):
        find_manifest(out)
    first = write_manifest(out / "_anonray", _manifest(out, rows, run_row))
    later = write_manifest(out / "_anonray", {**_manifest(out, rows, run_row), "run_id": "20260101T000000Z-ffffff"})
    assert find_manifest(out) == later
    assert find_manifest(out, RUN_ID) == first
    assert find_manifest(first) == first
    with pytest.raises(AuditError):
        find_manifest(out, "nope")
    with pytest.raises(AuditError):
        find_manifest(tmp_path / "missing")


def anonray(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonray", *map(str, args)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_cli_verify_passes_then_fails_after_one_byte_flips(tmp_path):
    out, rows, run_row = _output_folder(tmp_path)
    path = write_manifest(out / "_anonray", _manifest(out, rows, run_row))
    ok = anonray("verify", out)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"anonray verify {RUN_ID}: 2 output(s) checked, 2 match, 0 changed, 0 missing" in ok.stdout
    assert anonray("verify", path).returncode == 0
    assert anonray("verify", out, "--run", RUN_ID).returncode == 0
    data = bytearray((out / "north" / "gate_2.mp4").read_bytes())
    data[100] ^= 0x80
    (out / "north" / "gate_2.mp4").write_bytes(bytes(data))
    bad = anonray("verify", out)
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[0] == "MISMATCH #1 video aaaaaaaaaaaa: north/gate_2.mp4"
    assert "1 match, 1 changed, 0 missing" in bad.stdout and not bad.stderr
    usage = anonray("verify", tmp_path / "nowhere")
    assert usage.returncode == 2 and "error:" in usage.stderr


# ---------------------------------------------------------------- the end of a run (no Ray)

@pytest.mark.parametrize("keep_regions", [True, False])
def test_write_run_records_writes_sheet_then_manifest(tmp_path, keep_regions):
    out, rows, run_row = _output_folder(tmp_path)
    state = out / "_anonray"
    config = Config().with_overrides(**{"review.keep_regions": keep_regions})
    run_row = {**run_row, "config_json": config.canonical_json(), "config_hash": config.config_hash()}
    plan = MaskPlan(12, np.array([0, 6]), np.array([[10, 10, 50, 60], [12, 12, 52, 62]], np.float32),
                    np.array([0, 0]), np.array([0, 0]), np.array([0, 0]))
    write_regions(state, RUN_ID, "bbbbbbbbbbbb", plan)
    ids = models.model_ids(["centerface"])
    manifest_file, sheet = write_run_records(state_dir=state, output_dir=out, run_row=run_row, video_rows=rows,
                                             segment_rows=SEGMENTS, config=config, model_ids=ids,
                                             node_hosts={"n1": "node-a"})
    assert manifest_file == state / "manifests" / f"{RUN_ID}.json"
    assert sheet == state / "review" / f"{RUN_ID}.html"
    m = read_manifest(manifest_file)
    assert m["review"]["path"] == f"_anonray/review/{RUN_ID}.html"
    assert m["review"]["sha256"] == _sha(sheet)
    assert m["review"]["files_sampled"] == 1 and m["review"]["sampled_video_ids"] == ["bbbbbbbbbbbb"]
    assert m["review"]["frames_shown"] == 3 and sheet.read_text().count("<img ") == 3
    assert m["review"]["regions"]["kept"] is keep_regions
    assert regions_file(state, RUN_ID, "bbbbbbbbbbbb").is_file() is keep_regions
    assert m["models"][0]["sha256"] == models.load_manifest()["centerface"].sha256
    assert m["config"]["review"]["keep_regions"] is keep_regions
    assert verify_manifest(m, out).ok
    for folder in ("manifests", "review", "regions"):  # created private to the user
        assert (state / folder).stat().st_mode & 0o077 == 0, folder
