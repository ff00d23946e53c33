"""A stall limit for work that reads untrusted input: a reader that hangs costs its file, not the run.

FFmpeg can hang on damaged data, and a read from a dead network mount can block for good; either would stop an
ingest task or a decode actor, and with it the whole wave of a batch, forever. ``guarded`` runs an iterator on
a thread of its own and hands its items over through a small queue; the work calls ``beat`` whenever the
reader hands control back (a packet demuxed, a chunk read), and when neither a beat nor an item comes for
``stall_seconds`` while the caller waits, the caller gets the stage's own error (``on_stall``). PyAV releases
the GIL inside FFmpeg's calls, so a hang there does not stop the waiting thread. The stalled thread is
abandoned (Python cannot kill a thread): if its call ever returns, its next beat raises ``Abandoned`` and it
unwinds; until then it keeps what it holds.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Heartbeat = Callable[[], None]
"""Called by guarded work whenever its reader hands control back (once per packet or chunk read)."""

HANDOVER_ITEMS = 2
"""Items made ahead of the caller (for decoding, each a detection-size frame)."""
POLL_SECONDS = 0.25
"""How often a waiting side looks at the clock and at the other side's state."""

_ITEM, _END, _ERROR = "item", "end", "error"


def no_beat() -> None:
    """The heartbeat of work nobody watches."""


def stall_message(what: str, stall_seconds: float) -> str:
    """The message of a stall error; what names the work (no personal data: messages reach tables and logs)."""
    return f"{what}: no progress for {stall_seconds:g} s; abandoned (resources.stall_seconds)"


class Abandoned(Exception):
    """Raised by a heartbeat once its caller has stopped waiting: the work unwinds at its next beat."""


class _Clock:
    def __init__(self, stop: threading.Event) -> None:
        self.last = time.monotonic()
        self.stop = stop

    def beat(self) -> None:
        if self.stop.is_set():
            raise Abandoned("the caller stopped waiting for this work")
        self.last = time.monotonic()

    def restart(self) -> None:
        self.last = time.monotonic()

    def silent_for(self) -> float:
        return time.monotonic() - self.last


def _put(handover: queue.Queue, message: tuple[str, Any], stop: threading.Event) -> bool:
    """Hand one message over unless the caller has gone; False once it has."""
    while not stop.is_set():
        try:
            handover.put(message, timeout=POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _produce(make: Callable[[Heartbeat], Iterator[T]], clock: _Clock, handover: queue.Queue,
             stop: threading.Event) -> None:
    items = None
    try:
        items = make(clock.beat)
        for item in items:
            if not _put(handover, (_ITEM, item), stop):
                return
        _put(handover, (_END, None), stop)
    except BaseException as err:  # noqa: BLE001 - handed to the caller, which raises it
        _put(handover, (_ERROR, err), stop)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # on this thread: a decoder's container is closed where it was used


def guarded(make: Callable[[Heartbeat], Iterator[T]], stall_seconds: float,
            on_stall: Callable[[], BaseException]) -> Iterator[T]:
    """The items of ``make(beat)``, made on a thread of its own; raises ``on_stall()`` after ``stall_seconds``
    of waiting without a beat or an item. stall_seconds 0 runs ``make`` on the caller's thread, no limit."""
    if stall_seconds <= 0:
        yield from make(no_beat)
        return
    stop = threading.Event()
    clock = _Clock(stop)
    handover: queue.Queue = queue.Queue(maxsize=HANDOVER_ITEMS)
    producer = threading.Thread(target=_produce, args=(make, clock, handover, stop), name="anonray-guarded",
                                daemon=True)
    producer.start()
    try:
        while True:
            try:
                kind, value = handover.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if clock.silent_for() > stall_seconds:
                    raise on_stall() from None
                continue
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            clock.restart()  # the clock runs only while the caller waits, not while the caller's consumer is busy
            yield value
    finally:
        stop.set()


def call_guarded(run: Callable[[Heartbeat], R], stall_seconds: float, on_stall: Callable[[], BaseException]) -> R:
    """``run(beat)``'s result, under the same stall limit as ``guarded``."""
    for value in guarded(lambda beat: iter([run(beat)]), stall_seconds, on_stall):
        return value
    raise AssertionError("unreachable: guarded work ends with its one value or an error")
