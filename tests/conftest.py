"""Shared fixtures: synthetic sample clips, generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from anonray.testing.faults import DENY_READ_ENV, HANG_DECODE_ENV, HANG_READ_ENV
from anonray.testing.samples import SAMPLE_FORMATS, SampleTruth, sample_paths, write_sample_video

DENY_READ_MARKER = "no-read-permission"
"""Inputs named with this marker raise PermissionError when read, in the session-wide Ray's workers."""
HANG_DECODE_MARKER = "decoder-hangs"
"""Decoding inputs named with this marker hangs, in the session-wide Ray's workers (anonray/stall_guard.py)."""
HANG_READ_MARKER = "reader-hangs"
"""Ingesting inputs named with this marker hangs, in the session-wide Ray's workers."""


@pytest.fixture(scope="session")
def sample_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, SampleTruth]]:
    """One short clip per sample format: name -> (path, truth)."""
    folder = tmp_path_factory.mktemp("samples")
    clips = {}
    for seed, (name, path) in enumerate(sample_paths(folder)):
        clips[name] = (path, write_sample_video(path, format=name, frames=50, seed=seed))
    assert set(clips) == set(SAMPLE_FORMATS)
    return clips


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the session, with a logical GPU so the fractional-GPU detection
    actors are scheduled (they fall back to the CPU inside)."""
    if not ray.is_initialized():
        # Ray workers inherit the environment: files named with this marker cannot be read (the
        # permission case of the broken-input batch; CI runs as root, where chmod 000 does nothing).
        os.environ[DENY_READ_ENV] = DENY_READ_MARKER
        os.environ[HANG_DECODE_ENV] = HANG_DECODE_MARKER
        os.environ[HANG_READ_ENV] = HANG_READ_MARKER
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()
