"""The fuzz test's supervisor: a hung or crashing item costs that item only, and is named."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

from _supervised_pool import run_supervised


def misbehave(item: str) -> str:
    """Hang on 'hang' (no return for an hour), die by SIGSEGV on 'crash', else echo the item upper-cased."""
    if item == "hang":
        time.sleep(3600)
    if item == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    return item.upper()


def test_hung_and_crashed_items_are_named_and_the_rest_complete():
    items = ["a", "b", "hang", "crash", "c", "d", "e"]  # "hang" reaches a worker that has run "a" or "b"
    started = time.monotonic()
    outcomes = run_supervised(misbehave, items, processes=2, item_limit=1.0, start_grace=10.0)
    assert set(outcomes) == set(items)
    assert outcomes["hang"].status == "hung" and 1.0 <= outcomes["hang"].seconds < 5.0
    assert outcomes["crash"].status == "crashed" and outcomes["crash"].value == -signal.SIGSEGV
    for item in ("a", "b", "c", "d", "e"):
        assert outcomes[item].status == "ok" and outcomes[item].value == item.upper()
    assert time.monotonic() - started < 60
    assert not multiprocessing.active_children()  # every worker ended, the killed ones included
