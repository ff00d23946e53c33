"""The one point where product code lets a test inject a fault (anonray/testing/faults.py says which).

``fault_point`` does nothing unless an ``ANONRAY_TEST_*`` environment variable is set, which only tests do
(Ray workers inherit it from the driver that starts a local Ray)."""

from __future__ import annotations

import os

TEST_ENV_PREFIX = "ANONRAY_TEST_"


def fault_point(point: str, subject: str | os.PathLike | None = None) -> None:
    """Reached before ``point`` ("decode", "detect", "render", "read", "upload",
    "decode_source") acts on ``subject``."""
    if not any(name.startswith(TEST_ENV_PREFIX) for name in os.environ):
        return
    from anonray.testing import faults  # test support, loaded only where a test asked for it

    faults.reach(point, subject)
