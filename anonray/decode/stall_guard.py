"""A stall limit for decoding: a decoder that hangs costs its segment, not the run.

FFmpeg can hang on damaged data, and a read from a dead network mount can block for good; either would stop a
decode actor, and with it the whole wave of a batch, forever. ``guarded`` runs a frame iterator on a thread of
its own and hands its items over through a small queue; the iterator calls ``beat`` whenever the decoder hands
control back (once per packet read), and when no beat comes for ``stall_seconds`` the segment ends as a
``decode_stalled`` DecodeError. PyAV releases the GIL inside FFmpeg's calls, so a hang there does not stop the
waiting thread. The stalled thread is abandoned (it cannot be killed from Python): it ends if the call ever
returns, and until then keeps whatever it holds; the actor goes on with the next segment.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from anonray.decode.segment import DecodeError

T = TypeVar("T")

STALL_CLASS = "decode_stalled"
HANDOVER_ITEMS = 2
"""Items decoded ahead of the consumer (each a detection-size frame)."""
POLL_SECONDS = 0.25
"""How often a waiting side looks at the clock and at the other side's state."""

_ITEM, _END, _ERROR = "item", "end", "error"


class _Heartbeat:
    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def silent_for(self) -> float:
        return time.monotonic() - self.last


def _put(handover: queue.Queue, message: tuple[str, Any], stop: threading.Event) -> bool:
    """Hand one message over unless the consumer has gone; False once it has."""
    while not stop.is_set():
        try:
            handover.put(message, timeout=POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _produce(make: Callable[[Callable[[], None]], Iterator[T]], heartbeat: _Heartbeat, handover: queue.Queue,
             stop: threading.Event) -> None:
    items = None
    try:
        items = make(heartbeat.beat)
        for item in items:
            if not _put(handover, (_ITEM, item), stop):
                return
        _put(handover, (_END, None), stop)
    except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
        _put(handover, (_ERROR, err), stop)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # on this thread: the decoder's container is closed where it was used


def guarded(make: Callable[[Callable[[], None]], Iterator[T]], stall_seconds: float, what: str) -> Iterator[T]:
    """The items of ``make(beat)``, raising DecodeError('decode_stalled') after ``stall_seconds`` without a beat
    or an item. ``what`` names the work in that error's message (no paths: messages reach the tables and logs).
    stall_seconds 0 runs ``make`` on the caller's thread with no limit."""
    if stall_seconds <= 0:
        yield from make(lambda: None)
        return
    heartbeat, stop = _Heartbeat(), threading.Event()
    handover: queue.Queue = queue.Queue(maxsize=HANDOVER_ITEMS)
    producer = threading.Thread(target=_produce, args=(make, heartbeat, handover, stop), name="anonray-decode",
                                daemon=True)
    producer.start()
    try:
        while True:
            try:
                kind, value = handover.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if heartbeat.silent_for() > stall_seconds:
                    raise DecodeError(STALL_CLASS, f"{what}: the decoder made no progress for {stall_seconds:g} s "
                                      "and was abandoned (resources.stall_seconds)") from None
                continue
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            heartbeat.beat()  # the clock runs only while this side waits, not while its own consumer is busy
            yield value
    finally:
        stop.set()
