"""Private, short-lived folders for the session files and spilled objects of a local Ray instance.

Ray's session logs and spilled objects can hold personal data (frames, boxes, file records), and by default
they sit in ``/tmp/ray``, readable by other users. When ``anonray run`` starts its own local Ray, it points
both at a fresh folder private to the user (0700, by default ``DIR/_anonray/ray-XXXXXXXX``) and deletes it
after the run, also when the run fails; ``remove_orphans`` deletes the folders of killed runs on the same
host. A cluster joined with ``--address`` keeps its own folders. Details: docs/design.md,
"runtime/ray_scratch.py".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from anonray.config import ConfigError, ResourceConfig
from anonray.layout import PRIVATE_DIR_MODE
from anonray.store.private_dirs import new_private_dir

log = logging.getLogger("anonray")

SOCKET_PATH_MAX = 107
"""Bytes in a unix socket path on Linux (108 with the terminating NUL; macOS: 103)."""
SESSION_SOCKET_SUFFIX = "/session_2000-01-01_00-00-00_000000_4194304/sockets/plasma_store.99"
"""The longest path Ray puts under its temp folder for a socket (pid up to 7 digits, an index)."""
RAY_SUBDIR = "r"
"""Ray's temp folder inside the private folder (Ray chmods it 0777; the private parent stays 0700)."""
TEMP_DIR_MAX = SOCKET_PATH_MAX - len(SESSION_SOCKET_SUFFIX) - len(RAY_SUBDIR) - 1
"""The longest private folder (bytes) for which Ray's socket paths still fit: 38."""
STATE_PREFIX = "ray-"
FALLBACK_PREFIX = "anonray-ray-"
CONFIGURED_PREFIX = "anonray-"
_RANDOM_NAME_BYTES = 8  # tempfile.mkdtemp's random part
OWNER_FILE = "owner.json"
"""In each private folder: which process (host, pid namespace, pid, start time) created it, for
``remove_orphans``."""
STOP_GRACE_S = 3.0
"""How long a process still using a folder that is about to be deleted gets to exit after SIGTERM (then
SIGKILL)."""


@dataclass
class RayScratch:
    """The folders one run's local Ray writes to, and the private (0700) folders that hold them, which
    the run deletes afterwards."""

    temp_dir: Path
    spill_dir: Path
    owned: list[Path] = field(default_factory=list)
    keep: bool = False

    def ray_init_kwargs(self) -> dict:
        """The arguments of ``ray.init`` that send session files and spilled objects here."""
        spilling = {"type": "filesystem", "params": {"directory_path": str(self.spill_dir)}}
        return {"_temp_dir": str(self.temp_dir), "_system_config": {"object_spilling_config": json.dumps(spilling)}}

    def remove(self) -> None:
        """Delete the owned folders (call after ``ray.shutdown()``); never raises."""
        if self.keep:
            log.warning("Ray's session and spill folders are kept (resources.keep_ray_temp): they hold "
                        "personal data, delete them when done")
            return
        for folder in self.owned:
            if not _delete(folder):
                log.warning("could not delete Ray's private temp folder after the run (see resources.ray_temp_dir)")


def _processes_in(folder: Path) -> list[psutil.Process]:
    """This user's processes, other than this one, whose command line names a path inside ``folder``."""
    prefixes = tuple({str(folder) + os.sep, str(folder.resolve()) + os.sep})
    found = []
    for process in psutil.process_iter(["cmdline", "uids"]):
        try:
            cmdline, uids = process.info["cmdline"] or [], process.info["uids"]
            if process.pid == os.getpid() or uids is None or uids.real != os.getuid():
                continue
        except (psutil.Error, KeyError):
            continue
        if any(prefix in arg for arg in cmdline for prefix in prefixes):
            found.append(process)
    return found


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (a zombie counts as exited); those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for process in processes:
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)
        processes = alive


def stop_processes_in(folder: Path, grace: float | None = None) -> int:
    """Stop the processes still using ``folder`` (SIGTERM, SIGKILL after ``grace`` seconds, default
    ``STOP_GRACE_S``), so that none creates it anew once deleted; the number stopped. Never raises."""
    grace = STOP_GRACE_S if grace is None else grace
    stopped = 0
    for _ in range(3):  # a raylet still running may start a worker meanwhile
        processes = _processes_in(folder)
        if not processes:
            break
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        for process in _wait_gone(processes, grace):
            with contextlib.suppress(psutil.Error):
                process.kill()
        _wait_gone(processes, grace)
        stopped += len(processes)
    if stopped:
        log.info("stopped %d leftover Ray process(es) before deleting their private folder", stopped)
    return stopped


def _delete(folder: Path, attempts: int = 5) -> bool:
    """Stop the processes still using ``folder`` (``stop_processes_in``), then delete it, trying ``attempts``
    times (Ray's processes may still flush a log line while they exit); whether it is gone."""
    stop_processes_in(folder)
    for attempt in range(attempts):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return True
        if attempt + 1 < attempts:
            time.sleep(0.2 * (attempt + 1))
    return False


