"""Shared fixtures: synthetic sample clips, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

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
