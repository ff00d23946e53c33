"""Shared fixtures: synthetic sample clips, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from anonray.samples import SAMPLE_FORMATS, SampleTruth, sample_paths, write_sample_video


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
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()