def _fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= TEMP_DIR_MAX


def _private_dir(prefix: str, parent: Path | str | None) -> Path:
    """A fresh private folder with its owner file."""
    path = new_private_dir(prefix, parent)
    (path / OWNER_FILE).write_text(json.dumps(_owner(psutil.Process())))
    return path


def _pid_namespace() -> int | None:
    """The inode of this process's pid namespace (Linux), so that a container's pids are never judged from
    another container of the same host name; None elsewhere."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _owner(process: psutil.Process) -> dict:
    return {"host": socket.gethostname(), "pid_namespace": _pid_namespace(), "pid": process.pid,
            "started": process.create_time()}


def _is_orphan(folder: Path) -> bool:
    """Whether ``folder`` was made by a process of this host (and pid namespace) that no longer runs (pids
    are reused: the start time must match too). Unknown owners (no or unreadable owner file), other hosts
    and other pid namespaces: False."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        pid, started, host = int(owner["pid"]), float(owner["started"]), str(owner["host"])
        namespace = owner["pid_namespace"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or namespace != _pid_namespace():
        return False
    try:
        return abs(psutil.Process(pid).create_time() - started) > 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # exists, but cannot be inspected: not ours to judge
        return False


def system_temp_dirs() -> list[Path]:
    """Where fallback folders are made (``for_local_ray``): the system temp dir, and /tmp."""
    return [Path(tempfile.gettempdir()), Path("/tmp")]


def orphan_folders(state_dir: Path | None, resources: ResourceConfig) -> list[Path]:
    """The private folders of earlier local Ray instances whose run was killed before deleting them: under
    ``state_dir``, in the system temp dir (and /tmp) and under ``resources.ray_temp_dir``."""
    places = [(parent, FALLBACK_PREFIX) for parent in system_temp_dirs()]
    if state_dir is not None:
        places.append((Path(state_dir), STATE_PREFIX))
    if resources.ray_temp_dir and Path(resources.ray_temp_dir).is_absolute():
        places.append((Path(resources.ray_temp_dir), CONFIGURED_PREFIX))
    found: dict[Path, None] = {}
    for parent, prefix in places:
        try:
            candidates = [p for p in parent.glob(prefix + "*") if p.is_dir() and not p.is_symlink()]
        except OSError:
            continue
        for folder in candidates:
            if _is_orphan(folder):
                found.setdefault(folder.resolve(), None)
    return list(found)


def remove_orphans(state_dir: Path | None, resources: ResourceConfig) -> int:
    """Delete ``orphan_folders``; the number deleted (logged as a count only). Never raises."""
    removed = 0
    for folder in orphan_folders(state_dir, resources):
        removed += _delete(folder, attempts=1)  # its Ray is long gone: nothing left to flush
    if removed:
        log.warning("deleted %d private Ray folder(s) (session files, spilled objects) left by an earlier run "
                    "that was killed before it could delete them", removed)
    return removed


def _subdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir(mode=PRIVATE_DIR_MODE)
    return path


def for_local_ray(state_dir: Path, resources: ResourceConfig) -> RayScratch:
    """Create the private folders for a local Ray instance of this run (see the module docstring)."""
    if resources.ray_temp_dir:
        base = Path(resources.ray_temp_dir)
        if not base.is_absolute():
            raise ConfigError("invalid configuration:\n  resources.ray_temp_dir: must be an absolute path")
        longest = TEMP_DIR_MAX - len(CONFIGURED_PREFIX) - _RANDOM_NAME_BYTES - 1
        if len(os.fsencode(base)) > longest:
            raise ConfigError("invalid configuration:\n  resources.ray_temp_dir: too long for Ray's unix socket "
                              f"paths (at most {longest} bytes)")
        base.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        own = _private_dir(CONFIGURED_PREFIX, base)
        return RayScratch(_subdir(own, RAY_SUBDIR), _subdir(own, "spill"), [own], resources.keep_ray_temp)

    own = _private_dir(STATE_PREFIX, state_dir)
    spill = _subdir(own, "spill")
    if _fits(own):
        return RayScratch(_subdir(own, RAY_SUBDIR), spill, [own], resources.keep_ray_temp)
    # The output's path is too long for Ray's unix sockets (< 108 bytes): Ray's session folder goes to
    # a private 0700 folder in the system temp dir (or /tmp where $TMPDIR is long too); spilled objects
    # still go to the state folder.
    system_tmp = tempfile.gettempdir()
    parent = system_tmp if len(os.fsencode(system_tmp)) + len(FALLBACK_PREFIX) + _RANDOM_NAME_BYTES + 1 \
        <= TEMP_DIR_MAX else "/tmp"
    temp = _private_dir(FALLBACK_PREFIX, parent)
    return RayScratch(_subdir(temp, RAY_SUBDIR), spill, [temp, own], resources.keep_ray_temp)
