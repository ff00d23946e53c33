"""The command line as a user meets it: help, usage and configuration errors, and real runs.

Every call is a subprocess of ``python -m anonray`` in this interpreter. The two real runs start
the embedded local Ray instance (no RAY_ADDRESS), so they are kept to two.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from anonray.config import Config, load_config
from anonray.testing.samples import write_sample_video


def anonray(*args: str | Path, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["COLUMNS"] = "200"  # keep click's help on one line per option
    return subprocess.run([sys.executable, "-m", "anonray", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- help

@pytest.mark.parametrize(("command", "expected"), [
    ((), ["run", "verify", "models", "config", "--version", "--help"]),
    (("verify",), ["TARGET", "--run", "manifest", "Exit code"]),
    (("run",), ["INPUTS", "--output", "--config", "--mask", "blur|pixelate|solid", "--mask-color",
                "--classes", "--audio", "keep|drop", "--address", "--verbose"]),
    (("models",), ["pull", "list"]),
    (("models", "pull"), ["--help", "verify"]),
    (("models", "list"), ["--help", "manifest"]),
    (("config",), ["--help", "YAML"]),
])
def test_help(command, expected):
    result = anonray(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:")
    for word in expected:
        assert word in result.stdout, f"`anonray {' '.join(command)} --help` does not mention {word}"


def test_short_help_option():
    assert anonray("run", "-h").stdout == anonray("run", "--help").stdout


# ---------------------------------------------------------------- usage and configuration errors

@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    """An input folder holding one (not even decodable) .mp4: usage errors must stop before it."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"\0" * 64)
    return folder


