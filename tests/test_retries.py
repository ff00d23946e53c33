"""Dead workers are retried, a killed driver is resumed: `python -m anonray run` as a subprocess.

The worker-kill test kills (SIGKILL, by pid) a detection actor and a render worker while each is in the
middle of a task: the fault-injection hook (anonray/testing/faults.py, enabled only by an environment
variable this test sets) makes each announce its pid and wait until it has been killed, so the kill
always happens. The driver-kill test kills the driver once a file is done and reruns the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from _video_checks import assert_same_times, decode_frames

from anonray.runtime import ray_scratch
from anonray.testing.faults import PAUSE_DIR_ENV, PAUSE_STAGES_ENV
from anonray.testing.samples import write_sample_video

CONFIG = "mask:\n  style: solid\n  color: ff00ff\nresources:\n  wave_videos: {wave}\n  max_retries: 3\n"
FRAMES = 30


def _inputs(tmp_path: Path, count: int, wave: int) -> tuple[Path, Path, Path, dict[str, int]]:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    frames = {}
    for i in range(count):
        name = f"clip{i}.mp4"
        frames[name] = write_sample_video(inputs / name, format="h264_mp4", frames=FRAMES, seed=i).frame_count
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(wave=wave))
    return inputs, out, config, frames


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", PAUSE_DIR_ENV, PAUSE_STAGES_ENV)}
    env.update(extra)
    return env


def _command(inputs: Path, out: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "anonray", "run", str(inputs), "--output", str(out), "--config", str(config)]


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:  # a file, not a pipe: a full pipe would stall the driver
        return subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def _stop_group(proc: subprocess.Popen, extra_pids: list[int] = ()) -> None:
    """SIGKILL what is left of a run: its process group and the given pids (Ray's processes)."""
    for pid in [proc.pid, *extra_pids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _assert_frame_exact(inputs: Path, out: Path, frames: dict[str, int], names) -> None:
    for name in names:
        src_times, _, src_size, _ = decode_frames(inputs / name)
        dst_times, _, dst_size, _ = decode_frames(out / name)
        assert len(dst_times) == len(src_times) == frames[name], name
        assert dst_size == src_size
        assert_same_times(src_times, dst_times)


def _kill_announced(pause_dir: Path, stage: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> int:
    """Wait for a process of ``stage`` to announce its pid, check it is this run's, SIGKILL it, release the others."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        announced = sorted(pause_dir.glob(f"{stage}-*.pid"))
        if announced:
            pid = int(announced[0].read_text())
            victim = psutil.Process(pid)
            assert victim.environ().get(PAUSE_DIR_ENV) == str(pause_dir)  # a process of this run, nobody else's
            victim.kill()
            victim.wait(timeout=30)
            (pause_dir / f"{stage}.killed").write_text(str(pid))
            return pid
        assert proc.poll() is None, f"the run ended before a {stage} task was killed:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no {stage} process announced itself in {timeout} s")


@pytest.mark.slow
def test_killed_actor_and_render_worker_are_retried(tmp_path):
    inputs, out, config, frames = _inputs(tmp_path, count=3, wave=4)
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    log = tmp_path / "run.log"
    proc = _start(_command(inputs, out, config),
                  _env(**{PAUSE_DIR_ENV: str(pause_dir), PAUSE_STAGES_ENV: "detect,render"}), log)
    try:
        detect_pid = _kill_announced(pause_dir, "detect", proc, log)
        render_pid = _kill_announced(pause_dir, "render", proc, log)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            _stop_group(proc)
    assert detect_pid != render_pid
    assert code == 0, log.read_text()[-5000:]
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas()
    runs = pq.read_table(out / "_anonray" / "runs").to_pandas()
    assert len(videos) == 3 and (videos.status == "ok").all()
    assert runs.iloc[0].render_retries >= 1 and runs.iloc[0].actor_restarts >= 1
    assert videos.retries.sum() >= 2  # the render retry and the detection restart, each on its video
    assert (videos.frames_out == videos.frames_in).all()
    assert not list((out / "_anonray" / "tmp").iterdir())
    assert not list((out / "_anonray" / "videos").glob("part-*-*-*.parquet"))  # early parts merged
    _assert_frame_exact(inputs, out, frames, frames)


def _scratch_of(pid: int, out: Path) -> list[Path]:
    """The private Ray folders (runtime/ray_scratch.py) that the run with driver ``pid`` made."""
    candidates = [*(out / "_anonray").glob(ray_scratch.STATE_PREFIX + "*")]
    for parent in ray_scratch.system_temp_dirs():
        candidates += parent.glob(ray_scratch.FALLBACK_PREFIX + "*")
    mine = []
    for folder in candidates:
        try:
            owner = json.loads((folder / ray_scratch.OWNER_FILE).read_text())
        except OSError:
            continue
        if owner["pid"] == pid:
            mine.append(folder)
    return mine


@pytest.mark.slow
def test_after_the_driver_is_killed_a_rerun_does_only_the_unfinished_files(tmp_path):
    inputs, out, config, frames = _inputs(tmp_path, count=4, wave=1)
    log = tmp_path / "run.log"
    command = _command(inputs, out, config)
    proc = _start(command, _env(), log)
    early_parts = out / "_anonray" / "videos"
    try:
        deadline = time.monotonic() + 300
        while not list(early_parts.glob("part-*.parquet")):  # a file is finished: its row is written
            assert proc.poll() is None, log.read_text()[-5000:]
            assert time.monotonic() < deadline, "no file finished in time"
            time.sleep(0.02)
        ray_processes = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        _stop_group(proc, locals().get("ray_processes", []))
    assert proc.returncode == -signal.SIGKILL
    killed = pq.read_table(early_parts).to_pandas()
    finished = set(killed[killed.status == "ok"].path)
    assert finished and len(finished) < len(frames), "the kill came too late to leave unfinished files"
    # no partial file at a final path: whatever is there is a whole output
    published = {p.name for p in out.iterdir() if p.name != "_anonray"}
    assert finished <= published <= set(frames)
    _assert_frame_exact(inputs, out, frames, published)
    # the killed run could not delete its private Ray folders (spilled objects, session files)
    left = _scratch_of(proc.pid, out)
    assert left and all(p.is_dir() for p in left)

    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    runs = pq.read_table(out / "_anonray" / "runs").to_pandas()
    assert len(runs) == 1  # the killed run never wrote its runs row
    videos = pq.read_table(out / "_anonray" / "videos").to_pandas()
    rows = videos[videos.run_id == runs.iloc[0].run_id]
    statuses = dict(zip(rows.path, rows.status, strict=True))
    assert statuses == {name: "skipped" if name in finished else "ok" for name in frames}
    assert not list((out / "_anonray" / "tmp").iterdir())
    assert not any(p.exists() for p in left), [  # the rerun deleted them, and nothing made them anew
        sorted(str(q.relative_to(p)) for q in p.rglob("*")) for p in left if p.exists()]
    assert {p.name for p in out.iterdir() if p.name != "_anonray"} == set(frames)
    _assert_frame_exact(inputs, out, frames, frames)
