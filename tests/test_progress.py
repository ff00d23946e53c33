"""The live progress line: counts, rates and the estimate of the time left (never paths)."""

from __future__ import annotations

import pytest

from anonray.runtime.progress import Counters


def test_progress_estimates_the_time_left_from_the_input_bytes_done() -> None:
    counters = Counters()
    counters.total, counters.total_bytes = 4, 400
    assert counters.seconds_left(10.0) is None  # nothing finished yet: no rate
    counters.ok, counters.bytes_done = 1, 100
    assert counters.seconds_left(10.0) == pytest.approx(30.0)
    counters.total_bytes = 0  # sizes unknown: by files
    assert counters.seconds_left(10.0) == pytest.approx(30.0)
    counters.ok, counters.bytes_done = 4, 400
    assert counters.seconds_left(40.0) is None and "left" not in counters.line()
    counters.ok, counters.total, counters.total_bytes, counters.bytes_done = 1, 4, 400, 100
    counters.started -= 60  # a minute in, a quarter done: three minutes left
    assert "about 3 min left" in counters.line()


def test_live_display_takes_log_lines_above_it_and_gives_the_stream_back() -> None:
    """On a terminal the live line owns the console stream: anonray's log records go through it (not mixed into
    the line), sys.stderr is left alone (Ray's notices go where runtime/console.py sends fd 2), and closing
    (also after an exception) gives the handlers their stream back."""
    import io
    import logging
    import sys

    from anonray.runtime.progress import ConsoleProgress

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    stderr = sys.stderr
    try:
        progress = ConsoleProgress(live=True, stream=stream)
        progress.start(2)
        assert handler.stream is not stream and sys.stderr is stderr
        logging.getLogger("anonray").warning("a line of anonray's")
        progress.close()
        progress.close()  # idempotent
        assert handler.stream is stream and "a line of anonray's" in stream.getvalue()
    finally:
        root.removeHandler(handler)
