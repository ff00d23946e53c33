"""Privacy of the process: what `anonray run` writes outside its restricted outputs.

Logs and progress name files by a short hash and never hold paths, case names, coordinates or
image content; the local Ray instance's session files and spilled objects go to a private (0700)
folder that is deleted after the run (runtime/ray_scratch.py). The end-to-end tests run the CLI as a
subprocess, as test_cli.py does: it starts its own local Ray, never the pytest session's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from anonray.config import Config, ConfigError
from anonray.runtime import ray_scratch
from anonray.testing.samples import SampleTruth, write_sample_video

CASES = {"witness_Smith/case_JohnDoe_4711.mp4": 3, "witness_Smith/case_JaneRoe_0815.mp4": 4}
"""Input paths (relative to the input folder) that are personal data, and the seed of each clip."""
NAMES = ["witness_Smith", "case_JohnDoe_4711", "case_JaneRoe_0815", "JohnDoe", "JaneRoe"]
IMAGE_MAGIC = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"/9j/", b"iVBORw0KGgo", b"data:image/"]
"""JPEG and PNG signatures, raw and base64, and data URLs."""


# ---------------------------------------------------------------- what must never appear

def _num(v: int) -> bytes:
    return rb"(?<![\d.])" + str(int(v)).encode() + rb"(?:\.0+)?(?![\d.])"


def coordinate_pattern(truths: list[SampleTruth]) -> re.Pattern[bytes]:
    """Every truth box as "x0,y0" / "x0, y0" (both corners) or its four numbers in a row."""
    sep = rb"\s*,\s*"
    run = rb"[\s,;]+"
    alternatives = set()
    for truth in truths:
        for boxes in (truth.face_boxes, truth.plate_boxes):
            for x0, y0, x1, y1 in boxes.tolist():
                alternatives.add(_num(x0) + sep + _num(y0))
                alternatives.add(_num(x1) + sep + _num(y1))
                alternatives.add(_num(x0) + run + _num(y0) + run + _num(x1) + run + _num(y1))
    return re.compile(b"|".join(sorted(alternatives)))


def leaks(data: bytes, coordinates: re.Pattern[bytes], images: bool = True) -> list[str]:
    """What of the forbidden content ``data`` holds (empty when clean)."""
    found = [f"name {n!r}" for n in NAMES if n.encode() in data]
    found += [f"coordinates {m.group().decode(errors='replace')!r}" for m in [coordinates.search(data)] if m]
    if images:
        found += [f"image bytes {m!r}" for m in IMAGE_MAGIC if m in data]
    return found


# ---------------------------------------------------------------- running the CLI

@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SampleTruth]]:
    """An input folder with two short clips whose paths are personal data."""
    root = tmp_path_factory.mktemp("privacy") / "in"
    truths = []
    for relative, seed in CASES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        truths.append(write_sample_video(root / relative, frames=24, seed=seed))
    return root, truths


@pytest.fixture
def short_dir():
    """A folder with a short path (Ray's unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="arp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def anonray_run(inputs: Path, out: Path, *extra: str | Path, env_extra: dict | None = None,
                watch=None) -> subprocess.CompletedProcess:
    """``python -m anonray run INPUTS --output OUT --mask solid ...`` with its own local Ray.

    ``watch`` is called every 50 ms while the run goes on (to see its folders while they exist).
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "anonray", "run", str(inputs), "--output", str(out), "--mask", "solid",
           *map(str, extra)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          env=env) as proc:
        done = threading.Event()

        def poll():
            while not done.is_set():
                watch()
                time.sleep(0.05)

        watcher = threading.Thread(target=poll, daemon=True) if watch else None
        if watcher:
            watcher.start()
        try:
            stdout, stderr = proc.communicate(timeout=420)
        finally:
            done.set()
            if watcher:
                watcher.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def assert_clean_output(result: subprocess.CompletedProcess, coordinates: re.Pattern[bytes]) -> None:
    text = result.stdout + result.stderr
    assert result.returncode == 0, text.decode(errors="replace")[-4000:]
    assert b"2 ok" in result.stdout
    assert not leaks(text, coordinates), (leaks(text, coordinates), text.decode(errors="replace")[-4000:])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- end to end

def test_default_ray_folders_are_private_and_removed(cases, tmp_path, short_dir):
    """Default settings: the pytest output path is too long for Ray's sockets, so the session folder
    is a 0700 folder in the system temp dir (here ``short_dir`` by $TMPDIR) and spilled objects go to
    DIR/_anonray/ray-*; both exist during the run, are private, and are gone after it."""
    inputs, truths = cases
    out = tmp_path / "out"
    seen: dict[Path, set[int]] = {}
    sessions: set[Path] = set()

    def watch():
        for folder in [*short_dir.glob(ray_scratch.FALLBACK_PREFIX + "*"),
                       *(out / "_anonray").glob(ray_scratch.STATE_PREFIX + "*")]:
            try:
                seen.setdefault(folder, set()).add(_mode(folder))  # every mode it had during the run
                sessions.update(folder.glob(f"{ray_scratch.RAY_SUBDIR}/session_*"))
            except OSError:  # deleted between glob and stat
                pass

    result = anonray_run(inputs, out, env_extra={"TMPDIR": str(short_dir)}, watch=watch)
    assert_clean_output(result, coordinate_pattern(truths))

    temp = [p for p in seen if p.parent == short_dir]
    state = [p for p in seen if p.parent == out / "_anonray"]
    assert len(temp) == 1 and len(state) == 1, seen
    assert sessions and all(s.parent.parent == temp[0] for s in sessions), "Ray's session is elsewhere"
    assert seen == {temp[0]: {0o700}, state[0]: {0o700}}  # Ray chmods its own folders 0777: not these
    for folder in seen:
        assert not folder.exists(), f"{folder} left behind after the run"
    assert not list(short_dir.glob(ray_scratch.FALLBACK_PREFIX + "*"))
    assert not list((out / "_anonray").glob(ray_scratch.STATE_PREFIX + "*"))
    # What other libraries leave in the system temp dir (torch's compile cache, ...) must be clean too.
    coordinates = coordinate_pattern(truths)
    left = {str(p): leaks(p.read_bytes(), coordinates, images=False)
            for p in short_dir.rglob("*") if p.is_file() and not p.is_symlink()}
    assert not {p: bad for p, bad in left.items() if bad}


def test_ray_session_files_hold_no_names_or_coordinates(cases, tmp_path, short_dir):
    """With resources.keep_ray_temp the folder stays, so every file Ray wrote can be searched."""
    inputs, truths = cases
    out = tmp_path / "out"
    config = tmp_path / "config.yaml"
    config.write_text(f"resources:\n  ray_temp_dir: {short_dir}\n  keep_ray_temp: true\n")
    result = anonray_run(inputs, out, "--config", config)
    coordinates = coordinate_pattern(truths)
    assert_clean_output(result, coordinates)

    (scratch,) = short_dir.iterdir()
    assert scratch.name.startswith(ray_scratch.CONFIGURED_PREFIX) and _mode(scratch) == 0o700
    assert not list((out / "_anonray").glob(ray_scratch.STATE_PREFIX + "*"))  # nothing beside the outputs
    files = [p for p in scratch.rglob("*") if p.is_file() and not p.is_symlink()]
    logs = [p for p in files if "logs" in p.parts]
    assert any(p.suffix in (".out", ".err", ".log") and p.stat().st_size for p in logs), "no Ray session logs"
    worker_logs = [p for p in logs if p.name.startswith("worker-")]
    assert worker_logs, "no worker logs: the search would miss what tasks print"
    found = {}
    for path in files:
        # Every file, binary ones too (spilled objects, if any, are pickled records and arrays: a name
        # or a path in one would be found here). Image signatures only in logs: 3 random bytes turn up
        # in binary files.
        bad = leaks(path.read_bytes(), coordinates, images=path in logs)
        if bad:
            found[str(path.relative_to(scratch))] = bad
    assert not found


# ---------------------------------------------------------------- the folders, without Ray

def test_scratch_in_the_state_folder_when_short_enough(short_dir):
    scratch = ray_scratch.for_local_ray(short_dir, Config().resources)
    (private,) = scratch.owned
    assert private.parent == short_dir and private.name.startswith(ray_scratch.STATE_PREFIX)
    assert scratch.temp_dir.parent == private and scratch.spill_dir.parent == private
    assert _mode(private) == 0o700
    kwargs = scratch.ray_init_kwargs()
    assert kwargs["_temp_dir"] == str(scratch.temp_dir)
    assert str(scratch.spill_dir) in kwargs["_system_config"]["object_spilling_config"]
    (scratch.temp_dir / "session_x" / "logs").mkdir(parents=True, mode=0o777)
    (scratch.temp_dir / "session_x" / "logs" / "worker.out").write_text("x")
    scratch.remove()
    assert not list(short_dir.iterdir())


def test_scratch_falls_back_to_a_private_temp_folder_for_long_paths(tmp_path, short_dir, monkeypatch):
    state = tmp_path / ("long" * 12)
    state.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(short_dir))
    scratch = ray_scratch.for_local_ray(state, Config().resources)
    private = scratch.temp_dir.parent
    assert private.parent == short_dir and private.name.startswith(ray_scratch.FALLBACK_PREFIX)
    assert len(os.fsencode(private)) <= ray_scratch.TEMP_DIR_MAX
    assert scratch.spill_dir.parent.parent == state  # spilled objects stay beside the outputs
    assert all(_mode(p) == 0o700 for p in scratch.owned)
    scratch.remove()
    assert not list(short_dir.iterdir()) and not list(state.iterdir())


def test_kept_scratch_stays(short_dir):
    resources = Config().with_overrides(**{"resources.keep_ray_temp": True}).resources
    scratch = ray_scratch.for_local_ray(short_dir, resources)
    scratch.remove()
    assert scratch.temp_dir.is_dir()


@pytest.mark.parametrize(("value", "message"), [("relative/dir", "absolute"), ("/" + "x" * 40, "too long")])
def test_unusable_ray_temp_dir_is_a_config_error(tmp_path, value, message):
    resources = Config().with_overrides(**{"resources.ray_temp_dir": value}).resources
    with pytest.raises(ConfigError, match=message):
        ray_scratch.for_local_ray(tmp_path, resources)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- folders left by a killed run

def _scratch_of_a_process_that_exits(state: Path, temp_dir: Path) -> list[Path]:
    """The private folders a run makes (for_local_ray) in a process that then dies without deleting them."""
    code = ("import sys, tempfile\n"
            "from pathlib import Path\n"
            "from anonray.runtime import ray_scratch\n"
            "from anonray.config import Config\n"
            "tempfile.tempdir = sys.argv[2]\n"
            "scratch = ray_scratch.for_local_ray(Path(sys.argv[1]), Config().resources)\n"
            "(scratch.spill_dir / 'spilled-frames').write_bytes(b'x')\n"
            "print('\\n'.join(str(p) for p in scratch.owned))\n")
    done = subprocess.run([sys.executable, "-c", code, str(state), str(temp_dir)], capture_output=True, text=True,
                          check=True, timeout=120)
    return [Path(line) for line in done.stdout.split()]


def test_a_later_run_deletes_the_folders_of_a_killed_run_and_only_those(tmp_path, short_dir, monkeypatch):
    state = tmp_path / ("long" * 12)  # too long for Ray's sockets: a fallback folder in the temp dir too
    state.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(short_dir))
    monkeypatch.setattr(ray_scratch, "system_temp_dirs", lambda: [short_dir])
    dead = _scratch_of_a_process_that_exits(state, short_dir)
    assert {p.parent for p in dead} == {state, short_dir} and all(p.is_dir() for p in dead)
    live = ray_scratch.for_local_ray(state, Config().resources)  # this process's own: still running
    unknown = state / (ray_scratch.STATE_PREFIX + "noowner")  # no owner file: never judged
    unknown.mkdir()
    elsewhere = short_dir / (ray_scratch.FALLBACK_PREFIX + "otherhost")
    elsewhere.mkdir()
    (elsewhere / ray_scratch.OWNER_FILE).write_text('{"host": "another-host", "pid_namespace": null, "pid": 1, '
                                                    '"started": 0}')
    container = state / (ray_scratch.STATE_PREFIX + "othercontainer")  # same host name, other pid namespace
    container.mkdir()
    owner = json.loads((dead[0] / ray_scratch.OWNER_FILE).read_text())
    (container / ray_scratch.OWNER_FILE).write_text(json.dumps({**owner, "pid_namespace": -1}))

    assert sorted(ray_scratch.orphan_folders(state, Config().resources)) == sorted(p.resolve() for p in dead)
    assert ray_scratch.remove_orphans(state, Config().resources) == 2
    assert not any(p.exists() for p in dead)
    assert all(p.is_dir() for p in [*live.owned, unknown, elsewhere, container])
    assert ray_scratch.remove_orphans(state, Config().resources) == 0
    live.remove()


# ---------------------------------------------------------------- a Ray process still running when its folder goes

_LATE_WORKER = ("import os, signal, sys, time\n"
                "if sys.argv[2] == 'ignore-sigterm':\n"
                "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "logs = sys.argv[1].split('=', 1)[1] + '/session_x/logs'\n"
                "while True:\n"
                "    os.makedirs(logs, exist_ok=True)\n"
                "    time.sleep(0.01)\n")


def _late_ray_worker(temp_dir: Path, sigterm: str) -> subprocess.Popen:
    """A process like a Ray worker that was still starting when its Ray instance stopped: its command line
    names Ray's temp folder and it creates its session folders there, again and again (Node._init_temp)."""
    worker = subprocess.Popen([sys.executable, "-c", _LATE_WORKER, f"--temp-dir={temp_dir}", sigterm])
    deadline = time.monotonic() + 60
    while not (temp_dir / "session_x" / "logs").is_dir():
        assert worker.poll() is None and time.monotonic() < deadline, "the late worker did not start"
        time.sleep(0.02)
    return worker


