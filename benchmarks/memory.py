"""Peak memory of a process tree while it runs: what benchmarks report beside their speed figures.

Sampled every ``interval`` seconds in a thread:

- ``peak_rss_mb``: the largest sum of resident set sizes over the process and all its descendants (Ray's
  GCS, raylet and workers are the driver's descendants). Shared pages, such as object store pages a worker
  has mapped, count once per process that touched them, so this overstates what the machine needs;
- ``peak_shm_mb``: the largest growth of /dev/shm's used bytes since the start, where Ray's object store
  lives on Linux (None where there is no /dev/shm).
"""

from __future__ import annotations

import shutil
import threading
from typing import Any

import psutil

SHM = "/dev/shm"


def _shm_used() -> int | None:
    try:
        return shutil.disk_usage(SHM).used
    except OSError:
        return None


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


class PeakMemory:
    """``with PeakMemory(pid) as peak: ...``; then ``peak.result()``."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._shm_base = _shm_used()
        self.peak_rss = 0
        self.peak_shm = 0

    def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, _tree_rss(self._root))
            used = _shm_used()
            if used is not None and self._shm_base is not None:
                self.peak_shm = max(self.peak_shm, used - self._shm_base)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, Any]:
        return {"peak_rss_mb": self.peak_rss / 2**20,
                "peak_shm_mb": None if self._shm_base is None else self.peak_shm / 2**20}
