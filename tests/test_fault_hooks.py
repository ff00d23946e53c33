"""The one fault hook point: inert (test support never even loaded) unless a test switched it on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from anonray.fault_hooks import TEST_ENV_PREFIX, fault_point
from anonray.testing.faults import DENY_READ_ENV

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_test_variable_the_hook_does_nothing_and_loads_nothing(tmp_path):
    marked = tmp_path / "clip-deny.mp4"
    marked.write_bytes(b"x")
    env = {k: v for k, v in os.environ.items() if not k.startswith(TEST_ENV_PREFIX)}
    code = textwrap.dedent(f"""
        import sys
        from anonray.fault_hooks import fault_point
        for point in ("decode", "detect", "render"):
            fault_point(point)
        fault_point("read", {str(marked)!r})
        fault_point("upload", "bucket/clip-deny.mp4")
        print("LOADED", "anonray.testing.faults" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED False" in proc.stdout


def test_a_marked_read_fails_once_a_test_asks_for_it(tmp_path, monkeypatch):
    monkeypatch.setenv(DENY_READ_ENV, "-deny")
    with pytest.raises(PermissionError):
        fault_point("read", tmp_path / "clip-deny.mp4")
    fault_point("read", tmp_path / "clip.mp4")  # unmarked files read as usual


def test_an_unknown_point_is_a_programming_error(monkeypatch):
    monkeypatch.setenv(DENY_READ_ENV, "-deny")
    with pytest.raises(ValueError, match="unknown fault point"):
        fault_point("encode")