@pytest.mark.parametrize(("config_text", "extra", "message"), [
    ("mask: [\n", [], "config file is not valid YAML"),
    ("mask:\n  colour: ff00ff\n", [], "mask.colour: Extra inputs are not permitted"),
    ("detection:\n  face:\n    input_size: 650\n", [], "detection.face.input_size"),
    ("- face\n", [], "mapping at its top level"),
    (None, ["--mask-color", "zzz"], "mask.color"),
    (None, ["--classes", "face,cat"], "classes"),
], ids=["invalid_yaml", "unknown_key", "bad_value", "not_a_mapping", "mask_color", "classes"])
def test_config_errors_exit_2_before_any_work(tmp_path, input_dir, config_text, extra, message):
    args: list[str | Path] = [input_dir, "--output", tmp_path / "out", *extra]
    if config_text is not None:
        (tmp_path / "config.yaml").write_text(config_text)
        args += ["--config", tmp_path / "config.yaml"]
    result = anonray("run", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out").exists(), "a configuration error created the output folder"


def test_bad_values_are_named(tmp_path, input_dir):
    result = anonray("run", input_dir, "-o", tmp_path / "out", "--classes", "face,cat")
    assert "'face' or 'plate'" in result.stderr
    result = anonray("run", input_dir, "-o", tmp_path / "out", "--mask-color", "zzz")
    assert "six hex digits" in result.stderr
    result = anonray("run", input_dir, "-o", tmp_path / "out", "--mask", "smudge")
    assert result.returncode == 2 and "'smudge' is not one of" in result.stderr


def test_missing_config_file(tmp_path, input_dir):
    result = anonray("run", input_dir, "-o", tmp_path / "out", "--config", tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_input_path(tmp_path, input_dir):
    missing = tmp_path / "no-such-folder"
    result = anonray("run", input_dir, missing, "--output", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert f"input does not exist: {missing}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_output_option(input_dir):
    result = anonray("run", input_dir)
    assert result.returncode == 2
    assert "Missing option '--output'" in result.stderr


def test_missing_inputs(tmp_path):
    result = anonray("run", "--output", tmp_path / "out")
    assert result.returncode == 2
    assert "Missing argument 'INPUTS...'" in result.stderr


# ---------------------------------------------------------------- anonray config

def test_config_prints_the_defaults_as_loadable_yaml(tmp_path):
    result = anonray("config")
    assert result.returncode == 0, result.stderr
    for section in ("classes:", "audio:", "input:", "segment:", "detection:", "tracking:", "mask:",
                    "encoder:", "resources:", "review:"):
        assert re.search(rf"^{section}", result.stdout, re.M), section
    (tmp_path / "defaults.yaml").write_text(result.stdout)
    loaded = load_config(tmp_path / "defaults.yaml")
    assert loaded == Config()
    assert loaded.config_hash() == Config().config_hash()


# ---------------------------------------------------------------- real runs on the embedded local Ray

def _frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def _has_audio(path: Path) -> bool:
    with av.open(str(path)) as c:
        return bool(c.streams.audio)


def _assert_private(stderr: str, inputs: Path, names: list[str]) -> None:
    """Logs name videos by id: never the input folder or a clip's file name or stem."""
    for secret in [str(inputs), str(inputs.resolve()), *names, *(Path(n).stem for n in names)]:
        assert secret not in stderr, f"stderr mentions {secret!r}"


@pytest.mark.slow
def test_run_drop_audio_solid_mask(tmp_path):
    inputs = tmp_path / "footage-in"
    inputs.mkdir()
    write_sample_video(inputs / "harbour_cam_07.mp4", format="h264_mp4", frames=25)
    (inputs / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    result = anonray("run", inputs, "--output", out, "--mask", "solid", "--mask-color", "00ff00",
                     "--audio", "drop", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r": 1 ok, 0 failed, 0 skipped, 1 ignored; 25 frames", result.stdout), result.stdout
    output = out / "harbour_cam_07.mp4"
    assert output.is_file()
    assert not _has_audio(output)
    assert _frame_count(output) == 25
    assert {p.name for p in out.iterdir()} == {"harbour_cam_07.mp4", "_anonray"}
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas()
    assert len(videos) == 1
    row = videos.iloc[0]
    assert row.status == "ok" and row.audio_mode == "drop" and row.frames_out == 25
    assert list(row.audio_codecs) == ["aac"]  # the input's audio is recorded, the output has none
    # green solid masks: some pixels of the output are pure green (the synthetic clip has a face)
    with av.open(str(output)) as c:
        frame = next(c.decode(c.streams.video[0])).to_ndarray(format="rgb24").astype(int)
    assert (np.abs(frame - np.array([0, 255, 0])).max(axis=2) <= 40).any()
    assert "progress:" in result.stderr
    _assert_private(result.stderr, inputs, ["harbour_cam_07.mp4", "notes.txt"])
    assert row.video_id in result.stderr  # ... by their id instead
    _assert_quiet_console(result, out)
    assert row.video_bitrate_out <= 1.25 * row.video_bitrate_in and row.psnr_outside_masks > 35
    assert 0 < row.latency_seconds < 300 and row.pixel_format_in == row.pixel_format_out == "yuv420p"
    runs = pq.read_table(out / "_anonray" / "runs").to_pandas().iloc[0]
    assert runs.failure_rate == 0.0 and runs.footage_hours_per_wall_hour > 0
    assert runs.gpu_hours_per_100h_footage is None or np.isnan(runs.gpu_hours_per_100h_footage)


ANONRAY_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) anonray[.:]")


def _assert_quiet_console(result: subprocess.CompletedProcess, out: Path) -> None:
    """Every console line is anonray's (its log format, or the summary on stdout); Ray's notices are in
    _anonray/logs/, a 0700 folder of 0600 files."""
    strays = [line for line in result.stderr.splitlines() if not ANONRAY_LINE.match(line)]
    assert strays == [], f"lines not from anonray on stderr: {strays[:3]}"
    assert not [line for line in result.stdout.splitlines() if "ray" in line.lower().split(":")[0]
                and not line.startswith(("anonray run", "  Ray's log"))]
    logs = out / "_anonray" / "logs"
    (log,) = logs.iterdir()
    assert f"Ray's log: {log}" in result.stdout
    assert logs.stat().st_mode & 0o777 == 0o700 and log.stat().st_mode & 0o777 == 0o600
    assert "WARNING" in log.read_text()  # Ray's notices (token authentication, object spilling) are there


@pytest.mark.slow
def test_run_with_a_broken_file_exits_1(tmp_path):
    inputs = tmp_path / "evidence-in"
    inputs.mkdir()
    write_sample_video(inputs / "good_clip_42.mp4", format="h264_mp4", frames=25)
    (inputs / "broken_clip_13.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / "out"
    result = anonray("run", inputs, "--output", out, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r": 1 ok, 1 failed, 0 skipped, 0 ignored", result.stdout), result.stdout
    assert "failed: 1 x not_a_video" in result.stdout
    assert (out / "good_clip_42.mp4").is_file()
    assert not (out / "broken_clip_13.mp4").exists()
    assert _frame_count(out / "good_clip_42.mp4") == 25
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas().set_index("path")
    assert videos.loc["good_clip_42.mp4"].status == "ok"
    assert videos.loc["good_clip_42.mp4"].audio_mode == "keep"
    assert videos.loc["broken_clip_13.mp4"].status == "failed"
    assert "progress:" in result.stderr
    _assert_private(result.stderr, inputs, ["good_clip_42.mp4", "broken_clip_13.mp4"])
    _assert_audit_trail(out, videos, result.stdout)


def _assert_audit_trail(out: Path, videos, stdout: str) -> None:
    """The run's manifest and review sheet exist, and `anonray verify` passes, then fails on one flipped byte."""
    run_id = videos.iloc[0].run_id
    manifest_file = out / "_anonray" / "manifests" / f"{run_id}.json"
    assert f"manifest: {manifest_file}" in stdout
    manifest = json.loads(manifest_file.read_text())
    files = {f["path"]: f for f in manifest["files"]}
    good = out / "good_clip_42.mp4"
    assert files["good_clip_42.mp4"]["sha256_out"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert files["good_clip_42.mp4"]["sha256_in"] == videos.loc["good_clip_42.mp4"].sha256_in
    assert files["broken_clip_13.mp4"]["error_class"] == "not_a_video"
    assert {m["name"] for m in manifest["models"]} == {"centerface", "plate-yolov8n-pyplatex",
                                                        "plate-yolov8n-safelicensing",  # the low-light plate model
                                                        "person-yolo11n-pose"}  # people, to confirm weak faces
    assert manifest["hosts"]["ray_nodes"] and manifest["config_hash"] == videos.iloc[0].config_hash
    sheet = out / "_anonray" / "review" / f"{run_id}.html"
    assert manifest["review"]["sha256"] == hashlib.sha256(sheet.read_bytes()).hexdigest()
    assert sheet.read_text().count("<img ") == 3  # the one ok output, three frames
    assert (out / "_anonray" / "regions" / f"part-{run_id}-{videos.loc['good_clip_42.mp4'].video_id}.parquet").is_file()
    passed = anonray("verify", out)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 output(s) checked, 1 match" in passed.stdout
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    good.write_bytes(bytes(data))
    failed = anonray("verify", manifest_file)
    assert failed.returncode == 1 and "MISMATCH" in failed.stdout and "good_clip_42.mp4" in failed.stdout


@pytest.mark.slow
def test_a_console_that_goes_away_still_leaves_rays_log_in_the_state_folder(tmp_path):
    """`anonray run ... 2>&1 | head -1`: the pipe closes after one line; the run still finishes, and Ray's log
    is moved into _anonray/logs, not left in the temp folder."""
    inputs, out, temp = tmp_path / "in", tmp_path / "out", tmp_path / "tmp"
    inputs.mkdir()
    temp.mkdir()
    write_sample_video(inputs / "a.mp4", format="h264_mp4", frames=10)
    env = {**os.environ, "TMPDIR": str(temp)}
    with subprocess.Popen([sys.executable, "-m", "anonray", "run", str(inputs), "--output", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as proc:
        assert proc.stdout.readline()
        proc.stdout.close()
        proc.wait(timeout=300)
    assert pq.read_table(out / "_anonray" / "videos").to_pandas().status.tolist() == ["ok"]
    assert len(list((out / "_anonray" / "logs").iterdir())) == 1
    assert not list(temp.glob("anonray-logs-*"))