def _assert_stays_gone(folders: list[Path], worker: subprocess.Popen) -> None:
    time.sleep(0.5)  # long enough for a still running worker to have made its folders again
    assert worker.poll() is not None, "the late worker still runs"
    assert not any(p.exists() for p in folders)


@pytest.mark.parametrize("sigterm", ["exit-on-sigterm", "ignore-sigterm"])
def test_a_late_ray_worker_cannot_bring_the_private_folder_back(short_dir, monkeypatch, sigterm):
    monkeypatch.setattr(ray_scratch, "STOP_GRACE_S", 0.5)
    scratch = ray_scratch.for_local_ray(short_dir, Config().resources)
    worker = _late_ray_worker(scratch.temp_dir, sigterm)
    try:
        scratch.remove()
        _assert_stays_gone(scratch.owned, worker)
        assert not list(short_dir.iterdir())
    finally:
        worker.kill()
        worker.wait()


def test_a_later_run_stops_the_killed_runs_leftover_ray_processes(tmp_path, short_dir, monkeypatch):
    state = tmp_path / ("long" * 12)
    state.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(short_dir))
    monkeypatch.setattr(ray_scratch, "system_temp_dirs", lambda: [short_dir])
    dead = _scratch_of_a_process_that_exits(state, short_dir)
    (temp,) = [p for p in dead if p.parent == short_dir]
    worker = _late_ray_worker(temp / ray_scratch.RAY_SUBDIR, "exit-on-sigterm")
    try:
        assert ray_scratch.remove_orphans(state, Config().resources) == 2
        _assert_stays_gone(dead, worker)
    finally:
        worker.kill()
        worker.wait()
