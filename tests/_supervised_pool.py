"""Run a function over many items in fresh worker processes, each item under a wall-clock limit kept by the parent.

For tests that feed untrusted bytes to native code (FFmpeg): a worker that hangs inside C, where no Python
signal handler can run, or that dies (a segfault), costs its one item, which is reported by name as
``hung`` or ``crashed``; a new worker takes the rest. Workers are started with ``spawn``, so they never
inherit the test process's threads (the session's Ray driver, gRPC, OpenVINO): forking a process that holds
them can leave the child stuck on a lock no thread will ever release, which a ``fork`` pool reported as
every remaining file lost.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

GRACE_SECONDS = 5.0
"""Added to the per-item limit for a worker's start (a spawned interpreter imports the function's module)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one item: status 'ok' (value is the function's result), 'hung' or 'crashed'."""

    status: str
    value: Any
    seconds: float


def _serve(function: Callable[[Any], Any], conn: Connection) -> None:
    """Worker loop: call function on each item received, send back its result, until None arrives."""
    while True:
        item = conn.recv()
        if item is None:
            return
        conn.send(function(item))


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    busy: bool = False
    item: Any = None
    started: float = 0.0
    fresh: bool = True

    def give(self, item: Any) -> None:
        self.busy, self.item, self.started = True, item, time.monotonic()
        with contextlib.suppress(OSError):  # a worker already gone: its pipe reads as closed, the item as crashed
            self.conn.send(item)

    def deadline(self, limit: float, start_grace: float) -> float:
        return self.started + limit + (start_grace if self.fresh else 0.0)

    def outcome(self, ready: list[Any], now: float, limit: float, start_grace: float) -> Outcome | None:
        """The current item's Outcome once there is one (the worker is then idle, or dead and stopped)."""
        seconds = now - self.started
        if self.conn in ready:
            try:
                value = self.conn.recv()
            except (EOFError, OSError):  # the worker died mid-item (or before it read the item)
                self.stop()
                return Outcome("crashed", self.process.exitcode, seconds)
            self.busy, self.fresh = False, False
            return Outcome("ok", value, seconds)
        if now >= self.deadline(limit, start_grace):
            self.stop()
            return Outcome("hung", None, seconds)
        return None

    def stop(self) -> None:
        """End the process: politely when idle, by SIGKILL when it does not end within a second."""
        if self.process.is_alive() and not self.busy:
            with contextlib.suppress(OSError):  # it died meanwhile
                self.conn.send(None)
                self.process.join(1.0)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()
        self.busy = True  # never given work again


def _start(ctx: Any, function: Callable[[Any], Any]) -> _Worker:
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(function, child), daemon=True)
    process.start()
    child.close()
    return _Worker(process, parent)


def run_supervised(
    function: Callable[[Any], Any],
    items: Iterable[Any],
    processes: int = 2,
    item_limit: float = 10.0,
    start_grace: float = GRACE_SECONDS,
) -> dict[Any, Outcome]:
    """Every item's Outcome. function must be importable by name (a module-level function); items must be
    hashable and distinct. A worker's first item may also take start_grace (the interpreter's start)."""
    ctx = multiprocessing.get_context("spawn")
    todo = deque(items)
    outcomes: dict[Any, Outcome] = {}
    workers: list[_Worker] = []
    try:
        while todo or workers:
            while todo and len(workers) < processes:
                workers.append(_start(ctx, function))
            for worker in workers:
                if todo and not worker.busy:
                    worker.give(todo.popleft())
            busy = [w for w in workers if w.busy]
            if not busy:
                break
            timeout = max(0.0, min(w.deadline(item_limit, start_grace) for w in busy) - time.monotonic())
            ready = wait([w.conn for w in busy], timeout=timeout)
            now = time.monotonic()
            for worker in busy:
                outcome = worker.outcome(ready, now, item_limit, start_grace)
                if outcome is not None:
                    outcomes[worker.item] = outcome
            workers = [w for w in workers if w.process.exitcode is None]  # the stopped ones go
    finally:
        for worker in workers:
            worker.stop()
    return outcomes
